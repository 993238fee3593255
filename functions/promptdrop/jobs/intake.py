"""A unit's lines, from the file to the requests a run sends — whichever way it sends them.

Parsed with the job header, then past the admission stages (:mod:`.admission`): what the journal has
final, repeated ``custom_id``\\ s, lines that are not requests, answers the cache holds, the cost guard.
The real-time mode hands what comes out to the dispatcher; the batch mode writes it into the
provider's batch input files. Either way each line is admitted once, by the same rules.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Mapping
from dataclasses import dataclass

from ..adapters.request_log import LineSet
from ..engine.request import Request
from ..formats import Parsed
from ..messages import UnitMessage
from ..settings import Settings
from .admission import AlreadyDone, BadLines, Guarded, Repeats, Stage, admitted
from .answer_cache import CachePolicy, RouteOf, RunCache, policy_of
from .cost_guard import CostGuard, TierOf, budget_of
from .ports import AnswerCacheStore, Journal, ObjectStore, RequestLog
from .progress import Progress
from .recorder import Recorder
from .source import parse_unit

__all__ = ["Intake", "Taken"]


@dataclass(slots=True)
class Taken:
    """What one pass over a unit's lines admits, and the answer cache it looked them up in."""

    requests: AsyncIterator[Request]
    cache: RunCache | None


def _going_on() -> bool:
    return False


class Intake:
    def __init__(
        self,
        *,
        settings: Settings,
        store: ObjectStore,
        journal: Journal,
        cache: AnswerCacheStore | None = None,
        route: str | RouteOf = "",
    ) -> None:
        self._settings = settings
        self._store = store
        self._journal = journal
        self._cache = cache
        self._route = route  # a model's route (its API's base URL): part of every answer's cache key

    @contextlib.asynccontextmanager
    async def taken(
        self,
        unit: UnitMessage,
        progress: Progress,
        guard: CostGuard,
        header: Mapping[str, str],
        recorder: Recorder,
        *,
        fresh: bool,
        tier_of: TierOf | None = None,
        stopping: Callable[[], bool] = _going_on,
        wait: bool = True,
        after_line: int | None = None,
    ) -> AsyncIterator[Taken]:
        """The unit's requests that pass every stage, with the answer cache open around them; the
        file's budget is set on ``guard`` from the header, each request's worst case priced at
        ``tier_of`` (:class:`~.admission.Guarded`: ``stopping``, ``wait``). ``after_line`` (the batch
        mode's: it resumes after the lines it has put in batches): only the lines after it."""
        whole = unit.unit == "all"
        answered, done = await _done_before(self._journal.requests, unit, whole=whole, fresh=fresh)
        guard.done_before = len(answered) + len(done)
        # With a budget in dollars, a model without a price stops the run at its first request
        # (the guard refuses it: unknown_price), before anything of that model is sent.
        guard.limits = budget_of(self._settings, header, progress.job)
        policy = policy_of(self._settings, header) if self._cache is not None else CachePolicy.OFF
        parsed = parse_unit(self._store, unit, self._settings.model, header, self._settings.endpoint)
        already = AlreadyDone(answered, done)
        cache = None
        if self._cache is not None and policy is not CachePolicy.OFF:
            cache = RunCache(self._cache, policy, self._route, recorder)
        lines = parsed if after_line is None else _after(parsed, after_line)
        ahead = cache.ahead(lines) if cache is not None else lines
        stages: list[Stage] = [already, Repeats(recorder, answered, track=whole), BadLines(recorder)]
        stages += [cache] if cache is not None else []
        stages.append(Guarded(guard, progress, tier_of=tier_of, stopping=stopping, wait=wait))

        async def count_left() -> None:
            # Stop sending (those in flight finish); count what is left for the dead letter.
            if cache is not None:
                cache.stop_looking()
            guard.left = 1 + sum([1 async for item in ahead if already.left(item)])

        requests = admitted(ahead, stages, on_send=progress.admitted, on_stop=count_left)
        try:
            async with cache if cache is not None else contextlib.nullcontext():
                yield Taken(requests, cache)
        finally:
            if ahead is not lines:
                await ahead.aclose()
            if lines is not parsed:
                await lines.aclose()
            await parsed.aclose()


async def _after(parsed: AsyncIterator[Parsed], line: int) -> AsyncGenerator[Parsed]:
    """The lines after ``line`` (a real-time run reads them all: no step added for it)."""
    async for item in parsed:
        if item.line > line:
            yield item


async def _done_before(
    log: RequestLog, unit: UnitMessage, *, whole: bool, fresh: bool
) -> tuple[dict[str, int], LineSet]:
    """What this run must not send again: (each answered ``custom_id``'s line, the lines to skip).

    A first run has nothing answered to skip — only, in a split file, the repeats planning found.
    A rerun of the whole file finds repeats itself, so it keeps each answered ``custom_id``'s line
    (bounded by the shard size: larger files are split). A rerun of a shard needs only the lines
    done, job-wide, as a bitmap: a million-line job's would be a 60 MB dict, and is 125 KB.
    """
    if whole:
        return ({}, LineSet()) if fresh else await log.finals(unit.job_id)
    if fresh:
        return {}, await log.repeats(unit.job_id)
    return {}, await log.done_lines(unit.job_id)
