"""Test doubles: clocks that move only when told (aiolimiter's MockLoopTime idea), a shared budget in memory."""

from __future__ import annotations

import asyncio
import heapq
import itertools
from collections.abc import Callable

from promptdrop.engine.shared_limits import Observed, Share


class FakeClock:
    def __init__(self, start: float = 1000.0) -> None:
        self.now = start
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += max(0.0, seconds)
        await asyncio.sleep(0)


class Timeline:
    """A fake clock that only the test moves (:meth:`advance`); sleepers wake in order as it passes them.

    For background loops (renewals) that would otherwise move a :class:`FakeClock` by themselves.
    """

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start
        self._sleepers: list[tuple[float, int, asyncio.Future[None]]] = []
        self._order = itertools.count()

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        waiter = asyncio.get_running_loop().create_future()
        heapq.heappush(self._sleepers, (self.now + max(0.0, seconds), next(self._order), waiter))
        await waiter

    async def advance(self, seconds: float) -> None:
        end = self.now + seconds
        await _settle()  # tasks just started reach their first sleep
        while self._sleepers and self._sleepers[0][0] <= end:
            when, _, waiter = heapq.heappop(self._sleepers)
            self.now = max(self.now, when)
            if not waiter.done():
                waiter.set_result(None)
            await _settle()  # the woken task runs to its next sleep
        self.now = end


async def _settle() -> None:
    for _ in range(10):
        await asyncio.sleep(0)


class MemorySharedLimits:
    """Shared limits kept in memory, with the semantics of ``adapters/shared_limits.py`` (leases on one clock)."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self.clock = clock
        self.leases: dict[str, dict[str, float]] = {}  # model -> member -> lease_until
        self.using: dict[str, dict[str, tuple[float | None, float | None]]] = {}  # model -> member -> rates
        self.limits: dict[str, list[float | None]] = {}
        self.paused_until: dict[str, float] = {}
        self.calls = 0
        self.failing = False

    def _share(self, model: str, me: str) -> Share:
        now = self.clock()
        rpm, tpm = self.limits.get(model, [None, None])
        live = [member for member, until in self.leases.get(model, {}).items() if until >= now]
        using = self.using.get(model, {})
        others = [using.get(m, (None, None)) for m in live if m != me]
        return Share(
            rpm=rpm,
            tpm=tpm,
            members=max(1, len(live)),
            paused_until=self.paused_until.get(model, 0.0),
            others_rpm=sum(r or 0.0 for r, _ in others),
            others_tpm=sum(t or 0.0 for _, t in others),
            others_unknown=sum(r is None and t is None for r, t in others),
        )

    async def join(self, model: str, member: str, *, lease_s: float, observed: Observed) -> Share:
        return await self.renew(model, member, lease_s=lease_s, observed=observed)

    async def renew(self, model: str, member: str, *, lease_s: float, observed: Observed) -> Share:
        self.calls += 1
        if self.failing:
            raise ConnectionError("the table is unreachable")
        self.leases.setdefault(model, {})[member] = self.clock() + lease_s
        self.using.setdefault(model, {})[member] = (observed.using_rpm, observed.using_tpm)
        limits = self.limits.setdefault(model, [None, None])
        limits[0] = observed.rpm or limits[0]
        limits[1] = observed.tpm or limits[1]
        if observed.paused_until is not None:
            self.paused_until[model] = observed.paused_until
        return self._share(model, member)

    async def leave(self, model: str, member: str) -> None:
        self.calls += 1
        self.leases.get(model, {}).pop(member, None)
