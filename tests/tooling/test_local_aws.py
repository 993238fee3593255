"""The local stack really is template.yaml in moto, and the event_source behaves like Lambda's SQS mapping."""

from __future__ import annotations

import copy
import json
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import boto3
import pytest

from infra.event_source import LocalContext, SqsEventSource
from infra.local_aws import DEFAULT_TEMPLATE, LocalAws, TemplateError, deploy, load_template


@pytest.fixture
def aws(local_aws: LocalAws) -> Iterator[dict[str, Any]]:
    """boto3 clients on the moto server (closed afterwards)."""
    clients = {
        name: boto3.client(
            name,
            endpoint_url=local_aws.endpoint,
            region_name=local_aws.region,
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
        )
        for name in ("s3", "sqs", "dynamodb", "secretsmanager")
    }
    yield clients
    for client in clients.values():
        client.close()


def _receive_all(sqs: Any, queue_url: str, wait_s: int = 0) -> list[dict[str, Any]]:
    response = sqs.receive_message(
        QueueUrl=queue_url,
        MaxNumberOfMessages=10,
        WaitTimeSeconds=wait_s,
        MessageSystemAttributeNames=["All"],
    )
    messages: list[dict[str, Any]] = response.get("Messages", [])
    return messages


def _ack(sqs: Any, queue_url: str, messages: list[dict[str, Any]]) -> None:
    for message in messages:
        sqs.delete_message(QueueUrl=queue_url, ReceiptHandle=message["ReceiptHandle"])


def _drop_test_event(sqs: Any, stack: LocalAws) -> dict[str, Any]:
    """S3 (and moto) send an s3:TestEvent when the notification is configured: consume it."""
    (message,) = _receive_all(sqs, stack.work_queue_url)
    _ack(sqs, stack.work_queue_url, [message])
    body: dict[str, Any] = json.loads(message["Body"])
    return body


def _approx_counts(sqs: Any, queue_url: str) -> tuple[int, int]:
    attributes = sqs.get_queue_attributes(
        QueueUrl=queue_url,
        AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
    )["Attributes"]
    return int(attributes["ApproximateNumberOfMessages"]), int(attributes["ApproximateNumberOfMessagesNotVisible"])


def test_configuring_the_notification_sends_an_s3_test_event(local_aws: LocalAws, aws: dict[str, Any]) -> None:
    body = _drop_test_event(aws["sqs"], local_aws)
    assert body["Event"] == "s3:TestEvent"
    assert body["Service"] == "Amazon S3"
    assert body["Bucket"] == local_aws.bucket
    assert "Records" not in body
    assert _receive_all(aws["sqs"], local_aws.work_queue_url) == []


def test_object_under_input_prefix_notifies_the_work_queue(local_aws: LocalAws, aws: dict[str, Any]) -> None:
    sqs, s3 = aws["sqs"], aws["s3"]
    _drop_test_event(sqs, local_aws)
    key = f"{local_aws.input_prefix}batch 1/prompts.jsonl"
    put = s3.put_object(Bucket=local_aws.bucket, Key=key, Body=b'{"prompt": "hi"}\n')

    (message,) = _receive_all(sqs, local_aws.work_queue_url, wait_s=1)
    (record,) = json.loads(message["Body"])["Records"]
    assert record["eventSource"] == "aws:s3"
    assert record["eventName"] == "ObjectCreated:Put"
    assert record["awsRegion"] == local_aws.region
    assert record["s3"]["bucket"]["name"] == local_aws.bucket
    # moto quote_plus-encodes the whole key ('/' -> %2F, ' ' -> +); AWS keeps '/' as is.
    assert record["s3"]["object"]["key"] == "inputs%2Fbatch+1%2Fprompts.jsonl"
    assert record["s3"]["object"]["eTag"] == put["ETag"].strip('"')
    assert record["s3"]["object"]["size"] == len(b'{"prompt": "hi"}\n')
    # fields AWS sends but moto leaves out: consumers must not require them
    assert "userIdentity" not in record
    assert "sequencer" not in record["s3"]["object"]


