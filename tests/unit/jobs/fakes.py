"""In-memory fakes of the ports ``jobs/`` runs on (``promptdrop.jobs.ports``), with the adapters' semantics.

- :class:`MemoryJournal`: the job item (created once, counters added, flags set only if absent),
  the leases (a conditional take: free, expired on the fake clock, or ours; a done unit refused
  for good; the finalizer's release refused while the change count moved) and
  :class:`MemoryRequestLog` (one item per ``custom_id``, one per repeated line; a failure never
  replaces an answer).
- :class:`MemoryStore`: objects with an ETag, reads pinned to it (a replaced object raises
  ``ObjectChanged``, as S3's ``If-Match`` does), every call counted.
- :class:`MemoryQueues`, :class:`MemoryBus`: what was sent and published, in order.

Each can be told to raise at a given call (``fail``): how the unit tests inject a fault at a stage.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import json
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from promptdrop.adapters.items import request_from_item, request_to_item
from promptdrop.adapters.leases import LeaseOutcome
from promptdrop.adapters.request_log import OUTPUT_ATTRIBUTES, LineSet, Prior
from promptdrop.adapters.s3 import ObjectChanged, ObjectInfo
from promptdrop.engine.batch_api import BatchView
from promptdrop.messages import FileFailure, PromptFailure, UnitMessage
from promptdrop.records import JobRecord, JobStatus, RequestRecord, RequestStatus


class Faults:
    """Exceptions to raise at named calls: ``fail("write", exc)`` raises ``exc`` at the next ``write``
    (``times`` in a row; ``None``: every time from now on)."""

    def __init__(self) -> None:
        self._planned: dict[str, tuple[BaseException, int | None]] = {}
        self._spared: Counter[str] = Counter()  # calls at ``name`` still to let through first
        self.calls: Counter[str] = Counter()

    def fail(self, name: str, exc: BaseException, *, times: int | None = 1, after: int = 0) -> None:
        """``after``: let that many calls through first."""
        self._planned[name] = (exc, times)
        self._spared[name] = after

    def heal(self, name: str) -> None:
        """No more faults at ``name``."""
        self._planned.pop(name, None)

    def check(self, name: str) -> None:
        self.calls[name] += 1
        if name not in self._planned:
            return
        if self._spared[name]:
            self._spared[name] -= 1
            return
        exc, times = self._planned[name]
        if times is not None:
            if times <= 1:
                del self._planned[name]
            else:
                self._planned[name] = (exc, times - 1)
        raise exc


# -- the object store ----------------------------------------------------------------------------


@dataclass
class _Object:
    data: bytes
    etag: str
    content_type: str = "application/octet-stream"
    metadata: dict[str, str] = field(default_factory=dict)


class MemoryStore(Faults):
    def __init__(self, *, chunk: int = 64) -> None:
        super().__init__()
        self.objects: dict[tuple[str, str], _Object] = {}
        self._chunk = chunk  # small: a file arrives in several chunks, as from S3

    def put(self, bucket: str, key: str, data: bytes | str, **metadata: str) -> ObjectInfo:
        """Upload an input (what a user does); returns its identity."""
        raw = data.encode() if isinstance(data, str) else data
        obj = _Object(raw, hashlib.md5(raw).hexdigest(), metadata=dict(metadata))
        self.objects[(bucket, key)] = obj
        return ObjectInfo(obj.etag, None, len(raw), dict(metadata))

    def _pinned(self, bucket: str, key: str, info: ObjectInfo) -> _Object:
        obj = self.objects.get((bucket, key))
        if obj is None or obj.etag != info.etag:
            raise ObjectChanged(f"{key} was replaced or deleted before this job could read it")
        return obj

    async def head(self, bucket: str, key: str) -> ObjectInfo | None:
        self.check("head")
        obj = self.objects.get((bucket, key))
        return None if obj is None else ObjectInfo(obj.etag, None, len(obj.data), dict(obj.metadata))

    async def stream(
        self, bucket: str, key: str, info: ObjectInfo, *, start: int = 0, end: int | None = None
    ) -> AsyncIterator[bytes]:
        self.check("stream")
        data = self._pinned(bucket, key, info).data[start:end]
        for at in range(0, len(data), self._chunk):
            yield data[at : at + self._chunk]

    async def metadata(self, bucket: str, key: str, info: ObjectInfo) -> dict[str, str]:
        self.check("metadata")
        return dict(self._pinned(bucket, key, info).metadata)

    async def put_bytes(self, bucket: str, key: str, data: bytes, content_type: str) -> None:
        self.check("put")
        self.objects[(bucket, key)] = _Object(data, hashlib.md5(data).hexdigest(), content_type)

    async def put_json(self, bucket: str, key: str, value: Any) -> None:
        await self.put_bytes(bucket, key, json.dumps(value).encode(), "application/json")

    async def put_stream(self, bucket: str, key: str, chunks: Iterable[bytes], content_type: str) -> None:
        await self.put_bytes(bucket, key, b"".join(chunks), content_type)

    async def get_json(self, bucket: str, key: str) -> Any:
        self.check("get_json")
        return json.loads(self.objects[(bucket, key)].data)

    def text(self, bucket: str, key: str) -> str:
        return self.objects[(bucket, key)].data.decode()

    def jsonl(self, bucket: str, key: str) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.text(bucket, key).splitlines() if line]


# -- queues and the bus --------------------------------------------------------------------------


class MemoryQueues(Faults):
    def __init__(self) -> None:
        super().__init__()
        self.sent: dict[str, list[UnitMessage | PromptFailure | FileFailure]] = {}
        self.delays: list[int] = []  # each message's DelaySeconds, in the order sent

    async def send(
        self, queue_url: str, messages: Sequence[UnitMessage | PromptFailure | FileFailure], *, delay_s: int = 0
    ) -> None:
        self.check("send")
        for message in messages:
            message.dump()  # what SQS would be sent: it must serialize
        self.sent.setdefault(queue_url, []).extend(messages)
        self.delays.extend([delay_s] * len(messages))

    def on(self, queue_url: str) -> list[UnitMessage | PromptFailure | FileFailure]:
        return self.sent.get(queue_url, [])


class MemoryBus(Faults):
    def __init__(self) -> None:
        super().__init__()
        self.events: list[tuple[str, dict[str, Any]]] = []

    async def publish(self, detail_type: str, detail: dict[str, Any]) -> None:
        self.check("publish")
        self.events.append((detail_type, json.loads(json.dumps(detail))))


# -- the journal ---------------------------------------------------------------------------------


class MemoryRequestLog(Faults):
    """Request items kept as the adapter's codec writes them, read back as its queries project them."""

    def __init__(self) -> None:
        super().__init__()
        self.items: dict[str, dict[str, dict[str, Any]]] = {}  # job_id -> sort key -> DynamoDB item
        self.written: Counter[str] = Counter()  # times each custom_id's record was written

    async def write(self, job_id: str, records: Sequence[RequestRecord], now: str) -> None:
        self.check("write")
        items = self.items.setdefault(job_id, {})
        self.written.update(record.custom_id for record in records)
        for record in records:
            item = request_to_item(job_id, record, now)
            kept = items.get(item["sk"]["S"])
            if not record.succeeded and kept is not None and kept["status"]["S"] == RequestStatus.SUCCEEDED:
                continue  # the conditional put: a failure never replaces an answer
            items[item["sk"]["S"]] = item

    def _records(self, job_id: str, names: Iterable[str] | None = None) -> list[RequestRecord]:
        items = self.items.get(job_id, {}).values()
        if names is not None:
            wanted = set(names)
            items = [{k: v for k, v in item.items() if k in wanted} for item in items]
        return [request_from_item(copy.deepcopy(item)) for item in items]

    async def records(self, job_id: str) -> AsyncIterator[RequestRecord]:
        self.check("records")
        for record in self._records(job_id, OUTPUT_ATTRIBUTES):
            yield record

    async def finals(self, job_id: str) -> tuple[dict[str, int], LineSet]:
        self.check("finals")
        answered = {r.custom_id: r.line for r in self._records(job_id) if r.repeat_of is None}
        return answered, await self.repeats(job_id)

    async def done_lines(self, job_id: str) -> LineSet:
        self.check("done_lines")
        return LineSet(r.line for r in self._records(job_id))

    async def repeats(self, job_id: str) -> LineSet:
        self.check("repeats")
        return LineSet(r.line for r in self._records(job_id) if r.repeat_of is not None)

    async def prior(self, job_id: str, custom_id: str) -> Prior:
        self.check("prior")
        item = self.items.get(job_id, {}).get(f"REQ#{custom_id}")
        if item is None:
            return Prior(succeeded=False)
        record = request_from_item(item)
        return Prior(record.succeeded, record.columns, record.columns_s3_key)

    def of(self, job_id: str) -> dict[int, RequestRecord]:
        """The job's items by line, every attribute (what the tests read back)."""
        return {r.line: r for r in self._records(job_id)}


