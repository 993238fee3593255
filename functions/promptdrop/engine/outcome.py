"""What a dispatch reports: each request's :class:`Outcome` (an answer's built by :func:`answer_outcome`),
and the run's :class:`DispatchReport`."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Protocol

from .client import Reply
from .errors import ErrorInfo
from .request import Request

__all__ = ["DispatchReport", "Outcome", "ShouldStop", "StopReason", "answer_outcome"]


@dataclass(slots=True)
class Outcome:
    """The final word on one request: its endpoint's parsed answer, or an error."""

    request: Request
    attempts: int  # calls counted against max_attempts or output_attempts (429s for rate are not)
    latency_ms: int
    status_code: int | None = None
    request_id: str | None = None
    response: dict[str, Any] | None = None
    error: ErrorInfo | None = None
    rate_limited: int = 0  # 429s for rate this request received on the way
    discarded_tokens: tuple[int, int] = (0, 0)  # input, output tokens of its unusable answers: paid, not kept
    flex_refused: int = 0  # times the flex tier refused it (capacity short, or a timeout)
    tier: str | None = None  # the tier it is billed at when its answer does not say so (the Batch API's)


class ShouldStop(Protocol):
    """Whether a run must stop now (its invocation's deadline nears, or it was cancelled) — or, given
    ``within_s``, whether it would have to before that many more seconds pass: a call that long would
    outlive the invocation."""

    def __call__(self, within_s: float = 0.0) -> bool: ...


class StopReason(StrEnum):
    """Why a run ended before its input did."""

    FATAL = "fatal"  # an error every request would share (bad key, no quota)
    DEADLINE = "deadline"  # ``should_stop()`` said so: the invocation's time is nearly up
    WAITING = "waiting"  # the unit's requests are at the provider's Batch API: a delayed check comes back


@dataclass(slots=True)
class DispatchReport:
    dispatched: int = 0
    retries: int = 0
    rate_limited: int = 0  # 429 rate-limit answers received
    rate_limited_by_model: dict[str, int] = field(default_factory=dict)  # the same, by the model asked for
    stopped: StopReason | None = None
    fatal: ErrorInfo | None = None
    not_started: int = 0  # requests taken from the input but never sent (fatal stop)
    last_line: int = 0  # the last input line handed to a worker
    resume: Request | None = None  # on a deadline stop: the first request not dispatched or handed back
    handed_back: int = 0  # requests given back unanswered at the deadline (the continuation sends them)
    latency_total_ms: int = 0  # of successful calls (running totals: memory stays flat)
    latency_max_ms: int = 0
    flex_refused: int = 0  # flex calls refused (429 resource_unavailable, or timed out)
    flex_fallbacks: int = 0  # flex requests sent at the standard tier after their refusals


def answer_outcome(
    request: Request,
    reply: Reply,
    data: dict[str, Any],
    problem: ErrorInfo | None,
    figures: tuple[int, int, int, tuple[int, int]],
    report: DispatchReport,
) -> Outcome:
    """The outcome of its last answer, usable or not (kept: paid for).
    ``figures``: (calls, latency ms, 429s, the tokens of its unusable answers, this one included if it is)."""
    calls, latency, limited, discarded = figures
    outcome = Outcome(request, calls, latency, reply.status_code, rate_limited=limited, discarded_tokens=discarded)
    if problem is not None:
        outcome.request_id, outcome.error = problem.request_id, problem
        return outcome
    outcome.response = data
    return _answered(outcome, reply, report)


def _answered(outcome: Outcome, reply: Reply, report: DispatchReport) -> Outcome:
    """A usable answer: the run's latency figures, and its request id."""
    report.latency_total_ms += outcome.latency_ms
    report.latency_max_ms = max(report.latency_max_ms, outcome.latency_ms)
    outcome.request_id = reply.headers.get("x-request-id")
    return outcome
