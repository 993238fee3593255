"""One input file, start to finish: journal → parse → dispatch → record → outputs.

A job is identified by bucket, key and ETag (or version id): the same upload delivered twice is
the same job, and a rerun skips every ``custom_id`` that already has a final answer, so an answer
is never paid for twice and each request lands exactly once in the outputs. Outputs are always
rebuilt from the journal, so whichever run finishes a job writes the same files.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import tempfile
import time
import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

from aws_lambda_powertools import Logger

from .adapters.journal import FINAL_JOB_STATES, ITEM_RESPONSE_MAX_BYTES, JobItem, Journal, RequestRecord
from .adapters.queues import MessageSender
from .adapters.s3 import ObjectChanged, ObjectInfo, ObjectStore
from .engine.dispatch import Dispatcher, DispatchReport, Outcome
from .engine.errors import ErrorInfo
from .events import RedriveWork, UnitWork
from .formats import (
    CSV_TEMPLATE_METADATA,
    FileRejected,
    LineError,
    Parsed,
    Request,
    custom_id_of,
    parse_stream,
    request_from_object,
    split_lines,
)
from .outputs import OrderedSpool, estimate_cost_usd, output_line
from .settings import Settings

__all__ = ["FileRef", "JobResult", "JobRunner", "make_job_id", "output_keys"]

logger = Logger(service="promptdrop", child=True)

_FLUSH_RECORDS = 25  # one BatchWriteItem call
_FLUSH_MESSAGES = 10  # one SendMessageBatch call
# A worker takes its next request only once its answer is journaled (group commit: answers are
# written together, as soon as 25 — or every worker — are waiting, or after this long). So at any
# moment at most ``max_concurrency`` requests have been sent without their answer on record: after
# a crash, that is all the API is asked again, whatever the file's size.
_FLUSH_INTERVAL_S = 0.1


@dataclass(slots=True, frozen=True)
class FileRef:
    bucket: str
    key: str


@dataclass(slots=True)
class JobResult:
    job_id: str | None
    bucket: str
    key: str
    # SUCCEEDED / PARTIAL / FAILED: final. SKIPPED: nothing to do. SHARDED: shards queued.
    # CONTINUED: a continuation is queued. SHARD_DONE: other shards still run. HANDED_OFF: another
    # run is writing the outputs and will include this one. BUSY / UNFINISHED: deliver it again later.
    status: str
    reason: str | None = None
    total: int = 0
    succeeded: int = 0
    failed: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    dispatched: int = 0
    retries: int = 0
    rate_limited: int = 0
    latency_avg_ms: float | None = None
    outputs: dict[str, str] = field(default_factory=dict)


def make_job_id(bucket: str, key: str, info: ObjectInfo) -> str:
    identity = info.version_id or info.etag
    return hashlib.sha256(f"{bucket}\n{key}\n{identity}".encode()).hexdigest()[:32]


def output_keys(settings: Settings, key: str, *, text: bool) -> dict[str, str]:
    base = settings.output_prefix + key
    keys = {
        "results": base + ".out.jsonl",
        "errors": base + ".errors.jsonl",
        "summary": base + ".summary.json",
    }
    if text:
        keys["text"] = base + ".out.txt"
    return keys


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


def _suffix(key: str) -> str:
    dot = key.rfind(".")
    return key[dot:].lower() if dot > key.rfind("/") else ""


class _Recorder:
    """Turns outcomes into journal items and DLQ messages, written in batches as they come."""

    def __init__(self, runner: JobRunner, job_id: str, ref: FileRef, info: ObjectInfo, out_bucket: str) -> None:
        self._runner = runner
        self._job_id = job_id
        self._ref = ref
        self._info = info
        self._out_bucket = out_bucket
        self._records: list[RequestRecord] = []
        self._messages: list[dict[str, Any]] = []
        self._written: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._ticking = contextlib.AsyncExitStack()
        self._flush_at = min(_FLUSH_RECORDS, runner.settings.max_concurrency)

    async def __aenter__(self) -> _Recorder:
        await self._ticking.enter_async_context(_every(_FLUSH_INTERVAL_S, self.flush))
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self._ticking.aclose()
        if exc_info[0] is None or exc_info[0] is FileRejected:
            await self.flush()

    def _failure_message(self, record: RequestRecord, request: dict[str, Any] | None) -> dict[str, Any]:
        return {
            "kind": "prompt_failure",
            "job_id": self._job_id,
            "bucket": self._ref.bucket,
            "key": self._ref.key,
            "etag": self._info.etag,
            "custom_id": record.custom_id,
            "line": record.line,
            "request": request,
            "error": record.error,
            "attempts": record.attempts,
            "failed_at": _now(),
        }

    async def outcome(self, outcome: Outcome) -> None:
        request = outcome.request
        if outcome.error is None and outcome.response is not None:
            record = _success_record(request, outcome)
            if record.response is not None and len(record.response) > ITEM_RESPONSE_MAX_BYTES:
                pointer = f"{self._runner.settings.output_prefix}{self._ref.key}.responses/{request.line}.json"
                await self._runner.store.put_bytes(
                    self._out_bucket, pointer, record.response.encode(), "application/json"
                )
                record.response, record.response_s3_key = None, pointer
            self._records.append(record)
        else:
            error = outcome.error
            assert error is not None
            record = _failure_record(request, outcome, error)
            self._records.append(record)
            self._messages.append(self._failure_message(record, request.batch_line()))
        written = self._written
        await self._maybe_flush()
        # Hold this worker (so its slot) until the answer is on record; shielded: one waiter
        # cancelled must not cancel the write for the others.
        await asyncio.shield(written)

    async def line_error(self, error: LineError, *, sk_suffix: str = "") -> None:
        info = {
            "type": "invalid_request",
            "code": "invalid_line",
            "status_code": None,
            "message": error.message,
        }
        record = RequestRecord(error.custom_id, error.line, "FAILED", 0, error=info, sk_suffix=sk_suffix)
        self._records.append(record)
        self._messages.append(self._failure_message(record, None))
        await self._maybe_flush()

    async def repeat(self, line: int, custom_id: str, earlier: int) -> None:
        """A line reusing an earlier line's ``custom_id`` fails alone, its item kept apart from the first's."""
        error = LineError(line, custom_id, f"custom_id {custom_id!r} is already used by line {earlier}")
        await self.line_error(error, sk_suffix=f"#line-{line}")

    async def _maybe_flush(self) -> None:
        if len(self._records) >= self._flush_at or len(self._messages) >= _FLUSH_MESSAGES * 5:
            await self.flush()

    async def flush(self) -> None:
        # Swap the buffers before awaiting: other workers keep appending meanwhile.
        records, self._records = self._records, []
        messages, self._messages = self._messages, []
        written, self._written = self._written, asyncio.get_running_loop().create_future()
        try:
            # Dead letters first: a crash between the two leaves the failures without a final
            # answer, so the redelivery tries them again (a failure may be dead-lettered twice)
            # instead of never dead-lettering them. A redrive that runs before the journal write
            # is safe: a failure never replaces an answer.
            if messages:
                await self._runner.messages.send(self._runner.settings.dlq_url, messages)
            if records:
                await self._runner.journal.write_requests(self._job_id, records, _now())
        except asyncio.CancelledError:
            written.cancel()
            raise
        except Exception as exc:
            written.set_exception(exc)
            written.exception()  # marked retrieved: the waiters and this caller all raise it
            raise
        written.set_result(None)


def _success_record(request: Request, outcome: Outcome) -> RequestRecord:
    body = outcome.response or {}
    usage = body.get("usage") or {}
    choices = body.get("choices") or [{}]
    return RequestRecord(
        custom_id=request.custom_id,
        line=request.line,
        status="SUCCEEDED",
        attempts=outcome.attempts,
        model=body.get("model"),
        latency_ms=outcome.latency_ms,
        status_code=outcome.status_code,
        request_id=outcome.request_id,
        prompt_tokens=int(usage.get("prompt_tokens") or 0),
        completion_tokens=int(usage.get("completion_tokens") or 0),
        finish_reason=choices[0].get("finish_reason"),
        response=json.dumps(body, ensure_ascii=False, separators=(",", ":")),
    )


def _failure_record(request: Request, outcome: Outcome, error: ErrorInfo) -> RequestRecord:
    return RequestRecord(
        custom_id=request.custom_id,
        line=request.line,
        status="FAILED",
        attempts=outcome.attempts,
        latency_ms=outcome.latency_ms,
        status_code=error.status_code,
        request_id=error.request_id,
        response=json.dumps(error.body, ensure_ascii=False) if error.body is not None else None,
        error=error.as_dict(),
    )


class JobRunner:
    """Runs jobs for one invocation: the adapters and the engine are built once and passed in.

    A job is split into units — the whole file, or for a large ``.jsonl`` line-aligned shards run
    by parallel invocations. A unit is run under a lease (one live run at a time, renewed while it
    runs, free again when a crashed run's lease expires); the run that completes the last unit
    writes the outputs. A run near its deadline queues a continuation of its unit and stops.
    """

    def __init__(
        self,
        *,
        settings: Settings,
        store: ObjectStore,
        journal: Journal,
        messages: MessageSender,
        dispatcher_factory: Callable[[], Dispatcher],
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self.store = store
        self.journal = journal
        self.messages = messages
        self._dispatcher_factory = dispatcher_factory
        self._clock = clock

    # -- entry points ---------------------------------------------------------------------------

    async def run_file(
        self, ref: FileRef, *, redrive: bool = False, should_stop: Callable[[], bool] = lambda: False
    ) -> JobResult:
        """A new upload (or a redriven file failure): plan the job, run it or queue its shards."""
        settings = self.settings
        info = await self.store.head(ref.bucket, ref.key)
        if info is None:
            return await self._file_failure(ref, None, "not_found", "the object does not exist (deleted after upload?)")
        job_id = make_job_id(ref.bucket, ref.key, info)
        sharded = _suffix(ref.key) == ".jsonl" and info.size > settings.shard_bytes
        job = await self.journal.start_job(
            job_id,
            {
                "bucket": ref.bucket,
                "key": ref.key,
                "etag": info.etag,
                "version_id": info.version_id,
                "size": info.size,
                "started_at": _now(),
                "output_bucket": settings.output_bucket or ref.bucket,
                "outputs": output_keys(settings, ref.key, text=_suffix(ref.key) == ".txt"),
                "units_total": None if sharded else 1,
            },
        )
        if job.status in FINAL_JOB_STATES and not redrive:
            logger.info("job already finished; nothing to do", extra={"job_id": job_id, "status": job.status})
            return JobResult(job_id, ref.bucket, ref.key, "SKIPPED", reason=f"already {job.status}")
        whole = UnitWork(job_id, ref.bucket, ref.key, info.etag, info.version_id, "all")
        if not sharded:
            return await self.run_unit(whole, should_stop=should_stop, fresh=job.created)
        if job.attrs.get("units_total") and not redrive:
            return JobResult(job_id, ref.bucket, ref.key, "SKIPPED", reason="already split into shards")
        try:
            shards, repeats = await self._plan_shards(whole)
        except FileRejected as exc:
            return await self._file_failure(ref, job_id, exc.code, exc.message, job_exists=True)
        if repeats:
            async with _Recorder(self, job_id, ref, info, self._out_bucket(ref)) as recorder:
                for line, custom_id, earlier in repeats:
                    await recorder.repeat(line, custom_id, earlier)
        # Shard boundaries are a pure function of the file: a redelivery plans the same shards.
        await self.journal.update_job(job_id, {"units_total": len(shards)}, only_if_absent="units_total")
        if self.settings.work_queue_url is None:
            raise RuntimeError("PROMPTDROP_WORK_QUEUE_URL must be set to split large files into shards")
        await self.messages.send(self.settings.work_queue_url, [shard.message() for shard in shards])
        logger.info("file split into shards", extra={"job_id": job_id, "shards": len(shards)})
        return JobResult(job_id, ref.bucket, ref.key, "SHARDED", reason=f"{len(shards)} shards queued")

    async def run_unit(
        self, unit: UnitWork, *, should_stop: Callable[[], bool] = lambda: False, fresh: bool = False
    ) -> JobResult:
        """Run one unit under its lease; finish the job if it was the last one."""
        ref = FileRef(unit.bucket, unit.key)
        owner = uuid.uuid4().hex
        lease = await self.journal.acquire_unit(
            unit.job_id, unit.unit, owner, now=self._clock(), lease_s=self.settings.lease_s
        )
        if lease == "done":
            return await self._finish_if_complete(unit.job_id, ref, None)
        if lease == "busy":
            logger.info("another run holds this unit; leaving it to that run", extra={"unit": unit.unit})
            return JobResult(unit.job_id, ref.bucket, ref.key, "BUSY", reason=f"unit {unit.unit} is being run")
        lease_s = self.settings.lease_s

        async def renew() -> None:
            await self.journal.renew_unit(unit.job_id, unit.unit, owner, until=self._clock() + lease_s)

        try:
            async with _every(lease_s / 3, renew):
                report = await self._dispatch_unit(unit, fresh=fresh, should_stop=should_stop)
        except FileRejected as exc:
            await self.journal.complete_unit(unit.job_id, unit.unit, owner, _now())
            return await self._file_failure(ref, unit.job_id, exc.code, exc.message, job_exists=True)
        if report.stopped == "deadline":
            return await self._continue_later(unit, owner, report)
        if report.fatal is not None:
            await self.journal.release_unit(unit.job_id, unit.unit, owner)
            result = await self._finalize(unit.job_id, ref, report)
            fatal = report.fatal
            await self._file_failure(
                ref,
                unit.job_id,
                fatal.code,
                f"stopped early: {fatal.message}; requests not yet sent were not attempted — fix the cause "
                "and redrive this message to finish the file",
                job_exists=True,
                finalize=False,
            )
            result.status, result.reason = "FAILED", fatal.code
            return result
        await self.journal.complete_unit(unit.job_id, unit.unit, owner, _now())
        return await self._finish_if_complete(unit.job_id, ref, report)

    async def redrive(self, failure: RedriveWork) -> JobResult:
        """Run a failed request again and merge it into its job's outputs."""
        job_id, bucket, key = failure.job_id, failure.bucket, failure.key
        ref = FileRef(bucket, key)
        job = await self.journal.get_job(job_id)
        if job is None:
            logger.warning("redriven failure of an unknown job; dropped", extra={"job_id": job_id})
            return JobResult(job_id, bucket, key, "SKIPPED", reason="unknown job")
        done = await self.journal.succeeded_ids(job_id)
        requests: list[Request] = []
        batch_line = failure.request
        # A line that never parsed has no request to send: only a corrected upload can fix it.
        if batch_line is not None and failure.custom_id not in done:
            item = request_from_object(
                batch_line,
                line=failure.line,
                default_id=failure.custom_id,
                default_model=self.settings.model,
                text_len=len(json.dumps(batch_line)),
            )
            if isinstance(item, Request):
                requests.append(item)
        info = ObjectInfo(str(job.attrs.get("etag", "")), job.attrs.get("version_id"), 0)

        async def source() -> AsyncIterator[Request]:
            for request in requests:
                yield request

        async with _Recorder(self, job_id, ref, info, self._out_bucket(ref)) as recorder:
            report = await self._dispatcher_factory().run(source(), recorder.outcome)
        logger.info("redrive done", extra={"job_id": job_id, "rerun": len(requests)})
        return await self._finish_if_complete(job_id, ref, report)

    # -- the parts ----------------------------------------------------------------------------

    def _out_bucket(self, ref: FileRef) -> str:
        return self.settings.output_bucket or ref.bucket

    async def _dispatch_unit(self, unit: UnitWork, *, fresh: bool, should_stop: Callable[[], bool]) -> DispatchReport:
        ref = FileRef(unit.bucket, unit.key)
        info = ObjectInfo(unit.etag, unit.version_id, 0)
        # A first run of a new job has nothing to skip; any other run asks the journal once.
        answered, repeats = ({}, set()) if fresh else await self.journal.finals(unit.job_id)
        suffix = _suffix(unit.key)
        template = None
        if suffix == ".csv":
            with _rejected_if_changed():
                template = (await self.store.metadata(unit.bucket, unit.key, info)).get(CSV_TEMPLATE_METADATA)
        chunks = self._read(unit, start=unit.start, end=unit.end)
        parsed: AsyncGenerator[Parsed] = parse_stream(
            suffix,
            chunks,
            key=unit.key,
            default_model=self.settings.model,
            start=unit.start,
            first_line=unit.first_line,
            template=template,
        )
        async with _Recorder(self, unit.job_id, ref, info, self._out_bucket(ref)) as recorder:

            async def requests() -> AsyncIterator[Request]:
                first_line: dict[str, int] = {}  # custom_id -> the line that uses it, in this run
                item: Parsed
                async for item in parsed:
                    if item.line in repeats:
                        continue  # failed as a repeat already
                    earlier = answered.get(item.custom_id)
                    if earlier == item.line:
                        continue  # answered already: a resumed or redelivered run
                    earlier = earlier or first_line.get(item.custom_id)
                    if earlier is not None:
                        await recorder.repeat(item.line, item.custom_id, earlier)
                        continue
                    first_line[item.custom_id] = item.line
                    if isinstance(item, LineError):
                        await recorder.line_error(item)
                    else:
                        yield item

            try:
                report = await self._dispatcher_factory().run(requests(), recorder.outcome, should_stop=should_stop)
            finally:
                await parsed.aclose()
        return report

    async def _read(self, unit: UnitWork, *, start: int = 0, end: int | None = None) -> AsyncIterator[bytes]:
        """The bytes of the job's version of the file, ``[start, end)``."""
        with _rejected_if_changed():
            info = ObjectInfo(unit.etag, unit.version_id, 0)
            async for chunk in self.store.stream(unit.bucket, unit.key, info, start=start, end=end):
                yield chunk

    async def _plan_shards(self, whole: UnitWork) -> tuple[list[UnitWork], list[tuple[int, str, int]]]:
        """Cut the file into line-aligned shards of about ``shard_bytes`` (one pass, one line held).

        Also finds the lines that repeat an earlier line's ``custom_id``: in different shards they
        would run at once (both sent, one answer kept), so they fail before any shard starts. This
        holds one entry per line (a few tens of bytes each): the price of catching them.
        """
        size = self.settings.shard_bytes
        shards: list[UnitWork] = []
        first_line_of: dict[str, int] = {}
        repeats: list[tuple[int, str, int]] = []  # (line, custom_id, the earlier line using it)
        start, first_line, line = 0, 1, 0
        async for offset, raw in split_lines(self._read(whole)):
            line += 1
            if offset - start >= size:
                shards.append(
                    replace(whole, unit=f"shard-{len(shards)}", start=start, end=offset, first_line=first_line)
                )
                start, first_line = offset, line
            if raw.strip():
                custom_id = custom_id_of(raw, line)
                earlier = first_line_of.setdefault(custom_id, line)
                if earlier != line:
                    repeats.append((line, custom_id, earlier))
        shards.append(replace(whole, unit=f"shard-{len(shards)}", start=start, end=None, first_line=first_line))
        return shards, repeats

    async def _continue_later(self, unit: UnitWork, owner: str, report: DispatchReport) -> JobResult:
        ref = FileRef(unit.bucket, unit.key)
        resume = report.resume
        result = _result(unit.job_id, ref, "UNFINISHED", report, reason="deadline")
        if self.settings.work_queue_url is None:
            await self.journal.release_unit(unit.job_id, unit.unit, owner)
            return result  # the handler hands the message back: its redelivery resumes the unit
        # .jsonl resumes at the first line not dispatched; other formats re-read and skip what is final.
        changes = {"start": resume.offset, "first_line": resume.line} if resume and resume.offset else {}
        await self.messages.send(self.settings.work_queue_url, [unit.message(**changes)])
        await self.journal.release_unit(unit.job_id, unit.unit, owner)
        logger.info("deadline near: continuation queued", extra={"job_id": unit.job_id, "resume": changes})
        result.status = "CONTINUED"
        return result

    async def _finish_if_complete(self, job_id: str, ref: FileRef, report: DispatchReport | None) -> JobResult:
        job = await self.journal.get_job(job_id)
        if job is None or int(job.attrs.get("units_done", 0)) < int(job.attrs.get("units_total") or 1):
            return _result(job_id, ref, "SHARD_DONE", report)
        return await self._finalize(job_id, ref, report, job)

    async def _finalize(
        self, job_id: str, ref: FileRef, report: DispatchReport | None, job: JobItem | None = None
    ) -> JobResult:
        """Rewrite the job's outputs until they hold every change to its journal.

        Runs that finish at once (concurrent redrives, a shard and a redrive) must not leave outputs
        built from an older journal behind. Each run counts a change on the job item, then tries
        the finalizer lease: the holder rewrites the outputs and gives the lease up only if the
        count has not moved since it began — otherwise it rewrites them again. A run that finds
        the lease held leaves its change to the holder (which started before it, so will loop).
        """
        await self.journal.note_change(job_id)
        owner = uuid.uuid4().hex
        lease_s = self.settings.lease_s
        seen = await self.journal.take_finalizer(job_id, owner, now=self._clock(), lease_s=lease_s)
        if seen is None:
            logger.info("another run is writing this job's outputs; it will include ours", extra={"job_id": job_id})
            return _result(job_id, ref, "HANDED_OFF", report, reason="another run is writing the outputs")

        async def renew() -> None:
            await self.journal.renew_finalizer(job_id, owner, until=self._clock() + lease_s)

        async with _every(lease_s / 3, renew):
            while True:
                result = await self._write_outputs(job_id, ref, report, job)
                changed = await self.journal.release_finalizer(job_id, owner, seen)
                if changed is None:
                    return result
                seen = changed

    async def _write_outputs(
        self, job_id: str, ref: FileRef, report: DispatchReport | None, job: JobItem | None
    ) -> JobResult:
        """Rebuild every output file from the journal and close the job item."""
        out_bucket = self._out_bucket(ref)
        keys = output_keys(self.settings, ref.key, text=_suffix(ref.key) == ".txt")
        result = _result(job_id, ref, "RUNNING", report)
        results, errors = OrderedSpool(), OrderedSpool()
        tokens_by_model: dict[str, tuple[int, int]] = {}
        text_answer: str | None = None
        try:
            async for record in self.journal.records(job_id):
                response = record.response
                if record.response_s3_key is not None:
                    response = json.dumps(await self.store.get_json(out_bucket, record.response_s3_key))
                line = output_line(job_id, record, response)
                if record.status == "SUCCEEDED":
                    results.add(record.line, line)
                    result.succeeded += 1
                    result.prompt_tokens += record.prompt_tokens
                    result.completion_tokens += record.completion_tokens
                    model = record.model or self.settings.model
                    p, c = tokens_by_model.get(model, (0, 0))
                    tokens_by_model[model] = (p + record.prompt_tokens, c + record.completion_tokens)
                    if "text" in keys and response is not None:
                        text_answer = _answer_text(response)
                else:
                    errors.add(record.line, line)
                    result.failed += 1
            result.total = result.succeeded + result.failed
            for spool, key in ((results, keys["results"]), (errors, keys["errors"])):
                with tempfile.TemporaryFile() as ordered:
                    spool.write_sorted(ordered)
                    await self.store.put_file(out_bucket, key, ordered, "application/x-ndjson")
        finally:
            results.close()
            errors.close()
        if "text" in keys and text_answer is not None:
            await self.store.put_bytes(out_bucket, keys["text"], text_answer.encode(), "text/plain; charset=utf-8")
        status = "SUCCEEDED" if result.failed == 0 else ("PARTIAL" if result.succeeded else "FAILED")
        if report is not None and report.fatal is not None:
            status = "FAILED"
        result.status = status
        finished = _now()
        cost = estimate_cost_usd(tokens_by_model)
        job = job or await self.journal.get_job(job_id)
        started_at = job.attrs.get("started_at") if job else None
        summary = {
            "job_id": job_id,
            "status": status,
            "input": {"bucket": ref.bucket, "key": ref.key, "etag": job.attrs.get("etag") if job else None},
            "counts": {"total": result.total, "succeeded": result.succeeded, "failed": result.failed},
            "tokens": {
                "prompt": result.prompt_tokens,
                "completion": result.completion_tokens,
                "total": result.prompt_tokens + result.completion_tokens,
            },
            "timings": {"started_at": started_at, "finished_at": finished},
            "estimated_cost_usd": cost,
            "units": int(job.attrs.get("units_total") or 1) if job else 1,
            "last_run": _run_figures(report),
            "outputs": {name: f"s3://{out_bucket}/{key}" for name, key in keys.items()},
        }
        await self.store.put_json(out_bucket, keys["summary"], summary)
        await self.journal.update_job(
            job_id,
            {
                "status": status,
                "total": result.total,
                "succeeded": result.succeeded,
                "failed": result.failed,
                "prompt_tokens": result.prompt_tokens,
                "completion_tokens": result.completion_tokens,
                "finished_at": finished,
                "estimated_cost_usd": str(cost) if cost is not None else None,
            },
        )
        result.outputs = {name: f"s3://{out_bucket}/{key}" for name, key in keys.items()}
        return result

    async def _file_failure(
        self,
        ref: FileRef,
        job_id: str | None,
        code: str,
        message: str,
        *,
        job_exists: bool = False,
        finalize: bool = True,
    ) -> JobResult:
        error = {"type": "file_error", "code": code, "message": message}
        failure = {"kind": "file_failure", "job_id": job_id, "bucket": ref.bucket, "key": ref.key, "error": error}
        await self.messages.send(self.settings.dlq_url, [failure])
        if job_id is not None and job_exists and finalize:
            await self.journal.update_job(job_id, {"status": "FAILED", "error": error, "finished_at": _now()})
        logger.warning("file failed", extra={"job_id": job_id, "code": code, "reason": message})
        return JobResult(job_id, ref.bucket, ref.key, "FAILED", reason=f"{code}: {message}")


@contextlib.asynccontextmanager
async def _every(interval_s: float, action: Callable[[], Awaitable[None]]) -> AsyncIterator[None]:
    """Run ``action`` every ``interval_s`` while the block runs: a lease renewal, a journal flush."""

    async def repeat() -> None:
        while True:
            await asyncio.sleep(interval_s)
            await action()

    task = asyncio.create_task(repeat())
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


@contextlib.contextmanager
def _rejected_if_changed() -> Iterator[None]:
    """The job's version of the object is gone: that will not change, so the file fails (no retry loop)."""
    try:
        yield
    except ObjectChanged as exc:
        raise FileRejected("object_changed", f"{exc}; a new upload is a job of its own") from None


def _result(
    job_id: str, ref: FileRef, status: str, report: DispatchReport | None, reason: str | None = None
) -> JobResult:
    if report is None:
        return JobResult(job_id, ref.bucket, ref.key, status, reason=reason)
    calls = report.dispatched
    return JobResult(
        job_id,
        ref.bucket,
        ref.key,
        status,
        reason=reason,
        dispatched=report.dispatched,
        retries=report.retries,
        rate_limited=report.rate_limited,
        latency_avg_ms=(report.latency_total_ms / calls) if calls else None,
    )


def _run_figures(report: DispatchReport | None) -> dict[str, Any] | None:
    if report is None:
        return None
    calls = report.dispatched
    return {
        "dispatched": report.dispatched,
        "retries": report.retries,
        "rate_limited_429s": report.rate_limited,
        "latency_avg_ms": round(report.latency_total_ms / calls, 1) if calls else None,
        "latency_max_ms": report.latency_max_ms,
        "stopped": report.stopped,
    }


def _answer_text(response_json: str) -> str | None:
    try:
        content = json.loads(response_json)["choices"][0]["message"]["content"]
    except (ValueError, KeyError, IndexError, TypeError):
        return None
    return content if isinstance(content, str) else None
