"""The one ``AsyncOpenAI`` client per container, and the cheapest correct call through it.

Why not ``client.chat.completions.create``: the request body is already serialized once when the
input is parsed, and the answer is parsed once (to JSON) by the engine; the typed method would
transform the body's TypedDicts and build pydantic models per call. Why not ``client.post`` for
every call either: for a POST of ready bytes the SDK's ``request()`` builds and deep-copies its
pydantic request options twice, builds the same URL and a dozen identical headers, then wraps the
call in httpx2 request, response and stream objects over its aiohttp transport — about two thirds
of the CPU a call costs, twice the HTTP exchange itself (measured here: 0.25 ms a call through
aiohttp alone, 0.7 ms through ``client.post``; ``make bench`` scenario 1 shows the engine's share).

So :class:`LeanAsyncOpenAI` lets the SDK build the first request to each path (its URL, auth and
headers, its timeout), then sends each later body with those parts straight through aiohttp — the
library the SDK's own transport runs on — and turns a non-2xx answer or a transport fault into the
SDK's own error types, as ``request()`` does. SDK retries are off: the engine retries, so that
waits are shared.
"""

from __future__ import annotations

import urllib.parse
import urllib.request
from collections.abc import Awaitable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import aiohttp
import httpx2
from openai import APIConnectionError, APITimeoutError, AsyncOpenAI, DefaultAioHttpClient, NotGiven
from openai._models import FinalRequestOptions, SecurityOptions
from openai._types import Headers, RequestOptions

__all__ = ["KEY_AS_BEARER", "LeanAsyncOpenAI", "Reply", "Sender", "make_client"]

KEY_AS_BEARER = "Authorization"  # the key sent as "Authorization: Bearer <key>", the SDK's own way

# Distinct (path, key, base URL) whose built parts are kept: one per endpoint in use (five today).
_LEAN_URLS = 8
# What aiohttp decodes itself: the SDK's httpx2 may offer more (br, zstd) when their packages are installed.
_ACCEPT_ENCODING = "gzip, deflate"
_DECODED = (b"content-encoding", b"content-length", b"transfer-encoding")  # what aiohttp's body no longer is


class Sender(Protocol):
    """What the engine sends a request with: POSTs a ready body to an endpoint's path
    (:meth:`LeanAsyncOpenAI.post_ready`); ``timeout_s``: this call's own timeout (a flex call's)."""

    def __call__(self, path: str, body: bytes, timeout_s: float | None = None) -> Awaitable[Reply]: ...


@dataclass(slots=True, frozen=True)
class _Parts:
    """What the SDK built for a path: sent again with each later body."""

    url: str
    headers: dict[str, str]
    timeout: aiohttp.ClientTimeout


def make_client(
    *,
    api_key: str | None,
    max_connections: int,
    timeout_s: float,
    base_url: str | None = None,
    headers: Mapping[str, str] | None = None,
    key_header: str | None = KEY_AS_BEARER,
) -> LeanAsyncOpenAI:
    """A client on the aiohttp transport with a pool sized to the concurrency.

    Build it inside the event loop that will use it (the aiohttp sessions bind to that loop).
    ``api_key=None`` lets the SDK read ``OPENAI_API_KEY``; ``base_url=None``, ``OPENAI_BASE_URL``.
    ``key_header``: how the key is sent — ``Authorization: Bearer`` (:data:`KEY_AS_BEARER`), in a
    header of its own (Azure's ``api-key``), or not at all (None: a server that asks for none).
    """
    limits = httpx2.Limits(max_connections=max_connections, max_keepalive_connections=max_connections)
    if key_header is None:
        api_key = ""
    return LeanAsyncOpenAI(
        api_key=api_key,
        base_url=base_url,
        max_retries=0,
        timeout=timeout_s,
        default_headers=headers or None,
        http_client=DefaultAioHttpClient(limits=limits, timeout=timeout_s),
        max_connections=max_connections,
        key_header=key_header,
        # None: the SDK reads OPENAI_API_KEY and must find one; "" is a key set later (a token) or none.
        _enforce_credentials=api_key is None,
    )