def test_objects_outside_the_input_prefix_do_not_notify(local_aws: LocalAws, aws: dict[str, Any]) -> None:
    sqs, s3 = aws["sqs"], aws["s3"]
    _drop_test_event(sqs, local_aws)
    s3.put_object(Bucket=local_aws.bucket, Key=f"{local_aws.output_prefix}x.out.jsonl", Body=b"{}")
    s3.put_object(Bucket=local_aws.bucket, Key="elsewhere/inputs/x.txt", Body=b"hi")
    # moto delivers notifications synchronously inside PutObject: no need to wait
    assert _receive_all(sqs, local_aws.work_queue_url) == []


def test_resources_match_the_template(local_aws: LocalAws, aws: dict[str, Any]) -> None:
    sqs, ddb, s3 = aws["sqs"], aws["dynamodb"], aws["s3"]
    declared = load_template(DEFAULT_TEMPLATE)["Resources"]

    table = ddb.describe_table(TableName=local_aws.table)["Table"]
    assert table["KeySchema"] == [
        {"AttributeName": "pk", "KeyType": "HASH"},
        {"AttributeName": "sk", "KeyType": "RANGE"},
    ]
    assert table["BillingModeSummary"]["BillingMode"] == "PAY_PER_REQUEST"
    declared_indexes = declared["JobsTable"]["Properties"]["GlobalSecondaryIndexes"]
    assert [(i["IndexName"], i["KeySchema"], i["Projection"]) for i in table["GlobalSecondaryIndexes"]] == [
        (i["IndexName"], i["KeySchema"], i["Projection"]) for i in declared_indexes
    ]
    backups = ddb.describe_continuous_backups(TableName=local_aws.table)["ContinuousBackupsDescription"]
    assert backups["PointInTimeRecoveryDescription"]["PointInTimeRecoveryStatus"] == "ENABLED"

    work = sqs.get_queue_attributes(QueueUrl=local_aws.work_queue_url, AttributeNames=["All"])["Attributes"]
    dlq = sqs.get_queue_attributes(QueueUrl=local_aws.dlq_url, AttributeNames=["All"])["Attributes"]
    redrive = json.loads(work["RedrivePolicy"])
    assert redrive["deadLetterTargetArn"] == dlq["QueueArn"]
    assert int(redrive["maxReceiveCount"]) == declared["WorkQueue"]["Properties"]["RedrivePolicy"]["maxReceiveCount"]
    assert int(work["VisibilityTimeout"]) == declared["WorkQueue"]["Properties"]["VisibilityTimeout"]
    assert int(dlq["MessageRetentionPeriod"]) == 14 * 24 * 3600
    policy = json.loads(work["Policy"])
    (statement,) = policy["Statement"]
    assert statement["Condition"]["ArnLike"]["aws:SourceArn"] == f"arn:aws:s3:::{local_aws.bucket}"

    notification = s3.get_bucket_notification_configuration(Bucket=local_aws.bucket)
    (queue_config,) = notification["QueueConfigurations"]
    assert queue_config["QueueArn"] == work["QueueArn"]
    assert queue_config["Filter"]["Key"]["FilterRules"] == [{"Name": "prefix", "Value": local_aws.input_prefix}]
    versioning = s3.get_bucket_versioning(Bucket=local_aws.bucket)
    assert versioning.get("Status") is None

    secret = aws["secretsmanager"].describe_secret(SecretId=local_aws.secret_arn)
    assert secret["Name"] == f"{local_aws.stack_name}/openai-api-key"


def test_function_env_resolves_the_template(local_aws: LocalAws) -> None:
    env = local_aws.function_env()
    assert env["PROMPTDROP_TABLE"] == local_aws.table
    assert env["PROMPTDROP_DLQ_URL"] == local_aws.dlq_url
    assert env["PROMPTDROP_WORK_QUEUE_URL"] == local_aws.work_queue_url
    assert env["PROMPTDROP_OPENAI_SECRET_ARN"] == local_aws.secret_arn
    assert env["PROMPTDROP_INPUT_PREFIX"] == "inputs/"
    assert env["PROMPTDROP_OUTPUT_PREFIX"] == "results/"
    assert env["PROMPTDROP_MODEL"] == "gpt-4o-mini"
    assert env["PROMPTDROP_MAX_CONCURRENCY"] == "100"
    assert env["PROMPTDROP_RPM"] == "0"
    assert env["POWERTOOLS_SERVICE_NAME"] == "promptdrop"
    assert env["AWS_ENDPOINT_URL"] == local_aws.endpoint
    assert env["AWS_DEFAULT_REGION"] == "us-east-1"
    # empty in the template (= the input bucket) or absent (no base URL): left out
    assert "PROMPTDROP_OUTPUT_BUCKET" not in env
    assert "OPENAI_BASE_URL" not in env
    overridden = local_aws.function_env(OPENAI_API_KEY="sk-test", PROMPTDROP_OPENAI_SECRET_ARN="")
    assert overridden["OPENAI_API_KEY"] == "sk-test"
    assert "PROMPTDROP_OPENAI_SECRET_ARN" not in overridden


