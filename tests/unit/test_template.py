"""template.yaml is valid offline: it parses, the SAM transform accepts it, cfn-lint finds no
error in the result, and it keeps the properties the design relies on."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import boto3
import pytest
from cfnlint.api import ManualArgs, lint
from cfnlint.decode import decode
from samtranslator.parser.parser import Parser
from samtranslator.translator.translator import Translator

from infra.local_aws import load_template

TEMPLATE = Path(__file__).resolve().parents[2] / "template.yaml"
REGION = "us-east-1"
# What `sam package` puts in place of the local CodeUri; the transform needs an S3 URI.
PACKAGED_CODE_URI = "s3://promptdrop-artifacts/processor.zip"
# The only managed policies we accept on the function's role. SAM attaches them itself:
# basic execution (CloudWatch Logs) and the SQS event source (receive/delete on the queue).
# Both use Resource "*", which we cannot narrow without dropping SAM's SQS event.
SAM_MANAGED_POLICIES = {
    "arn:aws:iam::aws:policy/service-role/AWSLambdaBasicExecutionRole",
    "arn:aws:iam::aws:policy/service-role/AWSLambdaSQSQueueExecutionRole",
}


def _raw_template() -> dict[str, Any]:
    template, matches = decode(str(TEMPLATE))
    assert not matches, [str(m) for m in matches]
    assert template is not None
    # cfn-lint's node types subclass dict/str; a JSON round trip makes them plain.
    plain: dict[str, Any] = json.loads(json.dumps(template))
    return plain


def _no_managed_policy_names() -> dict[str, str]:
    raise AssertionError("the template names an AWS managed policy: the transform would need AWS")


def _transform(template: dict[str, Any]) -> dict[str, Any]:
    sam = copy.deepcopy(template)
    for resource in sam["Resources"].values():
        if resource["Type"] == "AWS::Serverless::Function":
            resource["Properties"]["CodeUri"] = PACKAGED_CODE_URI
    translator = Translator(None, Parser(), boto_session=boto3.session.Session(region_name=REGION))
    transformed: dict[str, Any] = translator.translate(
        sam, parameter_values={}, get_managed_policy_map=_no_managed_policy_names
    )
    return transformed


def _lint(template: dict[str, Any]) -> list[Any]:
    return lint(json.dumps(template), config=ManualArgs(regions=[REGION]))


@pytest.fixture(scope="module")
def sam_template() -> dict[str, Any]:
    return _raw_template()


@pytest.fixture(scope="module")
def cfn_template(sam_template: dict[str, Any]) -> dict[str, Any]:
    return _transform(sam_template)


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
    matches = _lint(cfn_template)
    assert not matches, "\n".join(f"{m.rule.id} {m.message} {m.path}" for m in matches)


def test_sam_template_lints_clean() -> None:
    # cfn-lint also runs its own SAM transform on the source template (what users run).
    matches = lint(TEMPLATE.read_text(), config=ManualArgs(regions=[REGION]))
    assert not matches, "\n".join(f"{m.rule.id} {m.message} {m.path}" for m in matches)


def test_lint_catches_a_circular_dependency(sam_template: dict[str, Any]) -> None:
    """The check above would notice a Bucket -> QueuePolicy -> Bucket cycle (E3004)."""
    broken = copy.deepcopy(sam_template)
    statement = broken["Resources"]["WorkQueuePolicy"]["Properties"]["PolicyDocument"]["Statement"][0]
    statement["Condition"]["ArnLike"]["aws:SourceArn"] = {"Fn::GetAtt": ["InputBucket", "Arn"]}
    rule_ids = {m.rule.id for m in _lint(_transform(broken))}
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
    assert variables["PROMPTDROP_OPENAI_SECRET_ARN"] == {"Ref": "OpenAIKeySecret"}
    assert variables["PROMPTDROP_OUTPUT_BUCKET"] == ""
    for name, parameter in {
        "PROMPTDROP_OUTPUT_PREFIX": "OutputPrefix",
        "PROMPTDROP_INPUT_PREFIX": "InputPrefix",
        "PROMPTDROP_MODEL": "ModelName",
        "PROMPTDROP_MAX_CONCURRENCY": "MaxConcurrency",
        "PROMPTDROP_RPM": "Rpm",
        "PROMPTDROP_TPM": "Tpm",
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
        "OpenAIBaseUrl": "",
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


def _statements(role: dict[str, Any]) -> list[dict[str, Any]]:
    return [s for policy in role["Properties"]["Policies"] for s in policy["PolicyDocument"]["Statement"]]


def _as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def test_function_policies_are_least_privilege(cfn_template: dict[str, Any]) -> None:
    role = cfn_template["Resources"]["ProcessorFunctionRole"]
    assert set(role["Properties"]["ManagedPolicyArns"]) == SAM_MANAGED_POLICIES
    statements = _statements(role)
    for statement in statements:
        assert statement["Effect"] == "Allow"
        assert "*" not in _as_list(statement["Resource"]), statement
        for action in _as_list(statement["Action"]):
            assert action != "*"
            assert not action.endswith(":*"), statement

    def refs(statement: dict[str, Any]) -> str:
        return json.dumps(statement["Resource"])

    granted = {action: refs(s) for s in statements for action in _as_list(s["Action"])}
    assert "JobsTable" in granted["dynamodb:PutItem"]
    assert "OpenAIKeySecret" in granted["secretsmanager:GetSecretValue"]
    assert "${OutputPrefix}*" in granted["s3:PutObject"]
    assert "${InputBucket}/${InputPrefix}*" in granted["s3:GetObject"]
    send = [refs(s) for s in statements if "sqs:SendMessage*" in _as_list(s["Action"])]
    assert len(send) == 2
    assert any("DeadLetterQueue" in r for r in send)
    assert any("WorkQueue" in r for r in send)
    # nothing grants writes outside the output prefix
    for statement in statements:
        if any(a.startswith("s3:Put") for a in _as_list(statement["Action"])):
            assert all("${OutputPrefix}*" in json.dumps(r) for r in _as_list(statement["Resource"]))


def test_outputs(sam_template: dict[str, Any]) -> None:
    values = {json.dumps(o["Value"]) for o in sam_template["Outputs"].values()}
    for logical_id in (
        "InputBucket",
        "WorkQueue",
        "DeadLetterQueue",
        "JobsTable",
        "OpenAIKeySecret",
        "ProcessorFunction",
    ):
        assert json.dumps({"Ref": logical_id}) in values
