"""The DynamoDB codec of the journal's records: keys and attribute maps, in one place.

Key scheme (README, "Outputs" → DynamoDB): the job item is ``JOB#<job_id>`` / ``JOB`` and a unit's
lease ``JOB#<job_id>`` / ``UNIT#<unit>``. Request items are spread over :data:`REQUEST_PARTITIONS`
partition keys ``JOB#<job_id>#<n>``, ``n`` from a hash of the ``custom_id``: one partition key takes
about 1,000 write units a second, and the shards of a large job write together. A request is
``REQ#<custom_id>`` and a line that repeats an earlier line's ``custom_id`` ``DUP#<line>`` — a prefix
no ``custom_id`` can produce, so no user string aliases an internal item.
"""

from __future__ import annotations

import zlib
from dataclasses import fields
from decimal import Decimal
from typing import Any

from boto3.dynamodb.types import TypeDeserializer, TypeSerializer

from ..records import JobRecord, JobStatus, RequestRecord, RequestStatus

__all__ = [
    "JOB_SK",
    "REQUEST_PARTITIONS",
    "REQUEST_PREFIXES",
    "job_from_item",
    "job_key",
    "job_pk",
    "job_to_item",
    "plain",
    "request_from_item",
    "request_key",
    "request_pk",
    "request_pks",
    "request_sk",
    "request_to_item",
    "serialize",
    "unit_key",
]

JOB_SK = "JOB"
REQUEST_PARTITIONS = 8
JOBS_INDEX_PK = "JOBS"
_REQ = "REQ#"
_DUP = "DUP#"
REQUEST_PREFIXES = (_REQ, _DUP)
# A request item's text attributes, each written only when set.
_TEXT_ATTRIBUTES = (
    "model", "request_id", "finish_reason", "response", "response_s3_key", "columns", "columns_s3_key", "service_tier",
)  # fmt: skip
_serializer = TypeSerializer()
_deserializer = TypeDeserializer()
_JOB_FIELDS = {f.name for f in fields(JobRecord)} - {"job_id"}
_ADDED = {"changes", "units_done", *(name for name in _JOB_FIELDS if name.startswith("progress_"))}


def serialize(value: Any) -> dict[str, Any]:
    return _serializer.serialize(value)  # type: ignore[no-any-return]


def job_pk(job_id: str) -> str:
    return f"JOB#{job_id}"


def job_key(job_id: str) -> dict[str, Any]:
    return {"pk": {"S": job_pk(job_id)}, "sk": {"S": JOB_SK}}


def unit_key(job_id: str, unit: str) -> dict[str, Any]:
    return {"pk": {"S": job_pk(job_id)}, "sk": {"S": f"UNIT#{unit}"}}


def request_sk(record: RequestRecord) -> str:
    return f"{_DUP}{record.line}" if record.repeat_of is not None else f"{_REQ}{record.custom_id}"


def request_pk(job_id: str, custom_id: str) -> str:
    """The partition key of a request's item: the same ``custom_id`` always lands in the same one."""
    n = zlib.crc32(custom_id.encode("utf-8", "surrogatepass")) % REQUEST_PARTITIONS
    return f"JOB#{job_id}#{n}"


def request_pks(job_id: str) -> list[str]:
    """Every partition key a job's request items may have."""
    return [f"JOB#{job_id}#{n}" for n in range(REQUEST_PARTITIONS)]


def request_key(job_id: str, custom_id: str) -> dict[str, Any]:
    return {"pk": {"S": request_pk(job_id, custom_id)}, "sk": {"S": f"{_REQ}{custom_id}"}}


def plain(value: Any) -> Any:
    """A deserialized DynamoDB value with its numbers (Decimal) as int or float, in maps and lists too."""
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [plain(v) for v in value]
    return value


def job_to_item(job: JobRecord) -> dict[str, Any]:
    # jobs_pk: every job item is in the sparse index ``jobs-by-start`` (recent jobs, newest first).
    attrs: dict[str, Any] = {"pk": job_pk(job.job_id), "sk": JOB_SK, "jobs_pk": JOBS_INDEX_PK}
    for name in _JOB_FIELDS:
        value = getattr(job, name)
        if value is not None and name not in _ADDED:  # counters: ADDed, never put
            attrs[name] = str(value) if isinstance(value, JobStatus) else value
    return {k: serialize(v) for k, v in attrs.items()}


def job_from_item(item: dict[str, Any]) -> JobRecord:
    values = {k: plain(_deserializer.deserialize(v)) for k, v in item.items()}
    known = {k: v for k, v in values.items() if k in _JOB_FIELDS}
    known["status"] = JobStatus(known.get("status", JobStatus.RUNNING))
    return JobRecord(job_id=values["pk"].removeprefix("JOB#"), **known)


def request_to_item(job_id: str, record: RequestRecord, now: str, expires_at: int | None = None) -> dict[str, Any]:
    item: dict[str, Any] = {
        "pk": {"S": request_pk(job_id, record.custom_id)},
        "sk": {"S": request_sk(record)},
        "custom_id": {"S": record.custom_id},
        "status": {"S": str(record.status)},
        "line": {"N": str(record.line)},
        "attempts": {"N": str(record.attempts)},
        "prompt_tokens": {"N": str(record.prompt_tokens)},
        "completion_tokens": {"N": str(record.completion_tokens)},
        "updated_at": {"S": now},
    }
    for name in _TEXT_ATTRIBUTES:
        value = getattr(record, name)
        if value is not None:
            item[name] = {"S": value}
    for name in ("latency_ms", "status_code", "repeat_of"):
        value = getattr(record, name)
        if value is not None:
            item[name] = {"N": str(value)}
    if record.cached_tokens:
        item["cached_tokens"] = {"N": str(record.cached_tokens)}
    if record.cache_write_tokens:
        item["cache_write_tokens"] = {"N": str(record.cache_write_tokens)}
    if record.cached:
        item["cached"] = {"BOOL": True}
    if record.error is not None:
        item["error"] = serialize({k: v for k, v in record.error.items() if v is not None})
    if expires_at is not None:  # epoch seconds: the table's TTL attribute
        item["expires_at"] = {"N": str(expires_at)}
    return item


def request_from_item(item: dict[str, Any]) -> RequestRecord:
    """The record of a request item, read straight from its attribute values (no generic
    deserializer: the finalizer decodes one item per answer, so this is on the hot path)."""

    def text(name: str) -> str | None:
        value = item.get(name)
        return None if value is None else str(value["S"])

    def number(name: str) -> int | None:
        value = item.get(name)
        return None if value is None else int(value["N"])

    def count(name: str) -> int:
        return number(name) or 0

    error = item.get("error")
    return RequestRecord(
        custom_id=item["custom_id"]["S"],
        line=int(item["line"]["N"]),
        status=RequestStatus(item["status"]["S"]),
        attempts=count("attempts"),
        model=text("model"),
        latency_ms=number("latency_ms"),
        status_code=number("status_code"),
        request_id=text("request_id"),
        prompt_tokens=count("prompt_tokens"),
        completion_tokens=count("completion_tokens"),
        finish_reason=text("finish_reason"),
        response=text("response"),
        response_s3_key=text("response_s3_key"),
        error=None if error is None else plain(_deserializer.deserialize(error)),
        repeat_of=number("repeat_of"),
        cached_tokens=count("cached_tokens"),
        cache_write_tokens=count("cache_write_tokens"),
        columns=text("columns"),
        columns_s3_key=text("columns_s3_key"),
        service_tier=text("service_tier"),
        cached="cached" in item,
    )
