"""The journal's leases: one live run at a time on a unit, one run at a time rewriting a job's outputs.

A lease is two attributes on one item (owner, until). It is taken with a conditional write that
succeeds when nobody holds it, the holder's time ran out (a crashed run), or we hold it already;
renewed every third of its length while the block runs; given up at the end. Extra conditions
(a unit not done yet; a finalizer's change count unchanged) ride along on take and release.

Runs see only what they do with a lease held (:class:`UnitHold`: complete the unit or give it
up; :class:`FinalizerHold`: the job as the take found it, and a release refused while the journal
changed); the attribute names and conditions stay here.
"""

from __future__ import annotations

import contextlib
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from ..background import every
from ..records import JobRecord
from .items import job_from_item, job_key, unit_key

if TYPE_CHECKING:
    from types_aiobotocore_dynamodb import DynamoDBClient

__all__ = ["FinalizerHold", "Hold", "Lease", "LeaseOutcome", "UnitHold", "finalizer_lease", "unit_lease"]


class LeaseOutcome(StrEnum):
    ACQUIRED = "acquired"
    BUSY = "busy"  # another live run holds it
    DONE = "done"  # the work it guards is finished: nothing to hold


@dataclass(slots=True)
class Hold:
    """The result of taking a lease; ``attrs`` is the item as it was before the take (when acquired):
    empty when the item did not exist — the first run of what it guards."""

    outcome: LeaseOutcome
    owner: str
    attrs: dict[str, Any] = field(default_factory=dict)
    released: bool = False

    @property
    def acquired(self) -> bool:
        return self.outcome is LeaseOutcome.ACQUIRED

    @property
    def first(self) -> bool:
        """No run ever held this lease before: nothing it guards can have been done yet."""
        return self.acquired and not self.attrs


