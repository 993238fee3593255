"""A fault-injecting HTTP proxy in front of the moto server: AWS as it behaves when it struggles.

The code under test reaches AWS only through ``AWS_ENDPOINT_URL``; point that at this proxy instead of
the moto server and a share of its S3, DynamoDB and SQS calls is answered the way AWS answers when it is
busy or failing — with the genuine status, error body and headers, so botocore parses the same error
code, and retries (or not) exactly as it would against AWS:

=================  ==========================================================================================
``THROTTLE``       answered instead of forwarded: DynamoDB ``ProvisionedThroughputExceededException`` (400;
                   or ``ThrottlingException``, ``RequestLimitExceeded``, and for transactions
                   ``TransactionCanceledException`` with ``ThrottlingError`` reasons), S3 ``SlowDown`` (503),
                   SQS ``RequestThrottled`` (400)
``SERVER_ERROR``   answered instead of forwarded: DynamoDB ``InternalServerError``, S3 and SQS
                   ``InternalError`` (500; or ``ServiceUnavailable``, 503)
``AFTER_WRITE``    forwarded — the call takes effect in moto — then moto's answer is dropped and the client
                   gets the service's 500: the write happened, the caller saw it fail (idempotency)
``UNPROCESSED``    DynamoDB ``BatchWriteItem`` only: a random proper subset of the items is forwarded, the
                   others come back as ``UnprocessedItems`` (a 200, as DynamoDB does when a batch is throttled)
``OUTAGE``         every call to a service fails (its 500 by default) for a window of seconds: started after
                   K calls, at a time, or on demand (:meth:`AwsFaultProxy.start_outage`, ``POST /_faults/outage``)
=================  ==========================================================================================

Everything else is forwarded unchanged: method, raw path and query, headers (``Host`` included, so moto
sees what the client signed) and body; the answer is streamed back with its headers (DynamoDB's
``x-amz-crc32`` included). Synthesized DynamoDB answers carry a correct ``x-amz-crc32`` too: botocore
checks it and would otherwise retry a good error as a corrupt one.

Faults come from :class:`FaultRule` s (a kind, a probability, optionally a service, operations, an error
code, a limit) tried in order, the first that fires wins; an outage window beats every rule. With a seed,
each rule decides the n-th call of an operation the same way on every run, however calls to *different*
operations interleave (one random stream per rule and operation).

Counters (:meth:`AwsFaultProxy.stats`, ``GET /_faults/stats``): calls seen, calls forwarded to moto, and
faults the client was answered with, per ``service.Operation`` and kind — so a test can prove its faults
really happened. For every operation: ``calls == forwarded + throttle + server_error + outage`` (the
other two kinds are forwarded).

Use from Python::

    with AwsFaultProxy(moto_endpoint, AwsFaultsConfig(rules=[FaultRule(FaultKind.THROTTLE, 0.3)], seed=7)) as proxy:
        os.environ["AWS_ENDPOINT_URL"] = proxy.endpoint
        ...
        assert proxy.stats().faults_of(FaultKind.THROTTLE) > 0

or from a shell: ``python -m infra.aws_faults --target http://127.0.0.1:5000 --port 5001 --dynamodb-throttle 0.2``.
The proxy runs on its own event loop in a daemon thread (as :mod:`infra.fake_openai` does).

Not modelled: request signatures (moto does not check them; a rewritten ``BatchWriteItem`` body no longer
matches its signature), connection resets and timeouts (botocore retries those as it does 5xx), and
latency.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import json
import random
import re
import signal
import sys
import threading
import time
import uuid
import zlib
from collections import Counter
from collections.abc import AsyncIterator, Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Final
from urllib.parse import parse_qsl

import aiohttp
from aiohttp import StreamReader, web
from multidict import CIMultiDict
from yarl import URL

from infra.threaded_server import ThreadedServer

__all__ = [
    "AwsError",
    "AwsFaultProxy",
    "AwsFaultsConfig",
    "Call",
    "FaultKind",
    "FaultRule",
    "FaultStats",
    "Outage",
    "Protocol",
    "Service",
    "arg_parser",
    "classify",
    "config_from_args",
    "error_for",
    "main",
]

_CHUNK: Final = 256 * 1024
_MAX_BODY: Final = 5 * 1024**3  # S3's largest single PUT
_CONTROL: Final = "/_faults/"  # never an S3 path: bucket names cannot start with "_"
# Not forwarded either way: they describe one hop. Content-Length is recomputed for a buffered body.
_HOP_BY_HOP: Final = frozenset(
    {"connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te", "trailer", "upgrade"}
)
_REQUEST_DROPPED: Final = _HOP_BY_HOP | {"transfer-encoding", "content-length", "expect"}
_RESPONSE_DROPPED: Final = _HOP_BY_HOP | {"transfer-encoding"}


class Service(StrEnum):
    """The services faults are injected into (any other call is forwarded and counted only)."""

    S3 = "s3"
    DYNAMODB = "dynamodb"
    SQS = "sqs"


_FAULTABLE: Final = frozenset(s.value for s in Service)


class FaultKind(StrEnum):
    THROTTLE = "throttle"
    SERVER_ERROR = "server_error"
    AFTER_WRITE = "after_write"
    UNPROCESSED = "unprocessed"
    OUTAGE = "outage"


class Protocol(StrEnum):
    """How a call is encoded, so how its error must be: JSON (``X-Amz-Target``), query (``Action=``), REST-XML."""

    JSON = "json"
    QUERY = "query"
    REST_XML = "rest-xml"


# -- the errors AWS answers with -------------------------------------------------------------------------

_DDB_NS: Final = "com.amazonaws.dynamodb.v20120810#"
_CORAL_NS: Final = "com.amazon.coral.availability#"
_SQS_NS: Final = "com.amazonaws.sqs#"


@dataclass(frozen=True, slots=True)
class AwsError:
    code: str
    status: int
    message: str
    type_namespace: str = ""  # the JSON protocol's "__type" is namespace + code

    @property
    def sender_fault(self) -> bool:
        return self.status < 500


_ERRORS: Final[Mapping[Service, Mapping[str, AwsError]]] = {
    Service.DYNAMODB: {
        e.code: e
        for e in (
            AwsError(
                "ProvisionedThroughputExceededException",
                400,
                "The level of configured provisioned throughput for the table was exceeded. "
                "Consider increasing your provisioning level with the UpdateTable API.",
                _DDB_NS,
            ),
            AwsError("ThrottlingException", 400, "Rate of requests exceeds the allowed throughput.", _CORAL_NS),
            AwsError(
                "RequestLimitExceeded",
                400,
                "Throughput exceeds the current throughput limit for your account. "
                "Please contact AWS Support at https://aws.amazon.com/support request a limit increase",
                _DDB_NS,
            ),
            AwsError("InternalServerError", 500, "Internal server error", _DDB_NS),
            AwsError("ServiceUnavailable", 503, "Service unavailable", _CORAL_NS),
            # Not retried by any botocore mode: a permission missing after a deploy, say.
            AwsError(
                "AccessDeniedException",
                400,
                "User is not authorized to perform this action on the table",
                _CORAL_NS,
            ),
            # A throttled TransactWriteItems/TransactGetItems: one ThrottlingError reason per item.
            AwsError("TransactionCanceledException", 400, "Transaction cancelled", _DDB_NS),
        )
    },
    Service.S3: {
        e.code: e
        for e in (
            AwsError("SlowDown", 503, "Please reduce your request rate."),
            AwsError("InternalError", 500, "We encountered an internal error. Please try again."),
            AwsError("ServiceUnavailable", 503, "Service is unable to handle request."),
        )
    },
    Service.SQS: {
        e.code: e
        for e in (
            AwsError("RequestThrottled", 400, "Request is throttled.", _SQS_NS),
            AwsError("InternalError", 500, "We encountered an internal error. Please try again.", _SQS_NS),
            AwsError("ServiceUnavailable", 503, "Service is unable to handle request.", _SQS_NS),
        )
    },
}
_THROTTLE_CODE: Final = {
    Service.DYNAMODB: "ProvisionedThroughputExceededException",
    Service.S3: "SlowDown",
    Service.SQS: "RequestThrottled",
}
_SERVER_ERROR_CODE: Final = {
    Service.DYNAMODB: "InternalServerError",
    Service.S3: "InternalError",
    Service.SQS: "InternalError",
}


def error_for(service: Service, kind: FaultKind, code: str | None = None) -> AwsError:
    """The error a fault of ``kind`` answers with: ``code`` if given, else the service's usual one."""
    if code is None:
        code = _THROTTLE_CODE[service] if kind is FaultKind.THROTTLE else _SERVER_ERROR_CODE[service]
    try:
        return _ERRORS[service][code]
    except KeyError:
        raise ValueError(f"{service} has no error {code!r} here: use one of {sorted(_ERRORS[service])}") from None


