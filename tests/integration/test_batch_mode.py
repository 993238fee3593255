"""The batch mode through the real handler, the openai SDK over HTTP to the fake's Batch API, and moto:
submitted per endpoint and model, waited on with delayed check messages, merged in input order at
half the price; an expired batch's rest sent in real time; the enqueued-token limit waited out; a
cancel that stops the provider's batches."""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import boto3
import pytest
from promptdrop.cli import main as cli
from promptdrop.jobs.batch_deadline import MARGIN_S

from infra.fake_openai import FakeOpenAIConfig, RunningFakeOpenAI, prompt_hash, serve_in_thread
from infra.local_aws import LocalAws
from tests.integration.conftest import API_KEY, Pipeline, _pipeline
from tests.integration.test_cli import Cli

BATCH = {"promptdrop-mode": "batch"}


def put(p: Pipeline, key: str, lines: list[dict[str, Any]], **metadata: str) -> None:
    body = "".join(json.dumps(line) + "\n" for line in lines)
    p.s3.put_object(Bucket=p.bucket, Key=key, Body=body.encode(), Metadata=metadata)


def until_done(p: Pipeline, key: str, *, timeout_s: float = 60) -> dict[str, Any]:
    """Play the event-source mapping — the delayed checks included — until the job's summary is written."""
    deadline = time.monotonic() + timeout_s
    while p.summary_missing(key):
        assert time.monotonic() < deadline, f"{key} not finished in {timeout_s} s"
        p.drain(idle_polls=1)
        time.sleep(0.3)
    return p.summary(key)


def prompts(n: int, model: str = "gpt-4o-mini", **extra: Any) -> list[dict[str, Any]]:
    return [{"custom_id": f"q{i}", "model": model, "prompt": f"question {i}", **extra} for i in range(n)]


def batch_runs(p: Pipeline, text: str) -> int:
    return int(p.server.stats()["batch_prompts"].get(prompt_hash(text), 0))


# The fake API's Batch API, as each test needs it: a window that closes after two lines of each batch;
# room for one small batch's tokens at a time, each line taking half a second (the first batch still
# runs while the others are created, however slow the machine); lines that take 0.4 s each; batches of
# two requests at most.
PROVIDERS: dict[str, dict[str, Any]] = {
    "expiring": {"batch_expire_after": 2},
    "scarce": {"batch_enqueued_tokens": 400, "batch_line_s": 0.5},
    "slow": {"batch_line_s": 0.4},
    "small": {"batch_max_requests": 2},  # a provider that takes fewer requests a batch than promptdrop sends
}


@pytest.fixture(scope="module")
def providers() -> Iterator[dict[str, RunningFakeOpenAI]]:
    with contextlib.ExitStack() as stack:
        config = {name: FakeOpenAIConfig(require_api_key=API_KEY, **given) for name, given in PROVIDERS.items()}
        yield {name: stack.enter_context(serve_in_thread(value)) for name, value in config.items()}


@pytest.fixture
def provider(
    request: pytest.FixtureRequest,
    local_aws: LocalAws,
    providers: dict[str, RunningFakeOpenAI],
    monkeypatch: pytest.MonkeyPatch,
    boto_session: boto3.Session,
) -> Iterator[Pipeline]:
    """The pipeline on one of :data:`PROVIDERS` (the test names it: ``indirect`` parametrization)."""
    yield from _pipeline(local_aws, providers[request.param], monkeypatch, boto_session)


def test_a_batch_file_is_answered_through_the_batch_api_at_half_the_price(pipeline: Pipeline) -> None:
    p = pipeline
    p.configure(PROMPTDROP_BATCH_POLL_S="1")
    # Given a file mixing two endpoints and two models, a repeated custom_id and a bad line
    lines = [
        *prompts(4),
        {"custom_id": "e1", "url": "/v1/embeddings", "body": {"model": "text-embedding-3-small", "input": "hi"}},
        {"custom_id": "big", "model": "gpt-4o", "prompt": "a bigger model"},
        {"custom_id": "q1", "prompt": "a repeat"},
        {"custom_id": "bad"},
    ]
    put(p, "inputs/b.jsonl", lines, **BATCH)
    put(p, "inputs/now.jsonl", lines)

    # When both run to the end
    summary, now = until_done(p, "inputs/b.jsonl"), until_done(p, "inputs/now.jsonl")

    # Then the batch file sent nothing in real time: three batches ran its lines, once each
    stats = p.server.stats()
    assert stats["batch_api"]["batches"] == {"completed": 3}
    assert all(batch_runs(p, f"question {i}") == 1 for i in range(4))
    assert p.times_seen("question 0") == 1  # the realtime file's call, not the batch file's
    # and its outputs are whole, in input order, the repeat and the bad line failed alone
    assert [r["custom_id"] for r in p.jsonl("inputs/b.jsonl", ".out.jsonl")] == ["q0", "q1", "q2", "q3", "e1", "big"]
    assert sorted(e["custom_id"] for e in p.jsonl("inputs/b.jsonl", ".errors.jsonl")) == ["bad", "q1"]
    # and the files it uploaded, and the provider's output files, are deleted
    assert stats["batch_api"]["files"] == 0
    # billed at the batch tier: half the real-time file's cost for the same tokens
    assert summary["service_tiers"] == {"batch": 6}
    assert summary["tokens"] == now["tokens"]
    assert summary["estimated_cost_usd"] == pytest.approx(now["estimated_cost_usd"] / 2, abs=2e-6)


