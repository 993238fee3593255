"""How many requests may be in flight while a model's limits are unknown: slow start, TCP-style.

Before the first answer says what the limit is, a run sends at most ``initial`` requests; each
answer then widens the window by one (it doubles every round trip) until the limits are known and
the window *opens* (the rate buckets pace from then on). A 429 while nothing is known closes it
to half the requests in flight, from which it grows by one per answer up to that point, then by
one per window of answers (congestion avoidance).

Invariants: ``in_flight`` counts the slots taken and not released; a released slot goes to the
first waiter (a worker that releases and asks again queues behind the others: no starvation).
"""

from __future__ import annotations

import asyncio
import math
from collections import deque

__all__ = ["Window"]


class Window:
    """Slots for requests in flight; unlimited once open."""

    __slots__ = ("_growth", "_threshold", "_waiters", "in_flight", "size")

    def __init__(self, initial: int | None) -> None:
        self.size: int | None = initial  # None: open
        self.in_flight = 0
        self._threshold = math.inf  # slow start below it; one more per window of answers above
        self._growth = 0.0
        self._waiters: deque[asyncio.Future[None]] = deque()

    @property
    def congested(self) -> bool:
        """A 429 closed the window while nothing was known (it no longer opens by itself)."""
        return not math.isinf(self._threshold)

    async def take(self) -> None:
        size = self.size
        if size is None or (self.in_flight < size and not self._waiters):
            self.in_flight += 1
            return
        waiter = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            await waiter  # resolved: a slot was handed over (already counted in in_flight)
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                self.release()  # handed a slot, then cancelled: pass it on
            else:
                self._waiters.remove(waiter)
            raise

    def release(self) -> None:
        self.in_flight -= 1
        self._hand_over()

    def open(self) -> None:
        self.size = None
        self._hand_over()

    def halve(self) -> None:
        """A 429 with nothing known to pace by: the requests in flight are the only handle."""
        self.size = max(1, (self.in_flight + 1) // 2)
        self._threshold, self._growth = self.size, 0.0

    def widen(self) -> None:
        """One answer more."""
        if self.size is None:
            return
        if self.size < self._threshold:
            self.size += 1  # one per answer: the window doubles every round trip
        else:
            self._growth += 1 / self.size
            if self._growth >= 1:
                self.size, self._growth = self.size + 1, 0.0
        self._hand_over()

    def _hand_over(self) -> None:
        while self._waiters and (self.size is None or self.in_flight < self.size):
            waiter = self._waiters.popleft()
            self.in_flight += 1
            waiter.set_result(None)
