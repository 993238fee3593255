"""The AWS fault proxy, against a real moto server, through boto3 and aioboto3 as the product uses them.

Clients without retries (``total_max_attempts=1``) show the error each fault produces exactly as botocore
parses it; clients with their defaults (what the product runs with: the ``legacy`` retry mode) show what
botocore absorbs by itself. Outages are timed by a fake clock: no test waits for one to end.
"""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
import sys
import urllib.error
import urllib.request
import zlib
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import aioboto3
import boto3
import pytest
from boto3.s3.transfer import TransferConfig
from botocore.config import Config
from botocore.exceptions import ClientError
from botocore.parsers import create_parser
from multidict import CIMultiDict

from infra.aws_faults import (
    AwsFaultProxy,
    AwsFaultsConfig,
    FaultKind,
    FaultRule,
    Outage,
    Protocol,
    Service,
    arg_parser,
    classify,
    config_from_args,
    error_for,
    main,
)
from infra.local_aws import LocalAws

NO_RETRIES = Config(retries={"total_max_attempts": 1, "mode": "standard"})
STANDARD = Config(retries={"mode": "standard"})
MIB = 1024 * 1024
REPO_ROOT = Path(__file__).resolve().parents[2]

ProxyFactory = Callable[..., AwsFaultProxy]


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def make_proxy(moto_endpoint: str, clock: FakeClock) -> Iterator[ProxyFactory]:
    """Start proxies in front of the session's moto server (timed by ``clock``); all stopped afterwards."""
    started: list[AwsFaultProxy] = []

    def make(*rules: FaultRule, outages: tuple[Outage, ...] = (), seed: int | None = 7) -> AwsFaultProxy:
        config = AwsFaultsConfig(rules=rules, outages=outages, seed=seed)
        proxy = AwsFaultProxy(moto_endpoint, config, clock=clock).start()
        started.append(proxy)
        return proxy

    yield make
    for proxy in started:
        proxy.stop()


_open_clients: list[Any] = []


@pytest.fixture(autouse=True)
def _close_clients() -> Iterator[None]:
    yield
    while _open_clients:
        _open_clients.pop().close()


def client(endpoint: str, service: str, config: Config | None = None) -> Any:
    """A boto3 client (closed after the test)."""
    made = boto3.client(
        service,  # type: ignore[call-overload]
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        config=config,
    )
    _open_clients.append(made)
    return made


def aio_client(endpoint: str, service: str, config: Config | None = None) -> AbstractContextManager[Any]:
    return aioboto3.Session().client(  # type: ignore[no-any-return]
        service,
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        config=config,
    )


def item(pk: str, sk: str = "A") -> dict[str, Any]:
    return {"pk": {"S": pk}, "sk": {"S": sk}}


def error_of(exc: pytest.ExceptionInfo[ClientError]) -> tuple[str, int]:
    response = exc.value.response
    return response["Error"]["Code"], response["ResponseMetadata"]["HTTPStatusCode"]


def moto_calls(endpoint: str) -> dict[str, int]:
    """The moto server's own count of the calls it received (infra.local_aws's middleware)."""
    with urllib.request.urlopen(f"{endpoint}/_local/calls") as response:
        calls: dict[str, int] = json.load(response)
        return calls


def assert_counters_add_up(proxy: AwsFaultProxy) -> None:
    stats = proxy.stats()
    for name, calls in stats.calls.items():
        kinds = stats.faults.get(name, {})
        answered_instead = sum(kinds.get(k, 0) for k in ("throttle", "server_error", "outage"))
        assert calls == stats.forwarded.get(name, 0) + answered_instead, name


# -- which call is which ---------------------------------------------------------------------------------


S3_AUTH = {"Authorization": "AWS4-HMAC-SHA256 Credential=testing/20250101/us-east-1/s3/aws4_request, X"}


