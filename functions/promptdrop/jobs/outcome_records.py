"""An outcome → the request item the journal keeps of it: its answer, tokens, tier, or its error."""

from __future__ import annotations

from typing import Any

from ..engine.answers import finish_reason, prompt_cache_of, usage_of
from ..engine.dispatch import Outcome
from ..engine.errors import ErrorInfo
from ..engine.request import Request
from ..jsonsafe import dumps
from ..records import RequestRecord, RequestStatus

__all__ = ["failure_record", "success_record"]

_TIER_MAX_CHARS = 32  # an answer's service_tier is a short word ("default", "flex"); anything else is not kept


def success_record(request: Request, outcome: Outcome) -> RequestRecord:
    body = outcome.response or {}
    input_tokens, output_tokens = usage_of(body)  # each endpoint's usage shape
    input_tokens += outcome.discarded_tokens[0]  # and the unusable answers asked again: paid for too
    output_tokens += outcome.discarded_tokens[1]
    cached, written = prompt_cache_of(body)  # prompt-cache reads (billed lower) and writes (billed higher)
    return RequestRecord(
        custom_id=request.custom_id,
        line=request.line,
        status=RequestStatus.SUCCEEDED,
        attempts=outcome.attempts,
        model=body.get("model"),
        latency_ms=outcome.latency_ms,
        status_code=outcome.status_code,
        request_id=outcome.request_id,
        prompt_tokens=input_tokens,
        completion_tokens=output_tokens,
        cached_tokens=cached,
        cache_write_tokens=written,
        finish_reason=finish_reason(body),
        response=dumps(body),
        service_tier=outcome.tier or _served_tier(body),
    )


def _served_tier(body: dict[str, Any]) -> str | None:
    """The ``service_tier`` the answer says it was served at (what it is priced at), if it names one."""
    tier = body.get("service_tier")
    return tier if isinstance(tier, str) and len(tier) <= _TIER_MAX_CHARS else None


def failure_record(request: Request, outcome: Outcome, error: ErrorInfo) -> RequestRecord:
    paid_in, paid_out = outcome.discarded_tokens  # unusable answers (structured output…): paid for
    answered = error.body.get("model") if isinstance(error.body, dict) else None
    return RequestRecord(
        custom_id=request.custom_id,
        line=request.line,
        status=RequestStatus.FAILED,
        attempts=outcome.attempts,
        model=(answered if isinstance(answered, str) else request.model_name()) if paid_in or paid_out else None,
        prompt_tokens=paid_in,
        completion_tokens=paid_out,
        latency_ms=outcome.latency_ms,
        status_code=error.status_code,
        request_id=error.request_id,
        response=dumps(error.body) if error.body is not None else None,
        error=error.error.as_dict(),
    )