@dataclass
class _LeaseItem:
    owner: str | None = None
    until: float | None = None
    done_at: str | None = None
    ever_taken: bool = False
    batches: str | None = None  # the unit's provider batches (JSON), as the run holding it saved them


class LeaseLost(Exception):
    """The unit's lease is another run's now (DynamoDB's ConditionalCheckFailed on the owner)."""


class _MemoryHold:
    def __init__(self, journal: MemoryJournal, item: _LeaseItem, owner: str, outcome: LeaseOutcome, first: bool):
        self._journal = journal
        self._item = item
        self._owner = owner
        self._outcome = outcome
        self._first = first
        self.released = outcome is not LeaseOutcome.ACQUIRED

    @property
    def outcome(self) -> LeaseOutcome:
        return self._outcome

    @property
    def first(self) -> bool:
        return self._first

    async def release(self) -> None:
        self._journal.check("release")
        if self._item.owner == self._owner:
            self._item.owner = self._item.until = None
        self.released = True


class MemoryUnitHold(_MemoryHold):
    def __init__(
        self, journal: MemoryJournal, job_id: str, item: _LeaseItem, owner: str, outcome: LeaseOutcome, first: bool
    ):
        super().__init__(journal, item, owner, outcome, first)
        self._job_id = job_id

    @property
    def batches(self) -> str | None:
        return self._item.batches

    async def save_batches(self, state: str) -> None:
        self._journal.check("save_batches")
        if self._item.owner != self._owner:
            raise LeaseLost(self._job_id)
        self._item.batches = state

    async def complete(self, now: str) -> None:
        self._journal.check("complete")
        item = self._item
        if item.done_at is None and item.owner == self._owner:  # else a duplicate run counted it already
            item.done_at, item.until = now, None
            self._journal.jobs[self._job_id].units_done += 1
        self.released = True


