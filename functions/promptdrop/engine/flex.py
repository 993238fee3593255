"""Flex processing: the same answers at about half the price, slower, and refused when capacity is short.

A request sent with ``service_tier: "flex"`` is answered like any other, priced at the flex rates
(the Batch API's), but the API may refuse it with a 429 that is *not* a rate limit: code
``resource_unavailable`` ("Resource Unavailable": flex capacity is short just now). Such a refusal
says nothing about the account's rate, so it neither pauses the other workers nor tells the fleet:
the one request backs off and tries again. A flex call may also take minutes; one that times out
counts as a refusal too. After ``attempts`` refusals — or at once when the run's deadline nears — the
request goes at the standard tier (the default), or fails with ``flex_unavailable`` when the
policy says so (``PROMPTDROP_FLEX_FALLBACK=fail``).

Which requests go flex is the jobs layer's decision (the models that offer it, the file's mode);
here a request marked :attr:`~promptdrop.engine.request.Request.flex` carries the tier at the end
of its body, so falling back is taking it off again — no JSON parsed on the way.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from enum import StrEnum

from ..records import FailureCode
from .errors import Disposition, ErrorInfo
from .rate_limiter import RateLimiter
from .request import Endpoint, Request

__all__ = [
    "FLEX_ENDPOINTS",
    "FLEX_UNAVAILABLE",
    "FlexFallback",
    "FlexPolicy",
    "FlexRefused",
    "as_flex",
    "as_standard",
    "refused",
    "takes_flex",
]

# The endpoints that take ``service_tier`` (embeddings, completions and moderations refuse it).
FLEX_ENDPOINTS = frozenset({Endpoint.CHAT, Endpoint.RESPONSES})
FLEX_UNAVAILABLE = FailureCode.FLEX_UNAVAILABLE  # the failure code when the policy is to fail, not to fall back
_CAPACITY_CODE = "resource_unavailable"
_TIER = b',"service_tier":"flex"}'


class FlexFallback(StrEnum):
    """What a request refused flex ``attempts`` times does."""

    STANDARD = "standard"  # sent at the standard tier (priced as such)
    FAIL = "fail"  # fails with ``flex_unavailable`` (in the errors file and the DLQ, redrivable)


@dataclass(slots=True, frozen=True)
class FlexPolicy:
    attempts: int = 3  # flex refusals (429 resource_unavailable, or a timeout) before the fallback
    fallback: FlexFallback = FlexFallback.STANDARD
    timeout_s: float | None = None  # a flex call's timeout (None: the client's, as a standard call's)
    extra_s: float = 0.0  # how much longer than a standard call a flex call may take (its timeout's excess)


def takes_flex(request: Request) -> bool:
    """Whether :func:`as_flex` would ask the flex tier for it: its endpoint takes a tier and its line
    names none of its own (the line's choice stands)."""
    body = request.body
    if request.flex or request.endpoint not in FLEX_ENDPOINTS or b'"service_tier"' in body or body[-1:] != b"}":
        return False
    return body.rstrip(b" }") != b"{"  # an empty object: nothing to put a comma after


def as_flex(request: Request) -> Request:
    """The request asking for the flex tier — unchanged when it does not take it (:func:`takes_flex`)."""
    if not takes_flex(request):
        return request
    return replace(request, body=request.body[:-1] + _TIER, flex=True)


def as_standard(request: Request) -> Request:
    """The flex request at the standard tier: the tier :func:`as_flex` added, taken off again."""
    if not request.flex:
        return request
    return replace(request, body=request.body[: -len(_TIER)] + b"}", flex=False)


def refused(info: ErrorInfo) -> bool:
    """A flex call the API could not serve now: a 429 ``resource_unavailable``, or a timeout."""
    return (info.status_code == 429 and info.code == _CAPACITY_CODE) or info.code == FailureCode.TIMEOUT


def unavailable(info: ErrorInfo, times: int) -> ErrorInfo:
    """The failure of a request refused flex ``times`` times under ``FlexFallback.FAIL``."""
    why = (
        f"flex capacity unavailable: refused {times} time(s) (PROMPTDROP_FLEX_ATTEMPTS), and the fallback is "
        f"to fail (PROMPTDROP_FLEX_FALLBACK=fail); redrive it later, or with the fallback 'standard'. "
        f"The last answer: {info.message}"
    )
    return info.restated(FLEX_UNAVAILABLE, why, Disposition.PERMANENT)


class FlexRefused(Exception):
    """Flex refused a call (capacity short, or a timeout): its request is tried again (``Dispatcher._call``)."""

    def __init__(self, info: ErrorInfo, limiter: RateLimiter, calls: int, latency_ms: int) -> None:
        super().__init__(info.code)
        self.info, self.limiter, self.calls, self.latency_ms = info, limiter, calls, latency_ms
