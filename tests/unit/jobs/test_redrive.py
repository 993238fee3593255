"""A redriven ``prompt_failure``: that one request again, merged into its job's outputs."""

from __future__ import annotations

from promptdrop.jobs import RunStatus
from promptdrop.messages import PromptFailure
from promptdrop.records import JobStatus, RequestStatus

from tests.unit.jobs.conftest import World, lines
from tests.unit.test_errors_and_retries import status_error

KEY = "in/r.jsonl"


async def failed_once(world: World, **metadata: str) -> tuple[str, PromptFailure]:
    world.api.fail_on["two"] = status_error(400)
    result = await world.upload(KEY, lines("one", "two"), **metadata)
    assert result.status is RunStatus.PARTIAL
    del world.api.fail_on["two"]
    world.api.prompts.clear()
    (failure,) = [m for m in world.dead_letters() if isinstance(m, PromptFailure)]
    world.queues.sent.clear()
    return result.job_id or "", failure


async def test_a_redriven_failure_answered_flips_the_job_to_succeeded(world: World) -> None:
    job_id, failure = await failed_once(world)

    result = await world.runner().redrive(failure)

    assert world.api.prompts == ["two"]
    assert result.status is RunStatus.SUCCEEDED
    assert world.journal.requests.of(job_id)[2].status is RequestStatus.SUCCEEDED
    assert [r["custom_id"] for r in world.outputs(KEY, ".out.jsonl")] == ["p1", "p2"]
    assert world.outputs(KEY, ".errors.jsonl") == []
    assert world.journal.job(job_id).status is JobStatus.SUCCEEDED
    assert [kind for kind, _ in world.bus.events] == ["Job Partial", "Job Succeeded"]


async def test_a_failure_redriven_twice_is_sent_once(world: World) -> None:
    _, failure = await failed_once(world)
    await world.runner().redrive(failure)
    await world.runner().redrive(failure)  # the same letter, moved twice
    assert world.api.prompts == ["two"]  # the second found its answer on record


async def test_a_line_that_never_parsed_is_not_sent(world: World) -> None:
    result = await world.upload(KEY, lines("one") + "{broken\n")
    (failure,) = [m for m in world.dead_letters() if isinstance(m, PromptFailure)]
    assert failure.request is None
    world.api.prompts.clear()
    again = await world.runner().redrive(failure)
    assert world.api.prompts == []
    assert again.status is RunStatus.PARTIAL
    assert world.journal.job(result.job_id or "").failed == 1


async def test_a_redrive_over_the_files_budget_fails_again_with_a_letter_to_send_it_later(world: World) -> None:
    # Given a job whose budget allows one request, spent by its first line
    job_id, failure = await failed_once(world, **{"promptdrop-max-requests": "2"})
    world.journal.jobs[job_id].max_requests = 1  # lowered since (`promptdrop budget`)

    result = await world.runner().redrive(failure)

    assert world.api.prompts == []
    (letter,) = world.dead_letters()
    assert isinstance(letter, PromptFailure)
    assert letter.error["code"] == "budget_exceeded"
    assert f"promptdrop budget {job_id}" in letter.error["message"]
    assert letter.request == failure.request
    assert result.status is RunStatus.PARTIAL


async def test_a_failure_of_an_unknown_job_is_dropped(world: World) -> None:
    _, failure = await failed_once(world)
    stranger = failure.model_copy(update={"job_id": "nobody"})
    result = await world.runner().redrive(stranger)
    assert (result.status, result.reason) == (RunStatus.SKIPPED, "unknown job")
    assert world.api.prompts == []
