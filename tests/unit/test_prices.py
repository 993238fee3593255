"""Prices from genai-prices: offline, cached input tokens at their own rate, unknown models named."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from genai_prices import Usage, calc_price
from promptdrop.prices import Rates, cost_usd, estimate_cost_usd, has_price, rates

ROOT = Path(__file__).parents[2]


def library(model: str, prompt: int, completion: int, cached: int = 0) -> float:
    usage = Usage(input_tokens=prompt, output_tokens=completion, cache_read_tokens=cached or None)
    return float(calc_price(usage, model_ref=model, provider_id="openai").total_price)


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
