"""A model's pace: how much of the account's limit this run may use (see :mod:`.limiter`)::

    rate = min(limit / members, limit - others) * factor

Plain arithmetic, no waiting: the limiter's buckets are refilled at these rates.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

__all__ = ["DECREASE", "MIN_SHARE", "RECOVERY_PER_S", "Pace", "number"]

DECREASE = 0.7  # the factor after a 429 (CUBIC's beta): firm enough to end an overshoot in a round
RECOVERY_PER_S = 0.05  # of the share, each second without a 429: 0.7 -> 1 in 6 s
MIN_SHARE = 0.05  # of the even share: what a member takes while the others have left nothing free
_DECREASE_EVERY_S = 1.0
_MIN_FACTOR = 0.05
_KINDS = ("requests", "tokens")


class Pace:
    """Limits (configured, learned, told by the fleet), the fleet's members, and the 429 factor."""

    def __init__(self, rpm: int | None, tpm: int | None, *, learn: bool, now: float) -> None:
        self.configured: tuple[float | None, float | None] = (float(rpm) if rpm else None, float(tpm) if tpm else None)
        self.learning = learn
        self.learned: list[float | None] = [None, None]  # from our own answers' headers
        self.fleet: list[float | None] = [None, None]  # told by the shared limits
        self.members = 1
        self.others = (0.0, 0.0)  # requests/min, tokens/min the other members use
        self.others_unknown = 0  # other members that have not said what they use
        self.factor = 1.0
        self._factor_at = now
        self._decreased_at = -math.inf
        self.decreases = 0

    @property
    def limits(self) -> tuple[float | None, float | None]:
        """The model's (requests/min, tokens/min) for the whole account; None where unknown (unlimited)."""
        return self.limit(0), self.limit(1)

    def share(
        self, *, rpm: float | None, tpm: float | None, members: int, others: tuple[float, float], others_unknown: int
    ) -> None:
        """The fleet's shared limits: the limits another member learned, how many runs share them, and the
        rates (requests/min, tokens/min) the ``others`` use — this run takes no more than they leave
        free (at least :data:`MIN_SHARE` of its even share) until they make room; the
        ``others_unknown`` that have not said count at their even share."""
        self.fleet = [rpm, tpm]
        self.members = max(1, members)
        self.others = others
        self.others_unknown = others_unknown

    @property
    def learned_limits(self) -> tuple[float | None, float | None]:
        """The limits our own answers' headers gave (what the fleet may not know yet)."""
        return self.learned[0], self.learned[1]

    def limit(self, i: int) -> float | None:
        """The account's limit (0: requests/min, 1: tokens/min); None where unknown."""
        return self.configured[i] or self.learned[i] or self.fleet[i]

    def per_minute(self, i: int) -> float | None:
        """This run's rate now: its share of the limit, after any 429."""
        limit = self.limit(i)
        if limit is None:
            return None
        even = limit / self.members
        others = self.others[i] + self.others_unknown * even
        return min(even, max(even * MIN_SHARE, limit - others)) * self.factor

    def recover(self, now: float) -> bool:
        """Let the factor climb back towards 1; True when it moved."""
        moved = self.factor < 1.0
        if moved:
            self.factor = min(1.0, self.factor + (now - self._factor_at) * RECOVERY_PER_S)
        self._factor_at = now
        return moved

    def decrease(self, now: float) -> bool:
        """A 429: slow down — once for one overshoot, which answers many requests with 429 at once."""
        if now - self._decreased_at < _DECREASE_EVERY_S:
            return False
        self._decreased_at = now
        self.decreases += 1
        self.recover(now)
        self.factor = max(_MIN_FACTOR, self.factor * DECREASE)
        self._factor_at = now
        return True

    def learn(self, headers: Mapping[str, str]) -> bool:
        """Limits from ``x-ratelimit-limit-*`` headers; True when one is new."""
        news = False
        for i, kind in enumerate(_KINDS):
            if not self.learning or self.configured[i]:
                continue
            per_minute = number(headers.get(f"x-ratelimit-limit-{kind}"))
            if per_minute is not None and per_minute > 0 and per_minute != self.learned[i]:
                self.learned[i] = per_minute
                news = True
        return news


def number(value: str | None) -> float | None:
    if value is None:
        return None
    try:
        parsed = float(value)
    except ValueError:
        return None
    return parsed if math.isfinite(parsed) else None
