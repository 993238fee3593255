"""What one run has done: reported to the job item every few seconds (live progress, and the way a
run learns of a cancel request), and in total to the handler (metrics of this run's work alone).

Live figures are added by every running unit, so the shards of a job add up, at one write per
unit every :data:`REPORT_INTERVAL_S` — not one per answer. They are approximate while the job
runs (a run killed mid-way may have counted answers that its redelivery asks again); the job's
final counts come from the journal. The same write sets the job's progress window (samples of
``(time, done)`` over about the last 30 s of running time: the operator's recent rate and ETA):
each sample's ``done`` is the job-wide count as this run last read it plus its own since — exact
for one running unit, and short by at most one report of the other shards' work for several.
"""

from __future__ import annotations

import contextlib
import dataclasses
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

from ..background import every
from ..engine.dispatch import DispatchReport
from ..outputs import estimate_cost_usd
from ..prices import PriceKey, Tokens, add_tokens, price_key
from ..records import JobRecord
from .cost_guard import Spent
from .ports import Journal
from .run_result import JobResult, now_iso
from .tally import RunTally

__all__ = ["REPORT_INTERVAL_S", "Progress"]

REPORT_INTERVAL_S = 2.0


@dataclass(slots=True)
class _Counts:
    sent: int = 0  # sent to the API, their outcome back (reported: what the operator sees as sent)
    admitted: int = 0  # handed to the dispatcher, queued ones included (what the cost guard counts)
    succeeded: int = 0
    failed: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0


@dataclass(slots=True)
class Progress:
    journal: Journal
    job_id: str
    run: _Counts = field(default_factory=_Counts)  # this run, all of it
    cancelled: bool = False  # the job item says `promptdrop cancel` asked this job to stop
    job: JobRecord | None = None  # the job item as the last report found it (every run's progress)
    tally: RunTally = field(default_factory=RunTally)  # this run by model and failure code (the recorder adds)
    _reported: _Counts = field(default_factory=_Counts)
    # prompt, completion, cached (read from the prompt cache), cache_write (written to it)
    _tokens_by_model: dict[PriceKey, Tokens] = field(default_factory=dict)
    _cost_reported: float = 0.0
    _seen: tuple[float, int] | None = None  # the last report's time, and the job's done after it
    clock: Callable[[], float] = time.time  # wall-clock seconds: the window's samples

    def tag(self, result: JobResult, report: DispatchReport | None = None) -> JobResult:
        """``result`` carrying this run's own figures (what the handler's metrics count), and whether
        the API refused the key (``report``: the engine's, when it ran)."""
        # 401: a key refused; a fatal 403: a provider refusing the credentials themselves (Bedrock's token).
        if report is not None and report.fatal is not None and report.fatal.status_code in (401, 403):
            result.key_rejected = True
        run = self.run
        result.run_succeeded, result.run_failed = run.succeeded, run.failed
        result.run_prompt_tokens, result.run_completion_tokens = run.prompt_tokens, run.completion_tokens
        result.tally = self.tally
        if self.job is not None:
            result.job_started_at = self.job.started_at
        return result

    def admitted(self) -> None:
        """A request handed to the dispatcher (it may wait in its queue before it is sent)."""
        self.run.admitted += 1

    def sent(self) -> None:
        """A request the API answered (or failed): it was sent."""
        self.run.sent += 1

    def succeeded(
        self,
        model: str,
        prompt_tokens: int,
        completion_tokens: int,
        cached_tokens: int = 0,
        tier: str | None = None,
        *,
        cache_write_tokens: int = 0,
    ) -> None:
        """A request answered; its tokens are priced at the service ``tier`` the answer names."""
        self.run.succeeded += 1
        self._paid(price_key(model, tier), prompt_tokens, completion_tokens, cached_tokens, cache_write_tokens)

    def failed(self, model: str = "", prompt_tokens: int = 0, completion_tokens: int = 0) -> None:
        """A request failed; its tokens: the unusable answers it paid for, if any."""
        self.run.failed += 1
        if prompt_tokens or completion_tokens:
            self._paid(model, prompt_tokens, completion_tokens, 0, 0)

    def _paid(self, key: PriceKey, prompt_tokens: int, completion_tokens: int, cached: int, written: int) -> None:
        self.run.prompt_tokens += prompt_tokens
        self.run.completion_tokens += completion_tokens
        add_tokens(self._tokens_by_model, key, prompt_tokens, completion_tokens, cached, written)

    async def report(self) -> None:
        """Add what was done since the last report to the job item; learn of a cancel request."""
        # What is reported is what was counted before the write: answers that come in while it is on
        # its way go in the next report (counted after it, they would never be reported at all).
        run, last = dataclasses.replace(self.run), self._reported
        counts: dict[str, int | float] = {
            name: getattr(run, name) - getattr(last, name)
            for name in ("sent", "succeeded", "failed", "prompt_tokens", "completion_tokens")
        }
        cost = estimate_cost_usd(self._tokens_by_model)
        if cost is not None:
            counts["cost_usd"] = cost - self._cost_reported
        counts = {name: value for name, value in counts.items() if value}
        at, window = self.clock(), None
        if self.job is not None and self._seen is not None:  # the first report only learns the job's count
            done = self.job.progress_done + int(counts.get("succeeded", 0)) + int(counts.get("failed", 0))
            window = JobRecord.window_after(self.job.progress_window, at, done, start=self._seen)
        job = await self.journal.add_progress(self.job_id, counts, now_iso(), window=window)
        self._reported = run
        self._cost_reported = cost or 0.0
        self._seen = (at, job.progress_done)
        self.cancelled = job.cancel_requested_at is not None
        self.job = job

    def spent(self) -> Spent:
        """What the job has used: every other run's and shard's (as last reported) plus this run's (now)."""
        run, last, job = self.run, self._reported, self.job
        mine_usd = estimate_cost_usd(self._tokens_by_model) or 0.0
        if job is None:
            return Spent(mine_usd, run.prompt_tokens + run.completion_tokens, run.admitted)
        others_tokens = job.progress_prompt_tokens + job.progress_completion_tokens
        others_tokens -= last.prompt_tokens + last.completion_tokens
        return Spent(
            usd=(job.progress_cost_usd or 0.0) - self._cost_reported + mine_usd,
            tokens=others_tokens + run.prompt_tokens + run.completion_tokens,
            # Other runs' requests as sent (theirs queued are not known here), this run's as admitted.
            requests=job.progress_sent - last.sent + run.admitted,
        )

    @contextlib.asynccontextmanager
    async def reporting(self) -> AsyncIterator[Progress]:
        """Report at once (a cancelled job stops before sending anything), then every few seconds."""
        await self.report()
        async with every(REPORT_INTERVAL_S, self.report):
            yield self
        await self.report()
