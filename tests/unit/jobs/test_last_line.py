"""The last line of defence (issue 20): an error a run did not expect ends the job, not the delivery.

A fault injected at each stage of a run — reading and parsing the file, dispatching, recording,
writing the outputs, planning shards, a redrive — ends the job FAILED with an ``internal_error``
file failure naming the error (never its traceback), the outputs holding what was answered; a
passing AWS fault hands the message back instead, unless it is the queue's last delivery. And the
job so ended is redriven to the end once the cause is gone.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from typing import Any

import pytest
from botocore.exceptions import ClientError
from promptdrop.formats import Parsed
from promptdrop.jobs import FileRef, RunStatus, source
from promptdrop.messages import PromptFailure
from promptdrop.records import JobStatus

from tests.unit.jobs.conftest import BUCKET, DLQ, World, lines
from tests.unit.test_errors_and_retries import status_error

KEY = "in/five.jsonl"
FIVE = lines("one", "two", "three", "four", "five")


def aws_error(code: str, status: int = 400) -> ClientError:
    return ClientError(
        {"Error": {"Code": code, "Message": f"{code} happened"}, "ResponseMetadata": {"HTTPStatusCode": status}}, "Op"
    )


def broken_parser(after: int, exc: Exception) -> Any:
    """The formats' stream parser, failing with ``exc`` once it has parsed ``after`` lines."""
    real = source.parse_stream

    async def parse(*args: Any, **kwargs: Any) -> AsyncGenerator[Parsed]:
        produced = 0
        async for item in real(*args, **kwargs):
            if produced == after:
                raise exc
            produced += 1
            yield item

    return parse


def assert_ended_by(world: World, job_id: str | None, error: str) -> str:
    """The job is FAILED and one internal_error file failure names ``error``; returns its message."""
    assert job_id is not None
    job = world.journal.job(job_id)
    assert job.status is JobStatus.FAILED
    (letter,) = world.file_failures()
    assert letter.job_id == job_id
    assert letter.error["code"] == "internal_error"
    assert error in letter.error["message"]
    assert "Traceback" not in letter.error["message"]
    assert 'File "' not in letter.error["message"]
    return letter.error["message"]