@pytest.mark.parametrize(
    ("method", "path", "query", "headers", "operation"),
    [
        ("GET", "/", "", {}, "ListBuckets"),
        ("PUT", "/b", "", {}, "CreateBucket"),
        ("HEAD", "/b", "", {}, "HeadBucket"),
        ("GET", "/b", "list-type=2&prefix=x", {}, "ListObjectsV2"),
        ("GET", "/b/", "", {}, "ListObjects"),
        ("GET", "/b", "uploads", {}, "ListMultipartUploads"),
        ("GET", "/b", "location", {}, "GetBucketLocation"),
        ("PUT", "/b", "notification", {}, "PutBucketNotificationConfiguration"),
        ("POST", "/b", "delete", {}, "DeleteObjects"),
        ("PUT", "/b/k/with/slashes.jsonl", "", {}, "PutObject"),
        ("GET", "/b/k", "", {}, "GetObject"),
        ("HEAD", "/b/k", "versionId=3", {}, "HeadObject"),
        ("DELETE", "/b/k", "", {}, "DeleteObject"),
        ("PUT", "/b/k", "", {"x-amz-copy-source": "/b/j"}, "CopyObject"),
        ("POST", "/b/k", "uploads", {}, "CreateMultipartUpload"),
        ("PUT", "/b/k", "partNumber=2&uploadId=u", {}, "UploadPart"),
        ("PUT", "/b/k", "partNumber=2&uploadId=u", {"x-amz-copy-source": "/b/j"}, "UploadPartCopy"),
        ("POST", "/b/k", "uploadId=u", {}, "CompleteMultipartUpload"),
        ("DELETE", "/b/k", "uploadId=u", {}, "AbortMultipartUpload"),
        ("GET", "/b/k", "uploadId=u", {}, "ListParts"),
        ("PUT", "/b/k", "tagging", {}, "PutObjectTagging"),
        ("GET", "/k", "", {"Host": "b.localhost:5001"}, "GetObject"),  # virtual-host style
        ("GET", "/", "list-type=2", {"Host": "my.bucket.127.0.0.1:5001"}, "ListObjectsV2"),
    ],
)
def test_s3_operations_are_named_from_method_path_query_and_headers(
    method: str, path: str, query: str, headers: dict[str, str], operation: str
) -> None:
    from urllib.parse import parse_qsl

    call = classify(method, path, dict(parse_qsl(query, keep_blank_values=True)), {**S3_AUTH, **headers})
    assert (call.service, call.operation, call.protocol) == ("s3", operation, Protocol.REST_XML)


def test_json_and_query_protocol_calls_are_named_from_their_target_or_action() -> None:
    ddb = classify("POST", "/", {}, CIMultiDict({"x-amz-target": "DynamoDB_20120810.BatchWriteItem"}))
    assert (ddb.name, ddb.protocol) == ("dynamodb.BatchWriteItem", Protocol.JSON)
    sqs = classify("POST", "/", {}, {"X-Amz-Target": "AmazonSQS.SendMessageBatch"})
    assert (sqs.name, sqs.protocol) == ("sqs.SendMessageBatch", Protocol.JSON)
    form = {
        "Content-Type": "application/x-www-form-urlencoded; charset=utf-8",
        "Authorization": "AWS4-HMAC-SHA256 Credential=k/20250101/us-east-1/sqs/aws4_request, SignedHeaders=x",
    }
    query = classify("POST", "/", {}, form, b"Action=SendMessageBatch&Version=2012-11-05&QueueUrl=x")
    assert (query.name, query.protocol) == ("sqs.SendMessageBatch", Protocol.QUERY)
    presigned = classify("GET", "/b/k", {"X-Amz-Credential": "k/20250101/us-east-1/s3/aws4_request"}, {})
    assert presigned.name == "s3.GetObject"
    secrets = classify("POST", "/", {}, {"X-Amz-Target": "secretsmanager.GetSecretValue"})
    assert secrets.name == "secretsmanager.GetSecretValue"


def test_rules_refuse_what_aws_would_not_do() -> None:
    with pytest.raises(ValueError, match="DynamoDB BatchWriteItem only"):
        FaultRule(FaultKind.UNPROCESSED, service=Service.S3)
    with pytest.raises(ValueError, match="needs service="):
        FaultRule(FaultKind.THROTTLE, code="SlowDown")
    with pytest.raises(ValueError, match="one of"):
        FaultRule(FaultKind.THROTTLE, service=Service.SQS, code="SlowDown")
    with pytest.raises(ValueError, match="within"):
        FaultRule(FaultKind.THROTTLE, rate=1.5)
    with pytest.raises(ValueError, match="exactly one"):
        Outage(3.0)
    assert error_for(Service.S3, FaultKind.THROTTLE).status == 503


# -- pass-through ----------------------------------------------------------------------------------------


