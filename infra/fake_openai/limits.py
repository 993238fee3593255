"""OpenAI-style rate limits: per-model token buckets for requests and tokens a minute, and ``x-ratelimit-*`` headers.

The server asks :meth:`RateLimiter.admit` before answering; a :class:`Denial` tells it what 429 to send
(the server owns HTTP, this module only counts).
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

from infra.fake_openai.config import ModelLimit

__all__ = ["Bucket", "Denial", "RateLimiter", "format_duration"]

_RATE_LIMIT_DOCS: Final = "Visit https://platform.openai.com/account/rate-limits to learn more."
ORG: Final = "org-local"
_MAX_MODELS: Final = 10_000  # past this many models, new ones get fresh buckets each request (a fake's bound)


def format_duration(seconds: float) -> str:
    """OpenAI's (Go-style) duration format: ``"0s"``, ``"120ms"``, ``"8.64s"``, ``"6m0s"``, ``"1h2m3s"``."""
    ms = math.ceil(seconds * 1000 - 1e-9)
    if ms <= 0:
        return "0s"
    if ms < 1000:
        return f"{ms}ms"
    hours, rest = divmod(ms, 3_600_000)
    minutes, rest = divmod(rest, 60_000)
    secs = f"{rest / 1000:.3f}".rstrip("0").rstrip(".")
    if hours:
        return f"{hours}h{minutes}m{secs}s"
    if minutes:
        return f"{minutes}m{secs}s"
    return f"{secs}s"


class Bucket:
    """A token bucket refilled continuously at limit/60 per second.

    Its capacity is ``burst_s`` seconds' worth: 60 (the default) lets a whole minute's budget go at
    once; 1 enforces the rate over one-second windows, as a strict provider does.
    """

    __slots__ = ("capacity", "level", "limit", "rate", "updated")

    def __init__(self, limit: int, burst_s: float = 60.0) -> None:
        self.limit = limit
        self.rate = limit / 60.0
        self.capacity = max(1.0, self.rate * burst_s)
        self.level = self.capacity
        self.updated = time.monotonic()

    def refill(self, now: float) -> None:
        if now > self.updated:
            self.level = min(self.capacity, self.level + (now - self.updated) * self.rate)
            self.updated = now

    def wait_for(self, need: float) -> float:
        """Seconds until ``need`` units are available (0 if they are now)."""
        need = min(need, self.capacity)  # a request larger than a burst goes when the bucket is full
        return 0.0 if self.level >= need else (need - self.level) / self.rate

    def reset(self) -> None:
        self.level = self.capacity
        self.updated = time.monotonic()


@dataclass(frozen=True, slots=True)
class Denial:
    """Why a request gets a 429: ``kind`` is the error type (``requests``/``tokens``).

    ``wait_s`` is ``None`` for a request larger than the whole limit (waiting never helps: no
    ``retry-after``).
    """

    kind: str
    message: str
    wait_s: float | None


class _ModelBuckets:
    """One model's requests/min and tokens/min buckets."""

    __slots__ = ("buckets", "rpm", "tpm")

    def __init__(self, rpm: int | None, tpm: int | None, burst_s: float) -> None:
        self.rpm = Bucket(rpm, burst_s) if rpm else None
        self.tpm = Bucket(tpm, burst_s) if tpm else None
        self.buckets = [b for b in (self.rpm, self.tpm) if b is not None]

    def headers(self) -> dict[str, str]:
        headers: dict[str, str] = {}
        for bucket, what in ((self.rpm, "requests"), (self.tpm, "tokens")):
            if bucket is not None:
                headers[f"x-ratelimit-limit-{what}"] = str(bucket.limit)
                headers[f"x-ratelimit-remaining-{what}"] = str(max(0, int(bucket.level)))
                headers[f"x-ratelimit-reset-{what}"] = format_duration((bucket.capacity - bucket.level) / bucket.rate)
        return headers


class RateLimiter:
    """Per-model requests/min and tokens/min buckets, as OpenAI keeps them. Used from the server's loop only.

    A model's buckets are made at its first request: from ``model_limits[model]`` if given, else from the
    default ``(rpm, tpm)``; a model with neither limit has no buckets and gets no ``x-ratelimit-*`` headers.
    """

    def __init__(
        self, rpm: int | None, tpm: int | None, burst_s: float, model_limits: Mapping[str, ModelLimit] | None = None
    ) -> None:
        self.default: ModelLimit = (rpm, tpm)
        self.model_limits = dict(model_limits or {})
        self.burst_s = burst_s
        self.active = any(self.default) or any(any(pair) for pair in self.model_limits.values())
        self.models: dict[str, _ModelBuckets | None] = {}

    def _buckets(self, model: str) -> _ModelBuckets | None:
        try:
            return self.models[model]
        except KeyError:
            rpm, tpm = self.model_limits.get(model, self.default)
            buckets = _ModelBuckets(rpm, tpm, self.burst_s) if rpm or tpm else None
            if len(self.models) < _MAX_MODELS:
                self.models[model] = buckets
            return buckets

    def admit(self, model: str, need_tokens: int) -> tuple[dict[str, str], Denial | None]:
        """Charge ``model`` one request and ``need_tokens`` tokens, or deny (charging nothing) if it lacks them."""
        limits = self._buckets(model)
        if limits is None:
            return {}, None
        now = time.monotonic()
        for each in limits.buckets:
            each.refill(now)
        if limits.tpm is not None and need_tokens > limits.tpm.limit:
            message = (
                f"Request too large for {model} in organization {ORG} on tokens per min (TPM): "
                f"Limit {limits.tpm.limit}, Requested {need_tokens}. The input or output tokens "
                f"must be reduced in order to run successfully. {_RATE_LIMIT_DOCS}"
            )
            return limits.headers(), Denial("tokens", message, None)
        checks = ((limits.rpm, 1, "requests", "RPM"), (limits.tpm, need_tokens, "tokens", "TPM"))
        for bucket, need, what, abbr in checks:
            if bucket is None:
                continue
            wait = bucket.wait_for(need)
            if wait <= 0:
                continue
            used = max(0, math.ceil(bucket.capacity - bucket.level))
            message = (
                f"Rate limit reached for {model} in organization {ORG} on {what} per min ({abbr}): "
                f"Limit {bucket.limit}, Used {used}, Requested {need}. "
                f"Please try again in {format_duration(wait)}. {_RATE_LIMIT_DOCS}"
            )
            return limits.headers(), Denial(what, message, wait)
        if limits.rpm is not None:
            limits.rpm.level -= 1
        if limits.tpm is not None:
            limits.tpm.level -= need_tokens
        return limits.headers(), None

    def reset(self) -> None:
        """Every model's buckets full again."""
        self.models.clear()
