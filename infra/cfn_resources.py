"""The template's data resources created in moto: each resource type's CloudFormation properties
turned into the API calls CloudFormation would make (see :mod:`infra.local_aws` for the table).
"""

from __future__ import annotations

import base64
import hashlib
import json
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final

from infra.cfn_template import Deployed, TemplateError

__all__ = ["CREATORS", "StackContext", "attribute_value", "physical_name"]


def physical_name(stack_name: str, logical_id: str, *, max_len: int, lower: bool = False) -> str:
    """A generated name in CloudFormation's style, ``<stack>-<logical id>-<suffix>``.

    CloudFormation's suffix is random; this one is the same for the same stack and resource, so a
    stack deployed again has the names it had (``promptdrop local``'s exports stay good even when the
    state it keeps is not loaded), and stacks of different names never share one.
    """
    digest = hashlib.sha256(f"{stack_name}/{logical_id}".encode()).digest()
    suffix = base64.b32encode(digest).decode()[:12]  # upper-case letters and digits, as CloudFormation's
    name = f"{stack_name[: max_len - len(logical_id) - 14]}-{logical_id}-{suffix}"[:max_len]
    return name.lower() if lower else name


def _check_known(logical_id: str, props: Mapping[str, Any], known: set[str]) -> None:
    unknown = set(props) - known
    if unknown:
        raise TemplateError(f"{logical_id}: properties {sorted(unknown)} are not supported by the local stack")


def _tags(props: Mapping[str, Any]) -> dict[str, str]:
    tags = props.get("Tags", [])
    if isinstance(tags, dict):  # AWS::SecretsManager::Secret et al. sometimes use a map
        return {str(k): str(v) for k, v in tags.items()}
    return {str(t["Key"]): str(t["Value"]) for t in tags}


def attribute_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict | list):
        return json.dumps(value)
    return str(value)


@dataclass(frozen=True)
class StackContext:
    client: Callable[[str], Any]
    stack_name: str
    region: str
    account_id: str


def _create_queue(ctx: StackContext, logical_id: str, props: dict[str, Any]) -> Deployed:
    attribute_names = {
        "ContentBasedDeduplication",
        "DeduplicationScope",
        "DelaySeconds",
        "FifoQueue",
        "FifoThroughputLimit",
        "KmsDataKeyReusePeriodSeconds",
        "KmsMasterKeyId",
        "MaximumMessageSize",
        "MessageRetentionPeriod",
        "ReceiveMessageWaitTimeSeconds",
        "RedriveAllowPolicy",
        "RedrivePolicy",
        "SqsManagedSseEnabled",
        "VisibilityTimeout",
    }
    _check_known(logical_id, props, attribute_names | {"QueueName", "Tags"})
    fifo = bool(props.get("FifoQueue"))
    name = props.get("QueueName") or physical_name(ctx.stack_name, logical_id, max_len=75) + (".fifo" if fifo else "")
    attributes = {k: attribute_value(v) for k, v in props.items() if k in attribute_names}
    sqs = ctx.client("sqs")
    url = sqs.create_queue(QueueName=name, Attributes=attributes, tags=_tags(props))["QueueUrl"]
    arn = f"arn:aws:sqs:{ctx.region}:{ctx.account_id}:{name}"
    return Deployed(ref=url, attrs={"Arn": arn, "QueueName": name, "QueueUrl": url})


def _create_queue_policy(ctx: StackContext, logical_id: str, props: dict[str, Any]) -> Deployed:
    _check_known(logical_id, props, {"PolicyDocument", "Queues"})
    policy = json.dumps(props["PolicyDocument"])
    for url in props["Queues"]:
        ctx.client("sqs").set_queue_attributes(QueueUrl=url, Attributes={"Policy": policy})
    return Deployed(ref=f"{ctx.stack_name}-{logical_id}-{uuid.uuid4().hex[:12]}")


