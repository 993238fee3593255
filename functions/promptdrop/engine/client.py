"""The one ``AsyncOpenAI`` client per container, and the cheapest correct call through it.

Why ``client.post`` and not ``client.chat.completions.create``: the request body is already
serialized once when the input is parsed, and the answer is parsed once (to JSON) by the engine;
the typed method would transform the body's TypedDicts and build pydantic models per call, the
largest CPU cost per request on a Lambda vCPU. The SDK still owns auth, base URL, headers,
timeouts and its error types. SDK retries are off: the engine retries, so that waits are shared.
"""

from __future__ import annotations

from dataclasses import dataclass

import httpx2
import openai
from openai import AsyncOpenAI, DefaultAioHttpClient

__all__ = ["ChatSender", "Reply", "make_client"]

_CHAT_PATH = "/chat/completions"


def make_client(*, api_key: str | None, max_connections: int, timeout_s: float) -> AsyncOpenAI:
    """A client on the aiohttp transport with a pool sized to the concurrency.

    Build it inside the event loop that will use it (the aiohttp session binds to that loop).
    ``api_key=None`` lets the SDK read ``OPENAI_API_KEY``; ``OPENAI_BASE_URL`` is read by the SDK.
    """
    limits = httpx2.Limits(max_connections=max_connections, max_keepalive_connections=max_connections)
    return AsyncOpenAI(
        api_key=api_key,
        max_retries=0,
        timeout=timeout_s,
        http_client=DefaultAioHttpClient(limits=limits, timeout=timeout_s),
    )


@dataclass(slots=True, frozen=True)
class Reply:
    """A 2xx answer, unparsed."""

    status_code: int
    headers: httpx2.Headers
    content: bytes


class ChatSender:
    """Posts ready chat-completions bodies; non-2xx answers raise the SDK's typed errors."""

    __slots__ = ("_client", "_options")

    def __init__(self, client: AsyncOpenAI) -> None:
        self._client = client
        self._options: openai.RequestOptions = {"max_retries": 0}

    async def __call__(self, body: bytes) -> Reply:
        response = await self._client.post(_CHAT_PATH, cast_to=httpx2.Response, content=body, options=self._options)
        return Reply(response.status_code, response.headers, response.content)
