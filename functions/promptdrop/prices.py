"""What a model's tokens cost, from ``genai-prices`` (a maintained price library) — offline.

The library ships its price data in the package and only fetches fresh data when asked
(``genai_prices.UpdatePrices``): never used here, so pricing works with no network and prices move
only with the pinned version. It costs about 75 ms after the handler's own imports (measured:
12 to 17 ms to import, ~60 ms to load its data on the first price), so it is imported on first use,
not at cold start.

One ``calc_price`` call takes about 0.2 ms — too slow for every answer. A model's prices are linear
in its tokens unless it has tiers (a higher rate past some prompt size), so each model's per-token
rates (input, cached input, cache write, output) are read from the library once per container and
applied with plain arithmetic; a model whose rates change with the request's size is priced by the
library call by call instead. Cached input tokens (read from the prompt cache) and cache-write
tokens (written to it: newer models bill them above the input rate) are both part of the prompt
tokens, each billed at its own rate; a model the library gives no cache-write rate bills them as input.

Each answer is priced at the ``service_tier`` it says it was served at: ``flex`` answers at the
library's flex rates (half the standard ones for the models that offer flex), everything else at
the standard rates. A model the library knows no flex price for is priced at its standard rates.

``batch`` (the Batch API) is priced, in this order: the library's own batch price (its
``processing: batch`` variant) where it has one; else the model's flex rates, where it has them
(flex is priced like the Batch API: OpenAI's flex processing guide says so, and the library's input
and output rates agree for every model priced both ways); else half the standard rates — OpenAI's
Batch API guide (https://platform.openai.com/docs/guides/batch) sells every batch at "a 50%
discount" on the standard price, so a model the library has no batch figure for is still priced as billed.

Whose prices: OpenAI's unless the routing table says otherwise (``routes.py``): each route names a
genai-prices provider (``aws`` for Bedrock, ``azure``…) or gives its own rates (a local server: 0).
The runtime installs the table's answer once per container (:func:`use_sources`); a model's source
is asked once and its rates cached, as before.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from functools import lru_cache

__all__ = [
    "BATCH",
    "FLEX",
    "PROVIDER",
    "PriceKey",
    "PriceSource",
    "Rates",
    "Tokens",
    "add_tokens",
    "batch_of",
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
BATCH = "batch"  # the Batch API (genai-prices' ``processing`` price variant, else as the module says)
_PRICED_APART = (FLEX, BATCH)
# What the library is asked for each tier priced apart (its price variants' ``when``).
_CONTEXT: dict[str, dict[str, str]] = {FLEX: {"service_tier": FLEX}, BATCH: {"processing": BATCH}}
_BATCH_DISCOUNT = 0.5  # OpenAI's Batch API: "a 50% discount" on the standard price (see the module's docstring)
# What tokens are priced by: a model's name, or (model, tier) for an answer served at a tier priced
# apart. A plain name is the standard tier.
PriceKey = str | tuple[str, str | None]
# Probes for the per-token rates: a small request, and a large one to tell tiered prices apart.
_SMALL = 1_000
_LARGE = 1_000_000


@dataclass(slots=True, frozen=True)
class Rates:
    """USD per token; ``tiered``: the rates change with the request's size (priced call by call by the
    library, asked for ``source``'s prices and scaled by ``factor``)."""

    model: str
    input: float
    cached_input: float
    output: float
    cache_write: float | None = None  # None: cache writes billed as input
    tiered: bool = False
    tier: str | None = None  # the tier these rates are for (None: standard)
    source: str | None = None  # the library's prices they come from (None: standard; FLEX; BATCH)
    factor: float = 1.0  # applied to those prices: half the standard for a batch with no price of its own
    provider: str = PROVIDER  # the genai-prices provider they are from

    def cost(
        self, prompt_tokens: int, completion_tokens: int, cached_tokens: int = 0, cache_write_tokens: int = 0
    ) -> float:
        """One call's price (``cached_tokens`` and ``cache_write_tokens`` are part of ``prompt_tokens``)."""
        cached = min(max(cached_tokens, 0), prompt_tokens)
        written = min(max(cache_write_tokens, 0), prompt_tokens - cached)
        if self.tiered:
            priced = _calc(self.model, prompt_tokens, completion_tokens, cached, written, self.source, self.provider)
            return priced * self.factor
        fresh = prompt_tokens - cached - written
        write = self.input if self.cache_write is None else self.cache_write
        return fresh * self.input + cached * self.cached_input + written * write + completion_tokens * self.output


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


def _calc(
    model: str,
    prompt: int,
    completion: int,
    cached: int,
    written: int = 0,
    tier: str | None = None,
    provider: str = PROVIDER,
) -> float:
    """One call's price, asked of the library (its ``calc_price``: about 0.2 ms)."""
    from genai_prices import Usage, calc_price  # on first use: see the module's docstring

    usage = Usage(
        input_tokens=prompt,
        output_tokens=completion,
        cache_read_tokens=cached or None,
        cache_write_tokens=written or None,
    )
    context = _CONTEXT.get(tier or "")
    return float(calc_price(usage, model_ref=model, provider_id=provider, price_context=context).total_price)


