"""The cost guard: a file's budget in dollars and/or tokens, and a cap on the requests it sends.

The budget comes from, first to last: the job item (``promptdrop budget JOB --usd N``: how a user raises
the budget of a job that stopped, then resumes it by redrive without paying twice), the upload's
metadata (``promptdrop-budget-usd``, ``promptdrop-budget-tokens``, ``promptdrop-max-requests``),
the environment (``PROMPTDROP_BUDGET_USD``, ``PROMPTDROP_BUDGET_TOKENS``, ``PROMPTDROP_MAX_REQUESTS``).

Before a request is sent, what was spent (every run and shard of the job: the job item's live
progress, plus this run's own answers at once) plus the worst case of every request in flight plus
the worst case of this one must fit each limit. A request's worst case is its token estimate as the
parser made it (``Request.cost``: its input estimate plus ``Request.output_tokens``, its endpoint's
output bound — :meth:`~promptdrop.engine.endpoints.EndpointSpec.output_bound` — else the default
estimate), its input priced at the model's rate for uncached input, at the tier the file's mode
reserves it at (``tier_of``: the tier it is sent at, or the standard one when it may fall back to it).
What was spent is priced as billed (cached input and cache writes at their rates, each answer at the
tier that served it). Other shards' spending is learned every couple of seconds, so a sharded file
may overshoot by what the other shards have in flight.

A request that does not fit while others are in flight waits (:meth:`CostGuard.wait_to_admit`): their
reservations are worst cases, and most calls settle far below theirs, so each one that settles may
make room. Dispatch narrows as the budget nears — only what fits is in flight — and the file stops
only when the next request does not fit with nothing in flight: it spends its budget, not the part of
it left over once a hundred worst cases were reserved (issue 18).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from ..engine.errors import Disposition
from ..engine.outcome import Outcome
from ..engine.request import Request
from ..formats import FileRejected
from ..prices import FLEX, rates
from ..records import FailureCode, JobRecord
from ..settings import MAX_COUNT, Settings

__all__ = [
    "BUDGET_METADATA",
    "Budget",
    "CostGuard",
    "Spent",
    "TierOf",
    "WorstCase",
    "budget_of",
    "flex_tier",
    "how_to_raise",
    "worst_case",
]

BUDGET_METADATA = {
    "usd": "promptdrop-budget-usd",
    "tokens": "promptdrop-budget-tokens",
    "requests": "promptdrop-max-requests",
}
NO_LIMIT = "none"  # a metadata value lifting the environment's limit for one upload
_UNLIMITED = float("inf")
_POLL_S = 0.25  # how often a request waiting for room looks whether the run is stopping (see wait_to_admit)
# The tier a request's worst case is priced at (None: standard); the file's mode says.
TierOf = Callable[[Request], str | None]


@dataclass(slots=True, frozen=True)
class Budget:
    usd: float | None = None
    tokens: int | None = None
    requests: int | None = None

    @property
    def active(self) -> bool:
        return self.usd is not None or self.tokens is not None or self.requests is not None


def _number(metadata: Mapping[str, str], name: str, kind: type[int] | type[float]) -> float | int | None:
    raw = metadata.get(BUDGET_METADATA[name])
    if raw is None or not raw.strip():
        return None
    if raw.strip().lower() == NO_LIMIT:
        return _UNLIMITED  # this upload has no such limit, whatever the environment's default
    try:
        value = kind(raw.strip())
    except ValueError:  # not a number, or an integer past Python's 4,300 digits
        value = None
    # At most MAX_COUNT: a 400-digit budget would overflow the guard's float arithmetic.
    if value is None or not 0 < value <= MAX_COUNT:
        what = "a whole number" if kind is int else "a number"
        raise FileRejected(
            FailureCode.INVALID_BUDGET,
            f"the upload's metadata {BUDGET_METADATA[name]}={raw[:40]!r} is not {what} above 0 and at most "
            f"{MAX_COUNT:.0e} (nor {NO_LIMIT!r}); upload it again with a valid value",
        )
    return value


def budget_of(settings: Settings, metadata: Mapping[str, str], job: JobRecord | None) -> Budget:
    """The file's limits: the job item's, else the upload's metadata, else the environment's."""
    usd, tokens = _number(metadata, "usd", float), _number(metadata, "tokens", int)
    requests = _number(metadata, "requests", int)
    job = job or JobRecord("", "", "", "")
    return Budget(
        usd=_first(job.budget_usd, usd, settings.budget_usd),
        tokens=_int(_first(job.budget_tokens, tokens, settings.budget_tokens)),
        requests=_int(_first(job.max_requests, requests, settings.max_requests)),
    )


def how_to_raise(job_id: str) -> str:
    """The command that raises a job's limits, as the dead letters of a spent budget give it."""
    return f"`promptdrop budget {job_id} --usd N` (or --tokens N, --max-requests N)"


def _first(*values: float | int | None) -> float | None:
    found = next((float(v) for v in values if v is not None), None)
    return None if found == _UNLIMITED else found


def _int(value: float | None) -> int | None:
    return None if value is None else int(value)


@dataclass(slots=True, frozen=True)
class WorstCase:
    """What one request may cost at most: its model, tokens, and dollars (None: no known price)."""

    model: str
    tokens: int
    usd: float | None


def worst_case(request: Request, tier: str | None = None) -> WorstCase:
    """The request's token estimate, priced at ``tier``: what the parser estimated, asked of its endpoint once."""
    model = request.model_name()
    output = request.output_tokens
    prompt = max(0, request.cost - output)
    found = rates(model, tier)
    return WorstCase(model, prompt + output, None if found is None else found.cost(prompt, output))