def test_every_service_passes_through_unchanged(make_proxy: ProxyFactory, local_aws: LocalAws) -> None:
    # Given a proxy without rules
    proxy = make_proxy()
    s3, ddb, sqs = (client(proxy.endpoint, name) for name in ("s3", "dynamodb", "sqs"))
    moto_before = moto_calls(local_aws.endpoint)
    data = os.urandom(24 * MIB)

    # When S3 gets a multi-MB object (one PUT, then multipart), DynamoDB an item, SQS a message
    s3.put_object(Bucket=local_aws.bucket, Key="in/a b+c.bin", Body=data)
    got = s3.get_object(Bucket=local_aws.bucket, Key="in/a b+c.bin")
    s3.upload_fileobj(
        io.BytesIO(data[: 12 * MIB]),
        local_aws.bucket,
        "in/multipart.bin",
        Config=TransferConfig(multipart_threshold=5 * MIB, multipart_chunksize=5 * MIB),
    )
    put = ddb.put_item(TableName=local_aws.table, Item={**item("p", "1"), "n": {"N": "1"}})
    sqs.send_message(QueueUrl=local_aws.dlq_url, MessageBody="héllo")

    # Then everything arrives intact, and comes back through the proxy
    assert got["Body"].read() == data
    assert s3.head_object(Bucket=local_aws.bucket, Key="in/multipart.bin")["ContentLength"] == 12 * MIB
    listed = s3.list_objects_v2(Bucket=local_aws.bucket, Prefix="in/")
    assert [o["Key"] for o in listed["Contents"]] == ["in/a b+c.bin", "in/multipart.bin"]
    assert "x-amz-crc32" in put["ResponseMetadata"]["HTTPHeaders"]  # DynamoDB's checksum is kept
    queried = ddb.query(
        TableName=local_aws.table,
        KeyConditionExpression="pk = :p",
        ExpressionAttributeValues={":p": {"S": "p"}},
    )
    assert queried["Items"] == [{**item("p", "1"), "n": {"N": "1"}}]
    (message,) = sqs.receive_message(QueueUrl=local_aws.dlq_url)["Messages"]
    assert message["Body"] == "héllo"
    stats = proxy.stats()
    assert stats.calls["s3.UploadPart"] == 3
    assert stats.calls == stats.forwarded
    assert stats.faults == {}
    moto_after = moto_calls(local_aws.endpoint)
    assert moto_after["DynamoDB.PutItem"] - moto_before.get("DynamoDB.PutItem", 0) == 1


async def test_aioboto3_clients_pass_through(make_proxy: ProxyFactory, local_aws: LocalAws) -> None:
    proxy = make_proxy()
    data = os.urandom(8 * MIB)
    async with (
        aio_client(proxy.endpoint, "s3") as s3,
        aio_client(proxy.endpoint, "dynamodb") as ddb,
        aio_client(proxy.endpoint, "sqs") as sqs,
    ):
        await s3.put_object(Bucket=local_aws.bucket, Key="in/x.jsonl", Body=data)
        response = await s3.get_object(Bucket=local_aws.bucket, Key="in/x.jsonl", Range="bytes=10-19")
        async with response["Body"] as body:
            assert await body.read() == data[10:20]
        head = await s3.head_object(Bucket=local_aws.bucket, Key="in/x.jsonl")
        assert head["ContentLength"] == len(data)
        items = [{"PutRequest": {"Item": item("b", str(i))}} for i in range(25)]
        batch = await ddb.batch_write_item(RequestItems={local_aws.table: items})
        assert batch["UnprocessedItems"] == {}
        sent = await sqs.send_message_batch(
            QueueUrl=local_aws.dlq_url, Entries=[{"Id": str(i), "MessageBody": f"m{i}"} for i in range(10)]
        )
        assert len(sent["Successful"]) == 10
    assert proxy.stats().calls == {
        "s3.PutObject": 1,
        "s3.GetObject": 1,
        "s3.HeadObject": 1,
        "dynamodb.BatchWriteItem": 1,
        "sqs.SendMessageBatch": 1,
    }


# -- each fault, as botocore sees it ---------------------------------------------------------------------


def _ddb_get(endpoint: str, stack: LocalAws, config: Config) -> Any:
    return client(endpoint, "dynamodb", config).get_item(TableName=stack.table, Key=item("x"))


def _s3_put(endpoint: str, stack: LocalAws, config: Config) -> Any:
    return client(endpoint, "s3", config).put_object(Bucket=stack.bucket, Key="k", Body=b"x")


def _s3_get(endpoint: str, stack: LocalAws, config: Config) -> Any:
    return client(endpoint, "s3", config).list_objects_v2(Bucket=stack.bucket)


def _sqs_send(endpoint: str, stack: LocalAws, config: Config) -> Any:
    return client(endpoint, "sqs", config).send_message(QueueUrl=stack.dlq_url, MessageBody="m")


