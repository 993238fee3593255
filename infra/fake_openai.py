"""A small, fast, OpenAI-compatible chat-completions server for the demo, the tests and the benchmark.

It answers ``POST /v1/chat/completions`` with a realistic ``chat.completion`` body whose content is a
deterministic function of the prompt (``"Echo: "`` + the first 200 characters of the last user message), so
a test can tell which answer belongs to which prompt, and it can misbehave on demand:

* latency (``latency_ms`` +/- ``jitter_ms``) applied with ``asyncio.sleep``;
* OpenAI-style request and token rate limits (``rpm`` / ``tpm``): continuously refilled token buckets whose
  capacity is the per-minute limit, ``x-ratelimit-*`` headers on every completion response, and real HTTP 429s
  with ``retry-after`` / ``retry-after-ms`` once a bucket is empty;
* random, seeded fault injection (500s, 429s, hangs, malformed JSON bodies);
* deterministic per-prompt fault markers in the last user message, so a test can target one prompt:
  ``[[fail:500x2]]`` (the first 2 times this exact prompt is received answer 500, then succeed; works for
  any status, e.g. ``[[fail:429x1]]``, ``[[fail:503x3]]``, ``[[fail:408x1]]``), ``[[hang:x1]]``,
  ``[[malformed:x1]]``, and without a count -- always -- ``[[fail:400]]``, ``[[fail:401]]``,
  ``[[fail:404]]``, ``[[fail:422]]``, ``[[fail:500]]``, ``[[quota]]`` (429 ``insufficient_quota``).
  Several counted markers in one prompt apply one after the other. Markers are counted per exact prompt
  text, after authentication and rate limiting, and ``POST /stats/reset`` forgets the counts;
* an optional API key check (``require_api_key``) answering 401 ``invalid_api_key``.

``GET /stats`` returns counters (requests, per-status counts, injected faults, token totals and ``prompts``:
sha256-hex[:16] of the last user message -> times received), ``POST /stats/reset`` clears them (and refills
the rate-limit buckets), ``GET /health`` answers 200.

Use it from Python with :func:`serve_in_thread` (a daemon thread running its own event loop) or
:func:`create_app`, or from a shell: ``python -m infra.fake_openai --port 8089 --latency-ms 200``,
which prints ``fake OpenAI API listening on http://HOST:PORT/v1`` once it accepts connections.
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import contextlib
import hashlib
import json
import math
import random
import re
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from json.encoder import encode_basestring_ascii
from typing import Any, Final, TypeVar

from aiohttp import web

__all__ = [
    "FakeOpenAIConfig",
    "FakeOpenAIState",
    "RunningFakeOpenAI",
    "app_state",
    "config_from_args",
    "create_app",
    "format_duration",
    "main",
    "prompt_hash",
    "serve_in_thread",
]

_T = TypeVar("_T")

ECHO_PREFIX: Final = "Echo: "
ECHO_CHARS: Final = 200
_JSON_CT: Final = "application/json"
_SYSTEM_FINGERPRINT: Final = "fp_local_fake_openai"
_MAX_BODY_BYTES: Final = 32 * 1024 * 1024
_RATE_LIMIT_DOCS: Final = "Visit https://platform.openai.com/account/rate-limits to learn more."
_ORG: Final = "org-local"

_MARKER_RE: Final = re.compile(r"\[\[(?:fail:(?P<code>\d{3})|(?P<kind>hang|malformed|quota))(?::?x(?P<count>\d+))?\]\]")

_STATUS_TEXT: Final[dict[int, tuple[str, str | None, str]]] = {
    # status: (type, code, message)
    400: ("invalid_request_error", None, "Injected bad request (fault marker)."),
    401: (
        "invalid_request_error",
        "invalid_api_key",
        "Incorrect API key provided. You can find your API key at https://platform.openai.com/account/api-keys.",
    ),
    403: (
        "invalid_request_error",
        "unsupported_country_region_territory",
        "Injected forbidden (fault marker).",
    ),
    404: (
        "invalid_request_error",
        "model_not_found",
        "The model does not exist or you do not have access to it.",
    ),
    408: ("timeout", None, "Request timed out."),
    409: ("invalid_request_error", None, "Injected conflict (fault marker)."),
    422: ("invalid_request_error", None, "Injected unprocessable entity (fault marker)."),
    429: ("requests", "rate_limit_exceeded", "Rate limit reached (injected fault)."),
    500: ("server_error", None, "The server had an error while processing your request. Sorry about that!"),
    502: ("server_error", None, "Bad gateway."),
    503: ("server_error", None, "The engine is currently overloaded, please try again later."),
    504: ("server_error", None, "Gateway timeout."),
}
_encode_str: Final = encode_basestring_ascii  # a str as a JSON string literal, in C
# The chat.completion body as templates (what json.dumps of the equivalent dict gives, but cheaper).
_CHOICE_TEMPLATE: Final = (
    '{"index":%d,"message":{"role":"assistant","content":%s,"refusal":null,"annotations":[]},'
    '"logprobs":null,"finish_reason":"%s"}'
)
_COMPLETION_TEMPLATE: Final = (
    '{"id":"chatcmpl-%029x","object":"chat.completion","created":%d,"model":%s,"choices":[%s],'
    '"usage":{"prompt_tokens":%d,"completion_tokens":%d,"total_tokens":%d,'
    '"prompt_tokens_details":{"cached_tokens":0,"audio_tokens":0},'
    '"completion_tokens_details":{"reasoning_tokens":0,"audio_tokens":0,'
    '"accepted_prediction_tokens":0,"rejected_prediction_tokens":0}},'
    f'"service_tier":"default","system_fingerprint":"{_SYSTEM_FINGERPRINT}"}}'
)
_QUOTA_ERROR: Final = (
    "insufficient_quota",
    "insufficient_quota",
    "You exceeded your current quota, please check your plan and billing details. For more information on "
    "this error, read the docs: https://platform.openai.com/docs/guides/error-codes/api-errors.",
)


@dataclass(frozen=True, slots=True)
class FakeOpenAIConfig:
    """How the server behaves. Rates are probabilities in [0, 1]; ``None`` limits mean unlimited."""

    latency_ms: float = 0.0
    jitter_ms: float = 0.0
    rpm: int | None = None
    tpm: int | None = None
    burst_s: float = 60.0
    fail_500_rate: float = 0.0
    fail_429_rate: float = 0.0
    hang_rate: float = 0.0
    malformed_rate: float = 0.0
    hang_s: float = 30.0
    seed: int | None = None
    require_api_key: str | None = None
    #: Completion tokens charged to the tokens/min bucket when the request sets no max_tokens.
    default_max_tokens: int = 16
    #: retry-after-ms sent with injected 429s (random ones and ``[[fail:429xN]]`` markers).
    fault_retry_after_ms: int = 50

    def __post_init__(self) -> None:
        for name in ("fail_500_rate", "fail_429_rate", "hang_rate", "malformed_rate"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be within [0, 1], got {value!r}")
        if self.fail_500_rate + self.fail_429_rate + self.hang_rate + self.malformed_rate > 1.0:
            raise ValueError("the fault rates must add up to at most 1")
        for name in ("rpm", "tpm"):
            limit = getattr(self, name)
            if limit is not None and limit <= 0:
                raise ValueError(f"{name} must be positive or None, got {limit!r}")
        negative = [
            name
            for name in ("latency_ms", "jitter_ms", "hang_s", "default_max_tokens", "fault_retry_after_ms")
            if getattr(self, name) < 0
        ]
        if negative:
            raise ValueError(f"{', '.join(negative)} must not be negative")


def prompt_hash(text: str) -> str:
    """The key of ``/stats`` ``prompts``: sha256 hex of the last user message content, first 16 chars."""
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:16]


def format_duration(seconds: float) -> str:
    """OpenAI's (Go-style) duration format: ``"0s"``, ``"120ms"``, ``"8.64s"``, ``"6m0s"``, ``"1h2m3s"``."""
    ms = math.ceil(seconds * 1000 - 1e-9)
    if ms <= 0:
        return "0s"
    if ms < 1000:
        return f"{ms}ms"
    hours, rest = divmod(ms, 3_600_000)
    minutes, rest = divmod(rest, 60_000)
    secs = f"{rest / 1000:.3f}".rstrip("0").rstrip(".")
    if hours:
        return f"{hours}h{minutes}m{secs}s"
    if minutes:
        return f"{minutes}m{secs}s"
    return f"{secs}s"


