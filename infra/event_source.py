"""Play AWS Lambda locally: a fake invocation context and the SQS event-source mapping.

:class:`SqsEventSource` does what Lambda's SQS event-source mapping does for ``ProcessorFunction``
(``FunctionResponseTypes: [ReportBatchItemFailures]``): receive a batch from the work queue,
hand the handler the exact event Lambda builds, delete what succeeded, leave what failed.

It runs the handler synchronously in the calling thread and never touches ``os.environ``:
the handler reads its configuration from the environment, so callers set it first, e.g. with
``monkeypatch.setenv`` over :meth:`infra.local_aws.LocalAws.function_env`.

One deliberate difference from Lambda, by default: a failed message is made visible again
after ``failed_visibility_s`` (default 0) rather than after the queue's visibility timeout
(90 min for the work queue), so local runs and tests retry at once; ``None`` restores
Lambda's behaviour. The queue's redrive policy still
applies: moto moves a message to the dead-letter queue on its ``maxReceiveCount + 1``-th receive.
"""

from __future__ import annotations

import base64
import time
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, Final, TypeAlias

import boto3

from infra.local_aws import REGION, LocalAws

__all__ = ["Handler", "LocalContext", "SqsEventSource"]

DEFAULT_TIMEOUT_S: Final = 900.0

# Attributes Lambda copies into each record's "attributes" when SQS returns them.
_RECORD_ATTRIBUTES: Final = (
    "ApproximateReceiveCount",
    "SentTimestamp",
    "SenderId",
    "ApproximateFirstReceiveTimestamp",
    "AWSTraceHeader",
    "SequenceNumber",
    "MessageGroupId",
    "MessageDeduplicationId",
    "DeadLetterQueueSourceArn",
)

Handler: TypeAlias = Callable[[dict[str, Any], Any], Mapping[str, Any] | None]
"""A Lambda handler: ``lambda_handler(event, context) -> response``."""


class LocalContext:
    """A stand-in for the Lambda context object (the attributes and method Lambda provides).

    ``get_remaining_time_in_millis()`` counts down to ``deadline`` (a :func:`time.monotonic`
    value), by default ``timeout_s`` (900 s, the template's Timeout) after construction.
    """

    def __init__(
        self,
        *,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        deadline: float | None = None,
        function_name: str = "promptdrop-local-ProcessorFunction",
        function_version: str = "$LATEST",
        memory_limit_in_mb: int = 1024,
        region: str = REGION,
        account_id: str = "123456789012",
    ) -> None:
        self.deadline = time.monotonic() + timeout_s if deadline is None else deadline
        self.function_name = function_name
        self.function_version = function_version
        self.invoked_function_arn = f"arn:aws:lambda:{region}:{account_id}:function:{function_name}"
        self.memory_limit_in_mb = memory_limit_in_mb
        self.aws_request_id = str(uuid.uuid4())
        self.log_group_name = f"/aws/lambda/{function_name}"
        today = datetime.now(UTC).strftime("%Y/%m/%d")
        self.log_stream_name = f"{today}/[{function_version}]{uuid.uuid4().hex}"
        self.identity: Any = None
        self.client_context: Any = None

    def get_remaining_time_in_millis(self) -> int:
        """Milliseconds left before the deadline (never negative)."""
        return max(0, int((self.deadline - time.monotonic()) * 1000))

    def __repr__(self) -> str:
        return (
            f"LocalContext(function_name={self.function_name!r}, aws_request_id={self.aws_request_id!r}, "
            f"remaining_ms={self.get_remaining_time_in_millis()})"
        )


