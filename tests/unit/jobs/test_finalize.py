"""The finalizer: the run that completes a job's last unit writes the outputs — again if the journal moved meanwhile."""

from __future__ import annotations

from promptdrop.adapters.items import request_to_item
from promptdrop.jobs import FileRef, RunStatus, output_keys
from promptdrop.jobs.finalize import Finalizer
from promptdrop.jobs.output_writer import OutputWriter
from promptdrop.records import JobRecord, JobStatus, RequestRecord, RequestStatus

from tests.unit.jobs.conftest import BUCKET, World

KEY = "in/f.jsonl"
REF = FileRef(BUCKET, KEY)


async def job_with(world: World, *, answered: int, units_total: int = 1, units_done: int = 1) -> Finalizer:
    outputs = output_keys(world.settings(), KEY, suffix=".jsonl")
    record = JobRecord(job_id="j", bucket=BUCKET, key=KEY, etag="e", outputs=outputs, units_total=units_total)
    await world.journal.start_job(record)
    world.journal.jobs["j"].units_done = units_done
    await world.journal.requests.write("j", [answer(n) for n in range(1, answered + 1)], "now")
    writer = OutputWriter(journal=world.journal, store=world.store, default_model="gpt-4o-mini", publisher=world.bus)
    return Finalizer(journal=world.journal, writer=writer, lease_s=120)


def answer(line: int) -> RequestRecord:
    return RequestRecord(f"p{line}", line, RequestStatus.SUCCEEDED, 1, model="gpt-4o-mini", response='{"choices": []}')


async def test_a_job_with_shards_still_running_is_left_to_them(world: World) -> None:
    finalizer = await job_with(world, answered=2, units_total=3, units_done=2)
    result = await finalizer.finish_if_complete("j", REF, None)
    assert result.status is RunStatus.SHARD_DONE
    assert (BUCKET, f"results/{KEY}.summary.json") not in world.store.objects
    assert world.journal.job("j").status is JobStatus.RUNNING


async def test_the_last_unit_writes_the_outputs_and_closes_the_job(world: World) -> None:
    finalizer = await job_with(world, answered=3, units_total=3, units_done=3)
    result = await finalizer.finish_if_complete("j", REF, None)
    assert result.status is RunStatus.SUCCEEDED
    assert [r["custom_id"] for r in world.outputs(KEY, ".out.jsonl")] == ["p1", "p2", "p3"]
    job = world.journal.job("j")
    assert (job.status, job.succeeded, job.total, job.changes) == (JobStatus.SUCCEEDED, 3, 3, 1)
    assert world.journal.lease("j", "FIN").owner is None  # given up
    assert [kind for kind, _ in world.bus.events] == ["Job Succeeded"]


async def test_a_run_that_finds_the_outputs_being_written_hands_its_change_to_the_writer(world: World) -> None:
    finalizer = await job_with(world, answered=1)
    async with world.journal.finalizer_held("j", lease_s=120) as holder:
        assert holder.job is not None
        result = await finalizer.finalize("j", REF, None)
        assert result.status is RunStatus.HANDED_OFF
        # the holder learns of the change when it tries to give the lease up: it writes again
        assert await holder.release_unless_changed(holder.job.changes) == holder.job.changes + 1


async def test_a_change_while_writing_makes_the_writer_write_again(world: World) -> None:
    # Given a redrive that journals a new answer while the outputs are being written
    finalizer = await job_with(world, answered=1)
    writes = 0

    def redrive_meanwhile() -> None:
        nonlocal writes
        writes += 1
        if writes == 1:
            world.journal.jobs["j"].changes += 1  # its note_change
            world.journal.requests.items["j"]["REQ#p2"] = request_to_item("j", answer(2), "now")

    original = world.store.put_json

    async def put_json(bucket: str, key: str, value: object) -> None:
        await original(bucket, key, value)
        if key.endswith(".summary.json"):
            redrive_meanwhile()

    world.store.put_json = put_json  # type: ignore[method-assign]

    # When the finalizer runs, then the outputs it leaves hold the late answer too
    result = await finalizer.finalize("j", REF, None)
    assert writes == 2
    assert result.succeeded == 2
    assert [r["custom_id"] for r in world.outputs(KEY, ".out.jsonl")] == ["p1", "p2"]


async def test_a_lost_finalizer_lease_leaves_the_outputs_to_the_run_that_took_it(world: World) -> None:
    await job_with(world, answered=1)
    async with world.journal.finalizer_held("j", lease_s=10) as dead:
        world.clock.now += 11  # its run stalled past the lease
        async with world.journal.finalizer_held("j", lease_s=10) as alive:
            assert alive.job is not None
            await world.journal.note_change("j")
            assert await dead.release_unless_changed(0) is None  # nothing of its own to give up
            assert await alive.release_unless_changed(1) is None
