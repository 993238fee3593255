"""Every accepted event shape, fed from the same sample files `sam local invoke -e` uses."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest

from infra.local_lambda import LocalContext
from tests.integration.conftest import Pipeline

EVENTS = Path(__file__).parents[2] / "infra" / "events"
KEY = "inputs/sample prompts.jsonl"  # the sample events carry it URL-encoded


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


def test_sqs_wrapped_notification_and_test_event(uploaded: Pipeline) -> None:
    assert uploaded.invoke(sample_event("sqs-s3-test-event.json", uploaded.bucket)) == {"batchItemFailures": []}
    assert uploaded.invoke(sample_event("sqs-s3-notification.json", uploaded.bucket)) == {"batchItemFailures": []}
    assert [r["custom_id"] for r in uploaded.jsonl(KEY, ".out.jsonl")] == ["line-1", "line-2", "line-3"]


def test_an_unrecognized_message_is_acknowledged_not_retried_forever(pipeline: Pipeline) -> None:
    event = sample_event("sqs-s3-test-event.json", pipeline.bucket)
    event["Records"][0]["body"] = json.dumps({"hello": "world"})
    assert pipeline.invoke(event) == {"batchItemFailures": []}


def test_near_the_deadline_the_message_is_reported_failed_and_the_redelivery_finishes(pipeline: Pipeline) -> None:
    # Given an upload whose notification is delivered when the invocation has less time left than the margin
    key = "inputs/late.jsonl"
    pipeline.put(key, "\n".join(json.dumps({"prompt": f"late {i}"}) for i in range(4)))
    event = sample_event("sqs-s3-notification.json", pipeline.bucket)
    event["Records"][0]["body"] = event["Records"][0]["body"].replace("inputs%2Fsample+prompts.jsonl", key)
    almost_out = LocalContext(deadline=time.monotonic() + 30)  # margin is 60 s

    # When it runs, nothing is dispatched and the message is handed back for redelivery
    response = pipeline.invoke(event, almost_out)
    assert response == {"batchItemFailures": [{"itemIdentifier": event["Records"][0]["messageId"]}]}
    assert pipeline.times_seen("late 0") == 0

    # Then the redelivery (with time to spare) finishes the job
    assert pipeline.invoke(event) == {"batchItemFailures": []}
    assert [r["custom_id"] for r in pipeline.jsonl(key, ".out.jsonl")] == [f"line-{i}" for i in range(1, 5)]


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