def flex_tier(goes_flex: Callable[[Request], bool], *, falls_back: bool) -> TierOf:
    """The tier flex mode reserves a request at: flex when it goes flex and cannot fall back to the
    standard tier (``PROMPTDROP_FLEX_FALLBACK=fail``); else standard. A request that may fall back is
    reserved at the standard rates — flex capacity runs short for every request at once, so a margin
    for one fallback would not do — and settled at what it cost: a fallback never overshoots the budget,
    and answers served flex still spend it at half the price."""

    def tier_of(request: Request) -> str | None:
        return FLEX if not falls_back and goes_flex(request) else None

    return tier_of


@dataclass(slots=True, frozen=True)
class Spent:
    """What a file has used so far, across its runs and shards."""

    usd: float = 0.0
    tokens: int = 0
    requests: int = 0


class CostGuard:
    """Admits a request only if it fits; remembers the worst case of those in flight."""

    def __init__(self, limits: Budget) -> None:
        self.limits = limits
        self.refused: str | None = None  # why a request was refused (the dead letter's reason)
        self.unknown_price = False  # refused for a model without a price (a line the up-front check missed)
        self.left = 0  # requests not sent when it refused one (that one included)
        self.done_before = 0  # lines the journal had done when the run began
        self.halted = False  # a fatal outcome: the run sends nothing more
        self._in_flight: dict[int, WorstCase] = {}  # by line (a batch mode's: every request submitted)
        # Their sums, kept as they come and go: asked at every admission, never summed again.
        self._flying_tokens = 0
        self._flying_usd = 0.0
        self._settled = asyncio.Event()  # set when a request in flight settles

    @property
    def in_flight(self) -> int:
        return len(self._in_flight)

    def admit(self, request: Request, spent: Spent, tier: str | None = None) -> bool:
        """Whether ``request`` fits now, given what was ``spent`` (requests sent, in flight ones included);
        if not, ``refused`` says why."""
        if not self.limits.active:
            return True
        worst = worst_case(request, tier)
        why = self._why_not(worst, spent)
        if why is not None:
            self.refused = why[0]
            return False
        self._reserve(request, worst)
        return True

    async def wait_to_admit(
        self,
        request: Request,
        spent: Callable[[], Spent],
        *,
        tier: str | None = None,
        stopping: Callable[[], bool] = lambda: False,
        poll_s: float = _POLL_S,
        wait: bool = True,
    ) -> bool | None:
        """Admit ``request`` once it fits: True. False (``refused`` says why) when it cannot fit: over the
        request cap, a model without a price, or over a budget with nothing in flight to settle. While
        requests in flight hold its room, it waits for them to settle; None when the run stops meanwhile
        (``stopping()``, or a fatal outcome): it is neither sent nor refused — the dispatcher, stopping,
        sends nothing more (at a deadline it hands the request to the continuation). ``stopping`` is
        asked every ``poll_s`` too: a request handed back at a deadline never settles. ``wait=False``
        refuses at once what does not fit now: for a caller whose requests settle only after it stops
        admitting (a Batch API file is submitted whole), waiting would never end."""
        if not self.limits.active:
            return True
        worst = worst_case(request, tier)
        while True:
            why = self._why_not(worst, spent())
            if why is None:
                self._reserve(request, worst)
                return True
            reason, final = why
            if final or not wait or not self._in_flight:
                self.refused = reason
                return False
            if self.halted or stopping():
                return None
            self._settled.clear()
            with contextlib.suppress(TimeoutError):  # a settle, or time to look at stopping() again
                await asyncio.wait_for(self._settled.wait(), poll_s)

    def _reserve(self, request: Request, worst: WorstCase) -> None:
        before = self._in_flight.get(request.line)
        if before is not None:  # the same line again: its earlier reservation is replaced, not added to
            self._flying_tokens -= before.tokens
            self._flying_usd -= before.usd or 0.0
        self._in_flight[request.line] = worst
        self._flying_tokens += worst.tokens
        self._flying_usd += worst.usd or 0.0

    def _why_not(self, worst: WorstCase, spent: Spent) -> tuple[str, bool] | None:
        """Why ``worst`` does not fit now, and whether that is final (no settling can make room); None: it fits."""
        limits = self.limits
        if limits.requests is not None and spent.requests + 1 > limits.requests:
            # In-flight requests count as sent: none settling gives one back.
            return f"{spent.requests:,} of {limits.requests:,} requests were sent (the file's max requests)", True
        if limits.tokens is not None:
            flying_tokens = self._flying_tokens
            if spent.tokens + flying_tokens + worst.tokens > limits.tokens:
                why = (
                    f"{spent.tokens:,} tokens were used, {flying_tokens:,} more at most in flight, and it may use "
                    f"{worst.tokens:,}"
                )
                return why, False
        if limits.usd is not None:
            if worst.usd is None:
                self.unknown_price = True
                return f"the model {worst.model!r} has no known price, and the budget is in dollars", True
            flying_usd = self._flying_usd
            if spent.usd + flying_usd + worst.usd > limits.usd:
                why = (
                    f"${spent.usd:.6f} was spent, ${flying_usd:.6f} more at most in flight, and it may cost "
                    f"${worst.usd:.6f}"
                )
                return why, False
        return None

    def settle(self, outcome: Outcome) -> None:
        """The request's outcome is in — and counted in what was spent: its worst case no longer counts,
        and a request waiting for room looks again. A fatal outcome halts the run."""
        worst = self._in_flight.pop(outcome.request.line, None)
        if worst is not None:
            self._flying_tokens -= worst.tokens
            self._flying_usd = self._flying_usd - (worst.usd or 0.0) if self._in_flight else 0.0  # no drift
        if outcome.error is not None and outcome.error.disposition is Disposition.FATAL:
            self.halted = True
        self._settled.set()
