"""Request items in the journal: one item per ``custom_id`` of a job (and one per repeated line).

One item per ``custom_id``, so a duplicate or racing run cannot double-count an answer; a failure
is written with a condition, so it can never replace an answer (see :meth:`RequestLog.write`).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..records import RequestRecord, RequestStatus
from .items import REQUEST_PREFIXES, request_from_item, request_key, request_pks, request_to_item

if TYPE_CHECKING:
    from types_aiobotocore_dynamodb import DynamoDBClient

__all__ = ["ITEM_RESPONSE_MAX_BYTES", "OUTPUT_ATTRIBUTES", "LineSet", "Prior", "RequestLog"]

_BATCH_WRITE_ITEMS = 25  # BatchWriteItem's limit (16 MB a call; items are under 400 KB)
# An item is at most 400 KB; a response larger than this is stored in S3 and pointed to.
ITEM_RESPONSE_MAX_BYTES = 300_000
# What the output files and the summary are built from: the rest of an item (attempts, latency,
# timestamps…) is not read back, which saves about a third of the parsing per answer.
OUTPUT_ATTRIBUTES = (
    "custom_id", "line", "status", "model", "status_code", "request_id", "prompt_tokens", "completion_tokens",
    "cached_tokens", "response", "response_s3_key", "error", "columns", "columns_s3_key", "service_tier",
    "cached", "cache_write_tokens",
)  # fmt: skip
_OUTPUT_NAMES = {f"#a{i}": name for i, name in enumerate(OUTPUT_ATTRIBUTES)}


class LineSet:
    """A set of line numbers as a bitmap: a million lines in 125 KB, where a ``set`` of them takes
    about 60 MB — what lets a resumed shard of a huge file know what is done in bounded memory."""

    __slots__ = ("_bits", "_count")

    def __init__(self, lines: Iterable[int] = ()) -> None:
        self._bits = bytearray()
        self._count = 0
        for line in lines:
            self.add(line)

    def add(self, line: int) -> None:
        index, bit = divmod(line, 8)
        if index >= len(self._bits):
            self._bits.extend(bytes(max(index + 1 - len(self._bits), len(self._bits))))
        if not self._bits[index] >> bit & 1:
            self._bits[index] |= 1 << bit
            self._count += 1

    def __contains__(self, line: object) -> bool:
        if not isinstance(line, int):
            return False
        index, bit = divmod(line, 8)
        return 0 <= index < len(self._bits) and bool(self._bits[index] >> bit & 1)

    def __len__(self) -> int:
        return self._count


@dataclass(slots=True, frozen=True)
class Prior:
    """A request's item as a redrive finds it."""

    succeeded: bool
    columns: str | None = None
    columns_s3_key: str | None = None


class RequestLog:
    """The request items of every job, in the journal's table."""

    def __init__(self, client: DynamoDBClient, table: str, *, ttl_days: int = 0) -> None:
        self._ddb = client
        self._table = table
        self._ttl_s = ttl_days * 86_400

    async def write(self, job_id: str, records: Sequence[RequestRecord], now: str) -> None:
        """Journal finished requests; a failure never replaces a success.

        Successes go in ``BatchWriteItem`` calls of 25 (one item per ``custom_id``: a success may
        replace a failure — a redrive — or an identical success, both harmless). Failures, the only
        writes that could destroy an answer, are conditional puts: never over a SUCCEEDED item.
        """
        expires_at = int(time.time()) + self._ttl_s if self._ttl_s else None
        successes = [request_to_item(job_id, r, now, expires_at) for r in records if r.succeeded]
        failures = [request_to_item(job_id, r, now, expires_at) for r in records if not r.succeeded]
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
        """Every request item of the job, as far as the outputs need it (strongly consistent; in
        key order, not input order; ``attempts``, ``latency_ms``, ``finish_reason`` not read)."""
        projection = ", ".join(_OUTPUT_NAMES)
        for pk in request_pks(job_id):
            for prefix in REQUEST_PREFIXES:
                async for item in self._query(pk, prefix, projection, _OUTPUT_NAMES):
                    yield request_from_item(item)

    async def finals(self, job_id: str) -> tuple[dict[str, int], LineSet]:
        """What a rerun must not send again: each final ``custom_id`` with the line it answers, and
        the lines already failed as repeats of an earlier line's ``custom_id``."""
        answered: dict[str, int] = {}
        for pk in request_pks(job_id):
            async for item in self._query(pk, REQUEST_PREFIXES[0], "custom_id, #l", {"#l": "line"}):
                answered[item["custom_id"]["S"]] = int(item["line"]["N"])
        return answered, await self.repeats(job_id)

    async def done_lines(self, job_id: str) -> LineSet:
        """Every line of the job with a final outcome: answered, failed, or failed as a repeat. What a
        resumed shard skips (a split file's repeats were all found when it was planned, so a shard
        needs no ``custom_id`` — and the job may have a million of them)."""
        done = LineSet()
        for pk in request_pks(job_id):
            for prefix in REQUEST_PREFIXES:
                async for item in self._query(pk, prefix, "#l", {"#l": "line"}):
                    done.add(int(item["line"]["N"]))
        return done

    async def repeats(self, job_id: str) -> LineSet:
        """The lines failed as repeats of an earlier line's ``custom_id`` (a split file's are known
        before any shard runs: even a shard's first run must not send them)."""
        names = {"#l": "line"}
        return LineSet(
            [
                int(item["line"]["N"])
                for pk in request_pks(job_id)
                async for item in self._query(pk, REQUEST_PREFIXES[1], "#l", names)
            ]
        )

    async def prior(self, job_id: str, custom_id: str) -> Prior:
        """What a redrive needs of the request's item: whether it has an answer (then nothing is
        sent), and a .csv row's stored cells (kept on the item the redrive writes)."""
        response = await self._ddb.get_item(
            TableName=self._table,
            Key=request_key(job_id, custom_id),
            ConsistentRead=True,
            ProjectionExpression="#s, #c, #p",
            ExpressionAttributeNames={"#s": "status", "#c": "columns", "#p": "columns_s3_key"},
        )
        item = response.get("Item", {})
        return Prior(
            succeeded=item.get("status", {}).get("S") == RequestStatus.SUCCEEDED,
            columns=item.get("columns", {}).get("S"),
            columns_s3_key=item.get("columns_s3_key", {}).get("S"),
        )

    async def _query(
        self, pk: str, prefix: str, projection: str | None = None, names: dict[str, str] | None = None
    ) -> AsyncIterator[dict[str, Any]]:
        kwargs: dict[str, Any] = {
            "TableName": self._table,
            "KeyConditionExpression": "pk = :pk AND begins_with(sk, :prefix)",
            "ExpressionAttributeValues": {":pk": {"S": pk}, ":prefix": {"S": prefix}},
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