class Lease:
    """A time-limited claim on the item ``key`` of ``table``."""

    def __init__(
        self,
        client: DynamoDBClient,
        table: str,
        key: dict[str, Any],
        *,
        owner_attr: str,
        until_attr: str,
        lease_s: float,
        done_attr: str | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._ddb = client
        self._table = table
        self._key = key
        self._names = {"#o": owner_attr, "#u": until_attr}
        self._done_attr = done_attr
        self._lease_s = lease_s
        self._clock = clock

    @contextlib.asynccontextmanager
    async def held(self) -> AsyncIterator[Hold]:
        """Take the lease and keep it renewed while the block runs; release it on the way out.

        The block checks ``hold.acquired`` first. A block that gives the lease up itself (with
        :meth:`release`) sets ``hold.released``; otherwise the exit releases it, so a failed run's
        message, handed back, may take it again at once instead of waiting for it to expire.
        """
        hold = await self.take(uuid.uuid4().hex)
        if not hold.acquired:
            yield hold
            return
        try:
            async with every(self._lease_s / 3, lambda: self.renew(hold.owner)):
                yield hold
        finally:
            if not hold.released:
                with contextlib.suppress(Exception):  # an AWS fault here: the lease simply expires
                    await self.release(hold)

    async def take(self, owner: str) -> Hold:
        now = self._clock()
        condition = "(attribute_not_exists(#u) OR #u < :now OR #o = :me)"
        names = dict(self._names)
        if self._done_attr:
            names["#d"] = self._done_attr
            condition = f"attribute_not_exists(#d) AND {condition}"
        try:
            response = await self._ddb.update_item(
                TableName=self._table,
                Key=self._key,
                UpdateExpression="SET #o = :me, #u = :until",
                ConditionExpression=condition,
                ExpressionAttributeNames=names,
                ExpressionAttributeValues={
                    ":me": {"S": owner},
                    ":until": {"N": f"{now + self._lease_s:.3f}"},
                    ":now": {"N": f"{now:.3f}"},
                },
                ReturnValues="ALL_OLD",
            )
        except self._ddb.exceptions.ConditionalCheckFailedException:
            return Hold(LeaseOutcome.DONE if self._done_attr and await self._is_done() else LeaseOutcome.BUSY, owner)
        return Hold(LeaseOutcome.ACQUIRED, owner, dict(response.get("Attributes", {})))

    async def _is_done(self) -> bool:
        item = await self._ddb.get_item(TableName=self._table, Key=self._key, ConsistentRead=True)
        return self._done_attr in item.get("Item", {})

    async def renew(self, owner: str) -> None:
        """Extend the lease; raises ConditionalCheckFailed when it was lost (another run took it)."""
        await self._ddb.update_item(
            TableName=self._table,
            Key=self._key,
            UpdateExpression="SET #u = :until",
            ConditionExpression="#o = :me",
            ExpressionAttributeNames=self._names,
            ExpressionAttributeValues={":me": {"S": owner}, ":until": {"N": f"{self._clock() + self._lease_s:.3f}"}},
        )

    async def release(self, hold: Hold, *, unless: str | None = None, values: dict[str, Any] | None = None) -> bool:
        """Give the lease up — only while ``unless`` (a condition expression) holds, when given.

        False when refused: the condition failed, or the lease is no longer ours (it expired and
        another run took it: nothing of ours to release).
        """
        condition = "#o = :me" + (f" AND {unless}" if unless else "")
        try:
            await self._ddb.update_item(
                TableName=self._table,
                Key=self._key,
                UpdateExpression="REMOVE #o, #u",
                ConditionExpression=condition,
                ExpressionAttributeNames=self._names,
                ExpressionAttributeValues={":me": {"S": hold.owner}, **(values or {})},
            )
        except self._ddb.exceptions.ConditionalCheckFailedException:
            return False
        hold.released = True
        return True


def unit_lease(
    client: DynamoDBClient, table: str, job_id: str, unit: str, lease_s: float, clock: Callable[[], float]
) -> Lease:
    """The lease on a unit (the whole file, or one shard): refused for good once the unit is done."""
    return Lease(
        client,
        table,
        unit_key(job_id, unit),
        owner_attr="owner",
        until_attr="lease_until",
        done_attr="done_at",
        lease_s=lease_s,
        clock=clock,
    )


def finalizer_lease(
    client: DynamoDBClient, table: str, job_id: str, lease_s: float, clock: Callable[[], float]
) -> Lease:
    """The lease on rewriting a job's outputs, on the job item: taking it returns the item (its ``changes``)."""
    return Lease(
        client, table, job_key(job_id), owner_attr="fin_owner", until_attr="fin_until", lease_s=lease_s, clock=clock
    )


class UnitHold:
    """A unit's lease as its run holds it: the run completes the unit, or gives it up unfinished."""

    def __init__(self, client: DynamoDBClient, table: str, job_id: str, unit: str, lease: Lease, hold: Hold) -> None:
        self._ddb = client
        self._table = table
        self._job_id = job_id
        self._unit = unit
        self._lease = lease
        self._hold = hold

    @property
    def outcome(self) -> LeaseOutcome:
        return self._hold.outcome

    @property
    def first(self) -> bool:
        """No run ever held this unit before: nothing of it can have been done yet."""
        return self._hold.first

    async def release(self) -> None:
        """Give the unit up unfinished: a continuation, a redelivery or a redrive resumes it."""
        await self._lease.release(self._hold)

    @property
    def batches(self) -> str | None:
        """The unit's provider batches as the take found them (JSON: jobs/batch_state.py), if it has any."""
        value = self._hold.attrs.get("batches")
        return None if value is None else str(value["S"])

    async def save_batches(self, state: str) -> None:
        """Write the unit's provider batches — only while this run holds the unit (else raises
        ConditionalCheckFailed: another run took it, and its own state is the one that counts)."""
        await self._ddb.update_item(
            TableName=self._table,
            Key=unit_key(self._job_id, self._unit),
            UpdateExpression="SET batches = :b",
            ConditionExpression="#o = :me",
            ExpressionAttributeNames={"#o": "owner"},
            ExpressionAttributeValues={":b": {"S": state}, ":me": {"S": self._hold.owner}},
        )
        self._hold.attrs["batches"] = {"S": state}

    async def complete(self, now: str) -> None:
        """Mark the unit done and count it on the job item — both or neither, and only once."""
        try:
            await self._ddb.transact_write_items(
                TransactItems=[
                    {
                        "Update": {
                            "TableName": self._table,
                            "Key": unit_key(self._job_id, self._unit),
                            "UpdateExpression": "SET done_at = :now REMOVE lease_until",
                            "ConditionExpression": "attribute_not_exists(done_at) AND #o = :me",
                            "ExpressionAttributeNames": {"#o": "owner"},
                            "ExpressionAttributeValues": {":now": {"S": now}, ":me": {"S": self._hold.owner}},
                        }
                    },
                    {
                        "Update": {
                            "TableName": self._table,
                            "Key": job_key(self._job_id),
                            "UpdateExpression": "ADD units_done :one",
                            "ExpressionAttributeValues": {":one": {"N": "1"}},
                        }
                    },
                ]
            )
        except self._ddb.exceptions.TransactionCanceledException as exc:
            # Only a failed condition on the unit means a duplicate run got there first (the unit was
            # counted once already). Throttling or a conflict with a parallel shard's count: raised,
            # so the run's message comes back and completes the unit then — never counted as done.
            reasons = exc.response.get("CancellationReasons") or [{}]
            if reasons[0].get("Code") != "ConditionalCheckFailed":
                raise
        self._hold.released = True


class FinalizerHold:
    """The finalizer lease as a run holds it (or failed to: ``job`` is None then)."""

    def __init__(self, client: DynamoDBClient, table: str, job_id: str, lease: Lease, hold: Hold) -> None:
        self._ddb = client
        self._table = table
        self._job_id = job_id
        self._lease = lease
        self._hold = hold
        # The job item as the take found it (the lease is on the job item: no read of its own).
        self.job: JobRecord | None = job_from_item(hold.attrs) if hold.acquired else None

    async def release_unless_changed(self, seen: int) -> int | None:
        """Give the lease up if nothing changed since ``seen``: None when released, else the new count.

        Also None when the lease was lost (it expired and another run took it): that run finishes.
        """
        if seen:
            released = await self._lease.release(
                self._hold, unless="changes = :seen", values={":seen": {"N": str(seen)}}
            )
        else:
            released = await self._lease.release(self._hold, unless="attribute_not_exists(changes)")
        if released:
            return None
        key = job_key(self._job_id)
        raw = (await self._ddb.get_item(TableName=self._table, Key=key, ConsistentRead=True)).get("Item")
        if raw is None or raw.get("fin_owner", {}).get("S") != self._hold.owner:
            self._hold.released = True  # not ours any more: nothing to give up
            return None
        return int(raw.get("changes", {}).get("N", "0"))
