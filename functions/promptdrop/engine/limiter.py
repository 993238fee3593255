"""Requests/min and tokens/min admission, shared by every worker of one run.

Two token buckets (requests, tokens), each refilled continuously at ``limit / 60`` per second up
to one second's worth. Limits come from configuration or are learned from the API's
``x-ratelimit-limit-*`` headers; ``x-ratelimit-remaining-*`` only ever lowers our level (the
server knows about traffic we don't). A token reservation is an estimate (prompt + completion
budget), charged again when the real ``usage`` turns out larger. A 429 pauses admission for
everyone until its ``retry-after``.

Invariants: admission is FIFO (one waiter computes and sleeps at a time, under ``_lock``); a
bucket's level may go negative after a correction, which simply delays the next admission.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Awaitable, Callable, Mapping

from .errors import RequestTooLarge

__all__ = ["RateLimiter", "parse_reset"]

Clock = Callable[[], float]
Sleep = Callable[[float], Awaitable[None]]

_EPSILON_S = 1e-6
_BURST_S = 1.0
_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h)")
_UNIT_S = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_reset(value: str | None) -> float | None:
    """OpenAI's reset durations ("1s", "6m0s", "120ms") in seconds."""
    if not value:
        return None
    parts = _DURATION.findall(value)
    return sum(float(n) * _UNIT_S[u] for n, u in parts) if parts else None


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

    def wait_for(self, amount: float) -> float:
        need = min(amount, self.capacity)
        return 0.0 if self.level >= need else (need - self.level) / self.rate


class RateLimiter:
    """Admits requests at the configured or learned requests/min and tokens/min."""

    def __init__(
        self,
        *,
        rpm: int | None = None,
        tpm: int | None = None,
        learn: bool = True,
        clock: Clock = time.monotonic,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        self._clock = clock
        self._sleep = sleep
        self._requests = _Bucket(rpm) if rpm else None
        self._tokens = _Bucket(tpm) if tpm else None
        self._learn_requests = learn and not rpm
        self._learn_tokens = learn and not tpm
        self._paused_until = 0.0
        self._lock = asyncio.Lock()
        self.pauses = 0

    @property
    def limits(self) -> tuple[float | None, float | None]:
        """(requests/min, tokens/min) in force; None where unlimited."""
        return (
            self._requests.per_minute if self._requests else None,
            self._tokens.per_minute if self._tokens else None,
        )

    def _idle(self) -> bool:
        return self._requests is None and self._tokens is None and self._paused_until <= self._clock()

    async def acquire(self, cost: int) -> None:
        """Wait until one request of ``cost`` estimated tokens may be sent, and reserve it."""
        if self._idle() and not self._lock.locked():
            return  # unlimited and not paused: the hot path costs one comparison
        if self._tokens is not None and cost > self._tokens.per_minute:
            raise RequestTooLarge(
                f"estimated {cost} tokens exceed the whole tokens/min limit of {int(self._tokens.per_minute)}; "
                "shorten the prompt or lower max_tokens"
            )
        async with self._lock:
            while True:
                now = self._clock()
                wait = self._paused_until - now
                for bucket, amount in ((self._requests, 1), (self._tokens, cost)):
                    if bucket is not None:
                        bucket.refill(now)
                        wait = max(wait, bucket.wait_for(amount))
                if wait <= _EPSILON_S:  # float residue of a refill: admitting now is exact enough
                    break
                await self._sleep(wait)
            if self._requests is not None:
                self._requests.level -= 1
            if self._tokens is not None:
                self._tokens.level -= cost

    def settle(self, reserved: int, actual: int) -> None:
        """Correct a token reservation with the call's real usage — upwards only.

        Providers charge the tokens/min limit at admission with the prompt plus ``max_tokens``
        (OpenAI does) and give nothing back when the answer is shorter; refunding the difference
        would make us run ahead of the server's bucket and collect 429s. An answer that used more
        than we reserved (our estimate was low) is charged.
        """
        if self._tokens is not None and actual > reserved:
            self._tokens.level -= actual - reserved

    def refund(self, reserved: int) -> None:
        """Give back a reservation whose call never reached the model (it will be retried)."""
        if self._tokens is not None:
            self._tokens.level += reserved
        if self._requests is not None:
            self._requests.level += 1

    def pause(self, seconds: float) -> None:
        """Hold every worker back for ``seconds`` (a 429's retry-after)."""
        until = self._clock() + seconds
        if until > self._paused_until:
            self._paused_until = until
            self.pauses += 1

    def observe(self, headers: Mapping[str, str]) -> None:
        """Learn limits from ``x-ratelimit-*`` headers and lower our levels to what the server has left."""
        now = self._clock()
        self._requests = self._observe(self._requests, self._learn_requests, headers, "requests", now)
        self._tokens = self._observe(self._tokens, self._learn_tokens, headers, "tokens", now)

    @staticmethod
    def _observe(
        bucket: _Bucket | None, learn: bool, headers: Mapping[str, str], kind: str, now: float
    ) -> _Bucket | None:
        limit = headers.get(f"x-ratelimit-limit-{kind}")
        if learn and limit is not None:
            try:
                per_minute = float(limit)
            except ValueError:
                return bucket
            if per_minute > 0:
                if bucket is None:
                    bucket = _Bucket(per_minute)
                elif per_minute != bucket.per_minute:
                    bucket.refill(now)
                    bucket.per_minute, bucket.rate = per_minute, per_minute / 60.0
        remaining = headers.get(f"x-ratelimit-remaining-{kind}")
        if bucket is not None and remaining is not None:
            try:
                left = float(remaining)
            except ValueError:
                return bucket
            bucket.refill(now)
            bucket.level = min(bucket.level, left)
        return bucket
