"""Which errors are the world's passing faults — worth handing a message back for — and which are not.

A run that fails on a transient AWS or network fault hands its message back: the redelivery
resumes from the journal, and will most likely get through. Anything else (a bug, an input
promptdrop did not foresee, an AWS error that will say the same thing next time) would fail the
same way on every delivery, so the run ends the job instead (``jobs/units.py``). AWS's own
verdict is asked where botocore keeps it: the ``standard`` retry mode's transient and throttling
checks (the same ones that already retried the call up to 10 times).
"""

from __future__ import annotations

from typing import Any

import aiohttp
from botocore.exceptions import ClientError, HTTPClientError
from botocore.exceptions import ConnectionError as BotoConnectionError
from botocore.retries import standard

from .bus import EventNotPublished
from .queues import QueueSendError

__all__ = ["transient"]

_CHECKERS = (standard.TransientRetryableChecker(), standard.ThrottledRetryableChecker())
# Raised by promptdrop's own adapters when AWS refused part of a call for its own reasons.
_OWN = (QueueSendError, EventNotPublished)
_NETWORK = (BotoConnectionError, HTTPClientError, aiohttp.ClientError, ConnectionError, TimeoutError)
# A transaction cancelled by a conflict or throttling (a failed condition is handled where it is expected).
_TRANSACTION = "TransactionCanceledException"


class _Status:
    """What botocore's checkers read of an HTTP response: its status code."""

    def __init__(self, status_code: Any) -> None:
        self.status_code = status_code


def transient(exc: BaseException) -> bool:
    """Whether ``exc`` is an AWS or network fault that a later delivery may not meet."""
    if isinstance(exc, _OWN + _NETWORK):
        return True
    if not isinstance(exc, ClientError):
        return False
    if exc.response.get("Error", {}).get("Code") == _TRANSACTION:
        return True
    status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    context = standard.RetryContext(attempt_number=1, parsed_response=exc.response, http_response=_Status(status))
    return any(checker.is_retryable(context) for checker in _CHECKERS)
