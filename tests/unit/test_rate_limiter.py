"""Rate limiting with a fake clock: no real sleeps, exact timings."""

from __future__ import annotations

import asyncio

import pytest
from promptdrop.engine.errors import RequestTooLarge
from promptdrop.engine.rate_limiter import RateLimiter, parse_reset

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
    assert lim.pace.limits == (60.0, None)
    start = clock.now
    await lim.acquire(1)  # server said nothing is left: wait for one request's refill (1 s)
    assert clock.now - start == pytest.approx(1.0)


async def test_configured_limits_are_not_overridden_by_headers() -> None:
    lim = limiter(FakeClock(), rpm=100)
    lim.observe({"x-ratelimit-limit-requests": "10000"})
    assert lim.pace.limits == (100.0, None)


@pytest.mark.parametrize(
    ("value", "seconds"), [("1s", 1.0), ("6m0s", 360.0), ("120ms", 0.12), ("1h2m3.5s", 3723.5), ("", None)]
)
def test_parse_reset(value: str, seconds: float | None) -> None:
    assert parse_reset(value) == (pytest.approx(seconds) if seconds is not None else None)


# -- shares, the 429 signal, slow start ---------------------------------------------------------


async def admit(lim: RateLimiter, clock: FakeClock, n: int) -> float:
    """Seconds the fake clock moved while ``n`` requests were admitted (each released at once)."""
    start = clock.now
    for _ in range(n):
        assert await lim.acquire(1)
        lim.release()
    return clock.now - start


async def test_a_share_divides_the_account_limit_among_the_members() -> None:
    # Given the account's 600 requests/min, shared by three runs
    clock = FakeClock()
    lim = limiter(clock, rpm=600)
    lim.share(rpm=None, tpm=None, members=3)
    # Then this run goes at 200/min, while the account's limit stays 600
    assert lim.pace.limits == (600.0, None)
    assert lim.rates == (200.0, None)
    assert await admit(lim, clock, 40) == pytest.approx(12.0)  # 40 at 3.33 a second, from empty


async def test_a_429_pauses_slows_down_and_the_rate_recovers_additively() -> None:
    # Given 600/min in force
    clock = FakeClock()
    lim = limiter(clock, rpm=600)
    # When a 429 asks to wait 2 s
    lim.rate_limited(2.0)
    # Then everyone waits 2 s, and the rate drops to 70% of the share
    assert lim.rates == (pytest.approx(420.0), None)
    start = clock.now
    await lim.acquire(1)
    lim.release()
    assert clock.now - start >= 2.0
    # and climbs back by 5% of the share a second: whole again six seconds later
    clock.now += 6.0
    await lim.acquire(1)
    lim.release()
    assert lim.rates == (pytest.approx(600.0), None)
    assert lim.pace.factor == 1.0


async def test_429s_of_one_overshoot_are_one_decrease() -> None:
    clock = FakeClock()
    lim = limiter(clock, rpm=600)
    for _ in range(20):  # twenty requests answered 429 at once
        lim.rate_limited(0.1)
    assert lim.pace.decreases == 1
    assert lim.pace.factor == pytest.approx(0.7)
    clock.now += 1.0  # a second later, a new overshoot is a new signal
    lim.rate_limited(0.1)
    assert lim.pace.decreases == 2


async def test_the_limits_a_429_publishes_are_learned_too() -> None:
    clock = FakeClock()
    lim = limiter(clock)
    lim.rate_limited(0.5, {"x-ratelimit-limit-requests": "6000", "x-ratelimit-remaining-requests": "0"})
    assert lim.pace.limits == (6000.0, None)


async def test_slow_start_holds_the_first_wave_until_an_answer_says_what_the_limit_is() -> None:
    # Given nothing known of the limits, and a first window of 2
    clock = FakeClock()
    lim = RateLimiter(initial_window=2, clock=clock, sleep=clock.sleep)
    assert await lim.acquire(1)
    assert await lim.acquire(1)
    third = asyncio.create_task(lim.acquire(1))
    await asyncio.sleep(0)
    # Then a third request waits for an answer
    assert not third.done()
    # When the first answer tells the limit
    lim.observe({"x-ratelimit-limit-requests": "6000", "x-ratelimit-remaining-requests": "99"})
    lim.release()
    # Then the window opens and the bucket paces from now on
    assert await third
    assert lim.slow_start.size is None
    assert lim.rates == (6000.0, None)


async def test_a_server_that_publishes_no_limits_opens_the_window_at_its_first_answer() -> None:
    clock = FakeClock()
    lim = RateLimiter(initial_window=2, clock=clock, sleep=clock.sleep)
    await lim.acquire(1)
    lim.observe({})
    lim.release()
    assert lim.slow_start.size is None
    assert await admit(lim, clock, 500) == 0.0


async def test_a_429_with_no_limit_known_halves_the_requests_in_flight_then_grows_one_per_window() -> None:
    # Given 40 requests in flight on a server that publishes no limits
    clock = FakeClock()
    lim = RateLimiter(initial_window=1, clock=clock, sleep=clock.sleep)
    await lim.acquire(1)
    lim.observe({})
    for _ in range(39):
        await lim.acquire(1)
    # When one is answered 429
    lim.release()
    lim.rate_limited(0.0)
    # Then at most half as many may be in flight
    assert lim.slow_start.size == 20
    # and it grows again by one per window of answers (congestion avoidance)
    for _ in range(20):
        lim.observe({})
    assert lim.slow_start.size == 21


async def test_a_waiting_admission_gives_up_when_the_run_must_stop() -> None:
    # Given a long pause (a 429's retry-after of two minutes) and a run that must stop in 5 s
    clock = FakeClock()
    lim = limiter(clock, rpm=600)
    lim.rate_limited(120.0)
    stop_at = clock.now + 5.0
    # When a request waits for admission
    admitted = await lim.acquire(1, stop=lambda: clock.now >= stop_at)
    # Then it gives up within a second of the stop, not after the pause
    assert admitted is False
    assert clock.now - stop_at <= 1.0
    assert lim.slow_start.size is None