class _Bucket:
    """A token bucket refilled continuously at limit/60 per second.

    Its capacity is ``burst_s`` seconds' worth: 60 (the default) lets a whole minute's budget go at
    once; 1 enforces the rate over one-second windows, as a strict provider does.
    """

    __slots__ = ("capacity", "level", "limit", "rate", "updated")

    def __init__(self, limit: int, burst_s: float = 60.0) -> None:
        self.limit = limit
        self.rate = limit / 60.0
        self.capacity = max(1.0, self.rate * burst_s)
        self.level = self.capacity
        self.updated = time.monotonic()

    def refill(self, now: float) -> None:
        if now > self.updated:
            self.level = min(self.capacity, self.level + (now - self.updated) * self.rate)
            self.updated = now

    def wait_for(self, need: float) -> float:
        """Seconds until ``need`` units are available (0 if they are now)."""
        need = min(need, self.capacity)  # a request larger than a burst goes when the bucket is full
        return 0.0 if self.level >= need else (need - self.level) / self.rate

    def reset(self) -> None:
        self.level = self.capacity
        self.updated = time.monotonic()


@dataclass(slots=True)
class _Fault:
    kind: str  # "status", "quota", "hang", "malformed"
    status: int = 0


@dataclass(slots=True)
class _Marker:
    fault: _Fault
    count: int | None  # None: always


