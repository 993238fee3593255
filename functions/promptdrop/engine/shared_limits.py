"""One shared rate limits per model for every invocation running at once: what the engine needs of it.

OpenAI's limits are per organization and model, and every invocation running at once — the shards
of one file, several files — spends the same ones. Each run is a *member* of its model's shared limits: it
joins when it sends its first request for that model, renews every few seconds, and leaves when
it ends. Its share is the fleet's limit divided by the live members; a member that dies stops
renewing and its share returns when its lease expires. Each member also says what rates it uses,
so one that joins takes only what the others leave free (never more than its even share) until
they have heard of it and made room — no overshoot while the news spreads. What one member learns
is told to the others through the shared limits: the limits from ``x-ratelimit-limit-*`` (so a member that starts later
knows them from its first second) and a pause asked for by a 429.

The engine sees only the :class:`SharedLimits` protocol; where they are kept (DynamoDB, in
``adapters/shared_limits.py``) is the adapters' business. The renewal schedule and the lease length are
the engine's (``membership.py``): the store only keeps what it is told.

Why a lease of a share, renewed by time, and not a shared token bucket drawn in batches (the
alternative the issue names): a shared bucket must be drawn before sending, so its cost grows with
the answers — one conditional write per batch of B requests is 1,000/B calls per 1,000 answers,
and a batch big enough to be cheap (B = 200 is 5 calls per 1,000) hands one member two seconds of
a 6,000/min limit at once, which a server enforcing over one-second windows answers with 429s; its
conditional writes also collide when members draw together. A leased share costs one write per
member per renewal whatever the rate (2 to 10 s apart: well under 10 calls per 1,000 answers once a
member answers more than a few a second), never stands between a worker and the API, and leaves
the pacing to the local buckets that already keep one invocation under its limit. Its price: a
member's share is reserved while it is alive even when it has little left to send, and a new
member waits for the others' next renewal (a second when members come and go, at most
``RENEW_MAX_S``) before it has its whole share — the account's limit is in use meanwhile.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

__all__ = ["Observed", "Share", "SharedLimits"]


@dataclass(slots=True, frozen=True)
class Observed:
    """What a member tells the fleet at a renewal: the rates it uses, and news (None where it has none)."""

    rpm: float | None = None  # learned from x-ratelimit-limit-requests, when it differs from the shared limits'
    tpm: float | None = None  # learned from x-ratelimit-limit-tokens, likewise
    paused_until: float | None = None  # wall-clock seconds: a 429 asked everyone to wait until then
    # The rates this member paces itself at now, always told (the others' room); None: not known
    # yet (it has just joined, or knows no limit) — the others count it at its even share.
    using_rpm: float | None = None
    using_tpm: float | None = None


@dataclass(slots=True, frozen=True)
class Share:
    """The shared limits as a member finds them: the fleet's limits as last learned, and how many share them."""

    rpm: float | None  # the model's requests/min for the whole account, as some member learned it
    tpm: float | None
    members: int  # live members, this one included (at least 1)
    paused_until: float = 0.0  # wall-clock seconds; in the past when no pause is asked
    others_rpm: float = 0.0  # what the other live members said they use, summed
    others_tpm: float = 0.0
    others_unknown: int = 0  # other live members that have not said yet


class SharedLimits(Protocol):
    """Where the members of each model's shared limits find each other.

    ``member`` identifies one run; ``lease_s`` is how long the member counts without renewing.
    Implementations may raise on a store failure: the engine then keeps the share it had and
    tries again at the next renewal (they spare 429s; it is never worth failing a run).
    """

    async def join(self, model: str, member: str, *, lease_s: float, observed: Observed) -> Share:
        """Count ``member`` in the model's shared limits for ``lease_s`` and return the shared limits."""
        ...

    async def renew(self, model: str, member: str, *, lease_s: float, observed: Observed) -> Share:
        """Extend ``member``'s lease, tell the fleet what it ``observed``, and return the shared limits."""
        ...

    async def leave(self, model: str, member: str) -> None:
        """Stop counting ``member``: its share returns to the others at their next renewal."""
        ...
