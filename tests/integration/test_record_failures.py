"""When recording fails mid-run (a journal write, a dead-letter send), the invocation ends at once
with its message handed back — never hung until Lambda's timeout — and the redelivery loses nothing.
"""

from __future__ import annotations

import json

from tests.integration.conftest import Pipeline

KEY = "inputs/record-failures.jsonl"
LINES = 40


def prompt(i: int) -> str:
    return f"question {i} [[fail:400]]" if i == 5 else f"question {i}"


def test_a_dead_letter_send_that_fails_hands_the_message_back_and_the_redelivery_loses_nothing(
    pipeline: Pipeline,
) -> None:
    # Given a file whose fifth line the API refuses, and a dead-letter queue that refuses messages
    pipeline.put(KEY, "\n".join(json.dumps({"prompt": prompt(i)}) for i in range(1, LINES + 1)))
    (notification,) = [m for m in pipeline.receive_work(2) if "TestEvent" not in m["Body"]]
    dlq_name = pipeline.stack.dlq_url.rsplit("/", 1)[1]
    pipeline.sqs.delete_queue(QueueUrl=pipeline.stack.dlq_url)

    # When the handler runs the upload (under the test's timeout: a hang would fail it here)
    event = pipeline.sqs_event(notification)
    response = pipeline.invoke(event)

    # Then the run ended with its message handed back and the job still open, not half-written
    assert response == {"batchItemFailures": [{"itemIdentifier": notification["MessageId"]}]}
    assert pipeline.summary_missing(KEY)

    # And once the queue is back, the redelivery finishes the job: every line exactly once
    pipeline.sqs.create_queue(QueueName=dlq_name)
    assert pipeline.invoke(event) == {"batchItemFailures": []}
    summary = pipeline.summary(KEY)
    assert (summary["status"], summary["counts"]) == ("PARTIAL", {"total": LINES, "succeeded": LINES - 1, "failed": 1})
    assert [r["custom_id"] for r in pipeline.jsonl(KEY, ".out.jsonl")] == [
        f"line-{i}" for i in range(1, LINES + 1) if i != 5
    ]
    assert [r["custom_id"] for r in pipeline.jsonl(KEY, ".errors.jsonl")] == ["line-5"]
    letters = pipeline.dlq()
    assert [(m["kind"], m["custom_id"], m["error"]["status_code"]) for m in letters] == [
        ("prompt_failure", "line-5", 400)
    ]
