"""One unit's run against in-memory ports: fresh, resumed, continued at the deadline, cancelled,
stopped by its budget or by an error every request shares — and what it visits on the way."""

from __future__ import annotations

import json

from promptdrop.jobs import FileRef, RunStatus
from promptdrop.messages import FileFailure, PromptFailure, UnitMessage
from promptdrop.records import JobStatus, RequestStatus

from tests.unit.jobs.conftest import BUCKET, WORK, World, lines
from tests.unit.test_errors_and_retries import status_error


async def test_a_fresh_file_is_answered_line_by_line_and_its_outputs_written(world: World) -> None:
    # Given a new upload of three prompts
    result = await world.upload("in/three.jsonl", lines("one", "two", "three"))

    # Then each was sent once, answered, journaled, and the outputs hold them in input order
    assert result.status is RunStatus.SUCCEEDED
    assert sorted(world.api.prompts) == ["one", "three", "two"]
    assert [r["custom_id"] for r in world.outputs("in/three.jsonl", ".out.jsonl")] == ["p1", "p2", "p3"]
    assert world.outputs("in/three.jsonl", ".errors.jsonl") == []
    job = world.job(result)
    assert (job.status, job.succeeded, job.units_done) == (JobStatus.SUCCEEDED, 3, 1)
    assert world.summary("in/three.jsonl")["counts"] == {"total": 3, "succeeded": 3, "failed": 0}
    assert world.bus.events[0][0] == "Job Succeeded"
    assert world.dead_letters() == []


async def test_a_run_reads_the_objects_header_once_and_asks_the_journal_for_the_job_never(world: World) -> None:
    # When a new upload runs start to finish
    await world.upload("in/once.jsonl", lines("a", "b"), **{"promptdrop-budget-tokens": "10000"})

    # Then the object was HEAD-ed once (its identity and its header), read by the run once (and once
    # more by the line count's first pass beside it: the operator's total), and the job item came
    # back with the writes the run makes anyway (start, progress, the finalizer's take)
    assert world.store.calls["head"] == 1
    assert world.store.calls["metadata"] == 0
    assert world.store.calls["stream"] == 2
    assert world.journal.calls["get_job"] == 0
    # and a first run asked the journal nothing of what was done before
    assert world.journal.requests.calls["finals"] == 0


async def test_a_redriven_file_sends_only_the_lines_with_no_final_answer(world: World) -> None:
    # Given a file whose run answered one line, then the key was refused at the second
    world.api.fail_on["two"] = status_error(401, code="invalid_api_key")
    runner = world.runner(max_concurrency=1)
    first = await world.upload("in/again.jsonl", lines("one", "two", "three"), runner=runner)
    assert first.status is RunStatus.FAILED
    world.api.prompts.clear()
    del world.api.fail_on["two"]

    # When its file_failure is redriven once the key is fixed
    result = await runner.run_file(FileRef(BUCKET, "in/again.jsonl"), redrive=True)

    # Then only the line never sent is sent: the answered one is done, and the refused one failed
    # for good (its own prompt_failure sends it again)
    assert world.api.prompts == ["three"]
    assert result.status is RunStatus.PARTIAL
    assert [m.custom_id for m in world.dead_letters() if isinstance(m, PromptFailure)] == ["p2"]
    assert world.journal.requests.calls["finals"] == 1  # a rerun asks the journal what is done


async def test_a_resumed_shard_sends_only_the_lines_not_done(world: World) -> None:
    # Given a job of one shard whose first two lines are answered on record
    body = lines("one", "two", "three", "four")
    info = world.store.put(BUCKET, "in/shard.jsonl", body)
    runner = world.runner(max_concurrency=1)
    unit = UnitMessage(job_id="j", bucket=BUCKET, key="in/shard.jsonl", etag=info.etag, unit="shard-0")
    await _start(world, "j", "in/shard.jsonl", info.etag, units_total=1)
    stopped = await runner.run_unit(unit, should_stop=lambda *_: len(world.api.prompts) >= 1)
    assert stopped.status is RunStatus.CONTINUED
    sent_first = len(world.api.prompts)
    assert 1 <= sent_first < 4

    # When the continuation runs
    (continuation,) = [m for m in world.queues.on(WORK) if isinstance(m, UnitMessage)]
    result = await runner.run_unit(continuation)

    # Then it sent the other lines only (each line once in all), and finished the job
    assert sorted(world.api.prompts) == ["four", "one", "three", "two"]
    assert world.journal.requests.calls["done_lines"] == 1  # a resumed shard reads the lines done
    assert result.status is RunStatus.SUCCEEDED
    assert sorted(world.journal.requests.of("j")) == [1, 2, 3, 4]