@pytest.mark.parametrize(
    ("service", "kind", "code", "call", "expected"),
    [
        (Service.DYNAMODB, FaultKind.THROTTLE, None, _ddb_get, ("ProvisionedThroughputExceededException", 400)),
        (Service.DYNAMODB, FaultKind.THROTTLE, "ThrottlingException", _ddb_get, ("ThrottlingException", 400)),
        (Service.DYNAMODB, FaultKind.THROTTLE, "RequestLimitExceeded", _ddb_get, ("RequestLimitExceeded", 400)),
        (Service.DYNAMODB, FaultKind.SERVER_ERROR, None, _ddb_get, ("InternalServerError", 500)),
        (Service.DYNAMODB, FaultKind.SERVER_ERROR, "ServiceUnavailable", _ddb_get, ("ServiceUnavailable", 503)),
        (Service.S3, FaultKind.THROTTLE, None, _s3_put, ("SlowDown", 503)),
        (Service.S3, FaultKind.SERVER_ERROR, None, _s3_get, ("InternalError", 500)),
        (Service.S3, FaultKind.SERVER_ERROR, "ServiceUnavailable", _s3_get, ("ServiceUnavailable", 503)),
        (Service.SQS, FaultKind.THROTTLE, None, _sqs_send, ("RequestThrottled", 400)),
        (Service.SQS, FaultKind.SERVER_ERROR, None, _sqs_send, ("InternalError", 500)),
    ],
)
def test_each_fault_is_the_error_aws_answers(
    make_proxy: ProxyFactory,
    local_aws: LocalAws,
    service: Service,
    kind: FaultKind,
    code: str | None,
    call: Callable[[str, LocalAws, Config], Any],
    expected: tuple[str, int],
) -> None:
    proxy = make_proxy(FaultRule(kind, service=service, code=code))
    with pytest.raises(ClientError) as raised:
        call(proxy.endpoint, local_aws, NO_RETRIES)
    assert error_of(raised) == expected
    assert proxy.stats().faults_of(kind, service=service) == 1
    assert sum(proxy.stats().forwarded.values()) == 0


def test_a_throttled_transaction_is_cancelled_with_a_reason_per_item(
    make_proxy: ProxyFactory, local_aws: LocalAws
) -> None:
    proxy = make_proxy(
        FaultRule(
            FaultKind.THROTTLE,
            service=Service.DYNAMODB,
            operations={"TransactWriteItems"},
            code="TransactionCanceledException",
        )
    )
    ddb = client(proxy.endpoint, "dynamodb")  # botocore retries no cancelled transaction, in any mode
    puts = [{"Put": {"TableName": local_aws.table, "Item": item("t", str(i))}} for i in range(2)]
    with pytest.raises(ddb.exceptions.TransactionCanceledException) as raised:
        ddb.transact_write_items(TransactItems=puts)
    reasons = raised.value.response["CancellationReasons"]
    assert [r["Code"] for r in reasons] == ["ThrottlingError", "ThrottlingError"]
    assert proxy.stats().calls == {"dynamodb.TransactWriteItems": 1}


def test_s3_head_errors_have_no_body_and_are_named_by_status(make_proxy: ProxyFactory, local_aws: LocalAws) -> None:
    proxy = make_proxy(FaultRule(FaultKind.THROTTLE, service=Service.S3, operations={"HeadObject"}))
    s3 = client(proxy.endpoint, "s3", NO_RETRIES)
    s3.put_object(Bucket=local_aws.bucket, Key="k", Body=b"x")
    with pytest.raises(ClientError) as raised:
        s3.head_object(Bucket=local_aws.bucket, Key="k")
    assert error_of(raised) == ("503", 503)  # as from S3: a HEAD answer has no body to name the error


async def test_aioboto3_sees_the_same_errors(make_proxy: ProxyFactory, local_aws: LocalAws) -> None:
    proxy = make_proxy(
        FaultRule(FaultKind.THROTTLE, service=Service.DYNAMODB),
        FaultRule(FaultKind.THROTTLE, service=Service.S3),
        FaultRule(FaultKind.SERVER_ERROR, service=Service.SQS),
    )
    async with (
        aio_client(proxy.endpoint, "s3", NO_RETRIES) as s3,
        aio_client(proxy.endpoint, "dynamodb", NO_RETRIES) as ddb,
        aio_client(proxy.endpoint, "sqs", NO_RETRIES) as sqs,
    ):
        with pytest.raises(ClientError) as raised:
            await ddb.batch_write_item(RequestItems={local_aws.table: [{"PutRequest": {"Item": item("a")}}]})
        assert error_of(raised) == ("ProvisionedThroughputExceededException", 400)
        with pytest.raises(ClientError) as raised:
            await s3.get_object(Bucket=local_aws.bucket, Key="k")
        assert error_of(raised) == ("SlowDown", 503)
        # Answered before the body is read (as S3 does), on a PUT that sends "Expect: 100-continue"
        for _ in range(2):  # (the connection is still usable after it)
            with pytest.raises(ClientError) as raised:
                await s3.put_object(Bucket=local_aws.bucket, Key="k", Body=os.urandom(6 * MIB))
            assert error_of(raised) == ("SlowDown", 503)
        with pytest.raises(ClientError) as raised:
            await sqs.send_message_batch(QueueUrl=local_aws.dlq_url, Entries=[{"Id": "1", "MessageBody": "m"}])
        assert error_of(raised) == ("InternalError", 500)


