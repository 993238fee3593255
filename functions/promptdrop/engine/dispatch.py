"""The dispatch core: a fixed pool of workers fed from a bounded queue.

Memory is bounded by the concurrency, not by the file: the producer pulls the next request from
the (streamed) input only when a queue slot is free, and each of the ``max_concurrency`` workers
holds one request at a time — through its retries too. No task per prompt.

Retries: transient failures back off exponentially with full jitter, never sooner than the
server's ``retry-after``; a 429 also pauses the shared limiter, so every worker waits, not one.
Permanent failures end the request at once; fatal ones (bad key, no quota) stop the whole run.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections.abc import AsyncIterable, Awaitable, Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import openai

from .client import Reply
from .errors import Disposition, ErrorInfo, MalformedResponse, RequestTooLarge, classify
from .limiter import RateLimiter
from .request import Request

__all__ = ["DispatchReport", "Dispatcher", "Outcome", "Sender", "StopReason"]

Sender = Callable[[bytes], Awaitable[Reply]]
OnOutcome = Callable[["Outcome"], Awaitable[None]]


@dataclass(slots=True)
class Outcome:
    """The final word on one request: a parsed chat completion, or an error."""

    request: Request
    attempts: int
    latency_ms: int
    status_code: int | None = None
    request_id: str | None = None
    response: dict[str, Any] | None = None
    error: ErrorInfo | None = None


class StopReason(StrEnum):
    """Why a run ended before its input did."""

    FATAL = "fatal"  # an error every request would share (bad key, no quota)
    DEADLINE = "deadline"  # ``should_stop()`` said so: the invocation's time is nearly up


@dataclass(slots=True)
class DispatchReport:
    dispatched: int = 0
    retries: int = 0
    rate_limited: int = 0  # 429 rate-limit answers received
    stopped: StopReason | None = None
    fatal: ErrorInfo | None = None
    not_started: int = 0  # requests taken from the input but never sent (fatal stop)
    last_line: int = 0  # the last input line handed to a worker
    resume: Request | None = None  # on a deadline stop: the first request not dispatched
    latency_total_ms: int = 0  # of successful calls (running totals: memory stays flat)
    latency_max_ms: int = 0


class Dispatcher:
    """Runs requests through ``send`` with bounded concurrency, rate limits and retries."""

    def __init__(
        self,
        send: Sender,
        *,
        limiter: RateLimiter,
        max_concurrency: int,
        max_attempts: int,
        backoff_base_s: float = 0.5,
        backoff_cap_s: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        rng: random.Random | None = None,
    ) -> None:
        self._send = send
        self._limiter = limiter
        self._concurrency = max_concurrency
        self._max_attempts = max_attempts
        self._backoff_base = backoff_base_s
        self._backoff_cap = backoff_cap_s
        self._clock = clock
        self._sleep = sleep
        self._rng = rng or random.Random()

    def backoff_s(self, attempt: int, retry_after: float | None) -> float:
        """Full-jitter exponential backoff after ``attempt`` (1-based), never below ``retry_after``."""
        ceiling = min(self._backoff_cap, self._backoff_base * 2 ** (attempt - 1))
        delay = self._rng.uniform(0, ceiling)
        return max(delay, retry_after) if retry_after is not None else delay

    async def run(
        self,
        requests: AsyncIterable[Request],
        on_outcome: OnOutcome,
        *,
        should_stop: Callable[[], bool] = lambda: False,
    ) -> DispatchReport:
        """Dispatch every request (until ``should_stop()`` or a fatal error); outcomes go to ``on_outcome``.

        A worker awaits ``on_outcome`` before it takes its next request, so a caller that returns
        only once the outcome is durable bounds what a crash can lose to ``max_concurrency``.
        """
        report = DispatchReport()
        queue: asyncio.Queue[Request | None] = asyncio.Queue(maxsize=self._concurrency)
        source_error: Exception | None = None
        try:
            # Structured: a worker that fails (its outcome could not be recorded) cancels the producer
            # and every other worker at once, and the failure surfaces here — never a producer
            # blocked forever on a queue no worker drains.
            async with asyncio.TaskGroup() as workers:
                for _ in range(self._concurrency):
                    workers.create_task(self._worker(queue, on_outcome, report))
                try:
                    await self._feed(requests, queue, report, should_stop)
                except Exception as exc:
                    # The input failed (e.g. the object changed mid-read): send nothing more, but let
                    # the calls in flight finish and be recorded — they are paid for.
                    source_error = exc
                for _ in range(self._concurrency):
                    await queue.put(None)
        except BaseExceptionGroup as group:
            first = group.exceptions[0]
            raise first from (group if len(group.exceptions) > 1 else None)
        if source_error is not None:
            raise source_error
        if report.fatal is not None:
            report.stopped = StopReason.FATAL
        return report

    async def _feed(
        self,
        requests: AsyncIterable[Request],
        queue: asyncio.Queue[Request | None],
        report: DispatchReport,
        should_stop: Callable[[], bool],
    ) -> None:
        async for request in requests:
            if report.fatal is not None:
                report.stopped = StopReason.FATAL
                return
            if should_stop():
                report.stopped, report.resume = StopReason.DEADLINE, request
                return
            await queue.put(request)
            report.last_line = request.line

    async def _worker(
        self, queue: asyncio.Queue[Request | None], on_outcome: OnOutcome, report: DispatchReport
    ) -> None:
        while (request := await queue.get()) is not None:
            if report.fatal is not None:
                report.not_started += 1
                continue
            report.dispatched += 1
            await on_outcome(await self._call(request, report))

    async def _call(self, request: Request, report: DispatchReport) -> Outcome:
        limiter = self._limiter
        attempt = 0
        while True:
            attempt += 1
            started = self._clock()
            try:
                await limiter.acquire(request.cost)
                started = self._clock()
                reply = await self._send(request.body)
                data = _parse_completion(reply)
            except (openai.APIError, MalformedResponse, RequestTooLarge) as exc:
                info = classify(exc)
            else:
                latency = int((self._clock() - started) * 1000)
                limiter.observe(reply.headers)
                usage = data.get("usage")
                if isinstance(usage, dict):
                    limiter.settle(request.cost, int(usage.get("total_tokens") or 0))
                report.latency_total_ms += latency
                report.latency_max_ms = max(report.latency_max_ms, latency)
                return Outcome(request, attempt, latency, reply.status_code, reply.headers.get("x-request-id"), data)
            latency = int((self._clock() - started) * 1000)
            if info.rate_limited:
                report.rate_limited += 1
                limiter.refund(request.cost)
                limiter.pause(info.retry_after if info.retry_after is not None else self.backoff_s(attempt, None))
            if info.disposition is Disposition.FATAL and report.fatal is None:
                report.fatal = info
            if info.disposition is not Disposition.TRANSIENT or attempt >= self._max_attempts:
                return Outcome(request, attempt, latency, info.status_code, info.request_id, error=info)
            report.retries += 1
            await self._sleep(self.backoff_s(attempt, info.retry_after))


def _parse_completion(reply: Reply) -> dict[str, Any]:
    try:
        data = json.loads(reply.content)
    except ValueError as exc:
        raise MalformedResponse(f"the answer is not JSON: {exc}", reply.status_code) from None
    if not isinstance(data, dict) or not isinstance(data.get("choices"), list):
        raise MalformedResponse("the answer is not a chat completion (no choices)", reply.status_code)
    return data
