"""A run's membership of the fleet's shared limits: its seat in each model's, joined, renewed, left.

A membership lives as long as one run (``Dispatcher.run``): it joins a model's shared limits when
the run sends its first request for that model, renews while the run lasts, and leaves when it
ends, so a frozen container between invocations holds no share.

Renewal schedule (the cost of coordination): one ``renew`` call per joined model every
:data:`RENEW_MIN_S` doubling to :data:`RENEW_MAX_S` while the membership count holds still, back
to :data:`RENEW_MIN_S` when it changes (runs start and end together: shards of one file); sooner
when this run has news for the fleet (a limit learned from its headers, a pause of a second or
more asked by a 429), never more often than every :data:`RENEW_MIN_S`. The lease, :data:`LEASE_S`, is three
renewals long: a run that dies gives its share back within it.

A failing shared-limits store (throttled table, network) never fails a run: the run keeps the share it had
(alone, if it never joined) and tries again at the next renewal; the 429 signal covers the rest.

A run joins the shared limits of at most :data:`MAX_SHARED_MODELS` models, the first it sends to;
each later one runs on its own limiter, paced by its 429s alone (as with ``PROMPTDROP_SHARE_LIMITS=false``).
Every seat costs a renewal call every few seconds: a file naming 3,000 models would cost 3 calls an
answer, where a few models cost a handful per thousand.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace

from .rate_limiter import LONG_PAUSE_S, RateLimiter
from .request import Request
from .shared_limits import Observed, Share, SharedLimits

__all__ = ["LEASE_S", "MAX_SHARED_MODELS", "RENEW_MAX_S", "RENEW_MIN_S", "Membership"]

logger = logging.getLogger(__name__)

RENEW_MIN_S = 0.5
RENEW_MAX_S = 10.0
LEASE_S = 3 * RENEW_MAX_S
_TICK_S = 0.25  # how often the renewal loop looks at what is due (no call unless something is)
MAX_SHARED_MODELS = 20  # models one run shares the limits of; the rest run on their own limiters


@dataclass(slots=True)
class _Seat:
    """One model's place in its shared limits, for one run."""

    limiter: RateLimiter
    key: str  # what its shared limits are kept under: the model, or its route's name and the model
    share: Share | None = None  # as last read; None until a join succeeded
    interval: float = RENEW_MIN_S
    due: float = 0.0
    renewed_at: float = 0.0
    news: bool = False
    calls: int = 0

    def mark_news(self) -> None:
        self.news = True


class Membership:
    """A run's seats in the shared limits of the models it sends to."""

    def __init__(
        self,
        limiter_of: Callable[[str], RateLimiter],
        only: RateLimiter | None,
        shared: SharedLimits | None,
        *,
        key_of: Callable[[str], str] | None = None,
        clock: Callable[[], float],
        wall: Callable[[], float],
        sleep: Callable[[float], Awaitable[None]],
    ) -> None:
        self._limiter_of, self._only = limiter_of, only  # `only`: one limiter for every model
        self._shared = shared
        self._key_of = key_of
        self._clock, self._wall, self._sleep = clock, wall, sleep
        self.member = uuid.uuid4().hex
        self._seats: dict[str, _Seat] = {}
        self._joining = asyncio.Lock()

    async def limiter_for(self, request: Request) -> RateLimiter:
        """The limiter of the request's model, this run joined to its shared limits."""
        if self._only is not None:
            return self._only  # one limiter for all: no need to read the model
        model = request.model_name()
        seat = self._seats.get(model)
        if seat is not None:
            return seat.limiter
        if self._shared is None or len(self._seats) >= MAX_SHARED_MODELS:
            return self._limiter_of(model)  # unshared: its 429s alone pace it
        async with self._joining:  # the first workers of a model wait for one join, not one each
            seat = self._seats.get(model)
            if seat is None:
                if len(self._seats) >= MAX_SHARED_MODELS:  # filled while this worker waited
                    return self._limiter_of(model)
                seat = await self._join(model, self._shared)
        return seat.limiter

    @property
    def seats(self) -> dict[str, _Seat]:
        return dict(self._seats)

    async def _join(self, model: str, shared: SharedLimits) -> _Seat:
        seat = _Seat(self._limiter_of(model), self._key_of(model) if self._key_of is not None else model)
        seat.limiter.on_news = seat.mark_news
        self._seats[model] = seat
        await self._call(model, seat, shared.join, joining=True)
        return seat

    async def renew_forever(self) -> None:
        """Renew each seat when due, or sooner when this run has news (a task owned by ``membership``)."""
        shared = self._shared
        assert shared is not None
        while True:
            await self._sleep(_TICK_S)
            now = self._clock()
            for model, seat in list(self._seats.items()):
                if now >= seat.due or (seat.news and now - seat.renewed_at >= RENEW_MIN_S):
                    await self._call(model, seat, shared.renew)

    async def _call(
        self, model: str, seat: _Seat, operation: Callable[..., Awaitable[Share]], *, joining: bool = False
    ) -> None:
        observed = self._observed(seat)
        if joining:  # what a warm limiter used in an earlier run is not what this run will use
            observed = replace(observed, using_rpm=None, using_tpm=None)
        seat.renewed_at = self._clock()
        seat.calls += 1
        try:
            share = await operation(seat.key, self.member, lease_s=LEASE_S, observed=observed)
        except Exception:  # the shared limits spare 429s; losing it must not fail the run
            logger.warning("shared limits unreachable; keeping the last share", exc_info=True, extra={"model": model})
            seat.due = self._clock() + seat.interval
            return
        seat.news = False
        steady = seat.share is not None and seat.share.members == share.members
        seat.interval = min(RENEW_MAX_S, seat.interval * 2) if steady else RENEW_MIN_S
        seat.due = self._clock() + seat.interval
        seat.share = share
        pause_s = share.paused_until - self._wall()
        seat.limiter.share(
            rpm=share.rpm,
            tpm=share.tpm,
            members=share.members,
            pause_s=max(0.0, pause_s),
            others=(share.others_rpm, share.others_tpm),
            others_unknown=share.others_unknown,
        )

    def _observed(self, seat: _Seat) -> Observed:
        """News for the fleet: what our headers taught that the shared limits do not say, and a long pause."""
        told = seat.share
        rpm, tpm = seat.limiter.pace.learned_limits
        pause_s = seat.limiter.paused_for()
        paused_until = self._wall() + pause_s
        using_rpm, using_tpm = seat.limiter.rates
        return Observed(
            using_rpm=using_rpm,
            using_tpm=using_tpm,
            rpm=rpm if rpm is not None and (told is None or told.rpm != rpm) else None,
            tpm=tpm if tpm is not None and (told is None or told.tpm != tpm) else None,
            paused_until=paused_until
            if pause_s >= LONG_PAUSE_S and (told is None or paused_until > told.paused_until + 0.5)
            else None,
        )

    async def leave(self) -> None:
        """Give every seat back (best effort: a lease nobody renews expires anyway)."""
        shared = self._shared
        for model, seat in self._seats.items():
            seat.limiter.on_news = None
            if shared is None or seat.share is None:
                continue
            seat.calls += 1
            try:
                await shared.leave(seat.key, self.member)
            except Exception:
                logger.warning("could not leave the shared limits; its lease will expire", exc_info=True)
            logger.info(
                "left the shared limits",
                extra={
                    "model": model,
                    "limits_of": seat.key,
                    "members": seat.share.members,
                    "shared_limits_calls": seat.calls,
                    "limits_per_min": seat.limiter.pace.limits,
                    "rate_decreases": seat.limiter.pace.decreases,
                },
            )