def test_synthesized_dynamodb_errors_carry_a_correct_crc32(make_proxy: ProxyFactory) -> None:
    proxy = make_proxy(FaultRule(FaultKind.THROTTLE, service=Service.DYNAMODB))
    request = urllib.request.Request(
        proxy.endpoint,
        data=b"{}",
        headers={"X-Amz-Target": "DynamoDB_20120810.GetItem", "Content-Type": "application/x-amz-json-1.0"},
    )
    with pytest.raises(urllib.error.HTTPError) as raised:
        urllib.request.urlopen(request)
    with raised.value:  # an unclosed error response leaves its socket to the garbage collector
        body = raised.value.read()
    assert raised.value.code == 400
    assert int(raised.value.headers["x-amz-crc32"]) == zlib.crc32(body)
    assert json.loads(body)["__type"].endswith("#ProvisionedThroughputExceededException")


def test_query_protocol_calls_get_query_protocol_errors(make_proxy: ProxyFactory) -> None:
    # (The installed botocore speaks JSON to SQS; an older one sends Action=... forms.)
    proxy = make_proxy(FaultRule(FaultKind.THROTTLE, service=Service.SQS))
    request = urllib.request.Request(
        proxy.endpoint,
        data=b"Action=SendMessage&Version=2012-11-05&MessageBody=m",
        headers={
            "Content-Type": "application/x-www-form-urlencoded; charset=utf-8",
            "Authorization": "AWS4-HMAC-SHA256 Credential=k/20250101/us-east-1/sqs/aws4_request, SignedHeaders=h",
        },
    )
    with pytest.raises(urllib.error.HTTPError) as raised:
        urllib.request.urlopen(request)
    error = raised.value
    with error:
        response = {"status_code": error.code, "headers": dict(error.headers), "body": error.read()}
    parsed = create_parser("query").parse(response, None)
    assert parsed["Error"]["Code"] == "RequestThrottled"
    assert proxy.stats().faults == {"sqs.SendMessage": {"throttle": 1}}


# -- what botocore retries by itself ---------------------------------------------------------------------


def test_default_clients_survive_a_30_percent_throttle_on_single_calls(
    make_proxy: ProxyFactory, local_aws: LocalAws
) -> None:
    # Given 30% of DynamoDB and S3 calls throttled and 30% of SQS calls answered 500
    proxy = make_proxy(
        FaultRule(FaultKind.THROTTLE, 0.3, service=Service.DYNAMODB),
        FaultRule(FaultKind.THROTTLE, 0.3, service=Service.S3),
        FaultRule(FaultKind.SERVER_ERROR, 0.3, service=Service.SQS),
        seed=11,
    )
    moto_before = moto_calls(local_aws.endpoint)
    # When clients with botocore's defaults (the product's: legacy mode) make single calls
    s3, ddb, sqs = (client(proxy.endpoint, name) for name in ("s3", "dynamodb", "sqs"))
    for i in range(20):
        ddb.put_item(TableName=local_aws.table, Item=item(f"t{i}"))
    for i in range(8):
        s3.put_object(Bucket=local_aws.bucket, Key=f"t/{i}", Body=b"x")
    for i in range(8):
        sqs.send_message(QueueUrl=local_aws.dlq_url, MessageBody=str(i))
    # Then every call succeeded, and faults really were injected and retried
    scanned = ddb.scan(TableName=local_aws.table)["Items"]
    assert len(scanned) == 20
    stats = proxy.stats()
    for service in ("dynamodb", "s3", "sqs"):
        assert stats.faults_of(service=service) > 0, service
    assert stats.calls["dynamodb.PutItem"] == 20 + stats.faults["dynamodb.PutItem"]["throttle"]
    assert_counters_add_up(proxy)
    moto_after = moto_calls(local_aws.endpoint)
    put_items = moto_after["DynamoDB.PutItem"] - moto_before.get("DynamoDB.PutItem", 0)
    assert put_items == stats.forwarded["dynamodb.PutItem"] == 20  # the throttled ones never reached moto


async def test_aioboto3_default_clients_survive_a_30_percent_throttle(
    make_proxy: ProxyFactory, local_aws: LocalAws
) -> None:
    proxy = make_proxy(
        FaultRule(FaultKind.THROTTLE, 0.3, service=Service.DYNAMODB),
        FaultRule(FaultKind.THROTTLE, 0.3, service=Service.S3),
        seed=5,
    )
    async with aio_client(proxy.endpoint, "s3") as s3, aio_client(proxy.endpoint, "dynamodb") as ddb:
        for i in range(12):
            items = [{"PutRequest": {"Item": item(f"a{i}", str(j))}} for j in range(25)]
            await ddb.batch_write_item(RequestItems={local_aws.table: items})
        for i in range(6):
            await s3.put_object(Bucket=local_aws.bucket, Key=f"a/{i}", Body=b"x")
        count = (await ddb.scan(TableName=local_aws.table, Select="COUNT"))["Count"]
    assert count == 12 * 25
    assert proxy.stats().faults_of(FaultKind.THROTTLE, service="dynamodb") > 0
    assert proxy.stats().faults_of(FaultKind.THROTTLE, service="s3") > 0
    assert_counters_add_up(proxy)


