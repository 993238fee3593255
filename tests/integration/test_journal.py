"""The finalizer lease on the job item, against the moto server: the protocol runs hand outputs over by."""

from __future__ import annotations

from collections.abc import AsyncIterator

import aioboto3
import pytest
from promptdrop.adapters.journal import Journal

from infra.local_aws import LocalAws


@pytest.fixture
async def journal(local_aws: LocalAws, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Journal]:
    for name, value in local_aws.function_env().items():
        monkeypatch.setenv(name, value)
    async with aioboto3.Session().client("dynamodb") as ddb:
        journal = Journal(ddb, local_aws.table)
        await journal.start_job("j1", {"bucket": "b", "key": "k"})
        yield journal


async def test_a_change_made_while_the_outputs_are_written_makes_the_holder_write_them_again(journal: Journal) -> None:
    # Given run A holding the finalizer lease, having started from the count after its own change
    await journal.note_change("j1")
    seen_a = await journal.take_finalizer("j1", "A", now=100.0, lease_s=60)
    assert seen_a == 1

    # When run B changes the journal meanwhile and asks for the outputs to be rewritten
    await journal.note_change("j1")
    assert await journal.take_finalizer("j1", "B", now=101.0, lease_s=60) is None  # B hands off to A

    # Then A may not give the lease up yet: it learns of B's change, rewrites, then releases
    assert await journal.release_finalizer("j1", "A", seen_a) == 2
    assert await journal.release_finalizer("j1", "A", 2) is None
    job = await journal.get_job("j1")
    assert job is not None
    assert "fin_owner" not in job.attrs
    assert await journal.take_finalizer("j1", "C", now=102.0, lease_s=60) == 2  # free again


async def test_a_dead_holders_lease_expires_and_the_next_run_finishes(journal: Journal) -> None:
    await journal.note_change("j1")
    assert await journal.take_finalizer("j1", "A", now=100.0, lease_s=60) == 1
    await journal.note_change("j1")
    assert await journal.take_finalizer("j1", "B", now=159.0, lease_s=60) is None  # A is still alive
    assert await journal.take_finalizer("j1", "B", now=161.0, lease_s=60) == 2  # A died: its lease ran out
    # A, back from the dead, finds the lease gone: nothing to release, B writes the outputs
    assert await journal.release_finalizer("j1", "A", 1) is None
    job = await journal.get_job("j1")
    assert job is not None
    assert job.attrs["fin_owner"] == "B"
    assert await journal.release_finalizer("j1", "B", 2) is None
