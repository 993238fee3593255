"""One lease type for every "one live run at a time" in the journal: a unit, a job's finalizer.

A lease is two attributes on one item (owner, until). It is taken with a conditional write that
succeeds when nobody holds it, the holder's time ran out (a crashed run), or we hold it already;
renewed every third of its length while the block runs; given up at the end. Extra conditions
(a unit not done yet; a finalizer's change count unchanged) ride along on take and release.
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

if TYPE_CHECKING:
    from types_aiobotocore_dynamodb import DynamoDBClient

__all__ = ["Hold", "Lease", "LeaseOutcome"]


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
