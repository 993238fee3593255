"""The journal's leases against the moto server: the protocols runs hand units and outputs over by.

Each test runs on the in-memory fake of the unit tests too (``tests/unit/jobs/fakes.py``): what they
show of the journal, the fake does the same."""

from __future__ import annotations

from collections.abc import AsyncIterator

import aioboto3
import pytest
from promptdrop.adapters.journal import Journal
from promptdrop.adapters.leases import LeaseOutcome
from promptdrop.jobs.ports import Journal as JournalPort
from promptdrop.records import JobRecord, RequestRecord, RequestStatus

from infra.local_aws import LocalAws
from tests.unit.jobs.fakes import MemoryJournal


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture(params=["dynamodb", "memory"])
async def journal(
    request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch, clock: Clock
) -> AsyncIterator[JournalPort]:
    """The journal on moto — and its in-memory fake, held to the same protocol by the same tests."""
    if request.param == "memory":
        fake = MemoryJournal(clock)
        await fake.start_job(JobRecord(job_id="j1", bucket="b", key="k", etag="e"))
        yield fake
        return
    local_aws: LocalAws = request.getfixturevalue("local_aws")
    for name, value in local_aws.function_env().items():
        monkeypatch.setenv(name, value)
    async with aioboto3.Session().client("dynamodb") as ddb:
        journal = Journal(ddb, local_aws.table, clock=clock)
        await journal.start_job(JobRecord(job_id="j1", bucket="b", key="k", etag="e"))
        yield journal


async def test_a_change_made_while_the_outputs_are_written_makes_the_holder_write_them_again(
    journal: JournalPort, clock: Clock
) -> None:
    # Given run A holding the finalizer lease, having started from the count after its own change
    await journal.note_change("j1")
    async with journal.finalizer_held("j1", lease_s=60) as a:
        assert a.job is not None
        assert a.job.changes == 1  # the job item as the take found it

        # When run B changes the journal meanwhile and asks for the outputs to be rewritten
        await journal.note_change("j1")
        clock.now = 101.0
        async with journal.finalizer_held("j1", lease_s=60) as b:
            assert b.job is None  # B hands off to A

        # Then A may not give the lease up yet: it learns of B's change, rewrites, then releases
        assert await a.release_unless_changed(1) == 2
        assert await a.release_unless_changed(2) is None
    clock.now = 102.0
    async with journal.finalizer_held("j1", lease_s=60) as c:  # free again
        assert c.job is not None
        assert c.job.changes == 2


async def test_a_dead_holders_lease_expires_and_the_next_run_finishes(journal: JournalPort, clock: Clock) -> None:
    await journal.note_change("j1")
    async with journal.finalizer_held("j1", lease_s=60) as a:
        await journal.note_change("j1")
        clock.now = 159.0
        async with journal.finalizer_held("j1", lease_s=60) as early:
            assert early.job is None  # A is still alive
        clock.now = 161.0
        async with journal.finalizer_held("j1", lease_s=60) as b:  # A died: its lease ran out
            assert b.job is not None
            # A, back from the dead, finds the lease gone: nothing to release, B writes the outputs
            assert await a.release_unless_changed(1) is None
            job = await journal.get_job("j1")
            assert job is not None
            assert job.changes == 2
            assert await b.release_unless_changed(2) is None


async def test_a_unit_lease_is_busy_while_held_and_done_for_good_once_completed(
    journal: JournalPort, clock: Clock
) -> None:
    async with journal.unit_held("j1", "shard-0", lease_s=60) as first:
        assert (first.outcome, first.first) == (LeaseOutcome.ACQUIRED, True)  # nothing of this unit was run before
        async with journal.unit_held("j1", "shard-0", lease_s=60) as other:
            assert other.outcome is LeaseOutcome.BUSY
        await first.complete("2026-01-01T00:00:00Z")
    clock.now = 1000.0  # long after any lease would have expired
    async with journal.unit_held("j1", "shard-0", lease_s=60) as late:
        assert late.outcome is LeaseOutcome.DONE
    job = await journal.get_job("j1")
    assert job is not None
    assert job.units_done == 1


async def test_a_run_that_fails_gives_its_unit_lease_back_at_once(journal: JournalPort) -> None:
    async def failing_run() -> None:
        async with journal.unit_held("j1", "all", lease_s=60) as hold:
            assert hold.outcome is LeaseOutcome.ACQUIRED
            raise RuntimeError("AWS fault")

    with pytest.raises(RuntimeError, match="AWS fault"):
        await failing_run()
    # the redelivered message may take it now, not after the lease ran out — and knows it is a rerun
    async with journal.unit_held("j1", "all", lease_s=60) as again:
        assert (again.outcome, again.first) == (LeaseOutcome.ACQUIRED, False)


async def test_request_items_keep_an_answer_over_a_later_failure_and_say_what_is_done(journal: JournalPort) -> None:
    answered = RequestRecord("a", 1, RequestStatus.SUCCEEDED, 1, response='{"ok": true}', columns='{"cells": []}')
    failed = RequestRecord("b", 2, RequestStatus.FAILED, 2, error={"code": "bad", "message": "no", "status_code": None})
    repeat = RequestRecord("a", 3, RequestStatus.FAILED, 0, error={"code": "invalid_line"}, repeat_of=1)
    await journal.requests.write("j1", [answered, failed, repeat], "2026-01-01T00:00:00Z")
    # a late failure of the answered request (a duplicate run): refused, the answer kept
    late = RequestRecord("a", 1, RequestStatus.FAILED, 3, error={"code": "timeout"})
    await journal.requests.write("j1", [late], "2026-01-01T00:00:01Z")

    records = {r.line: r async for r in journal.requests.records("j1")}
    assert records[1].succeeded
    assert records[1].response == '{"ok": true}'
    assert records[2].error == {"code": "bad", "message": "no"}  # nothing kept that is None
    assert not records[3].succeeded  # the repeat: an item of its own, the answer's untouched
    finals, repeats = await journal.requests.finals("j1")
    assert finals == {"a": 1, "b": 2}
    assert (len(repeats), 3 in repeats) == (1, True)
    done = await journal.requests.done_lines("j1")
    assert (len(done), all(line in done for line in (1, 2, 3))) == (3, True)
    prior = await journal.requests.prior("j1", "a")
    assert (prior.succeeded, prior.columns) == (True, '{"cells": []}')
    assert not (await journal.requests.prior("j1", "b")).succeeded
