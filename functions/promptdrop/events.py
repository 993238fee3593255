"""Every event shape the handler accepts, told apart and reduced to work items.

Own lenient models rather than Powertools' parser models: those require fields (``userIdentity``,
``ownerIdentity``, ``sequencer``…) that moto and some emitters leave out, and such events must
still parse. Only what the handler uses is declared; everything else is ignored. The function's
own messages (work and dead letters) are defined once, in :mod:`promptdrop.messages`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import unquote_plus

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from .messages import FileFailure, PromptFailure, UnitMessage, parse

__all__ = ["FileWork", "Skip", "WorkItem", "parse_body", "parse_event"]


class _Lenient(BaseModel):
    model_config = ConfigDict(extra="ignore", populate_by_name=True)


class _S3Object(_Lenient):
    key: str


class _S3Bucket(_Lenient):
    name: str


class _S3Entity(_Lenient):
    bucket: _S3Bucket
    object: _S3Object


class _S3Record(_Lenient):
    event_source: Literal["aws:s3"] = Field(alias="eventSource")
    event_name: str = Field(default="ObjectCreated:Put", alias="eventName")
    s3: _S3Entity


class _EventBridgeDetail(_Lenient):
    bucket: _S3Bucket
    object: _S3Object


class _EventBridgeEvent(_Lenient):
    source: Literal["aws.s3"]
    detail_type: str = Field(alias="detail-type")
    detail: _EventBridgeDetail


@dataclass(slots=True, frozen=True)
class FileWork:
    """Process an input object (a new upload, or a redriven file failure)."""

    bucket: str
    key: str
    redrive: bool = False


@dataclass(slots=True, frozen=True)
class Skip:
    """Nothing to do (a test event, a non-create event); acknowledged with a reason."""

    reason: str


# A unit message runs (part of) a job; a prompt failure, redriven, runs its request again.
WorkItem = FileWork | UnitMessage | PromptFailure | Skip


class UnrecognizedEvent(ValueError):
    """An event (or message body) of no accepted shape."""


def _s3_records(records: list[Any]) -> list[WorkItem]:
    items: list[WorkItem] = []
    for raw in records:
        record = _S3Record.model_validate(raw)
        if not record.event_name.startswith("ObjectCreated"):
            items.append(Skip(f"ignoring S3 event {record.event_name}"))
            continue
        items.append(FileWork(record.s3.bucket.name, unquote_plus(record.s3.object.key)))
    return items


def parse_body(body: Any) -> list[WorkItem]:
    """Work items from one decoded event or SQS message body."""
    if not isinstance(body, dict):
        raise UnrecognizedEvent(f"expected a JSON object, got {type(body).__name__}")
    try:
        if body.get("Event") == "s3:TestEvent":
            return [Skip("s3:TestEvent")]
        if isinstance(body.get("Records"), list) and body["Records"] and "s3" in body["Records"][0]:
            return _s3_records(body["Records"])
        if body.get("source") == "aws.s3":
            event = _EventBridgeEvent.model_validate(body)
            if event.detail_type != "Object Created":
                return [Skip(f"ignoring EventBridge {event.detail_type}")]
            # EventBridge carries the key as is (S3 notifications URL-encode it): decoding would
            # turn a literal "+" into a space and break "%" in keys.
            return [FileWork(event.detail.bucket.name, event.detail.object.key)]
        if "kind" in body:
            message = parse(body)
            if isinstance(message, FileFailure):
                return [FileWork(message.bucket, message.key, redrive=True)]
            return [message]
    except ValidationError as exc:
        raise UnrecognizedEvent(f"malformed event: {exc.errors()[0]['msg']} at {exc.errors()[0]['loc']}") from None
    raise UnrecognizedEvent(f"no accepted event shape has these fields: {sorted(body)[:8]}")


# The work queue's redrive policy (template.yaml, WorkQueue: maxReceiveCount): SQS moves a message
# to the dead-letter queue instead of delivering it again once it was received this many times.
MAX_RECEIVE_COUNT = 5


@dataclass(slots=True, frozen=True)
class SqsMessage:
    message_id: str
    body: str
    receive_count: int = 1  # SQS's ApproximateReceiveCount: this delivery is the n-th

    @property
    def last_delivery(self) -> bool:
        """Handed back now, the message would not come again: SQS would dead-letter it, reason untold."""
        return self.receive_count >= MAX_RECEIVE_COUNT


def _receive_count(record: dict[str, Any]) -> int:
    attributes = record.get("attributes")
    raw = attributes.get("ApproximateReceiveCount") if isinstance(attributes, dict) else None
    try:
        return max(1, int(raw)) if raw is not None else 1
    except (TypeError, ValueError):
        return 1


def parse_event(event: dict[str, Any]) -> tuple[list[SqsMessage] | None, list[WorkItem]]:
    """Split an invocation event: (SQS messages, to be parsed one by one) or (None, work items)."""
    records = event.get("Records")
    if isinstance(records, list) and records and records[0].get("eventSource") == "aws:sqs":
        return [SqsMessage(r["messageId"], r.get("body", ""), _receive_count(r)) for r in records], []
    return None, parse_body(event)


def parse_message(message: SqsMessage) -> list[WorkItem]:
    try:
        body = json.loads(message.body)
    except json.JSONDecodeError as exc:
        raise UnrecognizedEvent(f"message body is not JSON: {exc.msg}") from None
    except RecursionError:  # nested deeper than Python's recursion limit: no event we accept is
        raise UnrecognizedEvent("message body is nested too deep to be an event") from None
    return parse_body(body)


__all__ += ["MAX_RECEIVE_COUNT", "SqsMessage", "UnrecognizedEvent", "parse_message"]
