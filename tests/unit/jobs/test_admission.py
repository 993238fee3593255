"""The stages a parsed line passes before it is sent: each settles it, stops the input, or passes it on."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import pytest
from promptdrop.adapters.request_log import LineSet
from promptdrop.engine.request import Request
from promptdrop.formats import LineError, Parsed
from promptdrop.jobs.admission import AlreadyDone, Guarded, Stage, Verdict, admitted
from promptdrop.jobs.cost_guard import Budget, CostGuard
from promptdrop.jobs.progress import Progress
from promptdrop.records import JobRecord

from tests.unit.jobs.conftest import World


def request(line: int, custom_id: str | None = None) -> Request:
    body = json.dumps({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 10})
    return Request(line, custom_id or f"p{line}", body.encode(), 20)


async def each(*items: Parsed) -> AsyncIterator[Parsed]:
    for item in items:
        yield item


async def test_lines_done_and_answers_at_their_own_line_are_skipped() -> None:
    stage = AlreadyDone({"p1": 1, "p9": 9}, LineSet([4]))
    assert await stage(request(1)) is Verdict.SETTLED  # answered at this very line
    assert await stage(request(2, "p9")) is Verdict.NEXT  # that id answered at another line: a repeat's business
    assert await stage(request(4)) is Verdict.SETTLED  # done (a shard's, or a repeat planning found)
    assert await stage(request(5)) is Verdict.NEXT


async def test_a_stage_that_stops_ends_the_input_and_says_so_once() -> None:
    class StopAtThree:
        async def __call__(self, item: Parsed) -> Verdict:
            return Verdict.STOP if item.line == 3 else Verdict.NEXT

    stopped: list[int] = []
    sent: list[int] = []

    async def on_stop() -> None:
        stopped.append(1)

    stages: list[Stage] = [StopAtThree()]
    got = [
        r.line
        async for r in admitted(
            each(*(request(n) for n in range(1, 6))), stages, on_send=lambda: sent.append(1), on_stop=on_stop
        )
    ]
    assert got == [1, 2]
    assert (len(sent), len(stopped)) == (2, 1)


async def test_a_line_error_no_stage_settles_is_a_bug_not_a_request() -> None:
    with pytest.raises(TypeError, match="line 2 is not a request"):
        _ = [r async for r in admitted(each(request(1), LineError(2, "p2", "bad")), [])]


async def test_the_guard_stops_a_run_and_refuses_one_request_of_a_redrive(world: World) -> None:
    await world.journal.start_job(JobRecord(job_id="j", bucket="b", key="k", etag="e"))
    progress = Progress(world.journal, "j")
    guard = CostGuard(Budget(requests=1))
    run_stage = Guarded(guard, progress)
    progress.admitted()  # one request admitted already: the cap is reached
    assert await run_stage(request(2)) is Verdict.STOP
    assert await run_stage(LineError(3, "p3", "bad")) is Verdict.NEXT  # not a request: not the guard's

    unlimited = Guarded(CostGuard(Budget()), progress)
    assert await unlimited(request(4)) is Verdict.NEXT