class FakeOpenAIState:
    """Counters and per-prompt bookkeeping. Mutated only on the server's event loop."""

    def __init__(self) -> None:
        self.started = time.monotonic()
        self.requests = 0
        self.ok = 0
        self.in_flight = 0
        self.max_in_flight = 0
        self.rate_limited = 0
        self.prompt_tokens = 0
        self.completion_tokens = 0
        self.status: dict[int, int] = {}
        self.injected: dict[str, int] = {}
        self.prompts: dict[str, int] = {}
        self.prompts_ok: dict[str, int] = {}
        self.marker_seen: dict[str, int] = {}
        self.buckets: list[_Bucket] = []

    def snapshot(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "ok": self.ok,
            "in_flight": self.in_flight,
            "max_in_flight": self.max_in_flight,
            "rate_limited": self.rate_limited,
            "status": {str(k): v for k, v in sorted(self.status.items())},
            "injected": dict(self.injected),
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "prompts": dict(self.prompts),
            "prompts_ok": dict(self.prompts_ok),
            "uptime_s": round(time.monotonic() - self.started, 3),
        }

    def reset(self) -> None:
        self.requests = self.ok = self.rate_limited = 0
        self.max_in_flight = self.in_flight
        self.prompt_tokens = self.completion_tokens = 0
        self.status.clear()
        self.injected.clear()
        self.prompts.clear()
        self.prompts_ok.clear()
        self.marker_seen.clear()
        for bucket in self.buckets:
            bucket.reset()


def _text_of(content: object) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = [p.get("text") for p in content if isinstance(p, dict)]
        return "\n".join(p for p in parts if isinstance(p, str))
    return ""


def _extract(messages: list[Any]) -> tuple[str, int]:
    """(last user message text, total characters of all message texts)."""
    total = 0
    last_user: str | None = None
    last_any = ""
    for message in messages:
        if not isinstance(message, dict):
            continue
        text = _text_of(message.get("content"))
        total += len(text)
        last_any = text
        if message.get("role") == "user":
            last_user = text
    return (last_user if last_user is not None else last_any), total


def _positive_int(value: object) -> int | None:
    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
        return value
    return None


_ErrorSpec = tuple[str, str | None, str]  # (type, code, message)


@dataclass(slots=True)
class _Request:
    """What the completion path needs from a valid request body."""

    model: str
    text: str
    key: str
    prompt_tokens: int
    max_tokens: int | None
    n: int


