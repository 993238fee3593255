"""Dead letters sent in batches SQS accepts: at most 10 messages and 256 KiB (262,144 bytes) a batch."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from promptdrop.adapters.queues import BATCH_MAX_BYTES, BATCH_MAX_MESSAGES, MessageSender, batches
from promptdrop.messages import MAX_BODY_BYTES, PromptFailure
from promptdrop.records import ErrorRecord


class SqsThatChecksBatches:
    """SendMessageBatch as SQS enforces it: a batch over 10 entries or 256 KiB in all is refused whole."""

    def __init__(self) -> None:
        self.batches: list[list[str]] = []

    async def send_message_batch(self, *, QueueUrl: str, Entries: list[dict[str, str]]) -> dict[str, Any]:
        bodies = [e["MessageBody"] for e in Entries]
        if len(bodies) > 10:
            raise RuntimeError("AWS.SimpleQueueService.TooManyEntriesInBatchRequest")
        if sum(len(b.encode()) for b in bodies) > 262_144:
            raise RuntimeError("AWS.SimpleQueueService.BatchRequestTooLong")
        self.batches.append(bodies)
        return {"Successful": [{"Id": e["Id"]} for e in Entries], "Failed": []}


def dead_letter(line: int, prompt_bytes: int) -> PromptFailure:
    body = {"model": "m", "messages": [{"role": "user", "content": "p" * prompt_bytes}]}
    return PromptFailure(
        job_id="j",
        bucket="b",
        key="k",
        custom_id=f"c{line}",
        line=line,
        request={"custom_id": f"c{line}", "method": "POST", "url": "/v1/chat/completions", "body": body},
        error=ErrorRecord("invalid_request_error", "http_400", "bad").as_dict(),
    )


def test_the_limits_are_sqs_own() -> None:
    assert (BATCH_MAX_MESSAGES, BATCH_MAX_BYTES) == (10, 256 * 1024)
    assert MAX_BODY_BYTES < BATCH_MAX_BYTES  # every message fits a batch alone


def test_ten_dead_letters_of_240_kb_go_one_a_batch() -> None:
    # Given ten dead letters of ~240 KB (ten long documents answered 400)
    letters = [dead_letter(i, 240_000) for i in range(10)]
    sqs = SqsThatChecksBatches()

    # When they are sent
    asyncio.run(MessageSender(sqs).send("q", letters))  # type: ignore[arg-type]

    # Then each batch is within 256 KiB, and every letter was sent once, in order
    assert len(sqs.batches) == 10
    sent = [PromptFailure.model_validate_json(body).line for batch in sqs.batches for body in batch]
    assert sent == list(range(10))


def test_small_messages_still_go_ten_a_batch() -> None:
    sqs = SqsThatChecksBatches()
    asyncio.run(MessageSender(sqs).send("q", [dead_letter(i, 10) for i in range(25)]))  # type: ignore[arg-type]
    assert [len(b) for b in sqs.batches] == [10, 10, 5]


def test_batches_fill_by_bytes_and_keep_order() -> None:
    bodies = ["a" * 100_000, "b" * 100_000, "c" * 100_000, "d" * 10, "e" * 200_000]
    cut = list(batches(bodies))
    assert [[b[0] for b in batch] for batch in cut] == [["a", "b"], ["c", "d"], ["e"]]
    assert all(sum(len(b) for b in batch) <= BATCH_MAX_BYTES for batch in cut)


def test_multibyte_text_is_counted_in_bytes() -> None:
    bodies = ["é" * 70_000] * 2  # 140,000 bytes each, 70,000 characters
    assert [len(batch) for batch in batches(bodies)] == [1, 1]


def test_a_dead_letter_too_large_alone_is_trimmed_before_it_is_batched() -> None:
    # A prompt of 1 MiB: the dead letter leaves its body out rather than exceed a message
    body = dead_letter(1, 1024 * 1024).dump()
    assert len(body.encode()) <= MAX_BODY_BYTES
    assert '"body_truncated":true' in body


def test_a_body_over_the_message_limit_is_a_bug_named_not_a_refused_batch() -> None:
    with pytest.raises(ValueError, match=r"messages\.dump keeps it under"):
        list(batches(["x" * (MAX_BODY_BYTES + 1)]))


def test_a_dead_letter_with_an_oversized_error_from_an_older_sender_still_fits() -> None:
    letter = dead_letter(1, 10).model_copy(update={"error": {"code": "c" * 300_000, "message": "m" * 300_000}})
    body = letter.dump()
    assert len(body.encode()) <= MAX_BODY_BYTES
    parsed = PromptFailure.model_validate_json(body)
    assert (parsed.custom_id, parsed.line, len(parsed.error["code"])) == ("c1", 1, 2_000)
    route = {"custom_id": "c1", "method": "POST", "url": "/v1/chat/completions"}
    assert parsed.request == route | {"body_truncated": True}
