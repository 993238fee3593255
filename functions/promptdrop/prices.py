"""What a model's tokens cost, from ``genai-prices`` (a maintained price library) — offline.

The library ships its price data in the package and only fetches fresh data when asked
(``genai_prices.UpdatePrices``): never used here, so pricing works with no network and prices move
only with the pinned version. It costs about 75 ms after the handler's own imports (measured:
12 to 17 ms to import, ~60 ms to load its data on the first price), so it is imported on first use,
not at cold start.

One ``calc_price`` call takes about 0.2 ms — too slow for every answer. A model's prices are linear
in its tokens unless it has tiers (a higher rate past some prompt size), so each model's per-token
rates (input, cached input, output) are read from the library once per container and applied with
plain arithmetic; a model whose rates change with the request's size is priced by the library call
by call instead. Cached input tokens are part of the prompt tokens, billed at their own rate.

Each answer is priced at the ``service_tier`` it says it was served at: ``flex`` answers at the
library's flex rates (half the standard ones for the models that offer flex), everything else at
the standard rates. A model the library knows no flex price for is priced at its standard rates.

Whose prices: OpenAI's unless the routing table says otherwise (``routes.py``): each route names a
genai-prices provider (``aws`` for Bedrock, ``azure``…) or gives its own rates (a local server: 0).
The runtime installs the table's answer once per container (:func:`use_sources`); a model's source
is asked once and its rates cached, as before.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from genai_prices.types import PriceCalculation

__all__ = [
    "FLEX",
    "PROVIDER",
    "PriceKey",
    "PriceSource",
    "Rates",
    "cost_usd",
    "estimate_cost_usd",
    "has_flex",
    "has_price",
    "price_key",
    "rates",
    "use_sources",
]

PROVIDER = "openai"
FLEX = "flex"  # the service tier priced apart (genai-prices' ``service_tier`` price variant)
# What tokens are priced by: a model's name, or (model, service tier) for an answer served at a tier
# priced apart. A plain name is the standard tier.
PriceKey = str | tuple[str, str | None]
# Probes for the per-token rates: a small request, and a large one to tell tiered prices apart.
_SMALL = 1_000
_LARGE = 1_000_000


@dataclass(slots=True, frozen=True)
class Rates:
    """USD per token; ``tiered``: the rates change with the request's size (priced call by call)."""

    model: str
    input: float
    cached_input: float
    output: float
    tiered: bool = False
    tier: str | None = None  # the service tier these rates are for (None: standard)
    provider: str = PROVIDER  # the genai-prices provider they are from

    def cost(self, prompt_tokens: int, completion_tokens: int, cached_tokens: int = 0) -> float:
        """The price of one call's usage (``cached_tokens`` are part of ``prompt_tokens``)."""
        cached = min(max(cached_tokens, 0), prompt_tokens)
        if self.tiered:
            return _calc(self.model, prompt_tokens, completion_tokens, cached, self.tier, self.provider)
        return (prompt_tokens - cached) * self.input + cached * self.cached_input + completion_tokens * self.output


# Where a model's prices come from: a genai-prices provider id, or rates given outright (a route's own).
PriceSource = str | Rates
_source_of: Callable[[str], PriceSource] | None = None  # None: OpenAI's, for every model


def use_sources(source_of: Callable[[str], PriceSource] | None) -> None:
    """Price each model from ``source_of(model)`` (the routing table's; None: OpenAI's for all)."""
    global _source_of
    if source_of is not _source_of:
        _source_of = source_of
        rates.cache_clear()
        has_flex.cache_clear()


def _calculation(
    model: str, prompt: int, completion: int, cached: int, tier: str | None = None, provider: str = PROVIDER
) -> PriceCalculation:
    from genai_prices import Usage, calc_price  # on first use: see the module's docstring

    usage = Usage(input_tokens=prompt, output_tokens=completion, cache_read_tokens=cached or None)
    context = {"service_tier": tier} if tier == FLEX else None
    return calc_price(usage, model_ref=model, provider_id=provider, price_context=context)


def _calc(
    model: str, prompt: int, completion: int, cached: int, tier: str | None = None, provider: str = PROVIDER
) -> float:
    return float(_calculation(model, prompt, completion, cached, tier, provider).total_price)


@lru_cache(maxsize=256)
def rates(model: str, tier: str | None = None) -> Rates | None:
    """The model's rates at ``tier`` (None or ``default``: standard), or None when its source knows no
    price for the model. Rates a route gives outright are the same at every tier."""
    tier = tier if tier == FLEX else None
    source = _source_of(model) if _source_of is not None else PROVIDER
    if isinstance(source, Rates):
        return source
    try:
        probes = ((_SMALL, 0, 0), (_SMALL, 0, _SMALL), (0, _SMALL, 0))
        small = tuple(_calc(model, *usage, tier, source) for usage in probes)
        probes = ((_LARGE, 0, 0), (_LARGE, 0, _LARGE), (0, _LARGE, 0))
        large = tuple(_calc(model, *usage, tier, source) for usage in probes)
    except LookupError:
        return None
    per_small = [price / _SMALL for price in small]
    per_large = [price / _LARGE for price in large]
    tiered = any(abs(a - b) > 1e-15 for a, b in zip(per_small, per_large, strict=True))
    return Rates(model, per_small[0], per_small[1], per_small[2], tiered=tiered, tier=tier, provider=source)


def price_key(model: str, tier: str | None) -> PriceKey:
    """What an answer's tokens are priced by: its model, with its tier when that tier is priced apart."""
    return (model, tier) if tier == FLEX else model


def has_price(model: str) -> bool:
    return rates(model) is not None


@lru_cache(maxsize=256)
def has_flex(model: str) -> bool:
    """Whether the model is served at the flex tier: the library prices it apart (OpenAI offers flex
    for some models only, and refuses ``service_tier: "flex"`` for the others)."""
    standard, flex = rates(model), rates(model, FLEX)
    return standard is not None and flex is not None and flex.output < standard.output


def cost_usd(
    model: str, prompt_tokens: int, completion_tokens: int, cached_tokens: int = 0, tier: str | None = None
) -> float | None:
    """One call's price in USD at the tier it was served at, or None for a model without a known price."""
    found = rates(model, tier if tier == FLEX else None)
    return None if found is None else found.cost(prompt_tokens, completion_tokens, cached_tokens)


def estimate_cost_usd(tokens_by_model: Mapping[PriceKey, tuple[int, ...]]) -> float | None:
    """Tokens per model (or per (model, tier)) — ``(prompt, completion)`` or ``(prompt, completion,
    cached)`` — priced; None when any model has no known price (an estimate that leaves a model out
    would mislead)."""
    total = 0.0
    for key, tokens in tokens_by_model.items():
        model, tier = (key, None) if isinstance(key, str) else key
        prompt, completion, *rest = tokens
        cost = cost_usd(model, prompt, completion, rest[0] if rest else 0, tier)
        if cost is None:
            return None
        total += cost
    return round(total, 6)
