"""The one ``AsyncOpenAI`` client per container, and the cheapest correct call through it.

Why ``client.post`` and not ``client.chat.completions.create``: the request body is already
serialized once when the input is parsed, and the answer is parsed once (to JSON) by the engine;
the typed method would transform the body's TypedDicts and build pydantic models per call, the
largest CPU cost per request on a Lambda vCPU. The next largest is the SDK building the same URL
and headers again for every call: :class:`_LeanAsyncOpenAI` builds them once (0.49 -> 0.38 ms CPU
a call in ``make bench``'s scenario 1). The SDK still owns auth, base URL, headers, timeouts and its
error types. SDK retries are off: the engine retries, so that waits are shared.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import httpx2
import openai
from openai import AsyncOpenAI, DefaultAioHttpClient, NotGiven
from openai._models import FinalRequestOptions

__all__ = ["ApiSender", "Reply", "make_client"]

# Distinct URLs whose built parts are kept: one per endpoint in use (five today); past it, start over.
_LEAN_URLS = 8


def make_client(*, api_key: str | None, max_connections: int, timeout_s: float) -> AsyncOpenAI:
    """A client on the aiohttp transport with a pool sized to the concurrency.

    Build it inside the event loop that will use it (the aiohttp session binds to that loop).
    ``api_key=None`` lets the SDK read ``OPENAI_API_KEY``; ``OPENAI_BASE_URL`` is read by the SDK.
    """
    limits = httpx2.Limits(max_connections=max_connections, max_keepalive_connections=max_connections)
    return _LeanAsyncOpenAI(
        api_key=api_key,
        max_retries=0,
        timeout=timeout_s,
        http_client=DefaultAioHttpClient(limits=limits, timeout=timeout_s),
    )


class _LeanAsyncOpenAI(AsyncOpenAI):
    """``AsyncOpenAI`` that builds the HTTP request of a plain body POST once, then reuses its parts.

    The SDK rebuilds the same URL and a dozen identical headers for every call (about a third of
    the CPU a call costs); for a POST of ready bytes with no per-call options only the body
    differs. The first such request is built by the SDK itself; later ones reuse its URL, headers
    and timeout while the client's key and base URL are unchanged — one set per URL, as a file may
    mix endpoints. Auth hooks, sending, errors and every other request still go the SDK's own way.
    """

    _lean: dict[tuple[str, str, str], tuple[httpx2.URL, list[tuple[bytes, bytes]], dict[str, Any]]] | None = None

    def _build_request(self, options: FinalRequestOptions, *, retries_taken: int = 0) -> httpx2.Request:
        body = options.content
        plain = (
            options.method == "post"
            and not options.params
            and isinstance(options.headers, NotGiven)
            and isinstance(options.timeout, NotGiven)
            and options.extra_json is None
            and options.files is None
            and (options.idempotency_key is None or self._idempotency_header is None)
            and retries_taken == 0
        )
        if not plain or not isinstance(body, bytes):
            return super()._build_request(options, retries_taken=retries_taken)
        key = (options.url, self.api_key, str(self.base_url))
        if self._lean is None or (len(self._lean) >= _LEAN_URLS and key not in self._lean):
            self._lean = {}  # a new key or base URL leaves the old entries unused: dropped in time
        lean = self._lean.get(key)
        if lean is None:
            request = super()._build_request(options, retries_taken=retries_taken)
            headers = [(k, v) for k, v in request.headers.raw if k.lower() != b"content-length"]
            self._lean[key] = (request.url, headers, dict(request.extensions))
            return request
        url, headers, extensions = lean
        return httpx2.Request("POST", url, headers=headers, content=body, extensions=dict(extensions))


@dataclass(slots=True, frozen=True)
class Reply:
    """A 2xx answer, unparsed."""

    status_code: int
    headers: httpx2.Headers
    content: bytes


class ApiSender:
    """Posts ready bodies to an endpoint's path (``/responses``…); non-2xx answers raise the SDK's typed errors."""

    __slots__ = ("_client", "_options")

    def __init__(self, client: AsyncOpenAI) -> None:
        self._client = client
        self._options: openai.RequestOptions = {"max_retries": 0}

    async def __call__(self, path: str, body: bytes) -> Reply:
        response = await self._client.post(path, cast_to=httpx2.Response, content=body, options=self._options)
        return Reply(response.status_code, response.headers, response.content)
