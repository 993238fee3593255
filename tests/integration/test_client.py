"""The lean path sends what the SDK's own ``post`` sends, and fails as it fails.

Both go over real HTTP to a loopback server that records each request and answers as a test
says; the SDK's ``request()`` (``client.post``) is the reference.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import httpx2
import openai
import pytest
from aiohttp import web
from promptdrop.engine.client import LeanAsyncOpenAI, Reply

Answer = Callable[[web.Request, bytes], Awaitable[web.StreamResponse]]


async def ok(_: web.Request, body: bytes) -> web.StreamResponse:
    return web.json_response({"id": "x", "echo": len(body)}, headers={"x-request-id": "req-1"})


@dataclass
class Recorded:
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class Server:
    url: str
    seen: list[Recorded] = field(default_factory=list)


@asynccontextmanager
async def serving(answer: Answer) -> AsyncIterator[Server]:
    server = Server("")

    async def handle(request: web.Request) -> web.StreamResponse:
        body = await request.read()
        server.seen.append(Recorded(request.path, {k.lower(): v for k, v in request.headers.items()}, body))
        return await answer(request, body)

    app = web.Application()
    app.router.add_post("/{tail:.*}", handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    server.url = f"http://127.0.0.1:{port}/v1"
    try:
        yield server
    finally:
        await runner.cleanup()


def client_for(server: Server, *, timeout_s: float = 30) -> LeanAsyncOpenAI:
    return LeanAsyncOpenAI(api_key="sk-one", base_url=server.url, max_retries=0, timeout=timeout_s, max_connections=4)


@asynccontextmanager
async def talking_to(answer: Answer, *, timeout_s: float = 30) -> AsyncIterator[tuple[Server, LeanAsyncOpenAI]]:
    """A recording server answering as ``answer`` does, and a client of it (closed after)."""
    async with serving(answer) as server:
        client = client_for(server, timeout_s=timeout_s)
        try:
            yield server, client
        finally:
            await client.close()


async def sdk_post(client: LeanAsyncOpenAI, body: bytes) -> httpx2.Response:
    response: httpx2.Response = await client.post(
        "/chat/completions", cast_to=httpx2.Response, content=body, options={"max_retries": 0}
    )
    return response


def wire(seen: Recorded) -> tuple[str, dict[str, str], bytes]:
    """What a server can tell two requests apart by, but the client library's own name and offer."""
    headers = {k: v for k, v in seen.headers.items() if k not in ("accept-encoding", "user-agent")}
    return seen.path, headers, seen.body