async def test_the_deadline_queues_a_continuation_at_the_first_line_not_sent(world: World) -> None:
    # Given a run whose deadline comes after its first answer
    info = world.store.put(BUCKET, "in/long.jsonl", lines("one", "two", "three"))
    await _start(world, "j", "in/long.jsonl", info.etag)
    unit = UnitMessage(job_id="j", bucket=BUCKET, key="in/long.jsonl", etag=info.etag, unit="all")
    runner = world.runner(max_concurrency=1)

    # When it runs
    result = await runner.run_unit(unit, should_stop=lambda *_: len(world.api.prompts) >= 1)

    # Then it continues on the work queue from the next line's offset, its unit lease given up
    assert result.status is RunStatus.CONTINUED
    (continuation,) = world.queues.on(WORK)
    assert isinstance(continuation, UnitMessage)
    sent = len(world.api.prompts)
    assert (continuation.hops, continuation.first_line) == (1, sent + 1)
    assert continuation.start == len(lines(*["x" * 3] * sent))  # the offset of the first line not sent
    assert world.journal.lease("j", "UNIT#all").owner is None
    assert world.journal.job("j").status is JobStatus.RUNNING


async def test_without_a_work_queue_the_deadline_hands_the_message_back(world: World) -> None:
    info = world.store.put(BUCKET, "in/back.jsonl", lines("one", "two"))
    await _start(world, "j", "in/back.jsonl", info.etag)
    unit = UnitMessage(job_id="j", bucket=BUCKET, key="in/back.jsonl", etag=info.etag, unit="all")
    result = await world.runner(work_queue_url=None).run_unit(unit, should_stop=lambda *_: True)
    assert result.status is RunStatus.UNFINISHED
    assert result.status.hand_back


async def test_a_cancelled_job_stops_before_sending_and_says_so_once(world: World) -> None:
    # Given a job a user cancelled
    info = world.store.put(BUCKET, "in/cancel.jsonl", lines("one", "two"))
    await _start(world, "j", "in/cancel.jsonl", info.etag)
    world.journal.jobs["j"].cancel_requested_at = "2026-01-01T00:00:00Z"
    unit = UnitMessage(job_id="j", bucket=BUCKET, key="in/cancel.jsonl", etag=info.etag, unit="all")

    # When its unit runs (twice: a redelivery)
    result = await world.runner().run_unit(unit)
    await world.runner().run_unit(unit)

    # Then nothing was sent, the job is CANCELLED, and one dead letter says how to resume it
    assert world.api.prompts == []
    assert result.status is RunStatus.CANCELLED
    assert world.journal.job("j").status is JobStatus.CANCELLED
    (letter,) = world.file_failures()
    assert letter.error["code"] == "cancelled"


async def test_a_spent_budget_stops_the_file_with_what_was_done_in_the_outputs(world: World) -> None:
    # Given a file of four prompts allowed two requests
    result = await world.upload(
        "in/capped.jsonl",
        lines("one", "two", "three", "four"),
        runner=world.runner(max_concurrency=1),
        **{"promptdrop-max-requests": "2"},
    )

    # Then two were sent, the job is BUDGET_EXCEEDED, and the dead letter counts what is left
    assert len(world.api.prompts) == 2
    assert result.status is RunStatus.BUDGET_EXCEEDED
    assert world.job(result).status is JobStatus.BUDGET_EXCEEDED
    assert len(world.outputs("in/capped.jsonl", ".out.jsonl")) == 2
    (letter,) = world.file_failures()
    assert letter.error["code"] == "budget_exceeded"
    assert "2 line(s) done, 2 left" in letter.error["message"]


async def test_a_refused_key_stops_the_job_and_tells_the_container(world: World) -> None:
    # Given an API that refuses the key
    world.api.fail_on["one"] = status_error(401, code="invalid_api_key")
    result = await world.upload("in/key.jsonl", lines("one", "two", "three"), runner=world.runner(max_concurrency=1))

    # Then the job is FAILED, nothing more was sent, and the handler learns to read the key again
    assert result.status is RunStatus.FAILED
    assert result.key_rejected
    assert world.api.prompts == ["one"]
    assert world.job(result).status is JobStatus.FAILED
    (letter,) = world.file_failures()
    assert letter.error["code"] == "invalid_api_key"