def _message_attributes(raw: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """SQS API message attributes -> the camelCase shape of a Lambda SQS record."""
    converted: dict[str, dict[str, Any]] = {}
    for name, attr in raw.items():
        value: dict[str, Any] = {"stringListValues": [], "binaryListValues": [], "dataType": attr["DataType"]}
        if "StringValue" in attr:
            value["stringValue"] = attr["StringValue"]
        if "BinaryValue" in attr:
            value["binaryValue"] = base64.b64encode(attr["BinaryValue"]).decode("ascii")
        converted[name] = value
    return converted


class SqsEventSource:
    """Lambda's SQS event-source mapping, synchronous and in-process (boto3).

    Use as a context manager, or call :meth:`close`, to release the SQS client.
    """

    def __init__(
        self,
        queue_url: str,
        *,
        endpoint_url: str | None = None,
        region: str = REGION,
        failed_visibility_s: int | None = 0,
    ) -> None:
        """Poll ``queue_url``; with ``endpoint_url`` (moto), dummy credentials are used.

        ``failed_visibility_s``: seconds before a failed message can be received again;
        ``None`` leaves it to the queue's visibility timeout, as Lambda does.
        """
        credentials = {"aws_access_key_id": "testing", "aws_secret_access_key": "testing"} if endpoint_url else {}
        # boto3 ships no type information: the client is Any at this edge.
        self._sqs: Any = boto3.client("sqs", endpoint_url=endpoint_url, region_name=region, **credentials)
        self.queue_url = queue_url
        self.region = region
        self.failed_visibility_s = failed_visibility_s
        self._queue_arn: str | None = None

    @classmethod
    def for_stack(cls, stack: LocalAws, *, failed_visibility_s: int | None = 0) -> SqsEventSource:
        """An event source on ``stack``'s work queue."""
        return cls(
            stack.work_queue_url,
            endpoint_url=stack.endpoint,
            region=stack.region,
            failed_visibility_s=failed_visibility_s,
        )

    def close(self) -> None:
        """Close the SQS client."""
        self._sqs.close()

    def __enter__(self) -> SqsEventSource:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    @property
    def queue_arn(self) -> str:
        """The work queue's ARN (the records' ``eventSourceARN``)."""
        if self._queue_arn is None:
            attributes = self._sqs.get_queue_attributes(QueueUrl=self.queue_url, AttributeNames=["QueueArn"])
            self._queue_arn = str(attributes["Attributes"]["QueueArn"])
        return self._queue_arn

    def build_event(self, messages: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
        """The event Lambda sends for ``messages`` (as returned by ReceiveMessage)."""
        records = []
        for message in messages:
            attributes = message.get("Attributes", {})
            records.append(
                {
                    "messageId": message["MessageId"],
                    "receiptHandle": message["ReceiptHandle"],
                    "body": message["Body"],
                    "attributes": {k: attributes[k] for k in _RECORD_ATTRIBUTES if k in attributes},
                    "messageAttributes": _message_attributes(message.get("MessageAttributes", {})),
                    "md5OfBody": message["MD5OfBody"],
                    "eventSource": "aws:sqs",
                    "eventSourceARN": self.queue_arn,
                    "awsRegion": self.region,
                }
            )
        return {"Records": records}

    @staticmethod
    def failed_ids(response: Mapping[str, Any] | None, message_ids: set[str]) -> set[str]:
        """Message ids the handler reported as failed, judged as Lambda judges them.

        No response, or no/empty ``batchItemFailures``: all succeeded. A failure entry without
        a valid ``itemIdentifier`` of this batch: the whole batch failed.
        """
        if not response:
            return set()
        failures = response.get("batchItemFailures") or []
        failed: set[str] = set()
        for failure in failures:
            identifier = failure.get("itemIdentifier") if isinstance(failure, Mapping) else None
            if identifier not in message_ids:
                return set(message_ids)
            failed.add(identifier)
        return failed

    def poll_once(
        self,
        handler: Handler,
        *,
        batch_size: int = 1,
        wait_s: int = 1,
        context_factory: Callable[[], object] = LocalContext,
    ) -> int:
        """Receive up to ``batch_size`` messages, invoke ``handler`` once, settle the batch.

        Messages not in the response's ``batchItemFailures`` are deleted; the failed ones are
        made visible again after ``failed_visibility_s``. If the handler raises, the whole
        batch is failed that way and the exception propagates. Returns the number of
        messages received (0: the queue was empty for ``wait_s`` seconds).
        """
        received = self._sqs.receive_message(
            QueueUrl=self.queue_url,
            MaxNumberOfMessages=max(1, min(batch_size, 10)),
            WaitTimeSeconds=wait_s,
            MessageSystemAttributeNames=["All"],
            MessageAttributeNames=["All"],
        )
        messages: list[dict[str, Any]] = received.get("Messages", [])
        if not messages:
            return 0
        by_id = {m["MessageId"]: m for m in messages}
        try:
            response = handler(self.build_event(messages), context_factory())
        except BaseException:
            self._release(by_id.values())
            raise
        failed = self.failed_ids(response, set(by_id))
        done = [m for mid, m in by_id.items() if mid not in failed]
        for start in range(0, len(done), 10):
            self._sqs.delete_message_batch(
                QueueUrl=self.queue_url,
                Entries=[
                    {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(done[start : start + 10])
                ],
            )
        self._release(by_id[mid] for mid in failed)
        return len(messages)

    def _release(self, messages: Iterable[Mapping[str, Any]]) -> None:
        if self.failed_visibility_s is None:
            return
        for message in messages:
            self._sqs.change_message_visibility(
                QueueUrl=self.queue_url,
                ReceiptHandle=message["ReceiptHandle"],
                VisibilityTimeout=self.failed_visibility_s,
            )

    def drain(
        self,
        handler: Handler,
        *,
        idle_polls: int = 2,
        max_batches: int = 1000,
        batch_size: int = 1,
        wait_s: int = 1,
        context_factory: Callable[[], object] = LocalContext,
    ) -> int:
        """Poll until ``idle_polls`` polls in a row find the queue empty (or ``max_batches``).

        Returns the number of messages handled (a message retried counts once per receive).
        """
        handled = 0
        idle = 0
        for _ in range(max_batches):
            count = self.poll_once(handler, batch_size=batch_size, wait_s=wait_s, context_factory=context_factory)
            handled += count
            idle = idle + 1 if count == 0 else 0
            if idle >= idle_polls:
                break
        return handled
