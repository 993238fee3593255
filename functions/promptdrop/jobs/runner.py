"""The job runner: the entry points the handler calls, built once per container.

A new upload is planned here (its job item created, a large ``.jsonl`` split into shards); units
run in :mod:`.units`, outcomes are recorded by :mod:`.recorder`, outputs written by
:mod:`.finalize` and :mod:`.output_writer`, failed prompts run again by :mod:`.redrive`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine, Iterable, Mapping
from typing import Any

from aws_lambda_powertools import Logger

from ..adapters.s3 import ObjectInfo
from ..engine.dispatch import Dispatcher, ShouldStop
from ..formats import FileRejected
from ..messages import PromptFailure, UnitMessage
from ..prices import has_flex
from ..records import FINAL_JOB_STATES, ErrorRecord, FailureCode, JobRecord
from ..settings import Settings
from .answer_cache import RouteOf
from .batch_mode import BatchMode, BatchParts
from .endings import ends_the_job, internal_ending
from .failures import FileFailures
from .finalize import Finalizer
from .intake import Intake
from .modes import FileMode, RealTimeMode
from .output_writer import OutputWriter
from .planning import count_lines, make_job_id, output_keys, plan_shards
from .ports import AnswerCacheStore, BatchApi, EventBus, Journal, MessageSender, ObjectStore
from .progress import Progress
from .recorder import Recorders
from .redrive import Redriver
from .run_result import FileRef, JobResult, RunStatus, now_iso
from .source import suffix
from .units import UnitRunner

__all__ = ["JobRunner", "ShouldStop"]

logger = Logger(service="promptdrop", child=True)


def _never(within_s: float = 0.0) -> bool:
    return False


class JobRunner:
    """Runs jobs for one invocation: the adapters and the engine are built once and passed in.

    A job is split into units — the whole file, or for a large ``.jsonl`` line-aligned shards run
    by parallel invocations; the run that completes the last unit writes the outputs.
    """

    def __init__(
        self,
        *,
        settings: Settings,
        store: ObjectStore,
        journal: Journal,
        messages: MessageSender,
        dispatcher_factory: Callable[[], Dispatcher],
        publisher: EventBus | None = None,
        batches: BatchApi,
        cache: AnswerCacheStore | None = None,
        route: str | RouteOf = "",
        flex_of: Callable[[str], bool] = has_flex,
        secrets: Callable[[], Iterable[str]] = tuple,
    ) -> None:
        self._settings = settings
        self._store = store
        self._journal = journal
        self._messages = messages
        self._failures = FileFailures(journal=journal, messages=messages, dlq_url=settings.dlq_url)
        writer = OutputWriter(journal=journal, store=store, default_model=settings.model, publisher=publisher)
        finalizer = Finalizer(journal=journal, writer=writer, lease_s=settings.lease_s)
        recorders = Recorders(
            journal=journal,
            messages=messages,
            store=store,
            dlq_url=settings.dlq_url,
            output_bucket=settings.output_bucket,
            output_prefix=settings.output_prefix,
            max_concurrency=settings.max_concurrency,
        )
        self._recorders = recorders
        intake = Intake(settings=settings, store=store, journal=journal, cache=cache, route=route)
        realtime = RealTimeMode(
            settings=settings,
            store=store,
            intake=intake,
            recorders=recorders,
            dispatcher_factory=dispatcher_factory,
            flex_of=flex_of,
        )
        batch = BatchMode(
            BatchParts(
                settings=settings,
                store=store,
                journal=journal,
                messages=messages,
                recorders=recorders,
                intake=intake,
                api=batches,
                realtime=realtime,
                secrets=secrets,
            )
        )
        self._units = UnitRunner(
            settings=settings,
            journal=journal,
            messages=messages,
            mode=FileMode(settings=settings, store=store, realtime=realtime, batch=batch),
            finalizer=finalizer,
            failures=self._failures,
        )
        self._redriver = Redriver(
            journal=journal,
            store=store,
            recorders=recorders,
            dispatcher_factory=dispatcher_factory,
            finalizer=finalizer,
            settings=settings,
        )

    async def run_file(
        self,
        ref: FileRef,
        *,
        redrive: bool = False,
        should_stop: ShouldStop = _never,
        last_delivery: bool = False,
    ) -> JobResult:
        """A new upload (or a redriven file failure): plan the job, run it or queue its shards.

        ``last_delivery``: the queue will not deliver this message again (see :meth:`run_unit`)."""
        settings = self._settings
        info = await self._store.head(ref.bucket, ref.key)
        if info is None:
            return await self._failures.report(
                ref, None, FailureCode.NOT_FOUND, "the object does not exist (deleted after upload?)"
            )
        job_id = make_job_id(ref.bucket, ref.key, info)
        sharded = suffix(ref.key) == ".jsonl" and info.size > settings.shard_bytes
        job, created = await self._journal.start_job(
            JobRecord(
                job_id=job_id,
                bucket=ref.bucket,
                key=ref.key,
                etag=info.etag,
                version_id=info.version_id,
                size=info.size,
                started_at=now_iso(),
                output_bucket=settings.output_bucket or ref.bucket,
                outputs=output_keys(settings, ref.key, suffix=suffix(ref.key)),
                units_total=None if sharded else 1,
            )
        )
        result = await self._run_job(
            job,
            ref,
            info,
            created=created,
            redrive=redrive,
            sharded=sharded,
            should_stop=should_stop,
            last_delivery=last_delivery,
        )
        result.started = created  # the metrics' JobsStarted
        return result

    async def _run_job(
        self,
        job: JobRecord,
        ref: FileRef,
        info: ObjectInfo,
        *,
        created: bool,
        redrive: bool,
        sharded: bool,
        should_stop: ShouldStop,
        last_delivery: bool,
    ) -> JobResult:
        """The job's item is there (``created``: by this run): run the file whole, or split it."""
        job_id = job.job_id
        if job.status in FINAL_JOB_STATES and not redrive:
            logger.info("job already finished; nothing to do", extra={"job_id": job_id, "status": job.status})
            return JobResult(job_id, ref.bucket, ref.key, RunStatus.SKIPPED, reason=f"already {job.status}")
        if redrive and not created:
            await self._journal.resume_job(job_id)  # e.g. after a cancel: running again
        whole = UnitMessage(
            job_id=job_id, bucket=ref.bucket, key=ref.key, etag=info.etag, version_id=info.version_id, unit="all"
        )
        if not sharded:

            def run() -> Coroutine[Any, Any, JobResult]:
                return self._units.run(
                    whole, should_stop=should_stop, fresh=created, header=info.metadata, last_delivery=last_delivery
                )

            if job.line_count is not None:
                return await run()
            # The line count (the operator's total and ETA) by a first pass beside the run, not before it.
            try:
                async with asyncio.TaskGroup() as tasks:
                    tasks.create_task(self._count_lines(whole, info.metadata))
                    running = tasks.create_task(run())
            except BaseExceptionGroup as group:  # the run's own error, as the handler knows it
                raise group.exceptions[0] from (group if len(group.exceptions) > 1 else None)
            return running.result()
        if job.units_total and not redrive:
            return JobResult(job_id, ref.bucket, ref.key, RunStatus.SKIPPED, reason="already split into shards")
        try:
            return await self._split(ref, whole)
        except Exception as exc:
            if not ends_the_job(exc, last_delivery=last_delivery):
                raise
            ending = internal_ending(exc, stage="run")  # nothing was sent: planning is what failed
            return await self._failures.report(ref, job_id, ending.code, ending.message)

    async def _count_lines(self, whole: UnitMessage, header: Mapping[str, str]) -> None:
        """Write the line count of a file run whole. Never fails the run: a file its parser rejects,
        or an object gone, is the run's to report; the count then stays unknown."""
        try:
            lines = await count_lines(self._store, whole, self._settings, header)
        except Exception as exc:  # the run goes on without a total
            logger.warning("line count failed", extra={"job_id": whole.job_id, "error": type(exc).__name__})
            return
        await self._journal.set_line_count(whole.job_id, lines)

    async def _split(self, ref: FileRef, whole: UnitMessage) -> JobResult:
        if self._settings.work_queue_url is None:
            raise RuntimeError("PROMPTDROP_WORK_QUEUE_URL must be set to split large files into shards")
        try:
            plan = await plan_shards(self._store, whole, self._settings.shard_bytes)
        except FileRejected as exc:
            return await self._failures.report(ref, whole.job_id, exc.code, exc.message)
        shards, repeats = plan.shards, plan.repeats
        await self._journal.set_line_count(whole.job_id, plan.line_count)
        if repeats:
            progress = Progress(self._journal, whole.job_id)
            recorder = self._recorders.for_job(whole.job_id, ref.bucket, ref.key, whole.etag, progress)
            async with progress.reporting(), recorder:
                for line, custom_id, earlier in repeats:
                    await recorder.repeat(line, custom_id, earlier)
        await self._journal.set_units_total(whole.job_id, len(shards))
        await self._messages.send(self._settings.work_queue_url, shards)
        logger.info("file split into shards", extra={"job_id": whole.job_id, "shards": len(shards)})
        return JobResult(whole.job_id, ref.bucket, ref.key, RunStatus.SHARDED, reason=f"{len(shards)} shards queued")

    async def run_unit(
        self, unit: UnitMessage, *, should_stop: ShouldStop = _never, last_delivery: bool = False
    ) -> JobResult:
        """A shard or a continuation from the work queue.

        ``last_delivery``: the queue's last receive of the message (its receive count has reached the
        redrive policy's ``maxReceiveCount``): even a passing AWS fault then ends the job, with a reason,
        rather than the message dead-lettering without one."""
        return await self._units.run(unit, should_stop=should_stop, last_delivery=last_delivery)

    async def redrive(self, failure: PromptFailure, *, last_delivery: bool = False) -> JobResult:
        """A redriven failed prompt: run it again and merge it into its job's outputs.

        If that fails unexpectedly, the prompt goes back to the dead-letter queue with the reason
        (``internal_error``), to be redriven again once the cause is fixed — not round the work queue."""
        try:
            return await self._redriver.redrive(failure)
        except Exception as exc:
            if not ends_the_job(exc, last_delivery=last_delivery):
                raise
            ending = internal_ending(exc, stage="run")
            error = ErrorRecord("internal_error", ending.code, ending.message).as_dict()
            await self._messages.send(self._settings.dlq_url, [failure.model_copy(update={"error": error})])
            logger.warning("redrive failed", extra={"job_id": failure.job_id, "reason": ending.message})
            ref = FileRef(failure.bucket, failure.key)
            return JobResult(failure.job_id, ref.bucket, ref.key, RunStatus.FAILED, reason=str(ending.code))
