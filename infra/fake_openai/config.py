"""How the fake OpenAI API behaves: one frozen, validated :class:`FakeOpenAIConfig`."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Literal

__all__ = ["FakeOpenAIConfig", "ModelLimit"]

#: (requests/min, tokens/min) of one model; ``None`` is unlimited.
ModelLimit = tuple[int | None, int | None]


@dataclass(frozen=True, slots=True)
class FakeOpenAIConfig:
    """How the server behaves. Rates are probabilities in [0, 1]; ``None`` limits mean unlimited.

    Rate limits are per model, as OpenAI's are: every model has its own buckets and its own
    ``x-ratelimit-*`` headers, sized by ``model_limits[model]`` (``(rpm, tpm)``) if it is there, else by
    ``rpm``/``tpm``.
    """

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
    #: How callers authenticate (:mod:`.auth`): ``bearer`` (the key above as ``Authorization: Bearer``),
    #: ``api-key`` (Azure: the key above in an ``api-key`` header), ``bedrock`` (a short-term Bedrock token
    #: signed by ``bedrock_access_key`` for ``bedrock_region``, checked by its form and expiry).
    auth: Literal["bearer", "api-key", "bedrock"] = "bearer"
    bedrock_access_key: str | None = None
    bedrock_region: str | None = None
    #: Completion tokens charged to the tokens/min bucket when the request sets no max_tokens.
    default_max_tokens: int = 16
    #: retry-after-ms sent with injected 429s (random ones and ``[[fail:429xN]]`` markers).
    fault_retry_after_ms: int = 50
    #: Per-model (rpm, tpm) overriding ``rpm``/``tpm`` for that model (``None`` in the pair: unlimited).
    model_limits: Mapping[str, ModelLimit] = field(default_factory=dict)
    #: The models that serve ``service_tier: "flex"`` (by name prefix, as OpenAI lists them: o3, o4-mini and
    #: the gpt-5 family); a flex request to another model is refused with a 400, as the API does.
    flex_models: tuple[str, ...] = ("o3", "o4-mini", "gpt-5")
    #: The models whose answers report the prompt cache (:mod:`.prompt_cache`: ``cached_tokens`` read from it,
    #: ``cache_write_tokens`` written to it), by name prefix: the families genai-prices bills cache writes for.
    #: Others report 0 of both, as before.
    prompt_cache_models: tuple[str, ...] = ("gpt-5.6", "gpt-6")
    #: The share of flex requests refused with a 429 ``resource_unavailable`` (flex capacity is short).
    flex_unavailable_rate: float = 0.0
    #: The Batch API (:mod:`.batches`): seconds a batch validates, seconds each of its lines takes (a batch of N
    #: lines finishes in about ``batch_validate_s + N * batch_line_s``), the lines it answers before its window
    #: expires (None: never), the requests one batch may hold, and each model's enqueued-token limit (None: none).
    batch_validate_s: float = 0.0
    batch_line_s: float = 0.0
    batch_expire_after: int | None = None
    batch_max_requests: int = 50_000
    batch_enqueued_tokens: int | None = None
    #: Each batch answer's text: the prompt's echo repeated to this many characters (0: the echo alone, at most
    #: 206). Priced, counted and cut at ``max_tokens`` like any answer: large output files for the benchmarks.
    batch_answer_chars: int = 0

    def __post_init__(self) -> None:
        for name in ("fail_500_rate", "fail_429_rate", "hang_rate", "malformed_rate", "flex_unavailable_rate"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be within [0, 1], got {value!r}")
        if self.fail_500_rate + self.fail_429_rate + self.hang_rate + self.malformed_rate > 1.0:
            raise ValueError("the fault rates must add up to at most 1")
        for name in ("rpm", "tpm"):
            limit = getattr(self, name)
            if limit is not None and limit <= 0:
                raise ValueError(f"{name} must be positive or None, got {limit!r}")
        for model, pair in self.model_limits.items():
            if not (isinstance(pair, tuple) and len(pair) == 2):
                raise ValueError(f"model_limits[{model!r}] must be a pair (rpm, tpm), got {pair!r}")
            if any(limit is not None and limit <= 0 for limit in pair):
                raise ValueError(f"model_limits[{model!r}] limits must be positive or None, got {pair!r}")
        if self.auth == "bedrock" and not (self.bedrock_access_key and self.bedrock_region):
            raise ValueError("auth 'bedrock' needs bedrock_access_key and bedrock_region")
        object.__setattr__(self, "model_limits", MappingProxyType(dict(self.model_limits)))
        negative = [
            name
            for name in (
                "latency_ms",
                "jitter_ms",
                "hang_s",
                "default_max_tokens",
                "fault_retry_after_ms",
                "batch_validate_s",
                "batch_line_s",
                "batch_answer_chars",
            )
            if getattr(self, name) < 0
        ]
        if negative:
            raise ValueError(f"{', '.join(negative)} must not be negative")
