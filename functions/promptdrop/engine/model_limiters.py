"""One rate limiter per model for the container; a run's membership of the fleet's shared limits
is :mod:`.membership`.

OpenAI's limits are per model, so a request is admitted by its model's limiter (a file may mix
models). The limiters live as long as the container — what they learned outlives a job — while a
*membership* lives as long as one run (``Dispatcher.run``).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable

from .membership import Membership
from .rate_limiter import INITIAL_WINDOW, RateLimiter
from .shared_limits import SharedLimits

__all__ = ["ModelLimiters"]


class ModelLimiters:
    """The container's limiters, one per model; with shared limits, each shares its model's limit with the fleet."""

    def __init__(
        self,
        *,
        rpm: int | None = None,
        tpm: int | None = None,
        shared: SharedLimits | None = None,
        limits_of: Callable[[str], tuple[int | None, int | None]] | None = None,
        key_of: Callable[[str], str] | None = None,
        initial_window: int | None = INITIAL_WINDOW,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self._rpm, self._tpm = rpm, tpm
        # Per route (routes.py): a model's own limits, and the name its shared limits are kept under.
        self._limits_of = limits_of
        self._key_of = key_of
        self._shared = shared
        self._initial_window = initial_window
        self._clock, self._wall, self._sleep = clock, wall, sleep
        self._by_model: dict[str, RateLimiter] = {}
        self._only: RateLimiter | None = None

    @classmethod
    def single(cls, limiter: RateLimiter) -> ModelLimiters:
        """Every model through one given limiter, no fleet (tests, the engine benchmark)."""
        limiters = cls()
        limiters._only = limiter
        return limiters

    def limiter(self, model: str) -> RateLimiter:
        """The model's limiter (created on first use)."""
        if self._only is not None:
            return self._only
        limiter = self._by_model.get(model)
        if limiter is None:
            rpm, tpm = self._limits_of(model) if self._limits_of is not None else (self._rpm, self._tpm)
            limiter = self._by_model[model] = RateLimiter(
                rpm=rpm,
                tpm=tpm,
                initial_window=self._initial_window,
                clock=self._clock,
                sleep=self._sleep,
            )
        return limiter

    @contextlib.asynccontextmanager
    async def membership(self) -> AsyncIterator[Membership]:
        """One run's membership of the shared limits of the models it uses; renewed while the block runs."""
        membership = Membership(
            self.limiter,
            self._only,
            self._shared,
            key_of=self._key_of,
            clock=self._clock,
            wall=self._wall,
            sleep=self._sleep,
        )
        if self._shared is None:
            yield membership
            return
        renewals = asyncio.create_task(membership.renew_forever())
        try:
            yield membership
        finally:
            renewals.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await renewals
            await membership.leave()
