"""How a unit reads its part of the file, and what it says when it stops for good before the end.

A unit stops early on an error every request would share, a cancel, the continuation bound — or a
spent budget (:mod:`.budget`): the dead letter then says what was spent of what, how many lines
are done and how many are left, and how to raise the budget and resume without paying twice.
"""

from __future__ import annotations

import json
from collections.abc import AsyncGenerator, AsyncIterator, Container, Mapping
from dataclasses import dataclass
from typing import Literal

from ..adapters.s3 import ObjectStore
from ..formats import CSV_TEMPLATE_METADATA, ENDPOINT_METADATA, LineError, Parsed, parse_stream
from ..messages import UnitMessage
from ..records import FailureCode
from .budget import BudgetGuard, how_to_raise
from .progress import Progress
from .result import RunStatus
from .source import read, suffix

__all__ = ["Ending", "budget_ending", "count_left", "models_in", "parse_unit"]


# The job item's attributes that record a job-wide dead letter as sent (records.JobRecord).
OnceFlag = Literal["cancel_reported", "budget_reported"]


@dataclass(slots=True, frozen=True)
class Ending:
    """A unit stopped for good before its end: the dead letter's code and text, the run's status."""

    code: str
    message: str
    status: RunStatus
    # One dead letter for the job, not one per shard (a cancel, a spent budget): the job item's flag.
    once_flag: OnceFlag | None = None


def parse_unit(
    store: ObjectStore, unit: UnitMessage, default_model: str, header: Mapping[str, str], default_endpoint: str
) -> AsyncGenerator[Parsed]:
    """The unit's lines, parsed with its job header: a ``.csv``'s template, the file's endpoint
    (``promptdrop-endpoint``, else ``default_endpoint``)."""
    kind = suffix(unit.key)
    return parse_stream(
        kind,
        read(store, unit, start=unit.start, end=unit.end),
        key=unit.key,
        default_model=default_model,
        start=unit.start,
        first_line=unit.first_line,
        template=header.get(CSV_TEMPLATE_METADATA) if kind == ".csv" else None,
        endpoint=header.get(ENDPOINT_METADATA) or default_endpoint,
    )


async def models_in(parsed: AsyncGenerator[Parsed]) -> set[str]:
    """Every model the unit's requests name (a read of the unit before anything is sent)."""
    models: set[str] = set()
    try:
        async for item in parsed:
            if not isinstance(item, LineError):
                models.add(str(json.loads(item.body).get("model") or ""))
    finally:
        await parsed.aclose()
    return models


async def count_left(parsed: AsyncIterator[Parsed], answered: Mapping[str, int], done: Container[int]) -> int:
    """The rest of the unit's lines that a resumed run would still have to do."""
    left = 0
    async for item in parsed:
        if item.line not in done and answered.get(item.custom_id) != item.line:
            left += 1
    return left


def budget_ending(unit: UnitMessage, guard: BudgetGuard, progress: Progress) -> Ending:
    """The dead letter of a unit that stopped because the next request would not fit the budget."""
    run = progress.run
    done = guard.done_before + run.succeeded + run.failed
    where = "" if unit.unit == "all" else f" in {unit.unit}"
    if guard.unknown_price:
        why = f"stopped: {guard.refused}; {done:,} line(s) done, {guard.left:,} left{where}"
        return Ending(FailureCode.UNKNOWN_PRICE, why + ": use a budget in tokens, then redrive", RunStatus.FAILED)
    spent, limits = progress.spent(), guard.limits
    used = [
        f"${spent.usd:.6f} spent of a budget of ${limits.usd:.6f}" if limits.usd is not None else "",
        f"{spent.tokens:,} tokens used of a budget of {limits.tokens:,}" if limits.tokens is not None else "",
        f"{spent.requests:,} of {limits.requests:,} requests sent" if limits.requests is not None else "",
    ]
    why = (
        f"budget exceeded: {'; '.join(u for u in used if u)}. {done:,} line(s) done, {guard.left:,} left{where}; "
        f"the outputs hold what was done (the next request was refused when {guard.refused}). Raise the budget "
        f"with {how_to_raise(unit.job_id)}, then redrive this message: it resumes, skipping every line already done"
    )
    return Ending(FailureCode.BUDGET_EXCEEDED, why, RunStatus.BUDGET_EXCEEDED, once_flag="budget_reported")
