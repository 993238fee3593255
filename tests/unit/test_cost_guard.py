"""The cost guard's arithmetic: worst cases, what fits, where the limits come from."""

from __future__ import annotations

import asyncio
import json

import pytest
from promptdrop.engine.errors import Disposition, ErrorInfo
from promptdrop.engine.outcome import Outcome
from promptdrop.engine.request import Request
from promptdrop.formats import FileRejected, request_from_object
from promptdrop.jobs.cost_guard import Budget, CostGuard, Spent, budget_of, flex_tier, worst_case
from promptdrop.prices import BATCH, FLEX, cost_usd
from promptdrop.records import ErrorRecord, JobRecord
from promptdrop.settings import Settings

MINI_IN, MINI_OUT = 0.15e-6, 0.60e-6  # gpt-4o-mini, USD per token


def request(line: int = 1, *, cost: int, output: int = 0, model: str = "gpt-4o-mini") -> Request:
    """A request the guard is handed: ``cost`` tokens at most, ``output`` of them output."""
    payload = {"model": model, "messages": [{"role": "user", "content": "hi"}]}
    return Request(line, f"r{line}", json.dumps(payload).encode(), cost, model=model, output_tokens=output)


def answered(req: Request) -> Outcome:
    return Outcome(req, attempts=1, latency_ms=1, status_code=200, response={})


def settings(**env: object) -> Settings:
    return Settings(table="t", dlq_url="q", **env)  # type: ignore[arg-type]


def parsed(url: str, body: dict[str, object]) -> Request:
    """A Batch API line, as the function's parser makes it a request (its token estimate included)."""
    line = {"custom_id": "r", "method": "POST", "url": url, "body": body}
    made = request_from_object(
        line, line=1, default_id="line-1", default_model="gpt-4o-mini", text_len=len(json.dumps(line))
    )
    assert isinstance(made, Request), made
    return made


CHAT, RESPONSES = "/v1/chat/completions", "/v1/responses"
EMBEDDINGS, COMPLETIONS, MODERATIONS = "/v1/embeddings", "/v1/completions", "/v1/moderations"
MESSAGES = [{"role": "user", "content": "x" * 400}]


@pytest.mark.parametrize(
    ("url", "body", "output"),
    [
        (CHAT, {"messages": MESSAGES, "max_tokens": 100}, 100),
        (CHAT, {"messages": MESSAGES, "max_completion_tokens": 80, "max_tokens": 999}, 80),  # the newer name wins
        (CHAT, {"messages": MESSAGES, "max_tokens": 50, "n": 3}, 150),  # every choice may use it
        (CHAT, {"messages": MESSAGES}, 256),  # none: the default estimate (the model's maximum is unknown)
        (RESPONSES, {"input": "x" * 400, "max_output_tokens": 60}, 60),
        (RESPONSES, {"input": "x" * 400}, 256),
        (COMPLETIONS, {"prompt": "x" * 400}, 16),  # the endpoint's own default max_tokens
        (COMPLETIONS, {"prompt": "x" * 400, "max_tokens": 10, "n": 2}, 20),
        (COMPLETIONS, {"prompt": "x" * 400, "max_tokens": 10, "n": 2, "best_of": 3}, 30),  # best_of are all billed
        (COMPLETIONS, {"prompt": ["a" * 200, "b" * 200], "max_tokens": 10, "n": 2}, 40),  # for each prompt
        (EMBEDDINGS, {"input": ["x" * 200, "y" * 200]}, 0),  # no output tokens
        (MODERATIONS, {"input": "x" * 400}, 0),
    ],
)
def test_each_endpoints_worst_case_is_its_input_estimate_plus_its_output_bound(
    url: str, body: dict[str, object], output: int
) -> None:
    # Given a line of that endpoint, parsed as the function parses it
    req = parsed(url, {"model": "gpt-4o-mini", **body})
    # Then its worst case counts the endpoint's output bound, and its input estimate (~100 tokens) as input
    worst = worst_case(req)
    assert req.output_tokens == output
    prompt = worst.tokens - output
    assert 100 <= prompt < 160  # the line as written, ~4 characters a token
    assert worst.usd == pytest.approx(prompt * MINI_IN + output * MINI_OUT)


