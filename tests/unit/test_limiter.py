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
    # Given 600 requests/min (10/s), starting empty
    clock = FakeClock()
    lim = limiter(clock, rpm=600)
    start = clock.now
    # When 40 requests are admitted
    for _ in range(40):
        await lim.acquire(1)
    # Then they go at 10 a second: no burst the provider might not have refilled
    assert clock.now - start == pytest.approx(4.0)


async def test_an_idle_limiter_saves_up_one_second_at_most() -> None:
    clock = FakeClock()
    lim = limiter(clock, rpm=600)
    await lim.acquire(1)
    clock.now += 3600  # an hour idle
    start = clock.now
    for _ in range(15):
        await lim.acquire(1)
    assert clock.now - start == pytest.approx(0.5)  # 10 at once (one second's worth), then 10/s


async def test_tokens_per_minute_charges_the_estimate_and_any_excess_usage() -> None:
    clock = FakeClock()
    lim = limiter(clock, tpm=6000)  # 100 tokens/s, 100 in the bucket at start
    await lim.acquire(50)
    lim.settle(reserved=50, actual=20)  # shorter answer: the provider keeps the reservation, so do we
    await lim.acquire(50)
    lim.settle(reserved=50, actual=80)  # longer than estimated: the excess is charged
    start = clock.now
    await lim.acquire(10)  # 30 tokens owed + 10 wanted: 0.4 s at 100 tokens/s
    assert clock.now - start == pytest.approx(0.4)


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