# -- what a request is ------------------------------------------------------------------------------------


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


# -- configuration ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FaultRule:
    """Answer a share of matching calls with a fault.

    ``rate``: the probability that a matching call is faulted. ``service``/``operations`` narrow the calls
    (``None``/empty: every faultable service, every operation; operations are botocore's names, e.g.
    ``BatchWriteItem``, ``PutObject``, ``SendMessageBatch``). ``code`` picks the error (default: the
    service's usual one for ``kind``; needs ``service``). ``limit``: at most this many faults, then the
    rule is spent — ``FaultRule(FaultKind.AFTER_WRITE, service=Service.DYNAMODB,
    operations={"BatchWriteItem"}, limit=1)`` fails the next batch write after it happened.
    """

    kind: FaultKind
    rate: float = 1.0
    service: Service | None = None
    operations: Collection[str] = ()
    code: str | None = None
    limit: int | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "operations", frozenset(self.operations))
        if not 0.0 <= self.rate <= 1.0:
            raise ValueError(f"rate must be within [0, 1], not {self.rate}")
        if self.kind is FaultKind.OUTAGE:
            raise ValueError("an outage is not a rule: use Outage(...) or AwsFaultProxy.start_outage(...)")
        if self.kind is FaultKind.UNPROCESSED:
            if self.service not in (None, Service.DYNAMODB) or set(self.operations) - {"BatchWriteItem"}:
                raise ValueError("UNPROCESSED applies to DynamoDB BatchWriteItem only")
            if self.code is not None:
                raise ValueError("UNPROCESSED answers 200 with UnprocessedItems: it takes no error code")
        if self.code is not None:
            if self.service is None:
                raise ValueError(f"code={self.code!r} needs service=: error codes differ between services")
            error_for(self.service, self.kind, self.code)
        if self.limit is not None and self.limit < 0:
            raise ValueError(f"limit must be >= 0, not {self.limit}")

    def matches(self, call: Call) -> bool:
        if self.service is not None and call.service != self.service:
            return False
        if self.kind is FaultKind.UNPROCESSED and call.name != "dynamodb.BatchWriteItem":
            return False
        return not self.operations or call.operation in self.operations


