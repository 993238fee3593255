"""Jobs as the CLI sees them: the job item read (one, by key, or the recent ones), a cancel asked for,
and a finished job's failures counted by code.

The job item's attributes are the README's contract (DynamoDB → the job item), read into the
function's own record by its own codec (:class:`Job` adds what a person reads from it): attributes
the record does not know are ignored, missing ones default.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from dataclasses import dataclass, fields
from enum import StrEnum
from typing import Any

from ..adapters.items import job_from_item, job_key, job_pk
from ..records import FINAL_JOB_STATES, JobRecord, JobStatus
from .errors import CliError
from .resources import Clients, Resources

__all__ = ["JOB_ID_LENGTH", "REF_HELP", "CancelOutcome", "Job", "JobStore", "S3Ref", "parse_s3_uri"]

# What every command that takes a job says it takes (:meth:`JobStore.locate` reads it).
REF_HELP = "an input key (or s3://BUCKET/KEY), a job id, or 8 or more of its first characters"

JOBS_INDEX = "jobs-by-start"
JOBS_PK = "JOBS"
JOB_ID_LENGTH = 32
_JOB_ID = re.compile(rf"[0-9a-f]{{{JOB_ID_LENGTH}}}")
# A prefix: the 12 characters `status` lists, or any other of 8 or more (unique, or refused).
_JOB_ID_PREFIX = re.compile(rf"[0-9a-f]{{8,{JOB_ID_LENGTH - 1}}}")
_SHOWN_MATCHES = 10


@dataclass(slots=True)
class Job(JobRecord):
    """The job item ``JOB#<job_id>`` / ``JOB`` as the operator reads it: the function's own record,
    decoded by its codec (``adapters/items.py``), and what a person reads from it (done, the total,
    the time left, cost so far)."""

    @classmethod
    def from_item(cls, item: dict[str, Any]) -> Job:
        record = job_from_item(item)
        return cls(**{f.name: getattr(record, f.name) for f in fields(JobRecord)})

    @property
    def final(self) -> bool:
        return self.status in FINAL_JOB_STATES

    @property
    def settled(self) -> bool:
        """Its final counts are written: it ended with outputs (a failed file has none)."""
        return self.final and self.total > 0

    @property
    def done(self) -> int:
        """Requests with an outcome: the final count once settled, else the live progress."""
        if self.settled:
            return self.total
        done = self.progress_done
        return min(done, self.line_count) if self.line_count else done

    @property
    def ok(self) -> int:
        return self.succeeded if self.settled else self.progress_succeeded

    @property
    def not_ok(self) -> int:
        return self.failed if self.settled else self.progress_failed

    @property
    def lines_left(self) -> int | None:
        """The file's lines without an outcome (None while the line count is unknown)."""
        return None if self.line_count is None else max(0, self.line_count - self.done)

    @property
    def eta_s(self) -> float | None:
        """Seconds until every line has an outcome at the recent rate (None: ended or ending, or no total
        or rate yet)."""
        speed, left = self.recent_rate, self.lines_left
        if self.final or self.error or left is None or not speed:
            return None
        return left / speed

    @property
    def tokens(self) -> tuple[int, int]:
        if self.settled:
            return self.prompt_tokens, self.completion_tokens
        return self.progress_prompt_tokens, self.progress_completion_tokens

    @property
    def cost_usd(self) -> float | str | None:
        return self.estimated_cost_usd if self.settled else self.progress_cost_usd

    @property
    def uri(self) -> str:
        return f"s3://{self.bucket}/{self.key}"

    def output_uri(self, name: str) -> str | None:
        key = self.outputs.get(name)
        return None if key is None else f"s3://{self.output_bucket or self.bucket}/{key}"


@dataclass(frozen=True)
class S3Ref:
    bucket: str
    key: str


def parse_s3_uri(text: str) -> S3Ref | None:
    if not text.startswith("s3://"):
        return None
    bucket, _, key = text.removeprefix("s3://").partition("/")
    if not bucket or not key:
        raise CliError(f"{text!r}: an S3 URI names a bucket and a key: s3://BUCKET/KEY")
    return S3Ref(bucket, key)


class CancelOutcome(StrEnum):
    REQUESTED = "requested"
    ALREADY_REQUESTED = "already_requested"
    FINISHED = "finished"


