"""The batch mode against in-memory ports and an in-memory Batch API that each test moves along:
submitted, waited on, merged once (also when a check is duplicated or dies mid-merge), fallen back,
cancelled, held back by the enqueued-token limit."""

from __future__ import annotations

import json
from typing import Any

import pytest
from botocore.exceptions import ClientError
from promptdrop.engine.request import Request
from promptdrop.formats.shapes import request_from_object
from promptdrop.jobs import JobRunner, RunStatus
from promptdrop.jobs.cost_guard import worst_case
from promptdrop.messages import UnitMessage
from promptdrop.records import JobStatus

from tests.unit.jobs.conftest import WORK, World, lines
from tests.unit.jobs.test_last_line import aws_error

BATCH = {"promptdrop-mode": "batch"}


def answered(line: dict[str, Any]) -> dict[str, Any]:
    """What the provider's output file says of an input line: its prompt, reversed."""
    prompt = line["body"]["messages"][-1]["content"]
    body = {
        "id": "chatcmpl-b",
        "object": "chat.completion",
        "model": line["body"]["model"],
        "choices": [{"index": 0, "message": {"role": "assistant", "content": prompt[::-1]}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15},
        "service_tier": "default",
    }
    return {"custom_id": line["custom_id"], "response": {"status_code": 200, "request_id": "req_b", "body": body}}


def first_only(line: dict[str, Any]) -> dict[str, Any] | None:
    """The provider ran the first line only."""
    return answered(line) if line["custom_id"] == "p1" else None


def checks(world: World) -> list[UnitMessage]:
    """The check messages queued so far (taken off the queue: the test runs them)."""
    sent = world.queues.sent.setdefault(WORK, [])
    taken = [m for m in sent if isinstance(m, UnitMessage)]
    sent.clear()
    return taken


async def check(world: World, runner: JobRunner) -> list[RunStatus]:
    return [(await runner.run_unit(message)).status for message in checks(world)]


async def test_a_batch_file_is_submitted_waits_with_a_delayed_check_and_is_merged_in_input_order(
    world: World,
) -> None:
    runner = world.runner(batch_poll_s=30)
    # Given a three-line file uploaded in batch mode
    first = await world.upload("in/b.jsonl", lines("one", "two", "three"), runner=runner, **BATCH)

    # Then nothing was sent in real time: one batch holds the three lines, and the run waits
    assert first.status is RunStatus.WAITING
    assert world.api.prompts == []
    (batch_id,) = world.batches.batches
    assert [line["custom_id"] for line in world.batches.inputs(batch_id)] == ["p1", "p2", "p3"]
    assert world.batches.batches[batch_id]["metadata"]["promptdrop_job"] == first.job_id
    assert world.queues.delays == [30]  # the first check after PROMPTDROP_BATCH_POLL_S
    assert world.job(first).status is JobStatus.RUNNING

    # When a check finds the batch still running, it waits again, longer
    assert await check(world, runner) == [RunStatus.WAITING]
    assert world.queues.delays[-1] == 60

    # When the provider finishes it and the next check comes
    world.batches.finish(batch_id, answered)
    assert await check(world, runner) == [RunStatus.SUCCEEDED]

    # Then the answers are the outputs, in input order, billed at the batch tier; the files are gone
    out = world.outputs("in/b.jsonl", ".out.jsonl")
    assert [r["custom_id"] for r in out] == ["p1", "p2", "p3"]
    assert out[0]["response"]["body"]["choices"][0]["message"]["content"] == "eno"
    assert world.summary("in/b.jsonl")["service_tiers"] == {"batch": 3}
    assert world.batches.files == {}
    assert world.api.prompts == []


async def test_one_batch_per_endpoint_and_model_each_within_the_request_limit(world: World) -> None:
    runner = world.runner(batch_max_requests=2)
    body = "".join(
        json.dumps({"custom_id": f"c{i}", "prompt": f"q{i}", "model": model}) + "\n"
        for i, model in enumerate(["gpt-4o-mini", "gpt-4o", "gpt-4o-mini", "gpt-4o-mini", "gpt-4o"], 1)
    )
    await world.upload("in/mixed.jsonl", body, runner=runner, **BATCH)

    groups = [
        (b["metadata"]["promptdrop_seq"], {x["body"]["model"] for x in world.batches.inputs(b["id"])}, b["total"])
        for b in world.batches.batches.values()
    ]
    assert all(len(models) == 1 for _, models, _ in groups)
    assert all(total <= 2 for _, _, total in groups)
    assert sorted(x["custom_id"] for b in world.batches.batches for x in world.batches.inputs(b)) == [
        "c1",
        "c2",
        "c3",
        "c4",
        "c5",
    ]


async def test_a_duplicated_check_is_dropped_and_each_line_is_recorded_once(world: World) -> None:
    runner = world.runner()
    await world.upload("in/dup.jsonl", lines("a", "b"), runner=runner, **BATCH)
    (message,) = checks(world)

    # When the same check is delivered twice while the batch runs
    assert (await runner.run_unit(message)).status is RunStatus.WAITING
    assert (await runner.run_unit(message)).status is RunStatus.WAITING

    # Then only the first queued the next check: the duplicate's chain ends there
    (following,) = checks(world)
    assert following.check == message.check + 1

    # When the batch ends and the next check is delivered twice too
    (batch_id,) = world.batches.batches
    world.batches.finish(batch_id, answered)
    first = await runner.run_unit(following)
    second = await runner.run_unit(following)

    # Then the first merged, the second found the unit done: each line recorded once
    assert first.status is RunStatus.SUCCEEDED
    assert (first.run_succeeded, second.run_succeeded) == (2, 0)
    assert world.journal.requests.written == {"p1": 1, "p2": 1}
    assert [r["custom_id"] for r in world.outputs("in/dup.jsonl", ".out.jsonl")] == ["p1", "p2"]


async def test_a_check_that_dies_mid_merge_is_merged_by_the_next_with_each_line_once(world: World) -> None:
    runner = world.runner(max_concurrency=1)  # one answer per journal write
    await world.upload("in/die.jsonl", lines("a", "b", "c"), runner=runner, **BATCH)
    (message,) = checks(world)
    (batch_id,) = world.batches.batches
    world.batches.finish(batch_id, answered)

    # When the check's run dies after the first answer is on record (the journal's second write fails)
    world.journal.requests.fail("write", aws_error("ThrottlingException"), after=1)
    with pytest.raises(ClientError):
        await runner.run_unit(message)
    world.journal.requests.heal("write")

    # Then its redelivery merges the rest: each line once, the files deleted once merged
    result = await runner.run_unit(message)
    assert result.status is RunStatus.SUCCEEDED
    assert world.journal.requests.written["p1"] == 1
    assert [r["custom_id"] for r in world.outputs("in/die.jsonl", ".out.jsonl")] == ["p1", "p2", "p3"]
    assert world.batches.files == {}


@pytest.mark.parametrize("fallback", ["realtime", "fail"])
async def test_an_expired_batch_keeps_what_it_finished_and_the_rest_follows_the_fallback(
    world: World, fallback: str
) -> None:
    runner = world.runner()
    await world.upload(
        "in/exp.jsonl", lines("a", "b", "c"), runner=runner, **BATCH, **{"promptdrop-fallback": fallback}
    )
    (batch_id,) = world.batches.batches

    # When the batch expires with its first line done
    world.batches.finish(batch_id, first_only, status="expired")
    (result,) = [await runner.run_unit(m) for m in checks(world)]

    out = world.outputs("in/exp.jsonl", ".out.jsonl")
    if fallback == "realtime":
        # Then the two lines left were sent in real time, and only they
        assert result.status is RunStatus.SUCCEEDED
        assert sorted(world.api.prompts) == ["b", "c"]
        assert [r["custom_id"] for r in out] == ["p1", "p2", "p3"]
    else:
        # Then they failed with batch_expired, each in the errors file and the DLQ, redrivable
        assert result.status is RunStatus.PARTIAL
        assert world.api.prompts == []
        errors = world.outputs("in/exp.jsonl", ".errors.jsonl")
        assert [(e["custom_id"], e["error"]["code"]) for e in errors] == [
            ("p2", "batch_expired"),
            ("p3", "batch_expired"),
        ]
        assert len([m for m in world.dead_letters() if getattr(m, "request", None)]) == 2


async def test_a_batch_refused_for_enqueued_tokens_is_created_again_once_the_others_drain(world: World) -> None:
    runner = world.runner(batch_max_requests=1)
    await world.upload("in/tok.jsonl", lines("a", "b"), runner=runner, **BATCH)
    first, second = world.batches.batches
    world.batches.refuse(second, "token_limit_exceeded", "Enqueued token limit reached for gpt-4o-mini")

    # When a check finds the second refused while the first still runs: it waits, nothing failed
    assert await check(world, runner) == [RunStatus.WAITING]
    assert world.batches.created == 2

    # When the first ends, the next check creates the second again from its uploaded file
    world.batches.finish(first, answered)
    assert await check(world, runner) == [RunStatus.WAITING]
    assert world.batches.created == 3
    third = list(world.batches.batches)[-1]
    assert [x["custom_id"] for x in world.batches.inputs(third)] == ["p2"]

    world.batches.finish(third, answered)
    assert await check(world, runner) == [RunStatus.SUCCEEDED]
    assert world.api.prompts == []


async def test_a_cancelled_job_cancels_its_batches_and_keeps_what_they_finished(world: World) -> None:
    runner = world.runner()
    first = await world.upload("in/cancel.jsonl", lines("a", "b"), runner=runner, **BATCH)
    (batch_id,) = world.batches.batches
    assert first.job_id is not None
    world.journal.jobs[first.job_id].cancel_requested_at = "2026-12-07T00:00:00Z"

    # When the next check comes: the batch is asked to stop
    assert await check(world, runner) == [RunStatus.WAITING]
    assert world.batches.batches[batch_id]["status"] == "cancelling"

    # When the provider has cancelled it with one line done
    world.batches.finish(
        batch_id, lambda line: answered(line) if line["custom_id"] == "p1" else None, status="cancelled"
    )
    (result,) = [await runner.run_unit(m) for m in checks(world)]

    # Then the job is CANCELLED with that line kept, nothing sent in real time
    assert result.status is RunStatus.CANCELLED
    assert world.api.prompts == []
    assert [r["custom_id"] for r in world.outputs("in/cancel.jsonl", ".out.jsonl")] == ["p1"]


async def test_a_run_that_died_after_creating_its_batch_finds_it_instead_of_creating_another(world: World) -> None:
    runner = world.runner()
    # Given a run that dies right after the provider created the batch (noting its id fails)
    world.journal.fail("save_batches", aws_error("ThrottlingException"), after=1)
    with pytest.raises(ClientError):
        await world.upload("in/lost.jsonl", lines("a"), runner=runner, **BATCH)
    world.journal.heal("save_batches")

    # When the upload is delivered again
    await world.upload("in/lost.jsonl", lines("a"), runner=runner, **BATCH)

    # Then the batch the dead run created is the one waited on: no second one
    assert world.batches.created == 1


async def test_a_csv_in_batch_mode_keeps_its_line_numbers_and_columns(world: World) -> None:
    runner = world.runner()
    csv = "city,country\nParis,France\nLima,Peru\nOslo,Norway\n"
    header = BATCH | {"promptdrop-template": "Name a museum in {city}."}
    await world.upload("in/museums.csv", csv, runner=runner, **header)
    (batch_id,) = world.batches.batches
    world.batches.finish(batch_id, answered)

    assert await check(world, runner) == [RunStatus.SUCCEEDED]
    rows = world.store.text("in", "results/in/museums.csv.out.csv").splitlines()
    assert rows[0].lstrip("\ufeff").startswith("city,country,answer")
    assert [row.split(",")[0] for row in rows[1:]] == ["Paris", "Lima", "Oslo"]
    assert "ni muesum a emaN" in rows[1]  # its own answer (the prompt reversed), on its own row


async def test_a_batch_file_with_nothing_to_send_ends_at_once(world: World) -> None:
    runner = world.runner()
    result = await world.upload("in/bad.jsonl", '{"custom_id": "x"}\nnot json\n', runner=runner, **BATCH)

    assert result.status is RunStatus.PARTIAL or result.status is RunStatus.FAILED
    assert world.batches.batches == {}
    assert world.queues.sent.get(WORK, []) == []
    assert len(world.outputs("in/bad.jsonl", ".errors.jsonl")) == 2


async def test_a_budget_submits_what_fits_then_more_as_the_batches_settle(world: World) -> None:
    # Given 12 prompts and a budget of 4 worst cases at the Batch API's rates (answers cost far less)
    body = lines(*(f"q{i}" for i in range(12)))
    budget = 4 * worst_case(_first(body)).usd * 0.5  # batch rates: half the standard for gpt-4o-mini
    runner = world.runner()
    await world.upload("in/budget.jsonl", body, runner=runner, **BATCH, **{"promptdrop-budget-usd": f"{budget:.9f}"})

    # When each batch is answered as the checks come, until the job ends
    submitted: list[int] = []
    for _ in range(20):
        for batch_id in world.batches.running():
            submitted.append(world.batches.batches[batch_id]["total"])
            world.batches.finish(batch_id, answered)
        statuses = await check(world, runner)
        if statuses and statuses[-1] is not RunStatus.WAITING:
            break

    # Then it submitted what fitted (4 worst cases), more each time the batches settled below their
    # worst case, until every line was answered — never past its budget, nothing left at the provider
    assert statuses[-1] is RunStatus.SUCCEEDED
    assert submitted[0] <= 4
    assert len(submitted) >= 2
    assert sum(submitted) == 12
    summary = world.summary("in/budget.jsonl")
    assert summary["estimated_cost_usd"] <= budget
    assert world.batches.running() == []


def _first(body: str) -> Request:
    line = body.splitlines()[0]
    request = request_from_object(json.loads(line), line=1, default_id="x", default_model="gpt-4o-mini", text_len=9)
    assert isinstance(request, Request)
    return request


async def test_a_budget_that_fits_no_request_ends_the_batch_job_with_nothing_submitted(world: World) -> None:
    body = lines("a", "b")
    budget = 0.5 * worst_case(_first(body)).usd * 0.5  # half of one worst case at batch rates
    header = BATCH | {"promptdrop-budget-usd": f"{budget:.12f}"}
    result = await world.upload("in/tiny.jsonl", body, runner=world.runner(), **header)

    assert result.status is RunStatus.BUDGET_EXCEEDED
    assert world.batches.batches == {}
    assert [f.error["code"] for f in world.file_failures()] == ["budget_exceeded"]
