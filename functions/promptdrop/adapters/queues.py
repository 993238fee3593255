"""SQS: dead-letter messages for failures, and messages to the work queue."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING

from ..messages import MAX_BODY_BYTES, FileFailure, PromptFailure, UnitMessage

if TYPE_CHECKING:
    from types_aiobotocore_sqs import SQSClient

__all__ = ["BATCH_MAX_BYTES", "BATCH_MAX_MESSAGES", "MAX_DELAY_S", "MessageSender", "QueueSendError", "batches"]

# SendMessageBatch takes at most 10 messages, and at most 256 KiB in all (the sum of their bodies):
# ten dead letters of 240 KB each are ten batches, not one SQS refuses whole.
BATCH_MAX_MESSAGES = 10
BATCH_MAX_BYTES = 262_144
MAX_DELAY_S = 900  # SQS's longest DelaySeconds: 15 minutes


class QueueSendError(Exception):
    """Some messages could not be sent even after retrying (they must not be dropped silently)."""


def batches(bodies: Sequence[str]) -> Iterator[list[str]]:
    """``bodies`` in order, cut into batches SQS accepts: at most 10 of them and 256 KiB in all. Every
    body is at most ``messages.MAX_BODY_BYTES`` (each message's ``dump`` trims it), so each fits alone."""
    batch: list[str] = []
    size = 0
    for body in bodies:
        length = len(body.encode())
        if length > MAX_BODY_BYTES:
            raise ValueError(f"a message body of {length:,} bytes: messages.dump keeps it under {MAX_BODY_BYTES:,}")
        if batch and (len(batch) == BATCH_MAX_MESSAGES or size + length > BATCH_MAX_BYTES):
            yield batch
            batch, size = [], 0
        batch.append(body)
        size += length
    if batch:
        yield batch


class MessageSender:
    """Sends messages in batches SQS accepts (:func:`batches`), retrying the entries SQS reports as failed."""

    def __init__(self, client: SQSClient) -> None:
        self._sqs = client

    async def send(
        self,
        queue_url: str,
        messages: Sequence[UnitMessage | PromptFailure | FileFailure],
        *,
        delay_s: int = 0,
        attempts: int = 3,
    ) -> None:
        """``delay_s``: each message is hidden that long first (SQS's DelaySeconds: at most 900)."""
        delay = min(max(delay_s, 0), MAX_DELAY_S)
        for batch in batches([m.dump() for m in messages]):
            pending = {str(i): body for i, body in enumerate(batch)}
            for attempt in range(attempts):
                if attempt:
                    await asyncio.sleep(0.1 * 2**attempt)  # entries SQS failed for its own reasons: back off
                response = await self._sqs.send_message_batch(
                    QueueUrl=queue_url,
                    Entries=[{"Id": i, "MessageBody": body, "DelaySeconds": delay} for i, body in pending.items()],
                )
                pending = {f["Id"]: pending[f["Id"]] for f in response.get("Failed", []) if not f.get("SenderFault")}
                if not pending:
                    break
            failed = response.get("Failed", [])
            if failed:
                reasons = "; ".join(f"{f.get('Code')}: {f.get('Message')}" for f in failed)
                raise QueueSendError(f"{len(failed)} message(s) not accepted by {queue_url}: {reasons}")
