"""The fake OpenAI API's counters (``GET /stats``) and per-prompt bookkeeping."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from typing import Any

__all__ = ["FakeOpenAIState", "prompt_hash"]


def prompt_hash(text: str) -> str:
    """The key of ``/stats`` ``prompts``: sha256 hex of the prompt text (chat: the last user message), 16 chars."""
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:16]


class FakeOpenAIState:
    """Counters and per-prompt bookkeeping. Mutated only on the server's event loop."""

    def __init__(self) -> None:
        self.started = time.monotonic()
        self.requests = 0
        self.ok = 0
        self.in_flight = 0
        self.max_in_flight = 0
        self.rate_limited = 0
        self.prompt_tokens = 0
        self.completion_tokens = 0
        self.status: dict[int, int] = {}
        self.injected: dict[str, int] = {}
        self.prompts: dict[str, int] = {}
        self.prompts_ok: dict[str, int] = {}
        #: prompts a batch of the Batch API ran (``prompts`` counts the real-time calls)
        self.batch_prompts: dict[str, int] = {}
        self.models: dict[str, int] = {}
        #: answers by the ``service_tier`` they were served at (``default``, ``flex``)
        self.service_tiers: dict[str, int] = {}
        #: flex requests refused for want of flex capacity (429 ``resource_unavailable``)
        self.flex_unavailable = 0
        #: what else a reset clears (the marker counts, the rate-limit buckets)
        self.reset_hooks: list[Callable[[], None]] = []

    def snapshot(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "ok": self.ok,
            "in_flight": self.in_flight,
            "max_in_flight": self.max_in_flight,
            "rate_limited": self.rate_limited,
            "status": {str(k): v for k, v in sorted(self.status.items())},
            "injected": dict(self.injected),
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "prompts": dict(self.prompts),
            "prompts_ok": dict(self.prompts_ok),
            "batch_prompts": dict(self.batch_prompts),
            "models": dict(self.models),
            "service_tiers": dict(self.service_tiers),
            "flex_unavailable": self.flex_unavailable,
            "uptime_s": round(time.monotonic() - self.started, 3),
        }

    def reset(self) -> None:
        self.requests = self.ok = self.rate_limited = 0
        self.max_in_flight = self.in_flight
        self.prompt_tokens = self.completion_tokens = 0
        self.status.clear()
        self.injected.clear()
        self.prompts.clear()
        self.prompts_ok.clear()
        self.batch_prompts.clear()
        self.models.clear()
        self.service_tiers.clear()
        self.flex_unavailable = 0
        for hook in self.reset_hooks:
            hook()
