"""Flex mode through the real handler and the fake OpenAI API: half the price where the model offers
the flex tier, refusals retried alone and then sent at the standard tier (or failed, if so set)."""

from __future__ import annotations

import json

import pytest
from promptdrop.prices import cost_usd

from tests.integration.conftest import Pipeline


def put(p: Pipeline, key: str, lines: list[dict[str, object]], **metadata: str) -> None:
    body = "\n".join(json.dumps(line) for line in lines)
    p.s3.put_object(Bucket=p.bucket, Key=key, Body=body.encode(), Metadata=metadata)


def job_id(p: Pipeline, key: str) -> str:
    value: str = p.summary(key)["job_id"]
    return value


def tiers(p: Pipeline, key: str) -> dict[str, str | None]:
    """Each request's custom_id → the service tier its item says it was served at."""
    items = p.items(job_id(p, key))
    return {item["custom_id"]: item.get("service_tier") for sk, item in items.items() if sk.startswith("REQ#")}


def test_the_same_file_in_flex_costs_half_of_realtime(pipeline: Pipeline) -> None:
    # Given the same ten gpt-5-mini prompts uploaded twice: once as is, once with promptdrop-mode=flex
    p = pipeline
    lines: list[dict[str, object]] = [
        {"custom_id": f"q{i}", "model": "gpt-5-mini", "prompt": f"question {i}", "max_tokens": 20} for i in range(10)
    ]
    put(p, "inputs/now.jsonl", lines)
    put(p, "inputs/later.jsonl", lines, **{"promptdrop-mode": "flex"})

    # When both run
    p.drain()

    # Then both are answered whole, the flex one at the flex tier, and it costs half
    now, later = p.summary("inputs/now.jsonl"), p.summary("inputs/later.jsonl")
    assert now["status"] == later["status"] == "SUCCEEDED"
    assert set(tiers(p, "inputs/now.jsonl").values()) == {"default"}
    assert set(tiers(p, "inputs/later.jsonl").values()) == {"flex"}
    assert later["tokens"] == now["tokens"]
    assert (now["service_tiers"], later["service_tiers"]) == ({"default": 10}, {"flex": 10})
    assert later["estimated_cost_usd"] == pytest.approx(now["estimated_cost_usd"] / 2, abs=1e-6)  # 6 decimals kept
    assert later["estimated_cost_usd"] < 0.6 * now["estimated_cost_usd"]
    assert p.server.stats()["service_tiers"] == {"default": 10, "flex": 10}
    # And the answers in the outputs say which tier served them, as the API gave them
    assert {line["response"]["body"]["service_tier"] for line in p.jsonl("inputs/later.jsonl", ".out.jsonl")} == {
        "flex"
    }


def test_refusals_are_retried_alone_then_fall_back_and_other_lines_keep_their_tier(pipeline: Pipeline) -> None:
    # Given a flex file mixing a line flex refuses twice, a line it always refuses, a model without a
    # flex tier, an embeddings line and a line naming its own tier
    p = pipeline
    lines: list[dict[str, object]] = [
        {"custom_id": "busy", "model": "gpt-5-mini", "prompt": "busy [[flex_unavailable:x2]]"},
        {"custom_id": "full", "model": "gpt-5-mini", "prompt": "full [[flex_unavailable]]"},
        {"custom_id": "no-flex", "model": "gpt-4o-mini", "prompt": "an older model"},
        {"custom_id": "vector", "endpoint": "/v1/embeddings", "prompt": "embed me"},
        {"custom_id": "own", "model": "gpt-5-mini", "prompt": "my tier", "service_tier": "default"},
        {"custom_id": "resp", "endpoint": "/v1/responses", "model": "o4-mini", "prompt": "a response"},
    ]
    key = "inputs/mixed.jsonl"
    put(p, key, lines, **{"promptdrop-mode": "flex"})

    # When it runs
    p.drain()

    # Then every line is answered; the refused ones waited alone (no rate-limit 429s), the one flex
    # never served went at the standard tier after PROMPTDROP_FLEX_ATTEMPTS (3) refusals
    summary = p.summary(key)
    assert summary["status"] == "SUCCEEDED", summary
    assert tiers(p, key) == {
        "busy": "flex",
        "full": "default",
        "no-flex": "default",
        "vector": None,  # embeddings answers name no tier
        "own": "default",
        "resp": "flex",
    }
    stats = p.server.stats()
    assert stats["flex_unavailable"] == 2 + 3
    assert stats["rate_limited"] == 0
    assert p.dlq() == []
    # And the summary's cost prices each answer at the tier that served it
    items = p.items(job_id(p, key))
    expected = sum(
        cost_usd(item["model"], int(item["prompt_tokens"]), int(item["completion_tokens"]), 0, item.get("service_tier"))
        or 0.0
        for sk, item in items.items()
        if sk.startswith("REQ#")
    )
    assert summary["estimated_cost_usd"] == pytest.approx(expected, abs=1e-6)  # the summary keeps 6 decimals


def test_a_fallback_of_fail_fails_the_refused_line_alone_with_a_redrivable_dead_letter(pipeline: Pipeline) -> None:
    # Given flex set to fail rather than fall back, and one line flex always refuses
    p = pipeline
    p.configure(PROMPTDROP_MODE="flex", PROMPTDROP_FLEX_FALLBACK="fail", PROMPTDROP_FLEX_ATTEMPTS="2")
    lines: list[dict[str, object]] = [
        {"custom_id": "ok", "model": "gpt-5-nano", "prompt": "fine"},
        {"custom_id": "full", "model": "gpt-5-nano", "prompt": "full [[flex_unavailable]]"},
    ]
    key = "inputs/strict.jsonl"
    put(p, key, lines)

    # When it runs (the environment's mode: no metadata)
    p.drain()

    # Then the refused line fails alone with flex_unavailable, and its dead letter carries the line as written
    assert p.summary(key)["status"] == "PARTIAL"
    (error,) = p.jsonl(key, ".errors.jsonl")
    assert error["custom_id"] == "full"
    assert error["error"]["code"] == "flex_unavailable"
    (letter,) = p.dlq()
    assert letter["error"]["code"] == "flex_unavailable"
    assert "service_tier" not in letter["request"]["body"]
    assert p.server.stats()["flex_unavailable"] == 2


def test_an_unknown_mode_fails_the_file_with_its_reason(pipeline: Pipeline) -> None:
    p = pipeline
    key = "inputs/odd.jsonl"
    put(p, key, [{"prompt": "hello"}], **{"promptdrop-mode": "overnight"})
    p.drain()
    (letter,) = p.dlq()
    assert letter["kind"] == "file_failure"
    assert p.items(letter["job_id"])["JOB"]["status"] == "FAILED"
    assert letter["error"]["code"] == "invalid_mode"
    assert "realtime, flex" in letter["error"]["message"]
    assert p.server.stats()["requests"] == 0