def test_parameters_flow_into_resources_and_env(moto_endpoint: str) -> None:
    stack = deploy(
        moto_endpoint,
        stack_name="pd-params",
        parameters={"InputPrefix": "in/", "OpenAIBaseUrl": "http://127.0.0.1:9/v1", "Rpm": "500"},
    )
    assert stack.input_prefix == "in/"
    env = stack.function_env()
    assert env["OPENAI_BASE_URL"] == "http://127.0.0.1:9/v1"
    assert env["PROMPTDROP_RPM"] == "500"
    assert env["PROMPTDROP_INPUT_PREFIX"] == "in/"
    s3 = boto3.client(
        "s3",
        endpoint_url=moto_endpoint,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )
    try:
        (config,) = s3.get_bucket_notification_configuration(Bucket=stack.bucket)["QueueConfigurations"]
    finally:
        s3.close()
    assert config["Filter"]["Key"]["FilterRules"] == [{"Name": "prefix", "Value": "in/"}]


def test_an_index_property_the_local_stack_cannot_create_is_refused(moto_endpoint: str, tmp_path: Path) -> None:
    template = load_template(DEFAULT_TEMPLATE)
    (index,) = template["Resources"]["JobsTable"]["Properties"]["GlobalSecondaryIndexes"]
    index["ContributorInsightsSpecification"] = {"Enabled": True}
    path = tmp_path / "template.json"
    path.write_text(json.dumps(template))
    with pytest.raises(TemplateError, match=r"jobs-by-start.*ContributorInsightsSpecification"):
        deploy(moto_endpoint, template=path, stack_name="pd-bad-index")


def test_local_context_counts_down() -> None:
    context = LocalContext(timeout_s=2.0)
    assert 1500 < context.get_remaining_time_in_millis() <= 2000
    assert context.invoked_function_arn.endswith(f":function:{context.function_name}")
    assert context.memory_limit_in_mb == 1024
    assert context.aws_request_id != LocalContext().aws_request_id
    assert LocalContext(deadline=time.monotonic() - 1).get_remaining_time_in_millis() == 0
    assert 899_000 < LocalContext().get_remaining_time_in_millis() <= 900_000


def test_event_source_deletes_acknowledged_and_releases_failed(local_aws: LocalAws, aws: dict[str, Any]) -> None:
    sqs = aws["sqs"]
    _drop_test_event(sqs, local_aws)
    for body in ("ok-1", "fail", "ok-2"):
        sqs.send_message(
            QueueUrl=local_aws.work_queue_url,
            MessageBody=body,
            MessageAttributes={"kind": {"DataType": "String", "StringValue": body}},
        )
    events: list[dict[str, Any]] = []
    contexts: list[Any] = []

    def handler(event: dict[str, Any], context: Any) -> Mapping[str, Any]:
        """Fails the message whose body is "fail", acknowledges the others."""
        events.append(event)
        contexts.append(context)
        failed = [r["messageId"] for r in event["Records"] if r["body"] == "fail"]
        return {"batchItemFailures": [{"itemIdentifier": m} for m in failed]}

    with SqsEventSource.for_stack(local_aws) as event_source:
        assert event_source.poll_once(handler, batch_size=10, wait_s=1) == 3

        (event,) = events
        assert sorted(r["body"] for r in event["Records"]) == ["fail", "ok-1", "ok-2"]
        record = next(r for r in event["Records"] if r["body"] == "fail")
        assert set(record) == {
            "messageId",
            "receiptHandle",
            "body",
            "attributes",
            "messageAttributes",
            "md5OfBody",
            "eventSource",
            "eventSourceARN",
            "awsRegion",
        }
        assert record["eventSource"] == "aws:sqs"
        assert record["eventSourceARN"].endswith(":" + local_aws.work_queue_url.rsplit("/", 1)[-1])
        assert record["awsRegion"] == "us-east-1"
        assert set(record["attributes"]) == {
            "ApproximateReceiveCount",
            "SentTimestamp",
            "SenderId",
            "ApproximateFirstReceiveTimestamp",
        }
        assert record["attributes"]["ApproximateReceiveCount"] == "1"
        assert record["messageAttributes"] == {
            "kind": {"stringValue": "fail", "stringListValues": [], "binaryListValues": [], "dataType": "String"}
        }
        assert isinstance(contexts[0], LocalContext)

        # the acknowledged messages are gone; the failed one is visible again, received a 2nd time
        (again,) = _receive_all(sqs, local_aws.work_queue_url, wait_s=1)
        assert again["Body"] == "fail"
        assert again["MessageId"] == record["messageId"]
        assert again["Attributes"]["ApproximateReceiveCount"] == "2"
        _ack(sqs, local_aws.work_queue_url, [again])
    assert _approx_counts(sqs, local_aws.work_queue_url) == (0, 0)


