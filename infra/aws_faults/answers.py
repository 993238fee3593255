"""Answering as AWS does: the error response in each protocol, and the pieces of a partly-processed batch."""

from __future__ import annotations

import json
import uuid
import zlib
from typing import Any

from aiohttp import web

from infra.aws_faults.calls import Call
from infra.aws_faults.errors import AwsError, Protocol, Service

__all__ = ["batch_items", "error_response", "read_whole", "split_batch"]


def error_response(call: Call, error: AwsError, method: str, request_body: bytes | None) -> web.Response:
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


def split_batch(body: bytes, withhold: frozenset[int]) -> tuple[bytes, dict[str, list[Any]]]:
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


def read_whole(request: web.Request) -> bool:
    return "X-Amz-Target" in request.headers or "x-www-form-urlencoded" in request.headers.get("Content-Type", "")


def batch_items(body: bytes) -> int:
    try:
        return sum(len(requests) for requests in json.loads(body)["RequestItems"].values())
    except (ValueError, KeyError, TypeError, AttributeError):
        return 0  # not ours to judge: moto answers it
