"""Outcomes → request items in the journal and dead letters, written together in batches.

A worker takes its next request only once its answer is journaled (group commit: answers are
written together as soon as 25 — or every worker — are waiting, or after 100 ms). So at any moment
at most ``max_concurrency`` requests have been sent without their answer on record: after a crash,
that is all the API is asked again, whatever the file's size.

While the rate limit sets the pace (other workers wait for admission: :meth:`Recorder.hold_while`),
answers wait up to 2.5 s for company instead: a held worker costs nothing then, and a run paced at
10 answers a second writes 25 items a call rather than one or two. A crash still loses no more: a
flush still starts as soon as 25 wait, and every waiting answer still holds its worker.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Callable
from dataclasses import dataclass

from ..adapters.request_log import ITEM_RESPONSE_MAX_BYTES
from ..background import every
from ..engine.dispatch import Outcome
from ..engine.request import Request
from ..formats import LineError
from ..jsonsafe import dumps
from ..messages import PromptFailure
from ..records import CachedAnswer, ErrorRecord, FailureCode, RequestRecord, RequestStatus
from .answer_cells import schema_fields
from .outcome_records import failure_record, success_record
from .planning import output_base
from .ports import Journal, MessageSender, ObjectStore
from .progress import Progress
from .run_result import now_iso

__all__ = ["COLUMNS_MAX_BYTES", "JobRef", "Recorder", "Recorders"]

Columns = tuple[tuple[str, str], ...]

_FLUSH_RECORDS = 25  # one BatchWriteItem call
_FLUSH_MESSAGES = 50  # five SendMessageBatch calls
_FLUSH_INTERVAL_S = 0.1
_HOLD_MAX_S = 2.5  # the longest an answer waits for company while the rate limit sets the pace
# A .csv row's cells kept on its item up to this size (with an answer of up to 300,000 bytes, the
# item stays under DynamoDB's 400 KB); larger ones go to S3, the item pointing to them.
COLUMNS_MAX_BYTES = 65_536


@dataclass(slots=True, frozen=True)
class JobRef:
    """Which job outcomes belong to, and where its large answers go."""

    job_id: str
    bucket: str
    key: str
    etag: str | None
    out_bucket: str
    output_prefix: str


class Recorder:
    """Records one run's outcomes; ``async with`` it around the run (a ticker flushes meanwhile)."""

    def __init__(
        self,
        job: JobRef,
        *,
        journal: Journal,
        messages: MessageSender,
        store: ObjectStore,
        dlq_url: str,
        max_concurrency: int,
        progress: Progress,
    ) -> None:
        self._job = job
        self._progress = progress
        self._journal = journal
        self._messages = messages
        self._store = store
        self._dlq_url = dlq_url
        self._records: list[RequestRecord] = []
        self._letters: list[PromptFailure] = []
        self._written: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._ticking = contextlib.AsyncExitStack()
        self._flush_at = min(_FLUSH_RECORDS, max_concurrency)
        self._rate_bound: Callable[[], bool] = lambda: False
        self._waiting_since: float | None = None  # when the oldest unwritten outcome arrived

    def hold_while(self, rate_bound: Callable[[], bool]) -> None:
        """Hold answers (up to 2.5 s) while ``rate_bound()``: fewer, fuller writes."""
        self._rate_bound = rate_bound

    async def __aenter__(self) -> Recorder:
        await self._ticking.enter_async_context(every(_FLUSH_INTERVAL_S, self._tick))
        return self

    async def _tick(self) -> None:
        if self._waiting_since is None:
            return
        waited = asyncio.get_running_loop().time() - self._waiting_since
        if waited >= _HOLD_MAX_S or not self._rate_bound():
            await self.flush()

    async def __aexit__(self, *exc_info: object) -> None:
        try:
            await self._ticking.aclose()
        finally:
            if exc_info[0] is None:
                await self.flush()
            elif not isinstance(exc_info[1], asyncio.CancelledError):
                # The run failed (the input, or AWS): still record what was answered — it is paid for.
                # If this fails too, the run's own error is the one that surfaces.
                with contextlib.suppress(Exception):
                    await self.flush()

    async def outcome(self, outcome: Outcome, *, counted: Callable[[], None] | None = None) -> RequestRecord:
        """Record a request's final outcome; returns its record once it is on record. ``counted`` is
        called as soon as its tokens and cost count in the run's progress, before the write is awaited
        (the cost guard then lets its reservation go: nothing waits on the journal for it)."""
        record = await self._book(outcome, counted)
        written = self._written
        await self._maybe_flush()
        # Hold this worker (so its slot) until the answer is on record; shielded: one waiter
        # cancelled must not cancel the write for the others.
        await asyncio.shield(written)
        return record

    async def merged(self, outcome: Outcome) -> None:
        """Record an outcome that came in a provider batch's files: written with the next group (no
        worker waits on it); the merge flushes before it notes its progress."""
        await self._book(outcome)
        await self._maybe_flush()

    async def _book(self, outcome: Outcome, counted: Callable[[], None] | None = None) -> RequestRecord:
        """The outcome's record (and dead letter), buffered for the next group write."""
        request = outcome.request
        if outcome.error is None and outcome.response is not None:
            record = success_record(request, outcome)
            self._progress.succeeded(
                record.model or "",
                record.prompt_tokens,
                record.completion_tokens,
                record.cached_tokens,
                record.service_tier,
                cache_write_tokens=record.cache_write_tokens,
            )
            self._progress.tally.answered(request.model_name(), record)
        else:
            assert outcome.error is not None
            record = failure_record(request, outcome, outcome.error)
            self._letters.append(self._dead_letter(record, request.batch_line()))
            self._progress.failed(record.model or "", record.prompt_tokens, record.completion_tokens)
            self._progress.tally.failed(request.model_name(), outcome.error.error.code, record)
        if counted is not None:
            counted()
        if record.response is not None and _too_large(record.response):
            # Too large for a DynamoDB item (400 KB): kept in S3, the item points to it.
            pointer = f"{output_base(self._job.output_prefix, self._job.key)}.responses/{request.line}.json"
            await self._store.put_bytes(self._job.out_bucket, pointer, record.response.encode(), "application/json")
            record.response, record.response_s3_key = None, pointer
        if request.columns:
            await self._keep_columns(record, request.columns, _fields(request))
        self._records.append(record)
        return record

    async def _keep_columns(self, record: RequestRecord, cells: Columns, fields: list[str]) -> None:
        """A .csv row's cells (and its schema's fields) on its item, for the .out.csv — in S3 when large."""
        text = dumps({"cells": [list(cell) for cell in cells], "fields": fields})
        if len(text) * 4 > COLUMNS_MAX_BYTES and len(text.encode()) > COLUMNS_MAX_BYTES:
            pointer = f"{output_base(self._job.output_prefix, self._job.key)}.columns/{record.line}.json"
            await self._store.put_bytes(self._job.out_bucket, pointer, text.encode(), "application/json")
            record.columns_s3_key = pointer
        else:
            record.columns = text

    async def cached(self, request: Request, answer: CachedAnswer) -> None:
        """A request answered from the answer cache: recorded as answered, nothing paid (no worker waits)."""
        record = RequestRecord(
            request.custom_id,
            request.line,
            RequestStatus.SUCCEEDED,
            0,
            model=answer.model,
            finish_reason=answer.finish_reason,
            response=answer.response,
            cached=True,
        )
        if request.columns:
            await self._keep_columns(record, request.columns, _fields(request))
        self._records.append(record)
        self._progress.succeeded(answer.model or "", 0, 0)
        self._progress.tally.answered(request.model_name(), record)  # nothing paid: no tokens
        await self._maybe_flush()

    async def line_error(self, error: LineError, *, repeat_of: int | None = None) -> None:
        """A line that is not a request fails alone (no worker waits on it)."""
        info = ErrorRecord("invalid_request", error.code, error.message).as_dict()
        record = RequestRecord(error.custom_id, error.line, RequestStatus.FAILED, 0, error=info, repeat_of=repeat_of)
        self._progress.tally.failed(None, error.code)  # no request: no model
        await self._fail_alone(record, None, error.columns, [])

    async def not_sent(self, request: Request, code: FailureCode, message: str) -> None:
        """A request refused before it was sent (the cost guard) fails alone; its dead letter can send it later."""
        info = ErrorRecord("request_not_sent", code, message).as_dict()
        record = RequestRecord(request.custom_id, request.line, RequestStatus.FAILED, 0, error=info)
        fields = _fields(request) if request.columns else []
        self._progress.tally.failed(request.model_name(), code)
        await self._fail_alone(record, request.batch_line(), request.columns, fields)

    async def _fail_alone(
        self, record: RequestRecord, batch_line: dict[str, object] | None, columns: Columns, fields: list[str]
    ) -> None:
        """A failure no call answered: journaled and dead-lettered with the others, no worker held for it."""
        if columns:
            await self._keep_columns(record, columns, fields)
        self._records.append(record)
        self._letters.append(self._dead_letter(record, batch_line))
        self._progress.failed()
        await self._maybe_flush()

    async def repeat(self, line: int, custom_id: str, earlier: int, columns: Columns = ()) -> None:
        """A line reusing an earlier line's ``custom_id`` fails alone, its item kept apart from the first's."""
        message = f"custom_id {custom_id!r} is already used by line {earlier}"
        error = LineError(line, custom_id, message, columns=columns)
        await self.line_error(error, repeat_of=earlier)

    def _dead_letter(self, record: RequestRecord, request: dict[str, object] | None) -> PromptFailure:
        job = self._job
        return PromptFailure(
            job_id=job.job_id,
            bucket=job.bucket,
            key=job.key,
            etag=job.etag,
            custom_id=record.custom_id,
            line=record.line,
            request=request,
            error=record.error or {},
            attempts=record.attempts,
            failed_at=now_iso(),
        )

    async def _maybe_flush(self) -> None:
        if self._waiting_since is None:
            self._waiting_since = asyncio.get_running_loop().time()
        if len(self._records) >= self._flush_at or len(self._letters) >= _FLUSH_MESSAGES:
            await self.flush()

    async def flush(self) -> None:
        # Swap the buffers before awaiting: other workers keep appending meanwhile.
        records, self._records = self._records, []
        letters, self._letters = self._letters, []
        written, self._written = self._written, asyncio.get_running_loop().create_future()
        self._waiting_since = None
        try:
            # Dead letters first: a crash between the two leaves the failures without a final
            # answer, so the redelivery tries them again (a failure may be dead-lettered twice)
            # instead of never dead-lettering them. A redrive that runs before the journal write
            # is safe: a failure never replaces an answer.
            if letters:
                await self._messages.send(self._dlq_url, letters)
            if records:
                await self._journal.requests.write(self._job.job_id, records, now_iso())
        except asyncio.CancelledError:
            written.cancel()
            raise
        except Exception as exc:
            written.set_exception(exc)
            written.exception()  # marked retrieved: the waiters and this caller all raise it
            raise
        written.set_result(None)