def test_a_worst_case_in_dollars_of_an_absurd_output_limit_is_a_number_not_an_overflow() -> None:
    worst = worst_case(parsed(CHAT, {"model": "gpt-4o-mini", "messages": MESSAGES, "max_tokens": 10**400}))
    assert worst.usd is not None
    assert worst.usd > 1e5  # refused by any budget, as it should be
    assert parsed(RESPONSES, {"model": "gpt-4o-mini", "input": "x", "max_output_tokens": -5}).output_tokens == 0


def test_a_model_without_a_price_has_no_worst_case_in_dollars() -> None:
    assert worst_case(request(cost=10, model="my-model")).usd is None


def test_requests_are_admitted_while_spent_plus_in_flight_plus_the_next_fit() -> None:
    # Given a budget of 3.2 requests' worst case, nothing spent yet
    one = worst_case(request(cost=1100, output=1000)).usd
    assert one is not None
    guard = CostGuard(Budget(usd=3.2 * one))
    first, second, third, fourth = (request(i, cost=1100, output=1000) for i in range(1, 5))

    # Then three fit while in flight; the fourth does not
    assert guard.admit(first, Spent())
    assert guard.admit(second, Spent())
    assert guard.admit(third, Spent())
    assert not guard.admit(fourth, Spent())
    assert guard.refused is not None
    assert "$0.000000 was spent" in guard.refused

    # When the first finishes having cost a tenth of its worst case, its worst case no longer counts
    guard.settle(answered(first))
    assert guard.admit(fourth, Spent(usd=one / 10))


# -- waiting for room: the budget is spent, not the part left once worst cases were reserved (issue 18) ----------


async def test_a_request_that_does_not_fit_waits_for_those_in_flight_to_settle_below_their_worst_case() -> None:
    # Given a budget of 3.5 requests' worst case and three in flight
    one = worst_case(request(cost=1100, output=1000)).usd
    assert one is not None
    guard = CostGuard(Budget(usd=3.5 * one))
    spent = Spent()
    for line in (1, 2, 3):
        assert guard.admit(request(line, cost=1100, output=1000), spent)

    # When a fourth asks: it waits (nothing refused yet)
    waiting = asyncio.create_task(guard.wait_to_admit(request(4, cost=1100, output=1000), lambda: spent))
    await asyncio.sleep(0.01)
    assert not waiting.done()

    # Then once one settles at a tenth of its worst case (counted as spent first), it is admitted
    spent = Spent(usd=one / 10)
    guard.settle(answered(request(1, cost=1100, output=1000)))
    assert await waiting is True
    assert guard.in_flight == 3
    assert guard.refused is None


async def test_a_request_is_refused_only_when_it_cannot_fit_with_nothing_in_flight() -> None:
    one = worst_case(request(cost=1100, output=1000)).usd
    assert one is not None
    guard = CostGuard(Budget(usd=1.5 * one))
    spent = Spent()
    assert guard.admit(request(1, cost=1100, output=1000), spent)
    waiting = asyncio.create_task(guard.wait_to_admit(request(2, cost=1100, output=1000), lambda: spent))
    await asyncio.sleep(0.01)
    # The one in flight settles at its worst case: nothing is in flight and the next cannot fit
    spent = Spent(usd=one)
    guard.settle(answered(request(1, cost=1100, output=1000)))
    assert await waiting is False
    assert guard.refused == f"${one:.6f} was spent, $0.000000 more at most in flight, and it may cost ${one:.6f}"


async def test_a_token_budget_waits_too_and_a_caller_that_cannot_wait_is_refused_at_once() -> None:
    guard = CostGuard(Budget(tokens=1500))
    assert guard.admit(request(1, cost=1000), Spent())
    # A Batch API file settles nothing until it is submitted whole: it cannot wait for room
    assert await guard.wait_to_admit(request(2, cost=1000), Spent, wait=False) is False
    assert guard.refused == "0 tokens were used, 1,000 more at most in flight, and it may use 1,000"
    # Otherwise it waits, and fits once the first settles having used 300 tokens
    guard.refused = None
    used = Spent()
    waiting = asyncio.create_task(guard.wait_to_admit(request(2, cost=1000), lambda: used))
    await asyncio.sleep(0.01)
    assert not waiting.done()
    used = Spent(tokens=300)
    guard.settle(answered(request(1, cost=1000)))
    assert await waiting is True


