"""Exactly once, resumable, scaled out: duplicates, races, shards, kills and redrives.

Each "Lambda container" here is a separate process running the real handler (``infra.invoke``),
against the same moto server and fake OpenAI API, as parallel invocations would in AWS.
"""

from __future__ import annotations

import json
import signal
import time

import pytest
from promptdrop.cli import redrive

from tests.integration.conftest import Pipeline

pytestmark = pytest.mark.slow  # minutes of waiting: handed to a worker first (tests/conftest.py)


def jsonl(prompts: list[str]) -> str:
    return "\n".join(json.dumps({"prompt": p}) for p in prompts) + "\n"


def test_two_deliveries_racing_answer_each_prompt_once(slow_pipeline: Pipeline) -> None:
    # Given an upload whose notification is delivered twice, to two containers at the same time
    p = slow_pipeline
    key = "inputs/race.jsonl"
    prompts = [f"race {i}" for i in range(40)]
    p.put(key, jsonl(prompts))
    first, second = p.spawn(p.s3_event(key)), p.spawn(p.s3_event(key))

    # When both run
    statuses = sorted(p.response(run)["jobs"][0]["status"] for run in (first, second))

    # Then one ran the file; the other stood aside (BUSY: the lease is taken; SKIPPED: already
    # finished), found the unit done while the first was still writing the outputs (HANDED_OFF: the
    # finalizer lease is the first's, whose outputs include everything) or only rebuilt the outputs
    # (the unit was done): the API saw each prompt once
    assert "SUCCEEDED" in statuses
    assert set(statuses) <= {"BUSY", "SKIPPED", "HANDED_OFF", "SUCCEEDED"}
    assert all(p.times_seen(q) == 1 for q in prompts)
    results = p.jsonl(key, ".out.jsonl")
    assert [r["custom_id"] for r in results] == [f"line-{i}" for i in range(1, 41)]


def test_a_sharded_file_runs_on_parallel_containers_with_exact_ordered_outputs(slow_pipeline: Pipeline) -> None:
    # Given shards of about 1 KiB and a 120-prompt file (a malformed line in the middle, and a
    # last line that reuses the first line's custom_id: the two fall in different shards)
    p = slow_pipeline
    p.configure(PROMPTDROP_SHARD_BYTES="1024")
    key = "inputs/big.jsonl"
    prompts = [f"shard prompt {i:03d}" for i in range(120)]
    lines = [json.dumps({"prompt": q}) for q in prompts]
    lines.insert(60, "{not json")
    lines.append(json.dumps({"custom_id": "line-1", "prompt": "a repeated custom_id"}))
    p.put(key, "\n".join(lines) + "\n")

    # When the upload's notification is handled, the file is split into shard messages
    p.drain(max_batches=2)
    messages = p.receive_work(4)
    assert {json.loads(m["Body"])["kind"] for m in messages} == {"unit"}
    more = p.sqs.receive_message(QueueUrl=p.stack.work_queue_url, MaxNumberOfMessages=10).get("Messages", [])
    shards = messages + more
    for extra in more:
        p.sqs.delete_message(QueueUrl=p.stack.work_queue_url, ReceiptHandle=extra["ReceiptHandle"])
    assert p.prompts_seen() == 0

    # and every shard runs in its own container at the same time
    runs = [p.spawn(p.sqs_event(message)) for message in shards]
    assert all(p.response(run) == {"batchItemFailures": []} for run in runs)

    # Then the last shard to finish wrote the outputs: every line once, in input order; the
    # repeated custom_id failed before any shard ran, so it was never sent
    results = p.jsonl(key, ".out.jsonl")
    expected = [f"line-{n}" for n in range(1, 122) if n != 61]
    assert [r["custom_id"] for r in results] == expected
    errors = p.jsonl(key, ".errors.jsonl")
    assert [e["custom_id"] for e in errors] == ["line-61", "line-1"]
    assert errors[1]["error"]["message"] == "custom_id 'line-1' is already used by line 1"
    assert p.times_seen("a repeated custom_id") == 0
    summary = p.summary(key)
    assert summary["counts"] == {"total": 122, "succeeded": 120, "failed": 2}
    assert summary["units"] == len(shards) >= 4
    assert all(p.times_seen(q) == 1 for q in prompts)


def test_a_killed_container_is_finished_by_the_redelivery_with_few_extra_calls(slow_pipeline: Pipeline) -> None:
    # Given a 200-prompt file (8 in flight, 100 ms a call) and a 1 s lease
    p = slow_pipeline
    p.configure(PROMPTDROP_LEASE_S="1")
    key = "inputs/killed.jsonl"
    prompts = [f"kill {i}" for i in range(200)]
    p.put(key, jsonl(prompts))
    run = p.spawn(p.s3_event(key))

    # When the container is killed (SIGKILL) mid-run
    deadline = time.monotonic() + 120  # a new process on a loaded machine may take long to start
    while p.server.stats()["ok"] < 40 and time.monotonic() < deadline:
        time.sleep(0.02)
    run.send_signal(signal.SIGKILL)
    run.wait(timeout=10)
    assert run.stdout is not None
    run.stdout.close()
    seen_before = p.prompts_seen()
    assert 40 <= seen_before < 200

    # and the event is delivered again once the dead run's lease has expired
    time.sleep(1.2)
    (job,) = p.response(p.spawn(p.s3_event(key)))["jobs"]

    # Then the job is exact, and only what was in flight (or answered but not yet journaled) was asked again
    assert job["status"] == "SUCCEEDED"
    results = p.jsonl(key, ".out.jsonl")
    assert [r["custom_id"] for r in results] == [f"line-{i}" for i in range(1, 201)]
    extra_calls = p.prompts_seen() - 200
    print(f"extra API calls after SIGKILL: {extra_calls} (concurrency 8)")
    assert 0 <= extra_calls <= 8  # a worker takes its next prompt only once its answer is journaled


