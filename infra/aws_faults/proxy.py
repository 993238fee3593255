"""The proxy: one aiohttp handler forwarding to moto (or answering a fault), and its server in a daemon thread."""

from __future__ import annotations

import contextlib
import io
import json
import time
import zlib
from collections.abc import AsyncIterator, Callable, Collection, Iterable
from typing import Any, Final

import aiohttp
from aiohttp import StreamReader, web
from multidict import CIMultiDict
from yarl import URL

from infra.aws_faults.answers import batch_items, error_response, read_whole, split_batch
from infra.aws_faults.calls import classify
from infra.aws_faults.config import AwsFaultsConfig, FaultRule, FaultStats, Outage
from infra.aws_faults.errors import FaultKind, Service
from infra.aws_faults.state import FaultState
from infra.threaded_server import ThreadedServer, serving_site

__all__ = ["AwsFaultProxy", "Proxy", "service_arg", "serving"]

_CHUNK: Final = 256 * 1024
_MAX_BODY: Final = 5 * 1024**3  # S3's largest single PUT
_CONTROL: Final = "/_faults/"  # never an S3 path: bucket names cannot start with "_"
# Not forwarded either way: they describe one hop. Content-Length is recomputed for a buffered body.
_HOP_BY_HOP: Final = frozenset(
    {"connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te", "trailer", "upgrade"}
)
_REQUEST_DROPPED: Final = _HOP_BY_HOP | {"transfer-encoding", "content-length", "expect"}
_RESPONSE_DROPPED: Final = _HOP_BY_HOP | {"transfer-encoding"}


class Proxy:
    """The aiohttp side: one handler, one client session to the target, on the proxy's loop."""

    def __init__(self, target: str, state: FaultState, own_hosts: Collection[str]) -> None:
        self._target = target.rstrip("/")
        self._state = state
        self._own_hosts = own_hosts
        self._session: aiohttp.ClientSession | None = None

    async def open(self) -> None:
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=256),
            timeout=aiohttp.ClientTimeout(total=None, connect=10),  # SQS long polls last up to 20 s
            auto_decompress=False,  # bytes pass as they are; Content-Encoding with them
            skip_auto_headers=("User-Agent", "Accept", "Accept-Encoding", "Content-Type"),
        )

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    def app(self) -> web.Application:
        app = web.Application(client_max_size=_MAX_BODY)
        app.router.add_route("GET", _CONTROL + "stats", self._stats)
        app.router.add_route("POST", _CONTROL + "reset", self._reset)
        app.router.add_route("POST", _CONTROL + "outage", self._start_outage)
        app.router.add_route("DELETE", _CONTROL + "outage", self._end_outage)
        app.router.add_route("*", "/{tail:.*}", self.handle)
        return app

    async def handle(self, request: web.Request) -> web.StreamResponse:
        # JSON and query calls are read whole (small: a form names its Action, a batch may be cut);
        # anything else — S3 objects of any size — streams through.
        body = await request.read() if read_whole(request) else None
        call = classify(
            request.method, request.path, request.query, request.headers, body or b"", own_hosts=self._own_hosts
        )
        batch = batch_items(body) if body is not None and call.name == "dynamodb.BatchWriteItem" else 0
        decision = self._state.decide(call, batch)
        if decision is not None and decision.kind in (FaultKind.THROTTLE, FaultKind.SERVER_ERROR, FaultKind.OUTAGE):
            assert decision.error is not None
            self._state.count_fault(call, decision.kind)
            return error_response(call, decision.error, request.method, body)
        held: dict[str, list[Any]] = {}
        if decision is not None and decision.kind is FaultKind.UNPROCESSED and body is not None:
            body, held = split_batch(body, decision.withhold)
        try:
            upstream = await self._forward(request, body)
        except aiohttp.ClientError as exc:
            self._state.count_upstream_error()
            return web.Response(status=502, text=f"aws_faults: the target {self._target} failed: {exc!r}")
        self._state.count_forwarded(call)
        async with upstream:
            if decision is not None and decision.kind is FaultKind.AFTER_WRITE:
                await upstream.read()  # the call took effect; its answer is lost on the way back
                assert decision.error is not None
                self._state.count_fault(call, decision.kind)
                return error_response(call, decision.error, request.method, body)
            if held and upstream.status == 200:
                answer = json.loads(await upstream.read())
                unprocessed = answer.setdefault("UnprocessedItems", {})
                for table, requests in held.items():
                    unprocessed.setdefault(table, []).extend(requests)
                self._state.count_fault(call, FaultKind.UNPROCESSED)
                return self._rewritten(upstream, json.dumps(answer).encode())
            return await self._relay(request, upstream)

    async def _forward(self, request: web.Request, body: bytes | None) -> aiohttp.ClientResponse:
        """Send the request on: a body read whole (``body``), or else the client's body as it arrives."""
        assert self._session is not None, "the proxy is not open"
        dropped = _REQUEST_DROPPED if body is not None else _REQUEST_DROPPED - {"content-length"}
        headers = CIMultiDict((k, v) for k, v in request.headers.items() if k.lower() not in dropped)
        data: io.BytesIO | StreamReader | None
        if body is not None:
            data = io.BytesIO(body) if body else None  # (aiohttp warns about big raw bytes bodies)
        else:
            data = request.content if request.can_read_body else None  # its Content-Length is kept
        url = URL(self._target + request.raw_path, encoded=True)  # path and query exactly as the client sent them
        return await self._session.request(request.method, url, headers=headers, data=data, allow_redirects=False)

    @staticmethod
    def _rewritten(upstream: aiohttp.ClientResponse, body: bytes) -> web.Response:
        headers = CIMultiDict(
            (k, v) for k, v in upstream.headers.items() if k.lower() not in _RESPONSE_DROPPED | {"content-length"}
        )
        if "x-amz-crc32" in headers:
            headers["x-amz-crc32"] = str(zlib.crc32(body))
        return web.Response(status=upstream.status, body=body, headers=headers)

    @staticmethod
    async def _relay(request: web.Request, upstream: aiohttp.ClientResponse) -> web.StreamResponse:
        """Stream the target's answer back as it comes (a GetObject of tens of MB is never held whole)."""
        response = web.StreamResponse(status=upstream.status, reason=upstream.reason)
        for name, value in upstream.headers.items():
            if name.lower() not in _RESPONSE_DROPPED:
                response.headers.add(name, value)
        await response.prepare(request)
        if request.method != "HEAD":
            async for chunk in upstream.content.iter_chunked(_CHUNK):
                await response.write(chunk)
        await response.write_eof()
        return response

    # -- control endpoints (for a proxy run from the shell) --

    async def _stats(self, request: web.Request) -> web.Response:
        return web.json_response(self._state.stats().as_json())

    async def _reset(self, request: web.Request) -> web.Response:
        self._state.reset_stats()
        return web.json_response({"reset": True})

    async def _start_outage(self, request: web.Request) -> web.Response:
        try:
            service = service_arg(request.query.get("service", "all"))
            seconds = float(request.query["seconds"])
            self._state.start_outage(service, seconds, request.query.get("code"))
        except (KeyError, ValueError) as exc:
            return web.json_response(
                {"error": f"{exc}; use POST /_faults/outage?service=s3|dynamodb|sqs|all&seconds=N[&code=CODE]"},
                status=400,
            )
        return web.json_response({"outage": service or "all", "seconds": seconds})

    async def _end_outage(self, request: web.Request) -> web.Response:
        try:
            service = service_arg(request.query.get("service", "all"))
        except ValueError as exc:
            return web.json_response({"error": str(exc)}, status=400)
        self._state.end_outage(service)
        return web.json_response({"ended": service or "all"})


