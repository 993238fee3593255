"""Every event shape the handler accepts, told apart and reduced to work items.

Own lenient models rather than Powertools' parser models: those require fields (``userIdentity``,
``ownerIdentity``, ``sequencer``…) that moto and some emitters leave out, and DESIGN.md requires
such events to parse. Only what the handler uses is declared; everything else is ignored.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import unquote_plus

from pydantic import BaseModel, ConfigDict, Field, ValidationError

__all__ = ["FileWork", "RedriveWork", "Skip", "UnitWork", "WorkItem", "parse_body", "parse_event"]


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


class _PromptFailure(_Lenient):
    kind: Literal["prompt_failure"]
    job_id: str
    bucket: str
    key: str
    etag: str | None = None
    custom_id: str
    line: int
    request: dict[str, Any] | None = None


class _UnitMessage(_Lenient):
    kind: Literal["unit"]
    job_id: str
    bucket: str
    key: str
    etag: str
    version_id: str | None = None
    unit: str
    start: int = 0
    end: int | None = None
    first_line: int = 1


class _FileFailure(_Lenient):
    kind: Literal["file_failure"]
    bucket: str
    key: str
    job_id: str | None = None


@dataclass(slots=True, frozen=True)
class FileWork:
    """Process an input object (a new upload, or a redriven file failure)."""

    bucket: str
    key: str
    redrive: bool = False


@dataclass(slots=True, frozen=True)
class RedriveWork:
    """Run one failed request again and merge it into its job."""

    job_id: str
    bucket: str
    key: str
    custom_id: str
    line: int
    request: dict[str, Any] | None


@dataclass(slots=True, frozen=True)
class Skip:
    """Nothing to do (a test event, a non-create event); acknowledged with a reason."""

    reason: str


@dataclass(slots=True, frozen=True)
class UnitWork:
    """A part of a job one invocation runs — the whole file ("all") or a shard: line-aligned bytes."""

    job_id: str
    bucket: str
    key: str
    etag: str
    version_id: str | None
    unit: str
    start: int = 0
    end: int | None = None  # exclusive; None = to the end of the object
    first_line: int = 1

    def message(self, **changes: Any) -> dict[str, Any]:
        """The work-queue message that runs (the rest of) this unit: a shard, or a continuation."""
        fields = {name: getattr(self, name) for name in self.__slots__} | changes
        return {"kind": "unit", **fields}


WorkItem = FileWork | RedriveWork | UnitWork | Skip


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
        kind = body.get("kind")
        if kind == "prompt_failure":
            failure = _PromptFailure.model_validate(body)
            return [
                RedriveWork(
                    failure.job_id,
                    failure.bucket,
                    failure.key,
                    failure.custom_id,
                    failure.line,
                    failure.request,
                )
            ]
        if kind == "unit":
            unit = _UnitMessage.model_validate(body)
            return [UnitWork(**unit.model_dump(exclude={"kind"}))]
        if kind == "file_failure":
            file_failure = _FileFailure.model_validate(body)
            return [FileWork(file_failure.bucket, file_failure.key, redrive=True)]
    except ValidationError as exc:
        raise UnrecognizedEvent(f"malformed event: {exc.errors()[0]['msg']} at {exc.errors()[0]['loc']}") from None
    raise UnrecognizedEvent(f"no accepted event shape has these fields: {sorted(body)[:8]}")


@dataclass(slots=True, frozen=True)
class SqsMessage:
    message_id: str
    body: str


def parse_event(event: dict[str, Any]) -> tuple[list[SqsMessage] | None, list[WorkItem]]:
    """Split an invocation event: (SQS messages, to be parsed one by one) or (None, work items)."""
    records = event.get("Records")
    if isinstance(records, list) and records and records[0].get("eventSource") == "aws:sqs":
        return [SqsMessage(r["messageId"], r.get("body", "")) for r in records], []
    return None, parse_body(event)


def parse_message(message: SqsMessage) -> list[WorkItem]:
    try:
        body = json.loads(message.body)
    except json.JSONDecodeError as exc:
        raise UnrecognizedEvent(f"message body is not JSON: {exc.msg}") from None
    return parse_body(body)


__all__ += ["SqsMessage", "UnrecognizedEvent", "parse_message"]