def test_failures_redriven_after_the_fault_is_gone_flip_the_job_to_succeeded(pipeline: Pipeline) -> None:
    # Given a prompt that fails 3 times and a budget of 3 attempts
    p = pipeline
    p.configure(PROMPTDROP_MAX_ATTEMPTS="3")
    key = "inputs/redrive.jsonl"
    p.put(key, jsonl(["fine", "flaky [[fail:503x3]]", "also fine"]))
    p.drain()
    assert p.summary(key)["status"] == "PARTIAL"
    assert [e["custom_id"] for e in p.jsonl(key, ".errors.jsonl")] == ["line-2"]

    # When the dead-letter queue is redriven (the fault has passed) and the work queue drained
    moved = redrive(p.sqs, dlq_url=p.stack.dlq_url, work_queue_url=p.stack.work_queue_url)
    assert moved == {"prompt_failure": 1}
    p.drain()

    # Then the job flips to SUCCEEDED and the files are rewritten, one line per custom_id
    assert p.summary(key)["status"] == "SUCCEEDED"
    assert [r["custom_id"] for r in p.jsonl(key, ".out.jsonl")] == ["line-1", "line-2", "line-3"]
    assert p.jsonl(key, ".errors.jsonl") == []
    job = p.items(p.summary(key)["job_id"])["JOB"]
    assert (job["status"], job["succeeded"], job["failed"]) == ("SUCCEEDED", 3, 0)
    assert p.times_seen("fine") == 1
    assert p.dlq() == []


def test_failures_redriven_to_parallel_containers_all_land_in_the_outputs(pipeline: Pipeline) -> None:
    # Given a job of 300 prompts where 8 failed (3 failures each, 3 attempts allowed)
    p = pipeline
    p.configure(PROMPTDROP_MAX_ATTEMPTS="3", PROMPTDROP_MAX_CONCURRENCY="64")
    key = "inputs/many-redrives.jsonl"
    flaky = {i * 37 for i in range(8)}
    prompts = [f"flaky {i} [[fail:503x3]]" if i in flaky else f"steady {i}" for i in range(300)]
    p.put(key, jsonl(prompts))
    p.drain()
    assert p.summary(key)["counts"] == {"total": 300, "succeeded": 292, "failed": 8}

    # When the 8 failures are redriven and each runs in its own container at the same time
    assert redrive(p.sqs, dlq_url=p.stack.dlq_url, work_queue_url=p.stack.work_queue_url) == {"prompt_failure": 8}
    runs = [p.spawn(p.sqs_event(message)) for message in p.receive_work(8)]
    assert all(p.response(run) == {"batchItemFailures": []} for run in runs)

    # Then the outputs hold every answer — none lost to a rewrite from an older journal (the
    # finalizer lease, tests/integration/test_journal.py) — once each
    assert [r["custom_id"] for r in p.jsonl(key, ".out.jsonl")] == [f"line-{i}" for i in range(1, 301)]
    assert p.jsonl(key, ".errors.jsonl") == []
    summary = p.summary(key)
    assert (summary["status"], summary["counts"]) == ("SUCCEEDED", {"total": 300, "succeeded": 300, "failed": 0})
    job = p.items(summary["job_id"])["JOB"]
    assert (job["status"], job["succeeded"], job["failed"]) == ("SUCCEEDED", 300, 0)
    assert "fin_owner" not in job  # the finalizer lease was given up
    assert all(p.times_seen(prompts[i]) == 4 for i in flaky)


def test_a_job_stopped_by_a_bad_key_finishes_when_redriven_after_the_key_is_fixed(pipeline: Pipeline) -> None:
    p = pipeline
    p.stack_secret("sk-wrong")
    key = "inputs/fixme.jsonl"
    prompts = [f"fix {i}" for i in range(50)]
    p.put(key, jsonl(prompts))
    p.drain()
    assert p.summary(key)["status"] == "FAILED"

    p.stack_secret("sk-local-test")
    moved = redrive(p.sqs, dlq_url=p.stack.dlq_url, work_queue_url=p.stack.work_queue_url)
    assert moved["file_failure"] == 1
    p.drain()

    assert p.summary(key)["status"] == "SUCCEEDED"
    assert [r["custom_id"] for r in p.jsonl(key, ".out.jsonl")] == [f"line-{i}" for i in range(1, 51)]
    assert all(p.server.stats()["prompts_ok"].get(h, 0) == 1 for h in p.server.stats()["prompts_ok"])
