"""The HTTP side of the fake OpenAI API: the aiohttp application, its counters, and a server in a thread.

Every API request goes the same way (:meth:`_Handler.api`): authentication, parsing and validation, the
per-prompt counters, rate limiting, the fault (marker or random), latency, then the body. The bodies
themselves are built in :mod:`infra.fake_openai.endpoints`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import random
import time
from collections.abc import Callable
from typing import Any, Final

from aiohttp import web

from infra.fake_openai.auth import KeyCheck
from infra.fake_openai.batches import BatchService
from infra.fake_openai.catalog import ENDPOINTS
from infra.fake_openai.config import FakeOpenAIConfig
from infra.fake_openai.endpoints import Endpoint
from infra.fake_openai.faults import FaultPicker
from infra.fake_openai.limits import RateLimiter, format_duration
from infra.fake_openai.misshapes import SHAPE_MARKERS, misshape
from infra.fake_openai.prompt_cache import PromptCache
from infra.fake_openai.state import FakeOpenAIState, prompt_hash
from infra.fake_openai.validation import SDK_MODELS, ApiError, loads

__all__ = ["FakeOpenAIState", "app_batch_stats", "app_closing", "app_key_check", "app_state", "create_app",
           "prompt_hash"]  # fmt: skip


_JSON_CT: Final = "application/json"
_MAX_BODY_BYTES: Final = 32 * 1024 * 1024
_MODELS_CREATED: Final = 1_686_935_002  # a fixed creation time for every listed model
_PROMPT_CACHED: Final = frozenset({"/chat/completions", "/responses"})  # the endpoints whose prompts are cached


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
# What the API answers a flex request when flex capacity is short: a 429 that is not a rate limit.
_FLEX_UNAVAILABLE: Final = (
    "service_unavailable_error",
    "resource_unavailable",
    "Resource Unavailable: flex processing capacity is temporarily exhausted. Please retry later, "
    "or send the request with the default service tier.",
)
_QUOTA_ERROR: Final = (
    "insufficient_quota",
    "insufficient_quota",
    "You exceeded your current quota, please check your plan and billing details. For more information on "
    "this error, read the docs: https://platform.openai.com/docs/guides/error-codes/api-errors.",
)


class _Handler:
    """The request handlers; one instance per application."""

    def __init__(self, config: FakeOpenAIConfig, state: FakeOpenAIState) -> None:
        self.config = config
        self.state = state
        self.closing = asyncio.Event()
        self.keys = KeyCheck(
            config.auth,
            {config.require_api_key} if config.require_api_key is not None else set(),
            access_key=config.bedrock_access_key,
            region=config.bedrock_region,
        )
        self.limiter = RateLimiter(config.rpm, config.tpm, config.burst_s, config.model_limits)
        self.faults = FaultPicker(config)
        self.flex_rng = random.Random(None if config.seed is None else config.seed + 2)
        self.batches = BatchService(config, self._api_error, self._key_refused, state.batch_prompts)
        self.prompt_cache = PromptCache(config.prompt_cache_models)
        state.reset_hooks += [self.limiter.reset, self.faults.reset, self.prompt_cache.clear, self.batches.reset]
        self.jitter_rng = random.Random(None if config.seed is None else config.seed + 1)
        self.id_rng = random.Random()
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
        error: tuple[str, str | None, str],
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

    def _api_error(self, error: ApiError, started: float) -> web.Response:
        return self._error(error.status, (error.type, error.code, error.message), started, param=error.param)

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

    # -- waiting --------------------------------------------------------------------------------------------

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

    def api(self, endpoint: Endpoint) -> Callable[[web.Request], Any]:
        """The aiohttp handler of one API endpoint."""

        async def handle(request: web.Request) -> web.Response:
            state = self.state
            state.requests += 1
            state.in_flight += 1
            state.max_in_flight = max(state.max_in_flight, state.in_flight)
            try:
                response = await self._answer(endpoint, request, time.monotonic())
            finally:
                state.in_flight -= 1
            state.status[response.status] = state.status.get(response.status, 0) + 1
            return response

        return handle

    def _key_refused(self, request: web.Request) -> web.Response | None:
        """The 401 for a request without the right key (None: it may go on)."""
        refusal = self.keys.check(request.headers)
        if refusal is None:
            return None
        return self._error(refusal.status, refusal.error, time.monotonic(), extra_headers=refusal.headers)

    async def _answer(self, endpoint: Endpoint, request: web.Request, started: float) -> web.Response:
        state = self.state
        refused = self._key_refused(request)
        if refused is not None:
            return refused
        body = loads(await request.read())
        ask = endpoint.parse(body) if not isinstance(body, ApiError) else body
        if isinstance(ask, ApiError):
            return self._api_error(ask, started)
        flex = ask.body.get("service_tier") == "flex"
        if flex and not ask.model.startswith(self.config.flex_models):
            message = f"The model `{ask.model}` does not support service_tier 'flex'."
            return self._api_error(ApiError(message, param="service_tier", code="invalid_value"), started)
        key = prompt_hash(ask.text)
        state.prompts[key] = state.prompts.get(key, 0) + 1
        state.models[ask.model] = state.models.get(ask.model, 0) + 1

        rate_headers: dict[str, str] | None = None
        if self.limiter.active:
            need = ask.input_tokens + (ask.max_output_tokens or self.config.default_max_tokens) * ask.outputs
            rate_headers, denied = self.limiter.admit(ask.model, need)
            if denied is not None:
                state.rate_limited += 1
                extra = None
                if denied.wait_s is not None:
                    wait_ms = max(1, math.ceil(denied.wait_s * 1000))
                    extra = {"retry-after": str(math.ceil(wait_ms / 1000)), "retry-after-ms": str(wait_ms)}
                error = (denied.kind, "rate_limit_exceeded", denied.message)
                return self._error(429, error, started, rate_headers, extra_headers=extra)

        fault, name = self.faults.pick(ask.text)
        if fault is not None:
            state.injected[name] = state.injected.get(name, 0) + 1
        if self.config.latency_ms or self.config.jitter_ms:
            await self._delay()
        if fault is not None:
            if fault.kind == "status":
                return self._status_fault(fault.status, started, rate_headers, ask.model)
            if fault.kind == "quota":
                return self._error(429, _QUOTA_ERROR, started, rate_headers)
        if flex and (
            (fault is not None and fault.kind == "flex_unavailable")
            or (self.config.flex_unavailable_rate and self.flex_rng.random() < self.config.flex_unavailable_rate)
        ):
            state.flex_unavailable += 1
            return self._error(429, _FLEX_UNAVAILABLE, started, rate_headers)
        if fault is not None and fault.kind == "hang":
            await self._hang()
        if endpoint.path in _PROMPT_CACHED:
            ask.cached_tokens, ask.cache_write_tokens = self.prompt_cache.use(ask.model, ask.body, ask.input_tokens)
        answer = endpoint.render(ask, self.id_rng, fault.output if fault is not None else "")
        raw = answer.body
        if fault is not None and fault.output in SHAPE_MARKERS:
            raw = misshape(raw, fault.output)
        if fault is not None and fault.kind == "malformed":
            raw = raw[: len(raw) // 2]
        else:
            state.ok += 1
            state.prompt_tokens += answer.input_tokens
            state.completion_tokens += answer.output_tokens
            state.prompts_ok[key] = state.prompts_ok.get(key, 0) + 1
            tier = "flex" if flex else "default"
            state.service_tiers[tier] = state.service_tiers.get(tier, 0) + 1
        return web.Response(body=raw, headers=self._headers(started, rate_headers))

    @staticmethod
    def _model(name: str) -> dict[str, Any]:
        return {"id": name, "object": "model", "created": _MODELS_CREATED, "owned_by": "system"}

    async def models(self, request: web.Request) -> web.Response:
        """Every model the SDK names, and those given limits of their own (any other name is served too)."""
        names = sorted({*SDK_MODELS, *self.config.model_limits})
        return web.json_response({"object": "list", "data": [self._model(name) for name in names]})

    async def model(self, request: web.Request) -> web.Response:
        return web.json_response(self._model(request.match_info["model"]))

    async def stats(self, request: web.Request) -> web.Response:
        snapshot = {**self.state.snapshot(), "batch_api": self.batches.stats(), "auth": self.keys.stats()}
        return web.json_response(snapshot)

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
    handler.batches.register(app)  # before the catch-all below
    for endpoint in ENDPOINTS:
        handle = handler.api(endpoint)
        app.router.add_post(f"/v1{endpoint.path}", handle)
        app.router.add_post(endpoint.path, handle)
    app.router.add_get("/v1/models", handler.models)
    app.router.add_get("/v1/models/{model}", handler.model)
    app.router.add_get("/stats", handler.stats)
    app.router.add_post("/stats/reset", handler.reset)
    app.router.add_get("/health", handler.health)
    app.router.add_route("*", "/{tail:.*}", handler.not_found)
    app.on_shutdown.append(handler.on_shutdown)
    return app


def app_state(app: web.Application) -> FakeOpenAIState:
    """The counters of an application made by :func:`create_app`."""
    return app[_STATE_KEY]


def app_batch_stats(app: web.Application) -> dict[str, Any]:
    """The Batch API's counters (files, batches by status) of an application made by :func:`create_app`."""
    return app[_HANDLER_KEY].batches.stats()


def app_key_check(app: web.Application) -> KeyCheck:
    """Who the application lets in (keys can be rotated while it runs: :meth:`KeyCheck.accept`)."""
    return app[_HANDLER_KEY].keys


def app_closing(app: web.Application) -> asyncio.Event:
    """Set it to release hanging requests before the application's runner is cleaned up."""
    return app[_HANDLER_KEY].closing
