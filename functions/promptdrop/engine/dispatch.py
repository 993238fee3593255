"""The dispatch core: a fixed pool of workers fed from a bounded queue.

Memory is bounded by the concurrency, not by the file: the producer pulls the next request from the
(streamed) input only when a queue slot is free, and each of the ``max_concurrency`` workers holds
one request at a time — through its retries too. No task per prompt.

Retries: transient failures back off exponentially with full jitter, never sooner than the
server's ``retry-after``, up to ``max_attempts`` tries. Permanent failures end the request at once;
fatal ones (bad key, no quota) stop the whole run. An answer the request cannot use (structured
output that is not JSON or not its schema, cut off, refused: ``answers.py``) is asked again at
once, up to ``output_attempts`` answers, then fails with the last answer kept. Every answer is paid
for: the outcome carries the tokens of the unusable ones (``discarded_tokens``).

A 429 for rate (not quota) is a signal, not a failure: it pauses and slows the request's model limiter
(``rate_limiter.py``) and the request is sent again once admitted, without spending one of its attempts —
it fails for rate limiting only when its run runs out of time. When ``should_stop()`` says the run
must end (its deadline nears) while a request waits for admission or has just been answered 429,
the request is *handed back*: it gets no outcome, the run reports ``stopped = "deadline"`` with
``resume`` at the earliest request handed back, and the continuation sends it again (answered
requests after it are skipped by the journal). A run given no ``should_stop`` (a redrive) has
nothing to hand back to: there a request still rate limited after ``rate_limit_patience_s`` fails
with the code ``rate_limited_until_deadline``.

A flex request (``flex.py``) refused for want of flex capacity backs off alone — no pause, no
slower rate, nothing told to the fleet — and goes at the standard tier after ``FlexPolicy.attempts``
refusals, or at the first refusal once another flex call could outlive the invocation. A flex call
has its own timeout (``FlexPolicy.timeout_s``: OpenAI advises up to 15 minutes); one that could
outlive the time left is not started: the run stops there, as at its deadline, and the continuation
sends it (``should_stop(within_s)``).
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import AsyncIterable, Awaitable, Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any

import openai

from . import errors, flex
from .answers import AnswerCheck, parse_answer, usage_of
from .client import Reply, Sender
from .errors import Disposition, ErrorInfo, MalformedResponse, RequestTooLarge, SendRefused, UnusableAnswer, classify
from .flex import FlexFallback, FlexPolicy, FlexRefused, as_standard
from .membership import Membership
from .model_limiters import ModelLimiters
from .outcome import DispatchReport, Outcome, ShouldStop, StopReason, answer_outcome
from .rate_limiter import RateLimiter
from .request import Request

__all__ = ["DispatchReport", "Dispatcher", "Outcome", "Sender", "ShouldStop", "StopReason"]

OnOutcome = Callable[["Outcome"], Awaitable[object]]  # what it returns is not used


class Dispatcher:
    """Runs requests through ``send`` (or the sender of each request's model: ``senders``) with bounded
    concurrency, rate limits and retries."""

    def __init__(
        self,
        send: Sender | None,
        *,
        limiter: RateLimiter | ModelLimiters,
        max_concurrency: int,
        max_attempts: int,
        output_attempts: int = 3,
        answers: AnswerCheck | None = None,
        backoff_base_s: float = 0.5,
        backoff_cap_s: float = 30.0,
        rate_limit_patience_s: float = 600.0,
        flex: FlexPolicy | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        rng: random.Random | None = None,
        secrets: tuple[str, ...] = (),
        senders: Callable[[str], Sender] | None = None,
    ) -> None:
        if send is None and senders is None:
            raise ValueError("a Dispatcher needs a sender: send, or senders (one per model)")
        self._send = send
        self._senders = senders  # per model (its route's client), when models go to different APIs
        self._secrets = secrets  # the API key(s) sent: masked in whatever the API answers back
        self._limiters = limiter if isinstance(limiter, ModelLimiters) else ModelLimiters.single(limiter)
        self._patience_s = rate_limit_patience_s
        self._flex = flex or FlexPolicy()
        self._concurrency = max_concurrency
        self._max_attempts = max_attempts
        self._output_attempts = output_attempts
        self._answers = answers or AnswerCheck()
        self._backoff_base = backoff_base_s
        self._backoff_cap = backoff_cap_s
        self._clock, self._sleep = clock, sleep
        self._rng = rng or random.Random()
        self._admitting = 0  # workers waiting for admission (rate limits, slow start)

    def rate_bound(self) -> bool:
        """A worker waits for admission: the rate limit, not the concurrency, sets the pace now."""
        return self._admitting > 0

    def backoff_s(self, attempt: int, retry_after: float | None) -> float:
        """Full-jitter exponential backoff after ``attempt`` (1-based), never below ``retry_after``."""
        delay = self._rng.uniform(0, min(self._backoff_cap, self._backoff_base * 2 ** (attempt - 1)))
        return max(delay, retry_after) if retry_after is not None else delay

    async def run(
        self,
        requests: AsyncIterable[Request],
        on_outcome: OnOutcome,
        *,
        should_stop: ShouldStop | None = None,
    ) -> DispatchReport:
        """Dispatch every request (until ``should_stop()`` or a fatal error); outcomes go to ``on_outcome``.

        A worker awaits ``on_outcome`` before it takes its next request, so a caller that returns
        only once the outcome is durable bounds what a crash can lose to ``max_concurrency``.
        """
        queue: asyncio.Queue[Request | None] = asyncio.Queue(maxsize=self._concurrency)
        source_error: Exception | None = None
        async with self._limiters.membership() as membership:
            run = _Run(DispatchReport(), on_outcome, membership, should_stop)
            try:
                # Structured: a worker that fails (its outcome could not be recorded) cancels the producer
                # and every other worker at once, and the failure surfaces here — never a producer
                # blocked forever on a queue no worker drains.
                async with asyncio.TaskGroup() as workers:
                    for _ in range(self._concurrency):
                        workers.create_task(self._worker(run, queue))
                    try:
                        await self._feed(requests, queue, run)
                    except Exception as exc:  # the input failed (e.g. the object changed mid-read)
                        source_error = exc
                    for _ in range(self._concurrency):
                        await queue.put(None)
            except BaseExceptionGroup as group:
                raise group.exceptions[0] from (group if len(group.exceptions) > 1 else None)
        if source_error is not None:
            raise source_error
        report = run.report
        if run.earliest_handed_back is not None:
            if report.fatal is not None:
                report.not_started += report.handed_back
            else:
                report.stopped = StopReason.DEADLINE
                if report.resume is None or run.earliest_handed_back.line < report.resume.line:
                    report.resume = run.earliest_handed_back
        if report.fatal is not None:
            report.stopped = StopReason.FATAL
        return report

    async def _feed(self, requests: AsyncIterable[Request], queue: asyncio.Queue[Request | None], run: _Run) -> None:
        report = run.report
        async for request in requests:
            if report.fatal is not None:
                report.stopped = StopReason.FATAL
                return
            # A flex call may take longer than a standard one: it is not started unless it can end in time.
            if run.should_stop is not None and run.should_stop(self._flex.extra_s if request.flex else 0.0):
                report.stopped, report.resume = StopReason.DEADLINE, request
                return
            await queue.put(request)
            report.last_line = request.line

    async def _worker(self, run: _Run, queue: asyncio.Queue[Request | None]) -> None:
        report = run.report
        while (request := await queue.get()) is not None:
            if report.fatal is not None:
                report.not_started += 1
                continue
            outcome = await self._call(run, request)
            if outcome is None:
                run.hand_back(request)
                continue
            report.dispatched += 1
            if outcome.request.flex:  # the outputs and dead letters carry the line as it was written
                outcome.request = as_standard(outcome.request)
            await run.on_outcome(outcome)

    async def _call(self, run: _Run, request: Request) -> Outcome | None:
        """The request's outcome, or None when it is handed back at the deadline (see the module doc).

        A flex request refused flex is tried again here, alone, or at the standard tier (``flex.py``)."""
        refusals, calls = 0, 0  # flex refusals; the calls they took, counted in the outcome's attempts
        while True:
            try:
                outcome = await self._call_at_tier(run, request)
            except FlexRefused as refused:
                refusals, calls = refusals + 1, calls + refused.calls
                following = await self._after_flex_refusal(run, refused, request, refusals)
                if following is None:
                    error = flex.unavailable(refused.info, refusals)
                    return Outcome(request, calls, refused.latency_ms, error.status_code, error.request_id, error=error)
                request = following
                continue
            if outcome is not None:
                outcome.attempts += calls
                outcome.flex_refused = refusals
            return outcome

    async def _call_at_tier(self, run: _Run, request: Request) -> Outcome | None:
        """One request at its tier: admitted, sent, retried, until its outcome (None: handed back)."""
        limiter = await run.membership.limiter_for(request)
        report, stop = run.report, run.should_stop
        attempt = 0  # tries that count against max_attempts
        unusable = 0  # answers the request could not use (bad structured output…): against output_attempts
        limited, limited_since = 0, None  # 429s for rate, which count against neither; since when
        discarded = (0, 0)  # usage of the unusable answers: billed all the same
        while True:
            started = self._clock()
            try:
                if not await self._admit(limiter, request, stop):
                    return None
                try:
                    started = self._clock()
                    reply = await self._post(request)
                finally:
                    limiter.release()
                data = parse_answer(request.endpoint, reply.content, reply.status_code)
            except (openai.APIError, MalformedResponse, RequestTooLarge, SendRefused) as exc:
                info = classify(exc, secrets=self._secrets)
                headers = exc.response.headers if isinstance(exc, openai.APIStatusError) else None
            else:
                problem, unused = _unusable(self._answers, request, reply, data, limiter)
                discarded = (discarded[0] + unused[0], discarded[1] + unused[1])
                if problem is None or (unusable := unusable + 1) >= self._output_attempts:
                    latency = int((self._clock() - started) * 1000)
                    figures = (attempt + unusable + (problem is None), latency, limited, discarded)
                    return answer_outcome(request, reply, data, problem, figures, report)
                report.retries += 1
                continue  # asked again at once: the answer, not the transport, was at fault
            latency = int((self._clock() - started) * 1000)
            if request.flex and flex.refused(info):
                raise FlexRefused(info, limiter, attempt + unusable + limited + 1, latency)
            if info.rate_limited:
                limited += 1
                self._slow_down(report, limiter, request, info, headers, limited)
                if stop is not None:
                    if stop():
                        return None  # handed back: the continuation sends it again
                else:
                    limited_since = started if limited_since is None else limited_since
                    if self._clock() - limited_since >= self._patience_s:
                        error = errors.rate_limited_too_long(info, limited, self._patience_s)
                        return Outcome(request, attempt + limited, latency, 429, info.request_id, error=error)
                report.retries += 1
                continue  # back to admission: it waits out the pause at the slower rate
            attempt += 1
            if info.disposition is Disposition.FATAL and report.fatal is None:
                report.fatal = info
            if info.disposition is not Disposition.TRANSIENT or attempt >= self._max_attempts:
                return Outcome(
                    request,
                    attempt + unusable,
                    latency,
                    info.status_code,
                    info.request_id,
                    error=info,
                    rate_limited=limited,
                )
            if stop is not None and stop():
                # No time left for another try and its backoff: the continuation sends it again, so
                # a call outlives the stop by one request timeout at most (PROMPTDROP_DEADLINE_MARGIN_S).
                return None
            report.retries += 1
            await self._sleep(self.backoff_s(attempt, info.retry_after))

    async def _after_flex_refusal(
        self, run: _Run, refused: FlexRefused, request: Request, refusals: int
    ) -> Request | None:
        """What to send after flex refused ``request``: itself again after a backoff of its own (the
        rate is not at fault: nobody else waits), the request at the standard tier, or None: it fails."""
        report, info = run.report, refused.info
        report.flex_refused += 1
        if info.status_code == 429:
            refused.limiter.refund(request.cost)  # refused, not served: the reservation goes back
        if refusals < self._flex.attempts and (run.should_stop is None or not run.should_stop(self._flex.extra_s)):
            report.retries += 1
            await self._sleep(self.backoff_s(refusals, info.retry_after))
            return request
        if self._flex.fallback is FlexFallback.FAIL:
            return None
        report.flex_fallbacks += 1
        return as_standard(request)  # sent at once

    def _post(self, request: Request) -> Awaitable[Reply]:
        """The call itself, through its model's route: a flex one with its own timeout, when it has one."""
        send = self._senders(request.model_name()) if self._senders is not None else self._send
        assert send is not None  # __init__: one or the other
        if request.flex and self._flex.timeout_s is not None:
            return send(request.endpoint.path, request.body, self._flex.timeout_s)
        return send(request.endpoint.path, request.body)

    async def _admit(self, limiter: RateLimiter, request: Request, stop: ShouldStop | None) -> bool:
        self._admitting += 1  # counted while it waits: see rate_bound
        try:
            return await limiter.acquire(request.cost, stop=stop)
        finally:
            self._admitting -= 1

    def _slow_down(
        self,
        report: DispatchReport,
        limiter: RateLimiter,
        request: Request,
        info: ErrorInfo,
        headers: Mapping[str, str] | None,
        times: int,
    ) -> None:
        """A 429 for rate: give the reservation back, pause everyone and slow down (rate_limiter.py)."""
        report.rate_limited += 1
        model = request.model_name()
        report.rate_limited_by_model[model] = report.rate_limited_by_model.get(model, 0) + 1
        limiter.refund(request.cost)
        limiter.rate_limited(info.retry_after if info.retry_after is not None else self.backoff_s(times, None), headers)


@dataclass(slots=True)
class _Run:
    """What the producer and the workers of one ``Dispatcher.run`` share."""

    report: DispatchReport
    on_outcome: OnOutcome
    membership: Membership
    should_stop: ShouldStop | None
    earliest_handed_back: Request | None = None

    def hand_back(self, request: Request) -> None:
        self.report.handed_back += 1
        if self.earliest_handed_back is None or request.line < self.earliest_handed_back.line:
            self.earliest_handed_back = request


def _unusable(
    answers: AnswerCheck, request: Request, reply: Reply, data: dict[str, Any], limiter: RateLimiter
) -> tuple[ErrorInfo | None, tuple[int, int]]:
    """Why the request cannot use this answer (None: it can), and the tokens it paid for nothing ((0, 0)
    when usable). Usable or not, the answer was paid for: its headers and usage go to the limiter."""
    limiter.observe(reply.headers)
    usage = usage_of(data)
    if isinstance(data.get("usage"), dict):
        limiter.settle(request.cost, sum(usage))
    try:
        answers.check(request, data)
    except UnusableAnswer as exc:
        return replace(classify(exc), request_id=reply.headers.get("x-request-id")), usage
    return None, (0, 0)
