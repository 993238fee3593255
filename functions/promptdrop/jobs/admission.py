"""The decisions about each parsed line before it is sent, as a sequence of small stages.

A line passes every stage in order, or one stage settles it (answered already, a repeat, a bad
line: recorded or skipped, not sent) or stops the run's input (the cost guard refused it). First
runs and redrives share the stages; an answer cache would be one more stage, before the guard.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Container, Mapping, Sequence
from enum import Enum
from typing import Protocol

from ..engine.request import Request
from ..formats import LineError, Parsed
from ..records import FailureCode
from .cost_guard import CostGuard, TierOf, how_to_raise
from .progress import Progress
from .recorder import Recorder

__all__ = ["AlreadyDone", "BadLines", "Guarded", "Repeats", "Stage", "Verdict", "admitted"]


class Verdict(Enum):
    NEXT = "next"  # on to the next stage; past the last, it is sent
    SETTLED = "settled"  # recorded or skipped here: not sent
    STOP = "stop"  # nothing more of the input is sent (those in flight finish)


class Stage(Protocol):
    async def __call__(self, item: Parsed) -> Verdict: ...


async def admitted(
    parsed: AsyncIterator[Parsed],
    stages: Sequence[Stage],
    *,
    on_send: Callable[[], None] | None = None,
    on_stop: Callable[[], Awaitable[None]] | None = None,
) -> AsyncIterator[Request]:
    """The requests of ``parsed`` that pass every stage (``on_send`` for each); ``on_stop`` when a stage stops."""
    async for item in parsed:
        for stage in stages:
            verdict = await stage(item)
            if verdict is Verdict.STOP:
                if on_stop is not None:
                    await on_stop()
                return
            if verdict is Verdict.SETTLED:
                break
        else:
            if not isinstance(item, Request):  # a line error no stage settled: it cannot be sent
                raise TypeError(f"line {item.line} is not a request and no stage settled it")
            if on_send is not None:
                on_send()
            yield item


class AlreadyDone:
    """Skips what the journal has final: the lines done (a shard's, or the repeats planning found)
    and each answered ``custom_id`` at the line it answers (a resumed or redelivered run)."""

    def __init__(self, answered: Mapping[str, int], done: Container[int]) -> None:
        self.answered = answered
        self.done = done

    async def __call__(self, item: Parsed) -> Verdict:
        if item.line in self.done or self.answered.get(item.custom_id) == item.line:
            return Verdict.SETTLED
        return Verdict.NEXT

    def left(self, item: Parsed) -> bool:
        """Whether a resumed run would still have ``item`` to do."""
        return item.line not in self.done and self.answered.get(item.custom_id) != item.line


class Repeats:
    """A line reusing an earlier line's ``custom_id`` fails alone. ``track``: remember this run's
    lines (a whole file; a shard's repeats were all found when the file was planned)."""

    def __init__(self, recorder: Recorder, answered: Mapping[str, int], *, track: bool) -> None:
        self._recorder = recorder
        self._answered = answered
        self._track = track
        self._first_line: dict[str, int] = {}  # custom_id -> the line that uses it, in this run

    async def __call__(self, item: Parsed) -> Verdict:
        earlier = self._answered.get(item.custom_id) or self._first_line.get(item.custom_id)
        if earlier is not None:
            await self._recorder.repeat(item.line, item.custom_id, earlier, item.columns)
            return Verdict.SETTLED
        if self._track:
            self._first_line[item.custom_id] = item.line
        return Verdict.NEXT


class BadLines:
    """A line that is not a request fails alone."""

    def __init__(self, recorder: Recorder) -> None:
        self._recorder = recorder

    async def __call__(self, item: Parsed) -> Verdict:
        if isinstance(item, LineError):
            await self._recorder.line_error(item)
            return Verdict.SETTLED
        return Verdict.NEXT


class Guarded:
    """The file's cost guard: a request is sent only if its worst case (priced at ``tier_of(request)``,
    the tier the file's mode reserves it at; None: standard) fits. One that does not fit while others
    are in flight waits for them to settle (:meth:`CostGuard.wait_to_admit`): dispatch narrows as the
    budget nears. A unit's run stops at the first request that cannot fit; a redrive (``refuse``) fails
    that one request, with a dead letter that can send it once the budget is raised. ``stopping``: the
    run is ending (its deadline, a cancel): a request waiting for room is let through unreserved, for
    the dispatcher — which sends nothing once it stops — to hand to the continuation. ``wait=False``:
    what does not fit is refused at once (a mode whose requests settle only once all are admitted —
    a Batch API file, submitted whole — would wait for ever)."""

    def __init__(
        self,
        guard: CostGuard,
        progress: Progress,
        *,
        refuse: Recorder | None = None,
        tier_of: TierOf | None = None,
        stopping: Callable[[], bool] = lambda: False,
        wait: bool = True,
    ) -> None:
        self._guard = guard
        self._wait = wait
        self._progress = progress
        self._refuse = refuse
        self._tier_of = tier_of
        self._stopping = stopping

    async def __call__(self, item: Parsed) -> Verdict:
        guard = self._guard
        if not isinstance(item, Request) or not guard.limits.active:
            return Verdict.NEXT
        tier = None if self._tier_of is None else self._tier_of(item)
        admitted = await guard.wait_to_admit(
            item, self._progress.spent, tier=tier, stopping=self._stopping, wait=self._wait
        )
        if admitted is not False:  # admitted, or the run stops and will not send it
            return Verdict.NEXT
        if self._refuse is None:
            return Verdict.STOP
        why = (
            f"not sent again: the file's budget is spent ({guard.refused}). Raise it with "
            f"{how_to_raise(self._progress.job_id)}, then redrive this message"
        )
        await self._refuse.not_sent(item, FailureCode.BUDGET_EXCEEDED, why)
        return Verdict.SETTLED