@dataclass(frozen=True)
class Outage:
    """Every call to ``service`` (``None``: every faultable service) fails for ``duration_s`` seconds.

    It starts once the service has seen ``after_calls`` calls (the next one fails), or ``at_s`` seconds
    after the proxy started; exactly one of the two. It answers with ``code`` (default: the service's 500).
    """

    duration_s: float
    service: Service | None = None
    after_calls: int | None = None
    at_s: float | None = None
    code: str | None = None

    def __post_init__(self) -> None:
        if (self.after_calls is None) == (self.at_s is None):
            raise ValueError("an Outage starts after_calls=K or at_s=T: give exactly one")
        if self.duration_s <= 0:
            raise ValueError(f"duration_s must be > 0, not {self.duration_s}")
        if self.code is not None:
            if self.service is None:
                raise ValueError(f"code={self.code!r} needs service=: error codes differ between services")
            error_for(self.service, FaultKind.SERVER_ERROR, self.code)


@dataclass(frozen=True)
class AwsFaultsConfig:
    rules: Sequence[FaultRule] = ()
    outages: Sequence[Outage] = ()
    seed: int | None = None  # None: different faults on every run


@dataclass(frozen=True)
class FaultStats:
    """A snapshot of the counters, keyed by ``service.Operation`` (e.g. ``dynamodb.BatchWriteItem``)."""

    calls: Mapping[str, int]  # requests seen
    forwarded: Mapping[str, int]  # requests moto received (AFTER_WRITE and UNPROCESSED ones included)
    faults: Mapping[str, Mapping[str, int]]  # operation -> fault kind -> answers the client got
    upstream_errors: int = 0  # moto could not be reached (answered 502)

    def faults_of(self, kind: FaultKind | None = None, *, service: str | None = None) -> int:
        """Faults injected, of one kind or all, in one service or all."""
        return sum(
            n
            for name, kinds in self.faults.items()
            if service is None or name.partition(".")[0] == service
            for k, n in kinds.items()
            if kind is None or k == kind
        )

    def as_json(self) -> dict[str, Any]:
        return {
            "calls": dict(self.calls),
            "forwarded": dict(self.forwarded),
            "faults": {name: dict(kinds) for name, kinds in self.faults.items()},
            "upstream_errors": self.upstream_errors,
        }


# -- deciding ---------------------------------------------------------------------------------------------


