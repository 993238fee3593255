"""Prices from genai-prices: offline, cached input and cache writes at their own rates, the batch tier's rule,
unknown models named."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from genai_prices import Usage, calc_price
from promptdrop.prices import BATCH, FLEX, Rates, batch_of, cost_usd, estimate_cost_usd, has_price, price_key, rates

ROOT = Path(__file__).parents[2]


def library(
    model: str, prompt: int, completion: int, cached: int = 0, written: int = 0, context: dict[str, str] | None = None
) -> float:
    usage = Usage(input_tokens=prompt, output_tokens=completion)
    usage.cache_read_tokens, usage.cache_write_tokens = cached or None, written or None
    return float(calc_price(usage, model_ref=model, provider_id="openai", price_context=context).total_price)


@pytest.mark.parametrize("model", ["gpt-4o-mini", "gpt-4o", "gpt-4.1-nano", "gpt-5", "o3"])
def test_a_call_costs_what_the_library_says_cached_tokens_included(model: str) -> None:
    # Given a call whose prompt was half served from the cache
    prompt, completion, cached = 12_000, 800, 6_000
    # Then the fast per-token arithmetic gives the library's own price
    assert cost_usd(model, prompt, completion, cached) == pytest.approx(library(model, prompt, completion, cached))


def test_cached_input_tokens_cost_less_than_fresh_ones() -> None:
    fresh = cost_usd("gpt-4o-mini", 10_000, 0)
    cached = cost_usd("gpt-4o-mini", 10_000, 0, cached_tokens=10_000)
    assert fresh is not None
    assert cached is not None
    assert cached == pytest.approx(fresh / 2)  # gpt-4o-mini: $0.15 / $0.075 per million


def test_a_model_without_a_price_is_unknown_not_free() -> None:
    assert rates("no-such-model") is None
    assert not has_price("no-such-model")
    assert cost_usd("no-such-model", 10, 10) is None
    assert estimate_cost_usd({"gpt-4o-mini": (1_000_000, 0), "no-such-model": (1, 1)}) is None


def test_a_dated_snapshot_of_a_model_has_its_price() -> None:
    assert cost_usd("gpt-4o-mini-2024-07-18", 1_000_000, 1_000_000) == pytest.approx(0.75)


def test_the_estimate_sums_models_with_or_without_cached_tokens() -> None:
    assert estimate_cost_usd({"gpt-4o-mini": (1_000_000, 1_000_000)}) == pytest.approx(0.75)
    assert estimate_cost_usd({"gpt-4o-mini": (1_000_000, 0, 1_000_000), "gpt-4o": (0, 100_000)}) == pytest.approx(
        0.075 + 1.0
    )


def test_a_tiered_model_is_priced_by_the_library_call_by_call() -> None:
    tiered = Rates("gpt-4o", 0.0, 0.0, 0.0, tiered=True)  # rates ignored: the library prices it
    assert tiered.cost(5_000, 100, 1_000) == pytest.approx(library("gpt-4o", 5_000, 100, 1_000))


@pytest.mark.parametrize("model", ["gpt-5.6-cyber", "gpt-5.6-luna", "gpt-4o-mini"])
def test_cache_writes_cost_what_the_library_says(model: str) -> None:
    # Given a call that wrote part of its prompt to the prompt cache and read another part from it
    prompt, completion, cached, written = 12_000, 800, 3_000, 5_000
    # Then it is priced as the library prices it, at each model's cache-write rate
    found = cost_usd(model, prompt, completion, cached, cache_write_tokens=written)
    assert found == pytest.approx(library(model, prompt, completion, cached, written))


def test_a_model_that_bills_cache_writes_charges_them_above_input_others_as_input() -> None:
    plain = cost_usd("gpt-5.6-cyber", 10_000, 0)
    written = cost_usd("gpt-5.6-cyber", 10_000, 0, cache_write_tokens=10_000)
    assert plain is not None
    assert written == pytest.approx(plain * 1.25)  # $12.50 input, $15.625 cache write per million
    assert cost_usd("gpt-4o-mini", 10_000, 0, cache_write_tokens=10_000) == cost_usd("gpt-4o-mini", 10_000, 0)
    found = rates("gpt-5.6-cyber")
    assert found is not None
    assert found.cache_write == pytest.approx(15.625e-6)
    assert estimate_cost_usd({"gpt-5.6-cyber": (10_000, 0, 0, 10_000)}) == pytest.approx(written)


# -- the Batch API's prices: the library's batch variant, else flex, else half the standard ---------------------


def test_batch_is_the_librarys_batch_price_where_it_has_one() -> None:
    # gpt-4o-mini: genai-prices has a processing: batch variant ($0.075 / $0.30 per million)
    batch = cost_usd("gpt-4o-mini", 1_000_000, 1_000_000, tier=BATCH)
    assert batch == pytest.approx(library("gpt-4o-mini", 1_000_000, 1_000_000, context={"processing": "batch"}))
    assert batch == pytest.approx(0.375)
    found = rates("gpt-4o-mini", BATCH)
    assert found is not None
    assert (found.tier, found.source, found.factor) == (BATCH, BATCH, 1.0)


def test_batch_of_a_model_the_library_has_no_batch_price_for_is_half_the_standard() -> None:
    # gpt-5.3-codex: no batch variant and no flex one: OpenAI's Batch API is 50% of the standard rates
    standard, batch = rates("gpt-5.3-codex"), rates("gpt-5.3-codex", BATCH)
    assert standard is not None
    assert batch is not None
    assert (batch.input, batch.cached_input, batch.output) == pytest.approx(
        (standard.input / 2, standard.cached_input / 2, standard.output / 2)
    )
    assert cost_usd("gpt-5.3-codex", 10_000, 2_000, 1_000, BATCH) == pytest.approx(
        library("gpt-5.3-codex", 10_000, 2_000, 1_000) / 2
    )
    # gpt-5.6-cyber bills cache writes: halved too
    cyber = cost_usd("gpt-5.6-cyber", 10_000, 100, 0, BATCH, cache_write_tokens=4_000)
    assert cyber == pytest.approx(library("gpt-5.6-cyber", 10_000, 100, 0, 4_000) / 2)


def test_batch_of_a_tiered_model_without_a_batch_price_is_the_librarys_call_halved() -> None:
    standard = Rates("gpt-5.4", 0.0, 0.0, 0.0, tiered=True)  # rates ignored: the library prices it
    halved = batch_of(standard, None, None)
    assert halved.cost(300_000, 100) == pytest.approx(library("gpt-5.4", 300_000, 100) / 2)


def test_the_batch_rule_in_order_own_variant_then_flex_then_half() -> None:
    standard = Rates("m", 2e-6, 1e-6, 8e-6)
    own = Rates("m", 1e-6, 1e-6, 4e-6, source=BATCH)
    flex = Rates("m", 0.9e-6, 0.1e-6, 3e-6, tier=FLEX, source=FLEX)
    assert batch_of(standard, own, flex) == Rates("m", 1e-6, 1e-6, 4e-6, tier=BATCH, source=BATCH)
    # a variant that changes nothing is no batch price (an empty one: gpt-3.5-turbo-1106's)
    same = Rates("m", 2e-6, 1e-6, 8e-6, source=BATCH)
    assert batch_of(standard, same, flex) == Rates("m", 0.9e-6, 0.1e-6, 3e-6, tier=BATCH, source=FLEX)
    assert batch_of(standard, None, flex).source == FLEX
    assert batch_of(standard, None, None) == Rates("m", 1e-6, 0.5e-6, 4e-6, tier=BATCH, factor=0.5)


def test_an_answer_at_a_tier_priced_apart_is_keyed_by_it() -> None:
    assert price_key("gpt-4o-mini", BATCH) == ("gpt-4o-mini", BATCH)
    assert price_key("gpt-5-mini", FLEX) == ("gpt-5-mini", FLEX)
    assert price_key("gpt-4o-mini", "default") == "gpt-4o-mini"
    assert estimate_cost_usd({("gpt-4o-mini", BATCH): (1_000_000, 1_000_000)}) == pytest.approx(0.375)


def test_prices_work_with_no_network_and_never_fetch_updates() -> None:
    # A fresh interpreter where any connection attempt fails: the prices still load, from the package
    script = (
        "import socket\n"
        "def refuse(*a, **k): raise OSError('no network in this test')\n"
        "socket.socket.connect = refuse\n"
        "socket.create_connection = refuse\n"
        "from promptdrop.prices import cost_usd\n"
        "assert abs(cost_usd('gpt-4o-mini', 1_000_000, 1_000_000) - 0.75) < 1e-9\n"
        "from genai_prices import data_snapshot\n"
        "assert data_snapshot._custom_snapshot is None, 'prices were updated from the network'\n"
        "import threading\n"
        "assert threading.active_count() == 1, 'a background updater is running'\n"
        "print('ok')\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={"PYTHONPATH": str(ROOT / "functions"), "PATH": "/usr/bin:/bin"},
        check=False,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"