class _Handler:
    """The request handlers; one instance per application."""

    def __init__(self, config: FakeOpenAIConfig, state: FakeOpenAIState) -> None:
        self.config = config
        self.state = state
        self.closing = asyncio.Event()
        self.auth = f"Bearer {config.require_api_key}" if config.require_api_key is not None else None
        self.rpm = _Bucket(config.rpm, config.burst_s) if config.rpm else None
        self.tpm = _Bucket(config.tpm, config.burst_s) if config.tpm else None
        state.buckets = [b for b in (self.rpm, self.tpm) if b is not None]
        self.fault_rng = random.Random(config.seed)
        self.jitter_rng = random.Random(None if config.seed is None else config.seed + 1)
        self.id_rng = random.Random()
        self.cut_500 = config.fail_500_rate
        self.cut_429 = self.cut_500 + config.fail_429_rate
        self.cut_hang = self.cut_429 + config.hang_rate
        self.cut_malformed = self.cut_hang + config.malformed_rate
        self.any_random_fault = self.cut_malformed > 0
        self.markers_cache: dict[str, list[_Marker]] = {}
        self.retry_after = {
            # Whole seconds, floored: retry-after-ms 50 goes with retry-after 0.
            "retry-after": str(config.fault_retry_after_ms // 1000),
            "retry-after-ms": str(config.fault_retry_after_ms),
        }
        self.retry_after_text = format_duration(config.fault_retry_after_ms / 1000)

    # -- responses ----------------------------------------------------------------------------------------

    def _headers(self, started: float, rate_headers: dict[str, str] | None) -> dict[str, str]:
        headers = {
            "Content-Type": _JSON_CT,
            "x-request-id": f"req_{self.id_rng.getrandbits(128):032x}",
            "openai-processing-ms": str(int((time.monotonic() - started) * 1000)),
            "openai-version": "2020-10-01",
        }
        if rate_headers:
            headers.update(rate_headers)
        return headers

    def _error(
        self,
        status: int,
        error: _ErrorSpec,
        started: float,
        rate_headers: dict[str, str] | None = None,
        *,
        param: str | None = None,
        extra_headers: dict[str, str] | None = None,
    ) -> web.Response:
        headers = self._headers(started, rate_headers)
        if extra_headers:
            headers.update(extra_headers)
        err_type, code, message = error
        body = {"error": {"message": message, "type": err_type, "param": param, "code": code}}
        return web.Response(status=status, body=json.dumps(body).encode(), headers=headers)

    def _invalid(self, message: str, started: float, *, param: str | None = None) -> web.Response:
        return self._error(400, ("invalid_request_error", None, message), started, param=param)

    def _status_fault(
        self, status: int, started: float, rate_headers: dict[str, str] | None, model: str
    ) -> web.Response:
        err_type, code, message = _STATUS_TEXT.get(
            status,
            (
                "server_error" if status >= 500 else "invalid_request_error",
                None,
                f"Injected HTTP {status} (fault).",
            ),
        )
        extra = None
        if status == 404:
            message = f"The model `{model}` does not exist or you do not have access to it."
        elif status == 429:
            extra = self.retry_after
            message = f"Rate limit reached (injected fault). Please try again in {self.retry_after_text}."
        return self._error(status, (err_type, code, message), started, rate_headers, extra_headers=extra)

    # -- rate limiting --------------------------------------------------------------------------------------

    def _rate_headers(self) -> dict[str, str]:
        headers: dict[str, str] = {}
        for bucket, what in ((self.rpm, "requests"), (self.tpm, "tokens")):
            if bucket is not None:
                headers[f"x-ratelimit-limit-{what}"] = str(bucket.limit)
                headers[f"x-ratelimit-remaining-{what}"] = str(max(0, int(bucket.level)))
                headers[f"x-ratelimit-reset-{what}"] = format_duration((bucket.capacity - bucket.level) / bucket.rate)
        return headers

    def _admit(self, need_tokens: int, model: str, started: float) -> tuple[dict[str, str], web.Response | None]:
        """Charge the buckets, or answer 429 (charging nothing) if one of them lacks capacity."""
        now = time.monotonic()
        for each in self.state.buckets:
            each.refill(now)
        if self.tpm is not None and need_tokens > self.tpm.limit:
            message = (
                f"Request too large for {model} in organization {_ORG} on tokens per min (TPM): "
                f"Limit {self.tpm.limit}, Requested {need_tokens}. The input or output tokens "
                f"must be reduced in order to run successfully. {_RATE_LIMIT_DOCS}"
            )
            headers = self._rate_headers()
            self.state.rate_limited += 1
            return headers, self._error(429, ("tokens", "rate_limit_exceeded", message), started, headers)
        checks = ((self.rpm, 1, "requests", "RPM"), (self.tpm, need_tokens, "tokens", "TPM"))
        for bucket, need, what, abbr in checks:
            if bucket is None:
                continue
            wait = bucket.wait_for(need)
            if wait <= 0:
                continue
            used = max(0, math.ceil(bucket.capacity - bucket.level))
            message = (
                f"Rate limit reached for {model} in organization {_ORG} on {what} per min ({abbr}): "
                f"Limit {bucket.limit}, Used {used}, Requested {need}. "
                f"Please try again in {format_duration(wait)}. {_RATE_LIMIT_DOCS}"
            )
            headers = self._rate_headers()
            wait_ms = max(1, math.ceil(wait * 1000))
            extra = {"retry-after": str(math.ceil(wait_ms / 1000)), "retry-after-ms": str(wait_ms)}
            self.state.rate_limited += 1
            error = (what, "rate_limit_exceeded", message)
            return headers, self._error(429, error, started, headers, extra_headers=extra)
        if self.rpm is not None:
            self.rpm.level -= 1
        if self.tpm is not None:
            self.tpm.level -= need_tokens
        return self._rate_headers(), None

    # -- faults ---------------------------------------------------------------------------------------------

    def _markers(self, text: str) -> list[_Marker]:
        cached = self.markers_cache.get(text)
        if cached is None:
            cached = [
                _Marker(
                    _Fault("status", int(m["code"])) if m["code"] is not None else _Fault(m["kind"]),
                    int(m["count"]) if m["count"] is not None else None,
                )
                for m in _MARKER_RE.finditer(text)
            ]
            if len(self.markers_cache) < 100_000:
                self.markers_cache[text] = cached
        return cached

    def _marker_fault(self, text: str) -> _Fault | None:
        markers = self._markers(text)
        if not markers:
            return None
        seen = self.state.marker_seen.get(text, 0) + 1
        self.state.marker_seen[text] = seen
        upto = 0
        for marker in markers:
            if marker.count is None:
                return marker.fault
            upto += marker.count
            if seen <= upto:
                return marker.fault
        return None

    def _random_fault(self) -> _Fault | None:
        r = self.fault_rng.random()
        if r < self.cut_500:
            return _Fault("status", 500)
        if r < self.cut_429:
            return _Fault("status", 429)
        if r < self.cut_hang:
            return _Fault("hang")
        if r < self.cut_malformed:
            return _Fault("malformed")
        return None

    def _pick_fault(self, text: str) -> _Fault | None:
        fault = self._marker_fault(text) if "[[" in text else None
        if fault is not None:
            name = "marker"
        elif self.any_random_fault:
            fault = self._random_fault()
            if fault is None:
                return None
            name = f"status_{fault.status}" if fault.kind == "status" else fault.kind
        else:
            return None
        self.state.injected[name] = self.state.injected.get(name, 0) + 1
        return fault

    async def _hang(self) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.closing.wait(), self.config.hang_s)

    async def _delay(self) -> None:
        config = self.config
        delay = config.latency_ms
        if config.jitter_ms:
            delay += self.jitter_rng.uniform(-config.jitter_ms, config.jitter_ms)
        if delay > 0:
            await asyncio.sleep(delay / 1000)

    # -- handlers -------------------------------------------------------------------------------------------

    async def chat_completions(self, request: web.Request) -> web.Response:
        state = self.state
        state.requests += 1
        state.in_flight += 1
        state.max_in_flight = max(state.max_in_flight, state.in_flight)
        try:
            response = await self._complete(request, time.monotonic())
        finally:
            state.in_flight -= 1
        state.status[response.status] = state.status.get(response.status, 0) + 1
        return response

    async def _parse(self, request: web.Request, started: float) -> _Request | web.Response:
        try:
            body = json.loads(await request.read())
        except ValueError:
            return self._invalid(
                "We could not parse the JSON body of your request. (HINT: This likely means you aren't using "
                "your HTTP library correctly. The OpenAI API expects a JSON payload.)",
                started,
            )
        if not isinstance(body, dict):
            return self._invalid("The request body must be a JSON object.", started)
        model = body.get("model")
        if not isinstance(model, str) or not model:
            return self._invalid("you must provide a model parameter", started, param="model")
        messages = body.get("messages")
        if messages is None:
            error = (
                "invalid_request_error",
                "missing_required_parameter",
                "Missing required parameter: 'messages'.",
            )
            return self._error(400, error, started, param="messages")
        if not isinstance(messages, list) or not messages:
            return self._invalid("Invalid 'messages': expected a non-empty array.", started, param="messages")
        text, total_chars = _extract(messages)
        return _Request(
            model=model,
            text=text,
            key=prompt_hash(text),
            prompt_tokens=total_chars // 4 + 4 * len(messages),
            max_tokens=_positive_int(body.get("max_completion_tokens")) or _positive_int(body.get("max_tokens")),
            n=min(_positive_int(body.get("n")) or 1, 128),
        )

    async def _complete(self, request: web.Request, started: float) -> web.Response:
        state = self.state
        if self.auth is not None and request.headers.get("Authorization") != self.auth:
            return self._error(401, _STATUS_TEXT[401], started)
        req = await self._parse(request, started)
        if isinstance(req, web.Response):
            return req
        state.prompts[req.key] = state.prompts.get(req.key, 0) + 1

        rate_headers: dict[str, str] | None = None
        if state.buckets:
            need = req.prompt_tokens + (req.max_tokens or self.config.default_max_tokens) * req.n
            rate_headers, denied = self._admit(need, req.model, started)
            if denied is not None:
                return denied

        fault = self._pick_fault(req.text)
        if self.config.latency_ms or self.config.jitter_ms:
            await self._delay()
        if fault is not None:
            if fault.kind == "status":
                return self._status_fault(fault.status, started, rate_headers, req.model)
            if fault.kind == "quota":
                return self._error(429, _QUOTA_ERROR, started, rate_headers)
            if fault.kind == "hang":
                await self._hang()
        raw, completion_tokens = self._completion_body(req)
        if fault is not None and fault.kind == "malformed":
            raw = raw[: len(raw) // 2]
        else:
            state.ok += 1
            state.prompt_tokens += req.prompt_tokens
            state.completion_tokens += completion_tokens
            state.prompts_ok[req.key] = state.prompts_ok.get(req.key, 0) + 1
        return web.Response(body=raw, headers=self._headers(started, rate_headers))

    def _completion_body(self, req: _Request) -> tuple[bytes, int]:
        """The JSON body (from a template: this is the hot path) and its completion token count."""
        content = ECHO_PREFIX + req.text[:ECHO_CHARS]
        completion_tokens = len(content) // 4 + 1
        finish_reason = "stop"
        if req.max_tokens is not None and req.max_tokens < completion_tokens:
            content = content[: req.max_tokens * 4]
            completion_tokens = req.max_tokens
            finish_reason = "length"
        encoded = _encode_str(content)
        choices = ",".join(_CHOICE_TEMPLATE % (i, encoded, finish_reason) for i in range(req.n))
        completion_tokens *= req.n
        prompt_tokens = req.prompt_tokens
        body = _COMPLETION_TEMPLATE % (
            self.id_rng.getrandbits(116),
            int(time.time()),
            _encode_str(req.model),
            choices,
            prompt_tokens,
            completion_tokens,
            prompt_tokens + completion_tokens,
        )
        return body.encode(), completion_tokens

    async def models(self, request: web.Request) -> web.Response:
        model = {"id": "local-echo", "object": "model", "created": 0, "owned_by": "local"}
        return web.json_response({"object": "list", "data": [model]})

    async def stats(self, request: web.Request) -> web.Response:
        return web.json_response(self.state.snapshot())

    async def reset(self, request: web.Request) -> web.Response:
        self.state.reset()
        return web.json_response({"reset": True})

    async def health(self, request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def not_found(self, request: web.Request) -> web.Response:
        error = ("invalid_request_error", None, f"Invalid URL ({request.method} {request.path})")
        return self._error(404, error, time.monotonic())

    async def on_shutdown(self, app: web.Application) -> None:
        self.closing.set()


_STATE_KEY: Final = web.AppKey("fake_openai_state", FakeOpenAIState)
_HANDLER_KEY: Final = web.AppKey("fake_openai_handler", _Handler)


def create_app(config: FakeOpenAIConfig | None = None) -> web.Application:
    """The aiohttp application; :func:`app_state` gives its :class:`FakeOpenAIState`."""
    config = config or FakeOpenAIConfig()
    state = FakeOpenAIState()
    handler = _Handler(config, state)
    app = web.Application(client_max_size=_MAX_BODY_BYTES)
    app[_STATE_KEY] = state
    app[_HANDLER_KEY] = handler
    app.router.add_post("/v1/chat/completions", handler.chat_completions)
    app.router.add_post("/chat/completions", handler.chat_completions)
    app.router.add_get("/v1/models", handler.models)
    app.router.add_get("/stats", handler.stats)
    app.router.add_post("/stats/reset", handler.reset)
    app.router.add_get("/health", handler.health)
    app.router.add_route("*", "/{tail:.*}", handler.not_found)
    app.on_shutdown.append(handler.on_shutdown)
    return app


def app_state(app: web.Application) -> FakeOpenAIState:
    """The counters of an application made by :func:`create_app`."""
    return app[_STATE_KEY]


async def _start(app: web.Application, host: str, port: int, *, shutdown_timeout: float) -> tuple[web.AppRunner, int]:
    runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=shutdown_timeout)
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port, backlog=4096, reuse_address=True)
        await site.start()
        real_port = int(runner.addresses[0][1])  # the real port when port=0
    except BaseException:
        await runner.cleanup()
        raise
    return runner, real_port