def _s3_filter(cfn_filter: Mapping[str, Any]) -> dict[str, Any]:
    rules = cfn_filter.get("S3Key", {}).get("Rules", [])
    return {"Key": {"FilterRules": [{"Name": r["Name"], "Value": r["Value"]} for r in rules]}}


def _s3_notification(cfn: Mapping[str, Any]) -> dict[str, Any]:
    """CloudFormation ``NotificationConfiguration`` -> PutBucketNotificationConfiguration shape."""
    targets = {
        "QueueConfigurations": ("Queue", "QueueArn"),
        "TopicConfigurations": ("Topic", "TopicArn"),
        "LambdaConfigurations": ("Function", "LambdaFunctionArn"),
    }
    unknown = set(cfn) - set(targets) - {"EventBridgeConfiguration"}
    if unknown:
        raise TemplateError(f"NotificationConfiguration: {sorted(unknown)} not supported locally")
    api: dict[str, Any] = {}
    for section, (cfn_key, api_key) in targets.items():
        entries = []
        for entry in cfn.get(section, []):
            converted: dict[str, Any] = {api_key: entry[cfn_key], "Events": [entry["Event"]]}
            if "Filter" in entry:
                converted["Filter"] = _s3_filter(entry["Filter"])
            entries.append(converted)
        if entries:
            api[section] = entries
    if cfn.get("EventBridgeConfiguration", {}).get("EventBridgeEnabled"):
        api["EventBridgeConfiguration"] = {}
    return api


def _s3_lifecycle_rule(cfn: Mapping[str, Any]) -> dict[str, Any]:
    """One CloudFormation lifecycle ``Rule`` -> the PutBucketLifecycleConfiguration shape."""
    known = {"Id", "Status", "Prefix", "ExpirationInDays", "AbortIncompleteMultipartUpload"}
    unknown = set(cfn) - known
    if unknown:
        raise TemplateError(f"LifecycleConfiguration rule: {sorted(unknown)} not supported locally")
    # CloudFormation turns the rule's Prefix into the API's Filter; no Prefix = the whole bucket.
    rule: dict[str, Any] = {"Status": cfn["Status"], "Filter": {"Prefix": cfn.get("Prefix", "")}}
    if "Id" in cfn:
        rule["ID"] = cfn["Id"]
    if "ExpirationInDays" in cfn:
        rule["Expiration"] = {"Days": int(cfn["ExpirationInDays"])}  # a Number parameter arrives as text
    if "AbortIncompleteMultipartUpload" in cfn:
        days = int(cfn["AbortIncompleteMultipartUpload"]["DaysAfterInitiation"])
        rule["AbortIncompleteMultipartUpload"] = {"DaysAfterInitiation": days}
    return rule