def _tier(tier: str | None) -> str | None:
    """A tier priced apart, or None: the standard tier (``default``, and any tier not priced apart here)."""
    return tier if tier in _PRICED_APART else None


def _read(model: str, source: str | None, provider: str = PROVIDER) -> Rates | None:
    """The library's per-token rates of ``model`` at ``source``'s prices (``provider``'s); None when it
    knows no price."""
    # (prompt, completion, cached, written) probes: uncached input, cached input, output, cache writes
    probes = ((1, 0, 0, 0), (1, 0, 1, 0), (0, 1, 0, 0), (1, 0, 0, 1))
    try:
        small = [_calc(model, p * _SMALL, c * _SMALL, k * _SMALL, w * _SMALL, source, provider) / _SMALL
                 for p, c, k, w in probes]  # fmt: skip
        large = [_calc(model, p * _LARGE, c * _LARGE, k * _LARGE, w * _LARGE, source, provider) / _LARGE
                 for p, c, k, w in probes]  # fmt: skip
    except LookupError:
        return None
    tiered = any(abs(a - b) > 1e-15 for a, b in zip(small, large, strict=True))
    write = None if abs(small[3] - small[0]) <= 1e-18 else small[3]
    return Rates(
        model, small[0], small[1], small[2], write, tiered=tiered, tier=source, source=source, provider=provider
    )


@lru_cache(maxsize=256)
def rates(model: str, tier: str | None = None) -> Rates | None:
    """The model's rates at ``tier`` (None or ``default``: standard; FLEX; BATCH, priced as the module's
    docstring says), or None when its source knows no price for the model. Rates a route gives outright
    are the same at every tier."""
    tier = _tier(tier)
    source = _source_of(model) if _source_of is not None else PROVIDER
    if isinstance(source, Rates):
        return source
    if tier != BATCH:
        return _read(model, tier, source)
    standard = _read(model, None, source)
    if standard is None:
        return None
    return batch_of(standard, _read(model, BATCH, source), rates(model, FLEX) if has_flex(model) else None)


def batch_of(standard: Rates, own: Rates | None, flex: Rates | None) -> Rates:
    """The batch rates of a model, from its ``standard`` rates, the library's ``own`` batch variant and its
    ``flex`` rates (None: it offers no flex): the variant where it prices batch apart, else flex, else half
    the standard (see the module's docstring for why)."""
    if own is not None and _figures(own) != _figures(standard):
        return replace(own, tier=BATCH)
    if flex is not None:
        return replace(flex, tier=BATCH)
    half = _BATCH_DISCOUNT
    write = None if standard.cache_write is None else standard.cache_write * half
    return replace(
        standard,
        input=standard.input * half,
        cached_input=standard.cached_input * half,
        output=standard.output * half,
        cache_write=write,
        tier=BATCH,
        factor=half,
    )


def _figures(found: Rates) -> tuple[float, float, float, float | None]:
    return found.input, found.cached_input, found.output, found.cache_write


def price_key(model: str, tier: str | None) -> PriceKey:
    """What an answer's tokens are priced by: its model, with its tier when that tier is priced apart."""
    tier = _tier(tier)
    return model if tier is None else (model, tier)


def has_price(model: str) -> bool:
    return rates(model) is not None


@lru_cache(maxsize=256)
def has_flex(model: str) -> bool:
    """Whether the model is served at the flex tier: the library prices it apart (OpenAI offers flex
    for some models only, and refuses ``service_tier: "flex"`` for the others)."""
    standard, flex = rates(model), rates(model, FLEX)
    return standard is not None and flex is not None and flex.output < standard.output


def cost_usd(
    model: str,
    prompt_tokens: int,
    completion_tokens: int,
    cached_tokens: int = 0,
    tier: str | None = None,
    cache_write_tokens: int = 0,
) -> float | None:
    """One call's price in USD at the tier it was served at, or None for a model without a known price."""
    found = rates(model, _tier(tier))
    return None if found is None else found.cost(prompt_tokens, completion_tokens, cached_tokens, cache_write_tokens)


Tokens = tuple[int, int, int, int]  # prompt, completion, cache read, cache write: what estimate_cost_usd prices


def add_tokens(
    by_key: dict[PriceKey, Tokens], key: PriceKey, prompt: int, completion: int, read: int, written: int
) -> None:
    """Add one request's tokens under ``key`` (its model, and its tier where that is priced apart)."""
    p, c, k, w = by_key.get(key, (0, 0, 0, 0))
    by_key[key] = (p + prompt, c + completion, k + read, w + written)


def estimate_cost_usd(tokens_by_model: Mapping[PriceKey, tuple[int, ...]]) -> float | None:
    """Tokens per model (or per (model, tier)) — ``(prompt, completion)``, ``(prompt, completion, cached)``
    or ``(prompt, completion, cached, cache_write)`` — priced; None when any model has no known price (an
    estimate that leaves a model out would mislead)."""
    total = 0.0
    for key, tokens in tokens_by_model.items():
        model, tier = (key, None) if isinstance(key, str) else key
        prompt, completion, *rest = tokens
        cached, written = [*rest, 0, 0][:2]
        cost = cost_usd(model, prompt, completion, cached, tier, written)
        if cost is None:
            return None
        total += cost
    return round(total, 6)