@dataclass(slots=True)
class _Decision:
    kind: FaultKind
    error: AwsError | None = None  # None for UNPROCESSED
    withhold: frozenset[int] = frozenset()  # UNPROCESSED: which of the batch's items come back unprocessed


@dataclass(slots=True)
class _LiveRule:
    rule: FaultRule
    index: int
    fired: int = 0
    rngs: dict[str, random.Random] = field(default_factory=dict)


@dataclass(slots=True)
class _Window:
    service: Service | None
    start: float
    end: float
    code: str | None

    def covers(self, service: Service, now: float) -> bool:
        return (self.service is None or self.service == service) and self.start <= now < self.end


class _FaultState:
    """Rules, outages and counters; shared by the proxy's loop and the caller's thread (one lock)."""

    def __init__(self, config: AwsFaultsConfig, clock: Callable[[], float]) -> None:
        self._lock = threading.Lock()
        self._clock = clock
        self._started = clock()
        self._seed = config.seed
        self._rules = [_LiveRule(rule, i) for i, rule in enumerate(config.rules)]
        self._pending: list[Outage] = list(config.outages)
        self._windows: list[_Window] = []
        self._by_service: Counter[str] = Counter()  # calls per service, for outages that start after K calls
        self._calls: Counter[str] = Counter()
        self._forwarded: Counter[str] = Counter()
        self._faults: Counter[tuple[str, FaultKind]] = Counter()
        self._upstream_errors = 0

    def _rng(self, live: _LiveRule, call: Call) -> random.Random:
        rng = live.rngs.get(call.name)
        if rng is None:
            # One stream per rule and operation: the n-th PutItem is decided alike however other calls interleave.
            seed = None if self._seed is None else f"{self._seed}/{live.index}/{call.name}"
            rng = live.rngs[call.name] = random.Random(seed)
        return rng

    def decide(self, call: Call, batch_items: int) -> _Decision | None:
        """Count the call and decide its fault (None: forward it as it is)."""
        with self._lock:
            self._calls[call.name] += 1
            self._by_service[call.service] += 1
            if call.service not in _FAULTABLE:
                return None
            service = Service(call.service)
            now = self._clock()
            window = self._outage(service, now)
            if window is not None:
                return _Decision(FaultKind.OUTAGE, error_for(service, FaultKind.SERVER_ERROR, window.code))
            for live in self._rules:
                rule = live.rule
                if not rule.matches(call) or (rule.kind is FaultKind.UNPROCESSED and batch_items < 2):
                    continue
                if rule.limit is not None and live.fired >= rule.limit:
                    continue
                rng = self._rng(live, call)
                if rng.random() >= rule.rate:
                    continue
                live.fired += 1
                if rule.kind is FaultKind.UNPROCESSED:
                    # A proper subset: DynamoDB answers a batch of which nothing was written with an error instead.
                    withheld = rng.sample(range(batch_items), rng.randint(1, batch_items - 1))
                    return _Decision(rule.kind, withhold=frozenset(withheld))
                return _Decision(rule.kind, error_for(service, rule.kind, rule.code))
            return None

    def _outage(self, service: Service, now: float) -> _Window | None:
        for outage in list(self._pending):
            if outage.service not in (None, service):
                continue
            if outage.at_s is not None:
                start = self._started + outage.at_s
                if now < start:
                    continue
            else:
                seen = self._by_service[service] if outage.service else sum(self._by_service.values())
                if outage.after_calls is None or seen <= outage.after_calls:
                    continue
                start = now
            self._pending.remove(outage)
            self._windows.append(_Window(outage.service, start, start + outage.duration_s, outage.code))
        self._windows = [w for w in self._windows if w.end > now]
        return next((w for w in self._windows if w.covers(service, now)), None)

    def count_fault(self, call: Call, kind: FaultKind) -> None:
        with self._lock:
            self._faults[call.name, kind] += 1

    def count_forwarded(self, call: Call) -> None:
        with self._lock:
            self._forwarded[call.name] += 1

    def count_upstream_error(self) -> None:
        with self._lock:
            self._upstream_errors += 1

    def set_rules(self, rules: Iterable[FaultRule]) -> None:
        with self._lock:
            self._rules = [_LiveRule(rule, i) for i, rule in enumerate(rules)]

    def add_rule(self, rule: FaultRule) -> None:
        with self._lock:
            self._rules.append(_LiveRule(rule, len(self._rules)))

    def add_outage(self, outage: Outage) -> None:
        with self._lock:
            self._pending.append(outage)

    def start_outage(self, service: Service | None, duration_s: float, code: str | None) -> None:
        if code is not None:
            if service is None:
                raise ValueError(f"code={code!r} needs a service: error codes differ between services")
            error_for(service, FaultKind.SERVER_ERROR, code)
        with self._lock:
            now = self._clock()
            self._windows.append(_Window(service, now, now + duration_s, code))

    def end_outage(self, service: Service | None) -> None:
        """End the running outages of ``service`` (``None``: all of them, and those not started yet)."""
        with self._lock:
            now = self._clock()
            for window in self._windows:
                if service is None or window.service == service:
                    window.end = min(window.end, now)
            if service is None:
                self._pending.clear()

    def in_outage(self, service: Service) -> bool:
        with self._lock:
            return self._outage(service, self._clock()) is not None

    def stats(self) -> FaultStats:
        with self._lock:
            faults: dict[str, dict[str, int]] = {}
            for (name, kind), n in self._faults.items():
                faults.setdefault(name, {})[kind.value] = n
            return FaultStats(dict(self._calls), dict(self._forwarded), faults, self._upstream_errors)

    def reset_stats(self) -> None:
        with self._lock:
            self._calls.clear()
            self._forwarded.clear()
            self._faults.clear()
            self._upstream_errors = 0


