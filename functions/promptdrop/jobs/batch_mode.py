"""The batch mode: a unit's requests through the provider's Batch API, at half the price (README, "Modes").

One run submits (:mod:`.batch_submit`): the unit's lines past the admission stages — the journal,
repeats, bad lines, the answer cache, the cost guard — go into Batch API input files, uploaded and
started as batches. Then the unit waits with no Lambda running: its lease given up, a check message
on the work queue with ``DelaySeconds`` (``PROMPTDROP_BATCH_POLL_S`` first, doubling to 15 minutes).
Each check reads its batches' status; an ended batch is merged (:mod:`.batch_merge`) and its files
deleted at the provider. Once every batch is merged the unit is done — or its unfinished lines go
the fallback's way: ``realtime`` sends them now (the real-time mode, which skips every final line),
``fail`` failed them in the merge, each with its reason (``batch_expired``, ``batch_failed``).

Checks are numbered (``UnitMessage.check``); the unit item keeps the number of the newest one acted
on, so while batches are live a duplicated check message (a redelivery, a run that died after
sending the next one) is dropped instead of starting a second chain. A batch refused for the
model's enqueued-token limit is created again, from its uploaded file, once the unit's other
batches of that model are done. A job cancelled while it waits cancels its batches at the next
check; what they finished is merged, once.

``auto`` is the same with a deadline (``promptdrop-deadline``, default 24 h): at the latest point from
which the lines not yet answered can still be sent in real time at the account's rate, the batches
are cancelled and the rest goes flex (falling back to the standard tier as flex does).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum

from aws_lambda_powertools import Logger

from ..engine.answers import AnswerCheck, TextPolicy
from ..engine.dispatch import DispatchReport, StopReason
from ..messages import UnitMessage
from ..prices import BATCH
from ..records import FailureCode
from ..settings import Settings
from .batch_deadline import switch_at
from .batch_merge import merge_batch
from .batch_state import SUBMITTING, WAITING_TOKENS, ProviderBatch, UnitBatches
from .batch_submit import Spools, input_line, note_failure, submit_batch, submit_spools
from .intake import Intake
from .modes import Mode, RealTimeMode, UnitRun, mode_of
from .ports import BatchApi, Journal, MessageSender, ObjectStore, UnitHold
from .recorder import Recorder, Recorders
from .source import header_choice, header_of

__all__ = ["FALLBACK_METADATA", "BatchMode", "BatchParts", "Fallback", "fallback_of"]

logger = Logger(service="promptdrop", child=True)

FALLBACK_METADATA = "promptdrop-fallback"
MAX_WAIT_S = 900  # SQS's longest DelaySeconds
CANCELLING_POLL_S = 5.0  # the checks while batches are being cancelled: the job ends soon after they are
_TOKEN_TRIES = 20  # batches created for one input file refused for enqueued tokens before it fails
_RUNNING = frozenset({"validating", "in_progress", "finalizing", "cancelling"})


def _at_batch_rates(request: object) -> str:
    return BATCH


class Fallback(StrEnum):
    REALTIME = "realtime"
    FAIL = "fail"


def fallback_of(settings: Settings, metadata: Mapping[str, str]) -> Fallback:
    """The file's fallback: the upload's ``promptdrop-fallback``, else ``PROMPTDROP_FALLBACK``."""
    return header_choice(metadata, FALLBACK_METADATA, Fallback, settings.fallback, FailureCode.INVALID_FALLBACK)


@dataclass(slots=True, frozen=True)
class BatchParts:
    """What the batch mode works with: the adapters, the provider's Batch API, the real-time mode it
    falls back to, and the answer checks it judges a batch's answers by."""

    settings: Settings
    store: ObjectStore
    journal: Journal
    messages: MessageSender
    recorders: Recorders
    intake: Intake
    api: BatchApi
    realtime: RealTimeMode
    secrets: Callable[[], Iterable[str]] = tuple  # the API key(s) now: masked in what the API answers
    clock: Callable[[], float] = time.time

    @property
    def answers(self) -> AnswerCheck:
        return AnswerCheck(TextPolicy(self.settings.text_policy))


