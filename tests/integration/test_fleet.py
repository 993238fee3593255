"""Shards of one file, each in its own process, share one rate-limited account and keep the promise.

The fake OpenAI API enforces one requests/min limit over one-second windows for everyone, as an
OpenAI organization does for a model; the invocations are separate processes running the real
handler (``infra.invoke``) against one moto server, as parallel Lambda invocations would. The
assertions are counts: every prompt answered once, none failed, few 429s — never a time.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from infra.fake_openai import FakeOpenAIConfig, RunningFakeOpenAI, serve_in_thread
from infra.local_aws import LocalAws
from tests.integration.conftest import API_KEY, Pipeline, _pipeline

pytestmark = pytest.mark.slow  # minutes of waiting: handed to a worker first (tests/conftest.py)

RPM = 2400  # 40 a second, enforced over one-second windows
SHARDS = 4
PROMPTS = 480  # 12 s of the limit: long enough for the members to find each other


@pytest.fixture(scope="session")
def limited_fake_openai() -> Iterator[RunningFakeOpenAI]:
    config = FakeOpenAIConfig(require_api_key=API_KEY, rpm=RPM, burst_s=1, latency_ms=50, jitter_ms=10)
    with serve_in_thread(config) as server:
        yield server


@pytest.fixture
def fleet(
    local_aws: LocalAws, limited_fake_openai: RunningFakeOpenAI, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Pipeline]:
    yield from _pipeline(local_aws, limited_fake_openai, monkeypatch)


def run_sharded(p: Pipeline, key: str, prompts: list[str]) -> list[dict[str, Any]]:
    """Upload, split into shards, run every shard in its own process at once; the shards' responses."""
    body = "".join(json.dumps({"prompt": q, "max_tokens": 8}) + "\n" for q in prompts)
    p.configure(PROMPTDROP_SHARD_BYTES=str(len(body) // SHARDS + 1), PROMPTDROP_MAX_CONCURRENCY="32")
    p.put(key, body)
    p.drain(max_batches=2)  # the upload's notification: the file is split into shard messages
    shards = p.receive_work(SHARDS)
    assert p.sqs.receive_message(QueueUrl=p.stack.work_queue_url).get("Messages", []) == []
    p.server.reset()  # count from here: the shards' requests only
    runs = [p.spawn(p.sqs_event(message)) for message in shards]
    return [p.response(run) for run in runs]


def assert_answered_exactly_once(p: Pipeline, key: str, prompts: list[str]) -> None:
    results = p.jsonl(key, ".out.jsonl")
    assert [r["custom_id"] for r in results] == [f"line-{i}" for i in range(1, len(prompts) + 1)]
    assert p.jsonl(key, ".errors.jsonl") == []
    assert p.dlq() == []
    summary = p.summary(key)
    assert (summary["status"], summary["counts"]["failed"], summary["units"]) == ("SUCCEEDED", 0, SHARDS)
    answered = p.server.stats()["prompts_ok"]
    assert len(answered) == len(prompts)
    assert set(answered.values()) == {1}


def rate_limited_share(p: Pipeline, label: str) -> float:
    stats = p.server.stats()
    limited, requests = stats["status"].get("429", 0), stats["requests"]
    print(f"{label}: {limited} 429s of {requests} requests = {limited / requests:.2%}")
    return float(limited / requests)


def test_shards_that_learn_the_limit_share_it_and_lose_no_prompt(fleet: Pipeline) -> None:
    # Given a 480-prompt file cut into 4 shards and nothing configured: the limit is learned
    key = "inputs/fleet-learned.jsonl"
    prompts = [f"learned {i}" for i in range(PROMPTS)]
    # When the 4 shards run at once, in 4 processes
    responses = run_sharded(fleet, key, prompts)
    # Then every shard finished, every prompt was answered exactly once, none failed for rate
    # limiting, and the 429s stayed few: the members divided the learned limit among themselves
    assert responses == [{"batchItemFailures": []}] * SHARDS
    assert_answered_exactly_once(fleet, key, prompts)
    assert rate_limited_share(fleet, "limits learned, 4 shard processes") <= 0.05


def test_shards_given_the_accounts_limit_share_it_and_lose_no_prompt(fleet: Pipeline) -> None:
    # Given the account's limit configured once, for all invocations (not divided by hand)
    fleet.configure(PROMPTDROP_RPM=str(RPM))
    key = "inputs/fleet-configured.jsonl"
    prompts = [f"configured {i}" for i in range(PROMPTS)]
    responses = run_sharded(fleet, key, prompts)
    assert responses == [{"batchItemFailures": []}] * SHARDS
    assert_answered_exactly_once(fleet, key, prompts)
    assert rate_limited_share(fleet, "limits configured, 4 shard processes") <= 0.05


def test_without_sharing_the_limit_429s_slow_the_shards_down_but_fail_no_prompt(fleet: Pipeline) -> None:
    # Given shards that do not share the budget (each believes it has the whole limit)
    fleet.configure(PROMPTDROP_SHARE_LIMITS="false")
    key = "inputs/fleet-greedy.jsonl"
    prompts = [f"greedy {i}" for i in range(PROMPTS)]
    responses = run_sharded(fleet, key, prompts)
    # Then they collect 429s, which slow them down without spending attempts: nothing is lost
    assert responses == [{"batchItemFailures": []}] * SHARDS
    assert_answered_exactly_once(fleet, key, prompts)
    rate_limited_share(fleet, "not shared, 4 shard processes")
