"""A 429 is a signal, not a failure: attempts kept, the deadline respected, the wait read from the headers."""

from __future__ import annotations

import functools
import random
from collections.abc import AsyncIterator

import pytest
from promptdrop.engine.client import Reply
from promptdrop.engine.dispatch import Dispatcher, DispatchReport, Outcome
from promptdrop.engine.errors import RATE_LIMITED_UNTIL_DEADLINE, Disposition, classify, rate_limit_wait_s
from promptdrop.engine.rate_limiter import RateLimiter
from promptdrop.engine.request import Request

from tests.fakes import FakeClock
from tests.unit.test_errors_and_retries import ScriptedSender, completion, status_error


@functools.cache
def rate_limit(retry_after_ms: int = 50) -> Exception:
    """One 429 for rate per wait, raised again and again (building one costs a client)."""
    return status_error(429, code="rate_limit_exceeded", headers={"retry-after-ms": str(retry_after_ms)})


def make_dispatcher(sender: object, clock: FakeClock, *, concurrency: int = 1, max_attempts: int = 3) -> Dispatcher:
    return Dispatcher(
        sender,  # type: ignore[arg-type]
        limiter=RateLimiter(clock=clock, sleep=clock.sleep),
        max_concurrency=concurrency,
        max_attempts=max_attempts,
        clock=clock,
        sleep=clock.sleep,
        rng=random.Random(3),
        rate_limit_patience_s=60.0,
    )


async def lines(*numbers: int) -> AsyncIterator[Request]:
    for n in numbers:
        yield Request(n, f"r{n}", f'{{"n":{n}}}'.encode(), 1, offset=100 * n)


async def run(dispatcher: Dispatcher, *numbers: int, **kwargs: object) -> tuple[list[Outcome], DispatchReport]:
    outcomes: list[Outcome] = []

    async def collect(outcome: Outcome) -> None:
        outcomes.append(outcome)

    report = await dispatcher.run(lines(*numbers), collect, **kwargs)  # type: ignore[arg-type]
    return outcomes, report


@pytest.mark.parametrize(
    ("headers", "seconds"),
    [
        ({"retry-after-ms": "250", "x-ratelimit-reset-requests": "9s"}, 0.25),
        ({"x-ratelimit-remaining-requests": "0", "x-ratelimit-reset-requests": "1.5s"}, 1.5),
        (
            {
                "x-ratelimit-remaining-requests": "0",
                "x-ratelimit-reset-requests": "3s",
                "x-ratelimit-remaining-tokens": "0",
                "x-ratelimit-reset-tokens": "800ms",
            },
            0.8,
        ),
        ({"x-ratelimit-remaining-tokens": "0", "x-ratelimit-reset-tokens": "6m0s"}, 120.0),
        ({"x-ratelimit-remaining-requests": "5", "x-ratelimit-reset-requests": "3s"}, None),
    ],
)
def test_a_rate_limit_429_waits_its_retry_after_else_the_reset_of_what_ran_out(
    headers: dict[str, str], seconds: float | None
) -> None:
    assert rate_limit_wait_s(headers) == seconds


def test_a_429_for_quota_stays_fatal_and_is_no_rate_signal() -> None:
    info = classify(status_error(429, code="insufficient_quota"))
    assert info.disposition is Disposition.FATAL
    assert not info.rate_limited


async def test_429s_do_not_use_up_a_requests_attempts() -> None:
    # Given three attempts, and a request answered 429 ten times before it gets through
    clock = FakeClock()
    sender = ScriptedSender(*[rate_limit() for _ in range(10)])
    # When it runs
    (outcome,), report = await run(make_dispatcher(sender, clock, max_attempts=3), 1)
    # Then it is answered: the 429s slowed it down, they did not fail it
    assert outcome.error is None
    assert (outcome.attempts, outcome.rate_limited) == (1, 10)
    assert report.rate_limited == 10


async def test_other_failures_still_count_against_the_attempts_between_429s() -> None:
    clock = FakeClock()
    sender = ScriptedSender(rate_limit(), status_error(500), rate_limit(), status_error(503), status_error(500))
    (outcome,), _ = await run(make_dispatcher(sender, clock, max_attempts=3), 1)
    assert outcome.error is not None
    assert outcome.error.code == "http_500"
    assert (outcome.attempts, outcome.rate_limited) == (3, 2)


class LimitedFor:
    """Answers 429 to the request whose body names ``line``; the others at once."""

    def __init__(self, line: int) -> None:
        self.marker = f'{{"n":{line}}}'.encode()
        self.calls = 0

    async def __call__(self, path: str, body: bytes) -> Reply:
        self.calls += 1
        if body == self.marker:
            raise rate_limit(retry_after_ms=500)
        return completion()


async def test_a_request_stuck_in_429s_is_handed_back_at_the_deadline_not_failed() -> None:
    # Given a run whose line 2 is answered 429 every time, and a deadline 30 s away
    clock = FakeClock()
    deadline = clock.now + 30.0
    outcomes, report = await run(
        make_dispatcher(LimitedFor(2), clock, concurrency=2), 1, 2, 3, 4, should_stop=lambda *_: clock.now >= deadline
    )
    # Then the others are answered, line 2 gets no outcome (no failure recorded), and the run
    # stops as for a deadline, resuming at line 2: the continuation sends it again
    assert sorted(o.request.line for o in outcomes) == [1, 3, 4]
    assert all(o.error is None for o in outcomes)
    assert (report.stopped, report.handed_back) == ("deadline", 1)
    assert report.resume is not None
    assert (report.resume.line, report.resume.offset) == (2, 200)
    # and it held the run barely past the deadline (one pause of the 429, at most)
    assert clock.now - deadline <= 1.0


async def test_without_a_deadline_a_request_rate_limited_past_patience_fails_with_a_clear_code() -> None:
    # Given a run with no deadline to hand back to (a redrive) and a patience of 60 s
    clock = FakeClock()
    (outcome,), report = await run(make_dispatcher(LimitedFor(1), clock), 1)
    # Then the request fails for rate limiting, saying so, once the patience is spent
    assert outcome.error is not None
    assert outcome.error.code == RATE_LIMITED_UNTIL_DEADLINE
    assert "429" in outcome.error.message
    assert report.stopped is None
    assert 60.0 <= clock.now - 1000.0 <= 62.0