def test_legacy_mode_does_not_retry_sqs_request_throttled_but_standard_mode_does(
    make_proxy: ProxyFactory, local_aws: LocalAws
) -> None:
    # botocore's legacy rule for SQS wants RequestThrottled with a 403; SQS's JSON protocol answers 400.
    proxy = make_proxy(FaultRule(FaultKind.THROTTLE, service=Service.SQS, limit=1))
    with pytest.raises(ClientError) as raised:
        _sqs_send(proxy.endpoint, local_aws, Config())  # the defaults: legacy mode, 5 attempts
    assert error_of(raised) == ("RequestThrottled", 400)
    assert proxy.stats().calls["sqs.SendMessage"] == 1

    proxy.set_rules([FaultRule(FaultKind.THROTTLE, service=Service.SQS, limit=1)])
    sent = _sqs_send(proxy.endpoint, local_aws, STANDARD)
    assert sent["ResponseMetadata"]["RetryAttempts"] == 1


def test_legacy_mode_retries_dynamodb_throttling_and_s3_slowdown(make_proxy: ProxyFactory, local_aws: LocalAws) -> None:
    proxy = make_proxy(
        FaultRule(FaultKind.THROTTLE, service=Service.DYNAMODB, code="ThrottlingException", limit=3),
        FaultRule(FaultKind.THROTTLE, service=Service.S3, limit=2),
    )
    assert _ddb_get(proxy.endpoint, local_aws, Config())["ResponseMetadata"]["RetryAttempts"] == 3
    assert _s3_put(proxy.endpoint, local_aws, Config())["ResponseMetadata"]["RetryAttempts"] == 2


# -- failure after the write -----------------------------------------------------------------------------


def test_failure_after_write_leaves_the_write_done_while_the_client_saw_an_error(
    make_proxy: ProxyFactory, local_aws: LocalAws
) -> None:
    # Given the next write of each service fails after it took effect
    proxy = make_proxy(
        FaultRule(FaultKind.AFTER_WRITE, service=Service.DYNAMODB, operations={"PutItem"}, limit=1),
        FaultRule(FaultKind.AFTER_WRITE, service=Service.S3, operations={"PutObject"}, limit=1),
        FaultRule(FaultKind.AFTER_WRITE, service=Service.SQS, operations={"SendMessage"}, limit=1),
    )
    # When each is written once, without retries
    ddb, s3, sqs = (client(proxy.endpoint, name, NO_RETRIES) for name in ("dynamodb", "s3", "sqs"))
    with pytest.raises(ClientError) as raised:
        ddb.put_item(TableName=local_aws.table, Item=item("w"))
    assert error_of(raised) == ("InternalServerError", 500)
    with pytest.raises(ClientError) as raised:
        s3.put_object(Bucket=local_aws.bucket, Key="w", Body=b"written")
    assert error_of(raised) == ("InternalError", 500)
    with pytest.raises(ClientError) as raised:
        sqs.send_message(QueueUrl=local_aws.dlq_url, MessageBody="sent")
    assert error_of(raised) == ("InternalError", 500)

    # Then every write happened all the same (read straight from moto)
    direct = {name: client(local_aws.endpoint, name) for name in ("dynamodb", "s3", "sqs")}
    assert direct["dynamodb"].get_item(TableName=local_aws.table, Key=item("w"))["Item"] == item("w")
    assert direct["s3"].get_object(Bucket=local_aws.bucket, Key="w")["Body"].read() == b"written"
    (message,) = direct["sqs"].receive_message(QueueUrl=local_aws.dlq_url)["Messages"]
    assert message["Body"] == "sent"
    stats = proxy.stats()
    assert stats.faults_of(FaultKind.AFTER_WRITE) == 3
    assert stats.forwarded == stats.calls
    assert_counters_add_up(proxy)


def test_a_retried_conditional_write_fails_on_its_own_first_attempt(
    make_proxy: ProxyFactory, local_aws: LocalAws
) -> None:
    # The idempotency case: botocore retries the 500, and the condition now sees the first write.
    proxy = make_proxy(FaultRule(FaultKind.AFTER_WRITE, service=Service.DYNAMODB, operations={"PutItem"}, limit=1))
    ddb = client(proxy.endpoint, "dynamodb")
    with pytest.raises(ClientError) as raised:
        ddb.put_item(TableName=local_aws.table, Item=item("c"), ConditionExpression="attribute_not_exists(pk)")
    assert error_of(raised) == ("ConditionalCheckFailedException", 400)
    assert proxy.stats().forwarded["dynamodb.PutItem"] == 2


