"""template.yaml is valid offline: it parses, the SAM transform accepts it, cfn-lint finds no
error in the result, and it keeps the properties the design relies on (hardening included)."""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from typing import Any

import pytest

from infra.local_aws import load_template
from tests.template.sam import TEMPLATE, lint_template, transform

pytestmark = pytest.mark.xdist_group("template")  # its module fixtures built once, on one worker (make test)


def _of_type(template: dict[str, Any], kind: str) -> dict[str, dict[str, Any]]:
    return {k: v for k, v in template["Resources"].items() if v["Type"] == kind}


def _function(cfn_template: dict[str, Any]) -> dict[str, Any]:
    functions = _of_type(cfn_template, "AWS::Lambda::Function")
    assert list(functions) == ["ProcessorFunction"]
    props: dict[str, Any] = functions["ProcessorFunction"]["Properties"]
    return props


def test_both_loaders_read_the_same_template(sam_template: dict[str, Any]) -> None:
    # infra.local_aws deploys from its own loader; it must see what cfn-lint sees.
    assert load_template(TEMPLATE) == sam_template


def test_transformed_template_lints_clean(cfn_template: dict[str, Any]) -> None:
    matches = lint_template(cfn_template)
    assert not matches, "\n".join(f"{m.rule.id} {m.message} {m.path}" for m in matches)


def test_sam_template_lints_clean() -> None:
    # cfn-lint also runs its own SAM transform on the source template (what users run).
    matches = lint_template(TEMPLATE.read_text())
    assert not matches, "\n".join(f"{m.rule.id} {m.message} {m.path}" for m in matches)


def test_lint_catches_a_circular_dependency(sam_template: dict[str, Any]) -> None:
    """The check above would notice a Bucket -> QueuePolicy -> Bucket cycle (E3004)."""
    broken = copy.deepcopy(sam_template)
    statement = broken["Resources"]["WorkQueuePolicy"]["Properties"]["PolicyDocument"]["Statement"][0]
    statement["Condition"]["ArnLike"]["aws:SourceArn"] = {"Fn::GetAtt": ["InputBucket", "Arn"]}
    rule_ids = {m.rule.id for m in lint_template(transform(broken))}
    assert "E3004" in rule_ids


def test_function_runtime_and_limits(cfn_template: dict[str, Any]) -> None:
    props = _function(cfn_template)
    assert props["Architectures"] == ["arm64"]
    runtime = props["Runtime"]
    assert runtime.startswith("python3.")
    assert int(runtime.removeprefix("python3.")) >= 12
    assert props["Timeout"] <= 900
    assert props["Handler"] == "promptdrop.handler.lambda_handler"
    handler_module = TEMPLATE.parent / "functions" / "promptdrop"
    assert handler_module.is_dir()


def test_function_environment_contract(cfn_template: dict[str, Any]) -> None:
    variables = _function(cfn_template)["Environment"]["Variables"]
    assert variables["PROMPTDROP_TABLE"] == {"Ref": "JobsTable"}
    assert variables["PROMPTDROP_DLQ_URL"] == {"Ref": "DeadLetterQueue"}
    assert variables["PROMPTDROP_WORK_QUEUE_URL"] == {"Ref": "WorkQueue"}
    # no secret when the routes need none (ApiKeySecret=none)
    assert variables["PROMPTDROP_OPENAI_SECRET_ARN"] == {"Fn::If": ["CreateKeySecret", {"Ref": "OpenAIKeySecret"}, ""]}
    assert variables["PROMPTDROP_ROUTES"] == {"Ref": "Routes"}
    assert variables["PROMPTDROP_OUTPUT_BUCKET"] == ""
    for name, parameter in {
        "PROMPTDROP_OUTPUT_PREFIX": "OutputPrefix",
        "PROMPTDROP_INPUT_PREFIX": "InputPrefix",
        "PROMPTDROP_MODEL": "ModelName",
        "PROMPTDROP_MAX_CONCURRENCY": "MaxConcurrency",
        "PROMPTDROP_RPM": "Rpm",
        "PROMPTDROP_TPM": "Tpm",
        "PROMPTDROP_REQUEST_TTL_DAYS": "RequestTtlDays",
        "PROMPTDROP_EVENT_BUS": "EventBusName",
    }.items():
        assert variables[name] == {"Ref": parameter}
    assert variables["OPENAI_BASE_URL"] == {
        "Fn::If": ["HasOpenAIBaseUrl", {"Ref": "OpenAIBaseUrl"}, {"Ref": "AWS::NoValue"}]
    }
    assert variables["POWERTOOLS_SERVICE_NAME"] == "promptdrop"
    assert variables["POWERTOOLS_METRICS_NAMESPACE"] == "promptdrop"
    assert variables["POWERTOOLS_LOG_LEVEL"] == "INFO"


