"""How the fake OpenAI API behaves: one frozen, validated :class:`FakeOpenAIConfig`."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["FakeOpenAIConfig"]


@dataclass(frozen=True, slots=True)
class FakeOpenAIConfig:
    """How the server behaves. Rates are probabilities in [0, 1]; ``None`` limits mean unlimited."""

    latency_ms: float = 0.0
    jitter_ms: float = 0.0
    rpm: int | None = None
    tpm: int | None = None
    burst_s: float = 60.0
    fail_500_rate: float = 0.0
    fail_429_rate: float = 0.0
    hang_rate: float = 0.0
    malformed_rate: float = 0.0
    hang_s: float = 30.0
    seed: int | None = None
    require_api_key: str | None = None
    #: Completion tokens charged to the tokens/min bucket when the request sets no max_tokens.
    default_max_tokens: int = 16
    #: retry-after-ms sent with injected 429s (random ones and ``[[fail:429xN]]`` markers).
    fault_retry_after_ms: int = 50

    def __post_init__(self) -> None:
        for name in ("fail_500_rate", "fail_429_rate", "hang_rate", "malformed_rate"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be within [0, 1], got {value!r}")
        if self.fail_500_rate + self.fail_429_rate + self.hang_rate + self.malformed_rate > 1.0:
            raise ValueError("the fault rates must add up to at most 1")
        for name in ("rpm", "tpm"):
            limit = getattr(self, name)
            if limit is not None and limit <= 0:
                raise ValueError(f"{name} must be positive or None, got {limit!r}")
        negative = [
            name
            for name in ("latency_ms", "jitter_ms", "hang_s", "default_max_tokens", "fault_retry_after_ms")
            if getattr(self, name) < 0
        ]
        if negative:
            raise ValueError(f"{', '.join(negative)} must not be negative")
