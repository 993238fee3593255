"""What a unit says when it stops for good before the end of its part of the file.

A unit stops early on an error every request would share, a cancel, the continuation bound — or a
spent budget (:mod:`.cost_guard`): the dead letter then says what was spent of what, how many lines
are done and how many are left, and how to raise the budget and resume without paying twice.

The last line of defence is here too: an error the run did not expect ends the job (``internal_error``)
rather than the delivery, unless it is a passing AWS or network fault and the queue will deliver the
message again — retrying a bug only repeats it, and a job left RUNNING is never finished.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from ..adapters.faults import transient
from ..messages import UnitMessage
from ..records import ErrorRecord, FailureCode
from .cost_guard import CostGuard, how_to_raise
from .progress import Progress
from .run_result import RunStatus

__all__ = ["Ending", "budget_ending", "ends_the_job", "internal_ending"]

_SHOWN = 500  # characters of an unexpected error's message kept in the reason (a message may be huge)


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

    @property
    def error(self) -> dict[str, str]:
        """The file failure as the job item and the dead letter hold it."""
        return file_error(self.code, self.message)


def file_error(code: str, message: str) -> dict[str, Any]:
    """A file failure's error record (the job item's ``error``, a ``file_failure``'s ``error``)."""
    return ErrorRecord("file_error", code, message).as_dict()


def ends_the_job(exc: BaseException, *, last_delivery: bool) -> bool:
    """Whether an error a run did not expect ends its job: anything but a passing AWS or network
    fault — and that too on the queue's last delivery (a message that dead-letters says nothing)."""
    return last_delivery or not transient(exc)


def internal_ending(exc: BaseException, *, stage: Literal["run", "finalize"]) -> Ending:
    """The ending of a run that failed unexpectedly: the error's type and message, never its traceback."""
    text = " ".join(str(exc).split())
    what = type(exc).__name__ + (f": {text[:_SHOWN]}{'…' if len(text) > _SHOWN else ''}" if text else "")
    if stage == "run":
        why = (
            f"stopped by an internal error ({what}); what was answered is in the outputs, the rest was not sent. "
            "This is promptdrop's fault, not the file's: redrive this message once it is fixed (answered lines "
            "are skipped)"
        )
    else:
        why = (
            f"the outputs could not be written: internal error ({what}); every answer is kept in the journal. "
            "This is promptdrop's fault, not the file's: redrive this message once it is fixed"
        )
    return Ending(FailureCode.INTERNAL_ERROR, why, RunStatus.FAILED)


def budget_ending(unit: UnitMessage, guard: CostGuard, progress: Progress) -> Ending:
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