def test_event_source_handler_error_fails_the_whole_batch(local_aws: LocalAws, aws: dict[str, Any]) -> None:
    sqs = aws["sqs"]
    _drop_test_event(sqs, local_aws)
    sqs.send_message(QueueUrl=local_aws.work_queue_url, MessageBody="boom")

    def handler(event: dict[str, Any], context: Any) -> Mapping[str, Any]:
        raise RuntimeError("handler crashed")

    with SqsEventSource.for_stack(local_aws) as event_source:
        with pytest.raises(RuntimeError, match="handler crashed"):
            event_source.poll_once(handler)
        assert [m["Body"] for m in _receive_all(sqs, local_aws.work_queue_url, wait_s=1)] == ["boom"]


def test_invalid_item_identifier_fails_the_whole_batch() -> None:
    ids = {"a", "b"}
    assert SqsEventSource.failed_ids(None, ids) == set()
    assert SqsEventSource.failed_ids({}, ids) == set()
    assert SqsEventSource.failed_ids({"batchItemFailures": []}, ids) == set()
    assert SqsEventSource.failed_ids({"batchItemFailures": [{"itemIdentifier": "a"}]}, ids) == {"a"}
    assert SqsEventSource.failed_ids({"batchItemFailures": [{"itemIdentifier": "zz"}]}, ids) == ids
    assert SqsEventSource.failed_ids({"batchItemFailures": [{"itemIdentifier": None}]}, ids) == ids


def test_drain_retries_until_the_redrive_policy_moves_it_to_the_dlq(local_aws: LocalAws, aws: dict[str, Any]) -> None:
    sqs = aws["sqs"]
    sqs.send_message(QueueUrl=local_aws.work_queue_url, MessageBody="always fails")
    seen: list[str] = []

    def handler(event: dict[str, Any], context: Any) -> Mapping[str, Any]:
        seen.extend(r["body"] for r in event["Records"])
        return {
            "batchItemFailures": [
                {"itemIdentifier": r["messageId"]} for r in event["Records"] if r["body"] == "always fails"
            ]
        }

    with SqsEventSource.for_stack(local_aws) as event_source:
        handled = event_source.drain(handler, idle_polls=1, wait_s=0, max_batches=50)

    # the s3:TestEvent is acknowledged once; the failing message is received maxReceiveCount (5)
    # times, then moto's redrive moves it to the DLQ on the next receive
    assert json.loads(seen[0])["Event"] == "s3:TestEvent"
    assert seen[1:] == ["always fails"] * 5
    assert handled == 6
    (dead,) = _receive_all(sqs, local_aws.dlq_url)
    assert dead["Body"] == "always fails"
    assert _approx_counts(sqs, local_aws.work_queue_url) == (0, 0)


# -- moto's transactions, rolled back item by item ---------------------------------------------------------


def _key(pk: str) -> dict[str, Any]:
    return {"pk": {"S": pk}, "sk": {"S": "A"}}


def _transaction(table: str, *, fail: bool) -> list[dict[str, Any]]:
    return [
        {"Update": {"TableName": table, "Key": _key("a"), "UpdateExpression": "ADD n :one",
                    "ExpressionAttributeValues": {":one": {"N": "1"}}}},
        {"Put": {"TableName": table, "Item": {**_key("new"), "n": {"N": "7"}}}},
        {"Delete": {"TableName": table, "Key": _key("gone")}},
        {"ConditionCheck": {"TableName": table, "Key": _key("check"),
                            "ConditionExpression": "attribute_not_exists(pk)" if fail else "attribute_exists(pk)"}},
    ]  # fmt: skip


