"""The handler's SQS contract, offline: partial batch failures, each event shape, the delivery count,
and every work item reaching the runner's entry point for it (a real JobRunner over in-memory ports)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from promptdrop.events import (
    MAX_RECEIVE_COUNT,
    FileWork,
    Skip,
    SqsMessage,
    UnrecognizedEvent,
    WorkItem,
    parse_event,
    parse_message,
)
from promptdrop.handler import handle_sqs, run_work
from promptdrop.jobs import JobResult, RunStatus
from promptdrop.messages import FileFailure, PromptFailure, UnitMessage

from tests.unit.jobs.conftest import BUCKET, World, lines

TEMPLATE = Path(__file__).resolve().parents[2] / "template.yaml"


def sqs_record(message_id: str, body: Any, receive_count: int = 1) -> dict[str, Any]:
    return {
        "messageId": message_id,
        "eventSource": "aws:sqs",
        "body": body if isinstance(body, str) else json.dumps(body),
        "attributes": {"ApproximateReceiveCount": str(receive_count)},
    }


def s3_body(key: str, event: str = "ObjectCreated:Put") -> dict[str, Any]:
    return {
        "Records": [
            {"eventSource": "aws:s3", "eventName": event, "s3": {"bucket": {"name": "b"}, "object": {"key": key}}}
        ]
    }


def result(status: RunStatus) -> JobResult:
    return JobResult("j", "b", "k", status)


# -- partial batch failures -------------------------------------------------------------------------


def test_only_the_messages_that_must_come_back_are_reported_failed() -> None:
    # Given a batch: one that runs, one whose run fails on an AWS fault, one held by a live run,
    # one that never parses, and one stopped at the deadline with no work queue
    bodies = {
        "ok": s3_body("in/ok.jsonl"),
        "aws": s3_body("in/aws.jsonl"),
        "busy": s3_body("in/busy.jsonl"),
        "junk": "not json",
        "late": s3_body("in/late.jsonl"),
    }
    messages, _ = parse_event({"Records": [sqs_record(mid, body) for mid, body in bodies.items()]})
    assert messages is not None
    outcome = {
        "in/ok.jsonl": RunStatus.SUCCEEDED,
        "in/busy.jsonl": RunStatus.BUSY,
        "in/late.jsonl": RunStatus.UNFINISHED,
    }

    def run(items: list[WorkItem], last_delivery: bool) -> list[JobResult]:
        (item,) = items
        assert isinstance(item, FileWork)
        if item.key == "in/aws.jsonl":
            raise ConnectionError("DynamoDB unreachable")
        return [result(outcome[item.key])]

    # When the handler runs them, then the AWS fault, the busy and the unfinished come back; the junk is dropped
    assert handle_sqs(messages, run) == {
        "batchItemFailures": [{"itemIdentifier": "aws"}, {"itemIdentifier": "busy"}, {"itemIdentifier": "late"}]
    }


def test_the_last_delivery_is_known_from_the_receive_count() -> None:
    records = [
        sqs_record(f"m{n}", s3_body("in/x.jsonl"), receive_count=n)
        for n in (1, MAX_RECEIVE_COUNT - 1, MAX_RECEIVE_COUNT)
    ]
    messages, _ = parse_event({"Records": records})
    assert messages is not None
    seen: list[bool] = []

    def run(items: list[WorkItem], last_delivery: bool) -> list[JobResult]:
        seen.append(last_delivery)
        return [result(RunStatus.SUCCEEDED)]

    handle_sqs(messages, run)
    assert seen == [False, False, True]


def test_the_last_delivery_is_the_templates_max_receive_count() -> None:
    (count,) = re.findall(r"maxReceiveCount:\s*(\d+)", TEMPLATE.read_text())
    assert int(count) == MAX_RECEIVE_COUNT


def test_a_record_without_a_receive_count_is_a_first_delivery() -> None:
    messages, _ = parse_event({"Records": [{"messageId": "m", "eventSource": "aws:sqs", "body": "{}"}]})
    assert messages == [SqsMessage("m", "{}", 1)]
    assert not messages[0].last_delivery


# -- event shapes ----------------------------------------------------------------------------------


def test_s3_notifications_are_url_decoded_and_only_creations_run() -> None:
    assert parse_message(SqsMessage("m", json.dumps(s3_body("in/a+b%25.jsonl")))) == [FileWork("b", "in/a b%.jsonl")]
    (skip,) = parse_message(SqsMessage("m", json.dumps(s3_body("in/a.jsonl", "ObjectRemoved:Delete"))))
    assert isinstance(skip, Skip)
    assert parse_message(SqsMessage("m", json.dumps({"Event": "s3:TestEvent"}))) == [Skip("s3:TestEvent")]


def test_eventbridge_keys_are_taken_as_they_are() -> None:
    body = {
        "source": "aws.s3",
        "detail-type": "Object Created",
        "detail": {"bucket": {"name": "b"}, "object": {"key": "in/a+b.jsonl"}},
    }
    assert parse_event(body) == (None, [FileWork("b", "in/a+b.jsonl")])


def test_the_functions_own_messages_become_their_work() -> None:
    unit = UnitMessage(job_id="j", bucket="b", key="k", etag="e", unit="shard-1", start=10)
    failure = PromptFailure(job_id="j", bucket="b", key="k", custom_id="c", line=3)
    file_failure = FileFailure(job_id="j", bucket="b", key="k")
    assert parse_message(SqsMessage("m", unit.dump())) == [unit]
    assert parse_message(SqsMessage("m", failure.dump())) == [failure]
    assert parse_message(SqsMessage("m", file_failure.dump())) == [FileWork("b", "k", redrive=True)]


@pytest.mark.parametrize(
    ("body", "why"),
    [
        ("{not json", "not JSON"),
        ("[1, 2]", "expected a JSON object"),
        ("[" * 100_000 + "]" * 100_000, "nested too deep"),
        (json.dumps({"kind": "unit", "job_id": "j"}), "malformed event"),
        (json.dumps({"hello": "world"}), "no accepted event shape"),
    ],
)
def test_a_body_of_no_accepted_shape_says_why(body: str, why: str) -> None:
    with pytest.raises(UnrecognizedEvent, match=why):
        parse_message(SqsMessage("m", body))


# -- message size ----------------------------------------------------------------------------------


def test_a_dead_letter_with_a_huge_prompt_keeps_its_reason_and_drops_the_body() -> None:
    huge = {"custom_id": "c", "method": "POST", "url": "/v1/chat/completions", "body": {"prompt": "x" * 400_000}}
    letter = PromptFailure(
        job_id="j", bucket="b", key="k", custom_id="c", line=7, request=huge, error={"code": "too_large"}
    )
    body = letter.dump()
    assert len(body.encode()) <= 250_000
    decoded = json.loads(body)
    assert decoded["request"] == {
        "custom_id": "c",
        "method": "POST",
        "url": "/v1/chat/completions",
        "body_truncated": True,
    }
    assert (decoded["line"], decoded["error"]["code"]) == (7, "too_large")


def test_a_dead_letter_that_fits_is_sent_whole() -> None:
    request = {"custom_id": "c", "method": "POST", "url": "/v1/chat/completions", "body": {"prompt": "hi"}}
    letter = PromptFailure(job_id="j", bucket="b", key="k", custom_id="c", line=1, request=request)
    assert json.loads(letter.dump())["request"] == request


# -- every work item reaches its entry point --------------------------------------------------------


async def test_each_work_item_runs_through_the_runners_entry_point_for_it() -> None:
    world = World()
    runner = world.runner()
    world.store.put(BUCKET, "in/a.jsonl", lines("one"))
    (first,) = await run_work(runner, [FileWork(BUCKET, "in/a.jsonl")], should_stop=lambda *_: False)
    assert first.status is RunStatus.SUCCEEDED

    # a redriven file failure of a finished job runs it again (nothing left to send)
    (again,) = await run_work(runner, [FileWork(BUCKET, "in/a.jsonl", redrive=True)], should_stop=lambda *_: False)
    assert again.status is RunStatus.SUCCEEDED
    assert world.api.prompts == ["one"]

    # a unit message of a finished unit, and a prompt failure of an answered prompt, send nothing
    unit = UnitMessage(job_id=first.job_id or "", bucket=BUCKET, key="in/a.jsonl", etag="e", unit="all")
    failure = PromptFailure(job_id=first.job_id or "", bucket=BUCKET, key="in/a.jsonl", custom_id="p1", line=1)
    results = await run_work(runner, [unit, failure], should_stop=lambda *_: False)
    assert [r.status for r in results] == [RunStatus.SUCCEEDED, RunStatus.SUCCEEDED]
    assert world.api.prompts == ["one"]
