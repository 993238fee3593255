"""The errors other providers answer in their own words, read as OpenAI's are: transient, permanent
with a code, or fatal.

Told apart by what the provider documents as the error's name, never by its message: Amazon
Bedrock names its exception in the ``x-amzn-ErrorType`` header (``ThrottlingException:http://…``)
and in the body (``__type``, or the OpenAI-shaped error's ``type``/``code``); Azure OpenAI's
content filter answers 400 with the code ``content_filter``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from enum import Enum

__all__ = ["ACCESS_DENIED", "ProviderError", "Verdict", "provider_error"]

ACCESS_DENIED = "model_access_denied"
CONTENT_FILTERED = "content_filtered"  # records.FailureCode.CONTENT_FILTERED: one code for one fact


class Verdict(Enum):
    RATE_LIMITED = "rate_limited"  # a signal to slow down, as OpenAI's 429
    TRANSIENT = "transient"
    PERMANENT = "permanent"
    FATAL = "fatal"


@dataclass(slots=True, frozen=True)
class ProviderError:
    code: str
    verdict: Verdict
    hint: str = ""  # what to do, added to the message
    name: str = ""  # the provider's own name for it (Bedrock's exception): the error's type


_ACCESS_HINT = (
    " — grant the account access to the model (Bedrock console, model access) and let the function's role "
    "invoke it (the template's BedrockModels parameter)"
)
# Amazon Bedrock's exceptions (bedrock-runtime API reference, "Errors").
_BEDROCK: dict[str, ProviderError] = {
    "ThrottlingException": ProviderError("throttled", Verdict.RATE_LIMITED),
    "ServiceQuotaExceededException": ProviderError("service_quota_exceeded", Verdict.RATE_LIMITED),
    "ModelNotReadyException": ProviderError("model_not_ready", Verdict.TRANSIENT),
    "ModelTimeoutException": ProviderError("model_timeout", Verdict.TRANSIENT),
    "ServiceUnavailableException": ProviderError("service_unavailable", Verdict.TRANSIENT),
    "InternalServerException": ProviderError("internal_server_error", Verdict.TRANSIENT),
    "ModelErrorException": ProviderError("model_error", Verdict.TRANSIENT),
    "AccessDeniedException": ProviderError(ACCESS_DENIED, Verdict.PERMANENT, _ACCESS_HINT),
    "ResourceNotFoundException": ProviderError("model_not_found", Verdict.PERMANENT),
    "ValidationException": ProviderError("invalid_request", Verdict.PERMANENT),
    # The token or the role's credentials are not accepted: every request would fail the same way.
    "UnrecognizedClientException": ProviderError("invalid_credentials", Verdict.FATAL),
    "ExpiredTokenException": ProviderError("expired_token", Verdict.FATAL),
}
_AZURE_CONTENT_FILTER = "content_filter"


def provider_error(
    status: int, code: str | None, kind: str | None, body: object, headers: Mapping[str, str] | None
) -> ProviderError | None:
    """What a non-OpenAI answer means (None: read it as OpenAI's)."""
    name = _bedrock_name(body, headers)
    for candidate in (name, kind, code):
        if candidate is not None and candidate in _BEDROCK:
            return replace(_BEDROCK[candidate], name=candidate)
    if code == _AZURE_CONTENT_FILTER and status == 400:
        # The prompt itself was filtered: asking again gets the same answer.
        return ProviderError(CONTENT_FILTERED, Verdict.PERMANENT, name=code)
    return None


def _bedrock_name(body: object, headers: Mapping[str, str] | None) -> str | None:
    header = headers.get("x-amzn-errortype") if headers is not None else None
    if header:
        return header.split(":", 1)[0]
    if isinstance(body, dict):
        name = body.get("__type")
        if isinstance(name, str):
            return name.rsplit("#", 1)[-1]
    return None