# -- answering --------------------------------------------------------------------------------------------


def _error_response(call: Call, error: AwsError, method: str, request_body: bytes | None) -> web.Response:
    request_id = uuid.uuid4().hex.upper()
    headers: dict[str, str]
    if call.protocol is Protocol.JSON:
        doc: dict[str, Any] = {"__type": error.type_namespace + error.code, "message": error.message}
        if error.code == "TransactionCanceledException":
            doc |= _throttled_transaction(request_body)
        body = json.dumps(doc).encode()
        headers = {"Content-Type": "application/x-amz-json-1.0", "x-amzn-RequestId": request_id}
        if call.service == Service.DYNAMODB:
            headers["x-amz-crc32"] = str(zlib.crc32(body))  # botocore checks it on every DynamoDB answer
        elif call.service == Service.SQS:  # SQS's JSON protocol names its errors as the query protocol did
            headers["x-amzn-query-error"] = f"{error.code};{'Sender' if error.sender_fault else 'Receiver'}"
    elif call.protocol is Protocol.QUERY:
        fault = "Sender" if error.sender_fault else "Receiver"
        body = (
            f'<?xml version="1.0"?><ErrorResponse><Error><Type>{fault}</Type><Code>{error.code}</Code>'
            f"<Message>{error.message}</Message><Detail/></Error><RequestId>{request_id}</RequestId></ErrorResponse>"
        ).encode()
        headers = {"Content-Type": "text/xml", "x-amzn-RequestId": request_id}
    else:
        host_id = uuid.uuid4().hex
        body = (
            f'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>{error.code}</Code><Message>{error.message}'
            f"</Message><RequestId>{request_id}</RequestId><HostId>{host_id}</HostId></Error>"
        ).encode()
        headers = {"Content-Type": "application/xml", "x-amz-request-id": request_id, "x-amz-id-2": host_id}
        if method == "HEAD":  # S3 answers HEAD without a body: botocore names the error by its status ("503")
            body = b""
    return web.Response(status=error.status, body=body, headers=headers)


def _throttled_transaction(request_body: bytes | None) -> dict[str, Any]:
    """The message and reasons of a transaction DynamoDB cancelled for throttling (one reason per item)."""
    try:
        count = len(json.loads(request_body or b"{}")["TransactItems"])
    except (ValueError, KeyError, TypeError):
        count = 1
    reason = {
        "Code": "ThrottlingError",
        "Message": "Throughput exceeds the current capacity of your table or index. DynamoDB is automatically "
        "scaling your table or index so please try again shortly.",
    }
    codes = ", ".join(["ThrottlingError"] * count)
    return {
        "message": f"Transaction cancelled, please refer cancellation reasons for specific reasons [{codes}]",
        "CancellationReasons": [reason] * count,
    }


def _split_batch(body: bytes, withhold: frozenset[int]) -> tuple[bytes, dict[str, list[Any]]]:
    """A BatchWriteItem request without the withheld items, and those items by table."""
    doc = json.loads(body)
    kept: dict[str, list[Any]] = {}
    held: dict[str, list[Any]] = {}
    index = 0
    for table, requests in doc["RequestItems"].items():
        for request in requests:
            (held if index in withhold else kept).setdefault(table, []).append(request)
            index += 1
    doc["RequestItems"] = kept
    return json.dumps(doc).encode(), held


