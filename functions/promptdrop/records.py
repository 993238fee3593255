"""What the journal keeps, as typed records: the job item, one item per request, and their states.

Plain data, no I/O: the DynamoDB codec is in :mod:`promptdrop.adapters.items`, the persistence in
:mod:`promptdrop.adapters.journal` (README, "Outputs" → DynamoDB, is the contract for the fields).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

__all__ = [
    "FINAL_JOB_STATES",
    "CachedAnswer",
    "FailureCode",
    "JobRecord",
    "JobStatus",
    "RequestRecord",
    "RequestStatus",
]


class JobStatus(StrEnum):
    """The job item's ``status``: RUNNING until the outputs are written, then a final one (FINAL_JOB_STATES)."""

    RUNNING = "RUNNING"
    SUCCEEDED = "SUCCEEDED"
    PARTIAL = "PARTIAL"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"  # stopped on request (`promptdrop cancel`); a redrive resumes it
    BUDGET_EXCEEDED = "BUDGET_EXCEEDED"  # the next request would not fit the file's budget; a redrive resumes it


FINAL_JOB_STATES = frozenset(
    {JobStatus.SUCCEEDED, JobStatus.PARTIAL, JobStatus.FAILED, JobStatus.CANCELLED, JobStatus.BUDGET_EXCEEDED}
)


class RequestStatus(StrEnum):
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"


class FailureCode(StrEnum):
    """The codes promptdrop gives failures itself (an API error keeps the API's own ``code``)."""

    INVALID_LINE = "invalid_line"  # a line that is not a request (README, "Input formats")
    NOT_FOUND = "not_found"  # the object is gone before its job began
    OBJECT_CHANGED = "object_changed"  # replaced or deleted while its job still had lines to read
    UNSUPPORTED_FORMAT = "unsupported_format"
    EMPTY = "empty"
    UNDECODABLE = "undecodable"
    INVALID_JSON = "invalid_json"
    INVALID_CSV = "invalid_csv"
    INVALID_TEMPLATE = "invalid_template"
    CANCELLED = "cancelled"  # the job was stopped on request
    TOO_MANY_CONTINUATIONS = "too_many_continuations"  # a unit past PROMPTDROP_MAX_CONTINUATIONS
    BUDGET_EXCEEDED = "budget_exceeded"  # the file's budget (dollars, tokens or requests) is spent
    UNKNOWN_PRICE = "unknown_price"  # a budget in dollars, and a model without a known price
    INVALID_BUDGET = "invalid_budget"  # a budget in the upload's metadata that is not a number
    INVALID_CACHE = "invalid_cache"  # a promptdrop-cache in the upload's metadata that is not a policy
    INTERNAL_ERROR = "internal_error"  # promptdrop itself failed on this file (a bug): redrive once fixed


@dataclass(slots=True)
class JobRecord:
    """The job item ``JOB#<job_id>`` / ``JOB``."""

    job_id: str
    bucket: str
    key: str
    etag: str
    version_id: str | None = None
    size: int = 0
    status: JobStatus = JobStatus.RUNNING
    started_at: str | None = None
    finished_at: str | None = None
    output_bucket: str | None = None
    outputs: dict[str, str] = field(default_factory=dict)
    units_total: int | None = None  # None until a large file's shards are planned
    units_done: int = 0
    changes: int = 0  # journal changes the outputs must come to hold (the finalizer's count)
    total: int = 0
    succeeded: int = 0
    failed: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    estimated_cost_usd: str | None = None
    error: dict[str, Any] | None = None  # the file failure that ended the job, if one did
    cancel_requested_at: str | None = None  # set by `promptdrop cancel`; cleared by a redrive
    published: str | None = None  # the outcome the last completion event announced
    cancel_reported: str | None = None  # when the cancelled job's dead letter was sent (once a job)
    # The cost guard: limits set on the job itself (`promptdrop budget`), above the upload's and the
    # environment's; and when its budget_exceeded dead letter was sent (once a job).
    budget_usd: float | None = None
    budget_tokens: int | None = None
    max_requests: int | None = None
    budget_reported: str | None = None
    # Live progress, added by every running unit (read back, never put whole: see the codec).
    progress_sent: int = 0
    progress_prompt_tokens: int = 0
    progress_completion_tokens: int = 0
    progress_cost_usd: float = 0.0

    @property
    def all_units_done(self) -> bool:
        return self.units_done >= (self.units_total or 1)

    @property
    def outcome(self) -> str:
        """What a completion event announces: a new event only when this changes."""
        return f"{self.status}:{self.succeeded}:{self.failed}"


@dataclass(slots=True, frozen=True)
class CachedAnswer:
    """An answer kept for reuse: the item ``CACHE#<key>`` / ``CACHE`` (the answer cache, jobs/answer_cache.py)."""

    key: str  # sha256 of the route, the endpoint and the canonical request body
    response: str  # the answer's body as JSON text, as the API gave it
    model: str | None = None
    finish_reason: str | None = None


@dataclass(slots=True)
class RequestRecord:
    """What the journal keeps of a finished request: the item ``JOB#<job_id>`` / ``REQ#<custom_id>``."""

    custom_id: str
    line: int
    status: RequestStatus
    attempts: int
    model: str | None = None
    latency_ms: int | None = None
    status_code: int | None = None
    request_id: str | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    finish_reason: str | None = None
    response: str | None = None  # the chat.completion (or the API's error body) as JSON text
    response_s3_key: str | None = None  # set instead of `response` when it is too large for an item
    error: dict[str, Any] | None = None
    repeat_of: int | None = None  # a line reusing an earlier line's custom_id: that earlier line
    cached_tokens: int = 0  # of the prompt tokens, those served from the prompt cache (billed lower)
    # A .csv row, for the .out.csv: JSON text {"cells": [[name, cell], ...], "fields": [schema property, ...]}
    columns: str | None = None
    columns_s3_key: str | None = None  # set instead of `columns` when they are too large for an item
    cached: bool = False  # answered from the answer cache: an earlier job's (or line's) answer, not paid again

    @property
    def succeeded(self) -> bool:
        return self.status is RequestStatus.SUCCEEDED