@pytest.mark.parametrize("provider", ["expiring"], indirect=True)
def test_an_expired_batch_keeps_what_it_finished_and_sends_the_rest_in_real_time(provider: Pipeline) -> None:
    p = provider
    p.configure(PROMPTDROP_BATCH_POLL_S="1")
    put(p, "inputs/exp.jsonl", prompts(5), **BATCH)

    summary = until_done(p, "inputs/exp.jsonl")

    # Then every line is answered exactly once: two by the batch, three in real time
    assert summary["status"] == "SUCCEEDED"
    ran = [(batch_runs(p, f"question {i}"), p.times_seen(f"question {i}")) for i in range(5)]
    assert ran == [(1, 0), (1, 0), (0, 1), (0, 1), (0, 1)]
    assert summary["service_tiers"] == {"batch": 2, "default": 3}
    assert set(summary["cost_by_tier"]) == {"batch", "standard"}
    assert [r["custom_id"] for r in p.jsonl("inputs/exp.jsonl", ".out.jsonl")] == [f"q{i}" for i in range(5)]


@pytest.mark.parametrize("provider", ["expiring"], indirect=True)
def test_under_fallback_fail_the_lines_an_expired_batch_left_fail_with_batch_expired(provider: Pipeline) -> None:
    p = provider
    p.configure(PROMPTDROP_BATCH_POLL_S="1", PROMPTDROP_FALLBACK="fail")
    put(p, "inputs/fail.jsonl", prompts(4), **BATCH)

    summary = until_done(p, "inputs/fail.jsonl")

    assert summary["status"] == "PARTIAL"
    assert all(p.times_seen(f"question {i}") == 0 for i in range(4))
    errors = p.jsonl("inputs/fail.jsonl", ".errors.jsonl")
    assert [(e["custom_id"], e["error"]["code"]) for e in errors] == [("q2", "batch_expired"), ("q3", "batch_expired")]
    letters = [m for m in p.dlq() if m["kind"] == "prompt_failure"]
    assert sorted(m["custom_id"] for m in letters) == ["q2", "q3"]
    assert all(m["request"]["body"]["model"] == "gpt-4o-mini" for m in letters)  # redrivable as they are


@pytest.mark.parametrize("provider", ["small"], indirect=True)
def test_a_batch_that_fails_validation_falls_back_for_all_its_lines(provider: Pipeline) -> None:
    p = provider
    p.configure(PROMPTDROP_BATCH_POLL_S="1")
    put(p, "inputs/refused.jsonl", prompts(4), **BATCH)

    summary = until_done(p, "inputs/refused.jsonl")

    # Then the provider failed the batch (too many requests), nothing of it ran, and every line went in
    # real time, once
    assert p.server.stats()["batch_api"]["batches"] == {"failed": 1}
    assert summary["status"] == "SUCCEEDED"
    assert summary["service_tiers"] == {"default": 4}
    assert all((batch_runs(p, f"question {i}"), p.times_seen(f"question {i}")) == (0, 1) for i in range(4))


@pytest.mark.parametrize("provider", ["scarce"], indirect=True)
def test_the_enqueued_token_limit_is_waited_out_not_failed(provider: Pipeline) -> None:
    p = provider
    p.configure(PROMPTDROP_BATCH_POLL_S="1", PROMPTDROP_BATCH_MAX_REQUESTS="2")
    put(p, "inputs/tok.jsonl", prompts(6, max_tokens=100), **BATCH)

    summary = until_done(p, "inputs/tok.jsonl", timeout_s=90)

    # Then some batches were refused for enqueued tokens, created again later, and every line answered once
    statuses = p.server.stats()["batch_api"]["batches"]
    assert statuses.get("failed", 0) >= 1
    assert statuses["completed"] == 3
    assert summary["status"] == "SUCCEEDED"
    assert all(batch_runs(p, f"question {i}") == 1 for i in range(6))


