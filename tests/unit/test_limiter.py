"""Rate limiting with a fake clock: no real sleeps, exact timings."""

from __future__ import annotations

import asyncio

import pytest
from promptdrop.engine.errors import RequestTooLarge
from promptdrop.engine.limiter import RateLimiter, parse_reset

from tests.fakes import FakeClock


def limiter(clock: FakeClock, **kwargs: int | None) -> RateLimiter:
    return RateLimiter(clock=clock, sleep=clock.sleep, **kwargs)  # type: ignore[arg-type]


async def test_unlimited_admits_at_once_without_sleeping() -> None:
    clock = FakeClock()
    lim = limiter(clock)
    for _ in range(1000):
        await lim.acquire(10_000)
    assert clock.sleeps == []


async def test_requests_per_minute_paces_admissions() -> None:
    # Given 600 requests/min (10/s) and one second's worth in the bucket at start
    clock = FakeClock()
    lim = limiter(clock, rpm=600)
    start = clock.now
    # When 40 requests are admitted
    for _ in range(40):
        await lim.acquire(1)
    # Then the first 10 go at once and the other 30 take 3 seconds
    assert clock.now - start == pytest.approx(3.0)


async def test_tokens_per_minute_uses_the_estimate_then_the_real_usage() -> None:
    clock = FakeClock()
    lim = limiter(clock, tpm=6000)  # 100 tokens/s, 100 in the bucket at start
    await lim.acquire(100)
    lim.settle(reserved=100, actual=40)  # the call used fewer tokens: 60 come back
    start = clock.now
    await lim.acquire(60)
    assert clock.now == start
    await lim.acquire(50)  # bucket empty: 0.5 s for 50 tokens
    assert clock.now - start == pytest.approx(0.5)


async def test_a_request_larger_than_the_whole_minute_fails_instead_of_waiting_forever() -> None:
    lim = limiter(FakeClock(), tpm=1000)
    with pytest.raises(RequestTooLarge, match="exceed the whole tokens/min limit of 1000"):
        await lim.acquire(1001)


async def test_pause_holds_back_every_waiter_until_retry_after() -> None:
    clock = FakeClock()
    lim = limiter(clock)
    lim.pause(2.5)
    start = clock.now
    await asyncio.gather(*(lim.acquire(1) for _ in range(5)))
    assert clock.now - start == pytest.approx(2.5)
    assert lim.pauses == 1


async def test_limits_are_learned_from_headers_and_remaining_lowers_the_level() -> None:
    clock = FakeClock()
    lim = limiter(clock)
    lim.observe({"x-ratelimit-limit-requests": "60", "x-ratelimit-remaining-requests": "0"})
    assert lim.limits == (60.0, None)
    start = clock.now
    await lim.acquire(1)  # server said nothing is left: wait for one request's refill (1 s)
    assert clock.now - start == pytest.approx(1.0)


async def test_configured_limits_are_not_overridden_by_headers() -> None:
    lim = limiter(FakeClock(), rpm=100)
    lim.observe({"x-ratelimit-limit-requests": "10000"})
    assert lim.limits == (100.0, None)


@pytest.mark.parametrize(
    ("value", "seconds"), [("1s", 1.0), ("6m0s", 360.0), ("120ms", 0.12), ("1h2m3.5s", 3723.5), ("", None)]
)
def test_parse_reset(value: str, seconds: float | None) -> None:
    assert parse_reset(value) == (pytest.approx(seconds) if seconds is not None else None)
