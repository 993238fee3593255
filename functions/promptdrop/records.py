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
    "MAX_ERROR_CODE_CHARS",
    "MAX_ERROR_MESSAGE_CHARS",
    "MAX_ERROR_TYPE_CHARS",
    "PROGRESS_IDLE_S",
    "PROGRESS_WINDOW_S",
    "CachedAnswer",
    "ErrorRecord",
    "FailureCode",
    "JobRecord",
    "JobStatus",
    "RequestRecord",
    "RequestStatus",
]

# The job item's recent rate is measured over about this much running time (the operator's ETA).
PROGRESS_WINDOW_S = 30.0
_SAMPLE_EVERY_S = 10.0  # a window of 4 or 5 samples (about 100 bytes on the item), however many units run
# Units report every 2 s while they run: a longer silence was not running time (or not yet known to be).
PROGRESS_IDLE_S = 15.0


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
    """Every code promptdrop gives a failure itself (an API error keeps the API's own ``code``, or
    ``http_<status>`` when it gives none). README, "Error codes", lists them; a unit test fails if a
    code is raised anywhere in the package that is not a member."""

    # A line that fails alone, before it is sent (README, "Input formats").
    INVALID_LINE = "invalid_line"  # a line that is not a request
    INVALID_SCHEMA = "invalid_schema"  # a structured-output schema that cannot be checked safely
    # A file that fails whole, before anything is sent.
    NOT_FOUND = "not_found"  # the object is gone before its job began
    OBJECT_CHANGED = "object_changed"  # replaced or deleted while its job still had lines to read
    UNSUPPORTED_FORMAT = "unsupported_format"
    EMPTY = "empty"
    UNDECODABLE = "undecodable"
    INVALID_JSON = "invalid_json"
    INVALID_CSV = "invalid_csv"
    INVALID_TEMPLATE = "invalid_template"
    INVALID_ENDPOINT = "invalid_endpoint"  # the upload's promptdrop-endpoint names none promptdrop sends
    TOO_LARGE = "too_large"  # a document over its size limit
    TOO_DEEP = "too_deep"  # a .json document nested past the limit
    INVALID_BUDGET = "invalid_budget"  # a budget in the upload's metadata that is not a number
    UNKNOWN_PRICE = "unknown_price"  # a budget in dollars, and a model without a known price
    # A job stopped before its end.
    CANCELLED = "cancelled"  # the job was stopped on request
    TOO_MANY_CONTINUATIONS = "too_many_continuations"  # a unit past PROMPTDROP_MAX_CONTINUATIONS
    BUDGET_EXCEEDED = "budget_exceeded"  # the file's budget (dollars, tokens or requests) is spent
    INTERNAL_ERROR = "internal_error"  # an exception of promptdrop's own ended the run (a bug: redrive once fixed)
    # A call that failed without an API error code of its own (the engine's).
    TIMEOUT = "timeout"
    CONNECTION_ERROR = "connection_error"
    MALFORMED_RESPONSE = "malformed_response"  # a 2xx body that is not the endpoint's answer
    REQUEST_TOO_LARGE = "request_too_large"  # larger than the whole tokens/min limit
    RATE_LIMITED_UNTIL_DEADLINE = "rate_limited_until_deadline"  # a redrive still rate limited after its patience
    # Routes (routes.py): a model no route serves; a route whose credentials could not be had.
    NO_ROUTE = "no_route"
    CREDENTIALS_UNAVAILABLE = "credentials_unavailable"
    # An answer the request cannot use, after its output attempts.
    INVALID_OUTPUT = "invalid_output"  # structured output not JSON, or not its schema
    TRUNCATED = "truncated"
    REFUSED = "refused"
    CONTENT_FILTERED = "content_filtered"
    # Flex processing (engine/flex.py, jobs/modes.py).
    INVALID_MODE = "invalid_mode"  # a promptdrop-mode in the upload's metadata that is not a mode
    FLEX_UNAVAILABLE = "flex_unavailable"  # flex refused a request PROMPTDROP_FLEX_ATTEMPTS times, fallback 'fail'
    INVALID_CACHE = "invalid_cache"  # a promptdrop-cache in the upload's metadata that is not a policy
    INVALID_FALLBACK = "invalid_fallback"  # a promptdrop-fallback in the upload's metadata that is not one
    INVALID_DEADLINE = "invalid_deadline"  # a promptdrop-deadline that is neither a duration nor an ISO time
    BATCH_EXPIRED = "batch_expired"  # the provider's batch window closed before the line ran (fallback 'fail')
    BATCH_FAILED = "batch_failed"  # the provider's batch failed or was cancelled by it (fallback 'fail')