async def test_after_the_first_call_the_lean_request_is_the_one_the_sdk_sends(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async with talking_to(ok) as (server, client):
        await client.post_ready("/chat/completions", b'{"first": 1}')  # the SDK's way, remembered
        with monkeypatch.context() as patched:  # the next call must not go through the SDK's request()
            patched.setattr(client, "post", None)
            lean = await client.post_ready("/chat/completions", b'{"second": 22}')
        await sdk_post(client, b'{"second": 22}')
    _first, fast, sdk = server.seen
    assert wire(fast) == wire(sdk)
    assert fast.headers["authorization"] == "Bearer sk-one"
    assert fast.headers["content-length"] == "14"
    assert fast.headers["user-agent"] == sdk.headers["user-agent"]  # the SDK's, not aiohttp's
    assert isinstance(lean, Reply)
    assert lean.status_code == 200
    assert lean.content == b'{"id": "x", "echo": 14}'
    assert lean.headers["X-Request-Id"] == "req-1"  # any case, as httpx2's headers


async def test_a_new_key_or_a_new_path_is_built_by_the_sdk_again() -> None:
    async with talking_to(ok) as (server, client):
        await client.post_ready("/chat/completions", b"{}")
        client.api_key = "sk-two"  # a rotated secret
        await client.post_ready("/chat/completions", b"{}")
        await client.post_ready("/chat/completions", b"{}")
        await client.post_ready("/embeddings", b"{}")
        await client.post_ready("/embeddings", b"{}")
    assert [s.headers["authorization"] for s in server.seen[1:3]] == ["Bearer sk-two"] * 2
    assert wire(server.seen[1]) == wire(server.seen[2])
    assert [s.path for s in server.seen[3:]] == ["/v1/embeddings"] * 2
    assert wire(server.seen[3]) == wire(server.seen[4])


@pytest.mark.parametrize(
    ("status", "error"),
    [
        (400, openai.BadRequestError),
        (401, openai.AuthenticationError),
        (404, openai.NotFoundError),
        (429, openai.RateLimitError),
        (500, openai.InternalServerError),
        (503, openai.InternalServerError),
    ],
)
async def test_a_status_error_is_the_sdks_own(status: int, error: type[openai.APIStatusError]) -> None:
    async def refuse(request: web.Request, body: bytes) -> web.StreamResponse:
        if body == b"{}":
            return await ok(request, body)
        payload = {"error": {"message": "no", "type": "x", "code": "some_code"}}
        return web.json_response(payload, status=status, headers={"retry-after-ms": "250", "x-request-id": "req-9"})

    async with talking_to(refuse) as (_, client):
        await client.post_ready("/chat/completions", b"{}")  # remembered: the next call is lean
        with pytest.raises(error) as lean:
            await client.post_ready("/chat/completions", b"[]")
        with pytest.raises(error) as sdk:
            await sdk_post(client, b"[]")
    fast, reference = lean.value, sdk.value
    assert (fast.status_code, fast.message, fast.body, fast.request_id, fast.code) == (
        reference.status_code,
        reference.message,
        reference.body,
        reference.request_id,
        reference.code,
    )
    assert fast.response.headers["retry-after-ms"] == "250"


async def test_a_timeout_and_a_dropped_connection_are_the_sdks_own_errors() -> None:
    async def misbehave(request: web.Request, body: bytes) -> web.StreamResponse:
        if body == b"slow":
            await asyncio.sleep(5)
        if body == b"drop":
            assert request.transport is not None
            request.transport.close()
        return await ok(request, body)

    async with talking_to(misbehave, timeout_s=0.5) as (_, client):
        await client.post_ready("/chat/completions", b"{}")
        with pytest.raises(openai.APITimeoutError):
            await client.post_ready("/chat/completions", b"slow")
        with pytest.raises(openai.APITimeoutError):
            await sdk_post(client, b"slow")
        with pytest.raises(openai.APIConnectionError) as dropped:
            await client.post_ready("/chat/completions", b"drop")
        assert not isinstance(dropped.value, openai.APITimeoutError)
        with pytest.raises(openai.APIConnectionError):
            await sdk_post(client, b"drop")


async def test_a_url_the_environment_proxies_always_goes_the_sdks_way(monkeypatch: pytest.MonkeyPatch) -> None:
    async with serving(ok) as server:
        for name in ("NO_PROXY", "no_proxy", "ALL_PROXY", "all_proxy"):
            monkeypatch.delenv(name, raising=False)
        monkeypatch.setenv("HTTP_PROXY", server.url.removesuffix("/v1"))  # the server plays the proxy too
        client = client_for(server)
        through_sdk = 0
        sdk_way = client.post

        async def counted(*args: object, **kwargs: object) -> object:
            nonlocal through_sdk
            through_sdk += 1
            return await sdk_way(*args, **kwargs)  # type: ignore[arg-type]

        monkeypatch.setattr(client, "post", counted)
        try:
            for _ in range(3):
                await client.post_ready("/chat/completions", b"{}")
        finally:
            await client.close()
    assert through_sdk == 3
    assert len(server.seen) == 3


async def test_the_sdks_user_agent_is_sent() -> None:
    async with talking_to(ok) as (server, client):
        await client.post_ready("/chat/completions", b"{}")
        await client.post_ready("/chat/completions", b"{}")
    assert [s.headers["user-agent"] for s in server.seen] == [f"AsyncOpenAI/Python {openai.__version__}"] * 2


async def test_a_compressed_error_body_is_read_once_decoded() -> None:
    async def refuse_gzipped(request: web.Request, body: bytes) -> web.StreamResponse:
        if body == b"{}":
            return await ok(request, body)
        payload = {"error": {"message": "slow down " * 50, "type": "x", "code": "rate_limit_exceeded"}}
        response = web.json_response(payload, status=429)
        response.enable_compression(web.ContentCoding.gzip)
        return response

    async with talking_to(refuse_gzipped) as (_, client):
        await client.post_ready("/chat/completions", b"{}")
        with pytest.raises(openai.RateLimitError) as lean:
            await client.post_ready("/chat/completions", b"[]")
        with pytest.raises(openai.RateLimitError) as sdk:
            await sdk_post(client, b"[]")
    assert lean.value.body == sdk.value.body
    assert lean.value.code == "rate_limit_exceeded"


async def test_a_compressed_answer_arrives_decoded() -> None:
    async def gzipped(request: web.Request, body: bytes) -> web.StreamResponse:
        response = web.json_response({"id": "x", "text": "an answer " * 100})
        response.enable_compression(web.ContentCoding.gzip)
        return response

    async with talking_to(gzipped) as (server, client):
        await client.post_ready("/chat/completions", b"{}")
        lean = await client.post_ready("/chat/completions", b"{}")
        sdk = await sdk_post(client, b"{}")
    assert server.seen[1].headers["accept-encoding"] == "gzip, deflate"
    assert lean.content == sdk.content
    assert lean.content.startswith(b'{"id": "x"')


async def test_a_first_call_with_its_own_timeout_leaves_the_lean_path_to_the_later_calls() -> None:
    # A flex call (its own 600 s timeout) first: the calls after it, flex or not, go the lean way with
    # the client's timeout, each flex one with its own again
    async with talking_to(ok) as (server, client):
        await client.post_ready("/chat/completions", b"{}", timeout_s=600.0)
        parts = client._parts("/chat/completions")
        await client.post_ready("/chat/completions", b"{}")
        await client.post_ready("/chat/completions", b"{}", timeout_s=600.0)
    assert parts is not None
    assert parts.timeout.sock_read == client.timeout  # the client's, not the first call's own
    assert wire(server.seen[0]) == wire(server.seen[1]) == wire(server.seen[2])
