"""What a request is: its service, operation and protocol, read as AWS reads it (signing name, target,
action, S3 path)."""

from __future__ import annotations

import re
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Final
from urllib.parse import parse_qsl

from infra.aws_faults.errors import Protocol

__all__ = ["Call", "classify"]


@dataclass(frozen=True, slots=True)
class Call:
    """One AWS call: its service (the signing name: ``s3``, ``dynamodb``, ``sqs``, ``sts``...) and operation."""

    service: str
    operation: str
    protocol: Protocol

    @property
    def name(self) -> str:
        return f"{self.service}.{self.operation}"


_SCOPE_RE: Final = re.compile(r"Credential=[^/,\s]+/\d{8}/[^/]+/([^/]+)/aws4_request")
_QUERY_SCOPE_RE: Final = re.compile(r"^[^/]+/\d{8}/[^/]+/([^/]+)/aws4_request$")
_TARGET_SERVICES: Final = {"DynamoDB": "dynamodb", "AmazonSQS": "sqs"}
_VERBS: Final = {"GET": "Get", "PUT": "Put", "DELETE": "Delete", "HEAD": "Head", "POST": "Post"}
_OBJECT_SUBRESOURCES: Final = {
    "tagging": "Tagging",
    "acl": "Acl",
    "retention": "Retention",
    "legal-hold": "LegalHold",
    "attributes": "Attributes",
    "torrent": "Torrent",
}
_BUCKET_SUBRESOURCES: Final = {
    "versioning": "Versioning",
    "encryption": "Encryption",
    "policy": "Policy",
    "policyStatus": "PolicyStatus",
    "tagging": "Tagging",
    "notification": "NotificationConfiguration",
    "publicAccessBlock": "PublicAccessBlock",
    "lifecycle": "LifecycleConfiguration",
    "cors": "Cors",
    "acl": "Acl",
    "website": "Website",
    "logging": "Logging",
    "ownershipControls": "OwnershipControls",
    "replication": "Replication",
    "accelerate": "AccelerateConfiguration",
    "requestPayment": "RequestPayment",
    "object-lock": "ObjectLockConfiguration",
}


def classify(
    method: str,
    path: str,
    query: Mapping[str, str],
    headers: Mapping[str, str],
    body: bytes = b"",
    *,
    own_hosts: Collection[str] = ("127.0.0.1", "localhost"),
) -> Call:
    """Name the call a request makes.

    JSON-protocol services (DynamoDB; SQS with the botocore this project installs) by ``X-Amz-Target``;
    query-protocol ones (SQS with an older botocore, STS...) by ``Action``; anything else signed for
    ``s3`` (or unsigned) is S3, named from method, path, query and headers. ``path`` is the decoded
    path; a bucket is taken from the ``Host`` header (virtual-host style: ``BUCKET.<own host>``) or
    from the path's first segment (path style).
    """
    lower = {k.lower(): v for k, v in headers.items()}
    method = method.upper()
    scope = _signing_name(lower, query)
    target = lower.get("x-amz-target", "")
    if target:
        prefix, _, operation = target.partition(".")
        service = _TARGET_SERVICES.get(prefix.split("_", 1)[0]) or scope or prefix.lower()
        return Call(service, operation, Protocol.JSON)
    action = query.get("Action")
    if action is None and method == "POST" and "x-www-form-urlencoded" in lower.get("content-type", ""):
        action = dict(parse_qsl(body.decode("utf-8", "replace"))).get("Action")
    if action is not None:
        return Call(scope or "unknown", action, Protocol.QUERY)
    if scope not in (None, "s3"):
        return Call(scope, f"{method} {path}", Protocol.REST_XML)  # another REST service: named by route
    bucket, key = _bucket_and_key(path, lower.get("host", ""), own_hosts)
    return Call("s3", _s3_operation(method, bucket, key, query, lower), Protocol.REST_XML)


def _signing_name(headers: Mapping[str, str], query: Mapping[str, str]) -> str | None:
    match = _SCOPE_RE.search(headers.get("authorization", ""))
    if match is None:  # a presigned URL carries its scope in the query
        match = _QUERY_SCOPE_RE.match(query.get("X-Amz-Credential", ""))
    return match.group(1) if match else None


def _bucket_and_key(path: str, host: str, own_hosts: Collection[str]) -> tuple[str | None, str | None]:
    hostname = host.rsplit(":", 1)[0] if host.count(":") == 1 else host  # (an IPv6 host is left whole)
    for own in own_hosts:
        if hostname.endswith("." + own):  # virtual-host style
            return hostname[: -len(own) - 1], path[1:] or None
    bucket, _, key = path.lstrip("/").partition("/")
    return bucket or None, key or None


def _s3_operation(
    method: str, bucket: str | None, key: str | None, query: Mapping[str, str], headers: Mapping[str, str]
) -> str:
    verb = _VERBS.get(method, method.title())
    if bucket is None:
        return "ListBuckets" if method == "GET" else f"{verb}Service"
    if key is not None:
        if "uploadId" in query:
            copy = "x-amz-copy-source" in headers
            parts = {"PUT": "UploadPartCopy" if copy else "UploadPart", "POST": "CompleteMultipartUpload"}
            parts |= {"DELETE": "AbortMultipartUpload", "GET": "ListParts"}
            return parts.get(method, f"{verb}MultipartUpload")
        if method == "POST":
            for sub, name in (("uploads", "CreateMultipartUpload"), ("restore", "RestoreObject")):
                if sub in query:
                    return name
            return "SelectObjectContent" if "select" in query else "PostObject"
        for sub, name in _OBJECT_SUBRESOURCES.items():
            if sub in query:
                return f"{verb}Object{name}"
        if method == "PUT" and "x-amz-copy-source" in headers:
            return "CopyObject"
        return f"{verb}Object"
    if method == "GET":
        for sub, name in (("list-type", "ListObjectsV2"), ("versions", "ListObjectVersions")):
            if sub in query:
                return name
        if "uploads" in query:
            return "ListMultipartUploads"
        if "location" in query:
            return "GetBucketLocation"
    if method == "POST" and "delete" in query:
        return "DeleteObjects"
    for sub, name in _BUCKET_SUBRESOURCES.items():
        if sub in query:
            return f"{verb}Bucket{name}"
    plain = {"GET": "ListObjects", "PUT": "CreateBucket", "DELETE": "DeleteBucket", "HEAD": "HeadBucket"}
    return plain.get(method, f"{verb}Bucket")