class RunningFakeOpenAI:
    """A fake OpenAI API running on its own event loop in a daemon thread (see :func:`serve_in_thread`)."""

    def __init__(self, config: FakeOpenAIConfig | None = None, *, host: str = "127.0.0.1", port: int = 0) -> None:
        self.config = config or FakeOpenAIConfig()
        self.host = host
        self.port = port
        self.app = create_app(self.config)
        self.state = app_state(self.app)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._thread: threading.Thread | None = None

    @property
    def root_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def base_url(self) -> str:
        """What to give ``openai.AsyncOpenAI(base_url=...)``: ``http://HOST:PORT/v1``."""
        return f"{self.root_url}/v1"

    def start(self, timeout: float = 10.0) -> RunningFakeOpenAI:
        if self._thread is not None:
            raise RuntimeError("the fake OpenAI API was already started")
        self._thread = threading.Thread(target=self._run, name="model-server", daemon=True)
        self._thread.start()
        if not self._ready.wait(timeout):
            raise RuntimeError(f"the fake OpenAI API did not start within {timeout}s")
        if self._error is not None:
            self._thread.join()
            raise RuntimeError("the fake OpenAI API failed to start") from self._error
        return self

    def stop(self, timeout: float = 10.0) -> None:
        thread, loop, stop = self._thread, self._loop, self._stop
        if thread is None:
            return
        if loop is not None and stop is not None and thread.is_alive():
            with contextlib.suppress(RuntimeError):  # the loop already closed
                loop.call_soon_threadsafe(stop.set)
        thread.join(timeout)
        if thread.is_alive():
            raise RuntimeError(f"the fake OpenAI API thread did not stop within {timeout}s")
        self._thread = None

    def _call(self, fn: Callable[[], _T]) -> _T:
        """Run ``fn`` on the server's loop (so it sees consistent state) and return its result."""
        loop = self._loop
        if loop is None or not loop.is_running() or threading.current_thread() is self._thread:
            return fn()
        future: concurrent.futures.Future[_T] = concurrent.futures.Future()

        def call() -> None:
            try:
                future.set_result(fn())
            except BaseException as exc:  # pragma: no cover - fn does not raise
                future.set_exception(exc)

        try:
            loop.call_soon_threadsafe(call)
        except RuntimeError:  # the loop closed in between
            return fn()
        return future.result(timeout=10)

    def stats(self) -> dict[str, Any]:
        """The ``GET /stats`` counters, read directly."""
        return self._call(self.state.snapshot)

    def reset(self) -> None:
        """Same as ``POST /stats/reset``."""
        self._call(self.state.reset)

    def __enter__(self) -> RunningFakeOpenAI:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _run(self) -> None:
        try:
            asyncio.run(self._serve())
        except BaseException as exc:
            self._error = exc
        finally:
            self._ready.set()

    async def _serve(self) -> None:
        self._stop = asyncio.Event()
        runner, self.port = await _start(self.app, self.host, self.port, shutdown_timeout=2.0)
        self._loop = asyncio.get_running_loop()
        self._ready.set()
        try:
            await self._stop.wait()
        finally:
            self.app[_HANDLER_KEY].closing.set()
            await runner.cleanup()
            self._loop = None


