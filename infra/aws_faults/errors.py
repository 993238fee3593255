"""The services faults go into, the kinds of fault, and the errors AWS answers with (status, code, body namespace)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Final

__all__ = ["FAULTABLE", "AwsError", "FaultKind", "Protocol", "Service", "error_for"]


class Service(StrEnum):
    """The services faults are injected into (any other call is forwarded and counted only)."""

    S3 = "s3"
    DYNAMODB = "dynamodb"
    SQS = "sqs"


FAULTABLE: Final = frozenset(s.value for s in Service)


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
