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


def _plain(value: Any) -> Any:
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
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
    plain = {k: _plain(_deserializer.deserialize(v)) for k, v in item.items()}
    known = {k: v for k, v in plain.items() if k in _JOB_FIELDS}
    known["status"] = JobStatus(known.get("status", JobStatus.RUNNING))
    return JobRecord(job_id=plain["pk"].removeprefix("JOB#"), **known)


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
    for name in ("model", "request_id", "finish_reason", "response", "response_s3_key", "columns", "columns_s3_key"):
        value = getattr(record, name)
        if value is not None:
            item[name] = {"S": value}
    for name in ("latency_ms", "status_code", "repeat_of"):
        value = getattr(record, name)
        if value is not None:
            item[name] = {"N": str(value)}
    if record.cached_tokens:
        item["cached_tokens"] = {"N": str(record.cached_tokens)}
    if record.error is not None:
        item["error"] = serialize({k: v for k, v in record.error.items() if v is not None})
    if expires_at is not None:  # epoch seconds: the table's TTL attribute
        item["expires_at"] = {"N": str(expires_at)}
    return item


def request_from_item(item: dict[str, Any]) -> RequestRecord:
    plain = {k: _plain(_deserializer.deserialize(v)) for k, v in item.items()}
    return RequestRecord(
        custom_id=plain["custom_id"],
        line=plain["line"],
        status=RequestStatus(plain["status"]),
        attempts=plain["attempts"],
        model=plain.get("model"),
        latency_ms=plain.get("latency_ms"),
        status_code=plain.get("status_code"),
        request_id=plain.get("request_id"),
        prompt_tokens=plain.get("prompt_tokens", 0),
        completion_tokens=plain.get("completion_tokens", 0),
        finish_reason=plain.get("finish_reason"),
        response=plain.get("response"),
        response_s3_key=plain.get("response_s3_key"),
        error=plain.get("error"),
        repeat_of=plain.get("repeat_of"),
        cached_tokens=plain.get("cached_tokens", 0),
        columns=plain.get("columns"),
        columns_s3_key=plain.get("columns_s3_key"),
    )
