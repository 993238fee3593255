"""The DynamoDB journal: one job item and one item per request (DESIGN.md, DynamoDB).

One item per ``custom_id``, so a duplicate or racing run cannot double-count an answer; a failure
is written with a condition, so it can never replace an answer (see :meth:`Journal.write_requests`).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from boto3.dynamodb.types import TypeDeserializer, TypeSerializer

if TYPE_CHECKING:
    from types_aiobotocore_dynamodb import DynamoDBClient

__all__ = ["FINAL_JOB_STATES", "JobItem", "Journal", "RequestRecord"]

FINAL_JOB_STATES = frozenset({"SUCCEEDED", "PARTIAL", "FAILED"})
_BATCH_WRITE_ITEMS = 25  # BatchWriteItem's limit (16 MB a call; items are under 400 KB)
# An item is at most 400 KB; a response larger than this is stored in S3 and pointed to.
ITEM_RESPONSE_MAX_BYTES = 300_000
_serializer = TypeSerializer()
_deserializer = TypeDeserializer()


@dataclass(slots=True, frozen=True)
class JobItem:
    job_id: str
    status: str
    created: bool  # this call created it (a first delivery)
    attrs: dict[str, Any]


@dataclass(slots=True)
class RequestRecord:
    """What the journal keeps of a finished request (one DynamoDB item)."""

    custom_id: str
    line: int
    status: str  # SUCCEEDED / FAILED
    attempts: int
    model: str | None = None
    latency_ms: int | None = None
    status_code: int | None = None
    request_id: str | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    finish_reason: str | None = None
    response: str | None = None  # the chat.completion (or the API's error body) as JSON text
    response_s3_key: str | None = None  # set instead of `response` when it is too large for an item
    error: dict[str, Any] | None = None
    sk_suffix: str = ""  # keeps a repeated custom_id's error apart from the first

    @property
    def sk(self) -> str:
        return f"REQ#{self.custom_id}{self.sk_suffix}"

    def to_item(self, pk: str, now: str) -> dict[str, Any]:
        item: dict[str, Any] = {
            "pk": {"S": pk},
            "sk": {"S": self.sk},
            "custom_id": {"S": self.custom_id},
            "status": {"S": self.status},
            "line": {"N": str(self.line)},
            "attempts": {"N": str(self.attempts)},
            "prompt_tokens": {"N": str(self.prompt_tokens)},
            "completion_tokens": {"N": str(self.completion_tokens)},
            "updated_at": {"S": now},
        }
        for name in ("model", "request_id", "finish_reason", "response", "response_s3_key"):
            value = getattr(self, name)
            if value is not None:
                item[name] = {"S": value}
        for name in ("latency_ms", "status_code"):
            value = getattr(self, name)
            if value is not None:
                item[name] = {"N": str(value)}
        if self.error is not None:
            item["error"] = _serializer.serialize({k: v for k, v in self.error.items() if v is not None})
        return item

    @classmethod
    def from_item(cls, item: dict[str, Any]) -> RequestRecord:
        plain = {k: _deserializer.deserialize(v) for k, v in item.items()}
        sk: str = plain["sk"]
        custom_id: str = plain["custom_id"]
        error = plain.get("error")
        return cls(
            custom_id=custom_id,
            line=int(plain["line"]),
            status=plain["status"],
            attempts=int(plain["attempts"]),
            model=plain.get("model"),
            latency_ms=_int_or_none(plain.get("latency_ms")),
            status_code=_int_or_none(plain.get("status_code")),
            request_id=plain.get("request_id"),
            prompt_tokens=int(plain.get("prompt_tokens", 0)),
            completion_tokens=int(plain.get("completion_tokens", 0)),
            finish_reason=plain.get("finish_reason"),
            response=plain.get("response"),
            response_s3_key=plain.get("response_s3_key"),
            error={k: _plain(v) for k, v in error.items()} if isinstance(error, dict) else None,
            sk_suffix=sk[len("REQ#") + len(custom_id) :],
        )


def _int_or_none(value: Any) -> int | None:
    return None if value is None else int(value)


def _plain(value: Any) -> Any:
    # DynamoDB numbers come back as Decimal; the error map holds small ints only.
    return int(value) if type(value).__name__ == "Decimal" else value


def job_pk(job_id: str) -> str:
    return f"JOB#{job_id}"


class Journal:
    """Job and request items in one table."""

    def __init__(self, client: DynamoDBClient, table: str) -> None:
        self._ddb = client
        self._table = table

    def _job_key(self, job_id: str) -> dict[str, Any]:
        return {"pk": {"S": job_pk(job_id)}, "sk": {"S": "JOB"}}

    async def start_job(self, job_id: str, attrs: dict[str, Any]) -> JobItem:
        """Create the job item as RUNNING, or return the existing one (a redelivery or a resume)."""
        item = {"pk": job_pk(job_id), "sk": "JOB", "status": "RUNNING", **attrs}
        try:
            await self._ddb.put_item(
                TableName=self._table,
                Item={k: _serializer.serialize(v) for k, v in item.items() if v is not None},
                ConditionExpression="attribute_not_exists(pk)",
            )
        except self._ddb.exceptions.ConditionalCheckFailedException:
            existing = await self.get_job(job_id)
            if existing is not None:
                return existing
            raise
        return JobItem(job_id, "RUNNING", True, item)

    async def get_job(self, job_id: str) -> JobItem | None:
        response = await self._ddb.get_item(TableName=self._table, Key=self._job_key(job_id), ConsistentRead=True)
        raw = response.get("Item")
        if raw is None:
            return None
        attrs = {k: _deserializer.deserialize(v) for k, v in raw.items()}
        return JobItem(job_id, str(attrs.get("status", "RUNNING")), False, attrs)

    async def update_job(self, job_id: str, attrs: dict[str, Any], *, only_if_absent: str | None = None) -> bool:
        """Set attributes on the job item; with ``only_if_absent``, only while that attribute is unset."""
        names = {f"#a{i}": name for i, name in enumerate(attrs)}
        values = {f":v{i}": _serializer.serialize(value) for i, value in enumerate(attrs.values())}
        kwargs: dict[str, Any] = {}
        if only_if_absent:
            names["#c"] = only_if_absent
            kwargs["ConditionExpression"] = "attribute_not_exists(#c)"
        try:
            await self._ddb.update_item(
                TableName=self._table,
                Key=self._job_key(job_id),
                UpdateExpression="SET " + ", ".join(f"#a{i} = :v{i}" for i in range(len(attrs))),
                ExpressionAttributeNames=names,
                ExpressionAttributeValues=values,
                **kwargs,
            )
        except self._ddb.exceptions.ConditionalCheckFailedException:
            return False
        return True

    # -- the finalizer: one run at a time rewrites a job's outputs, until they hold every change --

    async def note_change(self, job_id: str) -> None:
        """Count a change to the journal that the outputs must come to hold (a redrive's answers)."""
        await self._ddb.update_item(
            TableName=self._table,
            Key=self._job_key(job_id),
            UpdateExpression="ADD changes :one",
            ExpressionAttributeValues={":one": {"N": "1"}},
        )

    async def take_finalizer(self, job_id: str, owner: str, *, now: float, lease_s: float) -> int | None:
        """Take the job's finalizer lease; the change count it starts from, or None when another run holds it."""
        try:
            response = await self._ddb.update_item(
                TableName=self._table,
                Key=self._job_key(job_id),
                UpdateExpression="SET fin_owner = :me, fin_until = :until",
                ConditionExpression="attribute_not_exists(fin_until) OR fin_until < :now OR fin_owner = :me",
                ExpressionAttributeValues={
                    ":me": {"S": owner},
                    ":until": {"N": f"{now + lease_s:.3f}"},
                    ":now": {"N": f"{now:.3f}"},
                },
                ReturnValues="ALL_NEW",
            )
        except self._ddb.exceptions.ConditionalCheckFailedException:
            return None
        return int(response["Attributes"].get("changes", {}).get("N", "0"))

    async def renew_finalizer(self, job_id: str, owner: str, *, until: float) -> None:
        await self._ddb.update_item(
            TableName=self._table,
            Key=self._job_key(job_id),
            UpdateExpression="SET fin_until = :until",
            ConditionExpression="fin_owner = :me",
            ExpressionAttributeValues={":me": {"S": owner}, ":until": {"N": f"{until:.3f}"}},
        )

    async def release_finalizer(self, job_id: str, owner: str, seen: int) -> int | None:
        """Give the lease up if nothing changed since ``seen``: None when released, else the new count.

        Also None when the lease was lost (it expired and another run took it): that run finishes.
        """
        unchanged = "changes = :seen" if seen else "attribute_not_exists(changes)"
        values: dict[str, Any] = {":me": {"S": owner}}
        if seen:
            values[":seen"] = {"N": str(seen)}
        try:
            await self._ddb.update_item(
                TableName=self._table,
                Key=self._job_key(job_id),
                UpdateExpression="REMOVE fin_owner, fin_until",
                ConditionExpression=f"fin_owner = :me AND {unchanged}",
                ExpressionAttributeValues=values,
            )
        except self._ddb.exceptions.ConditionalCheckFailedException:
            job = await self.get_job(job_id)
            if job is None or job.attrs.get("fin_owner") != owner:
                return None
            return int(job.attrs.get("changes") or 0)
        return None

    # -- units: a whole file, or one shard of it, run by one invocation at a time --------------

    def _unit_key(self, job_id: str, unit: str) -> dict[str, Any]:
        return {"pk": {"S": job_pk(job_id)}, "sk": {"S": f"UNIT#{unit}"}}

    async def acquire_unit(self, job_id: str, unit: str, owner: str, *, now: float, lease_s: float) -> str:
        """Take the unit's lease: "acquired", "busy" (another live run holds it) or "done"."""
        try:
            await self._ddb.update_item(
                TableName=self._table,
                Key=self._unit_key(job_id, unit),
                UpdateExpression="SET #o = :me, lease_until = :until",
                ConditionExpression="attribute_not_exists(done_at) AND "
                "(attribute_not_exists(lease_until) OR lease_until < :now OR #o = :me)",
                ExpressionAttributeNames={"#o": "owner"},
                ExpressionAttributeValues={
                    ":me": {"S": owner},
                    ":until": {"N": f"{now + lease_s:.3f}"},
                    ":now": {"N": f"{now:.3f}"},
                },
            )
        except self._ddb.exceptions.ConditionalCheckFailedException:
            item = await self._ddb.get_item(
                TableName=self._table, Key=self._unit_key(job_id, unit), ConsistentRead=True
            )
            return "done" if "done_at" in item.get("Item", {}) else "busy"
        return "acquired"

    async def renew_unit(self, job_id: str, unit: str, owner: str, *, until: float) -> None:
        await self._ddb.update_item(
            TableName=self._table,
            Key=self._unit_key(job_id, unit),
            UpdateExpression="SET lease_until = :until",
            ConditionExpression="#o = :me",
            ExpressionAttributeNames={"#o": "owner"},
            ExpressionAttributeValues={":me": {"S": owner}, ":until": {"N": f"{until:.3f}"}},
        )

    async def release_unit(self, job_id: str, unit: str, owner: str) -> None:
        """Give the lease up (a continuation or a redrive may take it at once)."""
        # Refused when the lease had expired and another run holds it: nothing of ours to release.
        with contextlib.suppress(self._ddb.exceptions.ConditionalCheckFailedException):
            await self._ddb.update_item(
                TableName=self._table,
                Key=self._unit_key(job_id, unit),
                UpdateExpression="REMOVE lease_until",
                ConditionExpression="#o = :me",
                ExpressionAttributeNames={"#o": "owner"},
                ExpressionAttributeValues={":me": {"S": owner}},
            )

    async def complete_unit(self, job_id: str, unit: str, owner: str, now: str) -> None:
        """Mark the unit done and count it on the job item — both or neither, and only once."""
        # Cancelled when a duplicate run got there first: the unit was counted once already.
        with contextlib.suppress(self._ddb.exceptions.TransactionCanceledException):
            await self._ddb.transact_write_items(
                TransactItems=[
                    {
                        "Update": {
                            "TableName": self._table,
                            "Key": self._unit_key(job_id, unit),
                            "UpdateExpression": "SET done_at = :now REMOVE lease_until",
                            "ConditionExpression": "attribute_not_exists(done_at) AND #o = :me",
                            "ExpressionAttributeNames": {"#o": "owner"},
                            "ExpressionAttributeValues": {":now": {"S": now}, ":me": {"S": owner}},
                        }
                    },
                    {
                        "Update": {
                            "TableName": self._table,
                            "Key": self._job_key(job_id),
                            "UpdateExpression": "ADD units_done :one",
                            "ExpressionAttributeValues": {":one": {"N": "1"}},
                        }
                    },
                ]
            )

    async def write_requests(self, job_id: str, records: Sequence[RequestRecord], now: str) -> None:
        """Journal finished requests; a failure never replaces a success.

        Successes go in ``BatchWriteItem`` calls of 25 (one item per ``custom_id``: a success may
        replace a failure — a redrive — or an identical success, both harmless). Failures, the only
        writes that could destroy an answer, are conditional puts: never over a SUCCEEDED item.
        """
        pk = job_pk(job_id)
        successes = [r.to_item(pk, now) for r in records if r.status == "SUCCEEDED"]
        failures = [r.to_item(pk, now) for r in records if r.status != "SUCCEEDED"]
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
                ExpressionAttributeValues={":done": {"S": "SUCCEEDED"}},
            )

    async def records(self, job_id: str) -> AsyncIterator[RequestRecord]:
        """Every request item of the job (strongly consistent; in key order, not input order)."""
        async for item in self._query(job_id):
            yield RequestRecord.from_item(item)

    async def finals(self, job_id: str) -> tuple[dict[str, int], set[int]]:
        """What a rerun must not send again: each final ``custom_id`` with the line it answers, and
        the lines already failed as repeats of an earlier line's ``custom_id``."""
        answered: dict[str, int] = {}
        repeats: set[int] = set()
        async for item in self._query(job_id, projection="custom_id, sk, #l", names={"#l": "line"}):
            custom_id, line = item["custom_id"]["S"], int(item["line"]["N"])
            if item["sk"]["S"] == f"REQ#{custom_id}":
                answered[custom_id] = line
            else:
                repeats.add(line)
        return answered, repeats

    async def succeeded_ids(self, job_id: str) -> set[str]:
        """custom_ids answered successfully (a redrive re-runs only the others)."""
        return {
            item["custom_id"]["S"]
            async for item in self._query(job_id, projection="custom_id, #s", names={"#s": "status"})
            if item["status"]["S"] == "SUCCEEDED"
        }

    async def _query(
        self, job_id: str, projection: str | None = None, names: dict[str, str] | None = None
    ) -> AsyncIterator[dict[str, Any]]:
        kwargs: dict[str, Any] = {
            "TableName": self._table,
            "KeyConditionExpression": "pk = :pk AND begins_with(sk, :req)",
            "ExpressionAttributeValues": {":pk": {"S": job_pk(job_id)}, ":req": {"S": "REQ#"}},
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
