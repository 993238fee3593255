"""The ways to run a unit's lines once its lease is held: strategies behind one interface.

A mode takes the unit (with its run's progress, cost guard and job header) and sends what it has
to send, recording each outcome; the unit's runner (:mod:`.units`) holds the lease around it and
decides how the unit ends from the :class:`~promptdrop.engine.dispatch.DispatchReport` it returns.
The real-time mode is the first: each request sent at once through the engine's dispatcher. A
Batch API mode (submit the lines, collect the answers later) is meant to be the second.

Which one a file gets is its :class:`Mode` (the upload's ``promptdrop-mode``, else
``PROMPTDROP_MODE``): ``realtime`` sends every request at the standard tier, as promptdrop always
has; ``flex`` sends, through the same real-time mode, the requests that can go flex — Chat
Completions and Responses lines to a model that offers the flex tier (one genai-prices prices
apart) — with ``service_tier: "flex"``: the same answers at about half the price, slower, a request
flex keeps refusing falling back (engine/flex.py). A line that names a ``service_tier`` keeps it.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncGenerator, Callable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol

from ..adapters.request_log import LineSet
from ..engine.dispatch import Dispatcher, DispatchReport, Outcome
from ..engine.flex import as_flex
from ..engine.request import Request
from ..formats import Parsed
from ..messages import UnitMessage
from ..prices import has_flex
from ..records import FailureCode
from ..settings import Settings
from .admission import AlreadyDone, BadLines, Guarded, Repeats, Stage, admitted
from .answer_cache import CachePolicy, RouteOf, RunCache, policy_of
from .cost_guard import CostGuard, budget_of
from .ports import AnswerCacheStore, Journal, ObjectStore, RequestLog
from .progress import Progress
from .recorder import Recorders
from .source import header_choice, header_of, parse_unit

__all__ = ["MODE_METADATA", "Mode", "RealTimeMode", "UnitMode", "UnitRun", "mode_of", "sent_as"]

MODE_METADATA = "promptdrop-mode"


class Mode(StrEnum):
    REALTIME = "realtime"
    FLEX = "flex"


def mode_of(settings: Settings, metadata: Mapping[str, str]) -> Mode:
    """The file's mode: the upload's ``promptdrop-mode``, else ``PROMPTDROP_MODE``."""
    return header_choice(metadata, MODE_METADATA, Mode, settings.mode, FailureCode.INVALID_MODE)


def sent_as(request: Request, mode: Mode, flex_of: Callable[[str], bool] = has_flex) -> Request:
    """The request as the file's mode sends it (``flex_of``: the models flex is sent to — with routes,
    those whose route offers it)."""
    if mode is Mode.FLEX and flex_of(request.model_name()):
        return as_flex(request)
    return request


@dataclass(slots=True, frozen=True)
class UnitRun:
    """One run of a unit, as its mode sees it."""

    unit: UnitMessage
    progress: Progress
    guard: CostGuard  # its limits are set by the mode, from the job header and the job item
    header: Mapping[str, str] | None  # the upload's metadata, if the caller has read it already
    fresh: bool  # nothing of this unit can have been done yet: no need to ask the journal
    should_stop: Callable[[], bool]


class UnitMode(Protocol):
    async def run(self, run: UnitRun) -> DispatchReport: ...


class RealTimeMode:
    """Every request sent now, through the dispatcher: the outcomes recorded as they come."""

    def __init__(
        self,
        *,
        settings: Settings,
        store: ObjectStore,
        journal: Journal,
        recorders: Recorders,
        dispatcher_factory: Callable[[], Dispatcher],
        cache: AnswerCacheStore | None = None,
        route: str | RouteOf = "",
        flex_of: Callable[[str], bool] = has_flex,
    ) -> None:
        self._settings = settings
        self._store = store
        self._journal = journal
        self._recorders = recorders
        self._dispatcher_factory = dispatcher_factory
        self._cache = cache
        self._route = route  # a model's route (its API's base URL): part of every answer's cache key
        self._flex_of = flex_of

    async def run(self, run: UnitRun) -> DispatchReport:
        unit, progress, guard, header = run.unit, run.progress, run.guard, run.header
        should_stop, fresh = run.should_stop, run.fresh
        whole = unit.unit == "all"
        answered, done = await _done_before(self._journal.requests, unit, whole=whole, fresh=fresh)
        guard.done_before = len(answered) + len(done)
        if header is None:
            header = await header_of(self._store, unit)
        recorder = self._recorders.for_job(unit.job_id, unit.bucket, unit.key, unit.etag, progress)
        policy = policy_of(self._settings, header) if self._cache is not None else CachePolicy.OFF
        # Reporting starts first: its first report reads the job item (a cancel, the job's budget).
        async with progress.reporting(), recorder:
            # With a budget in dollars, a model without a price stops the run at its first request
            # (the guard refuses it: unknown_price), before anything of that model is sent.
            guard.limits = budget_of(self._settings, header, progress.job)
            mode = mode_of(self._settings, header)
            parsed = self._parse(unit, header)
            already = AlreadyDone(answered, done)
            cache = None
            if self._cache is not None and policy is not CachePolicy.OFF:
                cache = RunCache(self._cache, policy, self._route, recorder)
            lines = cache.ahead(parsed) if cache is not None else parsed
            stages: list[Stage] = [already, Repeats(recorder, answered, track=whole), BadLines(recorder)]
            stages += [cache] if cache is not None else []
            stages.append(Guarded(guard, progress))

            async def count_left() -> None:
                # Stop sending (those in flight finish); count what is left for the dead letter.
                if cache is not None:
                    cache.stop_looking()
                guard.left = 1 + sum([1 async for item in lines if already.left(item)])

            def stop() -> bool:
                return progress.cancelled or should_stop()

            async def on_outcome(outcome: Outcome) -> None:
                guard.settle(outcome.request)  # its actual cost is counted by the recorder, at once
                progress.sent()  # an outcome from the dispatcher: the request reached the API
                record = await recorder.outcome(outcome)
                if cache is not None:
                    await cache.settled(outcome, record)

            dispatcher = self._dispatcher_factory()
            recorder.hold_while(dispatcher.rate_bound)
            requests = admitted(lines, stages, on_send=progress.admitted, on_stop=count_left)
            if mode is Mode.FLEX:  # realtime sends them as they are: no extra step per request
                requests = (sent_as(request, mode, self._flex_of) async for request in requests)
            try:
                async with cache if cache is not None else contextlib.nullcontext():
                    return await dispatcher.run(requests, on_outcome, should_stop=stop)
            finally:
                if lines is not parsed:
                    await lines.aclose()
                await parsed.aclose()

    def _parse(self, unit: UnitMessage, header: Mapping[str, str]) -> AsyncGenerator[Parsed]:
        return parse_unit(self._store, unit, self._settings.model, header, self._settings.endpoint)


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