# -- BatchWriteItem's UnprocessedItems -------------------------------------------------------------------


def test_batch_write_can_come_back_partly_unprocessed(make_proxy: ProxyFactory, local_aws: LocalAws) -> None:
    proxy = make_proxy(FaultRule(FaultKind.UNPROCESSED, service=Service.DYNAMODB, limit=1))
    ddb = client(proxy.endpoint, "dynamodb", NO_RETRIES)
    requests = [{"PutRequest": {"Item": item("u", f"{i:02}")}} for i in range(10)]

    first = ddb.batch_write_item(RequestItems={local_aws.table: requests})

    held = first["UnprocessedItems"][local_aws.table]
    assert 0 < len(held) < len(requests)
    written = client(local_aws.endpoint, "dynamodb").scan(TableName=local_aws.table)["Items"]
    assert sorted(i["sk"]["S"] for i in written) == sorted(
        r["PutRequest"]["Item"]["sk"]["S"] for r in requests if r not in held
    )
    # Writing what came back finishes the batch (the rule is spent)
    assert ddb.batch_write_item(RequestItems={local_aws.table: held})["UnprocessedItems"] == {}
    assert len(client(local_aws.endpoint, "dynamodb").scan(TableName=local_aws.table)["Items"]) == 10
    assert proxy.stats().faults == {"dynamodb.BatchWriteItem": {"unprocessed": 1}}


# -- outages ---------------------------------------------------------------------------------------------


def test_an_outage_after_k_calls_starts_and_ends(
    make_proxy: ProxyFactory, local_aws: LocalAws, clock: FakeClock
) -> None:
    # Given DynamoDB goes down for 5 seconds after its third call
    proxy = make_proxy(outages=(Outage(5.0, Service.DYNAMODB, after_calls=3),))
    ddb, s3 = client(proxy.endpoint, "dynamodb", NO_RETRIES), client(proxy.endpoint, "s3", NO_RETRIES)
    for _ in range(3):
        _ddb_get(proxy.endpoint, local_aws, NO_RETRIES)
    # When the outage runs, every DynamoDB call fails and S3 is untouched
    for _ in range(4):
        with pytest.raises(ClientError) as raised:
            ddb.get_item(TableName=local_aws.table, Key=item("x"))
        assert error_of(raised) == ("InternalServerError", 500)
        clock.now += 1.0
    assert proxy.in_outage(Service.DYNAMODB)
    assert not proxy.in_outage(Service.S3)
    s3.list_objects_v2(Bucket=local_aws.bucket)
    # Then once its window has passed, calls succeed again
    clock.now += 1.0
    assert not proxy.in_outage(Service.DYNAMODB)
    ddb.get_item(TableName=local_aws.table, Key=item("x"))
    stats = proxy.stats()
    assert stats.faults == {"dynamodb.GetItem": {"outage": 4}}
    assert stats.calls["dynamodb.GetItem"] == 8
    assert_counters_add_up(proxy)


def test_an_outage_at_a_time_and_on_demand(make_proxy: ProxyFactory, local_aws: LocalAws, clock: FakeClock) -> None:
    proxy = make_proxy(outages=(Outage(3.0, Service.S3, at_s=10.0, code="ServiceUnavailable"),))
    s3 = client(proxy.endpoint, "s3", NO_RETRIES)
    s3.list_objects_v2(Bucket=local_aws.bucket)
    clock.now += 11.0
    with pytest.raises(ClientError) as raised:
        s3.list_objects_v2(Bucket=local_aws.bucket)
    assert error_of(raised) == ("ServiceUnavailable", 503)
    clock.now += 2.0
    s3.list_objects_v2(Bucket=local_aws.bucket)

    # Scheduled while running: its calls count from the proxy's start (S3 has seen 3)
    proxy.add_outage(Outage(1.0, Service.S3, after_calls=4))
    s3.list_objects_v2(Bucket=local_aws.bucket)
    with pytest.raises(ClientError):
        s3.list_objects_v2(Bucket=local_aws.bucket)
    clock.now += 1.0

    # On demand: every service, until ended
    proxy.start_outage(duration_s=60.0)
    for call in (_s3_get, _ddb_get, _sqs_send):
        with pytest.raises(ClientError):
            call(proxy.endpoint, local_aws, NO_RETRIES)
    proxy.end_outage()
    for call in (_s3_get, _ddb_get, _sqs_send):
        call(proxy.endpoint, local_aws, NO_RETRIES)
    assert proxy.stats().faults_of(FaultKind.OUTAGE) == 5


