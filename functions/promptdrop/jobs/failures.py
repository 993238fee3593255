"""A file that cannot be run, or was stopped: a ``file_failure`` dead letter and a FAILED job."""

from __future__ import annotations

from aws_lambda_powertools import Logger

from ..messages import FileFailure
from ..records import ErrorRecord
from .ports import Journal, MessageSender
from .run_result import FileRef, JobResult, RunStatus, now_iso

__all__ = ["FileFailures"]

logger = Logger(service="promptdrop", child=True)


class FileFailures:
    def __init__(self, *, journal: Journal, messages: MessageSender, dlq_url: str) -> None:
        self._journal = journal
        self._messages = messages
        self._dlq_url = dlq_url

    async def report(
        self, ref: FileRef, job_id: str | None, code: str, message: str, *, fail_job: bool = True
    ) -> JobResult:
        """Dead-letter the file's failure and put it on its job item (when it has one): with ``fail_job``
        the job FAILED too; without, the reason a unit stopped early, for the outputs it goes on to write.
        ``code``: a :class:`FailureCode`, or the API's own when its answer stopped the job (a 401)."""
        record = ErrorRecord("file_error", code, message)
        error = record.as_dict()
        await self._messages.send(
            self._dlq_url, [FileFailure(job_id=job_id, bucket=ref.bucket, key=ref.key, error=error)]
        )
        if job_id is not None and fail_job:
            await self._journal.fail_job(job_id, error, now_iso())
        elif job_id is not None:
            await self._journal.set_error(job_id, error)
        logger.warning("file failed", extra={"job_id": job_id, "code": record.code, "reason": record.message})
        return JobResult(job_id, ref.bucket, ref.key, RunStatus.FAILED, reason=f"{record.code}: {record.message}")
