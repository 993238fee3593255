"""Finishing a job: the run that completes its last unit (or redrives into it) writes the outputs.

Runs that finish at once (concurrent redrives, a shard and a redrive) must not leave outputs built
from an older journal behind. Each run counts a change on the job item, then tries the finalizer
lease: the holder rewrites the outputs and gives the lease up only if the count has not moved since
it began — otherwise it rewrites them again. A run that finds the lease held leaves its change to
the holder (which started before it, so will loop).
"""

from __future__ import annotations

from aws_lambda_powertools import Logger

from ..engine.dispatch import DispatchReport
from .output_writer import OutputWriter
from .ports import Journal
from .run_result import FileRef, JobResult, RunStatus

__all__ = ["Finalizer"]

logger = Logger(service="promptdrop", child=True)


class Finalizer:
    def __init__(self, *, journal: Journal, writer: OutputWriter, lease_s: float) -> None:
        self._journal = journal
        self._writer = writer
        self._lease_s = lease_s

    async def finish_if_complete(self, job_id: str, ref: FileRef, report: DispatchReport | None) -> JobResult:
        """Write the outputs if every unit of the job is done; else this run's part is done.

        A job whose budget stopped a shard has its outputs written already, early: a shard that
        finishes after that writes them again, so they hold its answers too."""
        job = await self._journal.get_job(job_id)
        if job is None or not (job.all_units_done or job.budget_reported is not None):
            return JobResult.of_run(job_id, ref, RunStatus.SHARD_DONE, report)
        return await self.finalize(job_id, ref, report)

    async def finalize(self, job_id: str, ref: FileRef, report: DispatchReport | None) -> JobResult:
        """Rewrite the job's outputs until they hold every change to its journal."""
        await self._journal.note_change(job_id)
        async with self._journal.finalizer_held(job_id, self._lease_s) as hold:
            job = hold.job
            if job is None:
                logger.info("another run is writing this job's outputs; it will include ours", extra={"job_id": job_id})
                return JobResult.of_run(
                    job_id, ref, RunStatus.HANDED_OFF, report, reason="another run is writing the outputs"
                )
            seen = job.changes
            while True:
                result = await self._writer.write(job, report)
                changed = await hold.release_unless_changed(seen)
                if changed is None:
                    return result
                seen = changed