def test_the_control_endpoints_start_and_end_an_outage_and_report_counters(
    make_proxy: ProxyFactory, local_aws: LocalAws
) -> None:
    proxy = make_proxy()

    def control(method: str, path: str) -> Any:
        request = urllib.request.Request(f"{proxy.endpoint}/_faults/{path}", method=method)
        with urllib.request.urlopen(request) as response:
            return json.load(response)

    control("POST", "outage?service=sqs&seconds=60")
    with pytest.raises(ClientError) as raised:
        _sqs_send(proxy.endpoint, local_aws, NO_RETRIES)
    assert error_of(raised) == ("InternalError", 500)
    _ddb_get(proxy.endpoint, local_aws, NO_RETRIES)
    control("DELETE", "outage?service=sqs")
    _sqs_send(proxy.endpoint, local_aws, NO_RETRIES)

    stats = control("GET", "stats")
    assert stats == proxy.stats().as_json()
    assert stats["faults"] == {"sqs.SendMessage": {"outage": 1}}
    assert stats["calls"] == {"sqs.SendMessage": 2, "dynamodb.GetItem": 1}
    control("POST", "reset")
    assert proxy.stats().calls == {}
    with pytest.raises(urllib.error.HTTPError) as bad:
        control("POST", "outage?service=lambda&seconds=1")
    with bad.value:  # closed here: left to the garbage collector, its socket warns in a later test
        assert bad.value.code == 400


# -- determinism -----------------------------------------------------------------------------------------


def _faulted_gets(proxy: AwsFaultProxy, stack: LocalAws, *, interleave: bool) -> list[bool]:
    ddb = client(proxy.endpoint, "dynamodb", NO_RETRIES)
    outcome = []
    for i in range(24):
        if interleave:
            with pytest.raises(ClientError):  # PutItem is always throttled here: its stream is its own
                ddb.put_item(TableName=stack.table, Item=item(f"d{i}"))
        try:
            ddb.get_item(TableName=stack.table, Key=item("x"))
            outcome.append(False)
        except ClientError:
            outcome.append(True)
    return outcome


def test_a_seed_makes_the_nth_call_of_an_operation_fail_alike(make_proxy: ProxyFactory, local_aws: LocalAws) -> None:
    rules = (
        FaultRule(FaultKind.THROTTLE, 1.0, service=Service.DYNAMODB, operations={"PutItem"}),
        FaultRule(FaultKind.SERVER_ERROR, 0.5, service=Service.DYNAMODB, operations={"GetItem"}),
    )
    first = _faulted_gets(make_proxy(*rules, seed=3), local_aws, interleave=False)
    again = _faulted_gets(make_proxy(*rules, seed=3), local_aws, interleave=True)
    other = _faulted_gets(make_proxy(*rules, seed=4), local_aws, interleave=False)
    assert first == again
    assert 0 < sum(first) < len(first)
    assert first != other


# -- CLI -------------------------------------------------------------------------------------------------


def test_cli_flags_become_rules_and_outages() -> None:
    args = arg_parser().parse_args(
        [
            "--target=http://127.0.0.1:5000",
            "--dynamodb-throttle=0.2",
            "--s3-errors=0.1",
            "--sqs-after-write=0.05",
            "--dynamodb-unprocessed=0.5",
            "--outage=dynamodb:100:3",
            "--seed=9",
        ]
    )
    config = config_from_args(args)
    assert config.seed == 9
    assert {(r.kind, r.rate, r.service) for r in config.rules} == {
        (FaultKind.THROTTLE, 0.2, Service.DYNAMODB),
        (FaultKind.SERVER_ERROR, 0.1, Service.S3),
        (FaultKind.AFTER_WRITE, 0.05, Service.SQS),
        (FaultKind.UNPROCESSED, 0.5, Service.DYNAMODB),
    }
    assert config.outages == [Outage(3.0, Service.DYNAMODB, after_calls=100)]
    for bad in ("--s3-throttle=2", "--outage=dynamodb:3"):
        with pytest.raises(SystemExit):
            main(["--target=http://127.0.0.1:5000", bad])


def test_cli_starts_prints_its_url_and_forwards(local_aws: LocalAws) -> None:
    with subprocess.Popen(
        [sys.executable, "-m", "infra.aws_faults", "--target", local_aws.endpoint, "--port", "0", "--s3-errors", "1"],
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    ) as proc:
        try:
            assert proc.stdout is not None
            line = proc.stdout.readline().strip()
            match = re.fullmatch(r"AWS fault proxy listening on (http://127\.0\.0\.1:\d+), forwarding to (\S+)", line)
            assert match is not None, line
            endpoint = match.group(1)
            assert match.group(2) == local_aws.endpoint
            _ddb_get(endpoint, local_aws, NO_RETRIES)
            with pytest.raises(ClientError) as raised:
                _s3_get(endpoint, local_aws, NO_RETRIES)
            assert error_of(raised) == ("InternalError", 500)
        finally:
            proc.terminate()
            _, stderr = proc.communicate(timeout=10)
    assert proc.returncode == 0, stderr
