"""What a warm container keeps between invocations: one event loop, its AWS clients, its API clients
(one per route: ``providers.py``).

The outer handler stays synchronous (Lambda calls it so) and runs everything on one loop that lives
as long as the container: aiohttp sessions, aiobotocore clients and the limiter are bound to the
loop that created them, so reusing the loop is what lets them — and their warm connections —
survive from one invocation to the next. Built on first use, never at import.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Coroutine
from contextlib import AsyncExitStack
from typing import Any, TypeVar

import aioboto3
from aiobotocore.config import AioConfig
from aiobotocore.session import get_session

from .adapters.answer_cache import DynamoAnswerCache
from .adapters.bus import EventPublisher
from .adapters.journal import Journal
from .adapters.queues import MessageSender
from .adapters.s3 import ObjectStore
from .adapters.shared_limits import DynamoSharedLimits
from .adapters.wire import WireParserFactory, serialize_plain_items_as_they_are
from .engine.answers import AnswerCheck, TextPolicy
from .engine.batch_api import OpenAIBatches
from .engine.dispatch import Dispatcher
from .engine.flex import FlexFallback, FlexPolicy
from .engine.model_limiters import ModelLimiters
from .jobs import JobRunner
from .prices import has_flex, use_sources
from .providers import Providers
from .routes import RouteTable
from .settings import Settings
from .tracing import trace_aws_calls, traced_sender

__all__ = ["Runtime", "get_runtime", "run", "shutdown"]

T = TypeVar("T")

# botocore's "standard" retries, for every AWS call: throttling (SQS's RequestThrottled included,
# which the default "legacy" mode does not retry) and 5xx are retried with jittered backoff, up to
# 10 attempts; a retry quota stops a long outage from being retried forever — the run then fails and
# its message comes back. Past that, promptdrop's own rule: hand the message back, lose nothing.
# Parameter validation off: every request is built by this package's own typed code, and checking
# each BatchWriteItem's 25 items against the service model costs ~8% of the handler's CPU per answer.
_AWS_RETRIES = AioConfig(retries={"mode": "standard", "max_attempts": 10}, parameter_validation=False)


class Runtime:
    """The loop-bound dependencies of one container, for one configuration."""

    def __init__(self, settings: Settings, stack: AsyncExitStack, runner: JobRunner, providers: Providers) -> None:
        self.settings = settings
        self.runner = runner
        self.providers = providers
        self._stack = stack

    def key_rejected(self) -> None:
        """An API answered 401: read the keys again before the next run (one may have been fixed)."""
        self.providers.key_rejected()

    async def refresh_key(self) -> None:
        """Re-read the routes' keys when due (``Providers.refresh``)."""
        await self.providers.refresh()

    @classmethod
    async def create(cls, settings: Settings) -> Runtime:
        stack = AsyncExitStack()
        botocore_session = get_session()
        botocore_session.register_component("response_parser_factory", WireParserFactory())
        session = aioboto3.Session(botocore_session=botocore_session)
        s3 = await stack.enter_async_context(session.client("s3", config=_AWS_RETRIES))
        ddb = await stack.enter_async_context(session.client("dynamodb", config=_AWS_RETRIES))
        serialize_plain_items_as_they_are(ddb)  # the journal's items are DynamoDB JSON already
        sqs = await stack.enter_async_context(session.client("sqs", config=_AWS_RETRIES))
        publisher = None
        if settings.event_bus:
            events = await stack.enter_async_context(session.client("events", config=_AWS_RETRIES))
            publisher = EventPublisher(events, settings.event_bus)
            trace_aws_calls(events)
        for aws in (s3, ddb, sqs):
            trace_aws_calls(aws)  # a span per call when tracing is on (tracing.py); nothing otherwise
        table = RouteTable(settings.routes)
        providers = await Providers.open(table, settings, session, _AWS_RETRIES)
        stack.push_async_callback(providers.aclose)
        use_sources(providers.price_source if table.configured else None)  # whose prices each model has
        # One limiter per model per container: what it learned of the account's limits outlives a job.
        shared = DynamoSharedLimits(ddb, settings.table) if settings.share_limits else None
        single = providers.single
        if single is not None:  # today's one route: nothing asked per model but the limiter
            limiter = ModelLimiters(rpm=settings.rpm, tpm=settings.tpm, shared=shared)
        else:
            limiter = ModelLimiters(shared=shared, limits_of=providers.limits_of, key_of=table.limit_key)
        answers = AnswerCheck(TextPolicy(settings.text_policy))

        # A span per API call when tracing is on (tracing.py): the default route's sender.
        send = traced_sender(single.send, str(single.client.base_url)) if single is not None else None

        def dispatcher() -> Dispatcher:
            return Dispatcher(
                send,
                senders=None if single is not None else providers.sender_of,
                limiter=limiter,
                max_concurrency=settings.max_concurrency,
                max_attempts=settings.max_attempts,
                output_attempts=settings.output_attempts,
                answers=answers,
                flex=FlexPolicy(
                    settings.flex_attempts,
                    FlexFallback(settings.flex_fallback),
                    timeout_s=settings.flex_timeout_s,
                    extra_s=max(0.0, settings.flex_timeout_s - settings.request_timeout_s),
                ),
                rng=random.Random(),
                secrets=providers.secrets(),  # read per run: a key re-read from its secret is masked too
            )

        runner = JobRunner(
            settings=settings,
            store=ObjectStore(s3),
            journal=Journal(ddb, settings.table, request_ttl_days=settings.request_ttl_days),
            messages=MessageSender(sqs),
            dispatcher_factory=dispatcher,
            publisher=publisher,
            cache=DynamoAnswerCache(ddb, settings.table, ttl_days=settings.cache_ttl_days),
            route=providers.cache_route,
            flex_of=providers.offers_flex if table.configured else has_flex,
            batches=OpenAIBatches(providers.batch_client),
            secrets=providers.secrets,
        )
        return cls(settings, stack, runner, providers)

    async def aclose(self) -> None:
        await self._stack.aclose()
        use_sources(None)  # a routing table's prices go with its runtime (a process that builds another)


_loop: asyncio.AbstractEventLoop | None = None
_runtime: Runtime | None = None


def _get_loop() -> asyncio.AbstractEventLoop:
    global _loop
    if _loop is None or _loop.is_closed():
        _loop = asyncio.new_event_loop()
    return _loop


async def get_runtime(settings: Settings) -> Runtime:
    """The container's runtime; rebuilt only when the configuration changed (tests, local runs)."""
    global _runtime
    if _runtime is not None and _runtime.settings != settings:
        await _runtime.aclose()
        _runtime = None
    if _runtime is None:
        _runtime = await Runtime.create(settings)
    return _runtime


def run(coro: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine on the container's loop."""
    return _get_loop().run_until_complete(coro)


def shutdown() -> None:
    """Close the runtime and its loop (local runs and tests; Lambda just freezes the container)."""
    global _runtime, _loop
    if _loop is None:
        return
    if _runtime is not None:
        _loop.run_until_complete(_runtime.aclose())
        _runtime = None
    _loop.run_until_complete(_loop.shutdown_asyncgens())
    _loop.close()
    _loop = None