def _create_bucket(ctx: StackContext, logical_id: str, props: dict[str, Any]) -> Deployed:
    _check_known(
        logical_id,
        props,
        {
            "BucketName",
            "BucketEncryption",
            "LifecycleConfiguration",
            "NotificationConfiguration",
            "PublicAccessBlockConfiguration",
            "Tags",
            "VersioningConfiguration",
        },
    )
    name = props.get("BucketName") or physical_name(ctx.stack_name, logical_id, max_len=63, lower=True)
    s3 = ctx.client("s3")
    if ctx.region == "us-east-1":
        s3.create_bucket(Bucket=name)
    else:
        s3.create_bucket(Bucket=name, CreateBucketConfiguration={"LocationConstraint": ctx.region})
    if "PublicAccessBlockConfiguration" in props:
        s3.put_public_access_block(Bucket=name, PublicAccessBlockConfiguration=props["PublicAccessBlockConfiguration"])
    if "BucketEncryption" in props:
        rules = [
            {
                ("ApplyServerSideEncryptionByDefault" if k == "ServerSideEncryptionByDefault" else k): v
                for k, v in rule.items()
            }
            for rule in props["BucketEncryption"]["ServerSideEncryptionConfiguration"]
        ]
        s3.put_bucket_encryption(Bucket=name, ServerSideEncryptionConfiguration={"Rules": rules})
    if "VersioningConfiguration" in props:
        s3.put_bucket_versioning(
            Bucket=name, VersioningConfiguration={"Status": props["VersioningConfiguration"]["Status"]}
        )
    if props.get("LifecycleConfiguration", {}).get("Rules"):
        rules = [_s3_lifecycle_rule(rule) for rule in props["LifecycleConfiguration"]["Rules"]]
        s3.put_bucket_lifecycle_configuration(Bucket=name, LifecycleConfiguration={"Rules": rules})
    if props.get("Tags"):
        tag_set = [{"Key": k, "Value": v} for k, v in _tags(props).items()]
        s3.put_bucket_tagging(Bucket=name, Tagging={"TagSet": tag_set})
    if "NotificationConfiguration" in props:
        # Like S3, moto sends an s3:TestEvent message to each destination queue at this point.
        s3.put_bucket_notification_configuration(
            Bucket=name, NotificationConfiguration=_s3_notification(props["NotificationConfiguration"])
        )
    return Deployed(
        ref=name,
        attrs={
            "Arn": f"arn:aws:s3:::{name}",
            "DomainName": f"{name}.s3.amazonaws.com",
            "RegionalDomainName": f"{name}.s3.{ctx.region}.amazonaws.com",
        },
    )


def _denies_plain_http(statement: Mapping[str, Any]) -> bool:
    secure_transport = statement.get("Condition", {}).get("Bool", {}).get("aws:SecureTransport")
    return statement.get("Effect") == "Deny" and secure_transport in ("false", False)


def _create_bucket_policy(ctx: StackContext, logical_id: str, props: dict[str, Any]) -> Deployed:
    """Apply the policy's statements, except a TLS-only deny, which has no local meaning.

    moto enforces ``Principal: "*"`` statements of a bucket policy but ignores their
    ``Condition`` (see ``S3Backend.put_bucket_policy``): a deny "when not aws:SecureTransport"
    would deny every request, and the local endpoint is plain HTTP on loopback anyway. Any other
    conditional statement would be enforced wrongly too, so it is refused rather than applied.
    """
    _check_known(logical_id, props, {"Bucket", "PolicyDocument"})
    document = dict(props["PolicyDocument"])
    statements = document["Statement"]
    kept = [s for s in (statements if isinstance(statements, list) else [statements]) if not _denies_plain_http(s)]
    conditional = [s.get("Sid", "?") for s in kept if "Condition" in s]
    if conditional:
        raise TemplateError(f"{logical_id}: moto would enforce statements {conditional} without their Condition")
    if kept:
        document["Statement"] = kept
        ctx.client("s3").put_bucket_policy(Bucket=props["Bucket"], Policy=json.dumps(document))
    return Deployed(ref=props["Bucket"])


