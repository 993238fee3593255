"""A request still answered 429 when its run reaches the deadline is handed to the continuation, not failed."""

from __future__ import annotations

import json

from infra.fake_openai import prompt_hash
from tests.integration.conftest import Pipeline
from tests.integration.test_events import CountdownContext, sample_event


def test_a_request_rate_limited_at_the_deadline_is_finished_by_the_continuation(pipeline: Pipeline) -> None:
    # Given a file whose line 2 is answered 429 forty times before it gets through, and an
    # invocation whose deadline arrives after it has taken three lines
    key = "inputs/limited-late.jsonl"
    prompts = ["first", "crowded [[fail:429x40]]", "third", "fourth", "fifth", "sixth"]
    pipeline.put(key, "".join(json.dumps({"prompt": q}) + "\n" for q in prompts))
    pipeline.sqs.purge_queue(QueueUrl=pipeline.stack.work_queue_url)
    event = sample_event("sqs-s3-notification.json", pipeline.bucket)
    event["Records"][0]["body"] = event["Records"][0]["body"].replace("inputs%2Fsample+prompts.jsonl", key)

    # When it runs: line 2 is still rate limited when the deadline comes
    assert pipeline.invoke(event, CountdownContext(looks=3)) == {"batchItemFailures": []}
    assert pipeline.summary_missing(key)
    assert pipeline.dlq() == []  # not failed: handed back, unanswered
    assert pipeline.server.stats()["prompts_ok"].get(prompt_hash(prompts[1]), 0) == 0
    assert pipeline.times_seen(prompts[1]) >= 1

    # Then the continuation resumes at line 2 (skipping line 3, answered meanwhile) and finishes the job
    assert pipeline.drain() == 1
    assert [r["custom_id"] for r in pipeline.jsonl(key, ".out.jsonl")] == [f"line-{i}" for i in range(1, 7)]
    assert pipeline.jsonl(key, ".errors.jsonl") == []
    summary = pipeline.summary(key)
    assert (summary["status"], summary["counts"]["failed"]) == ("SUCCEEDED", 0)
    answered = pipeline.server.stats()["prompts_ok"]
    assert set(answered.values()) == {1}
    assert len(answered) == len(prompts)
    assert pipeline.times_seen("crowded [[fail:429x40]]") == 41


def test_a_resumed_shard_skips_the_lines_its_first_run_answered(pipeline: Pipeline) -> None:
    # Given a file split into shards of about 1 KiB, whose line 2 is answered 429 forty times
    pipeline.configure(PROMPTDROP_SHARD_BYTES="1024")
    key = "inputs/limited-shards.jsonl"
    prompts = [f"sharded {i:02d}" for i in range(60)]
    prompts[1] = "crowded shard [[fail:429x40]]"
    pipeline.put(key, "".join(json.dumps({"prompt": q}) + "\n" for q in prompts))
    pipeline.drain(max_batches=2)  # the upload's notification: the file is planned, one message a shard
    shards = pipeline.receive_work(2)
    first = next(m for m in shards if json.loads(m["Body"])["first_line"] == 1)

    # When the first shard's run reaches its deadline after taking three lines (line 2 handed back)
    context = CountdownContext(looks=3)
    assert pipeline.invoke(pipeline.sqs_event(first), context) == {"batchItemFailures": []}
    assert pipeline.times_seen(prompts[2]) == 1

    # and the other shards run, then the first one's continuation (resuming at line 2)
    for shard in shards:
        if shard is not first:
            assert pipeline.invoke(pipeline.sqs_event(shard)) == {"batchItemFailures": []}
    assert pipeline.drain() == 1

    # Then line 3, answered by the first run, was skipped by the resumed shard: every prompt once
    assert [r["custom_id"] for r in pipeline.jsonl(key, ".out.jsonl")] == [f"line-{i}" for i in range(1, 61)]
    assert pipeline.summary(key)["counts"] == {"total": 60, "succeeded": 60, "failed": 0}
    assert set(pipeline.server.stats()["prompts_ok"].values()) == {1}
    assert all(pipeline.times_seen(q) == 1 for q in prompts if q is not prompts[1])
