"""One input file, start to finish: journal → parse → dispatch → record → outputs.

A job is identified by bucket, key and ETag (or version id): the same upload delivered twice is
the same job, and a rerun skips every ``custom_id`` that already has a final answer, so an answer
is never paid for twice and each request lands exactly once in the outputs. Outputs are always
rebuilt from the journal, so whichever run finishes a job writes the same files.
"""

from __future__ import annotations

import hashlib
import json
import tempfile
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from aws_lambda_powertools import Logger

from .adapters.journal import FINAL_JOB_STATES, ITEM_RESPONSE_MAX_BYTES, Journal, RequestRecord
from .adapters.queues import MessageSender
from .adapters.s3 import ObjectInfo, ObjectStore
from .engine.dispatch import Dispatcher, DispatchReport, Outcome
from .engine.errors import ErrorInfo
from .formats import FileRejected, LineError, Parsed, Request, parse_stream
from .outputs import OrderedSpool, estimate_cost_usd, output_line
from .settings import Settings

__all__ = ["FileRef", "JobResult", "JobRunner", "make_job_id", "output_keys"]

logger = Logger(child=True)

_FLUSH_RECORDS = 100  # one TransactWriteItems call
_FLUSH_MESSAGES = 10  # one SendMessageBatch call


@dataclass(slots=True, frozen=True)
class FileRef:
    bucket: str
    key: str


