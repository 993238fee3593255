"""The runner's entry points: a new upload planned (one unit, or shards on the work queue), a finished
job left alone, a missing object failed — and the shards of a large file run to one set of outputs."""

from __future__ import annotations

import json

from promptdrop.jobs import FileRef, RunStatus
from promptdrop.messages import FileFailure, PromptFailure, UnitMessage
from promptdrop.records import JobStatus

from tests.unit.jobs.conftest import BUCKET, WORK, World, lines

KEY = "in/large.jsonl"


def large(n: int, *, repeat_at: int | None = None) -> str:
    rows = [{"custom_id": f"p{i}", "prompt": f"prompt number {i:04d}"} for i in range(1, n + 1)]
    if repeat_at is not None:
        rows[repeat_at - 1]["custom_id"] = "p1"
    return "".join(json.dumps(row) + "\n" for row in rows)


async def test_a_large_file_is_split_into_shards_that_finish_the_job_together(world: World) -> None:
    # Given a file over the shard size, whose line 30 reuses line 1's custom_id
    world.store.put(BUCKET, KEY, large(60, repeat_at=30))
    runner = world.runner(shard_bytes=1024)

    # When it is uploaded, then it is planned: shards queued, the repeat failed before any shard runs
    planned = await runner.run_file(FileRef(BUCKET, KEY))
    assert planned.status is RunStatus.SHARDED
    shards = [m for m in world.queues.on(WORK) if isinstance(m, UnitMessage)]
    assert len(shards) > 1
    assert world.job(planned).units_total == len(shards)
    assert world.api.prompts == []
    (repeat,) = [m for m in world.dead_letters() if isinstance(m, PromptFailure)]
    assert (repeat.line, repeat.error["message"]) == (30, "custom_id 'p1' is already used by line 1")

    # When the shards run (in any order), then the last one writes the outputs: every line once
    results = [await runner.run_unit(shard) for shard in reversed(shards)]
    assert [r.status for r in results[:-1]] == [RunStatus.SHARD_DONE] * (len(shards) - 1)
    assert results[-1].status is RunStatus.PARTIAL
    assert len(world.api.prompts) == 59
    assert len(world.outputs(KEY, ".out.jsonl")) == 59
    assert [r["custom_id"] for r in world.outputs(KEY, ".errors.jsonl")] == ["p1"]
    job = world.job(planned)
    assert (job.status, job.units_done, job.succeeded, job.failed) == (JobStatus.PARTIAL, len(shards), 59, 1)


async def test_a_redelivered_upload_of_a_finished_job_is_skipped(world: World) -> None:
    first = await world.upload("in/done.jsonl", lines("one"))
    again = await world.runner().run_file(FileRef(BUCKET, "in/done.jsonl"))
    assert (first.status, again.status) == (RunStatus.SUCCEEDED, RunStatus.SKIPPED)
    assert world.api.prompts == ["one"]


async def test_a_redelivered_upload_of_a_split_file_queues_no_second_set_of_shards(world: World) -> None:
    world.store.put(BUCKET, KEY, large(60))
    runner = world.runner(shard_bytes=1024)
    await runner.run_file(FileRef(BUCKET, KEY))
    queued = len(world.queues.on(WORK))
    again = await runner.run_file(FileRef(BUCKET, KEY))
    assert again.status is RunStatus.SKIPPED
    assert len(world.queues.on(WORK)) == queued


async def test_an_object_gone_before_its_job_began_fails_as_not_found(world: World) -> None:
    result = await world.runner().run_file(FileRef(BUCKET, "in/never.jsonl"))
    assert result.status is RunStatus.FAILED
    (letter,) = world.dead_letters()
    assert isinstance(letter, FileFailure)
    assert (letter.job_id, letter.error["code"]) == (None, "not_found")


async def test_a_file_rejected_whole_fails_with_its_code_and_sends_nothing(world: World) -> None:
    result = await world.upload("in/empty.jsonl", "\n\n")
    assert result.status is RunStatus.FAILED
    (letter,) = world.file_failures()
    assert letter.error["code"] == "empty"
    assert world.job(result).status is JobStatus.FAILED
    assert world.api.prompts == []