def test_parameters_and_defaults(sam_template: dict[str, Any]) -> None:
    defaults = {k: v.get("Default") for k, v in sam_template["Parameters"].items()}
    assert defaults == {
        "ModelName": "gpt-4o-mini",
        "MaxConcurrency": 100,
        "InputPrefix": "inputs/",
        "OutputPrefix": "results/",
        "Rpm": 0,
        "Tpm": 0,
        "Mode": "realtime",  # the standard tier unless asked for flex or the Batch API
        "Fallback": "realtime",  # what a provider batch left is sent in real time
        "AnswerCache": "deterministic",  # temperature-0, embeddings and moderations answers reused
        "BudgetUsd": 0,  # no cost guard unless asked for
        "BudgetTokens": 0,
        "MaxRequests": 0,
        "OpenAIBaseUrl": "",
        "Routes": "",  # one route, today's: nothing changes for a deployment that sets nothing
        "ApiKeySecret": "create",
        "RouteSecretArns": "",
        "BedrockModelArns": "",
        "RequestTtlDays": 0,
        "ResultsExpirationDays": 0,
        "EventBusName": "default",
        "AlarmTopicArn": "",
        # Monitoring (README, "Monitoring"): alarm thresholds, and tracing off unless asked for
        "FailureRateAlarmPercent": 10,
        "RateLimitedAlarmPercent": 50,
        "CostPerHourAlarmUsd": 0,  # no cost alarm unless asked for
        "JobAgeAlarmHours": 24,
        "Tracing": "off",
    }


