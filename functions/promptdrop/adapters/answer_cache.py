"""The answer cache in DynamoDB: one item per answer kept for reuse, in the jobs table.

Item ``pk = CACHE#<key>``, ``sk = CACHE`` (a key space apart from ``JOB#…`` and ``BUDGET#…``: no job
query ever reads it), holding ``response`` (the answer's body as JSON text), ``model``,
``finish_reason``, ``created_at`` and ``expires_at`` (epoch seconds: the table's TTL deletes it,
``PROMPTDROP_CACHE_TTL_DAYS`` after it was written). Looked up 100 keys a ``BatchGetItem``, written
25 a ``BatchWriteItem``: a cache costs about one read call per 100 eligible lines and one write per
25 answers kept. A failure of either never fails a run: the caller logs it and carries on uncached.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from ..records import CachedAnswer

if TYPE_CHECKING:
    from types_aiobotocore_dynamodb import DynamoDBClient

__all__ = ["DynamoAnswerCache", "cache_pk"]

_GET_KEYS = 100  # BatchGetItem's limit
_PUT_ITEMS = 25  # BatchWriteItem's limit


def cache_pk(key: str) -> str:
    return f"CACHE#{key}"


class DynamoAnswerCache:
    """Answers kept for reuse, in the journal's table."""

    def __init__(self, client: DynamoDBClient, table: str, *, ttl_days: int) -> None:
        self._ddb = client
        self._table = table
        self._ttl_s = ttl_days * 86_400

    async def get_many(self, keys: Sequence[str]) -> dict[str, CachedAnswer]:
        """The answers kept under ``keys`` (those not kept, or expired, are absent)."""
        found: dict[str, CachedAnswer] = {}
        now = int(time.time())
        unique = list(dict.fromkeys(keys))
        for start in range(0, len(unique), _GET_KEYS):
            chunk = unique[start : start + _GET_KEYS]
            pending: list[dict[str, Any]] = [{"pk": {"S": cache_pk(key)}, "sk": {"S": "CACHE"}} for key in chunk]
            delay = 0.05
            while pending:
                response = await self._ddb.batch_get_item(RequestItems={self._table: {"Keys": pending}})
                for item in response.get("Responses", {}).get(self._table, []):
                    answer = _answer(item, now)
                    if answer is not None:
                        found[answer.key] = answer
                unprocessed: Any = response.get("UnprocessedKeys", {})
                pending = list(unprocessed.get(self._table, {}).get("Keys", []))
                if pending:  # throttled: back off, then read what is left
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, 2.0)
        return found

    async def put_many(self, answers: Sequence[CachedAnswer], now: str) -> None:
        """Keep ``answers`` (an answer kept already under the same key is replaced by an equal one)."""
        expires_at = str(int(time.time()) + self._ttl_s)
        items = [
            {
                "pk": {"S": cache_pk(answer.key)},
                "sk": {"S": "CACHE"},
                "response": {"S": answer.response},
                **({"model": {"S": answer.model}} if answer.model else {}),
                **({"finish_reason": {"S": answer.finish_reason}} if answer.finish_reason else {}),
                "created_at": {"S": now},
                "expires_at": {"N": expires_at},
            }
            for answer in answers
        ]
        for start in range(0, len(items), _PUT_ITEMS):
            pending: list[dict[str, Any]] = [
                {"PutRequest": {"Item": item}} for item in items[start : start + _PUT_ITEMS]
            ]
            delay = 0.05
            while pending:
                response = await self._ddb.batch_write_item(RequestItems={self._table: pending})  # type: ignore[dict-item]
                unprocessed: Any = response.get("UnprocessedItems", {})
                pending = list(unprocessed.get(self._table, []))
                if pending:
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, 2.0)


def _answer(item: dict[str, Any], now: int) -> CachedAnswer | None:
    """The kept answer of an item — None once it expired (the TTL deletes items late: up to days)."""
    expires = item.get("expires_at")
    if expires is not None and int(expires["N"]) <= now:
        return None
    model, reason = item.get("model"), item.get("finish_reason")
    return CachedAnswer(
        key=item["pk"]["S"].removeprefix("CACHE#"),
        response=item["response"]["S"],
        model=None if model is None else model["S"],
        finish_reason=None if reason is None else reason["S"],
    )