class JobStore:
    """Reads job items, finds a job from what a user types, asks a running job to stop."""

    def __init__(self, clients: Clients, resources: Resources) -> None:
        self._aws = clients
        self._resources = resources

    @property
    def _table(self) -> str:
        return self._resources.need("table")

    def get(self, job_id: str) -> Job | None:
        raw = self._aws.ddb.get_item(TableName=self._table, Key=job_key(job_id), ConsistentRead=True).get("Item")
        return None if raw is None else Job.from_item(raw)

    def locate(self, ref: str) -> Job:
        """The job named by ``ref``: a job id or a unique prefix of one (8 characters at least),
        ``s3://BUCKET/KEY``, or a key in the input bucket (tried as given, then under the input
        prefix). A key names its object's current upload."""
        job_id = self.find_id(ref)
        if job_id is not None and (job := self.get(job_id)) is not None:
            return job
        s3ref = parse_s3_uri(ref) or S3Ref(self._resources.need("bucket"), ref)
        job_id = self.job_id_of(s3ref)
        job = self.get(job_id)
        if job is None:
            raise CliError(
                f"{s3ref.key} has no job yet (job id {job_id}): the function has not started it — is the key "
                f"under the input prefix {self._resources.input_prefix!r}, and is the function deployed?"
            )
        return job

    def unit_items(self, job: Job) -> list[dict[str, Any]]:
        """The job's unit items (``UNIT#<unit>``): each unit's lease, and in batch mode its provider
        batches (``batches``: cli/batches.py reads them)."""
        query = {
            "TableName": self._table,
            "KeyConditionExpression": "pk = :pk AND begins_with(sk, :unit)",
            "ExpressionAttributeValues": {":pk": {"S": f"JOB#{job.job_id}"}, ":unit": {"S": "UNIT#"}},
            "ProjectionExpression": "sk, batches",
        }
        return [item for page in self._aws.ddb.get_paginator("query").paginate(**query) for item in page["Items"]]

    def job_id_of(self, ref: S3Ref) -> str:
        """The job id of the object's current upload (the function computes it the same way)."""
        from ..adapters.s3 import ObjectInfo  # imported here: the jobs package is slow to import
        from ..jobs import make_job_id

        candidates = [ref.key]
        prefix = self._resources.input_prefix
        if prefix and not ref.key.startswith(prefix):
            candidates.append(prefix + ref.key)
        for key in candidates:
            try:
                head = self._aws.s3.head_object(Bucket=ref.bucket, Key=key)
            except self._aws.s3.exceptions.ClientError as exc:
                if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                    continue
                raise
            info = ObjectInfo(head["ETag"].strip('"'), head.get("VersionId"), head["ContentLength"])
            return make_job_id(ref.bucket, key, info)
        tried = " or ".join(f"s3://{ref.bucket}/{k}" for k in candidates)
        if _JOB_ID_PREFIX.fullmatch(ref.key):
            raise CliError(f"no job id starts with {ref.key} (and no object {tried})")
        if _JOB_ID.fullmatch(ref.key):
            raise CliError(f"no job {ref.key} (and no object {tried})")
        raise CliError(f"no such job or object: {tried} does not exist")

    def find_id(self, ref: str) -> str | None:
        """The job id ``ref`` names: itself (32 hex characters), or the one job id it begins (8 or
        more); None when it is neither. A prefix that begins several is refused, naming them."""
        if _JOB_ID.fullmatch(ref):
            return ref
        if not _JOB_ID_PREFIX.fullmatch(ref):
            return None
        ids = self.ids_starting(ref)
        if len(ids) > 1:
            shown = ", ".join(ids[:_SHOWN_MATCHES]) + (", …" if len(ids) > _SHOWN_MATCHES else "")
            raise CliError(f"{ref} begins {len(ids)} job ids ({shown}): give more of it")
        return ids[0] if ids else None

    def ids_starting(self, prefix: str) -> list[str]:
        """The ids of every job whose id starts with ``prefix``, newest first.

        Read from the ``jobs-by-start`` index (job items only, keys alone returned): DynamoDB has no
        prefix lookup on a partition key, so this reads every job item once — a CLI command's cost.
        """
        kwargs: dict[str, Any] = {
            "TableName": self._table,
            "IndexName": JOBS_INDEX,
            "KeyConditionExpression": "jobs_pk = :jobs",
            "FilterExpression": "begins_with(pk, :prefix)",
            "ProjectionExpression": "pk",
            "ExpressionAttributeValues": {":jobs": {"S": JOBS_PK}, ":prefix": {"S": job_pk(prefix)}},
            "ScanIndexForward": False,
        }
        ids: list[str] = []
        while True:
            page = self._aws.ddb.query(**kwargs)
            ids += [item["pk"]["S"].removeprefix(job_pk("")) for item in page.get("Items", [])]
            if "LastEvaluatedKey" not in page:
                return ids
            kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]

    def recent(self, limit: int) -> list[Job]:
        """The ``limit`` jobs started last, newest first (the ``jobs-by-start`` index)."""
        kwargs: dict[str, Any] = {
            "TableName": self._table,
            "IndexName": JOBS_INDEX,
            "KeyConditionExpression": "jobs_pk = :jobs",
            "ExpressionAttributeValues": {":jobs": {"S": JOBS_PK}},
            "ScanIndexForward": False,
        }
        jobs: list[Job] = []
        while len(jobs) < limit:
            page = self._aws.ddb.query(**kwargs, Limit=limit - len(jobs))
            jobs += [Job.from_item(item) for item in page.get("Items", [])]
            if "LastEvaluatedKey" not in page:
                break
            kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]
        return jobs

    def request_cancel(self, job_id: str, now: str) -> tuple[CancelOutcome, Job]:
        """Set ``cancel_requested_at`` on a RUNNING job; the first request's time is kept."""
        ddb = self._aws.ddb
        try:
            new = ddb.update_item(
                TableName=self._table,
                Key=job_key(job_id),
                UpdateExpression="SET cancel_requested_at = :now",
                ConditionExpression="#s = :running AND attribute_not_exists(cancel_requested_at)",
                ExpressionAttributeNames={"#s": "status"},
                ExpressionAttributeValues={":now": {"S": now}, ":running": {"S": str(JobStatus.RUNNING)}},
                ReturnValues="ALL_NEW",
                ReturnValuesOnConditionCheckFailure="ALL_OLD",
            )
        except ddb.exceptions.ConditionalCheckFailedException as exc:
            old = exc.response.get("Item")
            if old is None:
                raise CliError(f"no job {job_id}") from None
            job = Job.from_item(old)
            return (CancelOutcome.FINISHED if job.final else CancelOutcome.ALREADY_REQUESTED), job
        return CancelOutcome.REQUESTED, Job.from_item(new["Attributes"])

    def set_budget(self, job_id: str, limits: dict[str, Any]) -> Job:
        """Write limits on the job item (they win over the upload's metadata and the environment)."""
        names = {f"#l{i}": name for i, name in enumerate(limits)}
        values = {f":l{i}": {"N": str(value)} for i, value in enumerate(limits.values())}
        ddb = self._aws.ddb
        try:
            new = ddb.update_item(
                TableName=self._table,
                Key=job_key(job_id),
                UpdateExpression="SET " + ", ".join(f"#l{i} = :l{i}" for i in range(len(limits))),
                ConditionExpression="attribute_exists(pk)",
                ExpressionAttributeNames=names,
                ExpressionAttributeValues=values,
                ReturnValues="ALL_NEW",
            )
        except ddb.exceptions.ConditionalCheckFailedException:
            raise CliError(f"no job {job_id}") from None
        return Job.from_item(new["Attributes"])

    def summary(self, job: Job) -> dict[str, Any] | None:
        """The job's ``.summary.json``, or None when it has not been written."""
        body = self.output(job, "summary")
        return None if body is None else dict(json.loads(body.read()))

    def output(self, job: Job, name: str) -> Any:
        """The streaming body of one of the job's outputs, or None when it does not exist (yet)."""
        key = job.outputs.get(name)
        if key is None:
            return None
        s3 = self._aws.s3
        try:
            return s3.get_object(Bucket=job.output_bucket or job.bucket, Key=key)["Body"]
        except s3.exceptions.NoSuchKey:
            return None

    def header(self, job: Job) -> dict[str, str]:
        """The job's upload's job header (its S3 user metadata); empty once that upload is gone or replaced."""
        s3 = self._aws.s3
        which = {"VersionId": job.version_id} if job.version_id else {"IfMatch": f'"{job.etag}"'}
        try:
            head = s3.head_object(Bucket=job.bucket, Key=job.key, **which)
        except s3.exceptions.ClientError:  # 404, or 412: another upload now (a job of its own)
            return {}
        return dict(head.get("Metadata", {}))

    def failures_by_code(self, job: Job) -> Counter[str]:
        """A finished job's failed requests by error code, read from its ``.errors.jsonl``."""
        codes: Counter[str] = Counter()
        body = self.output(job, "errors") if job.final else None
        if body is None:
            return codes
        for line in body.iter_lines():
            if line.strip():
                codes[str((json.loads(line).get("error") or {}).get("code"))] += 1
        return codes
