"""Running one unit of a job — the whole file, or one shard — under its lease.

One live run per unit (the lease is renewed while the run lives and expires when it dies). The
run reads the unit's lines, skips every one the journal already has a final answer for, dispatches
the rest and records each outcome. Then: the unit is done (and the job finished if it was the last
one); or the deadline came (a continuation is queued, resuming at the first line not sent); or an
error every request would share stopped it (the job fails, to be redriven once the cause is fixed).
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator, Callable, Mapping

from aws_lambda_powertools import Logger

from ..adapters.journal import Journal
from ..adapters.leases import Hold, Lease, LeaseOutcome
from ..adapters.queues import MessageSender
from ..adapters.request_log import LineSet, RequestLog
from ..adapters.s3 import ObjectStore
from ..engine.dispatch import Dispatcher, DispatchReport, Outcome, StopReason
from ..engine.request import Request
from ..formats import FileRejected, LineError, Parsed
from ..messages import UnitMessage
from ..records import FailureCode
from ..settings import Settings
from .cost_guard import Budget, CostGuard, budget_of, check_prices
from .endings import Ending, budget_ending
from .failures import FileFailures
from .finalize import Finalizer
from .modes import mode_of, sent_as
from .progress import Progress
from .recorder import Recorders
from .run_result import FileRef, JobResult, RunStatus, now_iso
from .source import count_left, header_of, models_in, parse_unit

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
        progress = Progress(self._journal, unit.job_id)
        report: DispatchReport | None = None
        ending: Ending | None = None
        guard = CostGuard(Budget())
        async with lease.held() as hold:
            if hold.outcome is LeaseOutcome.BUSY:
                logger.info("another run holds this unit; leaving it to that run", extra={"unit": unit.unit})
                return JobResult(
                    unit.job_id, ref.bucket, ref.key, RunStatus.BUSY, reason=f"unit {unit.unit} is being run"
                )
            if hold.outcome is LeaseOutcome.ACQUIRED:
                try:
                    # A shard's first run has nothing to skip either: no need to ask the journal.
                    fresh = fresh or hold.first
                    report = await self._dispatch(unit, progress, guard, fresh=fresh, should_stop=should_stop)
                except FileRejected as exc:
                    # The dead letter and the FAILED job first, the unit done last: a crash between
                    # them runs (and rejects) the file again — never takes it for finished.
                    result = await self._failures.report(ref, unit.job_id, exc.code, exc.message)
                    await self._journal.complete_unit(unit.job_id, unit.unit, hold, now_iso())
                    return progress.tag(result)
                ending = self._ending(unit, report, progress, guard)
                if ending is None and report.stopped is StopReason.DEADLINE:
                    return progress.tag(await self._continue_later(unit, lease, hold, report))
                if ending is None:
                    await self._journal.complete_unit(unit.job_id, unit.unit, hold, now_iso())
                else:
                    await lease.release(hold)  # not done: a redrive resumes it
        if report is not None and ending is not None:
            return progress.tag(await self._end_early(unit, ref, report, ending), report)
        return progress.tag(await self._finalizer.finish_if_complete(unit.job_id, ref, report))

    def _ending(self, unit: UnitMessage, report: DispatchReport, progress: Progress, guard: CostGuard) -> Ending | None:
        """Why this unit stops for good before its end, if it does."""
        if report.fatal is not None:
            fatal = report.fatal
            why = f"stopped early: {fatal.message}; requests not yet sent were not attempted — fix the cause "
            return Ending(fatal.code, why + "and redrive this message to finish the file", RunStatus.FAILED)
        if guard.refused is not None:
            return budget_ending(unit, guard, progress)
        if report.stopped is not StopReason.DEADLINE:
            return None
        if progress.cancelled:
            why = "cancelled on request; the outputs hold what was done — redrive this message to resume the job"
            return Ending(FailureCode.CANCELLED, why, RunStatus.CANCELLED, once_flag="cancel_reported")
        limit = self._settings.max_continuations
        if unit.hops >= limit:
            why = (
                f"unit {unit.unit} needed more than {limit} continuations (PROMPTDROP_MAX_CONTINUATIONS); "
                "what was done is in the outputs — raise the limit or split the file, then redrive this message"
            )
            return Ending(FailureCode.TOO_MANY_CONTINUATIONS, why, RunStatus.FAILED)
        return None

    async def _end_early(self, unit: UnitMessage, ref: FileRef, report: DispatchReport, ending: Ending) -> JobResult:
        """Dead-letter the file (how to finish it), then write the outputs with what was done.

        In that order: a crash between the two leaves the job open, so the redelivery ends it again —
        rather than a finished job whose dead letter, the only way to resume it, was never sent.
        A flag on the job item keeps the shards of a cancelled job to one dead letter (two shards at
        the very same moment may both send one: harmless, a redrive of either resumes the job).
        """
        flag = ending.once_flag
        job = await self._journal.get_job(unit.job_id) if flag else None
        if job is None or flag is None or getattr(job, flag) is None:
            await self._failures.report(ref, unit.job_id, ending.code, ending.message, fail_job=False)
            if flag:
                await self._journal.claim_once(unit.job_id, flag, now_iso())
        result = await self._finalizer.finalize(unit.job_id, ref, report)
        result.status, result.reason = ending.status, str(ending.code)
        return result

    async def _dispatch(
        self,
        unit: UnitMessage,
        progress: Progress,
        guard: CostGuard,
        *,
        fresh: bool,
        should_stop: Callable[[], bool],
    ) -> DispatchReport:
        whole = unit.unit == "all"
        answered, done = await _done_before(self._journal.requests, unit, whole=whole, fresh=fresh)
        guard.done_before = len(answered) + len(done)
        header = await header_of(self._store, unit)
        guard.limits = budget_of(self._settings, header, await self._journal.get_job(unit.job_id))
        mode = mode_of(self._settings, header)
        if guard.limits.usd is not None:  # every model's price, before anything is sent
            check_prices(
                await models_in(parse_unit(self._store, unit, self._settings.model, header, self._settings.endpoint)),
                guard.limits,
            )
        parsed = parse_unit(self._store, unit, self._settings.model, header, self._settings.endpoint)
        recorder = self._recorders.for_job(unit.job_id, unit.bucket, unit.key, unit.etag, progress)
        async with progress.reporting(), recorder:

            async def requests() -> AsyncIterator[Request]:
                first_line: dict[str, int] = {}  # custom_id -> the line that uses it, in this run
                item: Parsed
                async for item in parsed:
                    if item.line in done:
                        continue  # failed as a repeat already, or (a shard) done already
                    earlier = answered.get(item.custom_id)
                    if earlier == item.line:
                        continue  # answered already: a resumed or redelivered run
                    earlier = earlier or first_line.get(item.custom_id)
                    if earlier is not None:
                        await recorder.repeat(item.line, item.custom_id, earlier, item.columns)
                        continue
                    if whole:  # a shard's repeats were all found when the file was planned
                        first_line[item.custom_id] = item.line
                    if isinstance(item, LineError):
                        await recorder.line_error(item)
                    elif guard.limits.active and not guard.admit(item, progress.spent()):
                        # Stop sending (those in flight finish); count what is left for the dead letter.
                        guard.left = 1 + await count_left(parsed, answered, done)
                        return
                    else:
                        progress.sent()
                        yield sent_as(item, mode)

            def stop() -> bool:
                return progress.cancelled or should_stop()

            async def on_outcome(outcome: Outcome) -> None:
                guard.settle(outcome.request)  # its actual cost is counted by the recorder, at once
                await recorder.outcome(outcome)

            dispatcher = self._dispatcher_factory()
            recorder.hold_while(dispatcher.rate_bound)
            try:
                return await dispatcher.run(requests(), on_outcome, should_stop=stop)
            finally:
                await parsed.aclose()

    def _parse(self, unit: UnitMessage, header: Mapping[str, str]) -> AsyncGenerator[Parsed]:
        return parse_unit(self._store, unit, self._settings.model, header, self._settings.endpoint)

    async def _continue_later(self, unit: UnitMessage, lease: Lease, hold: Hold, report: DispatchReport) -> JobResult:
        ref = FileRef(unit.bucket, unit.key)
        result = JobResult.of_run(unit.job_id, ref, RunStatus.UNFINISHED, report, reason="deadline")
        queue = self._settings.work_queue_url
        if queue is not None:
            # .jsonl resumes at the first line not dispatched; other formats re-read and skip what is final.
            resume = report.resume
            changes: dict[str, int] = {"hops": unit.hops + 1}
            if resume and resume.offset:
                changes |= {"start": resume.offset, "first_line": resume.line}
            await self._messages.send(queue, [unit.model_copy(update=changes)])
            logger.info("deadline near: continuation queued", extra={"job_id": unit.job_id, "resume": changes})
            result.status = RunStatus.CONTINUED
        # Given up at once: the continuation (or, with no work queue, the message handed back) may take it.
        await lease.release(hold)
        return result


async def _done_before(
    log: RequestLog, unit: UnitMessage, *, whole: bool, fresh: bool
) -> tuple[dict[str, int], LineSet]:
    """What this run must not send again: (each answered ``custom_id``'s line, the lines to skip).

    A first run has nothing answered to skip — only, in a split file, the repeats planning found.
    A rerun of the whole file finds repeats itself, so it keeps each answered ``custom_id``'s line
    (bounded by the shard size: larger files are split). A rerun of a shard needs only the lines
    done, job-wide, as a bitmap: a million-line job's would be a 60 MB dict, and is 125 KB.
    """
    if whole:
        return ({}, LineSet()) if fresh else await log.finals(unit.job_id)
    if fresh:
        return {}, await log.repeats(unit.job_id)
    return {}, await log.done_lines(unit.job_id)