@contextlib.contextmanager
def serve_in_thread(
    config: FakeOpenAIConfig | None = None, *, host: str = "127.0.0.1", port: int = 0
) -> Iterator[RunningFakeOpenAI]:
    """Run a fake OpenAI API in a daemon thread for the duration of the ``with`` block.

    >>> with serve_in_thread(FakeOpenAIConfig(rpm=60)) as server:  # doctest: +SKIP
    ...     client = openai.AsyncOpenAI(base_url=server.base_url, api_key="sk-local")
    """
    server = RunningFakeOpenAI(config, host=host, port=port).start()
    try:
        yield server
    finally:
        server.stop()


# -- CLI ---------------------------------------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m infra.fake_openai",
        description="A fast, OpenAI-compatible fake chat-completions server (echo answers, limits, faults).",
    )
    d = FakeOpenAIConfig()
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8089, help="0 picks a free port (printed on the ready line)")
    p.add_argument("--latency-ms", type=float, default=d.latency_ms)
    p.add_argument("--jitter-ms", type=float, default=d.jitter_ms, help="uniform +/- around --latency-ms")
    p.add_argument("--rpm", type=int, default=None, help="requests per minute (default: unlimited)")
    p.add_argument("--tpm", type=int, default=None, help="tokens per minute (default: unlimited)")
    p.add_argument(
        "--burst-s", type=float, default=d.burst_s, help="bucket capacity in seconds of the limit (60: a whole minute)"
    )
    p.add_argument("--fail-500-rate", type=float, default=d.fail_500_rate)
    p.add_argument("--fail-429-rate", type=float, default=d.fail_429_rate)
    p.add_argument("--hang-rate", type=float, default=d.hang_rate)
    p.add_argument("--hang-s", type=float, default=d.hang_s)
    p.add_argument("--malformed-rate", type=float, default=d.malformed_rate)
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--require-api-key", default=None, help="answer 401 unless 'Authorization: Bearer KEY'")
    p.add_argument("--default-max-tokens", type=int, default=d.default_max_tokens)
    p.add_argument("--fault-retry-after-ms", type=int, default=d.fault_retry_after_ms)
    return p


