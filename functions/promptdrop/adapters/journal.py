"""The DynamoDB journal: one job item and one item per request (README, "Outputs" → DynamoDB).

One item per ``custom_id``, so a duplicate or racing run cannot double-count an answer; a failure
is written with a condition, so it can never replace an answer (see :meth:`Journal.write_requests`).
Records and their codec are in :mod:`promptdrop.records` and :mod:`.items`; leases in :mod:`.leases`.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable, Sequence
from typing import TYPE_CHECKING, Any

from ..records import JobRecord, JobStatus, RequestRecord, RequestStatus
from .items import (
    REQUEST_PREFIXES,
    job_from_item,
    job_key,
    job_pk,
    job_to_item,
    request_from_item,
    request_to_item,
    serialize,
    unit_key,
)
from .leases import Hold, Lease

if TYPE_CHECKING:
    from types_aiobotocore_dynamodb import DynamoDBClient

__all__ = ["ITEM_RESPONSE_MAX_BYTES", "Journal"]

_BATCH_WRITE_ITEMS = 25  # BatchWriteItem's limit (16 MB a call; items are under 400 KB)
# An item is at most 400 KB; a response larger than this is stored in S3 and pointed to.
ITEM_RESPONSE_MAX_BYTES = 300_000


class Journal:
    """Job and request items in one table."""

    def __init__(self, client: DynamoDBClient, table: str, *, clock: Callable[[], float] = time.time) -> None:
        self._ddb = client
        self._table = table
        self._clock = clock

    # -- the job item ---------------------------------------------------------------------------

    async def start_job(self, job: JobRecord) -> tuple[JobRecord, bool]:
        """Create the job item as RUNNING, or return the existing one (a redelivery or a resume).

        The flag says whether this call created it (a first delivery: nothing to skip).
        """
        try:
            await self._ddb.put_item(
                TableName=self._table, Item=job_to_item(job), ConditionExpression="attribute_not_exists(pk)"
            )
        except self._ddb.exceptions.ConditionalCheckFailedException:
            existing = await self.get_job(job.job_id)
            if existing is not None:
                return existing, False
            raise
        return job, True

    async def get_job(self, job_id: str) -> JobRecord | None:
        response = await self._ddb.get_item(TableName=self._table, Key=job_key(job_id), ConsistentRead=True)
        raw = response.get("Item")
        return None if raw is None else job_from_item(raw)

    async def set_units_total(self, job_id: str, units: int) -> None:
        """Record how many units the job was split into (once: a redelivery plans the same split)."""
        await self._set(job_id, {"units_total": units}, only_if_absent="units_total")

    async def close_job(self, job: JobRecord) -> None:
        """Write a finished job's status, counts, tokens, cost and finish time."""
        await self._set(
            job.job_id,
            {
                "status": str(job.status),
                "total": job.total,
                "succeeded": job.succeeded,
                "failed": job.failed,
                "prompt_tokens": job.prompt_tokens,
                "completion_tokens": job.completion_tokens,
                "finished_at": job.finished_at,
                "estimated_cost_usd": job.estimated_cost_usd,
            },
        )

    async def fail_job(self, job_id: str, error: dict[str, Any], finished_at: str) -> None:
        await self._set(job_id, {"status": str(JobStatus.FAILED), "error": error, "finished_at": finished_at})

    async def _set(self, job_id: str, attrs: dict[str, Any], *, only_if_absent: str | None = None) -> bool:
        attrs = {k: v for k, v in attrs.items() if v is not None}
        names = {f"#a{i}": name for i, name in enumerate(attrs)}
        values = {f":v{i}": serialize(value) for i, value in enumerate(attrs.values())}
        kwargs: dict[str, Any] = {}
        if only_if_absent:
            names["#c"] = only_if_absent
            kwargs["ConditionExpression"] = "attribute_not_exists(#c)"
        try:
            await self._ddb.update_item(
                TableName=self._table,
                Key=job_key(job_id),
                UpdateExpression="SET " + ", ".join(f"#a{i} = :v{i}" for i in range(len(attrs))),
                ExpressionAttributeNames=names,
                ExpressionAttributeValues=values,
                **kwargs,
            )
        except self._ddb.exceptions.ConditionalCheckFailedException:
            return False
        return True

    # -- leases: one live run per unit; one run at a time rewrites a job's outputs ---------------

    def unit_lease(self, job_id: str, unit: str, lease_s: float) -> Lease:
        """The lease on a unit (the whole file, or one shard): refused for good once the unit is done."""
        return Lease(
            self._ddb,
            self._table,
            unit_key(job_id, unit),
            owner_attr="owner",
            until_attr="lease_until",
            done_attr="done_at",
            lease_s=lease_s,
            clock=self._clock,
        )

    def finalizer_lease(self, job_id: str, lease_s: float) -> Lease:
        """The lease on rewriting a job's outputs; taking it returns the job item (its ``changes``)."""
        return Lease(
            self._ddb,
            self._table,
            job_key(job_id),
            owner_attr="fin_owner",
            until_attr="fin_until",
            lease_s=lease_s,
            clock=self._clock,
        )

    async def note_change(self, job_id: str) -> None:
        """Count a change to the journal that the outputs must come to hold (a redrive's answers)."""
        await self._ddb.update_item(
            TableName=self._table,
            Key=job_key(job_id),
            UpdateExpression="ADD changes :one",
            ExpressionAttributeValues={":one": {"N": "1"}},
        )

    async def release_finalizer(self, job_id: str, lease: Lease, hold: Hold, seen: int) -> int | None:
        """Give the finalizer lease up if nothing changed since ``seen``: None when released, else the new count.

        Also None when the lease was lost (it expired and another run took it): that run finishes.
        """
        if seen:
            released = await lease.release(hold, unless="changes = :seen", values={":seen": {"N": str(seen)}})
        else:
            released = await lease.release(hold, unless="attribute_not_exists(changes)")
        if released:
            return None
        raw = (await self._ddb.get_item(TableName=self._table, Key=job_key(job_id), ConsistentRead=True)).get("Item")
        if raw is None or raw.get("fin_owner", {}).get("S") != hold.owner:
            hold.released = True  # not ours any more: nothing to give up
            return None
        return int(raw.get("changes", {}).get("N", "0"))

    async def complete_unit(self, job_id: str, unit: str, hold: Hold, now: str) -> None:
        """Mark the unit done and count it on the job item — both or neither, and only once."""
        # Cancelled when a duplicate run got there first: the unit was counted once already.
        with contextlib.suppress(self._ddb.exceptions.TransactionCanceledException):
            await self._ddb.transact_write_items(
                TransactItems=[
                    {
                        "Update": {
                            "TableName": self._table,
                            "Key": unit_key(job_id, unit),
                            "UpdateExpression": "SET done_at = :now REMOVE lease_until",
                            "ConditionExpression": "attribute_not_exists(done_at) AND #o = :me",
                            "ExpressionAttributeNames": {"#o": "owner"},
                            "ExpressionAttributeValues": {":now": {"S": now}, ":me": {"S": hold.owner}},
                        }
                    },
                    {
                        "Update": {
                            "TableName": self._table,
                            "Key": job_key(job_id),
                            "UpdateExpression": "ADD units_done :one",
                            "ExpressionAttributeValues": {":one": {"N": "1"}},
                        }
                    },
                ]
            )
        hold.released = True

    # -- request items ----------------------------------------------------------------------------

    async def write_requests(self, job_id: str, records: Sequence[RequestRecord], now: str) -> None:
        """Journal finished requests; a failure never replaces a success.

        Successes go in ``BatchWriteItem`` calls of 25 (one item per ``custom_id``: a success may
        replace a failure — a redrive — or an identical success, both harmless). Failures, the only
        writes that could destroy an answer, are conditional puts: never over a SUCCEEDED item.
        """
        successes = [request_to_item(job_id, r, now) for r in records if r.succeeded]
        failures = [request_to_item(job_id, r, now) for r in records if not r.succeeded]
        for start in range(0, len(successes), _BATCH_WRITE_ITEMS):
            await self._batch_write(successes[start : start + _BATCH_WRITE_ITEMS])
        if failures:
            await asyncio.gather(*(self._put_failure(item) for item in failures))

    async def _batch_write(self, items: list[dict[str, Any]]) -> None:
        pending: list[dict[str, Any]] = [{"PutRequest": {"Item": item}} for item in items]
        delay = 0.05
        while pending:
            response = await self._ddb.batch_write_item(RequestItems={self._table: pending})  # type: ignore[dict-item]
            unprocessed: Any = response.get("UnprocessedItems", {})
            pending = list(unprocessed.get(self._table, []))
            if pending:  # throttled: back off, then write what is left
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)

    async def _put_failure(self, item: dict[str, Any]) -> None:
        # Refused when the request already has an answer: keep the answer.
        with contextlib.suppress(self._ddb.exceptions.ConditionalCheckFailedException):
            await self._ddb.put_item(
                TableName=self._table,
                Item=item,
                ConditionExpression="attribute_not_exists(sk) OR #s <> :done",
                ExpressionAttributeNames={"#s": "status"},
                ExpressionAttributeValues={":done": {"S": str(RequestStatus.SUCCEEDED)}},
            )

    async def records(self, job_id: str) -> AsyncIterator[RequestRecord]:
        """Every request item of the job (strongly consistent; in key order, not input order)."""
        for prefix in REQUEST_PREFIXES:
            async for item in self._query(job_id, prefix):
                yield request_from_item(item)

    async def finals(self, job_id: str) -> tuple[dict[str, int], set[int]]:
        """What a rerun must not send again: each final ``custom_id`` with the line it answers, and
        the lines already failed as repeats of an earlier line's ``custom_id``."""
        names = {"#l": "line"}
        answered = {
            item["custom_id"]["S"]: int(item["line"]["N"])
            async for item in self._query(job_id, REQUEST_PREFIXES[0], projection="custom_id, #l", names=names)
        }
        repeats = {int(item["line"]["N"]) async for item in self._query(job_id, REQUEST_PREFIXES[1], "#l", names)}
        return answered, repeats

    async def succeeded_ids(self, job_id: str) -> set[str]:
        """custom_ids answered successfully (a redrive re-runs only the others)."""
        return {
            item["custom_id"]["S"]
            async for item in self._query(job_id, REQUEST_PREFIXES[0], "custom_id, #s", {"#s": "status"})
            if item["status"]["S"] == RequestStatus.SUCCEEDED
        }

    async def _query(
        self, job_id: str, prefix: str, projection: str | None = None, names: dict[str, str] | None = None
    ) -> AsyncIterator[dict[str, Any]]:
        kwargs: dict[str, Any] = {
            "TableName": self._table,
            "KeyConditionExpression": "pk = :pk AND begins_with(sk, :prefix)",
            "ExpressionAttributeValues": {":pk": {"S": job_pk(job_id)}, ":prefix": {"S": prefix}},
            "ConsistentRead": True,
        }
        if projection:
            kwargs["ProjectionExpression"] = projection
        if names:
            kwargs["ExpressionAttributeNames"] = names
        while True:
            page = await self._ddb.query(**kwargs)
            for item in page.get("Items", []):
                yield item
            if "LastEvaluatedKey" not in page:
                return
            kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]