def _read_whole(request: web.Request) -> bool:
    return "X-Amz-Target" in request.headers or "x-www-form-urlencoded" in request.headers.get("Content-Type", "")


def _batch_items(body: bytes) -> int:
    try:
        return sum(len(requests) for requests in json.loads(body)["RequestItems"].values())
    except (ValueError, KeyError, TypeError, AttributeError):
        return 0  # not ours to judge: moto answers it


class _Proxy:
    """The aiohttp side: one handler, one client session to the target, on the proxy's loop."""

    def __init__(self, target: str, state: _FaultState, own_hosts: Collection[str]) -> None:
        self._target = target.rstrip("/")
        self._state = state
        self._own_hosts = own_hosts
        self._session: aiohttp.ClientSession | None = None

    async def open(self) -> None:
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=256),
            timeout=aiohttp.ClientTimeout(total=None, connect=10),  # SQS long polls last up to 20 s
            auto_decompress=False,  # bytes pass as they are; Content-Encoding with them
            skip_auto_headers=("User-Agent", "Accept", "Accept-Encoding", "Content-Type"),
        )

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    def app(self) -> web.Application:
        app = web.Application(client_max_size=_MAX_BODY)
        app.router.add_route("GET", _CONTROL + "stats", self._stats)
        app.router.add_route("POST", _CONTROL + "reset", self._reset)
        app.router.add_route("POST", _CONTROL + "outage", self._start_outage)
        app.router.add_route("DELETE", _CONTROL + "outage", self._end_outage)
        app.router.add_route("*", "/{tail:.*}", self.handle)
        return app

    async def handle(self, request: web.Request) -> web.StreamResponse:
        # JSON and query calls are read whole (small: a form names its Action, a batch may be cut);
        # anything else — S3 objects of any size — streams through.
        body = await request.read() if _read_whole(request) else None
        call = classify(
            request.method, request.path, request.query, request.headers, body or b"", own_hosts=self._own_hosts
        )
        batch = _batch_items(body) if body is not None and call.name == "dynamodb.BatchWriteItem" else 0
        decision = self._state.decide(call, batch)
        if decision is not None and decision.kind in (FaultKind.THROTTLE, FaultKind.SERVER_ERROR, FaultKind.OUTAGE):
            assert decision.error is not None
            self._state.count_fault(call, decision.kind)
            return _error_response(call, decision.error, request.method, body)
        held: dict[str, list[Any]] = {}
        if decision is not None and decision.kind is FaultKind.UNPROCESSED and body is not None:
            body, held = _split_batch(body, decision.withhold)
        try:
            upstream = await self._forward(request, body)
        except aiohttp.ClientError as exc:
            self._state.count_upstream_error()
            return web.Response(status=502, text=f"aws_faults: the target {self._target} failed: {exc!r}")
        self._state.count_forwarded(call)
        async with upstream:
            if decision is not None and decision.kind is FaultKind.AFTER_WRITE:
                await upstream.read()  # the call took effect; its answer is lost on the way back
                assert decision.error is not None
                self._state.count_fault(call, decision.kind)
                return _error_response(call, decision.error, request.method, body)
            if held and upstream.status == 200:
                answer = json.loads(await upstream.read())
                unprocessed = answer.setdefault("UnprocessedItems", {})
                for table, requests in held.items():
                    unprocessed.setdefault(table, []).extend(requests)
                self._state.count_fault(call, FaultKind.UNPROCESSED)
                return self._rewritten(upstream, json.dumps(answer).encode())
            return await self._relay(request, upstream)

    async def _forward(self, request: web.Request, body: bytes | None) -> aiohttp.ClientResponse:
        """Send the request on: a body read whole (``body``), or else the client's body as it arrives."""
        assert self._session is not None, "the proxy is not open"
        dropped = _REQUEST_DROPPED if body is not None else _REQUEST_DROPPED - {"content-length"}
        headers = CIMultiDict((k, v) for k, v in request.headers.items() if k.lower() not in dropped)
        data: io.BytesIO | StreamReader | None
        if body is not None:
            data = io.BytesIO(body) if body else None  # (aiohttp warns about big raw bytes bodies)
        else:
            data = request.content if request.can_read_body else None  # its Content-Length is kept
        url = URL(self._target + request.raw_path, encoded=True)  # path and query exactly as the client sent them
        return await self._session.request(request.method, url, headers=headers, data=data, allow_redirects=False)

    @staticmethod
    def _rewritten(upstream: aiohttp.ClientResponse, body: bytes) -> web.Response:
        headers = CIMultiDict(
            (k, v) for k, v in upstream.headers.items() if k.lower() not in _RESPONSE_DROPPED | {"content-length"}
        )
        if "x-amz-crc32" in headers:
            headers["x-amz-crc32"] = str(zlib.crc32(body))
        return web.Response(status=upstream.status, body=body, headers=headers)

    @staticmethod
    async def _relay(request: web.Request, upstream: aiohttp.ClientResponse) -> web.StreamResponse:
        """Stream the target's answer back as it comes (a GetObject of tens of MB is never held whole)."""
        response = web.StreamResponse(status=upstream.status, reason=upstream.reason)
        for name, value in upstream.headers.items():
            if name.lower() not in _RESPONSE_DROPPED:
                response.headers.add(name, value)
        await response.prepare(request)
        if request.method != "HEAD":
            async for chunk in upstream.content.iter_chunked(_CHUNK):
                await response.write(chunk)
        await response.write_eof()
        return response

    # -- control endpoints (for a proxy run from the shell) --

    async def _stats(self, request: web.Request) -> web.Response:
        return web.json_response(self._state.stats().as_json())

    async def _reset(self, request: web.Request) -> web.Response:
        self._state.reset_stats()
        return web.json_response({"reset": True})

    async def _start_outage(self, request: web.Request) -> web.Response:
        try:
            service = _service_arg(request.query.get("service", "all"))
            seconds = float(request.query["seconds"])
            self._state.start_outage(service, seconds, request.query.get("code"))
        except (KeyError, ValueError) as exc:
            return web.json_response(
                {"error": f"{exc}; use POST /_faults/outage?service=s3|dynamodb|sqs|all&seconds=N[&code=CODE]"},
                status=400,
            )
        return web.json_response({"outage": service or "all", "seconds": seconds})

    async def _end_outage(self, request: web.Request) -> web.Response:
        try:
            service = _service_arg(request.query.get("service", "all"))
        except ValueError as exc:
            return web.json_response({"error": str(exc)}, status=400)
        self._state.end_outage(service)
        return web.json_response({"ended": service or "all"})


