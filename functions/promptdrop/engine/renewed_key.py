"""A client whose key is a short-term token (a Bedrock route): renewed before it expires, once per
validity period — never per call.

The check on the request path is one clock read against the renewal time. A token is renewed
when half its life has passed, so a request sent just before a renewal still has half a lifetime
(minutes) to reach the server; the first worker to see it due mints, the others wait for that one
mint rather than minting one each.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Protocol

from .client import LeanAsyncOpenAI, Reply
from .errors import CredentialsUnavailable

__all__ = ["RenewedKey", "TokenSource"]


class TokenSource(Protocol):
    async def mint(self, now: float) -> tuple[str, float]:
        """A new token and the seconds it is valid for; ``now``: the wall clock, epoch seconds."""
        ...


class RenewedKey:
    """``post_ready`` through ``client``, its key a token from ``source`` renewed at half its life."""

    def __init__(
        self,
        client: LeanAsyncOpenAI,
        source: TokenSource,
        *,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.client = client
        self._source = source
        self._clock, self._wall = clock, wall
        self._renew_at = float("-inf")  # no token yet
        self._renewing = asyncio.Lock()
        self.minted = 0  # tokens minted: one per half validity period, whatever the calls

    async def post_ready(self, path: str, body: bytes, timeout_s: float | None = None) -> Reply:
        """The engine's ``Sender``: the call, on a token with at least half its life left."""
        if self._clock() >= self._renew_at:
            await self.renew()
        return await self.client.post_ready(path, body, timeout_s)

    async def renew(self, *, force: bool = False) -> None:
        """Mint a new token if the current one is past half its life (or ``force``: the server refused it)."""
        async with self._renewing:
            if not force and self._clock() < self._renew_at:
                return  # another worker renewed it while this one waited
            try:
                token, valid_s = await self._source.mint(self._wall())
            except Exception as exc:
                raise CredentialsUnavailable(f"could not mint a token for {self.client.base_url}: {exc}") from exc
            self.client.api_key = token
            self.minted += 1
            self._renew_at = self._clock() + valid_s / 2

    @property
    def key(self) -> str:
        return self.client.api_key