class LeanAsyncOpenAI(AsyncOpenAI):
    """``AsyncOpenAI`` with :meth:`post_ready`: a POST of ready bytes, built by the SDK once per path.

    Only for a client authenticated by a plain API key — as a bearer token, in a header of its own
    (``key_header``: Azure's ``api-key``) or none (how :func:`make_client` builds it): with a key
    provider, a workload identity or a provider runtime (the SDK's own Bedrock provider signs each
    call) the SDK rewrites each request, so every call goes the SDK's own way. A Bedrock route's
    token is a plain key here, renewed by ``renewed_key.py``. The first call to each path, key and
    base URL goes the SDK's way too: the request the SDK builds then is remembered, and later calls
    send the same URL, headers and timeout with their own body, on a pool of ``max_connections``,
    following redirects as the SDK's client does — unless the environment proxies the URL. A new key
    or base URL (a rotated secret, a renewed token) is a new entry.
    """

    _lean: dict[tuple[str, str, str], _Parts] | None = None
    _session: aiohttp.ClientSession | None = None

    def __init__(self, *, max_connections: int = 100, key_header: str | None = KEY_AS_BEARER, **options: Any) -> None:
        self.key_header = key_header  # read by _auth_headers, which the SDK's __init__ may call
        super().__init__(**options)
        self.max_connections = max_connections

    def _auth_headers(self, security: SecurityOptions) -> dict[str, str]:
        """The key as the route sends it: the SDK's bearer header, a header of its own, or none."""
        if self.key_header == KEY_AS_BEARER:
            return super()._auth_headers(security)
        return {self.key_header: self.api_key} if self.key_header is not None and self.api_key else {}

    def _validate_headers(self, headers: Headers, custom_headers: Headers) -> None:
        # The SDK insists on an Authorization header; a route whose key goes elsewhere, or that has
        # none, sends none on purpose.
        if self.key_header == KEY_AS_BEARER:
            super()._validate_headers(headers, custom_headers)

    async def post_ready(self, path: str, body: bytes, timeout_s: float | None = None) -> Reply:
        """POST ``body`` to ``path`` (``/responses``…); a non-2xx answer raises the SDK's typed error, as
        ``post`` does. ``timeout_s``: this call's own timeout (a flex call's). The engine's ``Sender``."""
        parts = self._parts(path)
        if parts is None:
            options: RequestOptions = {"max_retries": 0}
            if timeout_s is not None:
                options["timeout"] = timeout_s
            response: httpx2.Response = await self.post(path, cast_to=httpx2.Response, content=body, options=options)
            return Reply(response.status_code, response.headers, response.content)
        timeout = parts.timeout
        if timeout_s is not None:
            timeout = aiohttp.ClientTimeout(
                total=timeout_s, connect=timeout.connect, sock_connect=timeout.sock_connect, sock_read=timeout_s
            )
        try:
            async with self._pool().post(parts.url, data=body, headers=parts.headers, timeout=timeout) as answer:
                content = await answer.read()
        except TimeoutError as err:  # aiohttp's ServerTimeoutError is one too
            raise APITimeoutError(request=_sent(parts, body)) from err
        except aiohttp.ClientError as err:
            raise APIConnectionError(request=_sent(parts, body)) from err
        if not 200 <= answer.status < 300:  # as the SDK's raise_for_status: anything but 2xx
            # aiohttp has decoded the body: without its encoding headers httpx2 will not decode it again.
            headers = [(k, v) for k, v in answer.raw_headers if k.lower() not in _DECODED]
            failed = httpx2.Response(answer.status, headers=headers, content=content, request=_sent(parts, body))
            raise self._make_status_error_from_response(failed)
        return Reply(answer.status, answer.headers, content)

    async def close(self) -> None:
        await super().close()
        if self._session is not None:
            await self._session.close()

    def _pool(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            connector = aiohttp.TCPConnector(limit=self.max_connections, ssl=httpx2.create_ssl_context())
            # Proxies were looked up once, for the URL (_proxied); aiohttp's trust_env would look again
            # at every call, which costs more CPU than the call itself.
            self._session = aiohttp.ClientSession(connector=connector, trust_env=False)
        return self._session

    @property
    def user_agent(self) -> str:
        return f"AsyncOpenAI/Python {self._version}"  # the SDK's own, not this subclass's name

    def _parts(self, path: str) -> _Parts | None:
        plain = self._provider_runtime is None and self._api_key_provider is None and self.workload_identity is None
        return self._lean.get((path, self.api_key, str(self.base_url))) if plain and self._lean else None

    def _build_request(self, options: FinalRequestOptions, *, retries_taken: int = 0) -> httpx2.Request:
        request = super()._build_request(options, retries_taken=retries_taken)
        ready = (
            options.method == "post"
            and isinstance(options.content, bytes)
            and not options.params
            and isinstance(options.headers, NotGiven)
            and options.extra_json is None
            and options.files is None
            and (options.idempotency_key is None or self._idempotency_header is None)
            and retries_taken == 0
        )
        if ready and not _proxied(str(request.url)):  # post_ready can send it again: remember its parts
            key = (options.url, self.api_key, str(self.base_url))
            if self._lean is None or (len(self._lean) >= _LEAN_URLS and key not in self._lean):
                self._lean = {}  # a new key or base URL leaves the old entries unused: dropped in time
            headers = {k: v for k, v in request.headers.items() if k.lower() not in ("content-length", "host")}
            headers["accept-encoding"] = _ACCEPT_ENCODING
            # A call with its own timeout (a flex call's: post_ready's timeout_s) leaves the client's for the
            # others; post_ready gives each later call its own again.
            own = not isinstance(options.timeout, NotGiven)
            timeout = httpx2.Timeout(self.timeout).as_dict() if own else request.extensions.get("timeout", {})
            self._lean[key] = _Parts(str(request.url), headers, _timeout(timeout))
        return request


def _proxied(url: str) -> bool:
    """The environment sends ``url`` through a proxy (``HTTPS_PROXY``… and not ``NO_PROXY``): such
    calls are left to the SDK's httpx2, which honours it."""
    proxies = urllib.request.getproxies()
    split = urllib.parse.urlsplit(url)
    if not (proxies.get(split.scheme) or proxies.get("all")):
        return False
    return not urllib.request.proxy_bypass(split.netloc)


def _timeout(timeout: Mapping[str, float | None]) -> aiohttp.ClientTimeout:
    """The SDK's httpx2 timeout, as its aiohttp transport maps it."""
    return aiohttp.ClientTimeout(
        sock_connect=timeout.get("connect"), sock_read=timeout.get("read"), connect=timeout.get("pool")
    )


def _sent(parts: _Parts, body: bytes) -> httpx2.Request:
    """The request as the SDK's errors carry it (built only when one is raised)."""
    return httpx2.Request("POST", parts.url, headers=parts.headers, content=body)


@dataclass(slots=True, frozen=True)
class Reply:
    """A 2xx answer, unparsed; its headers a case-insensitive mapping."""

    status_code: int
    headers: Mapping[str, str]
    content: bytes
