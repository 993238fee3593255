"""The local AWS stack: moto in server mode, with the data resources that ``template.yaml`` declares.

Nothing here duplicates the template. :func:`deploy` reads ``template.yaml``, resolves its
intrinsic functions (``Ref``, ``Fn::GetAtt``, ``Fn::Sub``, ``Fn::If``...) against the
parameters, the pseudo parameters and the resources created so far, and turns each data
resource's *properties* into the boto3 calls CloudFormation would make:

==============================  ===========================================================
``AWS::S3::Bucket``             create_bucket + public access block, encryption, versioning,
                                lifecycle rules, tags and the notification configuration
                                (S3 -> SQS, with its key filter)
``AWS::S3::BucketPolicy``       put_bucket_policy (without a TLS-only deny: see
                                :func:`infra.cfn_resources._create_bucket_policy`)
``AWS::SQS::Queue``             create_queue with every declared attribute (redrive policy,
                                visibility timeout, retention...)
``AWS::SQS::QueuePolicy``       set_queue_attributes(Policy=...)
``AWS::DynamoDB::Table``        create_table (keys, billing, global and local secondary indexes,
                                SSE) + PITR and TTL
``AWS::SecretsManager::Secret`` create_secret (empty unless the template gives a value)
``AWS::CloudWatch::Alarm``      put_metric_alarm (a metric or metric math)
==============================  ===========================================================

Parameters are checked as CloudFormation checks them (``AllowedPattern``, ``AllowedValues``,
lengths, ``MinValue``/``MaxValue``): a value AWS would refuse is refused here too.

Compute and plumbing resources (the function, its role and policies, log group, event-source
mapping) and the dashboard (for people, in the console; it names the function) are not created:
locally the handler runs in-process, fed by :class:`infra.event_source.SqsEventSource`.
A resource type, property or resource attribute this module does not know is an error, not a
silent skip, so a template change that the local stack cannot honour is noticed at once.
moto accepts but does not enforce some of what is created (bucket and queue policies, lifecycle
expiry, TTL deletion, alarms): the configuration is there to be read back, not acted on.

Beyond the template, for tests and local users only: the completion events the function
publishes on ``PROMPTDROP_EVENT_BUS`` (source ``promptdrop``) are routed by an EventBridge rule
to a local queue, :attr:`LocalAws.events_queue_url`, where they can be received.

moto's in-process ``mock_aws`` does not work with aioboto3, so the stack always lives in a
:class:`~moto.server.ThreadedMotoServer` reached through ``AWS_ENDPOINT_URL``.

Typical use::

    server, endpoint = start_moto()
    stack = deploy(endpoint)
    os.environ.update(stack.function_env())   # what the Lambda function would see
    ...
    stop_moto(server)

This module is the stack; its parts each have a room of their own: :mod:`infra.moto_server` (the
server, its environment and clients), :mod:`infra.moto_patches` (moto's DynamoDB at a million items),
:mod:`infra.cfn_template` (the template read: tags, parameters, intrinsics, dependency order) and
:mod:`infra.cfn_resources` (each resource type's properties -> API calls).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, Final

from moto.server import ThreadedMotoServer

from infra.cfn_resources import CREATORS, StackContext, attribute_value, physical_name
from infra.cfn_template import (
    DEFAULT_TEMPLATE,
    Resolver,
    TemplateError,
    deploy_order,
    load_template,
    resolve_parameters,
)
from infra.moto_server import REGION, clients, local_aws_env, local_client, start_moto, stop_moto

__all__ = [
    "DEFAULT_TEMPLATE",
    "FUNCTION_LOGICAL_ID",
    "REGION",
    "LocalAws",
    "TemplateError",
    "ThreadedMotoServer",
    "deploy",
    "load_template",
    "local_aws_env",
    "start_moto",
    "stop_moto",
]


FUNCTION_LOGICAL_ID: Final = "ProcessorFunction"

# Logical ids of the template's resources that LocalAws exposes by name.
_BUCKET_ID: Final = "InputBucket"
_WORK_QUEUE_ID: Final = "WorkQueue"
_DLQ_ID: Final = "DeadLetterQueue"
_TABLE_ID: Final = "JobsTable"
_SECRET_ID: Final = "OpenAIKeySecret"  # noqa: S105 - a logical id, not a secret

# Types that exist only to run the function on AWS; the local stack runs the handler in-process.
_NOT_DEPLOYED_LOCALLY: Final = frozenset(
    {
        "AWS::Serverless::Function",
        "AWS::Lambda::Function",
        "AWS::Lambda::EventSourceMapping",
        "AWS::Lambda::Permission",
        "AWS::IAM::Role",
        "AWS::IAM::Policy",
        "AWS::Logs::LogGroup",
        "AWS::CloudWatch::Dashboard",  # for people in the console; it names the function, which is not deployed
    }
)

# Resource attributes besides Type/Properties. The ones with no local meaning are accepted and
# ignored: nothing is deleted or replaced locally (the stack dies with the moto server), so
# DeletionPolicy/UpdateReplacePolicy have nothing to act on; Metadata annotates tools (checkov).
_RESOURCE_ATTRIBUTES: Final = frozenset(
    {"Type", "Properties", "Condition", "DependsOn", "DeletionPolicy", "UpdateReplacePolicy", "Metadata"}
)

# What the function's completion events carry as `source` (issue 11); the local rule matches it.
EVENT_SOURCE: Final = "promptdrop"

# --------------------------------------------------------------------------------------------
# the stack
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LocalAws:
    """The deployed local stack: physical names of the template's resources.

    ``resources`` maps every created logical id to its physical id (what ``Ref`` returns).
    ``event_bus`` is the bus the function publishes on (``PROMPTDROP_EVENT_BUS``) and
    ``events_queue_url`` the local-only queue its rule delivers ``source: promptdrop`` events to.
    """

    endpoint: str
    stack_name: str
    region: str
    bucket: str
    work_queue_url: str
    dlq_url: str
    table: str
    secret_arn: str  # "" when the deployment creates no key secret (ApiKeySecret=none)
    event_bus: str
    events_queue_url: str
    input_prefix: str
    output_prefix: str
    resources: Mapping[str, str]
    _template_env: Mapping[str, str] = field(repr=False)

    def function_env(self, **overrides: str) -> dict[str, str]:
        """The function's environment, as Lambda would set it, pointed at the local stack.

        ``Environment.Variables`` of the function in the template (merged over ``Globals``),
        refs resolved to the local resources, plus :func:`local_aws_env` and ``overrides``;
        variables whose value is empty are left out (an override of ``""`` removes one).
        """
        merged = {**self._template_env, **local_aws_env(self.endpoint, self.region), **overrides}
        return {k: v for k, v in merged.items() if v != ""}

    def client(self, service: str) -> Any:
        """A boto3 client of ``service`` on the local stack (the caller closes it)."""
        return local_client(self.endpoint, self.region, service)


def _function_env(template: Mapping[str, Any], resolver: Resolver) -> dict[str, str]:
    function = template["Resources"].get(FUNCTION_LOGICAL_ID)
    if function is None:
        raise TemplateError(f"the template has no {FUNCTION_LOGICAL_ID}")
    global_vars = template.get("Globals", {}).get("Function", {}).get("Environment", {}).get("Variables", {})
    own_vars = function.get("Properties", {}).get("Environment", {}).get("Variables", {})
    resolved = resolver.resolve({**global_vars, **own_vars})
    return {str(k): attribute_value(v) for k, v in resolved.items()}


def _route_completion_events(ctx: StackContext, bus: str) -> str:
    """Local only: a rule on ``bus`` that sends every ``source: promptdrop`` event to a new queue.

    On AWS the bus exists before the stack (``default``, or one the user made) and whoever
    consumes the events adds their own rule; locally moto starts empty, so a bus other than
    ``default`` is created here, and the rule gives tests and ``local`` users somewhere to see
    the events. Returns the queue's URL.
    """
    events, sqs = ctx.client("events"), ctx.client("sqs")
    if bus != "default":
        events.create_event_bus(Name=bus)
    queue_name = physical_name(ctx.stack_name, "CompletionEvents", max_len=80)
    queue_url = sqs.create_queue(QueueName=queue_name)["QueueUrl"]
    queue_arn = f"arn:aws:sqs:{ctx.region}:{ctx.account_id}:{queue_name}"
    rule_name = f"{ctx.stack_name}-completion-events"[:64]
    pattern = json.dumps({"source": [EVENT_SOURCE]})
    rule_arn = events.put_rule(Name=rule_name, EventBusName=bus, EventPattern=pattern)["RuleArn"]
    # What AWS needs for the rule to deliver (moto delivers without it): the queue lets this rule send.
    statement = {
        "Effect": "Allow",
        "Principal": {"Service": "events.amazonaws.com"},
        "Action": "sqs:SendMessage",
        "Resource": queue_arn,
        "Condition": {"ArnEquals": {"aws:SourceArn": rule_arn}},
    }
    policy = json.dumps({"Version": "2012-10-17", "Statement": [statement]})
    sqs.set_queue_attributes(QueueUrl=queue_url, Attributes={"Policy": policy})
    events.put_targets(Rule=rule_name, EventBusName=bus, Targets=[{"Id": "events-queue", "Arn": queue_arn}])
    return str(queue_url)


def deploy(
    endpoint: str,
    *,
    template: Path = DEFAULT_TEMPLATE,
    stack_name: str = "promptdrop-local",
    parameters: Mapping[str, str] | None = None,
    region: str = REGION,
) -> LocalAws:
    """Create the template's data resources in the moto server at ``endpoint``.

    ``stack_name`` plays ``AWS::StackName`` (lower case: it is part of the bucket name); give
    each stack in one moto server its own name. ``parameters`` override the template's
    defaults. After this returns, the work queue holds the ``s3:TestEvent`` message that S3
    (and moto) send when a bucket notification is configured.
    """
    doc = load_template(template)
    with clients(endpoint, region) as client:
        account_id = str(client("sts").get_caller_identity()["Account"])
        pseudo = {
            "AWS::AccountId": account_id,
            "AWS::Region": region,
            "AWS::Partition": "aws",
            "AWS::URLSuffix": "amazonaws.com",
            "AWS::StackName": stack_name,
            "AWS::StackId": f"arn:aws:cloudformation:{region}:{account_id}:stack/{stack_name}/{uuid.uuid4()}",
            "AWS::NotificationARNs": [],
        }
        resolver = Resolver(doc, resolve_parameters(doc, parameters or {}, pseudo))
        ctx = StackContext(client=client, stack_name=stack_name, region=region, account_id=account_id)
        resources: Mapping[str, Any] = doc["Resources"]
        for logical_id in deploy_order(resources):
            resource = resources[logical_id]
            unknown = set(resource) - _RESOURCE_ATTRIBUTES
            if unknown:
                raise TemplateError(f"{logical_id}: resource attributes {sorted(unknown)} are not supported locally")
            if "Condition" in resource and not resolver.condition(resource["Condition"]):
                continue
            kind = resource["Type"]
            if kind in _NOT_DEPLOYED_LOCALLY:
                continue
            creator = CREATORS.get(kind)
            if creator is None:
                raise TemplateError(f"{logical_id}: resource type {kind} is not supported by the local stack")
            props = resolver.resolve(resource.get("Properties", {}))
            resolver.deployed[logical_id] = creator(ctx, logical_id, props)
        template_env = _function_env(doc, resolver)
        if "PROMPTDROP_EVENT_BUS" not in template_env:
            raise TemplateError(f"{FUNCTION_LOGICAL_ID} has no PROMPTDROP_EVENT_BUS (LocalAws routes its events)")
        event_bus = template_env["PROMPTDROP_EVENT_BUS"]
        events_queue_url = _route_completion_events(ctx, event_bus)

    physical = {k: v.ref for k, v in resolver.deployed.items()}
    for required in (_BUCKET_ID, _WORK_QUEUE_ID, _DLQ_ID, _TABLE_ID):
        if required not in physical:
            raise TemplateError(f"the template has no {required} (LocalAws needs it)")
    return LocalAws(
        endpoint=endpoint,
        stack_name=stack_name,
        region=region,
        bucket=physical[_BUCKET_ID],
        work_queue_url=physical[_WORK_QUEUE_ID],
        dlq_url=physical[_DLQ_ID],
        table=physical[_TABLE_ID],
        secret_arn=physical.get(_SECRET_ID, ""),  # none with ApiKeySecret=none: routes that need no key
        event_bus=event_bus,
        events_queue_url=events_queue_url,
        input_prefix=str(resolver.parameters["InputPrefix"]),
        output_prefix=str(resolver.parameters["OutputPrefix"]),
        resources=MappingProxyType(physical),
        _template_env=MappingProxyType(template_env),
    )
