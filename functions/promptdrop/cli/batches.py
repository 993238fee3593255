"""A batch-mode job as the CLI sees it: its batches at the provider's Batch API, as its units noted
them (``status``), and its units' live check messages, sent again undelayed (``cancel``)."""

from __future__ import annotations

from typing import Any

from .jobstore import Job, JobStore
from .resources import Clients

__all__ = ["check_now", "provider_batches"]


def provider_batches(store: JobStore, job: Job) -> list[dict[str, Any]]:
    """The job's batches at the provider, as its units last noted them (none: not a batch-mode job)."""
    from ..jobs.batch_state import UnitBatches  # imported here: the jobs package is slow to import

    found: list[dict[str, Any]] = []
    for item in store.unit_items(job):
        state = UnitBatches.from_json(item.get("batches", {}).get("S"))
        unit = item["sk"]["S"].removeprefix("UNIT#")
        found += [
            {"unit": unit, "batch_id": b.batch_id, "status": b.status, "model": b.model}
            | {"endpoint": b.endpoint, "requests": b.requests, "completed": b.completed, "failed": b.failed}
            | {"merged": b.merged}
            for b in state.batches
        ]
    return found


def check_now(store: JobStore, aws: Clients, job: Job, queue_url: str) -> int:
    """Send each waiting unit's live check message again, undelayed: the function acts on the job's
    state (a cancel) now, not at a check up to 15 minutes away. The units checked."""
    from ..jobs.batch_state import UnitBatches

    sent = 0
    for item in store.unit_items(job):
        state = UnitBatches.from_json(item.get("batches", {}).get("S"))
        if state.live and state.check_message:
            aws.sqs.send_message(QueueUrl=queue_url, MessageBody=state.check_message)
            sent += 1
    return sent