class BatchMode:
    def __init__(self, parts: BatchParts) -> None:
        self._parts = parts

    async def run(self, run: UnitRun) -> DispatchReport:
        assert run.hold is not None, "the unit runner hands its lease in"
        parts, hold, unit = self._parts, run.hold, run.unit
        state = UnitBatches.from_json(hold.batches)
        if unit.check < state.check and state.live:
            # The newest check message drives the unit's batches; this one is a duplicate. (With no batch
            # live — a redrive after a cancel or a spent budget — nothing else drives it: it acts.)
            logger.info("an older check of this unit: dropped", extra={"unit": unit.unit, "check": unit.check})
            return DispatchReport(stopped=StopReason.WAITING)
        header = run.header if run.header is not None else await header_of(parts.store, unit)
        if state.fallback:  # every batch merged: what they left is sent in real time
            return await parts.realtime.run(run, flex=state.switched or None)
        report = await _Step(parts, run, state, hold, header).run()
        if report is None:
            return await parts.realtime.run(run, flex=state.switched or None)
        return report


class _Step:
    """One run of a unit in batch mode: check, merge, submit, then wait again or end."""

    def __init__(
        self, parts: BatchParts, run: UnitRun, state: UnitBatches, hold: UnitHold, header: Mapping[str, str]
    ) -> None:
        self.parts = parts
        self.unit_run = run
        self.state = state
        self.hold = hold
        self.header = header
        self.unit: UnitMessage = run.unit
        self.auto = mode_of(parts.settings, header) is Mode.AUTO
        self.fail = not self.auto and fallback_of(parts.settings, header) is Fallback.FAIL

    async def save(self) -> None:
        await self.hold.save_batches(self.state.to_json())

    async def run(self) -> DispatchReport | None:
        """The report the unit ends this run with; None: on to the real-time fallback."""
        parts, run, state = self.parts, self.unit_run, self.state
        progress = run.progress
        recorder = parts.recorders.for_job(self.unit.job_id, self.unit.bucket, self.unit.key, self.unit.etag, progress)
        async with progress.reporting(), recorder:
            due = switch_at(parts.settings, self.header, progress.job, state) if self.auto else None
            if progress.cancelled or (due is not None and parts.clock() >= due):
                await self._cancel(switching=not progress.cancelled)
            await self._refresh()
            for batch in state.live:
                if batch.ended and not await self._merge(batch, recorder):
                    return await self._wait(0)  # the deadline came mid-merge: the next check goes on
            if state.live:
                return await self._wait(self._backoff(due))
            if progress.cancelled:
                return DispatchReport(stopped=StopReason.DEADLINE)  # the runner ends it CANCELLED
            if not state.submitted and not state.switched:
                if due is not None and parts.clock() >= due:
                    state.switched = state.fallback = True  # too late to batch what is left
                    await self.save()
                    return None
                stopped = await self._submit(recorder)
                if progress.cancelled:  # while submitting: what went is stopped and merged first
                    await self._cancel(switching=False)
                    return await self._wait(0) if state.live else DispatchReport(stopped=StopReason.DEADLINE)
                if stopped is not None:
                    return stopped
                if state.live:
                    state.checks_waited = 0
                    return await self._wait(self._backoff(due))
        return None if state.fallback else DispatchReport()

    # -- submitting --------------------------------------------------------------------------------

    async def _submit(self, recorder: Recorder) -> DispatchReport | None:
        """Put the unit's lines after the cursor into batches; a report when the run stops here."""
        parts, run, state = self.parts, self.unit_run, self.state
        progress, guard = run.progress, run.guard
        spools = Spools(parts.settings.batch_max_requests, parts.settings.batch_max_bytes)
        fresh = run.fresh and not state.batches
        last_added = state.cursor
        stopped = False

        async def checkpoint(through: int) -> None:
            await recorder.flush()  # the lines settled before ``through`` are on record first
            await submit_spools(spools, self.unit, state, parts.api, self.save)
            state.cursor = through
            await self.save()

        try:
            async with parts.intake.taken(
                self.unit,
                progress,
                guard,
                self.header,
                recorder,
                fresh=fresh,
                # Every request at the Batch API's rates; refused at once when it does not fit: nothing
                # settles while the file is submitted (wait=False), its batches are waited on instead.
                tier_of=_at_batch_rates,
                wait=False,
                after_line=state.cursor,
            ) as taken:
                async for request in taken.requests:
                    line = input_line(request)
                    if not spools.fits(request, line):
                        await checkpoint(last_added)
                    spools.add(request, line)
                    last_added = request.line
                    if progress.cancelled or run.should_stop():
                        stopped = True
                        break
            if progress.cancelled:
                return None  # the caller cancels what went
            finished = not stopped and guard.refused is None
            await checkpoint(last_added)
            if finished:
                state.submitted = True
                await self.save()
        finally:
            spools.discard()
        if guard.refused is not None and not state.live:
            return DispatchReport()  # nothing at the provider: the runner ends it BUDGET_EXCEEDED
        guard.refused = None  # the budget is waited on: a later check submits more as batches settle
        if stopped:
            return await self._wait(0)
        return None

    # -- checking ----------------------------------------------------------------------------------

    async def _refresh(self) -> None:
        """Each live batch's status as the provider reports it (a batch not created yet: created)."""
        parts, state = self.parts, self.state
        for batch in state.live:
            if batch.status == SUBMITTING:
                await submit_batch(batch, self.unit, parts.api)
            elif batch.status == WAITING_TOKENS:
                if batch.tries >= _TOKEN_TRIES:
                    batch.status = "failed"
                elif not any(o.status in _RUNNING and o.model == batch.model for o in state.live):
                    await submit_batch(batch, self.unit, parts.api)
                    state.checks_waited = 0  # a batch just started: checked as soon as a new one is
            elif not batch.ended and batch.batch_id is not None:
                view = await parts.api.get(batch.model, batch.batch_id)
                batch.status, batch.completed, batch.failed = view.status, view.completed, view.failed
                batch.output_file_id, batch.error_file_id = view.output_file_id, view.error_file_id
                if view.status == "failed":
                    note_failure(batch, view.errors)
        await self.save()

    async def _cancel(self, *, switching: bool) -> None:
        """Stop the unit's batches (a cancel, or ``auto``'s deadline): what they finished is merged."""
        parts, state = self.parts, self.state
        if state.cancelling:
            return
        for batch in state.live:
            if batch.status in _RUNNING and batch.batch_id is not None:
                batch.status = (await parts.api.cancel(batch.model, batch.batch_id)).status
            elif batch.status in (SUBMITTING, WAITING_TOKENS):
                if batch.batch_id is not None and batch.status == SUBMITTING:
                    batch.status = (await parts.api.cancel(batch.model, batch.batch_id)).status
                else:
                    batch.status = "cancelled"  # never ran at the provider
        state.cancelling, state.checks_waited = True, 0
        state.switched = state.switched or switching
        await self.save()
        logger.info("provider batches cancelled", extra={"unit": self.unit.unit, "auto_deadline": switching})

    async def _merge(self, batch: ProviderBatch, recorder: Recorder) -> bool:
        """Merge an ended batch, then delete its files at the provider; False: the deadline came first."""
        parts, run, state = self.parts, self.unit_run, self.state
        # Lines a cancel stopped wait for a redrive; auto's switch sends them in real time.
        fail = self.fail and not state.switched and not run.progress.cancelled
        merge = await merge_batch(
            batch,
            self.unit,
            self.header,
            settings=parts.settings,
            store=parts.store,
            journal=parts.journal,
            api=parts.api,
            recorder=recorder,
            progress=run.progress,
            answers=parts.answers,
            secrets=parts.secrets(),
            fail_unfinished=fail,
            should_stop=run.should_stop,
        )
        if merge.stopped:
            return False
        for file_id in (batch.input_file_id, batch.output_file_id, batch.error_file_id):
            if file_id:
                await parts.api.delete(batch.model, file_id)
        batch.merged = True
        state.fallback = state.fallback or merge.left > 0
        await self.save()
        logger.info(
            "provider batch merged",
            extra={"batch": batch.batch_id, "status": batch.status, "recorded": merge.recorded, "left": merge.left},
        )
        return True

    # -- waiting -----------------------------------------------------------------------------------

    def _backoff(self, due: float | None) -> int:
        """The wait before the next check: the poll interval, doubling while batches run, to 15 minutes —
        and never past ``auto``'s switch point."""
        state, poll = self.state, self.parts.settings.batch_poll_s
        if state.cancelling:
            poll = min(poll, CANCELLING_POLL_S)
        wait = min(poll * 2**state.checks_waited, MAX_WAIT_S)
        state.checks_waited += 1
        if due is not None:
            wait = min(wait, max(0.0, due - self.parts.clock()))
        return int(wait + 0.5)

    async def _wait(self, delay_s: int) -> DispatchReport:
        """Queue the next check (numbered after this one), then note it: a crash between the two sends
        a check twice, and the later of the two is dropped as older than the one noted."""
        queue = self.parts.settings.work_queue_url
        if queue is None:
            raise RuntimeError("PROMPTDROP_WORK_QUEUE_URL must be set for the batch mode's checks")
        following = self.unit.model_copy(update={"check": self.unit.check + 1})
        await self.parts.messages.send(queue, [following], delay_s=delay_s)
        self.state.check, self.state.check_message = following.check, following.dump()
        await self.save()
        return DispatchReport(stopped=StopReason.WAITING)