async def test_a_unit_held_by_a_live_run_is_left_to_it(world: World) -> None:
    info = world.store.put(BUCKET, "in/busy.jsonl", lines("one"))
    await _start(world, "j", "in/busy.jsonl", info.etag)
    unit = UnitMessage(job_id="j", bucket=BUCKET, key="in/busy.jsonl", etag=info.etag, unit="all")
    async with world.journal.unit_held("j", "all", lease_s=120):
        result = await world.runner().run_unit(unit)
    assert result.status is RunStatus.BUSY
    assert result.status.hand_back
    assert world.api.prompts == []


async def test_a_dead_runs_lease_expires_and_the_redelivery_takes_over(world: World) -> None:
    # Given a run that died holding the unit (its lease never given up)
    info = world.store.put(BUCKET, "in/dead.jsonl", lines("one"))
    await _start(world, "j", "in/dead.jsonl", info.etag)
    unit = UnitMessage(job_id="j", bucket=BUCKET, key="in/dead.jsonl", etag=info.etag, unit="all")
    dead = world.journal.unit_held("j", "all", lease_s=120)
    await dead.__aenter__()  # taken, and never given up

    # When the redelivery comes before, then after, the lease ran out
    early = await world.runner().run_unit(unit)
    world.clock.now += 121
    late = await world.runner().run_unit(unit)

    # Then the first is BUSY, the second runs the file
    assert (early.status, late.status) == (RunStatus.BUSY, RunStatus.SUCCEEDED)


async def test_a_line_that_is_not_a_request_fails_alone_and_a_repeated_id_too(world: World) -> None:
    body = lines("one") + "not json\n" + lines("two").replace("p1", "p1")
    result = await world.upload("in/bad.jsonl", body)
    records = world.journal.requests.of(result.job_id or "")
    assert records[1].status is RequestStatus.SUCCEEDED
    assert records[2].error is not None
    assert records[2].error["code"] == "invalid_line"
    assert records[3].repeat_of == 1
    assert world.api.prompts == ["one"]
    assert result.status is RunStatus.PARTIAL


async def test_a_file_replaced_before_its_run_fails_as_object_changed(world: World) -> None:
    info = world.store.put(BUCKET, "in/gone.jsonl", lines("one"))
    await _start(world, "j", "in/gone.jsonl", info.etag)
    world.store.put(BUCKET, "in/gone.jsonl", lines("new"))
    unit = UnitMessage(job_id="j", bucket=BUCKET, key="in/gone.jsonl", etag=info.etag, unit="all")
    result = await world.runner().run_unit(unit)
    assert result.status is RunStatus.FAILED
    (letter,) = world.file_failures()
    assert isinstance(letter, FileFailure)
    assert letter.error["code"] == "object_changed"
    assert world.journal.job("j").status is JobStatus.FAILED
    assert world.journal.lease("j", "UNIT#all").done_at is not None


async def _start(world: World, job_id: str, key: str, etag: str, units_total: int | None = 1) -> None:
    from promptdrop.jobs import output_keys
    from promptdrop.records import JobRecord

    outputs = output_keys(world.settings(), key, suffix=".jsonl")
    record = JobRecord(job_id=job_id, bucket=BUCKET, key=key, etag=etag, outputs=outputs, units_total=units_total)
    await world.journal.start_job(record)


async def test_a_dollar_budget_stops_at_the_first_line_of_a_model_without_a_price_reading_the_file_once(
    world: World,
) -> None:
    # Given a budget in dollars and a file whose third line names a model with no known price
    rows = [{"prompt": "one"}, {"prompt": "two"}, {"prompt": "three", "model": "my-own-finetune"}, {"prompt": "four"}]
    body = "".join(json.dumps({"custom_id": f"p{i}", **row}) + "\n" for i, row in enumerate(rows, 1))
    runner = world.runner(max_concurrency=1)
    result = await world.upload("in/priced.jsonl", body, runner=runner, **{"promptdrop-budget-usd": "5"})

    # Then the lines before it were sent, nothing of that model nor after it, and the file was read once
    assert world.api.prompts == ["one", "two"]
    assert world.store.calls["stream"] == 2  # the run's read, and the line count's beside it
    assert result.status is RunStatus.FAILED
    (letter,) = world.file_failures()
    assert letter.error["code"] == "unknown_price"
    assert "'my-own-finetune' has no known price" in letter.error["message"]
    assert "2 line(s) done, 2 left" in letter.error["message"]
    assert len(world.outputs("in/priced.jsonl", ".out.jsonl")) == 2
