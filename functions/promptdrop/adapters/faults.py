"""Which errors are the world's faults — worth handing a message back for — and which are not.

A run that fails on an AWS or network fault hands its message back: the redelivery resumes from
the journal, and will most likely get through (throttling and outages pass; a permission or a
resource missing after a deploy gets fixed). Anything else — a bug, an input promptdrop did not
foresee, or an AWS error saying that promptdrop's own request is invalid (an item too large, a
batch too long), which the same request meets again — would fail the same way on every delivery,
so the run ends the job instead (``jobs/units.py``).
"""

from __future__ import annotations

from typing import Any

import aiohttp
from botocore.exceptions import ClientError, HTTPClientError
from botocore.exceptions import ConnectionError as BotoConnectionError

from .bus import EventNotPublished
from .queues import QueueSendError

__all__ = ["transient"]

# Raised by promptdrop's own adapters when AWS refused part of a call for its own reasons.
_OWN = (QueueSendError, EventNotPublished)
_NETWORK = (BotoConnectionError, HTTPClientError, aiohttp.ClientError, ConnectionError, TimeoutError)
# The codes with which DynamoDB, S3, SQS and EventBridge refuse a request as invalid in itself.
_INVALID_REQUEST = frozenset(
    {
        "ValidationException",  # DynamoDB, EventBridge: an item over 400 KB, a malformed expression
        "SerializationException",
        "InvalidArgument",  # S3
        "InvalidRequest",
        "EntityTooLarge",
        "KeyTooLongError",
        "MalformedXML",
        "InvalidParameterValue",  # SQS
        "InvalidMessageContents",
        "InvalidAttributeValue",
        "MissingParameter",
        "BatchRequestTooLong",
        "AWS.SimpleQueueService.BatchRequestTooLong",
        "AWS.SimpleQueueService.BatchEntryIdsNotDistinct",
    }
)
_TOO_LARGE = 413


def transient(exc: BaseException) -> bool:
    """Whether ``exc`` is an AWS or network fault that a later delivery may not meet."""
    if isinstance(exc, _OWN + _NETWORK):
        return True
    if not isinstance(exc, ClientError):
        return False  # not the world's: a later delivery runs into it again
    response: Any = exc.response
    code = response.get("Error", {}).get("Code")
    status = response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    return code not in _INVALID_REQUEST and status != _TOO_LARGE
