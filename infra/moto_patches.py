"""moto at scale: its DynamoDB transactions and queries made to cost what DynamoDB's do (the benchmark
writes a million items), behaviour unchanged.
"""

from __future__ import annotations

import bisect
import copy
import threading
from collections.abc import Callable
from typing import Any

from moto.dynamodb import models as dynamodb_models
from moto.dynamodb.models.dynamo_type import DynamoType
from moto.dynamodb.models.table import Table as MotoTable

__all__ = ["fix_moto_at_scale"]


class _TablesNotCopied:
    """Stands for the ``copy`` module inside ``moto.dynamodb.models``: a table is "copied" as itself."""

    @staticmethod
    def deepcopy(value: Any, memo: dict[int, Any] | None = None) -> Any:
        return value if isinstance(value, MotoTable) else copy.deepcopy(value, memo)


def _transact_item_by_item(original: Callable[..., None]) -> Callable[..., None]:
    """moto rolls a failed ``TransactWriteItems`` back from a deep copy of every table it names, taken
    first: a cost in time and memory that grows with the table (minutes and gigabytes at a million
    items, for each unit a job completes). A transaction writes only the items it names, so those
    are what is kept here, and put back when it fails; the tables are no longer copied."""

    def transact_write_items(self: Any, transact_items: list[dict[str, Any]]) -> None:
        kept: list[tuple[str, dict[str, Any], dict[str, Any] | None]] = []
        for entry in transact_items:
            operation: Any = next(iter(entry.values()), None)
            table = self.tables.get(operation.get("TableName")) if isinstance(operation, dict) else None
            if table is None:
                continue  # moto refuses the transaction before it writes anything
            names = [n for n in (table.hash_key_attr, table.range_key_attr) if n is not None]
            key = operation.get("Key") or {n: operation.get("Item", {}).get(n) for n in names}
            try:
                item = self.get_item(table.name, key)
            except Exception:  # noqa: S112  # a malformed key: moto refuses that operation itself
                continue
            kept.append((table.name, key, None if item is None else copy.deepcopy(item.to_json()["Attributes"])))
        try:
            original(self, transact_items)
        except Exception:
            for table_name, key, attributes in reversed(kept):
                if self.get_item(table_name, key) is not None:
                    self.delete_item(table_name, key)
                if attributes is not None:
                    self.put_item(table_name, attributes)
            raise

    return transact_write_items


_querying = threading.local()  # (table, items): what the table query running on this thread reads


def _query_reads_its_partition(query: Callable[..., Any], all_items: Callable[..., Any]) -> tuple[Any, Any]:
    """moto answers each page of a table ``Query`` by sorting every item of the table and walking
    them up to the start key: about 10 s a page at a million items, where DynamoDB reads only the
    page. Here a table query reads its own partition, from its start key on, already in key order;
    moto's own code still filters, sorts, pages and projects it, so the answer is the same. Index
    queries, scans and everything else are unchanged."""

    def partition_query(self: MotoTable, hash_key: DynamoType | None, *args: Any, **kwargs: Any) -> Any:
        index_name = args[6] if len(args) > 6 else kwargs.get("index_name")  # moto's order
        if index_name or hash_key is None or not self.range_key_attr:
            return query(self, hash_key, *args, **kwargs)
        start_key = args[3] if len(args) > 3 else kwargs.get("exclusive_start_key")
        forward = args[4] if len(args) > 4 else kwargs.get("scan_index_forward", True)
        items = sorted(self.items.get(hash_key, {}).values(), key=lambda item: item.range_key.cast_value)
        if start_key:  # the page starts at its start key (moto skips the key itself)
            start = DynamoType(start_key[self.range_key_attr]).cast_value
            keys = [item.range_key.cast_value for item in items]
            items = (
                items[bisect.bisect_left(keys, start) :]
                if forward is not False
                else items[: bisect.bisect_right(keys, start)]
            )
        _querying.reading = (self, items)
        try:
            return query(self, hash_key, *args, **kwargs)
        finally:
            _querying.reading = None

    def items_for_query(self: MotoTable) -> list[Any]:
        reading = getattr(_querying, "reading", None)
        if reading is not None and reading[0] is self:
            return list(reading[1])
        return list(all_items(self))

    return partition_query, items_for_query


def fix_moto_at_scale() -> None:
    """What moto does per table size, not per request: transactions and table queries (once per process)."""
    backend: Any = dynamodb_models.DynamoDBBackend
    if getattr(backend.transact_write_items, "item_by_item", False):
        return
    dynamodb_models.copy = _TablesNotCopied()  # type: ignore[assignment,attr-defined]
    backend.transact_write_items = _transact_item_by_item(backend.transact_write_items)
    backend.transact_write_items.item_by_item = True
    MotoTable.query, MotoTable.all_items = _query_reads_its_partition(MotoTable.query, MotoTable.all_items)  # type: ignore[method-assign]