def config_from_args(args: argparse.Namespace) -> FakeOpenAIConfig:
    return FakeOpenAIConfig(
        latency_ms=args.latency_ms,
        jitter_ms=args.jitter_ms,
        rpm=args.rpm,
        tpm=args.tpm,
        burst_s=args.burst_s,
        fail_500_rate=args.fail_500_rate,
        fail_429_rate=args.fail_429_rate,
        hang_rate=args.hang_rate,
        hang_s=args.hang_s,
        malformed_rate=args.malformed_rate,
        seed=args.seed,
        require_api_key=args.require_api_key,
        default_max_tokens=args.default_max_tokens,
        fault_retry_after_ms=args.fault_retry_after_ms,
    )


async def _serve_forever(config: FakeOpenAIConfig, host: str, port: int) -> None:
    app = create_app(config)
    runner, real_port = await _start(app, host, port, shutdown_timeout=5.0)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):  # Windows
            loop.add_signal_handler(sig, stop.set)
    shown_host = f"[{host}]" if ":" in host else host
    print(f"fake OpenAI API listening on http://{shown_host}:{real_port}/v1", flush=True)
    try:
        await stop.wait()
    finally:
        app[_HANDLER_KEY].closing.set()
        await runner.cleanup()


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m infra.fake_openai [flags]``: serve until SIGINT/SIGTERM."""
    args = _parser().parse_args(argv)
    try:
        config = config_from_args(args)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    asyncio.run(_serve_forever(config, args.host, args.port))
    return 0


if __name__ == "__main__":
    sys.exit(main())
