"""The lean request path: after the first call, the same HTTP request the SDK itself would build."""

from __future__ import annotations

import httpx2
from openai import AsyncOpenAI
from openai._models import FinalRequestOptions
from promptdrop.engine.client import make_client


def chat_post(body: bytes) -> FinalRequestOptions:
    return FinalRequestOptions(method="post", url="/chat/completions", content=body, max_retries=0)


def as_sent(request: httpx2.Request) -> tuple[str, str, list[tuple[bytes, bytes]], bytes, dict[str, object]]:
    return request.method, str(request.url), list(request.headers.raw), request.read(), dict(request.extensions)


async def test_a_reused_request_is_the_one_the_sdk_builds() -> None:
    client = make_client(api_key="sk-one", max_connections=4, timeout_s=30)
    try:
        client._build_request(chat_post(b'{"first": 1}'))  # built by the SDK, remembered
        lean = client._build_request(chat_post(b'{"second": 22}'))
        sdk = AsyncOpenAI._build_request(client, chat_post(b'{"second": 22}'))
        assert lean is not sdk
        assert as_sent(lean) == as_sent(sdk)
        assert (b"authorization", b"Bearer sk-one") in lean.headers.raw
        assert lean.headers["content-length"] == "14"
    finally:
        await client.close()


async def test_a_new_key_or_any_per_call_option_goes_the_sdks_way() -> None:
    client = make_client(api_key="sk-one", max_connections=4, timeout_s=30)
    try:
        client._build_request(chat_post(b"{}"))
        client.api_key = "sk-two"
        assert (b"authorization", b"Bearer sk-two") in client._build_request(chat_post(b"{}")).headers.raw
        retried = client._build_request(chat_post(b"{}"), retries_taken=2)
        assert retried.headers["x-stainless-retry-count"] == "2"
        with_header = FinalRequestOptions(
            method="post", url="/chat/completions", content=b"{}", headers={"x-trace": "t1"}
        )
        assert client._build_request(with_header).headers["x-trace"] == "t1"
        assert client._build_request(chat_post(b"{}")).headers.get("x-trace") is None
    finally:
        await client.close()
