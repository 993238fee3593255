"""Flex processing in the engine: the tier on the body, refusals retried alone, the fallback; priced at flex rates."""

from __future__ import annotations

import json
import random
from typing import Any

import httpx2
import openai
import pytest
from promptdrop.engine.client import Reply
from promptdrop.engine.dispatch import Dispatcher, Outcome, StopReason
from promptdrop.engine.flex import FLEX_UNAVAILABLE, FlexFallback, FlexPolicy, as_flex, as_standard
from promptdrop.engine.rate_limiter import RateLimiter
from promptdrop.engine.request import Endpoint, Request
from promptdrop.prices import cost_usd, estimate_cost_usd, has_flex, price_key

from tests.fakes import FakeClock

URL = "http://model.test/v1/chat/completions"
CHAT = json.dumps({"model": "gpt-5-mini", "messages": [{"role": "user", "content": "hi"}]}).encode()


def flex_refusal() -> Exception:
    """What the API answers a flex request when flex capacity is short (a 429 that is not a rate limit)."""
    body = {
        "error": {
            "message": "Resource Unavailable",
            "type": "service_unavailable_error",
            "code": "resource_unavailable",
        }
    }
    response = httpx2.Response(429, json=body, request=httpx2.Request("POST", URL))
    return openai.AsyncOpenAI(api_key="sk-test", base_url="http://model.test/v1")._make_status_error_from_response(
        response
    )


