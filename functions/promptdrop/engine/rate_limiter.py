"""Requests/min and tokens/min admission for one model, shared by every worker of one run.

Two token buckets (requests, tokens), each refilled continuously up to one second's worth, at
this run's *share* of the model's limit::

    rate = min(limit / members, limit - others) * factor

* ``limit`` — the account's limit for the model: configured (``PROMPTDROP_RPM``/``TPM``), else
  learned from our own ``x-ratelimit-limit-*`` headers, else told by the fleet's shared limits (another
  member learned it); ``x-ratelimit-remaining-*`` only ever lowers a bucket's level (the server
  knows about traffic we don't).
* ``members`` — how many runs share the limit now (the fleet's shared limits, ``membership.py``); 1 alone.
* ``others`` — what the other members said they use at their last renewal: a run that has just
  joined takes only what is free until they have heard of it (at least ``MIN_SHARE`` of its even
  share), so the fleet does not overshoot while the news spreads.
* ``factor`` — a 429 is a signal, not a failure: it pauses every worker for the server's wait
  (``retry-after``, else ``x-ratelimit-reset-*``), empties the buckets, and multiplies the factor by
  :data:`DECREASE` (at most once a second: one overshoot answers many requests with 429 at once);
  the factor then recovers by :data:`RECOVERY_PER_S` of the share each second, back to 1. So a
  member whose share was wrong (a member the others have not counted yet, traffic from outside
  promptdrop) backs off at once and probes back up, as TCP does.

Slow start (``window.py``): with no limit known yet (nothing configured, nothing learned by
anyone), at most ``initial_window`` requests are in flight. The first answer says what the limit
is — the buckets pace from then on — or says nothing (a server that publishes no limits), and the
window opens. A 429 while no limit is known closes it to half the requests in flight.

Invariants: admission is FIFO (one waiter computes and sleeps at a time, under ``_lock``); a
bucket's level may go negative after a correction, which simply delays the next admission; every
admission that returns True holds one in-flight slot until :meth:`RateLimiter.release`.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping

from .errors import RequestTooLarge, parse_reset
from .pace import DECREASE, MIN_SHARE, RECOVERY_PER_S, Pace, number
from .window import Window

__all__ = ["DECREASE", "INITIAL_WINDOW", "LONG_PAUSE_S", "MIN_SHARE", "RECOVERY_PER_S", "RateLimiter", "parse_reset"]

Clock = Callable[[], float]
Sleep = Callable[[float], Awaitable[None]]

_EPSILON_S = 1e-6
_BURST_S = 1.0
INITIAL_WINDOW = 8  # requests in flight before the first answer tells the limits
_STOP_POLL_S = 1.0  # how often a waiting admission asks whether the run should stop
LONG_PAUSE_S = 1.0  # a 429's pause at least this long is news for the fleet
_KINDS = ("requests", "tokens")


class _Bucket:
    """Refilled at ``per_minute / 60`` a second, holding at most ``_BURST_S`` seconds' worth.

    Providers enforce a per-minute limit over much shorter windows (OpenAI: 60,000/min may be
    enforced as 1,000/s), so saving up a minute's budget and spending it at once draws 429s.
    A request larger than the burst is admitted when the bucket is full and drives it negative.
    """

    __slots__ = ("level", "per_minute", "rate", "stamp")

    def __init__(self, per_minute: float) -> None:
        self.per_minute = per_minute
        self.rate = per_minute / 60.0
        # Empty at first, filling from the first admission: a full start would spend a burst the
        # provider may not have refilled yet (its window started before our first request arrived).
        self.level = 0.0
        self.stamp: float | None = None

    @property
    def capacity(self) -> float:
        return self.rate * _BURST_S

    def refill(self, now: float) -> None:
        if self.stamp is not None:
            self.level = min(self.capacity, self.level + (now - self.stamp) * self.rate)
        self.stamp = now

    def set_rate(self, per_minute: float, now: float) -> None:
        self.refill(now)  # what accrued so far, at the old rate
        self.per_minute, self.rate = per_minute, per_minute / 60.0
        self.level = min(self.level, self.capacity)

    def wait_for(self, amount: float) -> float:
        need = min(amount, self.capacity)
        return 0.0 if self.level >= need else (need - self.level) / self.rate


class RateLimiter:
    """Admits requests for one model at this run's share of the configured or learned limits."""

    def __init__(
        self,
        *,
        rpm: int | None = None,
        tpm: int | None = None,
        learn: bool = True,
        initial_window: int | None = None,
        clock: Clock = time.monotonic,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        self._clock = clock
        self._sleep = sleep
        self._pace = Pace(rpm, tpm, learn=learn, now=clock())
        self._requests: _Bucket | None = None
        self._tokens: _Bucket | None = None
        self._paused_until = 0.0
        self._lock = asyncio.Lock()
        #: Requests allowed in flight while no limit is known (``.size``; None once open): window.py.
        self.slow_start = Window(initial_window)
        self.pauses = 0
        #: Called when there is news for the fleet: a limit our headers taught, a long pause.
        self.on_news: Callable[[], None] | None = None
        self._refresh(clock())

    # -- what is in force ------------------------------------------------------------------------

    @property
    def rates(self) -> tuple[float | None, float | None]:
        """This run's (requests/min, tokens/min) now: its share of :attr:`limits`, after any 429."""
        return (
            self._requests.per_minute if self._requests else None,
            self._tokens.per_minute if self._tokens else None,
        )

    @property
    def pace(self) -> Pace:
        """The limits in force (``pace.limits``), what was learned, the 429 factor."""
        return self._pace

    def paused_for(self) -> float:
        """Seconds left of the pause a 429 asked for (0 when none)."""
        return max(0.0, self._paused_until - self._clock())

    def _refresh(self, now: float) -> None:
        """Set the buckets' rates from the pace."""
        for i, name in enumerate(("_requests", "_tokens")):
            per_minute = self._pace.per_minute(i)
            if per_minute is None:
                continue
            bucket: _Bucket | None = getattr(self, name)
            if bucket is None:
                setattr(self, name, _Bucket(per_minute))
            elif per_minute != bucket.per_minute:
                bucket.set_rate(per_minute, now)
        if self.slow_start.size is not None and (self._requests is not None or self._tokens is not None):
            self.slow_start.open()

    def _recover(self, now: float) -> None:
        if self._pace.recover(now):
            self._refresh(now)

    # -- admission ------------------------------------------------------------------------------

    def _idle(self) -> bool:
        return self._requests is None and self._tokens is None and self._paused_until <= self._clock()

    async def acquire(self, cost: int, *, stop: Callable[[], bool] | None = None) -> bool:
        """Wait until one request of ``cost`` estimated tokens may be sent, and reserve it.

        True: admitted (call :meth:`release` once the call is over). False: ``stop()`` said the
        run should stop while this request was still waiting — it was not admitted.
        """
        tpm = self._pace.limit(1)
        if self._tokens is not None and tpm is not None and cost > tpm:
            raise RequestTooLarge(
                f"estimated {cost} tokens exceed the whole tokens/min limit of {int(tpm)}; "
                "shorten the prompt or lower max_tokens"
            )
        await self.slow_start.take()
        if self._idle() and not self._lock.locked():
            return True  # unlimited and not paused: the hot path costs two comparisons
        admitted = False
        try:
            async with self._lock:
                while True:
                    now = self._clock()
                    self._recover(now)
                    wait = self._paused_until - now
                    for bucket, amount in ((self._requests, 1), (self._tokens, cost)):
                        if bucket is not None:
                            bucket.refill(now)
                            wait = max(wait, bucket.wait_for(amount))
                    if wait <= _EPSILON_S:  # float residue of a refill: admitting now is exact enough
                        break
                    if stop is not None:
                        if stop():
                            return False
                        wait = min(wait, _STOP_POLL_S)
                    await self._sleep(wait)
                if self._requests is not None:
                    self._requests.level -= 1
                if self._tokens is not None:
                    self._tokens.level -= cost
                admitted = True
                return True
        finally:
            if not admitted:
                self.release()

    def release(self) -> None:
        """One admitted call is over (answered, failed or abandoned): its in-flight slot is free."""
        self.slow_start.release()

    # -- what the answers say -----------------------------------------------------------------------

    def settle(self, reserved: int, actual: int) -> None:
        """Correct a token reservation with the call's real usage — upwards only: providers charge
        the prompt plus ``max_tokens`` at admission (OpenAI does) and refund nothing, so refunding
        would run ahead of the server's bucket into 429s; a low estimate is charged the difference."""
        if self._tokens is not None and actual > reserved:
            self._tokens.level -= actual - reserved

    def refund(self, reserved: int) -> None:
        """Give back a reservation whose call never reached the model (it will be retried)."""
        if self._tokens is not None:
            self._tokens.level += reserved
        if self._requests is not None:
            self._requests.level += 1

    def pause(self, seconds: float) -> None:
        """Hold every worker back for ``seconds`` (a 429's retry-after, or the fleet's pause)."""
        until = self._clock() + seconds
        if until > self._paused_until:
            self._paused_until = until
            self.pauses += 1

    def rate_limited(self, wait_s: float, headers: Mapping[str, str] | None = None) -> None:
        """A 429 (rate, not quota): pause everyone for ``wait_s`` and slow down (see the module doc).

        Its ``x-ratelimit-limit-*`` headers teach the limits as an answer's do.
        """
        now = self._clock()
        if headers is not None:
            self._learn(headers, now)
        if wait_s >= LONG_PAUSE_S and self._clock() + wait_s > self._paused_until + LONG_PAUSE_S and self.on_news:
            self.on_news()  # worth telling the fleet: it will not be over before they hear of it
        self.pause(wait_s)
        for bucket in (self._requests, self._tokens):
            if bucket is not None:
                bucket.refill(now)
                bucket.level = min(bucket.level, 0.0)  # the server has nothing left: neither have we
        if not self._pace.decrease(now):
            return  # the same overshoot, answered to several requests at once
        if self._requests is None and self._tokens is None:
            # Nothing known to pace by: the requests in flight are the only handle (TCP's window).
            self.slow_start.halve()
        self._refresh(now)

    def observe(self, headers: Mapping[str, str]) -> None:
        """An answer: learn limits from its ``x-ratelimit-*`` headers, lower our levels to what the
        server has left, and widen the slow-start window."""
        now = self._clock()
        self._learn(headers, now)
        for bucket, kind in ((self._requests, "requests"), (self._tokens, "tokens")):
            left = number(headers.get(f"x-ratelimit-remaining-{kind}"))
            if bucket is not None and left is not None:
                bucket.refill(now)
                bucket.level = min(bucket.level, left)
        if self.slow_start.size is not None:
            publishes = any(f"x-ratelimit-limit-{kind}" in headers for kind in _KINDS)
            if not publishes and not self.slow_start.congested:
                self.slow_start.open()  # the server publishes no limits: nothing more to wait for
            else:
                self.slow_start.widen()

    def _learn(self, headers: Mapping[str, str], now: float) -> None:
        if self._pace.learn(headers):
            self._refresh(now)
            if self.on_news is not None:
                self.on_news()

    def share(
        self,
        *,
        rpm: float | None,
        tpm: float | None,
        members: int,
        pause_s: float = 0.0,
        others: tuple[float, float] = (0.0, 0.0),
        others_unknown: int = 0,
    ) -> None:
        """Apply the fleet's shared limits (:meth:`Pace.share`), and its pause."""
        self._pace.share(rpm=rpm, tpm=tpm, members=members, others=others, others_unknown=others_unknown)
        if pause_s > 0:
            self.pause(pause_s)
        self._refresh(self._clock())
