"""A redriven ``prompt_failure``: run that one request again and merge it into its job's outputs.

The file's cost guard holds here too: the request is sent only if its worst case fits what the job
may still spend (the job item's budget, else the upload's metadata, else the environment's); if not,
it fails again with ``budget_exceeded`` and a dead letter that can send it once the budget is raised.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable, Iterable

from aws_lambda_powertools import Logger

from ..adapters.request_log import Prior
from ..adapters.s3 import ObjectChanged, ObjectInfo
from ..engine.dispatch import Dispatcher
from ..engine.request import Request
from ..formats import FileRejected, request_from_object
from ..messages import PromptFailure
from ..records import JobRecord
from ..settings import Settings
from .admission import Guarded, admitted
from .cost_guard import CostGuard, budget_of
from .finalize import Finalizer
from .ports import Journal, ObjectStore
from .progress import Progress
from .recorder import Recorders
from .run_result import FileRef, JobResult, RunStatus

__all__ = ["Redriver"]

logger = Logger(service="promptdrop", child=True)


class Redriver:
    def __init__(
        self,
        *,
        journal: Journal,
        store: ObjectStore,
        recorders: Recorders,
        dispatcher_factory: Callable[[], Dispatcher],
        finalizer: Finalizer,
        settings: Settings,
    ) -> None:
        self._journal = journal
        self._store = store
        self._recorders = recorders
        self._dispatcher_factory = dispatcher_factory
        self._finalizer = finalizer
        self._settings = settings

    async def redrive(self, failure: PromptFailure) -> JobResult:
        job_id = failure.job_id
        ref = FileRef(failure.bucket, failure.key)
        job = await self._journal.get_job(job_id)
        if job is None:
            logger.warning("redriven failure of an unknown job; dropped", extra={"job_id": job_id})
            return JobResult(job_id, ref.bucket, ref.key, RunStatus.SKIPPED, reason="unknown job")
        requests: list[Request] = []
        batch_line = failure.request
        # A line that never parsed has no request to send: only a corrected upload can fix it.
        prior = await self._journal.requests.prior(job_id, failure.custom_id) if batch_line is not None else None
        if batch_line is not None and prior is not None and not prior.succeeded:
            item = request_from_object(
                batch_line,
                line=failure.line,
                default_id=failure.custom_id,
                default_model=self._settings.model,
                text_len=len(json.dumps(batch_line)),
                columns=await self._columns(job.output_bucket or job.bucket, prior),
            )
            if isinstance(item, Request):
                requests.append(item)

        progress = Progress(self._journal, job_id)
        async with (
            progress.reporting(),
            self._recorders.for_job(job_id, job.bucket, job.key, job.etag, progress) as rec,
        ):
            stages = [Guarded(await self._guard(job), progress, refuse=rec)] if requests else []
            dispatcher = self._dispatcher_factory()
            rec.hold_while(dispatcher.rate_bound)
            report = await dispatcher.run(admitted(_each(requests), stages), rec.outcome)
        logger.info("redrive done", extra={"job_id": job_id, "rerun": len(requests)})
        return progress.tag(await self._finalizer.finish_if_complete(job_id, ref, report), report)

    async def _guard(self, job: JobRecord) -> CostGuard:
        """The file's cost guard as its units have it; the upload's metadata is read if it is still there."""
        try:
            metadata = await self._store.metadata(job.bucket, job.key, ObjectInfo(job.etag, job.version_id, 0))
            return CostGuard(budget_of(self._settings, metadata, job))
        except (ObjectChanged, FileRejected):  # gone, or metadata the file's own run already refused
            return CostGuard(budget_of(self._settings, {}, job))

    async def _columns(self, out_bucket: str, prior: Prior) -> tuple[tuple[str, str], ...]:
        """A .csv row's cells from the failure's item: the dead letter carries the request only, and
        the answer's item must keep them for the .out.csv."""
        text = prior.columns
        if prior.columns_s3_key is not None:
            text = json.dumps(await self._store.get_json(out_bucket, prior.columns_s3_key))
        cells = json.loads(text).get("cells") if text else None
        return tuple((str(name), str(cell)) for name, cell in cells or ())


async def _each(requests: Iterable[Request]) -> AsyncIterator[Request]:
    for request in requests:
        yield request
