"""The recorder: outcomes into the journal and dead letters, in batches, a worker held until its answer is on record."""

from __future__ import annotations

import asyncio
import json

import pytest
from promptdrop.engine.dispatch import Outcome
from promptdrop.engine.errors import Disposition, ErrorInfo
from promptdrop.engine.request import Request
from promptdrop.formats import LineError
from promptdrop.jobs.progress import Progress
from promptdrop.jobs.recorder import COLUMNS_MAX_BYTES, Recorder, Recorders
from promptdrop.messages import PromptFailure
from promptdrop.prices import cost_usd
from promptdrop.records import ErrorRecord, JobRecord, RequestStatus

from tests.unit.jobs.conftest import BUCKET, DLQ, World


def request(line: int, prompt: str = "hi", **extra: object) -> Request:
    body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": prompt}], **extra}
    return Request(line, f"p{line}", json.dumps(body).encode(), 10)


def answered(req: Request, content: str = "ok") -> Outcome:
    body = {
        "model": "gpt-4o-mini",
        "choices": [{"message": {"content": content}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 7, "completion_tokens": 3, "prompt_tokens_details": {"cached_tokens": 2}},
    }
    return Outcome(req, attempts=1, latency_ms=12, status_code=200, request_id="req_1", response=body)


def failed(req: Request) -> Outcome:
    error = ErrorInfo(ErrorRecord("invalid_request_error", "bad", "no such thing", 400), Disposition.PERMANENT)
    return Outcome(req, attempts=1, latency_ms=5, error=error)


async def recorder_for(world: World, *, concurrency: int = 4) -> tuple[Recorder, Progress]:
    await world.journal.start_job(JobRecord(job_id="j", bucket=BUCKET, key="in/f.jsonl", etag="e"))
    progress = Progress(world.journal, "j")
    recorders = Recorders(
        journal=world.journal,
        messages=world.queues,
        store=world.store,
        dlq_url=DLQ,
        output_bucket=None,
        output_prefix="results/",
        max_concurrency=concurrency,
    )
    return recorders.for_job("j", BUCKET, "in/f.jsonl", "e", progress), progress


async def test_an_answer_is_on_record_when_its_worker_is_let_go(world: World) -> None:
    recorder, progress = await recorder_for(world, concurrency=1)
    async with recorder:
        await recorder.outcome(answered(request(1)))
        # the batch is one worker's: written before outcome() returned
        (record,) = world.journal.requests.of("j").values()
    assert (record.status, record.prompt_tokens, record.completion_tokens, record.cached_tokens) == (
        RequestStatus.SUCCEEDED,
        7,
        3,
        2,
    )
    assert json.loads(record.response or "")["choices"][0]["message"]["content"] == "ok"
    assert (progress.run.succeeded, progress.run.prompt_tokens) == (1, 7)


async def test_prompt_cache_writes_are_recorded_and_priced_above_input(world: World) -> None:
    # Given a Responses answer from a model that bills cache writes ($15.625 a million against $12.50 input)
    recorder, progress = await recorder_for(world, concurrency=1)
    usage = {
        "input_tokens": 4000,
        "input_tokens_details": {"cached_tokens": 1000, "cache_write_tokens": 2048},
        "output_tokens": 10,
    }
    body = {"object": "response", "model": "gpt-5.6-cyber", "status": "completed", "output": [{}], "usage": usage}
    async with recorder:
        await recorder.outcome(Outcome(request(1), attempts=1, latency_ms=9, status_code=200, response=body))
    # Then its item keeps both counts, and the run's spending prices each at its rate
    (record,) = world.journal.requests.of("j").values()
    assert (record.prompt_tokens, record.cached_tokens, record.cache_write_tokens) == (4000, 1000, 2048)
    expected = cost_usd("gpt-5.6-cyber", 4000, 10, 1000, cache_write_tokens=2048)
    assert expected is not None
    assert progress.spent().usd == pytest.approx(expected, abs=1e-6)
    assert expected > (cost_usd("gpt-5.6-cyber", 4000, 10, 1000) or 0) + 2048 * 3e-6  # the writes cost more


async def test_counted_is_told_once_the_cost_counts_before_the_write_is_awaited(world: World) -> None:
    # Given a recorder that writes once four answers wait
    recorder, progress = await recorder_for(world, concurrency=4)
    seen: list[tuple[int, int]] = []

    def counted() -> None:  # what the cost guard sees when it lets the reservation go
        seen.append((progress.run.succeeded, len(world.journal.requests.of("j"))))

    async with recorder:
        await recorder.outcome(answered(request(1)), counted=counted)
    # Then it was told with the answer counted in the progress and nothing written yet
    assert seen == [(1, 0)]
    assert len(world.journal.requests.of("j")) == 1


async def test_answers_are_written_together_in_one_batch(world: World) -> None:
    recorder, _ = await recorder_for(world, concurrency=4)
    async with recorder:
        await asyncio.gather(*(recorder.outcome(answered(request(n))) for n in range(1, 5)))
    assert world.journal.requests.calls["write"] == 1
    assert sorted(world.journal.requests.of("j")) == [1, 2, 3, 4]


async def test_a_failure_is_dead_lettered_before_it_is_journaled_and_never_replaces_an_answer(world: World) -> None:
    recorder, progress = await recorder_for(world, concurrency=1)
    async with recorder:
        await recorder.outcome(answered(request(1)))
        await recorder.outcome(failed(request(1)))  # a late duplicate of the same custom_id
        await recorder.outcome(failed(request(2)))
    records = world.journal.requests.of("j")
    assert records[1].status is RequestStatus.SUCCEEDED
    assert records[2].error is not None
    assert records[2].error["code"] == "bad"
    letters = [m for m in world.queues.on(DLQ) if isinstance(m, PromptFailure)]
    assert [(m.custom_id, m.error["code"]) for m in letters] == [("p1", "bad"), ("p2", "bad")]
    assert letters[1].request is not None
    assert letters[1].request["url"] == "/v1/chat/completions"
    assert progress.run.failed == 2


async def test_a_failed_dead_letter_send_leaves_the_failures_off_the_journal(world: World) -> None:
    # Given the dead-letter queue refusing the batch
    recorder, _ = await recorder_for(world, concurrency=1)
    world.queues.fail("send", ConnectionError("sqs unreachable"))

    # When a failure is recorded, then the worker learns of it (its run fails: the message comes back)
    with pytest.raises(ConnectionError):
        async with recorder:
            await recorder.outcome(failed(request(1)))
    # and nothing was journaled: the redelivery runs it again and dead-letters it then
    assert world.journal.requests.of("j") == {}


async def test_bad_lines_and_repeats_fail_alone_with_their_reason(world: World) -> None:
    recorder, _ = await recorder_for(world)
    async with recorder:
        await recorder.line_error(LineError(2, "p2", "line 2 is not JSON"))
        await recorder.repeat(3, "p1", 1)
    records = world.journal.requests.of("j")
    assert records[2].error == {"type": "invalid_request", "code": "invalid_line", "message": "line 2 is not JSON"}
    assert (records[3].repeat_of, records[3].error and records[3].error["message"]) == (
        3 - 2,
        "custom_id 'p1' is already used by line 1",
    )
    assert all(isinstance(m, PromptFailure) and m.request is None for m in world.queues.on(DLQ))


async def test_an_answer_too_large_for_an_item_goes_to_s3_and_the_item_points_to_it(world: World) -> None:
    recorder, _ = await recorder_for(world, concurrency=1)
    async with recorder:
        await recorder.outcome(answered(request(1), content="x" * 400_000))
    (record,) = world.journal.requests.of("j").values()
    assert record.response is None
    assert record.response_s3_key == "results/in/f.jsonl.responses/1.json"
    kept = json.loads(world.store.text(BUCKET, record.response_s3_key))
    assert len(kept["choices"][0]["message"]["content"]) == 400_000


async def test_a_csv_rows_cells_are_kept_on_its_item_or_in_s3_when_large(world: World) -> None:
    recorder, _ = await recorder_for(world, concurrency=1)
    small = Request(2, "r2", request(2).body, 10, columns=(("name", "Ada"),))
    large = Request(3, "r3", request(3).body, 10, columns=(("text", "y" * COLUMNS_MAX_BYTES),))
    async with recorder:
        await recorder.outcome(answered(small))
        await recorder.outcome(answered(large))
    records = world.journal.requests.of("j")
    assert json.loads(records[2].columns or "") == {"cells": [["name", "Ada"]], "fields": []}
    assert records[3].columns is None
    assert records[3].columns_s3_key == "results/in/f.jsonl.columns/3.json"


async def test_a_run_that_fails_still_records_what_was_answered(world: World) -> None:
    recorder, _ = await recorder_for(world, concurrency=8)
    waiting: list[asyncio.Future[None]] = []

    async def run() -> None:
        async with recorder:
            waiting.append(asyncio.ensure_future(recorder.outcome(answered(request(1)))))
            await asyncio.sleep(0)  # the answer waits for company (a batch of 8)
            raise RuntimeError("the input broke")

    with pytest.raises(RuntimeError):
        await run()
    await asyncio.wait_for(waiting[0], 1)
    assert list(world.journal.requests.of("j")) == [1]
