"""Which errors hand a message back (the world's faults) and which end the job (promptdrop's own)."""

from __future__ import annotations

import aiohttp
import pytest
from botocore.exceptions import ClientError, EndpointConnectionError, ReadTimeoutError
from promptdrop.adapters.bus import EventNotPublished
from promptdrop.adapters.faults import transient
from promptdrop.adapters.queues import QueueSendError


def aws(code: str, status: int) -> ClientError:
    return ClientError({"Error": {"Code": code, "Message": "x"}, "ResponseMetadata": {"HTTPStatusCode": status}}, "Op")


@pytest.mark.parametrize(
    "exc",
    [
        aws("ProvisionedThroughputExceededException", 400),
        aws("ThrottlingException", 400),
        aws("SlowDown", 503),
        aws("InternalServerError", 500),
        aws("TransactionCanceledException", 400),  # a conflict or throttling: a failed condition is handled
        aws("AccessDeniedException", 400),  # a permission missing after a deploy: fixed, the redelivery runs
        aws("ResourceNotFoundException", 400),
        EndpointConnectionError(endpoint_url="https://dynamodb"),
        ReadTimeoutError(endpoint_url="https://s3"),
        aiohttp.ServerDisconnectedError(),
        TimeoutError(),
        ConnectionResetError(),
        QueueSendError("1 message(s) not accepted"),
        EventNotPublished("InternalFailure"),
    ],
)
def test_the_worlds_faults_hand_the_message_back(exc: BaseException) -> None:
    assert transient(exc)


@pytest.mark.parametrize(
    "exc",
    [
        aws("ValidationException", 400),  # an item over 400 KB: the same item is refused again
        aws("AWS.SimpleQueueService.BatchRequestTooLong", 400),
        aws("EntityTooLarge", 400),
        aws("Whatever", 413),
        RecursionError("maximum recursion depth exceeded"),
        TypeError("Object of type Decimal is not JSON serializable"),
        KeyError("choices"),
        ValueError("bad"),
    ],
)
def test_promptdrops_own_errors_end_the_job(exc: BaseException) -> None:
    assert not transient(exc)
