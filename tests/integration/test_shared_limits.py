"""The fleet's shared rate-limit budget in DynamoDB, against the moto server (the table from template.yaml)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import aioboto3
import pytest
from promptdrop.adapters.shared_limits import DynamoSharedLimits
from promptdrop.engine.shared_limits import Observed

from infra.local_aws import LocalAws

MODEL = "gpt-4o-mini"
LEASE_S = 30.0


class Wall:
    """The wall clock the members compare leases with, moved by the test."""

    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
async def ddb(local_aws: LocalAws, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Any]:
    for name, value in local_aws.function_env().items():
        monkeypatch.setenv(name, value)
    async with aioboto3.Session().client("dynamodb") as client:
        yield client


async def budget_item(ddb: Any, table: str) -> dict[str, Any]:
    response = await ddb.get_item(TableName=table, Key={"pk": {"S": f"BUDGET#{MODEL}"}, "sk": {"S": "BUDGET"}})
    item: dict[str, Any] = response.get("Item", {})
    return item


async def test_two_members_split_the_budget_and_a_leaver_gives_its_share_back(ddb: Any, local_aws: LocalAws) -> None:
    wall = Wall()
    budget = DynamoSharedLimits(ddb, local_aws.table, clock=wall)
    # Given a first member alone
    assert (await budget.join(MODEL, "a", lease_s=LEASE_S, observed=Observed())).members == 1
    # When a second joins, then both count two
    assert (await budget.join(MODEL, "b", lease_s=LEASE_S, observed=Observed())).members == 2
    wall.now += 5
    assert (await budget.renew(MODEL, "a", lease_s=LEASE_S, observed=Observed(using_rpm=3000))).members == 2
    # and each hears what the other uses: the room it leaves
    share = await budget.renew(MODEL, "b", lease_s=LEASE_S, observed=Observed(using_rpm=1000))
    assert (share.members, share.others_rpm) == (2, 3000.0)
    # When the second leaves, then the first is alone again
    await budget.leave(MODEL, "b")
    assert (await budget.renew(MODEL, "a", lease_s=LEASE_S, observed=Observed())).members == 1


async def test_a_dead_members_share_returns_when_its_lease_expires_and_it_is_removed_later(
    ddb: Any, local_aws: LocalAws
) -> None:
    wall = Wall()
    budget = DynamoSharedLimits(ddb, local_aws.table, clock=wall)
    # Given a member that joined and died (never renews, never leaves)
    await budget.join(MODEL, "dead", lease_s=LEASE_S, observed=Observed())
    assert (await budget.join(MODEL, "alive", lease_s=LEASE_S, observed=Observed())).members == 2
    # When its lease passes, then it no longer counts
    wall.now += LEASE_S + 1
    assert (await budget.renew(MODEL, "alive", lease_s=LEASE_S, observed=Observed())).members == 1
    assert "m_dead" in await budget_item(ddb, local_aws.table)
    # and once it has been dead for a whole lease, the next writes remove it from the item
    wall.now += LEASE_S
    await budget.renew(MODEL, "alive", lease_s=LEASE_S, observed=Observed())
    await budget.renew(MODEL, "alive", lease_s=LEASE_S, observed=Observed())
    item = await budget_item(ddb, local_aws.table)
    assert "m_dead" not in item
    assert "m_alive" in item


async def test_a_learned_limit_and_a_pause_are_shared_with_members_that_start_later(
    ddb: Any, local_aws: LocalAws
) -> None:
    wall = Wall()
    first = DynamoSharedLimits(ddb, local_aws.table, clock=wall)
    # Given a member that learned the limits from its answers and was asked to pause by a 429
    await first.join(MODEL, "a", lease_s=LEASE_S, observed=Observed())
    await first.renew(MODEL, "a", lease_s=LEASE_S, observed=Observed(rpm=6000, tpm=150_000, paused_until=wall.now + 20))
    # When another container's member joins
    later = DynamoSharedLimits(ddb, local_aws.table, clock=wall)
    share = await later.join(MODEL, "b", lease_s=LEASE_S, observed=Observed())
    # Then it knows the limits and the pause before its first request
    assert (share.rpm, share.tpm, share.members) == (6000.0, 150_000.0, 2)
    assert share.paused_until == wall.now + 20


async def test_the_budget_lives_apart_from_every_job(ddb: Any, local_aws: LocalAws) -> None:
    budget = DynamoSharedLimits(ddb, local_aws.table)
    await budget.join(MODEL, "a", lease_s=LEASE_S, observed=Observed())
    item = await budget_item(ddb, local_aws.table)
    assert item["pk"]["S"] == f"BUDGET#{MODEL}"  # never a JOB#… key: no job query reads it
    assert item["model"]["S"] == MODEL