def _service_arg(value: str) -> Service | None:
    if value == "all":
        return None
    try:
        return Service(value)
    except ValueError:
        raise ValueError(f"unknown service {value!r}: s3, dynamodb, sqs or all") from None


async def _start_site(app: web.Application, host: str, port: int) -> tuple[web.AppRunner, int]:
    runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=2.0)
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port, backlog=1024, reuse_address=True)
        await site.start()
        real_port = int(runner.addresses[0][1])  # the real port when port=0
    except BaseException:
        await runner.cleanup()
        raise
    return runner, real_port


class AwsFaultProxy(ThreadedServer):
    """The proxy on its own event loop in a daemon thread; a context manager (``with AwsFaultProxy(...)``).

    ``target`` is the moto server's endpoint; give the code under test :attr:`endpoint` as its
    ``AWS_ENDPOINT_URL``. Rules and outages can change while it runs; ``clock`` (monotonic seconds)
    times the outages and can be a test's fake clock.
    """

    what = "the AWS fault proxy"
    thread_name = "aws-faults"

    def __init__(
        self,
        target: str,
        config: AwsFaultsConfig | None = None,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(host, port)
        self.target = target
        self.config = config or AwsFaultsConfig()
        self._state = _FaultState(self.config, clock)
        self._proxy = _Proxy(target, self._state, own_hosts=(host, "localhost"))

    @property
    def endpoint(self) -> str:
        """What to give the code under test as ``AWS_ENDPOINT_URL`` (``http://HOST:PORT``)."""
        return f"http://{self.host}:{self.port}"

    # -- control (thread-safe; take effect from the next call) --

    def set_rules(self, rules: Iterable[FaultRule]) -> None:
        """Replace every rule (their random streams and limits start afresh)."""
        self._state.set_rules(rules)

    def add_rule(self, rule: FaultRule) -> None:
        self._state.add_rule(rule)

    def clear_rules(self) -> None:
        self._state.set_rules(())

    def add_outage(self, outage: Outage) -> None:
        """Schedule an outage (its ``after_calls`` counts the calls seen since the proxy started)."""
        self._state.add_outage(outage)

    def start_outage(self, service: Service | None = None, duration_s: float = 5.0, *, code: str | None = None) -> None:
        """Fail every call to ``service`` (``None``: all three) from now for ``duration_s`` seconds."""
        self._state.start_outage(service, duration_s, code)

    def end_outage(self, service: Service | None = None) -> None:
        """End ``service``'s outages now (``None``: every outage, including the scheduled ones)."""
        self._state.end_outage(service)

    def in_outage(self, service: Service) -> bool:
        """Whether a call to ``service`` made now would fail with an outage (starting a due one)."""
        return self._state.in_outage(service)

    def stats(self) -> FaultStats:
        return self._state.stats()

    def reset_stats(self) -> None:
        self._state.reset_stats()

    # -- the thread (ThreadedServer runs it) --

    @contextlib.asynccontextmanager
    async def _serving(self) -> AsyncIterator[None]:
        await self._proxy.open()
        try:
            runner, self.port = await _start_site(self._proxy.app(), self.host, self.port)
            try:
                yield
            finally:
                await runner.cleanup()
        finally:
            await self._proxy.close()


# -- CLI ----------------------------------------------------------------------------------------------------


def _rate(value: str) -> float:
    rate = float(value)
    if not 0.0 <= rate <= 1.0:
        raise argparse.ArgumentTypeError(f"{value} is not a probability within [0, 1]")
    return rate


def _outage_arg(value: str) -> Outage:
    try:
        service, after_calls, seconds = value.split(":")
        return Outage(float(seconds), _service_arg(service), after_calls=int(after_calls))
    except ValueError as exc:
        message = f"{value!r}: {exc}; use SERVICE:AFTER_CALLS:SECONDS, e.g. dynamodb:100:3"
        raise argparse.ArgumentTypeError(message) from None


_KIND_FLAGS: Final = {
    "throttle": FaultKind.THROTTLE,
    "errors": FaultKind.SERVER_ERROR,
    "after-write": FaultKind.AFTER_WRITE,
}


def arg_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m infra.aws_faults",
        description="An HTTP proxy in front of a moto server that answers a share of AWS calls the way AWS "
        "does when it struggles (throttling, 500s, failures after the write, outages).",
    )
    p.add_argument("--target", required=True, help="the moto server, e.g. http://127.0.0.1:5000")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=5001, help="0 picks a free port (printed on the ready line)")
    p.add_argument("--seed", type=int, default=None, help="the same faults on every run")
    for service in Service:
        for flag, kind in _KIND_FLAGS.items():
            p.add_argument(
                f"--{service}-{flag}",
                type=_rate,
                default=0.0,
                metavar="RATE",
                help=f"share of {service} calls answered with {error_for(service, kind).code}"
                + (" after forwarding them" if kind is FaultKind.AFTER_WRITE else ""),
            )
    p.add_argument(
        "--dynamodb-unprocessed",
        type=_rate,
        default=0.0,
        metavar="RATE",
        help="share of BatchWriteItem calls that write only some items and return the rest as UnprocessedItems",
    )
    p.add_argument(
        "--outage",
        type=_outage_arg,
        action="append",
        default=[],
        metavar="SERVICE:AFTER_CALLS:SECONDS",
        help="every call to SERVICE (s3, dynamodb, sqs or all) fails for SECONDS once it has seen AFTER_CALLS calls",
    )
    return p


