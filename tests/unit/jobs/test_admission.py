"""The stages a parsed line passes before it is sent: each settles it, stops the input, or passes it on."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import pytest
from promptdrop.adapters.request_log import LineSet
from promptdrop.engine.request import Request
from promptdrop.formats import LineError, Parsed
from promptdrop.jobs.admission import AlreadyDone, Guarded, Stage, Verdict, admitted
from promptdrop.jobs.cost_guard import Budget, CostGuard, worst_case
from promptdrop.jobs.progress import Progress
from promptdrop.prices import FLEX
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


async def test_the_guard_prices_each_request_at_the_tier_the_mode_reserves_it_at(world: World) -> None:
    # Given a budget that holds one request's worst case at the flex tier but not at the standard one
    await world.journal.start_job(JobRecord(job_id="j", bucket="b", key="k", etag="e"))
    progress = Progress(world.journal, "j")
    req = Request(1, "p1", b'{"model": "gpt-5-mini", "messages": []}', 1000, model="gpt-5-mini", output_tokens=900)
    flex, standard = worst_case(req, FLEX).usd, worst_case(req).usd
    assert flex is not None
    assert standard is not None
    budget = Budget(usd=(flex + standard) / 2)
    # Then reserved at flex it is sent; at the standard tier it stops the run
    assert await Guarded(CostGuard(budget), progress, tier_of=lambda r: FLEX)(req) is Verdict.NEXT
    assert await Guarded(CostGuard(budget), progress)(req) is Verdict.STOP


async def test_a_request_waiting_for_room_when_the_run_stops_goes_on_unreserved_to_be_handed_back(
    world: World,
) -> None:
    # Given a request that does not fit while another is in flight, in a run whose deadline has come
    await world.journal.start_job(JobRecord(job_id="j", bucket="b", key="k", etag="e"))
    progress = Progress(world.journal, "j")
    guard = CostGuard(Budget(usd=1.5 * (worst_case(request(1)).usd or 0)))
    assert guard.admit(request(1), progress.spent())
    stage = Guarded(guard, progress, stopping=lambda: True)
    # Then it is passed on (the dispatcher, stopping, hands it to the continuation), not refused
    assert await stage(request(2)) is Verdict.NEXT
    assert guard.refused is None
    assert guard.in_flight == 1
