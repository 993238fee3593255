"""Error classification (one place) and retry timing (fake clock)."""

from __future__ import annotations

import functools
import json
import random
from typing import Any

import httpx2
import openai
import pytest
from promptdrop.engine.client import Reply
from promptdrop.engine.dispatch import Dispatcher, Outcome
from promptdrop.engine.errors import Disposition, classify, retry_after_s
from promptdrop.engine.rate_limiter import RateLimiter
from promptdrop.engine.request import Request

from tests.fakes import FakeClock

URL = "http://model.test/v1/chat/completions"


@functools.cache
def _client() -> openai.AsyncOpenAI:
    # One for every error made here: each new client loads the CA bundle (0.1-0.2 s; 100 errors took 15 s).
    return openai.AsyncOpenAI(api_key="sk-test", base_url="http://model.test/v1")


def status_error(status: int, *, code: str | None = None, headers: dict[str, str] | None = None) -> Exception:
    body = {"error": {"message": f"failed with {status}", "type": "x", "code": code}}
    response = httpx2.Response(status, headers=headers or {}, json=body, request=httpx2.Request("POST", URL))
    return _client()._make_status_error_from_response(response)


@pytest.mark.parametrize(
    ("status", "code", "disposition"),
    [
        (429, "rate_limit_exceeded", Disposition.TRANSIENT),
        (408, None, Disposition.TRANSIENT),
        (409, None, Disposition.TRANSIENT),
        (500, None, Disposition.TRANSIENT),
        (503, None, Disposition.TRANSIENT),
        (400, None, Disposition.PERMANENT),
        (404, "model_not_found", Disposition.PERMANENT),
        (422, None, Disposition.PERMANENT),
        (403, None, Disposition.PERMANENT),
        (401, "invalid_api_key", Disposition.FATAL),
        (429, "insufficient_quota", Disposition.FATAL),
    ],
)
def test_status_errors_are_classified_by_status_and_code(
    status: int, code: str | None, disposition: Disposition
) -> None:
    info = classify(status_error(status, code=code))
    assert info.disposition is disposition
    assert info.status_code == status
    assert info.rate_limited == (status == 429 and disposition is Disposition.TRANSIENT)


def test_timeouts_and_connection_errors_are_transient() -> None:
    request = httpx2.Request("POST", URL)
    assert classify(openai.APITimeoutError(request=request)).disposition is Disposition.TRANSIENT
    assert classify(openai.APIConnectionError(request=request)).disposition is Disposition.TRANSIENT


def test_our_own_bugs_are_not_disguised_as_api_errors() -> None:
    with pytest.raises(KeyError):
        classify(KeyError("oops"))


@pytest.mark.parametrize(
    ("headers", "seconds"),
    [
        ({"retry-after-ms": "250"}, 0.25),
        ({"retry-after": "3"}, 3.0),
        ({"retry-after-ms": "1500", "retry-after": "9"}, 1.5),
        ({"retry-after": "Wed, 21 Oct 2015 07:28:10 GMT"}, 10.0),
        ({}, None),
    ],
)
def test_retry_after_forms(headers: dict[str, str], seconds: float | None) -> None:
    now = 1445412480.0  # 07:28:00 on that date
    assert retry_after_s(headers, now=now) == seconds


def completion() -> Reply:
    body = {"choices": [{"message": {"content": "ok"}, "finish_reason": "stop"}], "usage": {"total_tokens": 5}}
    return Reply(200, httpx2.Headers({"x-request-id": "req_1"}), json.dumps(body).encode())


class ScriptedSender:
    """Raises the scripted errors in order, then answers."""

    def __init__(self, *errors: Exception) -> None:
        self.errors = list(errors)
        self.calls = 0

    async def __call__(self, path: str, body: bytes) -> Reply:
        self.calls += 1
        if self.errors:
            raise self.errors.pop(0)
        return completion()


async def run_one(sender: ScriptedSender, clock: FakeClock, *, max_attempts: int = 5) -> tuple[Outcome, Any]:
    limiter = RateLimiter(clock=clock, sleep=clock.sleep)
    dispatcher = Dispatcher(
        sender,
        limiter=limiter,
        max_concurrency=2,
        max_attempts=max_attempts,
        clock=clock,
        sleep=clock.sleep,
        rng=random.Random(7),
    )
    outcomes: list[Outcome] = []

    async def requests() -> Any:
        yield Request(1, "a", b"{}", 10)

    async def collect(outcome: Outcome) -> None:
        outcomes.append(outcome)

    report = await dispatcher.run(requests(), collect)
    (outcome,) = outcomes
    return outcome, report


async def test_transient_errors_retry_with_backoff_then_succeed() -> None:
    clock = FakeClock()
    sender = ScriptedSender(status_error(500), status_error(503))
    outcome, report = await run_one(sender, clock)
    assert outcome.error is None
    assert outcome.attempts == 3
    assert report.retries == 2
    # full jitter: each wait within [0, base * 2^(n-1)]
    assert 0 <= clock.sleeps[0] <= 0.5
    assert 0 <= clock.sleeps[1] <= 1.0


async def test_a_429_waits_its_retry_after_and_pauses_everyone() -> None:
    clock = FakeClock()
    sender = ScriptedSender(status_error(429, code="rate_limit_exceeded", headers={"retry-after": "7"}))
    outcome, report = await run_one(sender, clock)
    assert outcome.error is None
    assert report.rate_limited == 1
    assert max(clock.sleeps) >= 7.0


async def test_permanent_errors_fail_at_once() -> None:
    clock = FakeClock()
    outcome, _ = await run_one(ScriptedSender(status_error(400)), clock)
    assert outcome.error is not None
    assert outcome.error.code == "http_400"
    assert outcome.attempts == 1
    assert clock.sleeps == []


async def test_attempts_are_capped() -> None:
    clock = FakeClock()
    sender = ScriptedSender(*[status_error(500) for _ in range(10)])
    outcome, _ = await run_one(sender, clock, max_attempts=3)
    assert outcome.error is not None
    assert outcome.attempts == 3
    assert sender.calls == 3


async def test_malformed_2xx_bodies_are_retried() -> None:
    class Malformed(ScriptedSender):
        async def __call__(self, path: str, body: bytes) -> Reply:
            self.calls += 1
            return Reply(200, httpx2.Headers(), b'{"choices": [') if self.calls == 1 else completion()

    clock = FakeClock()
    outcome, _ = await run_one(Malformed(), clock)
    assert outcome.error is None
    assert outcome.attempts == 2


async def test_fatal_errors_stop_the_run() -> None:
    clock = FakeClock()
    limiter = RateLimiter(clock=clock, sleep=clock.sleep)
    sender = ScriptedSender(*[status_error(401, code="invalid_api_key") for _ in range(100)])
    dispatcher = Dispatcher(sender, limiter=limiter, max_concurrency=1, max_attempts=5, clock=clock, sleep=clock.sleep)

    async def requests() -> Any:
        for i in range(1, 50):
            yield Request(i, f"r{i}", b"{}", 1)

    outcomes: list[Outcome] = []

    async def collect(outcome: Outcome) -> None:
        outcomes.append(outcome)

    report = await dispatcher.run(requests(), collect)
    assert report.stopped == "fatal"
    assert report.fatal is not None
    assert report.fatal.code == "invalid_api_key"
    assert sender.calls <= 2  # no burning through the file