def test_a_failed_transaction_leaves_every_item_as_it_was_and_copies_no_table(
    local_aws: LocalAws, aws: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given items a (n=1), gone and check, and 200 others the transaction does not name
    ddb, table = aws["dynamodb"], local_aws.table
    for pk, n in (("a", 1), ("gone", 0), ("check", 0), *((f"other{i}", i) for i in range(200))):
        ddb.put_item(TableName=table, Item={**_key(pk), "n": {"N": str(n)}})
    copied: list[str] = []
    real_deepcopy = copy.deepcopy

    def deepcopy(value: Any, memo: Any = None) -> Any:
        copied.append(type(value).__name__)
        return real_deepcopy(value, memo)

    monkeypatch.setattr(copy, "deepcopy", deepcopy)  # the moto server runs in this process

    # When a transaction updating a, putting new and deleting gone fails on its condition check
    with pytest.raises(ddb.exceptions.TransactionCanceledException):
        ddb.transact_write_items(TransactItems=_transaction(table, fail=True))

    # Then nothing it named changed, and no table was copied to get there (only the items it names)
    assert ddb.get_item(TableName=table, Key=_key("a"), ConsistentRead=True)["Item"]["n"] == {"N": "1"}
    assert "Item" not in ddb.get_item(TableName=table, Key=_key("new"), ConsistentRead=True)
    assert "Item" in ddb.get_item(TableName=table, Key=_key("gone"), ConsistentRead=True)
    assert ddb.scan(TableName=table, Select="COUNT")["Count"] == 203
    assert "Table" not in copied
    assert copied  # the named items were kept

    # And the same transaction, its condition met, writes all of it
    ddb.transact_write_items(TransactItems=_transaction(table, fail=False))
    assert ddb.get_item(TableName=table, Key=_key("a"), ConsistentRead=True)["Item"]["n"] == {"N": "2"}
    assert ddb.get_item(TableName=table, Key=_key("new"), ConsistentRead=True)["Item"]["n"] == {"N": "7"}
    assert "Item" not in ddb.get_item(TableName=table, Key=_key("gone"), ConsistentRead=True)


# -- moto's table queries, read from their own partition ----------------------------------------------------


def test_a_table_query_pages_through_its_own_partition_in_key_order(local_aws: LocalAws, aws: dict[str, Any]) -> None:
    # Given three partitions of items, some of 350 KB so that moto answers in 1 MB pages
    ddb, table = aws["dynamodb"], local_aws.table
    written: dict[str, list[str]] = {"p0": [], "p1": [], "p2": []}
    for i in range(60):
        pk = f"p{i % 3}"
        sk = f"{'DUP' if i % 5 == 0 else 'REQ'}#{(i * 37) % 101:03d}"
        blob = "x" * (350_000 if i % 4 == 0 else 10)
        ddb.put_item(TableName=table, Item={"pk": {"S": pk}, "sk": {"S": sk}, "blob": {"S": blob}})
        written[pk].append(sk)

    def query(**extra: Any) -> tuple[list[str], int]:
        keys, pages = [], 0
        for page in ddb.get_paginator("query").paginate(
            TableName=table,
            KeyConditionExpression="pk = :pk AND begins_with(sk, :prefix)",
            ExpressionAttributeValues={":pk": {"S": "p1"}, ":prefix": {"S": "REQ#"}},
            ProjectionExpression="sk",
            ConsistentRead=True,
            **extra,
        ):
            keys += [item["sk"]["S"] for item in page["Items"]]
            pages += 1
        return keys, pages

    # When one partition is queried for a prefix, in pages, both ways and with a page limit
    expected = sorted(sk for sk in written["p1"] if sk.startswith("REQ#"))
    forward, pages = query()
    backward, _ = query(ScanIndexForward=False)
    limited, limited_pages = query(PaginationConfig={"PageSize": 3})

    # Then each answer is that partition's items with the prefix, in key order, every one once
    assert forward == expected
    assert pages > 1  # more than one 1 MB page: the start keys were honoured
    assert backward == expected[::-1]
    assert limited == expected
    assert limited_pages >= len(expected) // 3