class MemoryFinalizerHold(_MemoryHold):
    def __init__(
        self,
        journal: MemoryJournal,
        job_id: str,
        item: _LeaseItem,
        owner: str,
        outcome: LeaseOutcome,
        job: JobRecord | None,
    ):
        super().__init__(journal, item, owner, outcome, first=False)
        self._job_id = job_id
        self.job = job

    async def release_unless_changed(self, seen: int) -> int | None:
        self._journal.check("release")
        if self._item.owner != self._owner:
            self.released = True  # lost: the run that took it finishes
            return None
        changes = self._journal.jobs[self._job_id].changes
        if changes != seen:
            return changes
        self._item.owner = self._item.until = None
        self.released = True
        return None


class MemoryJournal(Faults):
    """The job items and leases in memory; ``clock`` is the leases' clock (seconds)."""

    def __init__(self, clock: Callable[[], float]) -> None:
        super().__init__()
        self.clock = clock
        self.jobs: dict[str, JobRecord] = {}
        self.leases: dict[tuple[str, str], _LeaseItem] = {}  # (job_id, "UNIT#<unit>" | "FIN")
        self.requests = MemoryRequestLog()
        self.progress: dict[str, int | float] = {}  # every progress_* count added, of every job
        self._owners = 0

    def job(self, job_id: str) -> JobRecord:
        """The job item as it is now (for the tests' eyes)."""
        return copy.deepcopy(self.jobs[job_id])

    async def start_job(self, job: JobRecord) -> tuple[JobRecord, bool]:
        self.check("start_job")
        if job.job_id in self.jobs:
            return copy.deepcopy(self.jobs[job.job_id]), False
        self.jobs[job.job_id] = copy.deepcopy(job)
        return job, True

    async def get_job(self, job_id: str) -> JobRecord | None:
        self.check("get_job")
        return copy.deepcopy(self.jobs.get(job_id))

    async def set_units_total(self, job_id: str, units: int) -> None:
        self.check("set_units_total")
        if self.jobs[job_id].units_total is None:
            self.jobs[job_id].units_total = units

    async def close_job(self, job: JobRecord) -> None:
        self.check("close_job")
        kept = self.jobs[job.job_id]
        for name in ("status", "total", "succeeded", "failed", "prompt_tokens", "completion_tokens"):
            setattr(kept, name, getattr(job, name))
        kept.finished_at = job.finished_at or kept.finished_at
        kept.estimated_cost_usd = job.estimated_cost_usd or kept.estimated_cost_usd

    async def add_progress(
        self, job_id: str, counts: Mapping[str, int | float], now: str, *, window: list[list[float]] | None = None
    ) -> JobRecord:
        self.check("add_progress")
        job = self.jobs[job_id]  # the real update is conditional on the item existing: KeyError here
        for name, value in counts.items():
            self.progress[name] = self.progress.get(name, 0) + value
            if hasattr(job, f"progress_{name}"):  # the item keeps every count; the record reads back these
                setattr(job, f"progress_{name}", (getattr(job, f"progress_{name}") or 0) + value)
        job.updated_at = now
        if window is not None:
            job.progress_window = copy.deepcopy(window)
        return copy.deepcopy(job)

    async def set_line_count(self, job_id: str, lines: int) -> None:
        self.check("set_line_count")
        self.jobs[job_id].line_count = lines

    async def set_error(self, job_id: str, error: dict[str, Any]) -> None:
        self.check("set_error")
        self.jobs[job_id].error = dict(error)

    async def resume_job(self, job_id: str) -> None:
        self.check("resume_job")
        job = self.jobs[job_id]
        job.status = JobStatus.RUNNING
        job.cancel_requested_at = job.cancel_reported = job.budget_reported = None
        job.error = None

    async def claim_once(self, job_id: str, flag: str, now: str) -> bool:
        self.check("claim_once")
        if getattr(self.jobs[job_id], flag) is not None:
            return False
        setattr(self.jobs[job_id], flag, now)
        return True

    async def set_published(self, job_id: str, outcome: str) -> None:
        self.check("set_published")
        self.jobs[job_id].published = outcome

    async def fail_job(self, job_id: str, error: dict[str, Any], finished_at: str) -> None:
        self.check("fail_job")
        job = self.jobs[job_id]
        job.status, job.error, job.finished_at = JobStatus.FAILED, dict(error), finished_at

    async def note_change(self, job_id: str) -> None:
        self.check("note_change")
        self.jobs[job_id].changes += 1

    def _take(self, item: _LeaseItem, lease_s: float, *, done_counts: bool) -> tuple[str, LeaseOutcome, bool]:
        self._owners += 1
        owner, now = f"owner-{self._owners}", self.clock()
        if done_counts and item.done_at is not None:
            return owner, LeaseOutcome.DONE, False
        if item.until is not None and item.until >= now and item.owner is not None:
            return owner, LeaseOutcome.BUSY, False
        first = not item.ever_taken
        item.owner, item.until, item.ever_taken = owner, now + lease_s, True
        return owner, LeaseOutcome.ACQUIRED, first

    @contextlib.asynccontextmanager
    async def unit_held(self, job_id: str, unit: str, lease_s: float) -> AsyncIterator[MemoryUnitHold]:
        self.check("unit_held")
        item = self.leases.setdefault((job_id, f"UNIT#{unit}"), _LeaseItem())
        owner, outcome, first = self._take(item, lease_s, done_counts=True)
        hold = MemoryUnitHold(self, job_id, item, owner, outcome, first)
        try:
            yield hold
        finally:
            if not hold.released and item.owner == owner:
                item.owner = item.until = None

    @contextlib.asynccontextmanager
    async def finalizer_held(self, job_id: str, lease_s: float) -> AsyncIterator[MemoryFinalizerHold]:
        self.check("finalizer_held")
        item = self.leases.setdefault((job_id, "FIN"), _LeaseItem())
        before = copy.deepcopy(self.jobs.get(job_id))
        owner, outcome, _ = self._take(item, lease_s, done_counts=False)
        acquired = outcome is LeaseOutcome.ACQUIRED
        hold = MemoryFinalizerHold(self, job_id, item, owner, outcome, before if acquired else None)
        try:
            yield hold
        finally:
            if not hold.released and item.owner == owner:
                item.owner = item.until = None

    def lease(self, job_id: str, name: str) -> _LeaseItem:
        return self.leases[(job_id, name)]