def _create_table(ctx: StackContext, logical_id: str, props: dict[str, Any]) -> Deployed:
    passthrough = {
        "AttributeDefinitions",
        "BillingMode",
        "DeletionProtectionEnabled",
        "GlobalSecondaryIndexes",
        "KeySchema",
        "LocalSecondaryIndexes",
        "ProvisionedThroughput",
        "TableClass",
    }
    extra = {
        "PointInTimeRecoverySpecification",
        "SSESpecification",
        "StreamSpecification",
        "TableName",
        "Tags",
        "TimeToLiveSpecification",
    }
    _check_known(logical_id, props, passthrough | extra)
    for index in props.get("GlobalSecondaryIndexes", []):
        # CreateTable takes these as CloudFormation spells them; ContributorInsightsSpecification
        # is CloudFormation's alone (a separate API call), so it is refused rather than dropped.
        _check_known(
            f"{logical_id}.GlobalSecondaryIndexes[{index.get('IndexName')}]",
            index,
            {"IndexName", "KeySchema", "Projection", "ProvisionedThroughput", "OnDemandThroughput", "WarmThroughput"},
        )
    name = props.get("TableName") or physical_name(ctx.stack_name, logical_id, max_len=255)
    request: dict[str, Any] = {k: v for k, v in props.items() if k in passthrough}
    if "SSESpecification" in props:
        sse = props["SSESpecification"]
        request["SSESpecification"] = {
            "Enabled": bool(sse.get("SSEEnabled")),
            **{k: sse[k] for k in ("SSEType", "KMSMasterKeyId") if k in sse},
        }
    if "StreamSpecification" in props:
        request["StreamSpecification"] = {"StreamEnabled": True, **props["StreamSpecification"]}
    if props.get("Tags"):
        request["Tags"] = props["Tags"]
    ddb = ctx.client("dynamodb")
    table = ddb.create_table(TableName=name, **request)["TableDescription"]
    if "PointInTimeRecoverySpecification" in props:
        ddb.update_continuous_backups(
            TableName=name, PointInTimeRecoverySpecification=props["PointInTimeRecoverySpecification"]
        )
    if "TimeToLiveSpecification" in props:
        ddb.update_time_to_live(TableName=name, TimeToLiveSpecification=props["TimeToLiveSpecification"])
    attrs = {"Arn": table["TableArn"]}
    if "LatestStreamArn" in table:
        attrs["StreamArn"] = table["LatestStreamArn"]
    return Deployed(ref=name, attrs=attrs)


def _create_secret(ctx: StackContext, logical_id: str, props: dict[str, Any]) -> Deployed:
    _check_known(logical_id, props, {"Description", "KmsKeyId", "Name", "SecretString", "Tags"})
    request: dict[str, Any] = {
        "Name": props.get("Name") or physical_name(ctx.stack_name, logical_id, max_len=256),
        **{k: props[k] for k in ("Description", "KmsKeyId", "SecretString") if k in props},
    }
    if props.get("Tags"):
        request["Tags"] = [{"Key": k, "Value": v} for k, v in _tags(props).items()]
    arn = ctx.client("secretsmanager").create_secret(**request)["ARN"]
    return Deployed(ref=arn, attrs={"Id": arn})


def _create_alarm(ctx: StackContext, logical_id: str, props: dict[str, Any]) -> Deployed:
    integers = {"Period", "EvaluationPeriods", "DatapointsToAlarm"}
    passthrough = {
        "ActionsEnabled",
        "AlarmActions",
        "AlarmDescription",
        "ComparisonOperator",
        "Dimensions",
        "InsufficientDataActions",
        "MetricName",
        "Metrics",  # metric math (the failure-rate, 429-rate and job-age alarms)
        "Namespace",
        "OKActions",
        "Statistic",
        "Threshold",
        "TreatMissingData",
        "Unit",
    }
    _check_known(logical_id, props, integers | passthrough | {"AlarmName"})
    name = props.get("AlarmName") or physical_name(ctx.stack_name, logical_id, max_len=255)
    request: dict[str, Any] = {k: v for k, v in props.items() if k in passthrough}
    request.update({k: int(v) for k, v in props.items() if k in integers})
    if "Threshold" in request:
        request["Threshold"] = float(request["Threshold"])
    ctx.client("cloudwatch").put_metric_alarm(AlarmName=name, **request)
    return Deployed(ref=name, attrs={"Arn": f"arn:aws:cloudwatch:{ctx.region}:{ctx.account_id}:alarm:{name}"})


CREATORS: Final[Mapping[str, Callable[[StackContext, str, dict[str, Any]], Deployed]]] = {
    "AWS::SQS::Queue": _create_queue,
    "AWS::SQS::QueuePolicy": _create_queue_policy,
    "AWS::S3::Bucket": _create_bucket,
    "AWS::S3::BucketPolicy": _create_bucket_policy,
    "AWS::DynamoDB::Table": _create_table,
    "AWS::SecretsManager::Secret": _create_secret,
    "AWS::CloudWatch::Alarm": _create_alarm,
}
