"""A line of a Batch API output or error file → the request's :class:`~.outcome.Outcome`, judged as a
real-time call's answer is: the same answer checks (:mod:`.answers`), the same error classes (:mod:`.errors`).

What a batch gives back is final or it is not: an answer the request can use, or an error a second
try would meet again (a 400), is recorded; a line the batch never ran (expired, cancelled), a
passing error (a 429 or a 5xx inside the batch) or an answer the request cannot use (cut off, not
its schema: real time asks again) may be sent again — the file's fallback decides (jobs/batch_mode.py).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from ..records import ErrorRecord, FailureCode
from .answers import AnswerCheck, answer_of
from .errors import Disposition, ErrorInfo, MalformedResponse, UnusableAnswer, classify, status_error
from .outcome import Outcome
from .request import Request

__all__ = ["BATCH_TIER", "LineResult", "line_result", "not_run"]

BATCH_TIER = "batch"  # the tier a Batch API answer is billed at (prices.py: half the standard rates)


@dataclass(slots=True, frozen=True)
class LineResult:
    outcome: Outcome  # the answer, or the error the line ended with
    final: bool  # False: the line may be sent again (outcome.error says why it was not answered)


def line_result(
    request: Request, line: Mapping[str, Any], answers: AnswerCheck, *, secrets: Iterable[str] = ()
) -> LineResult:
    """What the batch's ``line`` (``{"custom_id", "response": {"status_code", "request_id", "body"}, "error"}``)
    means for ``request``."""
    response = line.get("response")
    if not isinstance(response, dict) or not isinstance(response.get("status_code"), int):
        given = line.get("error")
        error: Mapping[str, Any] = given if isinstance(given, dict) else {}
        return not_run(request, str(error.get("code") or ""), str(error.get("message") or "the batch did not run it"))
    status, body = response["status_code"], response.get("body")
    request_id = response.get("request_id") if isinstance(response.get("request_id"), str) else None
    if not 200 <= status < 300:
        info = status_error(status, body, request_id, secrets=secrets)
        outcome = Outcome(request, 1, 0, status, request_id, error=info)
        return LineResult(outcome, final=info.disposition is not Disposition.TRANSIENT)
    try:
        data = answer_of(request.endpoint, body, status)
        answers.check(request, data)
    except (MalformedResponse, UnusableAnswer) as exc:
        info = classify(exc, secrets=secrets)
        return LineResult(Outcome(request, 1, 0, status, request_id, error=info), final=False)
    return LineResult(Outcome(request, 1, 0, status, request_id, response=data, tier=BATCH_TIER), final=True)


def not_run(request: Request, code: str, message: str) -> LineResult:
    """A line the batch never ran: ``batch_expired`` when its window closed, else ``batch_failed``."""
    failure = FailureCode.BATCH_EXPIRED if code == "batch_expired" else FailureCode.BATCH_FAILED
    info = ErrorInfo(ErrorRecord("batch_error", failure, message[:500]), Disposition.PERMANENT)
    return LineResult(Outcome(request, 0, 0, error=info), final=False)