# Every field of an error is bounded before it is stored or sent: an API's error body is the API's
# to fill (a 250 KB ``code`` would make a request item over DynamoDB's 400 KB and a dead letter over
# SQS's 256 KiB). Codes and types are identifiers: 100 characters is far past any real one; a
# message keeps 2,000 characters, enough for any reason written for people (README, "Limits").
MAX_ERROR_CODE_CHARS = 100
MAX_ERROR_TYPE_CHARS = 100
MAX_ERROR_MESSAGE_CHARS = 2_000


def _bounded(text: object, limit: int) -> str:
    value = str(text)  # a plain str: an enum member (FailureCode) is stored as its value
    return value if len(value) <= limit else value[: limit - 1] + "…"


@dataclass(slots=True, frozen=True)
class ErrorRecord:
    """Why a request or a file failed: the ``error`` of a request item, the job item, a dead letter
    and the errors file — built here only, every field bounded whatever it was given."""

    type: str
    code: str
    message: str
    status_code: int | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "type", _bounded(self.type, MAX_ERROR_TYPE_CHARS))
        object.__setattr__(self, "code", _bounded(self.code, MAX_ERROR_CODE_CHARS))
        object.__setattr__(self, "message", _bounded(self.message, MAX_ERROR_MESSAGE_CHARS))
        status = self.status_code
        if status is not None and (isinstance(status, bool) or not isinstance(status, int) or not 0 < status < 1000):
            object.__setattr__(self, "status_code", None)  # not an HTTP status: not one to keep

    def as_dict(self) -> dict[str, Any]:
        """The stored and sent form (README, "Dead-letter queue": ``error``)."""
        return {"type": self.type, "code": self.code, "status_code": self.status_code, "message": self.message}

    @classmethod
    def from_dict(cls, data: object) -> ErrorRecord:
        """An error as stored or sent (by this or an older version), bounded again."""
        error = data if isinstance(data, dict) else {}
        status = error.get("status_code")
        return cls(
            str(error.get("type") or ""),
            str(error.get("code") or ""),
            str(error.get("message") or ""),
            status if isinstance(status, int) else None,
        )


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
    # Lines that hold a request — the outcomes the job will have: a .jsonl's non-blank lines, a
    # .csv's rows, a .json's items, a .txt's one prompt. None until counted (README, DynamoDB).
    line_count: int | None = None
    # Live progress, added by every running unit (read back, never put whole: see the codec).
    updated_at: str | None = None  # the last report's time
    progress_sent: int = 0  # requests sent to the API whose outcome came back (not those queued)
    progress_succeeded: int = 0
    progress_failed: int = 0
    progress_prompt_tokens: int = 0
    progress_completion_tokens: int = 0
    progress_cost_usd: float | None = None  # None: no price known for any model answered so far
    # The recent pace: [[epoch seconds, done], ...], oldest first, spanning about the last
    # PROGRESS_WINDOW_S of running time (see JobRecord.window_after); SET with each report.
    progress_window: list[list[float]] = field(default_factory=list)

    @property
    def all_units_done(self) -> bool:
        return self.units_done >= (self.units_total or 1)

    @property
    def progress_done(self) -> int:
        """Requests with an outcome, as the live progress counts them (every run, every shard)."""
        return self.progress_succeeded + self.progress_failed

    @property
    def recent_rate(self) -> float | None:
        """Requests finished a second over the progress window (None until two reports span time)."""
        window = self.progress_window
        if len(window) < 2 or window[-1][0] <= window[0][0]:
            return None
        return max(0.0, (window[-1][1] - window[0][1]) / (window[-1][0] - window[0][0]))

    @staticmethod
    def window_after(window: list[list[float]], at: float, done: int, *, start: tuple[float, int]) -> list[list[float]]:
        """The progress window with a report's sample ``(at, done)`` in it.

        Samples stay at least :data:`_SAMPLE_EVERY_S` apart (the newest always fresh) and the oldest
        just past :data:`PROGRESS_WINDOW_S`. A window that is empty, or whose last sample is older
        than :data:`PROGRESS_IDLE_S` (the job was not running: a cancel resumed, a redrive), starts again at
        ``start``, the reporting run's previous report — so a rate shows from its second report on.
        """
        if not window or at - window[-1][0] > PROGRESS_IDLE_S:
            window = [[round(start[0], 3), start[1]]]
        if len(window) >= 2 and window[-1][0] - window[-2][0] < _SAMPLE_EVERY_S:
            window = window[:-1]
        window = [*window, [round(at, 3), done]]
        while len(window) > 2 and at - window[1][0] >= PROGRESS_WINDOW_S:
            window = window[1:]
        return window

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
    service_tier: str | None = None  # the tier the answer says it was served at ("flex" is priced apart)
    cached: bool = False  # answered from the answer cache: an earlier job's (or line's) answer, not paid again
    cache_write_tokens: int = 0  # of the prompt tokens, those written to the prompt cache (some models bill more)

    @property
    def succeeded(self) -> bool:
        return self.status is RequestStatus.SUCCEEDED
