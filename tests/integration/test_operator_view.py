"""What an operator sees and does: live progress, cancel and resume, the completion event, metrics
that count each run's own work, and the bound on continuations."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
from promptdrop.adapters.s3 import ObjectInfo
from promptdrop.cli import redrive
from promptdrop.jobs import make_job_id

from tests.integration.conftest import Pipeline
from tests.integration.test_events import CountdownContext

pytestmark = pytest.mark.slow  # minutes of waiting: handed to a worker first (tests/conftest.py)


def jsonl(prompts: list[str]) -> str:
    return "\n".join(json.dumps({"prompt": p}) for p in prompts)


def job_id_of(p: Pipeline, key: str) -> str:
    head = p.s3.head_object(Bucket=p.bucket, Key=key)
    return make_job_id(p.bucket, key, ObjectInfo(head["ETag"].strip('"'), head.get("VersionId"), 0))


def wait_for(predicate: Any, what: str, timeout_s: float = 60) -> Any:
    give_up = time.monotonic() + timeout_s
    while time.monotonic() < give_up:
        if value := predicate():
            return value
        time.sleep(0.05)
    raise AssertionError(f"gave up waiting for {what}")


def test_progress_rises_a_cancel_stops_the_job_and_a_redrive_finishes_it_paying_nothing_twice(
    slow_pipeline: Pipeline,
) -> None:
    # Given a 400-prompt file running in its own container (8 in flight, 100 ms a call)
    p = slow_pipeline
    key = "inputs/cancel-me.jsonl"
    prompts = [f"cancel {i}" for i in range(400)]
    p.put(key, jsonl(prompts))
    job_id = job_id_of(p, key)
    run = p.spawn(p.s3_event(key))

    # When an operator watches it, the job item's live figures rise while it runs
    def progress() -> int:
        return int(p.items(job_id).get("JOB", {}).get("progress_succeeded", 0))

    first = wait_for(progress, "the first progress report")
    later = wait_for(lambda: progress() > first and progress(), "a later progress report")
    assert 0 < first < later < 400
    assert p.items(job_id)["JOB"]["status"] == "RUNNING"

    # and cancels it (what `promptdrop cancel` writes)
    p.ddb.update_item(
        TableName=p.stack.table,
        Key={"pk": {"S": f"JOB#{job_id}"}, "sk": {"S": "JOB"}},
        UpdateExpression="SET cancel_requested_at = :now",
        ExpressionAttributeValues={":now": {"S": "2026-11-25T00:00:00Z"}},
    )

    # Then dispatch stops, in-flight calls are journaled, and the outputs hold what was done
    (result,) = p.response(run)["jobs"]
    assert result["status"] == "CANCELLED"
    summary = p.summary(key)
    done = summary["counts"]["succeeded"]
    assert summary["status"] == "CANCELLED"
    assert later <= done < 400
    assert len(p.jsonl(key, ".out.jsonl")) == done
    (letter,) = p.dlq_peek()
    assert (letter["kind"], letter["error"]["code"]) == ("file_failure", "cancelled")

    # And a redrive of that dead letter resumes the job: every prompt answered, none asked twice
    assert redrive(p.sqs, dlq_url=p.stack.dlq_url, work_queue_url=p.stack.work_queue_url) == {"file_failure": 1}
    p.drain()
    summary = p.summary(key)
    assert (summary["status"], summary["counts"]["succeeded"]) == ("SUCCEEDED", 400)
    assert [r["custom_id"] for r in p.jsonl(key, ".out.jsonl")] == [f"line-{i}" for i in range(1, 401)]
    assert all(p.times_seen(q) == 1 for q in prompts)


def emf(output: str, name: str) -> list[float]:
    """The values of one service-wide metric (dimension ``service`` alone) across the EMF blobs Powertools
    printed; the per-model and per-code lines (tests/integration/test_metrics.py) are other metrics."""
    values: list[float] = []
    for line in output.splitlines():
        if line.startswith("{") and '"_aws"' in line:
            blob = json.loads(line)
            if blob["_aws"]["CloudWatchMetrics"][0]["Dimensions"] == [["service"]]:
                values += blob.get(name, [])
    return values


def test_the_completion_event_is_published_once_per_outcome_and_metrics_count_each_runs_work(
    pipeline: Pipeline, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given a rule on the bus that delivers promptdrop's events to a queue, and a flaky second line
    p = pipeline
    p.configure(PROMPTDROP_EVENT_BUS="default", PROMPTDROP_MAX_ATTEMPTS="2")
    events_queue = p.sqs.create_queue(QueueName=f"{p.stack.stack_name}-events")["QueueUrl"]
    arn = p.sqs.get_queue_attributes(QueueUrl=events_queue, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    bus = p.events()
    bus.put_rule(Name=f"{p.stack.stack_name}-done", EventPattern=json.dumps({"source": ["promptdrop"]}))
    bus.put_targets(Rule=f"{p.stack.stack_name}-done", Targets=[{"Id": "q", "Arn": arn}])
    key = "inputs/announce.jsonl"
    p.put(key, jsonl(["one", "two [[fail:500x2]]", "three"]))

    # When it runs (line 2 fails both its attempts), is delivered again, then its failure is redriven
    capsys.readouterr()
    p.drain()
    first_run = capsys.readouterr().out
    p.invoke(p.s3_event(key))  # a redelivery: same outcome
    assert redrive(p.sqs, dlq_url=p.stack.dlq_url, work_queue_url=p.stack.work_queue_url) == {"prompt_failure": 1}
    capsys.readouterr()
    p.drain()
    redrive_run = capsys.readouterr().out

    # Then one event per outcome — PARTIAL, then SUCCEEDED — each with the summary as its detail
    received = p.sqs.receive_message(QueueUrl=events_queue, MaxNumberOfMessages=10, WaitTimeSeconds=1)["Messages"]
    events = [json.loads(m["Body"]) for m in received]
    assert [(e["source"], e["detail-type"]) for e in events] == [
        ("promptdrop", "Job Partial"),
        ("promptdrop", "Job Succeeded"),
    ]
    assert events[1]["detail"]["counts"] == {"total": 3, "succeeded": 3, "failed": 0}
    assert events[1]["detail"]["outputs"]["results"].endswith(f"results/{key}.out.jsonl")

    # And the metrics say what each run did: the redrive answered one prompt, not the whole file again
    assert (emf(first_run, "PromptsSucceeded"), emf(first_run, "PromptsFailed")) == ([2.0], [1.0])
    assert (emf(redrive_run, "PromptsSucceeded"), emf(redrive_run, "PromptsFailed")) == ([1.0], [0.0])


def test_a_unit_past_its_continuation_bound_fails_its_file_with_the_reason(pipeline: Pipeline) -> None:
    # Given a bound of one continuation, and runs that each reach their deadline after a few dispatches
    p = pipeline
    p.configure(PROMPTDROP_MAX_CONTINUATIONS="1")
    key = "inputs/endless.jsonl"
    p.put(key, jsonl([f"endless {i}" for i in range(30)]))

    # When the upload and its one continuation have run
    p.drain(context_factory=lambda: CountdownContext(looks=4))

    # Then the job fails with what was done in its outputs, and the dead letter says why and what to do
    summary = p.summary(key)
    assert summary["status"] == "FAILED"
    assert 0 < summary["counts"]["succeeded"] < 30
    (letter,) = [m for m in p.dlq() if m["kind"] == "file_failure"]
    assert letter["error"]["code"] == "too_many_continuations"
    assert "PROMPTDROP_MAX_CONTINUATIONS" in letter["error"]["message"]
