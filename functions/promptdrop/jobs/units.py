"""Running one unit of a job — the whole file, or one shard — under its lease.

One live run per unit (the lease is renewed while the run lives and expires when it dies). The
run reads the unit's lines, skips every one the journal already has a final answer for, dispatches
the rest and records each outcome. Then: the unit is done (and the job finished if it was the last
one); or the deadline came (a continuation is queued, resuming at the first line not sent); or an
error every request would share stopped it (the job fails, to be redriven once the cause is fixed);
or the run itself failed unexpectedly (the job fails with ``internal_error``, the outputs holding
what was answered — unless the fault is a passing AWS one and the message will come back).
"""

from __future__ import annotations

from collections.abc import Mapping

from aws_lambda_powertools import Logger

from ..adapters.leases import LeaseOutcome
from ..engine.dispatch import DispatchReport, ShouldStop, StopReason
from ..formats import FileRejected
from ..messages import UnitMessage
from ..records import FailureCode
from ..settings import Settings
from .cost_guard import Budget, CostGuard
from .endings import Ending, budget_ending, ends_the_job, internal_ending
from .failures import FileFailures
from .finalize import Finalizer
from .modes import UnitMode, UnitRun
from .ports import Journal, MessageSender, UnitHold
from .progress import Progress
from .run_result import FileRef, JobResult, RunStatus, now_iso

__all__ = ["UnitRunner"]

logger = Logger(service="promptdrop", child=True)


class UnitRunner:
    def __init__(
        self,
        *,
        settings: Settings,
        journal: Journal,
        messages: MessageSender,
        mode: UnitMode,
        finalizer: Finalizer,
        failures: FileFailures,
    ) -> None:
        self._settings = settings
        self._journal = journal
        self._messages = messages
        self._mode = mode
        self._finalizer = finalizer
        self._failures = failures

    async def run(
        self,
        unit: UnitMessage,
        *,
        should_stop: ShouldStop,
        fresh: bool = False,
        header: Mapping[str, str] | None = None,
        last_delivery: bool = False,
    ) -> JobResult:
        """Run one unit under its lease; finish the job if it was the last one.

        ``header``: the upload's metadata when the caller has just read it (else it is read here);
        ``last_delivery``: the queue will not deliver this message again, so even a transient fault
        ends the job rather than the message dead-lettering with no reason (:func:`.endings.ends_the_job`).
        """
        ref = FileRef(unit.bucket, unit.key)
        progress = Progress(self._journal, unit.job_id)
        report: DispatchReport | None = None
        ending: Ending | None = None
        guard = CostGuard(Budget())
        async with self._journal.unit_held(unit.job_id, unit.unit, self._settings.lease_s) as hold:
            if hold.outcome is LeaseOutcome.BUSY:
                logger.info("another run holds this unit; leaving it to that run", extra={"unit": unit.unit})
                return JobResult(
                    unit.job_id, ref.bucket, ref.key, RunStatus.BUSY, reason=f"unit {unit.unit} is being run"
                )
            if hold.outcome is LeaseOutcome.ACQUIRED:
                try:
                    # A shard's first run has nothing to skip either: no need to ask the journal.
                    fresh = fresh or hold.first
                    report = await self._mode.run(
                        UnitRun(unit, progress, guard, header, fresh=fresh, should_stop=should_stop, hold=hold)
                    )
                    if report.stopped is StopReason.WAITING:  # its check message is on the queue
                        await hold.release()
                        why = "waiting for the provider's batches"
                        return progress.tag(JobResult(unit.job_id, ref.bucket, ref.key, RunStatus.WAITING, reason=why))
                    ending = self._ending(unit, report, progress, guard)
                    if ending is None and report.stopped is StopReason.DEADLINE:
                        return progress.tag(await self._continue_later(unit, hold, report))
                except FileRejected as exc:
                    # The dead letter and the FAILED job first, the unit done last: a crash between
                    # them runs (and rejects) the file again — never takes it for finished.
                    result = await self._failures.report(ref, unit.job_id, exc.code, exc.message)
                    await hold.complete(now_iso())
                    return progress.tag(result)
                except Exception as exc:
                    if not ends_the_job(exc, last_delivery=last_delivery):
                        raise  # a passing AWS or network fault: the message comes back and resumes
                    ending = internal_ending(exc, stage="run")
                if ending is None:
                    await hold.complete(now_iso())
                else:
                    await hold.release()  # not done: a redrive resumes it
        if ending is not None:
            return progress.tag(await self._end_early(unit, ref, report, ending, progress, last_delivery), report)
        return progress.tag(await self._finish(unit, ref, report, last_delivery))

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

    async def _end_early(
        self,
        unit: UnitMessage,
        ref: FileRef,
        report: DispatchReport | None,
        ending: Ending,
        progress: Progress,
        last_delivery: bool,
    ) -> JobResult:
        """Dead-letter the file (how to finish it), then write the outputs with what was done.

        In that order: a crash between the two leaves the job open, so the redelivery ends it again —
        rather than a finished job whose dead letter, the only way to resume it, was never sent.
        A flag on the job item keeps the shards of a cancelled job to one dead letter (two shards at
        the very same moment may both send one: harmless, a redrive of either resumes the job).
        The job item as the run's last progress report found it says whether the flag is set.
        """
        flag = ending.once_flag
        job = progress.job
        if job is None or flag is None or getattr(job, flag) is None:
            await self._failures.report(ref, unit.job_id, ending.code, ending.message, fail_job=False)
            if flag:
                await self._journal.claim_once(unit.job_id, flag, now_iso())
        return await self._finish(unit, ref, report, last_delivery, early=ending)

    async def _finish(
        self,
        unit: UnitMessage,
        ref: FileRef,
        report: DispatchReport | None,
        last_delivery: bool,
        *,
        early: Ending | None = None,
    ) -> JobResult:
        """Write the outputs if the job is complete (or, ``early``, with what was done: the unit is not).

        If writing them fails for good, the job ends FAILED without them, its item saying why, and a
        dead letter too — unless ``early`` already sent one about this very crash.
        """
        try:
            if early is None and unit.unit != "all":
                return await self._finalizer.finish_if_complete(unit.job_id, ref, report)
            # The job's only unit, completed just now (or ended early): no need to ask the job item.
            result = await self._finalizer.finalize(unit.job_id, ref, report)
        except Exception as exc:
            if not ends_the_job(exc, last_delivery=last_delivery):
                raise
            if early is not None and early.code == FailureCode.INTERNAL_ERROR:
                await self._journal.fail_job(unit.job_id, early.error, now_iso())
                return JobResult(unit.job_id, ref.bucket, ref.key, RunStatus.FAILED, reason=str(early.code))
            crash = internal_ending(exc, stage="finalize")
            return await self._failures.report(ref, unit.job_id, crash.code, crash.message)
        if early is not None:
            result.status, result.reason = early.status, str(early.code)
        return result

    async def _continue_later(self, unit: UnitMessage, hold: UnitHold, report: DispatchReport) -> JobResult:
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
        await hold.release()
        return result