def failed(record: RequestRecord) -> bool:
    return record.status is RequestStatus.FAILED


# -- the provider's Batch API --------------------------------------------------------------------


class MemoryBatches(Faults):
    """The provider's Batch API in memory; a test moves each batch along (:meth:`finish`, :meth:`fail`)."""

    def __init__(self) -> None:
        super().__init__()
        self.files: dict[str, bytes] = {}
        self.batches: dict[str, dict[str, Any]] = {}
        self.deleted: list[str] = []
        self.created = 0

    def _id(self, prefix: str) -> str:
        return f"{prefix}{len(self.files) + len(self.batches) + len(self.deleted)}"

    def _view(self, batch: dict[str, Any]) -> BatchView:
        return BatchView(
            batch["id"],
            batch["status"],
            batch.get("output"),
            batch.get("error"),
            batch["total"],
            batch.get("completed", 0),
            batch.get("failed", 0),
            tuple(batch.get("errors", ())),
            batch["metadata"],
        )

    async def upload(self, model: str, path: Path) -> str:
        self.check("upload")
        file_id = self._id("file-")
        self.files[file_id] = path.read_bytes()  # noqa: ASYNC240 (a small test file)
        return file_id

    async def create(self, model: str, input_file_id: str, endpoint: str, metadata: Mapping[str, str]) -> BatchView:
        self.check("create")
        batch_id = self._id("batch_")
        total = self.files[input_file_id].count(b"\n")
        self.batches[batch_id] = {
            "id": batch_id, "status": "in_progress", "input": input_file_id, "endpoint": endpoint,
            "metadata": dict(metadata), "total": total,
        }  # fmt: skip
        self.created += 1
        return self._view(self.batches[batch_id])

    async def find(self, model: str, metadata: Mapping[str, str]) -> BatchView | None:
        self.check("find")
        for batch in reversed(self.batches.values()):
            if all(batch["metadata"].get(k) == v for k, v in metadata.items()):
                return self._view(batch)
        return None

    async def get(self, model: str, batch_id: str) -> BatchView:
        self.check("get")
        return self._view(self.batches[batch_id])

    async def cancel(self, model: str, batch_id: str) -> BatchView:
        self.check("cancel")
        batch = self.batches[batch_id]
        if batch["status"] in ("validating", "in_progress"):
            batch["status"] = "cancelling"
        return self._view(batch)

    async def download(self, model: str, file_id: str, path: Path) -> None:
        self.check("download")
        path.write_bytes(self.files[file_id])  # noqa: ASYNC240 (a small test file)

    async def delete(self, model: str, file_id: str) -> None:
        self.check("delete")
        if self.files.pop(file_id, None) is not None:
            self.deleted.append(file_id)

    # -- what the test does at the provider's side --------------------------------------------------

    def inputs(self, batch_id: str) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.files[self.batches[batch_id]["input"]].splitlines()]

    def running(self) -> list[str]:
        return [b["id"] for b in self.batches.values() if b["status"] in ("validating", "in_progress", "cancelling")]

    def finish(
        self, batch_id: str, answer: Callable[[dict[str, Any]], dict[str, Any] | None], *, status: str = "completed"
    ) -> None:
        """End the batch: ``answer(line)`` gives each input line's output line (None: not run — the
        error file says ``batch_expired`` or ``batch_cancelled`` as ``status`` says)."""
        batch = self.batches[batch_id]
        out, err = [], []
        why = "batch_expired" if status == "expired" else "batch_cancelled"
        for line in self.inputs(batch_id):
            result = answer(line)
            if result is None:
                err.append({"custom_id": line["custom_id"], "response": None, "error": {"code": why, "message": why}})
            elif 200 <= result["response"]["status_code"] < 300:
                out.append(result)
            else:
                err.append(result)
        for lines_, name in ((out, "output"), (err, "error")):
            if lines_:
                file_id = self._id("file-")
                self.files[file_id] = b"".join(json.dumps(x).encode() + b"\n" for x in lines_)
                batch[name] = file_id
        batch |= {"status": status, "completed": len(out), "failed": len(err)}

    def refuse(self, batch_id: str, code: str, message: str) -> None:
        """The batch fails validation (``token_limit_exceeded``: over the model's enqueued tokens)."""
        self.batches[batch_id] |= {"status": "failed", "errors": [(code, message)]}