@pytest.mark.parametrize("provider", ["slow"], indirect=True)
def test_cancel_stops_the_providers_batches_at_once_and_keeps_what_they_finished(
    provider: Pipeline, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    p = provider
    monkeypatch.setenv("PROMPTDROP_BUCKET", p.bucket)
    # Given a batch job whose next check is a minute away
    p.configure(PROMPTDROP_BATCH_POLL_S="60")
    put(p, "inputs/stop.jsonl", prompts(10), **BATCH)
    p.drain(idle_polls=1)  # submitted: the check waits on the queue
    job = _job_id(p)

    # When the operator cancels it while the batch runs
    time.sleep(1.0)
    code, said = Cli(capsys).json("cancel", job)
    assert (code, said["batch_units_checked"]) == (0, 1)
    summary = until_done(p, "inputs/stop.jsonl", timeout_s=30)  # well before the minute is up

    # Then the provider's batch was cancelled, what it finished is kept (paid once), nothing sent in real time
    assert p.server.stats()["batch_api"]["batches"] == {"cancelled": 1}
    assert summary["status"] == "CANCELLED"
    kept = [r["custom_id"] for r in p.jsonl("inputs/stop.jsonl", ".out.jsonl")]
    assert 1 <= len(kept) < 10
    assert all(p.times_seen(f"question {i}") == 0 for i in range(10))
    assert all(batch_runs(p, f"question {i}") <= 1 for i in range(10))


def _job_id(p: Pipeline) -> str:
    """The newest job's id, from the table's jobs index as the CLI reads it."""
    found = p.ddb.scan(
        TableName=p.stack.table, FilterExpression="sk = :job", ExpressionAttributeValues={":job": {"S": "JOB"}}
    )
    (item,) = found["Items"]
    return str(item["pk"]["S"]).removeprefix("JOB#")


@pytest.mark.parametrize("provider", ["slow"], indirect=True)
def test_auto_batches_until_its_deadline_leaves_just_enough_time_then_sends_the_rest_flex(
    provider: Pipeline,
) -> None:
    p = provider
    p.configure(PROMPTDROP_BATCH_POLL_S="1", PROMPTDROP_RPM="6000")
    # Given an 80-line auto file due in 10 minutes and 8 seconds: 600 s of it are the margin kept for the
    # switch (jobs/batch_deadline.py), so its batch may run about 8 s of the 32 s it needs (0.4 s a line)
    due = datetime.now(UTC) + timedelta(seconds=MARGIN_S + 8)
    metadata = {"promptdrop-mode": "auto", "promptdrop-deadline": due.isoformat()}
    put(p, "inputs/auto.jsonl", prompts(80, model="gpt-5-mini"), **metadata)

    summary = until_done(p, "inputs/auto.jsonl")

    # Then the batch was cancelled at the switch point, and the lines it had not run went flex: each once
    assert p.server.stats()["batch_api"]["batches"] == {"cancelled": 1}
    tiers = summary["service_tiers"]
    assert set(tiers) == {"batch", "flex"}
    assert tiers["batch"] + tiers["flex"] == 80
    assert all(batch_runs(p, f"question {i}") + p.times_seen(f"question {i}") == 1 for i in range(80))
    # each way priced at its own rates
    assert set(summary["cost_by_tier"]) == {"batch", "flex"}
    assert summary["status"] == "SUCCEEDED"


@pytest.mark.parametrize("provider", ["slow"], indirect=True)
def test_status_shows_each_provider_batch_while_the_job_waits_and_submit_takes_the_mode(
    provider: Pipeline, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    p = provider
    monkeypatch.setenv("PROMPTDROP_BUCKET", p.bucket)
    p.configure(PROMPTDROP_BATCH_POLL_S="1")
    # Given a file submitted with --mode batch, and its first run (it submits and waits)
    file = tmp_path / "later.jsonl"
    file.write_text("".join(json.dumps(line) + "\n" for line in prompts(5)))
    assert cli(["submit", str(file), "--key", "inputs/later.jsonl", "--mode", "batch", "--fallback", "fail"]) == 0
    p.drain(idle_polls=1)
    job = _job_id(p)

    # When the operator asks for its status while the batch runs
    code, waiting = Cli(capsys).json("status", job)
    assert code == 0

    # Then it shows the provider's batch, its id, status and counts
    (batch,) = waiting["derived"]["provider_batches"]
    assert batch["batch_id"].startswith("batch_")
    assert batch["status"] in ("validating", "in_progress")
    assert (batch["requests"], batch["merged"]) == (5, False)

    # And once it is done, the batch is merged and the upload's mode and fallback were the ones submitted
    until_done(p, "inputs/later.jsonl")
    code, done = Cli(capsys).json("status", job)
    assert code == 0
    (batch,) = done["derived"]["provider_batches"]
    assert (batch["status"], batch["completed"], batch["merged"]) == ("completed", 5, True)
    metadata = p.s3.head_object(Bucket=p.bucket, Key="inputs/later.jsonl")["Metadata"]
    assert metadata == {"promptdrop-mode": "batch", "promptdrop-fallback": "fail"}
