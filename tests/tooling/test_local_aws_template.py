"""The local stack follows the hardened template (lifecycle rules, TTL, the dead-letter alarm, the
bucket policy, parameter constraints) and routes the function's completion events to a queue."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest

from infra.local_aws import DEFAULT_TEMPLATE, LocalAws, TemplateError, deploy, load_template

Clients = Callable[[str], Any]


@pytest.fixture
def client(moto_endpoint: str) -> Iterator[Clients]:
    """A factory of boto3 clients on the moto server (closed afterwards)."""
    made: list[Any] = []

    def make(service: str) -> Any:
        made.append(
            boto3.client(
                service,  # type: ignore[call-overload]
                endpoint_url=moto_endpoint,
                region_name="us-east-1",
                aws_access_key_id="testing",
                aws_secret_access_key="testing",
            )
        )
        return made[-1]

    yield make
    for each in made:
        each.close()


def _stack_name() -> str:
    return f"pd-{uuid.uuid4().hex[:10]}"


def _template_with(tmp_path: Path, change: Callable[[dict[str, Any]], None]) -> Path:
    """template.yaml changed by ``change``, written where deploy() can read it (JSON is YAML)."""
    template = load_template(DEFAULT_TEMPLATE)
    change(template)
    path = tmp_path / "template.json"
    path.write_text(json.dumps(template))
    return path


def _alarm(client: Clients, stack: LocalAws) -> dict[str, Any]:
    (alarm,) = client("cloudwatch").describe_alarms(AlarmNames=[stack.resources["DeadLetterQueueAlarm"]])[
        "MetricAlarms"
    ]
    return dict(alarm)


def test_defaults_abort_stale_uploads_keep_results_and_turn_ttl_on(local_aws: LocalAws, client: Clients) -> None:
    s3, ddb = client("s3"), client("dynamodb")
    (rule,) = s3.get_bucket_lifecycle_configuration(Bucket=local_aws.bucket)["Rules"]
    assert rule["ID"] == "AbortIncompleteMultipartUploads"
    assert rule["Filter"] == {"Prefix": ""}
    assert rule["AbortIncompleteMultipartUpload"] == {"DaysAfterInitiation": 2}
    assert "Expiration" not in rule  # ResultsExpirationDays = 0: results are kept

    ttl = ddb.describe_time_to_live(TableName=local_aws.table)["TimeToLiveDescription"]
    assert ttl == {"TimeToLiveStatus": "ENABLED", "AttributeName": "expires_at"}
    assert local_aws.function_env()["PROMPTDROP_REQUEST_TTL_DAYS"] == "0"


def test_dead_letter_alarm_watches_the_dlq_without_actions_by_default(local_aws: LocalAws, client: Clients) -> None:
    alarm = _alarm(client, local_aws)
    dlq_name = local_aws.dlq_url.rsplit("/", 1)[-1]
    assert alarm["Namespace"] == "AWS/SQS"
    assert alarm["MetricName"] == "ApproximateNumberOfMessagesVisible"
    assert alarm["Dimensions"] == [{"Name": "QueueName", "Value": dlq_name}]
    assert (alarm["ComparisonOperator"], alarm["Threshold"]) == ("GreaterThanThreshold", 0.0)
    assert alarm["AlarmActions"] == []
    assert alarm["OKActions"] == []


def test_the_tls_only_policy_is_not_applied_locally(local_aws: LocalAws, client: Clients) -> None:
    # moto would enforce the deny without its aws:SecureTransport condition, i.e. deny everything,
    # and the local endpoint is plain http: the statement is left out, and nothing else is declared.
    s3 = client("s3")
    with pytest.raises(s3.exceptions.ClientError, match="NoSuchBucketPolicy"):
        s3.get_bucket_policy(Bucket=local_aws.bucket)
    s3.put_object(Bucket=local_aws.bucket, Key="results/x.json", Body=b"{}")


def test_parameters_flow_into_lifecycle_alarm_and_env(moto_endpoint: str, client: Clients) -> None:
    topic = "arn:aws:sns:us-east-1:123456789012:ops-alerts"
    stack = deploy(
        moto_endpoint,
        stack_name=_stack_name(),
        parameters={
            "OutputPrefix": "answers/",
            "ResultsExpirationDays": "30",
            "RequestTtlDays": "7",
            "AlarmTopicArn": topic,
        },
    )
    rules = client("s3").get_bucket_lifecycle_configuration(Bucket=stack.bucket)["Rules"]
    expire = next(r for r in rules if r["ID"] == "ExpireResults")
    assert expire["Filter"] == {"Prefix": "answers/"}  # outputs only, never the inputs
    assert expire["Expiration"] == {"Days": 30}
    assert expire["Status"] == "Enabled"
    alarm = _alarm(client, stack)
    assert alarm["AlarmActions"] == [topic]
    assert alarm["OKActions"] == [topic]
    assert stack.function_env()["PROMPTDROP_REQUEST_TTL_DAYS"] == "7"


@pytest.mark.parametrize(
    ("parameters", "message"),
    [
        ({"OpenAIBaseUrl": "http://api.example.com/v1"}, "OpenAIBaseUrl.*AllowedPattern"),
        ({"MaxConcurrency": "5001"}, "MaxConcurrency.*MaxValue 5000"),
        ({"MaxConcurrency": "many"}, "MaxConcurrency.*not a number"),
        ({"OutputPrefix": ""}, "OutputPrefix.*MinLength"),
        ({"RequestTtlDays": "-1"}, "RequestTtlDays.*MinValue"),
        ({"EventBusName": "arn:aws:events:us-east-1:123456789012:event-bus/x"}, "EventBusName"),
    ],
)
def test_parameters_cloudformation_refuses_are_refused(
    moto_endpoint: str, parameters: dict[str, str], message: str
) -> None:
    with pytest.raises(TemplateError, match=message):
        deploy(moto_endpoint, stack_name=_stack_name(), parameters=parameters)


def test_completion_events_reach_the_events_queue(local_aws: LocalAws, client: Clients) -> None:
    events, sqs = client("events"), client("sqs")
    assert local_aws.event_bus == "default" == local_aws.function_env()["PROMPTDROP_EVENT_BUS"]
    detail = {"job_id": "j-1", "status": "SUCCEEDED"}
    entries = [
        {"Source": "promptdrop", "DetailType": "promptdrop job SUCCEEDED", "Detail": json.dumps(detail)},
        {"Source": "someone.else", "DetailType": "other", "Detail": "{}"},  # not promptdrop's: not routed
    ]
    assert (
        events.put_events(Entries=[{**e, "EventBusName": local_aws.event_bus} for e in entries])["FailedEntryCount"]
        == 0
    )

    received = sqs.receive_message(QueueUrl=local_aws.events_queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=1)
    (message,) = received["Messages"]
    event = json.loads(message["Body"])
    assert event["source"] == "promptdrop"
    assert event["detail-type"] == "promptdrop job SUCCEEDED"
    assert event["detail"] == detail
    sqs.delete_message(QueueUrl=local_aws.events_queue_url, ReceiptHandle=message["ReceiptHandle"])
    assert "Messages" not in sqs.receive_message(QueueUrl=local_aws.events_queue_url, WaitTimeSeconds=0)


def test_a_named_bus_is_created_and_routed(moto_endpoint: str, client: Clients) -> None:
    stack = deploy(moto_endpoint, stack_name=_stack_name(), parameters={"EventBusName": f"jobs-{uuid.uuid4().hex[:6]}"})
    assert stack.function_env()["PROMPTDROP_EVENT_BUS"] == stack.event_bus != "default"
    entry = {"Source": "promptdrop", "DetailType": "promptdrop job FAILED", "Detail": "{}"}
    client("events").put_events(Entries=[{**entry, "EventBusName": stack.event_bus}])
    sqs = client("sqs")
    (message,) = sqs.receive_message(QueueUrl=stack.events_queue_url, WaitTimeSeconds=1)["Messages"]
    assert json.loads(message["Body"])["detail-type"] == "promptdrop job FAILED"
    # the default bus is not routed to this stack's queue
    client("events").put_events(Entries=[entry])
    assert "Messages" not in sqs.receive_message(QueueUrl=stack.events_queue_url, WaitTimeSeconds=0)


def test_other_bucket_policy_statements_are_applied_and_enforced(
    moto_endpoint: str, client: Clients, tmp_path: Path
) -> None:
    def add_statement(template: dict[str, Any]) -> None:
        statements = template["Resources"]["InputBucketPolicy"]["Properties"]["PolicyDocument"]["Statement"]
        statements.append(
            {
                "Sid": "NoDeletes",
                "Effect": "Deny",
                "Principal": "*",
                "Action": "s3:DeleteObject",
                "Resource": {"Fn::Sub": "${InputBucket.Arn}/*"},
            }
        )

    stack = deploy(moto_endpoint, template=_template_with(tmp_path, add_statement), stack_name=_stack_name())
    s3 = client("s3")
    policy = json.loads(s3.get_bucket_policy(Bucket=stack.bucket)["Policy"])
    assert [s["Sid"] for s in policy["Statement"]] == ["NoDeletes"]  # the TLS-only deny left out
    s3.put_object(Bucket=stack.bucket, Key="inputs/a.txt", Body=b"hi")
    with pytest.raises(s3.exceptions.ClientError, match=r"AccessDenied|Forbidden|403"):
        s3.delete_object(Bucket=stack.bucket, Key="inputs/a.txt")


def test_a_conditional_bucket_policy_statement_is_refused(moto_endpoint: str, tmp_path: Path) -> None:
    def add_statement(template: dict[str, Any]) -> None:
        statements = template["Resources"]["InputBucketPolicy"]["Properties"]["PolicyDocument"]["Statement"]
        statements.append(
            {
                "Sid": "OnlyFromVpce",
                "Effect": "Deny",
                "Principal": "*",
                "Action": "s3:GetObject",
                "Resource": {"Fn::Sub": "${InputBucket.Arn}/*"},
                "Condition": {"StringNotEquals": {"aws:SourceVpce": "vpce-1"}},
            }
        )

    with pytest.raises(TemplateError, match="OnlyFromVpce"):
        deploy(moto_endpoint, template=_template_with(tmp_path, add_statement), stack_name=_stack_name())


def test_an_unknown_resource_attribute_is_refused(moto_endpoint: str, tmp_path: Path) -> None:
    def add_attribute(template: dict[str, Any]) -> None:
        template["Resources"]["JobsTable"]["UpdatePolicy"] = {}

    with pytest.raises(TemplateError, match=r"JobsTable.*UpdatePolicy"):
        deploy(moto_endpoint, template=_template_with(tmp_path, add_attribute), stack_name=_stack_name())
