"""The OpenAI key never lands anywhere a user or an operator reads — and a key fixed in the secret
reaches a warm container without waiting for it to be recycled."""

from __future__ import annotations

import json

import pytest
from promptdrop.cli import redrive

from tests.integration.conftest import API_KEY, Pipeline

CANARY = "sk-canary-9f8e7d6c5b4a39281706"


def everything_written(p: Pipeline) -> str:
    """Every output object, journal item and dead letter of the stack, as one text."""
    texts: list[str] = []
    for obj in p.s3.list_objects_v2(Bucket=p.bucket, Prefix="results/").get("Contents", []):
        texts.append(p.s3.get_object(Bucket=p.bucket, Key=obj["Key"])["Body"].read().decode())
    texts += [json.dumps(item) for item in p.ddb.scan(TableName=p.stack.table)["Items"]]
    texts += [json.dumps(m) for m in p.dlq_peek()]
    return "\n".join(texts)


def test_a_wrong_key_echoed_by_the_api_is_never_stored_logged_or_dead_lettered(
    pipeline: Pipeline, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    # Given a wrong key in the secret (the API's 401 echoes its first 8 and last 4 characters)
    pipeline.stack_secret(CANARY)
    key = "inputs/canary.jsonl"
    pipeline.put(key, "\n".join(json.dumps({"prompt": f"canary {i}"}) for i in range(5)))

    # When the file runs and fails for it
    pipeline.drain()
    assert pipeline.summary(key)["status"] == "FAILED"

    # Then no part of the key is in the outputs, the journal, the DLQ or the logs
    written = everything_written(pipeline) + capsys.readouterr().out + caplog.text
    assert "Incorrect API key provided" in written  # the reason is kept…
    for part in (CANARY, CANARY[:8], CANARY[-4:]):
        assert part not in written  # …the key is not


def test_a_key_fixed_in_the_secret_is_read_again_after_a_401_by_the_warm_container(pipeline: Pipeline) -> None:
    # Given a job stopped by a wrong key
    pipeline.stack_secret("sk-wrong-0000000000000000")
    key = "inputs/fixed-key.jsonl"
    pipeline.put(key, "\n".join(json.dumps({"prompt": f"fixed {i}"}) for i in range(20)))
    pipeline.drain()
    assert pipeline.summary(key)["status"] == "FAILED"

    # When the key is fixed in the secret — the container is not recycled — and the file redriven
    pipeline.secrets.put_secret_value(SecretId=pipeline.stack.secret_arn, SecretString=API_KEY)
    redrive(pipeline.sqs, dlq_url=pipeline.stack.dlq_url, work_queue_url=pipeline.stack.work_queue_url)
    pipeline.drain()

    # Then the same warm container reads the new key and finishes the job
    summary = pipeline.summary(key)
    assert (summary["status"], summary["counts"]["succeeded"]) == ("SUCCEEDED", 20)
