"""One limiter per model, sharing the model's limits with the other runs (in-memory shared limits, a fake clock)."""

from __future__ import annotations

import json

import pytest
from promptdrop.engine.membership import LEASE_S, MAX_SHARED_MODELS, RENEW_MAX_S
from promptdrop.engine.model_limiters import ModelLimiters
from promptdrop.engine.rate_limiter import INITIAL_WINDOW, MIN_SHARE
from promptdrop.engine.request import Request
from promptdrop.engine.shared_limits import Observed

from tests.fakes import MemorySharedLimits, Timeline

MODEL = "gpt-4o-mini"


def container(clock: Timeline, shared: MemorySharedLimits, *, rpm: int | None = None) -> ModelLimiters:
    """One Lambda container's limiters (all on the same fake clock, as the fleet shares wall time)."""
    return ModelLimiters(rpm=rpm, shared=shared, clock=clock, wall=clock, sleep=clock.sleep)


def request(model: str = MODEL) -> Request:
    return Request(1, "r1", json.dumps({"model": model, "messages": []}).encode(), 1)


def test_the_model_is_read_from_the_body_unless_the_request_names_it() -> None:
    assert request("gpt-4.1").model_name() == "gpt-4.1"
    assert Request(1, "r1", b"{}", 1, model="o3").model_name() == "o3"
    assert Request(1, "r1", b"[]", 1).model_name() == ""


async def test_two_runs_split_the_accounts_limit() -> None:
    # Given the account's 600 requests/min, configured, and two runs in two containers
    clock = Timeline()
    shared = MemorySharedLimits(clock)
    a, b = container(clock, shared, rpm=600), container(clock, shared, rpm=600)
    async with a.membership() as run_a, b.membership() as run_b:
        # When both send to the model
        limiter_a = await run_a.limiter_for(request())
        limiter_b = await run_b.limiter_for(request())
        # Then the second finds the first at once, and the first hears of the second at its next renewal
        assert limiter_b.rates == (300.0, None)
        await clock.advance(2)
        assert limiter_a.rates == (300.0, None)
    # and both gave their share back when their runs ended
    assert shared.leases[MODEL] == {}


async def test_a_limit_one_run_learned_is_known_to_a_later_run_from_its_first_second() -> None:
    clock = Timeline()
    shared = MemorySharedLimits(clock)
    async with container(clock, shared).membership() as first:
        # Given a first run that knew nothing (slow start) until an answer's headers told it
        limiter = await first.limiter_for(request())
        assert limiter.slow_start.size == INITIAL_WINDOW
        limiter.observe({"x-ratelimit-limit-requests": "6000", "x-ratelimit-remaining-requests": "100"})
        await clock.advance(2)  # news: told at the next tick, not at the next scheduled renewal
        assert shared.limits[MODEL][0] == 6000.0
        # When a second run starts
        async with container(clock, shared).membership() as second:
            later = await second.limiter_for(request())
            # Then it knows the limit before its first answer (no slow start to wait out), and takes
            # what the first leaves free: next to nothing, until the first has heard of it
            assert later.pace.limits == (6000.0, None)
            assert later.slow_start.size is None
            assert later.rates == (3000.0 * MIN_SHARE, None)
            # and once both have renewed, each has an even share
            await clock.advance(RENEW_MAX_S + 4)
            assert (limiter.rates, later.rates) == ((3000.0, None), (3000.0, None))


async def test_a_dead_runs_share_returns_when_its_lease_expires() -> None:
    # Given a run that joined and then died (it never renews nor leaves)
    clock = Timeline()
    shared = MemorySharedLimits(clock)
    await shared.join(MODEL, "dead", lease_s=LEASE_S, observed=Observed())
    async with container(clock, shared, rpm=600).membership() as alive:
        limiter = await alive.limiter_for(request())
        assert limiter.rates == (300.0, None)
        # When its lease runs out
        await clock.advance(LEASE_S + RENEW_MAX_S)
        # Then the live run has the whole limit again (from its next renewal)
        assert limiter.rates == (600.0, None)


async def test_a_long_pause_one_run_was_asked_for_reaches_the_others() -> None:
    clock = Timeline()
    shared = MemorySharedLimits(clock)
    async with container(clock, shared, rpm=600).membership() as a, container(clock, shared, rpm=600).membership() as b:
        limiter_a, limiter_b = await a.limiter_for(request()), await b.limiter_for(request())
        # When a 429 asks the first run to wait 30 s
        limiter_a.rate_limited(30.0)
        await clock.advance(4)
        # Then the other run waits too, until the same moment
        assert limiter_b.paused_for() == pytest.approx(limiter_a.paused_for(), abs=0.01)
        assert limiter_b.paused_for() > 20


async def test_each_model_has_its_own_limiter_and_budget() -> None:
    clock = Timeline()
    shared = MemorySharedLimits(clock)
    async with container(clock, shared, rpm=600).membership() as run:
        mini, big = await run.limiter_for(request("gpt-4o-mini")), await run.limiter_for(request("gpt-4.1"))
        assert mini is not big
        assert set(shared.leases) == {"gpt-4o-mini", "gpt-4.1"}
        assert mini is await run.limiter_for(request("gpt-4o-mini"))


async def test_an_unreachable_budget_never_fails_the_run() -> None:
    # Given a shared whose every call fails
    clock = Timeline()
    shared = MemorySharedLimits(clock)
    shared.failing = True
    async with container(clock, shared, rpm=600).membership() as run:
        limiter = await run.limiter_for(request())
        await clock.advance(30)
        # Then the run goes on alone, at the configured limit
        assert limiter.rates == (600.0, None)
    assert shared.calls > 1  # it kept trying


async def test_a_steady_run_renews_rarely() -> None:
    # Given one run alone for two minutes
    clock = Timeline()
    shared = MemorySharedLimits(clock)
    async with container(clock, shared, rpm=600).membership() as run:
        await run.limiter_for(request())
        await clock.advance(120)
    # Then its renewals spaced out (1, 2, 4, 8, then every 10 s): a join, 15 renewals, a leave
    print(f"shared calls in 120 s: {shared.calls}")
    assert shared.calls <= 17


async def test_a_run_shares_the_limits_of_its_first_20_models_and_runs_the_rest_on_their_own() -> None:
    # Given a file naming 3,000 models (the cost of coordination: a renewal per seat every few seconds)
    clock = Timeline()
    shared = MemorySharedLimits(clock)
    limiters = container(clock, shared, rpm=600)
    models = [f"model-{i}" for i in range(3_000)]
    async with limiters.membership() as run:
        # When the run sends to each of them
        got = [await run.limiter_for(request(m)) for m in models]
        joined = shared.calls
        await clock.advance(60)
        per_minute = shared.calls - joined

    # Then only the first 20 joined the shared limits; each model still has its own limiter
    assert MAX_SHARED_MODELS == 20
    assert set(shared.leases) == set(models[:MAX_SHARED_MODELS])
    assert joined == MAX_SHARED_MODELS
    assert len({id(limiter) for limiter in got}) == len(models)
    assert got[2_999] is limiters.limiter("model-2999")
    assert per_minute <= MAX_SHARED_MODELS * 12  # ~9 renewals a seat in a steady minute, and its leave
