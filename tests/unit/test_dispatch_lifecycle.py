"""The dispatcher's run under structured concurrency: failures surface at once, nothing is left hanging."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import httpx2
import pytest
from promptdrop.engine.client import Reply
from promptdrop.engine.dispatch import Dispatcher, Outcome
from promptdrop.engine.errors import MAX_RETRY_AFTER_S, retry_after_s
from promptdrop.engine.rate_limiter import RateLimiter
from promptdrop.engine.request import Request

from tests.unit.test_errors_and_retries import completion, status_error


class RecordFailed(Exception):
    """Stands for a journal or dead-letter write that failed."""


def dispatcher(sender: object, concurrency: int) -> Dispatcher:
    return Dispatcher(sender, limiter=RateLimiter(), max_concurrency=concurrency, max_attempts=2)  # type: ignore[arg-type]


async def many(n: int) -> AsyncIterator[Request]:
    for i in range(1, n + 1):
        yield Request(i, f"r{i}", b"{}", 1)


async def answer(path: str, body: bytes) -> Reply:
    await asyncio.sleep(0)
    return completion()


async def test_a_failed_record_ends_the_run_with_that_error_instead_of_hanging_the_producer() -> None:
    # Given more requests than workers, and recording that fails from the third outcome on
    recorded: list[int] = []

    async def on_outcome(outcome: Outcome) -> None:
        if len(recorded) >= 2:
            raise RecordFailed("journal write refused")
        recorded.append(outcome.request.line)

    # When the run meets the failure, then it ends with that error (no queue.put blocked forever)
    with pytest.raises(RecordFailed, match="journal write refused"):
        await asyncio.wait_for(dispatcher(answer, 3).run(many(100), on_outcome), timeout=10)
    assert len(recorded) == 2


async def test_an_input_that_fails_mid_read_lets_the_calls_in_flight_finish_and_be_recorded() -> None:
    # Given an input that breaks after five requests, with four calls in flight at once
    release = asyncio.Event()
    sent: list[int] = []

    async def slow(path: str, body: bytes) -> Reply:
        await release.wait()
        return completion()

    async def broken() -> AsyncIterator[Request]:
        async for request in many(5):
            sent.append(request.line)
            yield request
        release.set()
        raise RuntimeError("the object changed under us")

    recorded: list[int] = []

    async def on_outcome(outcome: Outcome) -> None:
        recorded.append(outcome.request.line)

    # When the run ends, then the input's error surfaces, after every request taken was recorded
    with pytest.raises(RuntimeError, match="changed under us"):
        await asyncio.wait_for(dispatcher(slow, 4).run(broken(), on_outcome), timeout=10)
    assert sorted(recorded) == sent == [1, 2, 3, 4, 5]


@pytest.mark.parametrize(
    ("headers", "seconds"),
    [
        ({"retry-after": "86400"}, MAX_RETRY_AFTER_S),
        ({"retry-after-ms": "inf"}, None),
        ({"retry-after": "nan"}, None),
        ({"retry-after": "120"}, 120.0),
    ],
)
def test_a_retry_after_is_honoured_up_to_two_minutes_as_the_sdk_does(
    headers: dict[str, str], seconds: float | None
) -> None:
    assert retry_after_s(httpx2.Headers(headers)) == seconds


async def test_a_transient_failure_after_the_stop_is_handed_back_not_retried_past_the_deadline() -> None:
    # Given a call that fails with a 500 once the run has been told to stop
    stopping = False
    calls = 0

    async def failing(path: str, body: bytes) -> Reply:
        nonlocal stopping, calls
        calls += 1
        stopping = True  # the deadline arrives while this call is in flight
        raise status_error(500)

    recorded: list[Outcome] = []

    async def on_outcome(outcome: Outcome) -> None:
        recorded.append(outcome)

    async def one() -> AsyncIterator[Request]:
        yield Request(7, "r7", b"{}", 1)

    # When the run ends, then the request was not retried: it is handed to the continuation
    report = await dispatcher(failing, 1).run(one(), on_outcome, should_stop=lambda *_: stopping)
    assert (calls, recorded, report.handed_back) == (1, [], 1)
    assert report.resume is not None
    assert report.resume.line == 7
