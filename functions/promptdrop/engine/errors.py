"""Every way a call can fail, mapped to what the engine does about it — in one place.

Routing is on exception types and status codes, never on message text (the one exception:
OpenAI's ``insufficient_quota`` shares status 429 with rate limiting and is told apart by its
documented ``code`` field).
"""

from __future__ import annotations

import email.utils
import math
import re
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import Enum
from typing import Any

import openai

from ..records import MAX_ERROR_MESSAGE_CHARS, ErrorRecord, FailureCode
from .provider_errors import Verdict, provider_error

__all__ = [
    "MAX_RETRY_AFTER_S",
    "RATE_LIMITED_UNTIL_DEADLINE",
    "Disposition",
    "ErrorInfo",
    "classify",
    "parse_reset",
    "rate_limit_wait_s",
    "rate_limited_too_long",
    "redact",
    "retry_after_s",
    "status_error",
]

_TRANSIENT_STATUS = frozenset({408, 409, 429})
_FATAL_CODES = frozenset({"insufficient_quota", "invalid_api_key", "account_deactivated", "billing_hard_limit_reached"})
# The longest server-requested wait honoured, as the SDK does (it refuses retry-after over two
# minutes): a hostile or broken header must not park a run until its deadline.
MAX_RETRY_AFTER_S = 120.0
_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h)")
_UNIT_S = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


class Disposition(Enum):
    TRANSIENT = "transient"  # retry with backoff
    PERMANENT = "permanent"  # this request fails now
    FATAL = "fatal"  # every request would fail the same way: stop the job


@dataclass(slots=True, frozen=True)
class ErrorInfo:
    """Why a call failed (``error``: what is stored and sent of it) and what the engine does about it."""

    error: ErrorRecord
    disposition: Disposition
    retry_after: float | None = None  # seconds the server asked us to wait (a 429: or its x-ratelimit-reset-*)
    rate_limited: bool = False  # a 429 for rate (not quota): a signal to slow down, not a failure
    body: dict[str, Any] | None = None  # the API's error body, when it answered
    request_id: str | None = None

    @property
    def type(self) -> str:
        return self.error.type

    @property
    def code(self) -> str:
        return self.error.code

    @property
    def message(self) -> str:
        return self.error.message

    @property
    def status_code(self) -> int | None:
        return self.error.status_code

    def restated(self, code: str, message: str, disposition: Disposition) -> ErrorInfo:
        """The same API answer (type, status, body, request id) given up on for another reason."""
        return ErrorInfo(
            ErrorRecord(self.type, code, message, self.status_code),
            disposition,
            body=self.body,
            request_id=self.request_id,
        )


# An API key (OpenAI's ``sk-…`` forms, or any bearer token) that an error message echoes back: it
# must not reach the errors file, the journal, a dead letter or a log (README, "Limits"…"Secrets").
# A Bedrock token (``bedrock-api-key-`` and a base64 presigned URL) likewise.
_SECRET = re.compile(r"(?i)\b(sk-|bearer\s+|bedrock-api-key-)[A-Za-z0-9_\-*.+/=]{6,}")
# A configured secret shorter than this is not masked by value: it would mask ordinary words.
_MIN_SECRET_CHARS = 8


def _own_values(secrets: Iterable[str]) -> re.Pattern[str] | None:
    """The secrets' own values, whatever their shape, and the API's partial echo of one (its first
    characters, a run of ``*``, its last ones: ``abcdefgh*****wxyz``)."""
    forms = [
        f"{re.escape(s)}|{re.escape(s[:4])}[^\\s*]{{0,12}}\\*{{3,}}[^\\s*.,;:'\"]{{0,12}}"
        for s in secrets
        if len(s) >= _MIN_SECRET_CHARS
    ]
    return re.compile("|".join(forms)) if forms else None


def redact(value: Any, secrets: Iterable[str] = ()) -> Any:
    """``value`` (a string, or a JSON value holding strings) with every API key masked: the shapes
    keys have, and the values of ``secrets`` (the keys this process holds, passed in by who knows them)."""
    return _redact(value, _own_values(secrets))


def _redact(value: Any, own: re.Pattern[str] | None) -> Any:
    if isinstance(value, str):
        masked = own.sub("[redacted]", value) if own is not None else value
        return _SECRET.sub(lambda m: m.group(1) + "[redacted]", masked)
    if isinstance(value, dict):
        return {k: _redact(v, own) for k, v in value.items()}
    if isinstance(value, list):
        return [_redact(v, own) for v in value]
    return value