def _fields(request: Request) -> list[str]:
    """The fields of the schema a .csv row's request asked its answer to follow (answer cells of their own).
    A request that asked none (``output_schema`` is set when it did) has none: its body is not parsed."""
    return schema_fields(json.loads(request.body)) if request.output_schema is not None else []


def _too_large(text: str) -> bool:
    # Bytes, not characters: 300,000 characters of CJK text are 900 KB. Encoding only when it may matter.
    return len(text) * 4 > ITEM_RESPONSE_MAX_BYTES and len(text.encode()) > ITEM_RESPONSE_MAX_BYTES


class Recorders:
    """Makes the recorder of a job's run: the adapters it writes through, given once."""

    def __init__(
        self,
        *,
        journal: Journal,
        messages: MessageSender,
        store: ObjectStore,
        dlq_url: str,
        output_bucket: str | None,
        output_prefix: str,
        max_concurrency: int,
    ) -> None:
        self._journal = journal
        self._messages = messages
        self._store = store
        self._dlq_url = dlq_url
        self._output_bucket = output_bucket
        self._output_prefix = output_prefix
        self._max_concurrency = max_concurrency

    def for_job(self, job_id: str, bucket: str, key: str, etag: str | None, progress: Progress) -> Recorder:
        job = JobRef(job_id, bucket, key, etag, self._output_bucket or bucket, self._output_prefix)
        return Recorder(
            job,
            journal=self._journal,
            messages=self._messages,
            store=self._store,
            dlq_url=self._dlq_url,
            max_concurrency=self._max_concurrency,
            progress=progress,
        )