async def test_a_parser_that_crashes_mid_file_ends_the_job_with_what_was_answered(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a parser that fails on the third line with an error nobody foresaw
    monkeypatch.setattr(source, "parse_stream", broken_parser(2, RecursionError("maximum recursion depth exceeded")))

    # When the file runs
    result = await world.upload(KEY, FIVE, runner=world.runner(max_concurrency=1))

    # Then the job ends FAILED, the two lines sent answered in the outputs, the rest failed with the reason
    assert (result.status, result.reason) == (RunStatus.FAILED, "internal_error")
    message = assert_ended_by(world, result.job_id, "RecursionError: maximum recursion depth exceeded")
    assert "the rest was not sent" in message
    assert [r["custom_id"] for r in world.outputs(KEY, ".out.jsonl")] == ["p1", "p2"]
    assert world.summary(KEY)["status"] == "FAILED"
    assert world.bus.events[-1][0] == "Job Failed"

    # And once fixed, a redrive of the file finishes it, sending only what was not answered
    monkeypatch.undo()
    world.api.prompts.clear()
    again = await world.runner().run_file(FileRef(BUCKET, KEY), redrive=True)
    assert again.status is RunStatus.SUCCEEDED
    assert sorted(world.api.prompts) == ["five", "four", "three"]
    assert len(world.outputs(KEY, ".out.jsonl")) == 5


async def test_a_crash_while_dispatching_ends_the_job(world: World) -> None:
    # Given an answer whose handling fails in a way the engine does not know (a bug)
    world.api.fail_on["three"] = ZeroDivisionError("division by zero")

    result = await world.upload(KEY, FIVE, runner=world.runner(max_concurrency=1))

    assert result.status is RunStatus.FAILED
    assert_ended_by(world, result.job_id, "ZeroDivisionError: division by zero")
    assert [r["custom_id"] for r in world.outputs(KEY, ".out.jsonl")] == ["p1", "p2"]
    assert world.journal.lease(result.job_id or "", "UNIT#all").done_at is None  # resumable


async def test_a_journal_write_that_can_never_succeed_ends_the_job(world: World) -> None:
    # Given a journal that refuses the answers' items for good (an item DynamoDB will not take)
    world.journal.requests.fail("write", aws_error("ValidationException"), times=None)

    result = await world.upload(KEY, FIVE)

    # Then the job ends, and says why; nothing could be recorded, so the outputs are empty
    assert result.status is RunStatus.FAILED
    assert_ended_by(world, result.job_id, "ClientError: An error occurred (ValidationException)")
    assert world.outputs(KEY, ".out.jsonl") == []


async def test_a_passing_aws_fault_hands_the_message_back_and_leaves_the_job_running(world: World) -> None:
    # Given DynamoDB throttling the answers' writes (after botocore's own retries)
    world.journal.requests.fail("write", aws_error("ProvisionedThroughputExceededException"))
    world.store.put(BUCKET, KEY, FIVE)

    # When the run meets it, then it raises (the handler reports the message failed: it comes back)
    with pytest.raises(ClientError):
        await world.runner().run_file(FileRef(BUCKET, KEY))
    (job,) = world.journal.jobs.values()
    assert job.status is JobStatus.RUNNING
    assert world.dead_letters() == []

    # And the redelivery resumes and finishes it
    result = await world.runner().run_file(FileRef(BUCKET, KEY))
    assert result.status is RunStatus.SUCCEEDED


async def test_on_the_queues_last_delivery_even_a_passing_fault_ends_the_job(world: World) -> None:
    world.journal.requests.fail("write", aws_error("ThrottlingException"))
    world.store.put(BUCKET, KEY, FIVE)

    result = await world.runner().run_file(FileRef(BUCKET, KEY), last_delivery=True)

    assert result.status is RunStatus.FAILED
    assert_ended_by(world, result.job_id, "ThrottlingException")


async def test_outputs_that_cannot_be_written_end_the_job_with_the_reason_on_its_item(world: World) -> None:
    # Given an output writer that fails (here: the store refuses the outputs with an unexpected error)
    world.store.fail("put", ValueError("the output is not what S3 takes"), times=None)

    result = await world.upload(KEY, FIVE)

    # Then the job is FAILED (its item says why: every answer is kept in the journal)
    assert result.status is RunStatus.FAILED
    message = assert_ended_by(world, result.job_id, "ValueError: the output is not what S3 takes")
    assert "the outputs could not be written" in message
    job = world.job(result)
    assert job.error is not None
    assert job.error["code"] == "internal_error"
    assert len(world.journal.requests.of(result.job_id or "")) == 5

    # And once fixed, redriving the file writes them (nothing is sent again)
    world.store.heal("put")
    world.api.prompts.clear()
    again = await world.runner().run_file(FileRef(BUCKET, KEY), redrive=True)
    assert again.status is RunStatus.SUCCEEDED
    assert world.api.prompts == []
    assert len(world.outputs(KEY, ".out.jsonl")) == 5


async def test_a_crash_while_planning_shards_ends_the_job(world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    from promptdrop.jobs import planning

    def broken(raw: bytes, line: int) -> str:
        raise KeyError("custom_id")

    monkeypatch.setattr(planning, "custom_id_of", broken)
    world.store.put(BUCKET, KEY, lines(*(f"prompt {i}" for i in range(100))))  # over one shard

    result = await world.runner(shard_bytes=1024).run_file(FileRef(BUCKET, KEY))

    assert result.status is RunStatus.FAILED
    assert_ended_by(world, result.job_id, "KeyError: 'custom_id'")
    assert world.api.prompts == []


async def test_a_redrive_that_crashes_puts_its_prompt_back_in_the_dead_letter_queue_with_the_reason(
    world: World,
) -> None:
    # Given a finished job with a failed prompt, and a journal that fails reading it back
    world.api.fail_on["two"] = status_error(400)
    result = await world.upload(KEY, lines("one", "two"))
    (failure,) = [m for m in world.dead_letters() if isinstance(m, PromptFailure)]
    world.queues.sent[DLQ].clear()
    world.journal.requests.fail("prior", AttributeError("'NoneType' object has no attribute 'get'"))

    # When it is redriven
    redriven = await world.runner().redrive(failure)

    # Then the prompt is back in the dead-letter queue, saying why, ready to be redriven again
    assert redriven.status is RunStatus.FAILED
    (back,) = world.dead_letters()
    assert isinstance(back, PromptFailure)
    assert (back.custom_id, back.request) == (failure.custom_id, failure.request)
    assert back.error["code"] == "internal_error"
    assert "AttributeError" in back.error["message"]
    assert world.job(result).status is JobStatus.PARTIAL  # the job is untouched


async def test_a_crash_and_then_outputs_that_cannot_be_written_leave_one_dead_letter_and_a_failed_job(
    world: World,
) -> None:
    # Given a run that crashes while dispatching, and outputs that cannot be written either
    world.api.fail_on["two"] = ZeroDivisionError("division by zero")
    world.store.fail("put", ValueError("no outputs today"), times=None)

    result = await world.upload(KEY, FIVE, runner=world.runner(max_concurrency=1))

    # Then the job is FAILED with the run's reason on its item, and one dead letter says so
    assert result.status is RunStatus.FAILED
    assert_ended_by(world, result.job_id, "ZeroDivisionError: division by zero")
    job = world.job(result)
    assert job.error is not None
    assert "ZeroDivisionError" in job.error["message"]


async def test_a_budget_stop_whose_outputs_cannot_be_written_still_ends_the_job(world: World) -> None:
    # Given a budget that stops the file, and outputs that cannot be written
    world.store.fail("put", ValueError("no outputs today"), times=None)
    runner = world.runner(max_concurrency=1)

    result = await world.upload(KEY, FIVE, runner=runner, **{"promptdrop-max-requests": "2"})

    # Then the budget's dead letter went out, and the job ended FAILED saying why the outputs are missing
    assert result.status is RunStatus.FAILED
    codes = [letter.error["code"] for letter in world.file_failures()]
    assert codes == ["budget_exceeded", "internal_error"]
    job = world.job(result)
    assert job.status is JobStatus.FAILED
    assert job.error is not None
    assert "the outputs could not be written" in job.error["message"]


async def test_a_continuation_that_cannot_be_queued_for_good_ends_the_job(world: World) -> None:
    # Given a work queue that refuses the continuation with an error that will not pass
    world.queues.fail("send", TypeError("Object of type bytes is not JSON serializable"))
    world.store.put(BUCKET, KEY, FIVE)
    runner = world.runner(max_concurrency=1)

    result = await runner.run_file(FileRef(BUCKET, KEY), should_stop=lambda *_: len(world.api.prompts) >= 1)

    assert result.status is RunStatus.FAILED
    assert_ended_by(world, result.job_id, "TypeError: Object of type bytes is not JSON serializable")