def retry_after_s(headers: Mapping[str, str] | None, *, now: float | None = None) -> float | None:
    """Seconds to wait from ``retry-after-ms`` / ``retry-after`` (seconds or an HTTP date), at most
    :data:`MAX_RETRY_AFTER_S`; None when absent or not a finite number."""
    seconds = _retry_after_header_s(headers, now)
    if seconds is None or not math.isfinite(seconds):
        return None
    return min(max(0.0, seconds), MAX_RETRY_AFTER_S)


def parse_reset(value: str | None) -> float | None:
    """OpenAI's reset durations ("1s", "6m0s", "120ms") in seconds."""
    if not value:
        return None
    parts = _DURATION.findall(value)
    return sum(float(n) * _UNIT_S[u] for n, u in parts) if parts else None


def rate_limit_wait_s(headers: Mapping[str, str] | None, *, now: float | None = None) -> float | None:
    """How long a rate-limit 429 asks everyone to wait: ``retry-after(-ms)`` when given, else the
    ``x-ratelimit-reset-*`` of each exhausted limit (remaining 0), the shortest; at most
    :data:`MAX_RETRY_AFTER_S`. None when the answer says neither."""
    given = retry_after_s(headers, now=now)
    if given is not None or not headers:
        return given
    resets = [
        parse_reset(headers.get(f"x-ratelimit-reset-{kind}"))
        for kind in ("requests", "tokens")
        if headers.get(f"x-ratelimit-remaining-{kind}") == "0"
    ]
    known = [r for r in resets if r is not None and math.isfinite(r)]
    return min(*known, MAX_RETRY_AFTER_S) if known else None


def _retry_after_header_s(headers: Mapping[str, str] | None, now: float | None) -> float | None:
    if not headers:
        return None
    if (ms := headers.get("retry-after-ms")) is not None:
        try:
            return float(ms) / 1000
        except ValueError:
            pass
    value = headers.get("retry-after")
    if value is None:
        return None
    try:
        return float(value)
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value).timestamp()
    except (TypeError, ValueError):
        return None
    return when - (time.time() if now is None else now)


def _api_error_fields(body: object) -> tuple[str | None, str | None, str | None]:
    error = body.get("error", body) if isinstance(body, dict) else None
    if not isinstance(error, dict):
        return None, None, None
    code, kind, message = error.get("code"), error.get("type"), error.get("message")
    return (
        code if isinstance(code, str) else None,
        kind if isinstance(kind, str) else None,
        message if isinstance(message, str) else None,
    )


def _status_disposition(status: int, code: str | None) -> Disposition:
    if code in _FATAL_CODES or status == 401:
        return Disposition.FATAL
    if status in _TRANSIENT_STATUS or status >= 500:
        return Disposition.TRANSIENT
    return Disposition.PERMANENT


def classify(exc: BaseException, *, secrets: Iterable[str] = ()) -> ErrorInfo:
    """Map an exception raised by a call (the SDK's, or our own response checks) to an ErrorInfo;
    every text the API sent back masked of ``secrets`` and of anything shaped like a key."""
    own = _own_values(secrets)
    if isinstance(exc, openai.APIStatusError):
        headers = exc.response.headers
        said = (type(exc).__name__, str(exc))
        request_id = headers.get("x-request-id") or headers.get("x-amzn-requestid")
        return _status_error(exc.status_code, exc.body, headers, request_id, own, said)
    if isinstance(exc, SendRefused):
        return ErrorInfo(ErrorRecord(exc.code, exc.code, _redact(str(exc), own)), exc.disposition)
    if isinstance(exc, openai.APITimeoutError):
        timeout = FailureCode.TIMEOUT
        return ErrorInfo(ErrorRecord(timeout, timeout, "the API call timed out"), Disposition.TRANSIENT)
    if isinstance(exc, openai.APIConnectionError):
        cause, failed = exc.__cause__ or exc, FailureCode.CONNECTION_ERROR
        why = _redact(f"{type(cause).__name__}: {cause}"[:MAX_ERROR_MESSAGE_CHARS], own)
        return ErrorInfo(ErrorRecord(failed, failed, why), Disposition.TRANSIENT)
    if isinstance(exc, MalformedResponse):
        malformed = FailureCode.MALFORMED_RESPONSE
        why = _redact(str(exc)[:MAX_ERROR_MESSAGE_CHARS], own)
        return ErrorInfo(ErrorRecord(malformed, malformed, why, exc.status_code), Disposition.TRANSIENT)
    if isinstance(exc, UnusableAnswer):
        # Permanent once the dispatcher has spent its output attempts on it; the answer is kept
        # (the error line's response body): it was paid for.
        why = _redact(str(exc)[:MAX_ERROR_MESSAGE_CHARS], own)
        error = ErrorRecord(FailureCode.INVALID_OUTPUT, exc.code, why, exc.status_code)
        return ErrorInfo(error, Disposition.PERMANENT, body=exc.body)
    if isinstance(exc, RequestTooLarge):
        too_large = FailureCode.REQUEST_TOO_LARGE
        return ErrorInfo(ErrorRecord(too_large, too_large, str(exc)), Disposition.PERMANENT)
    raise exc  # a bug of ours: let it surface rather than dress it up as an API failure


