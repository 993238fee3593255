"""The DynamoDB journal: the job item, its units' and finalizer's leases, and (``.requests``) one
item per request (README, "Outputs" → DynamoDB).

Records and their codec are in :mod:`promptdrop.records` and :mod:`.items`; the lease protocol in
:mod:`.leases`; request items in :mod:`.request_log`.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator, Callable, Mapping
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from ..records import JobRecord, JobStatus
from .items import job_from_item, job_key, job_to_item, serialize
from .leases import FinalizerHold, UnitHold, finalizer_lease, unit_lease
from .request_log import RequestLog

if TYPE_CHECKING:
    from types_aiobotocore_dynamodb import DynamoDBClient

__all__ = ["Journal"]


class Journal:
    """Job and request items in one table."""

    def __init__(
        self, client: DynamoDBClient, table: str, *, clock: Callable[[], float] = time.time, request_ttl_days: int = 0
    ) -> None:
        self._ddb = client
        self._table = table
        self._clock = clock
        self.requests = RequestLog(client, table, ttl_days=request_ttl_days)

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

    async def set_line_count(self, job_id: str, lines: int) -> None:
        await self._set(job_id, {"line_count": lines})  # the file's lines that hold a request

    async def set_error(self, job_id: str, error: dict[str, Any]) -> None:
        await self._set(job_id, {"error": error})  # why a unit stopped the job early (a redrive clears it)

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

    async def add_progress(
        self, job_id: str, counts: Mapping[str, int | float], now: str, *, window: list[list[float]] | None = None
    ) -> JobRecord:
        """Add a unit's counts since its last report to ``progress_*``, set its window; the job item, as written."""
        response = await self._ddb.update_item(
            TableName=self._table,
            Key=job_key(job_id),
            ConditionExpression="attribute_exists(pk)",
            ReturnValues="ALL_NEW",
            **_progress_update(counts, now, window),
        )
        return job_from_item(response["Attributes"])

    async def resume_job(self, job_id: str) -> None:
        """A redriven file: the job runs again (a cancel, a spent budget or an error, once answered, is forgotten)."""
        await self._ddb.update_item(
            TableName=self._table,
            Key=job_key(job_id),
            UpdateExpression="SET #s = :running REMOVE cancel_requested_at, cancel_reported, budget_reported, #e",
            ExpressionAttributeNames={"#s": "status", "#e": "error"},
            ExpressionAttributeValues={":running": {"S": str(JobStatus.RUNNING)}},
        )

    async def claim_once(self, job_id: str, flag: str, now: str) -> bool:
        """Set ``flag`` on the job item unless it is set already: True for the one caller that set it."""
        return await self._set(job_id, {flag: now}, only_if_absent=flag)

    async def set_published(self, job_id: str, outcome: str) -> None:
        await self._set(job_id, {"published": outcome})

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

    @contextlib.asynccontextmanager
    async def unit_held(self, job_id: str, unit: str, lease_s: float) -> AsyncIterator[UnitHold]:
        """Hold a unit's lease while the block runs (check ``outcome`` first); given up on the way
        out unless the block completed the unit or released it."""
        lease = unit_lease(self._ddb, self._table, job_id, unit, lease_s, self._clock)
        async with lease.held() as hold:
            yield UnitHold(self._ddb, self._table, job_id, unit, lease, hold)

    @contextlib.asynccontextmanager
    async def finalizer_held(self, job_id: str, lease_s: float) -> AsyncIterator[FinalizerHold]:
        """Hold the lease on rewriting a job's outputs (``job`` is None when another run holds it)."""
        lease = finalizer_lease(self._ddb, self._table, job_id, lease_s, self._clock)
        async with lease.held() as hold:
            yield FinalizerHold(self._ddb, self._table, job_id, lease, hold)

    async def note_change(self, job_id: str) -> None:
        """Count a change to the journal that the outputs must come to hold (a redrive's answers)."""
        await self._ddb.update_item(
            TableName=self._table,
            Key=job_key(job_id),
            UpdateExpression="ADD changes :one",
            ExpressionAttributeValues={":one": {"N": "1"}},
        )


def _progress_update(counts: Mapping[str, int | float], now: str, window: list[list[float]] | None) -> dict[str, Any]:
    """A progress report's update: ADD the counts, SET the time (and the window, when given)."""
    names = {f"#p{i}": f"progress_{name}" for i, name in enumerate(counts)}
    values = {":now": {"S": now}} | {f":p{i}": serialize(_number(v)) for i, v in enumerate(counts.values())}
    sets = "SET updated_at = :now"
    if window is not None:
        sets += ", progress_window = :w"
        values[":w"] = serialize([[_number(value) for value in sample] for sample in window])
    adds = ", ".join(f"#p{i} :p{i}" for i in range(len(counts)))
    update: dict[str, Any] = {"UpdateExpression": sets + (f" ADD {adds}" if adds else "")}
    return update | {"ExpressionAttributeValues": values} | ({"ExpressionAttributeNames": names} if names else {})


def _number(value: int | float) -> int | Decimal:
    # DynamoDB numbers: floats go as Decimal (the serializer refuses float), rounded to what matters.
    return value if isinstance(value, int) else Decimal(str(round(value, 6)))
