"""Every accepted event shape, fed from the same sample files `sam local invoke -e` uses."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from infra.event_source import LocalContext
from tests.integration.conftest import Pipeline

EVENTS = Path(__file__).parents[2] / "infra" / "events"
KEY = "inputs/sample prompts.jsonl"  # URL-encoded in the S3 notifications, as is in the EventBridge event


def sample_event(name: str, bucket: str) -> dict[str, Any]:
    event: dict[str, Any] = json.loads((EVENTS / name).read_text().replace("REPLACE-WITH-INPUT-BUCKET", bucket))
    return event


@pytest.fixture
def uploaded(pipeline: Pipeline) -> Pipeline:
    pipeline.put(KEY, "\n".join(json.dumps({"prompt": f"sample {i}"}) for i in range(3)))
    pipeline.drain()  # the upload's own notification; the tests below deliver it again in other shapes
    return pipeline


@pytest.mark.parametrize("name", ["s3-put.json", "eventbridge-object-created.json"])
def test_direct_s3_and_eventbridge_events_name_the_same_job(uploaded: Pipeline, name: str) -> None:
    response = uploaded.invoke(sample_event(name, uploaded.bucket))
    (job,) = response["jobs"]
    assert (job["bucket"], job["key"]) == (uploaded.bucket, KEY)
    assert job["status"] == "SKIPPED"  # the same upload: already answered, no API call made
    assert uploaded.times_seen("sample 0") == 1


def test_eventbridge_keys_are_taken_as_they_are_not_url_decoded(pipeline: Pipeline) -> None:
    key = "inputs/c++ notes 100%.jsonl"
    pipeline.put(key, json.dumps({"prompt": "plus"}))
    event = sample_event("eventbridge-object-created.json", pipeline.bucket)
    event["detail"]["object"]["key"] = key
    (job,) = pipeline.invoke(event)["jobs"]
    assert (job["key"], job["status"]) == (key, "SUCCEEDED")
    assert pipeline.times_seen("plus") == 1


def test_sqs_wrapped_notification_and_test_event(uploaded: Pipeline) -> None:
    assert uploaded.invoke(sample_event("sqs-s3-test-event.json", uploaded.bucket)) == {"batchItemFailures": []}
    assert uploaded.invoke(sample_event("sqs-s3-notification.json", uploaded.bucket)) == {"batchItemFailures": []}
    assert [r["custom_id"] for r in uploaded.jsonl(KEY, ".out.jsonl")] == ["line-1", "line-2", "line-3"]


def test_an_unrecognized_message_is_acknowledged_not_retried_forever(pipeline: Pipeline) -> None:
    event = sample_event("sqs-s3-test-event.json", pipeline.bucket)
    event["Records"][0]["body"] = json.dumps({"hello": "world"})
    assert pipeline.invoke(event) == {"batchItemFailures": []}


class CountdownContext(LocalContext):
    """A Lambda context whose deadline arrives after a set number of looks at the clock."""

    def __init__(self, looks: int) -> None:
        super().__init__()
        self.looks = looks

    def get_remaining_time_in_millis(self) -> int:
        self.looks -= 1
        return 900_000 if self.looks >= 0 else 1_000


def test_near_the_deadline_a_continuation_finishes_the_job_exactly(pipeline: Pipeline) -> None:
    # Given a 30-prompt file whose first invocation reaches its deadline after 10 dispatches
    key = "inputs/late.jsonl"
    prompts = [f"late {i}" for i in range(30)]
    pipeline.put(key, "\n".join(json.dumps({"prompt": p}) for p in prompts) + "\n{broken\n")
    pipeline.sqs.purge_queue(QueueUrl=pipeline.stack.work_queue_url)  # the upload's own notification
    event = sample_event("sqs-s3-notification.json", pipeline.bucket)
    event["Records"][0]["body"] = event["Records"][0]["body"].replace("inputs%2Fsample+prompts.jsonl", key)

    # When it runs: it stops dispatching, lets in-flight calls finish and queues a continuation
    assert pipeline.invoke(event, CountdownContext(looks=10)) == {"batchItemFailures": []}
    sent_first = sum(pipeline.times_seen(p) for p in prompts)
    assert sent_first == 10
    assert pipeline.summary_missing(key)

    # Then the continuation (from the work queue, through the handler) finishes the job
    assert pipeline.drain() == 1
    results = pipeline.jsonl(key, ".out.jsonl")
    assert [r["custom_id"] for r in results] == [f"line-{i}" for i in range(1, 31)]
    assert [e["custom_id"] for e in pipeline.jsonl(key, ".errors.jsonl")] == ["line-31"]
    assert all(pipeline.times_seen(p) == 1 for p in prompts)  # nothing asked twice
    assert pipeline.summary(key)["counts"] == {"total": 31, "succeeded": 30, "failed": 1}


def test_a_repeated_custom_id_after_a_continuation_point_still_fails_alone(pipeline: Pipeline) -> None:
    # Given a file whose line 20 reuses line 2's custom_id, stopped by its deadline in between
    key = "inputs/repeat-late.jsonl"
    lines = [json.dumps({"custom_id": f"r{i}", "prompt": f"repeat {i}"}) for i in range(1, 20)]
    lines.append(json.dumps({"custom_id": "r2", "prompt": "late repeat"}))
    pipeline.put(key, "\n".join(lines))
    pipeline.sqs.purge_queue(QueueUrl=pipeline.stack.work_queue_url)
    event = sample_event("sqs-s3-notification.json", pipeline.bucket)
    event["Records"][0]["body"] = event["Records"][0]["body"].replace("inputs%2Fsample+prompts.jsonl", key)
    assert pipeline.invoke(event, CountdownContext(looks=5)) == {"batchItemFailures": []}

    # When the continuation finishes the file
    assert pipeline.drain() == 1

    # Then the repeat is in the errors file with its reason — not silently skipped as "answered"
    (error,) = pipeline.jsonl(key, ".errors.jsonl")
    assert (error["custom_id"], error["error"]["message"]) == ("r2", "custom_id 'r2' is already used by line 2")
    assert [r["custom_id"] for r in pipeline.jsonl(key, ".out.jsonl")] == [f"r{i}" for i in range(1, 20)]
    assert pipeline.times_seen("late repeat") == 0
    assert pipeline.summary(key)["counts"] == {"total": 20, "succeeded": 19, "failed": 1}


def test_a_continuation_of_a_replaced_file_fails_its_job_and_the_new_upload_runs(pipeline: Pipeline) -> None:
    # Given a job stopped by its deadline, with a continuation queued
    key = "inputs/replaced.jsonl"
    pipeline.put(key, "\n".join(json.dumps({"prompt": f"old {i}"}) for i in range(20)))
    pipeline.sqs.purge_queue(QueueUrl=pipeline.stack.work_queue_url)
    event = sample_event("sqs-s3-notification.json", pipeline.bucket)
    event["Records"][0]["body"] = event["Records"][0]["body"].replace("inputs%2Fsample+prompts.jsonl", key)
    assert pipeline.invoke(event, CountdownContext(looks=5)) == {"batchItemFailures": []}

    # When the file is replaced before the continuation runs (its notification queued behind it)
    pipeline.put(key, "\n".join(json.dumps({"prompt": f"new {i}"}) for i in range(3)))
    pipeline.drain()

    # Then the old job fails with the reason — no retry loop, no mix of old and new lines — and the
    # new upload is a job of its own whose outputs hold the new lines only
    (failure,) = [m for m in pipeline.dlq() if m["kind"] == "file_failure"]
    assert failure["error"]["code"] == "object_changed"
    assert all(pipeline.times_seen(f"old {i}") == 0 for i in range(5, 20))
    assert [r["custom_id"] for r in pipeline.jsonl(key, ".out.jsonl")] == ["line-1", "line-2", "line-3"]
    summary = pipeline.summary(key)
    assert (summary["status"], summary["counts"]["total"]) == ("SUCCEEDED", 3)
    assert summary["job_id"] != failure["job_id"]


def test_a_bad_api_key_stops_the_job_instead_of_burning_through_the_file(pipeline: Pipeline) -> None:
    # Given a wrong key in the secret
    pipeline.stack_secret("sk-wrong")
    key = "inputs/doomed.jsonl"
    pipeline.put(key, "\n".join(json.dumps({"prompt": f"doomed {i}"}) for i in range(200)))

    # When the file runs
    pipeline.drain()

    # Then only what was in flight reached the API, the job failed, and the DLQ says why
    assert pipeline.server.stats()["requests"] <= 8 + 1  # the concurrency, plus one
    summary = pipeline.summary(key)
    assert summary["status"] == "FAILED"
    messages = pipeline.dlq()
    file_failures = [m for m in messages if m["kind"] == "file_failure"]
    assert [m["error"]["code"] for m in file_failures] == ["invalid_api_key"]
    assert "not attempted" in file_failures[0]["error"]["message"]
    assert all(m["error"]["code"] == "invalid_api_key" for m in messages if m["kind"] == "prompt_failure")
