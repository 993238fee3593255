"""Running one unit of a job — the whole file, or one shard — under its lease.

One live run per unit (the lease is renewed while the run lives and expires when it dies). The
run reads the unit's lines, skips every one the journal already has a final answer for, dispatches
the rest and records each outcome. Then: the unit is done (and the job finished if it was the last
one); or the deadline came (a continuation is queued, resuming at the first line not sent); or an
error every request would share stopped it (the job fails, to be redriven once the cause is fixed).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

from aws_lambda_powertools import Logger

from ..adapters.journal import Journal
from ..adapters.leases import Hold, Lease, LeaseOutcome
from ..adapters.queues import MessageSender
from ..adapters.s3 import ObjectStore
from ..engine.dispatch import Dispatcher, DispatchReport, StopReason
from ..engine.request import Request
from ..formats import FileRejected, LineError, Parsed, parse_stream
from ..messages import UnitMessage
from ..settings import Settings
from .failures import FileFailures
from .finalize import Finalizer
from .recorder import Recorders
from .result import FileRef, JobResult, RunStatus, now_iso
from .source import read, suffix, template_of

__all__ = ["UnitRunner"]

logger = Logger(service="promptdrop", child=True)


class UnitRunner:
    def __init__(
        self,
        *,
        settings: Settings,
        store: ObjectStore,
        journal: Journal,
        messages: MessageSender,
        recorders: Recorders,
        dispatcher_factory: Callable[[], Dispatcher],
        finalizer: Finalizer,
        failures: FileFailures,
    ) -> None:
        self._settings = settings
        self._store = store
        self._journal = journal
        self._messages = messages
        self._recorders = recorders
        self._dispatcher_factory = dispatcher_factory
        self._finalizer = finalizer
        self._failures = failures

    async def run(self, unit: UnitMessage, *, should_stop: Callable[[], bool], fresh: bool = False) -> JobResult:
        """Run one unit under its lease; finish the job if it was the last one."""
        ref = FileRef(unit.bucket, unit.key)
        lease = self._journal.unit_lease(unit.job_id, unit.unit, self._settings.lease_s)
        rejected: FileRejected | None = None
        async with lease.held() as hold:
            if hold.outcome is LeaseOutcome.BUSY:
                logger.info("another run holds this unit; leaving it to that run", extra={"unit": unit.unit})
                return JobResult(
                    unit.job_id, ref.bucket, ref.key, RunStatus.BUSY, reason=f"unit {unit.unit} is being run"
                )
            if hold.outcome is LeaseOutcome.DONE:
                report = None
            else:
                try:
                    report = await self._dispatch(unit, fresh=fresh, should_stop=should_stop)
                except FileRejected as exc:
                    rejected, report = exc, None
                if report is not None and report.stopped is StopReason.DEADLINE:
                    return await self._continue_later(unit, lease, hold, report)
                if report is not None and report.fatal is not None:
                    await lease.release(hold)
                else:
                    await self._journal.complete_unit(unit.job_id, unit.unit, hold, now_iso())
        if rejected is not None:
            return await self._failures.report(ref, unit.job_id, rejected.code, rejected.message)
        if report is not None and report.fatal is not None:
            return await self._stopped_early(unit, ref, report)
        return await self._finalizer.finish_if_complete(unit.job_id, ref, report)

    async def _stopped_early(self, unit: UnitMessage, ref: FileRef, report: DispatchReport) -> JobResult:
        """An error every request would share: write what was done, fail the job, say how to finish it."""
        assert report.fatal is not None
        fatal = report.fatal
        result = await self._finalizer.finalize(unit.job_id, ref, report)
        await self._failures.report(
            ref,
            unit.job_id,
            fatal.code,
            f"stopped early: {fatal.message}; requests not yet sent were not attempted — fix the cause "
            "and redrive this message to finish the file",
            fail_job=False,
        )
        result.status, result.reason = RunStatus.FAILED, fatal.code
        return result

    async def _dispatch(self, unit: UnitMessage, *, fresh: bool, should_stop: Callable[[], bool]) -> DispatchReport:
        # A first run of a new job has nothing to skip; any other run asks the journal once.
        answered, repeats = ({}, set()) if fresh else await self._journal.requests.finals(unit.job_id)
        kind = suffix(unit.key)
        template = await template_of(self._store, unit) if kind == ".csv" else None
        parsed = parse_stream(
            kind,
            read(self._store, unit, start=unit.start, end=unit.end),
            key=unit.key,
            default_model=self._settings.model,
            start=unit.start,
            first_line=unit.first_line,
            template=template,
        )
        async with self._recorders.for_job(unit.job_id, unit.bucket, unit.key, unit.etag) as recorder:

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
                return await self._dispatcher_factory().run(requests(), recorder.outcome, should_stop=should_stop)
            finally:
                await parsed.aclose()

    async def _continue_later(self, unit: UnitMessage, lease: Lease, hold: Hold, report: DispatchReport) -> JobResult:
        ref = FileRef(unit.bucket, unit.key)
        result = JobResult.of_run(unit.job_id, ref, RunStatus.UNFINISHED, report, reason="deadline")
        queue = self._settings.work_queue_url
        if queue is not None:
            # .jsonl resumes at the first line not dispatched; other formats re-read and skip what is final.
            resume = report.resume
            changes = {"start": resume.offset, "first_line": resume.line} if resume and resume.offset else {}
            await self._messages.send(queue, [unit.model_copy(update=changes)])
            logger.info("deadline near: continuation queued", extra={"job_id": unit.job_id, "resume": changes})
            result.status = RunStatus.CONTINUED
        # Given up at once: the continuation (or, with no work queue, the message handed back) may take it.
        await lease.release(hold)
        return result