def service_arg(value: str) -> Service | None:
    if value == "all":
        return None
    try:
        return Service(value)
    except ValueError:
        raise ValueError(f"unknown service {value!r}: s3, dynamodb, sqs or all") from None


class AwsFaultProxy(ThreadedServer):
    """The proxy on its own event loop in a daemon thread; a context manager (``with AwsFaultProxy(...)``).

    ``target`` is the moto server's endpoint; give the code under test :attr:`endpoint` as its
    ``AWS_ENDPOINT_URL``. Rules and outages can change while it runs; ``clock`` (monotonic seconds)
    times the outages and can be a test's fake clock.
    """

    what = "the AWS fault proxy"
    thread_name = "aws-faults"

    def __init__(
        self,
        target: str,
        config: AwsFaultsConfig | None = None,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(host, port)
        self.target = target
        self.config = config or AwsFaultsConfig()
        self._state = FaultState(self.config, clock)
        self._proxy = Proxy(target, self._state, own_hosts=(host, "localhost"))

    @property
    def endpoint(self) -> str:
        """What to give the code under test as ``AWS_ENDPOINT_URL`` (``http://HOST:PORT``)."""
        return f"http://{self.host}:{self.port}"

    # -- control (thread-safe; take effect from the next call) --

    def set_rules(self, rules: Iterable[FaultRule]) -> None:
        """Replace every rule (their random streams and limits start afresh)."""
        self._state.set_rules(rules)

    def add_rule(self, rule: FaultRule) -> None:
        self._state.add_rule(rule)

    def clear_rules(self) -> None:
        self._state.set_rules(())

    def add_outage(self, outage: Outage) -> None:
        """Schedule an outage (its ``after_calls`` counts the calls seen since the proxy started)."""
        self._state.add_outage(outage)

    def start_outage(self, service: Service | None = None, duration_s: float = 5.0, *, code: str | None = None) -> None:
        """Fail every call to ``service`` (``None``: all three) from now for ``duration_s`` seconds."""
        self._state.start_outage(service, duration_s, code)

    def end_outage(self, service: Service | None = None) -> None:
        """End ``service``'s outages now (``None``: every outage, including the scheduled ones)."""
        self._state.end_outage(service)

    def in_outage(self, service: Service) -> bool:
        """Whether a call to ``service`` made now would fail with an outage (starting a due one)."""
        return self._state.in_outage(service)

    def stats(self) -> FaultStats:
        return self._state.stats()

    def reset_stats(self) -> None:
        self._state.reset_stats()

    # -- the thread (ThreadedServer runs it) --

    @contextlib.asynccontextmanager
    async def _serving(self) -> AsyncIterator[None]:
        async with serving(self._proxy, self.host, self.port) as self.port:
            yield


@contextlib.asynccontextmanager
async def serving(proxy: Proxy, host: str, port: int) -> AsyncIterator[int]:
    """``proxy`` open (its client session to the target) and served on ``host:port``; yields the real port."""
    await proxy.open()
    try:
        async with serving_site(proxy.app(), host, port) as real_port:
            yield real_port
    finally:
        await proxy.close()
