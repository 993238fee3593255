"""A budget through a unit's whole run, against in-memory ports: spent to the last request that fits,
and a run that stops (its deadline) while a request waits for room continues instead of hanging."""

from __future__ import annotations

import asyncio
import json

from promptdrop.formats import Request, request_from_object
from promptdrop.jobs import RunStatus
from promptdrop.jobs.cost_guard import worst_case
from promptdrop.messages import UnitMessage

from tests.unit.jobs.conftest import BUCKET, WORK, World, lines
from tests.unit.jobs.test_units import _start
from tests.unit.test_errors_and_retries import status_error


def worst_usd(text: str) -> float:
    line = text.splitlines()[0]
    request = request_from_object(json.loads(line), line=1, default_id="x", default_model="gpt-4o-mini", text_len=9)
    assert isinstance(request, Request)
    worst = worst_case(request).usd
    assert worst is not None
    return worst


async def test_a_budget_is_spent_to_the_last_request_that_fits(world: World) -> None:
    # Given 400 prompts whose answers cost a thirtieth of their worst case (no max_tokens: 256 reserved)
    # and a budget of ten worst cases: far fewer than the requests a full dispatch queue would reserve
    body = lines(*(f"prompt {i}" for i in range(400)))
    budget = 10 * worst_usd(body)
    runner = world.runner(max_concurrency=8)

    # When it runs
    result = await world.upload("in/spend.jsonl", body, runner=runner, **{"promptdrop-budget-usd": f"{budget:.9f}"})

    # Then it stopped for its budget having spent 90% to 100% of it
    assert result.status is RunStatus.BUDGET_EXCEEDED
    spent = world.summary("in/spend.jsonl")["estimated_cost_usd"]
    assert 0.9 * budget <= spent <= budget
    assert len(world.api.prompts) == world.summary("in/spend.jsonl")["counts"]["succeeded"] < 400


async def test_a_deadline_while_a_request_waits_for_room_continues_the_run(world: World) -> None:
    # Given a budget that holds one request's worst case at a time, and a first request the API
    # answers with a 429 for rate just as the run's deadline comes: it is handed back, never settled
    body = lines("one", "two", "three", max_tokens=5)
    info = world.store.put(
        BUCKET, "in/deadline.jsonl", body, **{"promptdrop-budget-usd": f"{1.5 * worst_usd(body):.9f}"}
    )
    await _start(world, "j", "in/deadline.jsonl", info.etag)
    deadline = {"hit": False}
    world.api.fail_on["one"] = status_error(429, code="rate_limit_exceeded")
    world.api.before = lambda prompt: deadline.update(hit=True)
    unit = UnitMessage(job_id="j", bucket=BUCKET, key="in/deadline.jsonl", etag=info.etag, unit="all")

    # When its unit runs (a hang would time out here)
    run = world.runner(max_concurrency=2).run_unit(unit, should_stop=lambda *_: deadline["hit"])
    result = await asyncio.wait_for(run, timeout=10)

    # Then the run continues from the request handed back, no budget stop, nothing else sent
    assert result.status is RunStatus.CONTINUED
    (continuation,) = world.queues.on(WORK)
    assert isinstance(continuation, UnitMessage)
    assert continuation.first_line == 1
    assert world.file_failures() == []
    assert world.api.prompts == ["one"]
