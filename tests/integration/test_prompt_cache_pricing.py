"""Every token priced as billed (issue 17): prompt-cache reads and writes, as the answers report them, are
counted on each request item and in the summary and priced at the model's rates — through the real
handler and the fake OpenAI API's prompt cache (infra/fake_openai/prompt_cache.py)."""

from __future__ import annotations

import json

import pytest
from genai_prices import Usage, calc_price

from tests.integration.conftest import Pipeline

SYSTEM = "You answer questions about invoices, carefully and briefly. " * 100  # ~1,500 tokens: cached


def library_price(model: str, item: dict[str, object]) -> float:
    """What genai-prices itself says the request's tokens cost (not promptdrop's per-token arithmetic)."""
    usage = Usage(input_tokens=int(str(item["prompt_tokens"])), output_tokens=int(str(item["completion_tokens"])))
    usage.cache_read_tokens = int(str(item.get("cached_tokens", 0))) or None
    usage.cache_write_tokens = int(str(item.get("cache_write_tokens", 0))) or None
    return float(calc_price(usage, model_ref=model, provider_id="openai").total_price)


def test_prompt_cache_writes_and_reads_are_counted_and_priced_as_billed(pipeline: Pipeline) -> None:
    # Given three questions sharing a long system prompt, to a model that bills cache writes above its
    # input rate, sent one at a time (so the first writes the prefix the next two read)
    p = pipeline
    p.configure(PROMPTDROP_MAX_CONCURRENCY="1")
    model = "gpt-5.6-cyber"
    lines = [
        {
            "model": model,
            "max_tokens": 20,
            "messages": [{"role": "system", "content": SYSTEM}, {"role": "user", "content": q}],
        }
        for q in ("What is line 3?", "What is the total?", "Who is the supplier?")
    ]
    key = "inputs/cached-prompts.jsonl"
    p.put(key, "\n".join(json.dumps(line) for line in lines))

    # When it runs
    p.drain()

    # Then each item says what the prompt cache read and wrote: the first wrote, the others read
    summary = p.summary(key)
    assert summary["status"] == "SUCCEEDED"
    items = sorted(
        (item for sk, item in p.items(summary["job_id"]).items() if sk.startswith("REQ#")), key=lambda i: i["line"]
    )
    written = [int(item.get("cache_write_tokens", 0)) for item in items]
    read = [int(item.get("cached_tokens", 0)) for item in items]
    assert written[0] >= 1024
    assert read[0] == 0
    assert all(r >= 1024 for r in read[1:])
    # and the summary adds them up, and prices every request as genai-prices prices its tokens
    assert (summary["tokens"]["cache_write"], summary["tokens"]["cache_read"]) == (sum(written), sum(read))
    expected = sum(library_price(model, item) for item in items)
    assert summary["estimated_cost_usd"] == pytest.approx(expected, abs=2e-6)
    # the writes cost more than the same tokens as plain input would have
    plain = sum(library_price(model, {**item, "cache_write_tokens": 0}) for item in items)
    assert summary["estimated_cost_usd"] > plain