_VERDICTS = {
    Verdict.RATE_LIMITED: Disposition.TRANSIENT,
    Verdict.TRANSIENT: Disposition.TRANSIENT,
    Verdict.PERMANENT: Disposition.PERMANENT,
    Verdict.FATAL: Disposition.FATAL,
}


class SendRefused(Exception):
    """A request that could not be sent for want of a route or of credentials (nothing reached an API)."""

    code: str = ""
    disposition = Disposition.PERMANENT


class NoRoute(SendRefused):
    """No route of ``PROMPTDROP_ROUTES`` serves the request's model: this request fails alone."""

    code = FailureCode.NO_ROUTE


class CredentialsUnavailable(SendRefused):
    """A route's credentials could not be had (no role credentials to mint a token with): every
    request of the route would fail the same way."""

    code = FailureCode.CREDENTIALS_UNAVAILABLE
    disposition = Disposition.FATAL


def status_error(status: int, body: object, request_id: str | None = None, *, secrets: Iterable[str] = ()) -> ErrorInfo:
    """An error answer the API gave elsewhere than to a call of ours — a Batch API error file's line
    (``status_code`` and ``body``) — classified as :func:`classify` classifies a call's."""
    return _status_error(status, body, None, request_id, _own_values(secrets), ("APIStatusError", f"HTTP {status}"))


def _status_error(
    status: int,
    body: object,
    headers: Mapping[str, str] | None,
    request_id: str | None,
    own: re.Pattern[str] | None,
    said: tuple[str, str],  # the error's type and message when the body names none
) -> ErrorInfo:
    # The SDK keeps only the inner "error" object; the Batch API output carries the whole body.
    raw_body = ({"error": body} if "error" not in body else body) if isinstance(body, dict) else None
    code, kind, message = _api_error_fields(body)
    disposition = _status_disposition(status, code)
    rate_limited = status == 429 and disposition is Disposition.TRANSIENT
    if (theirs := provider_error(status, code, kind, body, headers)) is not None:
        kind = kind or theirs.name  # the provider's own name for it stays the type
        code, message = theirs.code, (message or said[1]) + theirs.hint
        disposition, rate_limited = _VERDICTS[theirs.verdict], theirs.verdict is Verdict.RATE_LIMITED
    error = ErrorRecord(
        _redact(kind or said[0], own),
        _redact(code or f"http_{status}", own),
        _redact((message or said[1])[:MAX_ERROR_MESSAGE_CHARS], own),
        status,
    )
    return ErrorInfo(
        error,
        disposition,
        retry_after=rate_limit_wait_s(headers) if rate_limited else retry_after_s(headers),
        rate_limited=rate_limited,
        body=_redact(raw_body, own),
        request_id=request_id,
    )


class MalformedResponse(Exception):
    """The API answered 2xx with a body that is not the endpoint's answer."""

    def __init__(self, message: str, status_code: int) -> None:
        super().__init__(message)
        self.status_code = status_code


class RequestTooLarge(Exception):
    """A request that no rate-limit window can ever admit."""


class UnusableAnswer(Exception):
    """An answer the request cannot use: ``code`` is ``invalid_output`` (not JSON, or not the schema),
    ``truncated``, ``refused`` or ``content_filtered``. Asked again up to the output attempts."""

    def __init__(self, code: str, message: str, body: dict[str, Any], status_code: int = 200) -> None:
        super().__init__(message)
        self.code = code
        self.body = body
        self.status_code = status_code


__all__ += [
    "CredentialsUnavailable",
    "MalformedResponse",
    "NoRoute",
    "RequestTooLarge",
    "SendRefused",
    "UnusableAnswer",
]


RATE_LIMITED_UNTIL_DEADLINE = FailureCode.RATE_LIMITED_UNTIL_DEADLINE


def rate_limited_too_long(info: ErrorInfo, times: int, patience_s: float) -> ErrorInfo:
    """The failure of a request a run with no deadline (a redrive) stopped waiting for: still 429."""
    why = (
        f"answered 429 (rate limit) {times} times over {patience_s:.0f} s, in a run with no deadline to hand "
        f"it back to (a redrive); the last answer: {info.message}"
    )
    return info.restated(RATE_LIMITED_UNTIL_DEADLINE, why, Disposition.TRANSIENT)
