"""The ways to run a unit's lines once its lease is held: strategies behind one interface.

A mode takes the unit (with its run's progress, cost guard and job header) and sends what it has
to send, recording each outcome; the unit's runner (:mod:`.units`) holds the lease around it and
decides how the unit ends from the :class:`~promptdrop.engine.dispatch.DispatchReport` it returns.
The real-time mode sends each request at once through the engine's dispatcher; the batch mode
(:mod:`.batch_mode`) submits them to the provider's Batch API and collects the answers later.

Which one a file gets is its :class:`Mode` (the upload's ``promptdrop-mode``, else
``PROMPTDROP_MODE``): ``realtime`` sends every request at the standard tier, as promptdrop always
has; ``flex`` sends, through the same real-time mode, the requests that can go flex — Chat
Completions and Responses lines to a model that offers the flex tier (one genai-prices prices
apart) — with ``service_tier: "flex"``: the same answers at about half the price, slower, a request
flex keeps refusing falling back (engine/flex.py). A line that names a ``service_tier`` keeps it.
``batch`` and ``auto`` go through the batch mode.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from enum import StrEnum
from typing import Protocol

from ..engine.dispatch import Dispatcher, DispatchReport, Outcome, ShouldStop
from ..engine.flex import as_flex, takes_flex
from ..engine.request import Request
from ..messages import UnitMessage
from ..prices import has_flex
from ..records import FailureCode
from ..settings import Settings
from .cost_guard import CostGuard, TierOf, flex_tier
from .intake import Intake
from .ports import ObjectStore, UnitHold
from .progress import Progress
from .recorder import Recorders
from .source import header_choice, header_of

__all__ = ["MODE_METADATA", "FileMode", "Mode", "RealTimeMode", "UnitMode", "UnitRun", "mode_of", "sent_as"]

MODE_METADATA = "promptdrop-mode"


class Mode(StrEnum):
    REALTIME = "realtime"
    FLEX = "flex"
    BATCH = "batch"  # the provider's Batch API (jobs/batch_mode.py)
    AUTO = "auto"  # the Batch API while the deadline allows, then flex, then standard


def mode_of(settings: Settings, metadata: Mapping[str, str]) -> Mode:
    """The file's mode: the upload's ``promptdrop-mode``, else ``PROMPTDROP_MODE``."""
    return header_choice(metadata, MODE_METADATA, Mode, settings.mode, FailureCode.INVALID_MODE)


def _guard_tier(settings: Settings, flex: bool, flex_of: Callable[[str], bool]) -> TierOf | None:
    """The tier the cost guard reserves each request at (jobs/cost_guard.py ``flex_tier``); None: standard."""
    if not flex:
        return None

    def goes_flex(request: Request) -> bool:  # as sent_as decides, without building the flex request
        return flex_of(request.model_name()) and takes_flex(request)

    return flex_tier(goes_flex, falls_back=settings.flex_fallback == "standard")


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
    should_stop: ShouldStop
    hold: UnitHold | None = None  # the unit's lease (the batch mode keeps its provider batches on it)


class UnitMode(Protocol):
    async def run(self, run: UnitRun) -> DispatchReport: ...


class RealTimeMode:
    """Every request sent now, through the dispatcher: the outcomes recorded as they come."""

    def __init__(
        self,
        *,
        settings: Settings,
        store: ObjectStore,
        intake: Intake,
        recorders: Recorders,
        dispatcher_factory: Callable[[], Dispatcher],
        flex_of: Callable[[str], bool] = has_flex,
    ) -> None:
        self._settings = settings
        self._store = store
        self._intake = intake
        self._recorders = recorders
        self._dispatcher_factory = dispatcher_factory
        self._flex_of = flex_of  # the models flex is sent to (with routes: those whose route offers it)

    async def run(self, run: UnitRun, *, flex: bool | None = None) -> DispatchReport:
        """``flex``: send at the flex tier where offered (None: as the file's mode says)."""
        unit, progress, guard, header = run.unit, run.progress, run.guard, run.header
        if header is None:
            header = await header_of(self._store, unit)
        recorder = self._recorders.for_job(unit.job_id, unit.bucket, unit.key, unit.etag, progress)
        # Reporting starts first: its first report reads the job item (a cancel, the job's budget).
        async with progress.reporting(), recorder:
            mode = mode_of(self._settings, header)
            if flex is None:
                flex = mode is Mode.FLEX

            def stop(within_s: float = 0.0) -> bool:
                return progress.cancelled or run.should_stop(within_s)

            async def on_outcome(outcome: Outcome) -> None:
                progress.sent()  # an outcome from the dispatcher: the request reached the API
                # Its worst case no longer counts once its cost does: the guard lets it go then.
                record = await recorder.outcome(outcome, counted=lambda: guard.settle(outcome))
                if taken.cache is not None:
                    await taken.cache.settled(outcome, record)

            dispatcher = self._dispatcher_factory()
            recorder.hold_while(dispatcher.rate_bound)
            tier_of = _guard_tier(self._settings, flex, self._flex_of)
            async with self._intake.taken(
                unit, progress, guard, header, recorder, fresh=run.fresh, tier_of=tier_of, stopping=stop
            ) as taken:
                requests = taken.requests
                if flex:  # realtime sends them as they are: no extra step per request
                    requests = (sent_as(request, Mode.FLEX, self._flex_of) async for request in requests)
                return await dispatcher.run(requests, on_outcome, should_stop=stop)


class FileMode:
    """The mode the file asks for: its ``promptdrop-mode``, else ``PROMPTDROP_MODE``."""

    def __init__(self, *, settings: Settings, store: ObjectStore, realtime: RealTimeMode, batch: UnitMode) -> None:
        self._settings = settings
        self._store = store
        self._realtime = realtime
        self._batch = batch

    async def run(self, run: UnitRun) -> DispatchReport:
        header = run.header if run.header is not None else await header_of(self._store, run.unit)
        mode = mode_of(self._settings, header)
        run = replace(run, header=header)
        if mode in (Mode.BATCH, Mode.AUTO):
            return await self._batch.run(run)
        return await self._realtime.run(run, flex=mode is Mode.FLEX)
