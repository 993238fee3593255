"""SQS: dead-letter messages for failures, and messages to the work queue."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import TYPE_CHECKING

from ..messages import FileFailure, PromptFailure, UnitMessage

if TYPE_CHECKING:
    from types_aiobotocore_sqs import SQSClient

__all__ = ["MessageSender", "QueueSendError"]

_BATCH = 10  # SendMessageBatch's limit


class QueueSendError(Exception):
    """Some messages could not be sent even after retrying (they must not be dropped silently)."""


class MessageSender:
    """Sends messages in batches of 10, retrying the entries SQS reports as failed."""

    def __init__(self, client: SQSClient) -> None:
        self._sqs = client

    async def send(
        self, queue_url: str, messages: Sequence[UnitMessage | PromptFailure | FileFailure], *, attempts: int = 3
    ) -> None:
        bodies = [m.dump() for m in messages]
        for start in range(0, len(bodies), _BATCH):
            pending = {str(i): body for i, body in enumerate(bodies[start : start + _BATCH])}
            for attempt in range(attempts):
                if attempt:
                    await asyncio.sleep(0.1 * 2**attempt)  # entries SQS failed for its own reasons: back off
                response = await self._sqs.send_message_batch(
                    QueueUrl=queue_url,
                    Entries=[{"Id": i, "MessageBody": body} for i, body in pending.items()],
                )
                pending = {f["Id"]: pending[f["Id"]] for f in response.get("Failed", []) if not f.get("SenderFault")}
                if not pending:
                    break
            failed = response.get("Failed", [])
            if failed:
                reasons = "; ".join(f"{f.get('Code')}: {f.get('Message')}" for f in failed)
                raise QueueSendError(f"{len(failed)} message(s) not accepted by {queue_url}: {reasons}")
