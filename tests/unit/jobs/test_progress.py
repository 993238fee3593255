"""Live progress: what a run reports to the job item (deltas, every few seconds), what it learns back."""

from __future__ import annotations

from typing import Any

from promptdrop.jobs.progress import Progress
from promptdrop.jobs.run_result import JobResult, RunStatus
from promptdrop.records import JobRecord

from tests.unit.jobs.conftest import World


async def started(world: World) -> Progress:
    await world.journal.start_job(JobRecord(job_id="j", bucket="b", key="k", etag="e"))
    return Progress(world.journal, "j")


async def test_each_report_adds_only_what_was_done_since_the_last(world: World) -> None:
    progress = await started(world)
    progress.sent()
    progress.sent()
    progress.succeeded("gpt-4o-mini", 100, 20, cached_tokens=40)
    await progress.report()
    progress.failed()
    await progress.report()
    await progress.report()  # nothing new: nothing added
    assert world.journal.progress == {
        "sent": 2,
        "succeeded": 1,
        "failed": 1,
        "prompt_tokens": 100,
        "completion_tokens": 20,
        "cost_usd": world.journal.progress["cost_usd"],
    }
    assert 0 < world.journal.progress["cost_usd"] < 0.001
    assert world.journal.calls["add_progress"] == 3


async def test_a_report_learns_of_a_cancel_request(world: World) -> None:
    progress = await started(world)
    await progress.report()
    assert not progress.cancelled
    world.journal.jobs["j"].cancel_requested_at = "2026-01-01T00:00:00Z"
    await progress.report()
    assert progress.cancelled


async def test_spent_is_every_other_runs_reported_work_plus_this_runs_now(world: World) -> None:
    # Given another shard that reported 5 requests and 1,000 tokens
    await started(world)
    other = Progress(world.journal, "j")
    for _ in range(5):
        other.admitted()
        other.sent()
    other.succeeded("gpt-4o-mini", 800, 200)
    await other.report()

    # When this run has reported one request, then sent another and been answered
    mine = Progress(world.journal, "j")
    mine.admitted()
    mine.sent()
    await mine.report()
    mine.admitted()
    mine.sent()
    mine.succeeded("gpt-4o-mini", 10, 5)

    # Then what is spent counts both, this run's last request included before it is reported
    spent = mine.spent()
    assert (spent.requests, spent.tokens) == (7, 1015)


async def test_reporting_reports_at_once_and_at_the_end(world: World) -> None:
    progress = await started(world)
    async with progress.reporting():
        assert world.journal.calls["add_progress"] == 1
        assert progress.job is not None  # the job item as the first report found it
        progress.sent()
    assert world.journal.calls["add_progress"] == 2
    assert world.journal.progress == {"sent": 1}


async def test_a_result_carries_this_runs_own_figures(world: World) -> None:
    progress = await started(world)
    progress.succeeded("m", 3, 4)
    progress.failed()
    result = progress.tag(JobResult("j", "b", "k", RunStatus.PARTIAL))
    assert (result.run_succeeded, result.run_failed, result.run_prompt_tokens, result.run_completion_tokens) == (
        1,
        1,
        3,
        4,
    )


class _AnswerDuringEachWrite:
    """The journal, with an answer coming in while each progress report is on its way to it (the
    dispatcher runs on while reports are written)."""

    def __init__(self, journal: Any) -> None:
        self.journal = journal
        self.progress: Progress | None = None

    async def add_progress(self, *args: Any, **kwargs: Any) -> JobRecord:
        assert self.progress is not None
        self.progress.sent()
        self.progress.succeeded("gpt-4o-mini", 10, 5)
        record: JobRecord = await self.journal.add_progress(*args, **kwargs)
        return record


async def test_answers_that_come_in_while_a_report_is_written_go_in_the_next_one(world: World) -> None:
    await started(world)
    journal = _AnswerDuringEachWrite(world.journal)
    progress = journal.progress = Progress(journal, "j")  # type: ignore[arg-type]  # add_progress is all it uses
    progress.sent()
    progress.succeeded("gpt-4o-mini", 10, 5)

    # When two reports are written
    await progress.report()
    await progress.report()

    # Then the job item holds every answer counted before the second write began: none is lost
    assert (world.journal.progress["sent"], world.journal.progress["succeeded"]) == (2, 2)
    assert world.journal.progress["prompt_tokens"] == 20
    assert (progress.run.sent, progress.run.succeeded) == (3, 3)  # the third goes in the next report
