"""What journaling costs in DynamoDB calls, counted by the moto server itself."""

from __future__ import annotations

import json
import urllib.request

from tests.integration.conftest import Pipeline


def moto_calls(endpoint: str) -> dict[str, int]:
    with urllib.request.urlopen(f"{endpoint}/_local/calls") as response:
        calls: dict[str, int] = json.load(response)
        return calls


def test_a_run_paced_by_its_rate_limit_journals_its_answers_in_full_batches(pipeline: Pipeline) -> None:
    # Given 75 prompts, an account limit of 1,500 requests/min (25 a second) and more workers than
    # that pace keeps busy: most of them wait for admission at any moment
    pipeline.configure(PROMPTDROP_RPM="1500", PROMPTDROP_MAX_CONCURRENCY="60")
    key = "inputs/paced.jsonl"
    pipeline.put(key, "".join(json.dumps({"prompt": f"paced {i}"}) + "\n" for i in range(75)))
    before = moto_calls(pipeline.stack.endpoint)

    # When the file runs
    (job,) = pipeline.invoke(pipeline.s3_event(key))["jobs"]

    # Then every prompt is answered, and the answers were written many to a call: held up to a
    # second while the rate limit set the pace, not flushed every 100 ms two or three at a time
    # (which took about 30 calls here)
    assert (job["status"], job["succeeded"]) == ("SUCCEEDED", 75)
    assert [r["custom_id"] for r in pipeline.jsonl(key, ".out.jsonl")] == [f"line-{i}" for i in range(1, 76)]
    after = moto_calls(pipeline.stack.endpoint)
    batch_writes = after["DynamoDB.BatchWriteItem"] - before.get("DynamoDB.BatchWriteItem", 0)
    assert 3 <= batch_writes <= 8