def test_sqs_event_source(cfn_template: dict[str, Any]) -> None:
    mappings = _of_type(cfn_template, "AWS::Lambda::EventSourceMapping")
    assert len(mappings) == 1
    (mapping,) = (m["Properties"] for m in mappings.values())
    assert mapping["EventSourceArn"] == {"Fn::GetAtt": ["WorkQueue", "Arn"]}
    assert mapping["FunctionName"] == {"Ref": "ProcessorFunction"}
    assert mapping["BatchSize"] == 1
    assert mapping["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
    assert 2 <= mapping["ScalingConfig"]["MaximumConcurrency"] <= 1000


def test_queues_visibility_and_redrive(cfn_template: dict[str, Any]) -> None:
    resources = cfn_template["Resources"]
    work = resources["WorkQueue"]["Properties"]
    assert work["VisibilityTimeout"] >= 6 * _function(cfn_template)["Timeout"]
    assert work["RedrivePolicy"] == {
        "deadLetterTargetArn": {"Fn::GetAtt": ["DeadLetterQueue", "Arn"]},
        "maxReceiveCount": 5,
    }
    assert resources["DeadLetterQueue"]["Properties"]["MessageRetentionPeriod"] == 14 * 24 * 3600


def test_bucket_notifies_the_work_queue_for_the_input_prefix(cfn_template: dict[str, Any]) -> None:
    bucket = cfn_template["Resources"]["InputBucket"]
    assert "WorkQueuePolicy" in ([bucket["DependsOn"]] if isinstance(bucket["DependsOn"], str) else bucket["DependsOn"])
    props = bucket["Properties"]
    assert "VersioningConfiguration" not in props
    assert props["BucketName"] == {"Fn::Sub": "${AWS::StackName}-input-${AWS::AccountId}-${AWS::Region}"}
    (notification,) = props["NotificationConfiguration"]["QueueConfigurations"]
    assert notification["Event"] == "s3:ObjectCreated:*"
    assert notification["Queue"] == {"Fn::GetAtt": ["WorkQueue", "Arn"]}
    assert notification["Filter"]["S3Key"]["Rules"] == [{"Name": "prefix", "Value": {"Ref": "InputPrefix"}}]

    policy = cfn_template["Resources"]["WorkQueuePolicy"]["Properties"]
    assert policy["Queues"] == [{"Ref": "WorkQueue"}]
    (statement,) = policy["PolicyDocument"]["Statement"]
    assert statement["Principal"] == {"Service": "s3.amazonaws.com"}
    assert statement["Action"] == "sqs:SendMessage"
    assert statement["Condition"]["StringEquals"] == {"aws:SourceAccount": {"Ref": "AWS::AccountId"}}
    # the same name the bucket gets, as a string: no reference back to the bucket (no cycle)
    assert statement["Condition"]["ArnLike"]["aws:SourceArn"] == {
        "Fn::Sub": "arn:${AWS::Partition}:s3:::${AWS::StackName}-input-${AWS::AccountId}-${AWS::Region}"
    }


def test_table_is_on_demand_with_pk_sk(cfn_template: dict[str, Any]) -> None:
    props = cfn_template["Resources"]["JobsTable"]["Properties"]
    assert props["BillingMode"] == "PAY_PER_REQUEST"
    assert props["KeySchema"] == [
        {"AttributeName": "pk", "KeyType": "HASH"},
        {"AttributeName": "sk", "KeyType": "RANGE"},
    ]
    assert {d["AttributeName"]: d["AttributeType"] for d in props["AttributeDefinitions"]} == {
        "pk": "S",
        "sk": "S",
        "jobs_pk": "S",
        "started_at": "S",
    }
    assert props["PointInTimeRecoverySpecification"] == {"PointInTimeRecoveryEnabled": True}


def test_table_lists_jobs_by_start(cfn_template: dict[str, Any]) -> None:
    # promptdrop status (no argument) queries it: jobs_pk = "JOBS" on every job item, newest first.
    (index,) = cfn_template["Resources"]["JobsTable"]["Properties"]["GlobalSecondaryIndexes"]
    assert index["IndexName"] == "jobs-by-start"
    assert index["KeySchema"] == [
        {"AttributeName": "jobs_pk", "KeyType": "HASH"},
        {"AttributeName": "started_at", "KeyType": "RANGE"},
    ]
    assert index["Projection"] == {"ProjectionType": "ALL"}


def test_secret_holds_no_value(cfn_template: dict[str, Any]) -> None:
    props = cfn_template["Resources"]["OpenAIKeySecret"]["Properties"]
    assert "SecretString" not in props
    assert "GenerateSecretString" not in props


def _as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def _statements(cfn_template: dict[str, Any]) -> Iterator[tuple[str | None, dict[str, Any]]]:
    """The role's statements with the condition each is granted under (None: always)."""
    role = cfn_template["Resources"]["ProcessorRole"]["Properties"]
    for policy in role["Policies"]:
        for statement in policy["PolicyDocument"]["Statement"]:
            if "Fn::If" in statement:
                condition, granted, otherwise = statement["Fn::If"]
                assert otherwise == {"Ref": "AWS::NoValue"}, statement  # a grant, or none: never another
                yield condition, granted
            else:
                yield None, statement


def _grants(cfn_template: dict[str, Any]) -> dict[str, list[Any]]:
    """Every action the function's role may be allowed -> the resources it allows it on."""
    grants: dict[str, list[Any]] = {}
    for _, statement in _statements(cfn_template):
        assert statement["Effect"] == "Allow", statement
        for action in _as_list(statement["Action"]):
            grants.setdefault(action, []).extend(_as_list(statement["Resource"]))
    return grants


def _sub(text: str) -> dict[str, str]:
    return {"Fn::Sub": text}


def test_function_role_grants_exactly_what_the_code_calls(cfn_template: dict[str, Any]) -> None:
    """Given the calls in functions/promptdrop (adapters, runtime) and Lambda's SQS event source,
    the role allows those actions, each on the one resource it is for, and nothing else."""
    function = _function(cfn_template)
    assert function["Role"] == {"Fn::GetAtt": ["ProcessorRole", "Arn"]}
    # SAM generates no role, so none of its managed policies (their statements apply to "*").
    assert "ProcessorFunctionRole" not in cfn_template["Resources"]
    role = cfn_template["Resources"]["ProcessorRole"]["Properties"]
    assert "ManagedPolicyArns" not in role
    (trust,) = role["AssumeRolePolicyDocument"]["Statement"]
    assert trust["Principal"] == {"Service": "lambda.amazonaws.com"}

    inputs = _sub("arn:${AWS::Partition}:s3:::${InputBucket}/${InputPrefix}*")
    outputs = _sub("arn:${AWS::Partition}:s3:::${InputBucket}/${OutputPrefix}*")
    table = {"Fn::GetAtt": ["JobsTable", "Arn"]}
    work_queue = {"Fn::GetAtt": ["WorkQueue", "Arn"]}
    assert _grants(cfn_template) == {
        "logs:CreateLogStream": [{"Fn::GetAtt": ["ProcessorLogGroup", "Arn"]}],
        "logs:PutLogEvents": [{"Fn::GetAtt": ["ProcessorLogGroup", "Arn"]}],
        "s3:GetObject": [inputs, outputs],
        "s3:GetObjectVersion": [inputs],
        "s3:PutObject": [outputs],
        "s3:AbortMultipartUpload": [outputs],
        "s3:ListBucket": [_sub("arn:${AWS::Partition}:s3:::${InputBucket}")],
        "dynamodb:GetItem": [table],
        "dynamodb:PutItem": [table],
        "dynamodb:UpdateItem": [table],
        "dynamodb:BatchWriteItem": [table],
        "dynamodb:Query": [table],
        "sqs:SendMessage": [{"Fn::GetAtt": ["DeadLetterQueue", "Arn"]}, work_queue],
        "sqs:ReceiveMessage": [work_queue],
        "sqs:DeleteMessage": [work_queue],
        "sqs:GetQueueAttributes": [work_queue],
        "secretsmanager:GetSecretValue": [{"Ref": "OpenAIKeySecret"}, {"Ref": "RouteSecretArns"}],
        "bedrock:CallWithBearerToken": ["*"],
        "bedrock:InvokeModel": [{"Ref": "BedrockModelArns"}],
        "events:PutEvents": [
            _sub("arn:${AWS::Partition}:events:${AWS::Region}:${AWS::AccountId}:event-bus/${EventBusName}")
        ],
    }


def test_conditional_grants_stay_narrow(cfn_template: dict[str, Any]) -> None:
    statements = {s["Sid"]: s for _, s in _statements(cfn_template)}
    # listing only under the two prefixes (it turns a missing key's 403 into 404)
    assert statements["ListOwnPrefixes"]["Condition"] == {
        "StringLike": {"s3:prefix": [_sub("${InputPrefix}*"), _sub("${OutputPrefix}*")]}
    }
    # events from this application only: no spoofing other sources on a shared bus
    assert statements["PublishCompletionEvents"]["Condition"] == {"StringEquals": {"events:source": "promptdrop"}}
    # bearer tokens: the short-term ones the function mints, never a long-term Bedrock API key
    assert statements["CallBedrockWithShortTermTokens"]["Condition"] == {
        "StringEquals": {"bedrock:bearerTokenType": "SHORT_TERM"}
    }


def test_a_deployment_of_only_bedrock_routes_needs_no_secret(cfn_template: dict[str, Any]) -> None:
    # Given ApiKeySecret=none: no secret is created, none is read, none is named to the function
    conditions = cfn_template["Conditions"]
    assert conditions["CreateKeySecret"] == {"Fn::Equals": [{"Ref": "ApiKeySecret"}, "create"]}
    assert cfn_template["Resources"]["OpenAIKeySecret"]["Condition"] == "CreateKeySecret"
    assert cfn_template["Outputs"]["OpenAIKeySecretArn"]["Condition"] == "CreateKeySecret"
    granted_under = {s["Sid"]: condition for condition, s in _statements(cfn_template)}
    assert granted_under["ReadOpenAIKey"] == "CreateKeySecret"
    assert granted_under["ReadRouteKeys"] == "HasRouteSecrets"
    # and the role may call Bedrock only when models are named, and then only those
    assert granted_under["CallBedrockWithShortTermTokens"] == "HasBedrockModels"
    assert granted_under["InvokeRoutedBedrockModels"] == "HasBedrockModels"
    assert conditions["HasBedrockModels"] == {
        "Fn::Not": [{"Fn::Equals": [{"Fn::Join": ["", {"Ref": "BedrockModelArns"}]}, ""]}]
    }


def test_outputs(sam_template: dict[str, Any]) -> None:
    values = {json.dumps(o["Value"]) for o in sam_template["Outputs"].values()}
    for logical_id in (
        "InputBucket",
        "WorkQueue",
        "DeadLetterQueue",
        "DeadLetterQueueAlarm",
        "JobsTable",
        "OpenAIKeySecret",
        "ProcessorFunction",
    ):
        assert json.dumps({"Ref": logical_id}) in values


def test_function_may_loop_through_its_queue_and_spool_large_outputs(cfn_template: dict[str, Any]) -> None:
    props = _function(cfn_template)
    # continuations re-enter through the work queue; Lambda would stop them after ~16 hops
    assert props["RecursiveLoop"] == "Allow"
    # the finalizer's /tmp holds about twice the .out.jsonl: far beyond the default 512 MB
    assert 2048 <= props["EphemeralStorage"]["Size"] <= 10240


def test_input_bucket_refuses_plain_http(cfn_template: dict[str, Any]) -> None:
    policies = _of_type(cfn_template, "AWS::S3::BucketPolicy")
    (policy,) = (p["Properties"] for p in policies.values())
    assert policy["Bucket"] == {"Ref": "InputBucket"}
    (statement,) = policy["PolicyDocument"]["Statement"]
    assert statement["Effect"] == "Deny"
    assert statement["Principal"] == "*"
    assert statement["Action"] == "s3:*"
    assert statement["Resource"] == [{"Fn::GetAtt": ["InputBucket", "Arn"]}, {"Fn::Sub": "${InputBucket.Arn}/*"}]
    assert statement["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}


def test_lifecycle_aborts_stale_uploads_and_may_expire_results(
    sam_template: dict[str, Any], cfn_template: dict[str, Any]
) -> None:
    abort, expire = cfn_template["Resources"]["InputBucket"]["Properties"]["LifecycleConfiguration"]["Rules"]
    assert abort["Status"] == "Enabled"
    assert "Prefix" not in abort  # the whole bucket: inputs and outputs alike
    assert 1 <= abort["AbortIncompleteMultipartUpload"]["DaysAfterInitiation"] <= 7
    # results expire only when asked to, and only under the output prefix (never the inputs)
    assert expire == {
        "Fn::If": [
            "ExpireResults",
            {
                "Id": "ExpireResults",
                "Status": "Enabled",
                "Prefix": {"Ref": "OutputPrefix"},
                "ExpirationInDays": {"Ref": "ResultsExpirationDays"},
            },
            {"Ref": "AWS::NoValue"},
        ]
    }
    assert sam_template["Conditions"]["ExpireResults"] == {
        "Fn::Not": [{"Fn::Equals": [{"Ref": "ResultsExpirationDays"}, 0]}]
    }


def test_request_items_can_expire(cfn_template: dict[str, Any]) -> None:
    props = cfn_template["Resources"]["JobsTable"]["Properties"]
    # on whatever RequestTtlDays says: only items carrying expires_at are deleted, and the
    # function writes it only when RequestTtlDays > 0
    assert props["TimeToLiveSpecification"] == {"AttributeName": "expires_at", "Enabled": True}


@pytest.mark.parametrize("logical_id", ["InputBucket", "InputBucketPolicy", "JobsTable", "OpenAIKeySecret"])
def test_data_outlives_the_stack(cfn_template: dict[str, Any], logical_id: str) -> None:
    resource = cfn_template["Resources"][logical_id]
    assert resource["DeletionPolicy"] == "Retain"
    assert resource["UpdateReplacePolicy"] == "Retain"


def test_dead_letters_raise_an_alarm(sam_template: dict[str, Any], cfn_template: dict[str, Any]) -> None:
    alarm = _of_type(cfn_template, "AWS::CloudWatch::Alarm")["DeadLetterQueueAlarm"]["Properties"]
    assert alarm["Namespace"] == "AWS/SQS"
    assert alarm["MetricName"] == "ApproximateNumberOfMessagesVisible"
    assert alarm["Dimensions"] == [{"Name": "QueueName", "Value": {"Fn::GetAtt": ["DeadLetterQueue", "QueueName"]}}]
    assert alarm["Statistic"] == "Maximum"
    assert (alarm["ComparisonOperator"], alarm["Threshold"]) == ("GreaterThanThreshold", 0)
    assert alarm["TreatMissingData"] == "notBreaching"  # an idle, empty queue publishes nothing
    notify = {"Fn::If": ["HasAlarmTopic", [{"Ref": "AlarmTopicArn"}], {"Ref": "AWS::NoValue"}]}
    assert alarm["AlarmActions"] == notify
    assert alarm["OKActions"] == notify
    assert sam_template["Conditions"]["HasAlarmTopic"] == {"Fn::Not": [{"Fn::Equals": [{"Ref": "AlarmTopicArn"}, ""]}]}


def test_lint_checks_values_sam_passes_through(sam_template: dict[str, Any]) -> None:
    """SAM copies RecursiveLoop to the Lambda function unchecked; cfn-lint, on the transformed
    template, holds it to CloudFormation's schema: a wrong value fails the lint test above."""
    broken = copy.deepcopy(sam_template)
    broken["Resources"]["ProcessorFunction"]["Properties"]["RecursiveLoop"] = "Allowed"
    rule_ids = {m.rule.id for m in lint_template(transform(broken))}
    assert "E3030" in rule_ids