@dataclass(slots=True)
class JobResult:
    job_id: str | None
    bucket: str
    key: str
    status: str  # SUCCEEDED / PARTIAL / FAILED / SKIPPED / UNFINISHED
    reason: str | None = None
    total: int = 0
    succeeded: int = 0
    failed: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    dispatched: int = 0
    skipped_final: int = 0
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
        await self._maybe_flush()

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

    async def _maybe_flush(self) -> None:
        if len(self._records) >= _FLUSH_RECORDS or len(self._messages) >= _FLUSH_MESSAGES * 5:
            await self.flush()

    async def flush(self) -> None:
        # Swap the buffers before awaiting: other workers keep appending meanwhile.
        records, self._records = self._records, []
        messages, self._messages = self._messages, []
        # Journal first: a message in the DLQ always has its request item behind it.
        if records:
            await self._runner.journal.write_requests(self._job_id, records, _now())
        if messages:
            await self._runner.messages.send(self._runner.settings.dlq_url, messages)


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
    """Runs jobs for one invocation: the adapters and the engine are built once and passed in."""

    def __init__(
        self,
        *,
        settings: Settings,
        store: ObjectStore,
        journal: Journal,
        messages: MessageSender,
        dispatcher_factory: Callable[[], Dispatcher],
    ) -> None:
        self.settings = settings
        self.store = store
        self.journal = journal
        self.messages = messages
        self._dispatcher_factory = dispatcher_factory

    async def run_file(self, ref: FileRef, *, should_stop: Callable[[], bool] = lambda: False) -> JobResult:
        settings = self.settings
        out_bucket = settings.output_bucket or ref.bucket
        info = await self.store.head(ref.bucket, ref.key)
        if info is None:
            return await self._file_failure(ref, None, "not_found", "the object does not exist (deleted after upload?)")
        job_id = make_job_id(ref.bucket, ref.key, info)
        keys = output_keys(settings, ref.key, text=_suffix(ref.key) == ".txt")
        started = time.monotonic()
        job = await self.journal.start_job(
            job_id,
            {
                "bucket": ref.bucket,
                "key": ref.key,
                "etag": info.etag,
                "version_id": info.version_id,
                "size": info.size,
                "started_at": _now(),
                "output_bucket": out_bucket,
                "outputs": keys,
            },
        )
        if job.status in FINAL_JOB_STATES:
            logger.info("job already finished; nothing to do", extra={"job_id": job_id, "status": job.status})
            return JobResult(job_id, ref.bucket, ref.key, "SKIPPED", reason=f"already {job.status}")
        done = set() if job.created else await self.journal.final_ids(job_id)
        recorder = _Recorder(self, job_id, ref, info, out_bucket)
        parsed: AsyncGenerator[Parsed] = parse_stream(
            _suffix(ref.key),
            self.store.stream(ref.bucket, ref.key, info),
            key=ref.key,
            default_model=settings.model,
        )
        skipped = 0

        async def requests() -> AsyncIterator[Request]:
            nonlocal skipped
            seen: set[str] = set()
            item: Parsed
            async for item in parsed:
                if item.custom_id in seen:
                    duplicate = LineError(
                        item.line, item.custom_id, f"custom_id {item.custom_id!r} repeats an earlier line"
                    )
                    await recorder.line_error(duplicate, sk_suffix=f"#line-{item.line}")
                    continue
                seen.add(item.custom_id)
                if item.custom_id in done:
                    skipped += 1
                elif isinstance(item, LineError):
                    await recorder.line_error(item)
                else:
                    yield item

        try:
            report = await self._dispatcher_factory().run(requests(), recorder.outcome, should_stop=should_stop)
        except FileRejected as exc:
            await recorder.flush()
            return await self._file_failure(ref, job_id, exc.code, exc.message, job_exists=True)
        finally:
            await parsed.aclose()
        await recorder.flush()
        if report.stopped == "deadline":
            logger.warning(
                "deadline reached; the rest of the file is left for the next delivery",
                extra={"job_id": job_id, "last_line": report.last_line},
            )
            return self._result(job_id, ref, "UNFINISHED", report, skipped, reason="deadline")
        result = await self._finalize(job_id, ref, out_bucket, keys, report, skipped, started)
        if report.fatal is not None:
            fatal = report.fatal
            await self._file_failure(
                ref,
                job_id,
                fatal.code,
                f"stopped early: {fatal.message}; requests not yet sent were not attempted — fix the cause "
                "and redrive this message to finish the file",
                job_exists=True,
                finalize=False,
            )
            result.status, result.reason = "FAILED", fatal.code
        return result

    def _result(
        self,
        job_id: str,
        ref: FileRef,
        status: str,
        report: DispatchReport,
        skipped: int,
        reason: str | None = None,
    ) -> JobResult:
        succeeded_calls = report.dispatched
        return JobResult(
            job_id,
            ref.bucket,
            ref.key,
            status,
            reason=reason,
            dispatched=report.dispatched,
            skipped_final=skipped,
            retries=report.retries,
            rate_limited=report.rate_limited,
            latency_avg_ms=(report.latency_total_ms / succeeded_calls) if succeeded_calls else None,
        )

    async def _finalize(
        self,
        job_id: str,
        ref: FileRef,
        out_bucket: str,
        keys: dict[str, str],
        report: DispatchReport,
        skipped: int,
        started: float,
    ) -> JobResult:
        """Rebuild every output file from the journal and close the job item."""
        result = self._result(job_id, ref, "RUNNING", report, skipped)
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
        if report.fatal is not None:
            status = "FAILED"
        result.status = status
        finished = _now()
        cost = estimate_cost_usd(tokens_by_model)
        summary = {
            "job_id": job_id,
            "status": status,
            "input": {"bucket": ref.bucket, "key": ref.key},
            "counts": {"total": result.total, "succeeded": result.succeeded, "failed": result.failed},
            "tokens": {
                "prompt": result.prompt_tokens,
                "completion": result.completion_tokens,
                "total": result.prompt_tokens + result.completion_tokens,
            },
            "timings": {"finished_at": finished, "last_run_s": round(time.monotonic() - started, 3)},
            "estimated_cost_usd": cost,
            "last_run": {
                "dispatched": report.dispatched,
                "skipped_already_final": skipped,
                "retries": report.retries,
                "rate_limited_429s": report.rate_limited,
                "latency_avg_ms": result.latency_avg_ms,
                "latency_max_ms": report.latency_max_ms,
                "stopped": report.stopped,
            },
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
        await self.messages.send(
            self.settings.dlq_url,
            [
                {
                    "kind": "file_failure",
                    "job_id": job_id,
                    "bucket": ref.bucket,
                    "key": ref.key,
                    "error": error,
                }
            ],
        )
        if job_id is not None and job_exists and finalize:
            await self.journal.update_job(job_id, {"status": "FAILED", "error": error, "finished_at": _now()})
        logger.warning("file failed", extra={"job_id": job_id, "code": code, "reason": message})
        return JobResult(job_id, ref.bucket, ref.key, "FAILED", reason=f"{code}: {message}")


def _answer_text(response_json: str) -> str | None:
    try:
        content = json.loads(response_json)["choices"][0]["message"]["content"]
    except (ValueError, KeyError, IndexError, TypeError):
        return None
    return content if isinstance(content, str) else None