async def test_a_request_over_the_cap_or_of_a_model_without_a_price_is_refused_at_once() -> None:
    guard = CostGuard(Budget(requests=2, usd=1.0))
    assert guard.admit(request(1, cost=10), Spent(requests=0))
    # settling gives no request back: refused at once, one in flight or not
    assert await guard.wait_to_admit(request(2, cost=10), lambda: Spent(requests=2)) is False
    assert guard.refused == "2 of 2 requests were sent (the file's max requests)"
    assert await guard.wait_to_admit(request(3, cost=10, model="my-model"), Spent) is False
    assert guard.unknown_price


async def test_a_request_waiting_for_room_is_neither_sent_nor_refused_when_the_run_stops() -> None:
    # Given a request waiting behind one in flight that will never settle (handed back at the deadline)
    one = worst_case(request(cost=1100, output=1000)).usd
    assert one is not None
    guard = CostGuard(Budget(usd=1.5 * one))
    assert guard.admit(request(1, cost=1100, output=1000), Spent())
    stopping = False
    waiting = asyncio.create_task(
        guard.wait_to_admit(request(2, cost=1100, output=1000), Spent, stopping=lambda: stopping, poll_s=0.01)
    )
    await asyncio.sleep(0.03)
    assert not waiting.done()
    # When the run stops, it is let go: not admitted, not refused (the continuation sends it)
    stopping = True
    assert await waiting is None
    assert guard.refused is None
    assert guard.in_flight == 1


async def test_a_fatal_outcome_halts_a_request_waiting_for_room() -> None:
    one = worst_case(request(cost=1100, output=1000)).usd
    assert one is not None
    guard = CostGuard(Budget(usd=2.5 * one))
    for line in (1, 2):
        assert guard.admit(request(line, cost=1100, output=1000), Spent())
    waiting = asyncio.create_task(guard.wait_to_admit(request(3, cost=1100, output=1000), lambda: Spent(usd=2 * one)))
    await asyncio.sleep(0.01)
    fatal = ErrorInfo(ErrorRecord("authentication_error", "invalid_api_key", "bad key", 401), Disposition.FATAL)
    guard.settle(Outcome(request(1, cost=1100, output=1000), attempts=1, latency_ms=1, error=fatal))
    assert await waiting is None  # the dispatcher sends nothing more after a fatal error
    assert guard.halted


# -- the tier a request is reserved at follows the file's mode -------------------------------------------------


def test_a_worst_case_is_priced_at_the_tier_it_is_reserved_at() -> None:
    req = request(cost=1100, output=1000, model="gpt-5-mini")
    standard, flex, batch = (worst_case(req, tier).usd for tier in (None, FLEX, BATCH))
    assert standard is not None
    assert flex == pytest.approx(standard / 2)
    assert batch == pytest.approx(standard / 2)
    assert worst_case(req).tokens == worst_case(req, BATCH).tokens == 1100


def test_flex_mode_reserves_at_flex_only_what_cannot_fall_back_to_the_standard_tier() -> None:
    flex_models = {"gpt-5-mini"}

    def goes_flex(r: Request) -> bool:
        return r.model_name() in flex_models

    falls_back, fails = flex_tier(goes_flex, falls_back=True), flex_tier(goes_flex, falls_back=False)
    assert falls_back(request(model="gpt-5-mini", cost=10)) is None  # a fallback is priced standard: reserved so
    assert fails(request(model="gpt-5-mini", cost=10)) == FLEX
    assert fails(request(model="gpt-4o-mini", cost=10)) is None  # not sent flex: standard


