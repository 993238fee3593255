"""A run's live progress on the job item: the counts it adds, the window its recent rate is read
from (one write a report, the window riding along), and `sent` counting what reached the API."""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
from typing import Any

from promptdrop.jobs.progress import Progress
from promptdrop.records import PROGRESS_WINDOW_S, JobRecord

from tests.fakes import FakeClock


class JobItemInMemory:
    """The journal's ``add_progress`` on one job item held in memory: ADD the counts, SET the rest."""

    def __init__(self, job: JobRecord) -> None:
        self.job = job
        self.writes = 0

    async def add_progress(
        self, job_id: str, counts: dict[str, int | float], now: str, *, window: list[list[float]] | None = None
    ) -> JobRecord:
        assert job_id == self.job.job_id
        self.writes += 1
        for name, value in counts.items():
            attr = f"progress_{name}"
            setattr(self.job, attr, (getattr(self.job, attr) or 0) + value)
        self.job.updated_at = now
        if window is not None:
            self.job.progress_window = window
        return dataclasses.replace(self.job)


def a_job(**values: Any) -> JobRecord:
    return JobRecord(job_id="j", bucket="b", key="inputs/k.jsonl", etag="e", **values)


def report(progress: Progress) -> None:
    asyncio.run(progress.report())


def test_the_window_keeps_samples_apart_and_about_the_last_30_seconds() -> None:
    # Given reports every 2 s at 10 lines a second
    window: list[list[float]] = []
    previous = (0.0, 0)
    for at in range(2, 42, 2):
        window = JobRecord.window_after(window, at, at * 10, start=previous)
        previous = (at, at * 10)

    # Then it holds a sample every 10 s or so, the newest fresh, the oldest just past 30 s
    times = [t for t, _ in window]
    assert times[-1] == 40
    assert 40 - times[0] >= PROGRESS_WINDOW_S > 40 - times[1]
    assert all(b - a >= 10 for a, b in itertools.pairwise(times[:-1]))  # the newest: the last report
    assert len(window) <= 5
    assert a_job(progress_window=window).recent_rate == 10.0


def test_a_slowdown_shows_once_the_faster_samples_leave_the_window() -> None:
    window = JobRecord.window_after([], 10, 100, start=(0, 0))  # 10/s for 10 s
    for at in range(12, 52, 2):  # then 1/s for 40 s
        window = JobRecord.window_after(window, at, 100 + at - 10, start=(at - 2, 100 + at - 12))
    assert a_job(progress_window=window).recent_rate == 1.0


def test_a_pause_is_not_running_time_the_window_starts_again() -> None:
    # Given a job that ran at 10/s, was cancelled, and is resumed an hour later
    window = JobRecord.window_after([], 20, 200, start=(0, 0))
    # When the resumed run reports twice (2 s apart, 3 lines done)
    resumed = JobRecord.window_after(window, 3602, 203, start=(3600, 200))
    # Then its rate is the resumed run's, not an average over the idle hour
    assert resumed == [[3600, 200], [3602, 203]]
    assert a_job(progress_window=resumed).recent_rate == 1.5


def test_no_rate_before_two_reports_span_time() -> None:
    assert a_job().recent_rate is None
    assert a_job(progress_window=[[5.0, 3]]).recent_rate is None


def test_each_report_is_one_write_carrying_the_counts_and_the_window() -> None:
    # Given a run of a job that another run had brought to 50 done
    clock = FakeClock(start=1000.0)
    item = JobItemInMemory(a_job(line_count=250, progress_succeeded=50))
    progress = Progress(item, "j", clock=clock)  # type: ignore[arg-type]

    # When it reports at once, answers 20 (and fails 2) in 2 s, reports, then 22 more in 2 s
    report(progress)
    for _ in range(20):
        progress.succeeded("gpt-4o-mini", 10, 5)
    progress.failed()
    progress.failed()
    clock.now += 2
    report(progress)
    clock.now += 2
    for _ in range(22):
        progress.succeeded("gpt-4o-mini", 10, 5)
    report(progress)

    # Then one write a report; the window spans the run from its first report, job-wide counts
    assert item.writes == 3
    job = item.job
    assert job.progress_done == 94
    assert job.progress_window == [[1000.0, 50], [1004.0, 94]]
    assert job.recent_rate == 11.0


def test_sent_counts_the_requests_that_reached_the_api_and_the_guard_counts_those_queued_too() -> None:
    item = JobItemInMemory(a_job(progress_sent=7))  # 7 sent by an earlier run
    progress = Progress(item, "j", clock=FakeClock())  # type: ignore[arg-type]
    report(progress)
    for _ in range(10):  # handed to the dispatcher
        progress.admitted()
    for _ in range(4):  # their outcome came back
        progress.sent()
    report(progress)
    assert item.job.progress_sent == 11
    assert progress.spent().requests == 7 + 10
