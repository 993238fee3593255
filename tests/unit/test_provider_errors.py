"""Bedrock's and Azure's own errors, read by their documented names as OpenAI's are read by status and code."""

from __future__ import annotations

import base64

import httpx2
import openai
import pytest
from promptdrop.engine.errors import Disposition, classify, redact

from tests.unit.test_errors_and_retries import URL, _client


def answered(status: int, body: object, headers: dict[str, str] | None = None) -> Exception:
    response = httpx2.Response(status, headers=headers or {}, json=body, request=httpx2.Request("POST", URL))
    return _client()._make_status_error_from_response(response)


def bedrock(status: int, name: str, message: str = "refused") -> Exception:
    # bedrock-runtime names its exception in x-amzn-ErrorType and answers {"message": …}
    headers = {"x-amzn-ErrorType": f"{name}:http://internal.amazon.com/coral/com.amazon.bedrock/"}
    return answered(status, {"message": message}, headers | {"x-amzn-RequestId": "b-1"})


@pytest.mark.parametrize(
    ("status", "name", "code", "disposition", "rate_limited"),
    [
        (429, "ThrottlingException", "throttled", Disposition.TRANSIENT, True),
        (429, "ServiceQuotaExceededException", "service_quota_exceeded", Disposition.TRANSIENT, True),
        (429, "ModelNotReadyException", "model_not_ready", Disposition.TRANSIENT, False),
        (408, "ModelTimeoutException", "model_timeout", Disposition.TRANSIENT, False),
        (503, "ServiceUnavailableException", "service_unavailable", Disposition.TRANSIENT, False),
        (403, "AccessDeniedException", "model_access_denied", Disposition.PERMANENT, False),
        (400, "ValidationException", "invalid_request", Disposition.PERMANENT, False),
        (404, "ResourceNotFoundException", "model_not_found", Disposition.PERMANENT, False),
        (403, "UnrecognizedClientException", "invalid_credentials", Disposition.FATAL, False),
        (403, "ExpiredTokenException", "expired_token", Disposition.FATAL, False),
    ],
)
def test_bedrock_errors_are_classified_by_their_name(
    status: int, name: str, code: str, disposition: Disposition, rate_limited: bool
) -> None:
    info = classify(bedrock(status, name))
    assert (info.code, info.disposition, info.rate_limited) == (code, disposition, rate_limited)
    assert info.type == name  # the provider's own name is kept
    assert info.request_id == "b-1"


def test_a_model_without_access_says_what_to_do() -> None:
    info = classify(bedrock(403, "AccessDeniedException", "You don't have access to the model with the specified ID."))
    assert info.message.startswith("You don't have access to the model")
    assert "grant the account access to the model" in info.message


def test_the_name_in_the_body_serves_when_the_header_is_missing() -> None:
    info = classify(answered(400, {"__type": "com.amazon.bedrock#ValidationException", "message": "bad"}))
    assert (info.code, info.disposition) == ("invalid_request", Disposition.PERMANENT)


def test_the_openai_shaped_error_of_the_bedrock_endpoint_is_read_by_its_type() -> None:
    body = {"error": {"message": "slow down", "type": "ThrottlingException", "code": None}}
    info = classify(answered(429, body))
    assert (info.code, info.rate_limited) == ("throttled", True)


def test_azures_content_filter_fails_the_request_at_once_as_content_filtered() -> None:
    body = {
        "error": {
            "message": "The response was filtered due to the prompt triggering Azure OpenAI's content policy.",
            "code": "content_filter",
            "param": "prompt",
            "status": 400,
            "innererror": {"code": "ResponsibleAIPolicyViolation"},
        }
    }
    info = classify(answered(400, body))
    assert (info.code, info.disposition, info.type) == ("content_filtered", Disposition.PERMANENT, "content_filter")
    assert info.body is not None
    assert info.body["error"]["innererror"]["code"] == "ResponsibleAIPolicyViolation"


@pytest.mark.parametrize("status", [403, 400, 429])
def test_openais_own_errors_are_read_as_before(status: int) -> None:
    info = classify(answered(status, {"error": {"message": "no", "type": "invalid_request_error", "code": None}}))
    assert info.code == f"http_{status}"
    assert info.disposition is (Disposition.TRANSIENT if status == 429 else Disposition.PERMANENT)


def test_a_bedrock_token_echoed_back_is_masked_by_its_shape() -> None:
    token = "bedrock-api-key-" + base64.b64encode(b"bedrock.amazonaws.com/?Action=CallWithBearerToken&X").decode()
    assert token[20:40] not in redact(f"the token {token} has expired")
    assert "bedrock-api-key-[redacted]" in redact(f"the token {token} has expired")


def test_status_errors_of_other_sdks_are_still_api_errors() -> None:
    assert isinstance(bedrock(429, "ThrottlingException"), openai.RateLimitError)
