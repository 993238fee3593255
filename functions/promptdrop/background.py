"""Work that runs beside a block and is owned by it: a lease renewal, a periodic journal flush.

Structured (README's style, STYLE.md §11): the background task lives in a TaskGroup with the block,
so its failure cancels the block at once and surfaces to the caller — never a renewal that died
unseen while the run went on without its lease.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable

__all__ = ["every", "first_error"]


def first_error(group: BaseExceptionGroup[BaseException]) -> BaseException:
    """The error to surface from a task group: the first (the others ride along as its cause)."""
    first = group.exceptions[0]
    while isinstance(first, BaseExceptionGroup):
        first = first.exceptions[0]
    if len(group.exceptions) > 1 and first.__cause__ is None:
        first.__cause__ = group
    return first


@contextlib.asynccontextmanager
async def every(interval_s: float, action: Callable[[], Awaitable[None]]) -> AsyncIterator[None]:
    """Run ``action`` every ``interval_s`` while the block runs; a failure of either ends both."""

    async def repeat() -> None:
        while True:
            await asyncio.sleep(interval_s)
            await action()

    try:
        async with asyncio.TaskGroup() as group:
            task = group.create_task(repeat())
            try:
                yield
            finally:
                task.cancel()
    except BaseExceptionGroup as group:
        raise first_error(group) from None