def test_a_budget_admits_twice_the_requests_in_flight_at_the_flex_tier() -> None:
    req = request(cost=1100, output=1000, model="gpt-5-mini")
    standard = worst_case(req).usd
    assert standard is not None
    at_flex, at_standard = CostGuard(Budget(usd=4.5 * standard)), CostGuard(Budget(usd=4.5 * standard))
    admitted_flex = sum(
        at_flex.admit(request(n, cost=1100, output=1000, model="gpt-5-mini"), Spent(), FLEX) for n in range(20)
    )
    admitted_standard = sum(
        at_standard.admit(request(n, cost=1100, output=1000, model="gpt-5-mini"), Spent()) for n in range(20)
    )
    assert (admitted_standard, admitted_flex) == (4, 9)


def test_actual_spending_counts_cached_tokens_at_their_rate() -> None:
    # Spent is priced as billed: half the prompt served from the cache costs less, so more fits
    full = cost_usd("gpt-4o-mini", 100_000, 0)
    cached = cost_usd("gpt-4o-mini", 100_000, 0, cached_tokens=50_000)
    assert full is not None
    assert cached is not None
    assert cached == pytest.approx(full * 0.75)
    next_one = worst_case(request(cost=200, output=100)).usd
    assert next_one is not None
    limits = Budget(usd=cached + next_one * 1.01)
    assert CostGuard(limits).admit(request(cost=200, output=100), Spent(usd=cached))
    assert not CostGuard(limits).admit(request(cost=200, output=100), Spent(usd=full))


def test_a_token_budget_and_a_request_cap() -> None:
    guard = CostGuard(Budget(tokens=1000, requests=2))
    assert guard.admit(request(1, cost=400), Spent(tokens=0, requests=0))
    assert not guard.admit(request(2, cost=700), Spent(tokens=0, requests=1))  # 400 in flight + 700 > 1000
    assert guard.admit(request(2, cost=500), Spent(tokens=0, requests=1))
    assert not guard.admit(request(3, cost=1), Spent(tokens=0, requests=2))
    assert guard.refused == "2 of 2 requests were sent (the file's max requests)"


def test_no_limit_admits_everything_without_looking() -> None:
    guard = CostGuard(Budget())
    assert guard.admit(Request(1, "x", b"not even json", 10**9), Spent(usd=1e9))


def test_limits_come_from_the_job_then_the_upload_then_the_environment() -> None:
    env = settings(budget_usd=1.0, budget_tokens=500, max_requests=9)
    metadata = {"promptdrop-budget-usd": "2.5", "promptdrop-max-requests": "4"}
    assert budget_of(env, {}, None) == Budget(usd=1.0, tokens=500, requests=9)
    assert budget_of(env, metadata, None) == Budget(usd=2.5, tokens=500, requests=4)
    raised = JobRecord("j", "b", "k", "e", budget_usd=10.0, max_requests=100)
    assert budget_of(env, metadata, raised) == Budget(usd=10.0, tokens=500, requests=100)
    assert budget_of(settings(), {}, None) == Budget()
    # "none" in the metadata lifts the environment's limit for that upload
    assert budget_of(env, {"promptdrop-budget-usd": "None"}, None) == Budget(usd=None, tokens=500, requests=9)


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("promptdrop-budget-usd", "ten"),
        ("promptdrop-budget-usd", "-1"),
        ("promptdrop-budget-usd", "inf"),
        ("promptdrop-budget-tokens", "1.5"),
        ("promptdrop-max-requests", "0"),
        ("promptdrop-budget-tokens", "9" * 400),  # past MAX_COUNT: the guard's float arithmetic would overflow
        ("promptdrop-max-requests", "9" * 400),
        ("promptdrop-budget-usd", "1" + "0" * 300),
        ("promptdrop-budget-tokens", "9" * 5000),  # past Python's int conversion limit
    ],
)
def test_a_budget_in_the_metadata_that_is_not_a_positive_number_rejects_the_file(name: str, value: str) -> None:
    with pytest.raises(FileRejected) as info:
        budget_of(settings(), {name: value}, None)
    assert info.value.code == "invalid_budget"
    assert name in info.value.message


def test_the_environment_settings_treat_empty_as_unset_and_refuse_nonsense() -> None:
    assert settings(budget_usd="", budget_tokens="0", max_requests="").budget_usd is None
    with pytest.raises(ValueError, match="greater than 0"):
        settings(budget_usd="-2")