def config_from_args(args: argparse.Namespace) -> AwsFaultsConfig:
    rules = [
        FaultRule(kind, getattr(args, f"{service}_{flag.replace('-', '_')}"), service=service)
        for service in Service
        for flag, kind in _KIND_FLAGS.items()
        if getattr(args, f"{service}_{flag.replace('-', '_')}") > 0
    ]
    if args.dynamodb_unprocessed > 0:
        rules.append(FaultRule(FaultKind.UNPROCESSED, args.dynamodb_unprocessed, service=Service.DYNAMODB))
    return AwsFaultsConfig(rules=rules, outages=args.outage, seed=args.seed)


async def _serve_forever(target: str, config: AwsFaultsConfig, host: str, port: int) -> None:
    proxy = _Proxy(target, _FaultState(config, time.monotonic), own_hosts=(host, "localhost"))
    await proxy.open()
    try:
        runner, real_port = await _start_site(proxy.app(), host, port)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError):  # Windows
                loop.add_signal_handler(sig, stop.set)
        print(f"AWS fault proxy listening on http://{host}:{real_port}, forwarding to {target}", flush=True)
        try:
            await stop.wait()
        finally:
            await runner.cleanup()
    finally:
        await proxy.close()


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m infra.aws_faults --target URL [flags]``: serve until SIGINT/SIGTERM."""
    args = arg_parser().parse_args(argv)
    asyncio.run(_serve_forever(args.target, config_from_args(args), args.host, args.port))
    return 0


if __name__ == "__main__":
    sys.exit(main())
