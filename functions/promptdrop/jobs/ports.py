"""What ``jobs/`` needs of the world, as small protocols: the journal (job item, leases, request
items), the object store, the queues and the event bus.

The DynamoDB, S3, SQS and EventBridge adapters (``promptdrop.adapters``) satisfy them as they are
(``runtime`` hands them in, and mypy checks that they fit); the unit tests hand in in-memory fakes
with the same semantics (``tests/unit/jobs/fakes.py``). The values they trade in (records, object
identities, lease outcomes) are plain data defined beside the adapters or in ``records``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any, Protocol

from ..adapters.leases import LeaseOutcome
from ..adapters.request_log import LineSet, Prior
from ..adapters.s3 import ObjectInfo
from ..engine.batch_api import BatchView
from ..messages import FileFailure, PromptFailure, UnitMessage
from ..records import CachedAnswer, JobRecord, RequestRecord

__all__ = [
    "AnswerCacheStore",
    "BatchApi",
    "EventBus",
    "FinalizerHold",
    "Journal",
    "MessageSender",
    "ObjectStore",
    "RequestLog",
    "UnitHold",
]


class ObjectStore(Protocol):
    """Input objects in (pinned to the job's version: a replaced object raises ``ObjectChanged``), outputs out."""

    async def head(self, bucket: str, key: str) -> ObjectInfo | None: ...

    def stream(
        self, bucket: str, key: str, info: ObjectInfo, *, start: int = 0, end: int | None = None
    ) -> AsyncIterator[bytes]: ...

    async def metadata(self, bucket: str, key: str, info: ObjectInfo) -> dict[str, str]: ...

    async def put_bytes(self, bucket: str, key: str, data: bytes, content_type: str) -> None: ...

    async def put_json(self, bucket: str, key: str, value: Any) -> None: ...

    async def put_stream(self, bucket: str, key: str, chunks: Iterable[bytes], content_type: str) -> None: ...

    async def get_json(self, bucket: str, key: str) -> Any: ...


class AnswerCacheStore(Protocol):
    """Answers kept for reuse, by key (jobs/answer_cache.py); either call may raise: the caller carries on."""

    async def get_many(self, keys: Sequence[str]) -> dict[str, CachedAnswer]: ...

    async def put_many(self, answers: Sequence[CachedAnswer], now: str) -> None: ...


class MessageSender(Protocol):
    """Messages to a queue (dead letters, work): every one sent, or an error raised."""

    async def send(
        self, queue_url: str, messages: Sequence[UnitMessage | PromptFailure | FileFailure], *, delay_s: int = 0
    ) -> None: ...


class BatchApi(Protocol):
    """The provider's Batch API (engine/batch_api.py): files up and down, batches created, read, cancelled —
    each call at the API of ``model``'s route (a batch holds one model)."""

    async def upload(self, model: str, path: Path) -> str: ...

    async def create(self, model: str, input_file_id: str, endpoint: str, metadata: Mapping[str, str]) -> BatchView: ...

    async def find(self, model: str, metadata: Mapping[str, str]) -> BatchView | None: ...

    async def get(self, model: str, batch_id: str) -> BatchView: ...

    async def cancel(self, model: str, batch_id: str) -> BatchView: ...

    async def download(self, model: str, file_id: str, path: Path) -> None: ...

    async def delete(self, model: str, file_id: str) -> None: ...


class EventBus(Protocol):
    """The completion event of a job's final state."""

    async def publish(self, detail_type: str, detail: dict[str, Any]) -> None: ...


class RequestLog(Protocol):
    """One item per ``custom_id`` of a job (and one per repeated line); a failure never replaces an answer."""

    async def write(self, job_id: str, records: Sequence[RequestRecord], now: str) -> None: ...

    def records(self, job_id: str) -> AsyncIterator[RequestRecord]: ...

    async def finals(self, job_id: str) -> tuple[dict[str, int], LineSet]: ...

    async def done_lines(self, job_id: str) -> LineSet: ...

    async def repeats(self, job_id: str) -> LineSet: ...

    async def prior(self, job_id: str, custom_id: str) -> Prior: ...


class UnitHold(Protocol):
    """A unit's lease as its run holds it."""

    @property
    def outcome(self) -> LeaseOutcome: ...

    @property
    def first(self) -> bool: ...

    async def complete(self, now: str) -> None: ...

    async def release(self) -> None: ...

    @property
    def batches(self) -> str | None: ...

    async def save_batches(self, state: str) -> None: ...


class FinalizerHold(Protocol):
    """The finalizer lease as a run holds it: the job as the take found it (None: another run holds it)."""

    @property
    def job(self) -> JobRecord | None: ...

    async def release_unless_changed(self, seen: int) -> int | None: ...


class Journal(Protocol):
    """The job item, its leases, and (``requests``) the request items."""

    @property
    def requests(self) -> RequestLog: ...

    async def start_job(self, job: JobRecord) -> tuple[JobRecord, bool]: ...

    async def get_job(self, job_id: str) -> JobRecord | None: ...

    async def set_units_total(self, job_id: str, units: int) -> None: ...

    async def close_job(self, job: JobRecord) -> None: ...

    async def add_progress(
        self, job_id: str, counts: Mapping[str, int | float], now: str, *, window: list[list[float]] | None = None
    ) -> JobRecord: ...

    async def set_line_count(self, job_id: str, lines: int) -> None: ...

    async def set_error(self, job_id: str, error: dict[str, Any]) -> None: ...

    async def resume_job(self, job_id: str) -> None: ...

    async def claim_once(self, job_id: str, flag: str, now: str) -> bool: ...

    async def set_published(self, job_id: str, outcome: str) -> None: ...

    async def fail_job(self, job_id: str, error: dict[str, Any], finished_at: str) -> None: ...

    async def note_change(self, job_id: str) -> None: ...

    def unit_held(self, job_id: str, unit: str, lease_s: float) -> AbstractAsyncContextManager[UnitHold]: ...

    def finalizer_held(self, job_id: str, lease_s: float) -> AbstractAsyncContextManager[FinalizerHold]: ...
