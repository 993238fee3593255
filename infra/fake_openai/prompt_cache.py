"""The prompt cache, as OpenAI's prompt-caching guide describes it, for the models whose answers report it.

A prompt of 1,024 tokens or more is cached by its prefix, in steps of 128 tokens (1,024, 1,152, …): a
later prompt to the same model that starts with a cached prefix reads it from the cache (``cached_tokens``)
and writes the rest of its cacheable prefix (``cache_write_tokens``: newer models bill those writes above the
input rate). Shorter prompts are neither read nor written. A prompt is its input as sent — chat's
``messages``, Responses' ``instructions`` and ``input`` — as JSON text, its tokens at 4 characters each (the
fake's estimate everywhere). Simplified: nothing expires, and only the models configured report anything.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any, Final

__all__ = ["MIN_TOKENS", "STEP_TOKENS", "PromptCache"]

MIN_TOKENS: Final = 1024  # the shortest prompt cached
STEP_TOKENS: Final = 128  # cache hits (and writes) grow in steps of this many tokens
_CHARS_PER_TOKEN: Final = 4
_MAX_ENTRIES: Final = 100_000  # a fake's bound: past it, nothing more is written


class PromptCache:
    """Cached prefixes by (model, prefix hash). Mutated only on the server's event loop."""

    def __init__(self, models: tuple[str, ...]) -> None:
        self._models = models  # by name prefix
        self._prefixes: set[bytes] = set()

    def clear(self) -> None:
        self._prefixes.clear()

    def use(self, model: str, body: dict[str, Any], input_tokens: int) -> tuple[int, int]:
        """(tokens read from the cache, tokens written to it) by a prompt of ``input_tokens`` tokens."""
        if not self._models or not model.startswith(self._models) or input_tokens < MIN_TOKENS:
            return 0, 0
        text = json.dumps([body.get("messages"), body.get("instructions"), body.get("input")], sort_keys=True)
        tokens = min(input_tokens, len(text) // _CHARS_PER_TOKEN)
        if tokens < MIN_TOKENS:
            return 0, 0
        cacheable = MIN_TOKENS + (tokens - MIN_TOKENS) // STEP_TOKENS * STEP_TOKENS
        steps = [self._key(model, text, tokens) for tokens in range(MIN_TOKENS, cacheable + 1, STEP_TOKENS)]
        read = 0
        for i, key in enumerate(steps):
            if key not in self._prefixes:
                break
            read = MIN_TOKENS + i * STEP_TOKENS
        if len(self._prefixes) < _MAX_ENTRIES:
            self._prefixes.update(steps)
        return read, cacheable - read

    @staticmethod
    def _key(model: str, text: str, tokens: int) -> bytes:
        prefix = text[: tokens * _CHARS_PER_TOKEN]
        return hashlib.sha256(f"{model}\0{prefix}".encode("utf-8", "surrogatepass")).digest()
