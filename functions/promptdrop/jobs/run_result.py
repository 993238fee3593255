"""What one run of a job reports back to the handler: the file, the run's status, its figures."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from ..engine.dispatch import DispatchReport
from .tally import RunTally

__all__ = ["FileRef", "JobResult", "RunStatus", "now_iso"]


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


@dataclass(slots=True, frozen=True)
class FileRef:
    bucket: str
    key: str


class RunStatus(StrEnum):
    """How a run ended. The first three are the job's final states (it wrote the outputs)."""

    SUCCEEDED = "SUCCEEDED"
    PARTIAL = "PARTIAL"
    FAILED = "FAILED"
    SKIPPED = "SKIPPED"  # nothing to do (finished already, or refused)
    SHARDED = "SHARDED"  # the file was split: its shards are queued
    CONTINUED = "CONTINUED"  # the deadline came: a continuation is queued
    SHARD_DONE = "SHARD_DONE"  # this unit is done; other shards still run
    HANDED_OFF = "HANDED_OFF"  # another run is writing the outputs and will include this one
    BUSY = "BUSY"  # another live run holds the unit: deliver the message again later
    UNFINISHED = "UNFINISHED"  # the deadline came with no work queue: deliver the message again
    CANCELLED = "CANCELLED"  # stopped on request: outputs hold what was done; a redrive resumes
    BUDGET_EXCEEDED = "BUDGET_EXCEEDED"  # the file's budget is spent: outputs hold what was done; a redrive resumes
    WAITING = "WAITING"  # its requests are at the provider's Batch API: a delayed check message comes back

    @property
    def hand_back(self) -> bool:
        """The message must come back (its redelivery resumes from the journal)."""
        return self in (RunStatus.BUSY, RunStatus.UNFINISHED)


@dataclass(slots=True)
class JobResult:
    job_id: str | None
    bucket: str
    key: str
    status: RunStatus
    reason: str | None = None
    total: int = 0
    succeeded: int = 0
    failed: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    dispatched: int = 0
    retries: int = 0
    rate_limited: int = 0
    latency_avg_ms: float | None = None
    outputs: dict[str, str] = field(default_factory=dict)
    # What this run did (the metrics): the job's totals above may include earlier runs' work.
    run_succeeded: int = 0
    run_failed: int = 0
    run_prompt_tokens: int = 0
    run_completion_tokens: int = 0
    key_rejected: bool = False  # the API answered 401: the container should read its key again
    # The metrics' per-model and per-code figures: this run's outcomes (the recorder's), its 429s (the engine's).
    tally: RunTally = field(default_factory=RunTally)
    rate_limited_by_model: dict[str, int] = field(default_factory=dict)
    started: bool = False  # this run created the job item (a new upload)
    job_started_at: str | None = None  # when the job started (its item's started_at), if this run read it

    @classmethod
    def of_run(
        cls, job_id: str, ref: FileRef, status: RunStatus, report: DispatchReport | None, reason: str | None = None
    ) -> JobResult:
        """A result carrying what the engine did in this run (``report``), if it ran."""
        if report is None:
            return cls(job_id, ref.bucket, ref.key, status, reason=reason)
        calls = report.dispatched
        return cls(
            job_id,
            ref.bucket,
            ref.key,
            status,
            reason=reason,
            dispatched=report.dispatched,
            retries=report.retries,
            rate_limited=report.rate_limited,
            rate_limited_by_model=report.rate_limited_by_model,
            latency_avg_ms=(report.latency_total_ms / calls) if calls else None,
        )


def run_figures(report: DispatchReport | None) -> dict[str, Any] | None:
    """The summary's ``last_run``: what the engine did in the run that wrote the outputs."""
    if report is None:
        return None
    calls = report.dispatched
    return {
        "dispatched": report.dispatched,
        "retries": report.retries,
        "rate_limited_429s": report.rate_limited,
        "latency_avg_ms": round(report.latency_total_ms / calls, 1) if calls else None,
        "latency_max_ms": report.latency_max_ms,
        "stopped": report.stopped,
    }
