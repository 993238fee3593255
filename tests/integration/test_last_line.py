"""The last line of defence through the real handler (issue 20): a run that fails in a way nobody
foresaw ends its job FAILED — outputs with what was answered, a ``file_failure`` saying why — on
the first delivery, instead of the same crash on every delivery and a job RUNNING forever."""

from __future__ import annotations

import json
from collections.abc import AsyncGenerator
from typing import Any

import pytest
from promptdrop.formats import Parsed
from promptdrop.jobs import source

from tests.integration.conftest import Pipeline

KEY = "inputs/crash.jsonl"
PROMPTS = [f"crash {i}" for i in range(1, 6)]


def broken_after(lines: int) -> Any:
    """The formats' stream parser, raising an error it was never meant to once ``lines`` are parsed."""
    real = source.parse_stream

    async def parse(*args: Any, **kwargs: Any) -> AsyncGenerator[Parsed]:
        produced = 0
        async for item in real(*args, **kwargs):
            if produced == lines:
                raise RecursionError("maximum recursion depth exceeded while decoding a JSON object")
            produced += 1
            yield item

    return parse


def test_an_unexpected_crash_ends_the_job_failed_with_its_outputs_and_a_dead_letter_then_redrives(
    pipeline: Pipeline, monkeypatch: pytest.MonkeyPatch
) -> None:
    p = pipeline
    # Given a parser with a bug that fails on the third line
    monkeypatch.setattr(source, "parse_stream", broken_after(2))
    p.put(KEY, "".join(json.dumps({"custom_id": f"c{i}", "prompt": t}) + "\n" for i, t in enumerate(PROMPTS, 1)))

    # When the upload's notification is delivered
    p.drain()

    # Then the first delivery ended the job: FAILED, the two answered lines in the outputs…
    summary = p.summary(KEY)
    assert (summary["status"], summary["counts"]["succeeded"]) == ("FAILED", 2)
    assert [r["custom_id"] for r in p.jsonl(KEY, ".out.jsonl")] == ["c1", "c2"]
    assert p.items(summary["job_id"])["JOB"]["status"] == "FAILED"
    # …each sent once (no redelivery ran the crash again), and one file_failure naming the error
    assert p.prompts_seen() == 2
    (letter,) = p.dlq()
    assert (letter["kind"], letter["job_id"], letter["error"]["code"]) == (
        "file_failure",
        summary["job_id"],
        "internal_error",
    )
    assert "RecursionError: maximum recursion depth exceeded" in letter["error"]["message"]
    assert "Traceback" not in letter["error"]["message"]

    # When the bug is fixed and the dead letter redriven (what `promptdrop redrive` does)
    monkeypatch.undo()
    p.sqs.send_message(QueueUrl=p.stack.work_queue_url, MessageBody=json.dumps(letter))
    p.drain()

    # Then the job finishes, sending only the lines not answered before
    summary = p.summary(KEY)
    assert (summary["status"], summary["counts"]["succeeded"]) == ("SUCCEEDED", 5)
    assert all(p.times_seen(prompt) == 1 for prompt in PROMPTS)
    assert p.dlq() == []