class Sender:
    """Refuses every flex body ``refusals`` times, then answers; records each body it was sent."""

    def __init__(self, refusals: int) -> None:
        self.refusals = refusals
        self.bodies: list[dict[str, Any]] = []
        self.timeouts: list[float | None] = []  # each call's own timeout (None: the client's)

    async def __call__(self, path: str, body: bytes, timeout_s: float | None = None) -> Reply:
        sent = json.loads(body)
        self.bodies.append(sent)
        self.timeouts.append(timeout_s)
        if sent.get("service_tier") == "flex" and self.refusals:
            self.refusals -= 1
            raise flex_refusal()
        tier = "flex" if sent.get("service_tier") == "flex" else "default"
        answer = {
            "model": "gpt-5-mini",
            "choices": [{"message": {"content": "ok"}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 3, "completion_tokens": 2},
            "service_tier": tier,
        }
        return Reply(200, httpx2.Headers({"x-request-id": "req_1"}), json.dumps(answer).encode())


async def run_flex(
    sender: Sender, clock: FakeClock, policy: FlexPolicy, *, stop_after_first_call: bool = False
) -> tuple[Outcome, Any, RateLimiter]:
    limiter = RateLimiter(clock=clock, sleep=clock.sleep)
    dispatcher = Dispatcher(
        sender,
        limiter=limiter,
        max_concurrency=1,
        max_attempts=5,
        flex=policy,
        clock=clock,
        sleep=clock.sleep,
        rng=random.Random(7),
    )
    outcomes: list[Outcome] = []

    async def requests() -> Any:
        yield as_flex(Request(1, "a", CHAT, 10, model="gpt-5-mini"))

    async def collect(outcome: Outcome) -> None:
        outcomes.append(outcome)

    def deadline_near(within_s: float = 0.0) -> bool:
        return bool(sender.bodies)

    report = await dispatcher.run(requests(), collect, should_stop=deadline_near if stop_after_first_call else None)
    (outcome,) = outcomes
    return outcome, report, limiter


def test_the_tier_goes_on_the_body_and_comes_off_again() -> None:
    request = Request(1, "a", CHAT, 10, model="gpt-5-mini")
    flex = as_flex(request)
    assert flex.flex
    assert json.loads(flex.body) == {**json.loads(CHAT), "service_tier": "flex"}
    assert as_standard(flex) == request
    assert as_flex(flex) is flex  # once


@pytest.mark.parametrize(
    "request_",
    [
        Request(1, "e", b'{"model":"text-embedding-3-small","input":"x"}', 1, endpoint=Endpoint.EMBEDDINGS),
        Request(1, "m", b'{"model":"gpt-5-mini","input":"x"}', 1, endpoint=Endpoint.MODERATIONS),
        Request(1, "t", b'{"model":"gpt-5-mini","messages":[],"service_tier":"priority"}', 1),  # the line's own
    ],
)
def test_what_takes_no_tier_or_names_its_own_is_left_as_it_is(request_: Request) -> None:
    assert as_flex(request_) is request_


async def test_a_flex_refusal_is_retried_alone_without_pausing_the_rate() -> None:
    clock = FakeClock()
    outcome, report, limiter = await run_flex(Sender(refusals=2), clock, FlexPolicy(attempts=3))
    assert outcome.error is None
    assert outcome.response is not None
    assert outcome.response["service_tier"] == "flex"
    assert outcome.flex_refused == 2
    assert report.flex_refused == 2
    assert report.rate_limited == 0  # not a rate limit: no pause, no slower rate, nothing told to the fleet
    assert limiter.pace.factor == 1.0
    assert limiter.paused_for() == 0
    assert outcome.request.flex is False  # the outputs and dead letters carry the line as written


async def test_after_its_attempts_a_refused_request_goes_at_the_standard_tier() -> None:
    clock = FakeClock()
    sender = Sender(refusals=100)
    outcome, report, _ = await run_flex(sender, clock, FlexPolicy(attempts=3))
    assert [body.get("service_tier") for body in sender.bodies] == ["flex", "flex", "flex", None]
    assert outcome.error is None
    assert outcome.response is not None
    assert outcome.response["service_tier"] == "default"
    assert report.flex_fallbacks == 1
    assert outcome.attempts == 4  # three refused calls and the answered one


async def test_a_fallback_of_fail_fails_the_request_with_its_code() -> None:
    clock = FakeClock()
    sender = Sender(refusals=100)
    outcome, _, _ = await run_flex(sender, clock, FlexPolicy(attempts=2, fallback=FlexFallback.FAIL))
    assert len(sender.bodies) == 2
    assert outcome.error is not None
    assert outcome.error.code == FLEX_UNAVAILABLE
    assert "PROMPTDROP_FLEX_FALLBACK" in outcome.error.message
    assert b"service_tier" not in outcome.request.body  # the dead letter redrives the line as written


async def test_near_the_deadline_a_refused_request_goes_standard_at_once() -> None:
    clock = FakeClock()
    sender = Sender(refusals=100)
    outcome, _, _ = await run_flex(sender, clock, FlexPolicy(attempts=5), stop_after_first_call=True)
    assert [body.get("service_tier") for body in sender.bodies] == ["flex", None]
    assert outcome.error is None
    assert clock.sleeps == []


def test_flex_answers_are_priced_at_flex_rates() -> None:
    assert has_flex("gpt-5-mini")
    assert not has_flex("gpt-4o-mini")  # OpenAI serves no flex tier for it
    standard = cost_usd("gpt-5-mini", 1_000_000, 1_000_000)
    flex = cost_usd("gpt-5-mini", 1_000_000, 1_000_000, tier="flex")
    assert standard is not None
    assert flex == pytest.approx(standard / 2)
    mixed = estimate_cost_usd({price_key("gpt-5-mini", "flex"): (1_000_000, 0), price_key("gpt-5-mini", None): (0, 0)})
    assert mixed == pytest.approx(cost_usd("gpt-5-mini", 1_000_000, 0) / 2)  # type: ignore[operator]
    assert price_key("gpt-5-mini", "default") == "gpt-5-mini"


async def test_a_flex_call_that_could_outlive_the_invocation_is_left_to_the_continuation() -> None:
    # Given 5 minutes left before the stop margin, a flex timeout of 10 minutes (9 more than a standard
    # call's), and a file of a standard request then a flex one
    clock = FakeClock()
    sender = Sender(refusals=0)
    policy = FlexPolicy(timeout_s=600.0, extra_s=540.0)
    dispatcher = Dispatcher(sender, limiter=RateLimiter(clock=clock, sleep=clock.sleep), max_concurrency=1,
                            max_attempts=2, flex=policy, clock=clock, sleep=clock.sleep)  # fmt: skip
    standard = Request(1, "s", CHAT, 10, model="gpt-4o-mini")
    flexed = as_flex(Request(2, "f", CHAT, 10, model="gpt-5-mini"))

    async def requests() -> Any:
        yield standard
        yield flexed

    def stop(within_s: float = 0.0) -> bool:
        return within_s > 300.0  # the time left covers a standard call, not a flex one

    outcomes: list[Outcome] = []

    async def collect(outcome: Outcome) -> None:
        outcomes.append(outcome)

    report = await dispatcher.run(requests(), collect, should_stop=stop)

    # Then the standard request went, the flex one was not started: the continuation resumes at it
    assert [o.request.custom_id for o in outcomes] == ["s"]
    assert (report.stopped, report.resume) == (StopReason.DEADLINE, flexed)


async def test_a_flex_call_has_its_own_timeout() -> None:
    clock = FakeClock()
    sender = Sender(refusals=0)
    await run_flex(sender, clock, FlexPolicy(timeout_s=600.0, extra_s=480.0))
    assert sender.timeouts == [600.0]
