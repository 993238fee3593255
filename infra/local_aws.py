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
                                :func:`_create_bucket_policy`)
``AWS::SQS::Queue``             create_queue with every declared attribute (redrive policy,
                                visibility timeout, retention...)
``AWS::SQS::QueuePolicy``       set_queue_attributes(Policy=...)
``AWS::DynamoDB::Table``        create_table (keys, billing, global and local secondary indexes,
                                SSE) + PITR and TTL
``AWS::SecretsManager::Secret`` create_secret (empty unless the template gives a value)
``AWS::CloudWatch::Alarm``      put_metric_alarm
==============================  ===========================================================

Parameters are checked as CloudFormation checks them (``AllowedPattern``, ``AllowedValues``,
lengths, ``MinValue``/``MaxValue``): a value AWS would refuse is refused here too.

Compute and plumbing resources (the function, its role, log group, event-source mapping) are
not created: locally the handler runs in-process, fed by :class:`infra.event_source.SqsEventSource`.
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
"""

from __future__ import annotations

import bisect
import copy
import json
import logging
import re
import secrets
import string
import threading
import uuid
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, Final

import boto3
import yaml
from moto.dynamodb import models as dynamodb_models
from moto.dynamodb.models.dynamo_type import DynamoType
from moto.dynamodb.models.table import Table as MotoTable
from moto.moto_server.werkzeug_app import DomainDispatcherApplication, MotoRequestHandler, create_backend_app
from moto.server import ThreadedMotoServer
from werkzeug.serving import make_server

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

REPO_ROOT: Final = Path(__file__).resolve().parent.parent
DEFAULT_TEMPLATE: Final = REPO_ROOT / "template.yaml"
REGION: Final = "us-east-1"
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

_NO_VALUE: Final = object()  # what {"Ref": "AWS::NoValue"} resolves to; removed from its container

_DUMMY_CREDENTIALS: Final = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": "testing",
}


class TemplateError(ValueError):
    """The template uses something the local stack cannot reproduce faithfully."""


# --------------------------------------------------------------------------------------------
# moto server and environment
# --------------------------------------------------------------------------------------------


class _LocalMiddleware:
    """WSGI middleware of the local moto server: counts AWS calls, serializes DynamoDB.

    ``GET /_local/calls`` answers the calls counted so far by service and operation (the
    benchmark's "AWS calls per 1,000 prompts"); ``POST /_local/calls`` resets the count.

    One DynamoDB request at a time:
    moto's DynamoDB backend is not thread-safe: under concurrent requests (parallel shards in the
    tests) a transaction can fail half-way with "dictionary changed size during iteration" and
    moto's rollback then restores a table snapshot that drops other requests' writes. Real
    DynamoDB is linearizable per item; serializing its requests makes moto behave so. Other
    services (SQS long polls above all) stay concurrent.
    """

    def __init__(self, app: Any) -> None:
        self._app = app
        self._lock = threading.Lock()
        self._calls: Counter[str] = Counter()

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Any:
        if environ.get("PATH_INFO") == "/_local/calls":
            if environ.get("REQUEST_METHOD") == "POST":
                self._calls.clear()
            start_response("200 OK", [("Content-Type", "application/json")])
            return [json.dumps(dict(self._calls)).encode()]
        target = environ.get("HTTP_X_AMZ_TARGET", "")
        self._calls[target.replace("_20120810", "") or _s3_operation(environ)] += 1
        if target.startswith("DynamoDB"):
            with self._lock:
                return list(self._app(environ, start_response))
        return self._app(environ, start_response)


def _s3_operation(environ: dict[str, Any]) -> str:
    method = environ.get("REQUEST_METHOD", "")
    query = environ.get("QUERY_STRING", "")
    if "uploadId" in query or "uploads" in query:
        return f"S3.Multipart{method}"
    return f"S3.{method}" if environ.get("HTTP_AUTHORIZATION", "").find("/s3/") >= 0 else f"other.{method}"


class _MotoServer(ThreadedMotoServer):
    def _server_entry(self) -> None:
        app = _LocalMiddleware(DomainDispatcherApplication(create_backend_app))
        self._server = make_server(self._ip_address, self._port, app, True, request_handler=MotoRequestHandler)
        self._server_ready_event.set()
        self._server.serve_forever()


class _TablesNotCopied:
    """Stands for the ``copy`` module inside ``moto.dynamodb.models``: a table is "copied" as itself."""

    @staticmethod
    def deepcopy(value: Any, memo: dict[int, Any] | None = None) -> Any:
        return value if isinstance(value, MotoTable) else copy.deepcopy(value, memo)


def _transact_item_by_item(original: Callable[..., None]) -> Callable[..., None]:
    """moto rolls a failed ``TransactWriteItems`` back from a deep copy of every table it names, taken
    first: a cost in time and memory that grows with the table (minutes and gigabytes at a million
    items, for each unit a job completes). A transaction writes only the items it names, so those
    are what is kept here, and put back when it fails; the tables are no longer copied."""

    def transact_write_items(self: Any, transact_items: list[dict[str, Any]]) -> None:
        kept: list[tuple[str, dict[str, Any], dict[str, Any] | None]] = []
        for entry in transact_items:
            operation: Any = next(iter(entry.values()), None)
            table = self.tables.get(operation.get("TableName")) if isinstance(operation, dict) else None
            if table is None:
                continue  # moto refuses the transaction before it writes anything
            names = [n for n in (table.hash_key_attr, table.range_key_attr) if n is not None]
            key = operation.get("Key") or {n: operation.get("Item", {}).get(n) for n in names}
            try:
                item = self.get_item(table.name, key)
            except Exception:  # noqa: S112  # a malformed key: moto refuses that operation itself
                continue
            kept.append((table.name, key, None if item is None else copy.deepcopy(item.to_json()["Attributes"])))
        try:
            original(self, transact_items)
        except Exception:
            for table_name, key, attributes in reversed(kept):
                if self.get_item(table_name, key) is not None:
                    self.delete_item(table_name, key)
                if attributes is not None:
                    self.put_item(table_name, attributes)
            raise

    return transact_write_items


_querying = threading.local()  # (table, items): what the table query running on this thread reads


def _query_reads_its_partition(query: Callable[..., Any], all_items: Callable[..., Any]) -> tuple[Any, Any]:
    """moto answers each page of a table ``Query`` by sorting every item of the table and walking
    them up to the start key: about 10 s a page at a million items, where DynamoDB reads only the
    page. Here a table query reads its own partition, from its start key on, already in key order;
    moto's own code still filters, sorts, pages and projects it, so the answer is the same. Index
    queries, scans and everything else are unchanged."""

    def partition_query(self: MotoTable, hash_key: DynamoType | None, *args: Any, **kwargs: Any) -> Any:
        index_name = args[6] if len(args) > 6 else kwargs.get("index_name")  # moto's order
        if index_name or hash_key is None or not self.range_key_attr:
            return query(self, hash_key, *args, **kwargs)
        start_key = args[3] if len(args) > 3 else kwargs.get("exclusive_start_key")
        forward = args[4] if len(args) > 4 else kwargs.get("scan_index_forward", True)
        items = sorted(self.items.get(hash_key, {}).values(), key=lambda item: item.range_key.cast_value)
        if start_key:  # the page starts at its start key (moto skips the key itself)
            start = DynamoType(start_key[self.range_key_attr]).cast_value
            keys = [item.range_key.cast_value for item in items]
            items = (
                items[bisect.bisect_left(keys, start) :]
                if forward is not False
                else items[: bisect.bisect_right(keys, start)]
            )
        _querying.reading = (self, items)
        try:
            return query(self, hash_key, *args, **kwargs)
        finally:
            _querying.reading = None

    def items_for_query(self: MotoTable) -> list[Any]:
        reading = getattr(_querying, "reading", None)
        if reading is not None and reading[0] is self:
            return list(reading[1])
        return list(all_items(self))

    return partition_query, items_for_query


def _fix_moto_at_scale() -> None:
    """What moto does per table size, not per request: transactions and table queries (once per process)."""
    backend: Any = dynamodb_models.DynamoDBBackend
    if getattr(backend.transact_write_items, "item_by_item", False):
        return
    dynamodb_models.copy = _TablesNotCopied()  # type: ignore[assignment,attr-defined]
    backend.transact_write_items = _transact_item_by_item(backend.transact_write_items)
    backend.transact_write_items.item_by_item = True
    MotoTable.query, MotoTable.all_items = _query_reads_its_partition(MotoTable.query, MotoTable.all_items)  # type: ignore[method-assign]


def start_moto(port: int = 0) -> tuple[ThreadedMotoServer, str]:
    """Start a moto server on 127.0.0.1 (``port=0``: a free port) and return it with its endpoint URL.

    Stop it with :func:`stop_moto`, which also closes its listening socket. Its transactions roll
    back item by item (:func:`_transact_item_by_item`), not from a copy of every table, and a
    table query reads only its partition (:func:`_query_reads_its_partition`).
    """
    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # no access-log line per AWS call
    _fix_moto_at_scale()
    server = _MotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    host, bound_port = server.get_host_and_port()
    return server, f"http://{host}:{bound_port}"


def stop_moto(server: ThreadedMotoServer) -> None:
    """Stop a server from :func:`start_moto` and close its socket (no ResourceWarning)."""
    server.stop()
    wsgi_server = getattr(server, "_server", None)  # moto keeps the werkzeug server private
    if wsgi_server is not None:
        wsgi_server.server_close()


def local_aws_env(endpoint: str, region: str = REGION) -> dict[str, str]:
    """The environment variables that point the AWS SDKs (boto3, aioboto3) at ``endpoint``.

    Dummy credentials, the region (``AWS_REGION`` as Lambda sets it, ``AWS_DEFAULT_REGION``
    as the SDKs read it) and ``AWS_ENDPOINT_URL``. Returned, never applied to ``os.environ``.
    """
    return {
        **_DUMMY_CREDENTIALS,
        "AWS_DEFAULT_REGION": region,
        "AWS_REGION": region,
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_EC2_METADATA_DISABLED": "true",
    }


def local_client(endpoint: str, region: str, service: str) -> Any:  # boto3 ships no type information
    """A boto3 client of ``service`` on the moto server at ``endpoint`` (the caller closes it)."""
    return boto3.client(
        service,  # type: ignore[call-overload,unused-ignore]
        endpoint_url=endpoint,
        region_name=region,
        aws_access_key_id=_DUMMY_CREDENTIALS["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=_DUMMY_CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
        aws_session_token=_DUMMY_CREDENTIALS["AWS_SESSION_TOKEN"],
    )


@contextmanager
def _clients(endpoint: str, region: str) -> Iterator[Callable[[str], Any]]:
    """Yield a factory of boto3 clients bound to ``endpoint``; all are closed on exit."""
    with ExitStack() as stack:
        made: dict[str, Any] = {}

        def client(service: str) -> Any:
            if service not in made:
                made[service] = local_client(endpoint, region, service)
                stack.callback(made[service].close)
            return made[service]

        yield client


# --------------------------------------------------------------------------------------------
# template loading and intrinsic functions
# --------------------------------------------------------------------------------------------


class _CfnLoader(yaml.SafeLoader):  # type: ignore[misc]  # PyYAML ships no stubs here
    """A SafeLoader that reads CloudFormation short-form tags (``!Ref``, ``!Sub``...)."""


def _construct_intrinsic(loader: _CfnLoader, tag_suffix: str, node: yaml.Node) -> dict[str, Any]:
    key = tag_suffix if tag_suffix in {"Ref", "Condition"} else f"Fn::{tag_suffix}"
    value: Any
    if isinstance(node, yaml.ScalarNode):
        value = loader.construct_scalar(node)
        if tag_suffix == "GetAtt":
            value = str(value).split(".", 1)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        assert isinstance(node, yaml.MappingNode)
        value = loader.construct_mapping(node, deep=True)
    return {key: value}


_CfnLoader.add_multi_constructor("!", _construct_intrinsic)


def load_template(path: Path = DEFAULT_TEMPLATE) -> dict[str, Any]:
    """Load a CloudFormation/SAM YAML (or JSON) template, short-form tags as long-form dicts."""
    loaded = yaml.load(path.read_text(encoding="utf-8"), Loader=_CfnLoader)  # noqa: S506 - safe loader subclass
    if not isinstance(loaded, dict) or not isinstance(loaded.get("Resources"), dict):
        raise TemplateError(f"{path} is not a CloudFormation template (no Resources)")
    return loaded


@dataclass
class _Deployed:
    """A created resource: what ``Ref`` returns and its ``Fn::GetAtt`` attributes."""

    ref: str
    attrs: dict[str, str] = field(default_factory=dict)


_SUB_VAR = re.compile(r"\$\{([^}]*)\}")


class _Resolver:
    """Resolves intrinsic functions over parameters, pseudo parameters and created resources."""

    def __init__(self, template: Mapping[str, Any], parameters: Mapping[str, Any]) -> None:
        self.template = template
        self.parameters = dict(parameters)
        self.deployed: dict[str, _Deployed] = {}
        self._conditions: dict[str, bool] = {}

    def condition(self, name: str) -> bool:
        if name not in self._conditions:
            definitions = self.template.get("Conditions", {})
            if name not in definitions:
                raise TemplateError(f"unknown condition {name!r}")
            self._conditions[name] = self._truth(definitions[name])
        return self._conditions[name]

    def _truth(self, node: Any) -> bool:
        if isinstance(node, dict) and len(node) == 1:
            ((fn, arg),) = node.items()
            if fn == "Condition":
                return self.condition(arg)
            if fn == "Fn::Equals":
                left, right = (self.resolve(x) for x in arg)
                return str(left) == str(right)
            if fn == "Fn::Not":
                return not self._truth(arg[0])
            if fn == "Fn::And":
                return all(self._truth(x) for x in arg)
            if fn == "Fn::Or":
                return any(self._truth(x) for x in arg)
        raise TemplateError(f"unsupported condition expression {node!r}")

    def ref(self, name: str) -> Any:
        if name == "AWS::NoValue":
            return _NO_VALUE
        if name in self.parameters:
            return self.parameters[name]
        if name in self.deployed:
            return self.deployed[name].ref
        raise TemplateError(f"cannot resolve Ref {name!r} locally (not a parameter or deployed resource)")

    def get_att(self, logical_id: str, attribute: str) -> str:
        deployed = self.deployed.get(logical_id)
        if deployed is None or attribute not in deployed.attrs:
            raise TemplateError(f"cannot resolve Fn::GetAtt {logical_id}.{attribute} locally")
        return deployed.attrs[attribute]

    def _sub(self, text: str, variables: Mapping[str, Any]) -> str:
        def replace(match: re.Match[str]) -> str:
            name = match.group(1).strip()
            if name.startswith("!"):
                return "${" + name[1:] + "}"
            if name in variables:
                return str(variables[name])
            if "." in name and not name.startswith("AWS::"):
                return self.get_att(*name.split(".", 1))
            return str(self.ref(name))

        return _SUB_VAR.sub(replace, text)

    def resolve(self, node: Any) -> Any:
        """Resolve every intrinsic function in ``node``; ``AWS::NoValue`` entries are dropped."""
        if isinstance(node, list):
            return [v for v in (self.resolve(x) for x in node) if v is not _NO_VALUE]
        if not isinstance(node, dict):
            return node
        if len(node) == 1:
            ((fn, arg),) = node.items()
            if fn == "Ref":
                return self.ref(arg)
            if fn == "Fn::GetAtt":
                logical_id, attribute = arg.split(".", 1) if isinstance(arg, str) else arg
                return self.get_att(logical_id, self.resolve(attribute))
            if fn == "Fn::Sub":
                if isinstance(arg, str):
                    return self._sub(arg, {})
                text, variables = arg
                return self._sub(text, self.resolve(variables))
            if fn == "Fn::If":
                name, if_true, if_false = arg
                return self.resolve(if_true if self.condition(name) else if_false)
            if fn == "Fn::Join":
                delimiter, items = arg
                return str(delimiter).join(str(x) for x in self.resolve(items))
            if fn == "Fn::Select":
                index, items = arg
                return self.resolve(items)[int(self.resolve(index))]
            if fn == "Fn::Split":
                delimiter, text = arg
                return str(self.resolve(text)).split(delimiter)
            if fn.startswith("Fn::"):
                raise TemplateError(f"intrinsic function {fn} is not supported by the local stack")
        resolved = {k: self.resolve(v) for k, v in node.items()}
        return {k: v for k, v in resolved.items() if v is not _NO_VALUE}


def _references(node: Any) -> set[str]:
    """Logical names a template fragment refers to (``Ref``, ``Fn::GetAtt``, ``Fn::Sub``)."""
    found: set[str] = set()
    if isinstance(node, list):
        for item in node:
            found |= _references(item)
    elif isinstance(node, dict):
        for key, value in node.items():
            if key == "Ref" and isinstance(value, str):
                found.add(value)
            elif key == "Fn::GetAtt":
                found.add(value.split(".", 1)[0] if isinstance(value, str) else value[0])
            elif key == "Fn::Sub":
                text = value if isinstance(value, str) else value[0]
                names = (m.strip() for m in _SUB_VAR.findall(text) if not m.startswith("!"))
                found |= {n.split(".", 1)[0] for n in names}
                if not isinstance(value, str):
                    found |= _references(value[1])
            else:
                found |= _references(value)
    return found


def _deploy_order(resources: Mapping[str, Any]) -> list[str]:
    """Logical ids in dependency order (refs and DependsOn), template order between equals."""
    depends: dict[str, set[str]] = {}
    for logical_id, resource in resources.items():
        explicit = resource.get("DependsOn", [])
        explicit = [explicit] if isinstance(explicit, str) else explicit
        depends[logical_id] = (_references(resource) | set(explicit)) & set(resources) - {logical_id}
    order: list[str] = []
    while len(order) < len(resources):
        ready = [r for r in resources if r not in order and depends[r] <= set(order)]
        if not ready:
            stuck = sorted(set(resources) - set(order))
            raise TemplateError(f"circular dependency between {stuck}")
        order.append(ready[0])
    return order


# --------------------------------------------------------------------------------------------
# resource types: CloudFormation properties -> API calls
# --------------------------------------------------------------------------------------------


def _physical_name(stack_name: str, logical_id: str, *, max_len: int, lower: bool = False) -> str:
    """A generated name in CloudFormation's style: ``<stack>-<logical id>-<random suffix>``."""
    alphabet = string.ascii_uppercase + string.digits
    suffix = "".join(secrets.choice(alphabet) for _ in range(12))
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


def _attribute_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict | list):
        return json.dumps(value)
    return str(value)


@dataclass(frozen=True)
class _Ctx:
    client: Callable[[str], Any]
    stack_name: str
    region: str
    account_id: str


def _create_queue(ctx: _Ctx, logical_id: str, props: dict[str, Any]) -> _Deployed:
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
    name = props.get("QueueName") or _physical_name(ctx.stack_name, logical_id, max_len=75) + (".fifo" if fifo else "")
    attributes = {k: _attribute_value(v) for k, v in props.items() if k in attribute_names}
    sqs = ctx.client("sqs")
    url = sqs.create_queue(QueueName=name, Attributes=attributes, tags=_tags(props))["QueueUrl"]
    arn = f"arn:aws:sqs:{ctx.region}:{ctx.account_id}:{name}"
    return _Deployed(ref=url, attrs={"Arn": arn, "QueueName": name, "QueueUrl": url})


def _create_queue_policy(ctx: _Ctx, logical_id: str, props: dict[str, Any]) -> _Deployed:
    _check_known(logical_id, props, {"PolicyDocument", "Queues"})
    policy = json.dumps(props["PolicyDocument"])
    for url in props["Queues"]:
        ctx.client("sqs").set_queue_attributes(QueueUrl=url, Attributes={"Policy": policy})
    return _Deployed(ref=f"{ctx.stack_name}-{logical_id}-{uuid.uuid4().hex[:12]}")


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


def _create_bucket(ctx: _Ctx, logical_id: str, props: dict[str, Any]) -> _Deployed:
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
    name = props.get("BucketName") or _physical_name(ctx.stack_name, logical_id, max_len=63, lower=True)
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
    return _Deployed(
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


def _create_bucket_policy(ctx: _Ctx, logical_id: str, props: dict[str, Any]) -> _Deployed:
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
    return _Deployed(ref=props["Bucket"])


def _create_table(ctx: _Ctx, logical_id: str, props: dict[str, Any]) -> _Deployed:
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
    name = props.get("TableName") or _physical_name(ctx.stack_name, logical_id, max_len=255)
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
    return _Deployed(ref=name, attrs=attrs)


def _create_secret(ctx: _Ctx, logical_id: str, props: dict[str, Any]) -> _Deployed:
    _check_known(logical_id, props, {"Description", "KmsKeyId", "Name", "SecretString", "Tags"})
    request: dict[str, Any] = {
        "Name": props.get("Name") or _physical_name(ctx.stack_name, logical_id, max_len=256),
        **{k: props[k] for k in ("Description", "KmsKeyId", "SecretString") if k in props},
    }
    if props.get("Tags"):
        request["Tags"] = [{"Key": k, "Value": v} for k, v in _tags(props).items()]
    arn = ctx.client("secretsmanager").create_secret(**request)["ARN"]
    return _Deployed(ref=arn, attrs={"Id": arn})


def _create_alarm(ctx: _Ctx, logical_id: str, props: dict[str, Any]) -> _Deployed:
    integers = {"Period", "EvaluationPeriods", "DatapointsToAlarm"}
    passthrough = {
        "ActionsEnabled",
        "AlarmActions",
        "AlarmDescription",
        "ComparisonOperator",
        "Dimensions",
        "InsufficientDataActions",
        "MetricName",
        "Namespace",
        "OKActions",
        "Statistic",
        "Threshold",
        "TreatMissingData",
        "Unit",
    }
    _check_known(logical_id, props, integers | passthrough | {"AlarmName"})
    name = props.get("AlarmName") or _physical_name(ctx.stack_name, logical_id, max_len=255)
    request: dict[str, Any] = {k: v for k, v in props.items() if k in passthrough}
    request.update({k: int(v) for k, v in props.items() if k in integers})
    if "Threshold" in request:
        request["Threshold"] = float(request["Threshold"])
    ctx.client("cloudwatch").put_metric_alarm(AlarmName=name, **request)
    return _Deployed(ref=name, attrs={"Arn": f"arn:aws:cloudwatch:{ctx.region}:{ctx.account_id}:alarm:{name}"})


_CREATORS: Final[Mapping[str, Callable[[_Ctx, str, dict[str, Any]], _Deployed]]] = {
    "AWS::SQS::Queue": _create_queue,
    "AWS::SQS::QueuePolicy": _create_queue_policy,
    "AWS::S3::Bucket": _create_bucket,
    "AWS::S3::BucketPolicy": _create_bucket_policy,
    "AWS::DynamoDB::Table": _create_table,
    "AWS::SecretsManager::Secret": _create_secret,
    "AWS::CloudWatch::Alarm": _create_alarm,
}


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
    secret_arn: str
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


def _check_parameter(name: str, spec: Mapping[str, Any], value: str) -> None:
    """Refuse a value CloudFormation would refuse (its constraints, checked on defaults too)."""

    def refuse(reason: str) -> TemplateError:
        hint = spec.get("ConstraintDescription")
        return TemplateError(f"parameter {name}={value!r} {reason}" + (f" ({hint})" if hint else ""))

    if "AllowedValues" in spec and value not in {str(v) for v in spec["AllowedValues"]}:
        raise refuse(f"is not one of {spec['AllowedValues']}")
    if spec.get("Type") == "Number":
        try:
            number = float(value)
        except ValueError:
            raise refuse("is not a number") from None
        if "MinValue" in spec and number < float(spec["MinValue"]):
            raise refuse(f"is below MinValue {spec['MinValue']}")
        if "MaxValue" in spec and number > float(spec["MaxValue"]):
            raise refuse(f"is above MaxValue {spec['MaxValue']}")
        return
    if "MinLength" in spec and len(value) < int(spec["MinLength"]):
        raise refuse(f"is shorter than MinLength {spec['MinLength']}")
    if "MaxLength" in spec and len(value) > int(spec["MaxLength"]):
        raise refuse(f"is longer than MaxLength {spec['MaxLength']}")
    # CloudFormation matches the whole value (Java regex); the template's patterns mean the same in Python.
    if "AllowedPattern" in spec and re.fullmatch(str(spec["AllowedPattern"]), value) is None:
        raise refuse(f"does not match AllowedPattern {spec['AllowedPattern']}")


def _resolve_parameters(
    template: Mapping[str, Any], overrides: Mapping[str, str], pseudo: Mapping[str, Any]
) -> dict[str, Any]:
    declared: Mapping[str, Any] = template.get("Parameters", {})
    unknown = set(overrides) - set(declared)
    if unknown:
        raise TemplateError(f"unknown parameters {sorted(unknown)}")
    values: dict[str, Any] = dict(pseudo)
    for name, spec in declared.items():
        if name in overrides:
            value: Any = overrides[name]
        elif "Default" in spec:
            value = spec["Default"]
        else:
            raise TemplateError(f"parameter {name!r} has no default and no value was given")
        value = str(value)
        _check_parameter(name, spec, value)
        if spec.get("Type") in {"CommaDelimitedList", "List<String>"}:
            values[name] = [v.strip() for v in value.split(",")] if value else []
        else:
            values[name] = value
    return values


def _function_env(template: Mapping[str, Any], resolver: _Resolver) -> dict[str, str]:
    function = template["Resources"].get(FUNCTION_LOGICAL_ID)
    if function is None:
        raise TemplateError(f"the template has no {FUNCTION_LOGICAL_ID}")
    global_vars = template.get("Globals", {}).get("Function", {}).get("Environment", {}).get("Variables", {})
    own_vars = function.get("Properties", {}).get("Environment", {}).get("Variables", {})
    resolved = resolver.resolve({**global_vars, **own_vars})
    return {str(k): _attribute_value(v) for k, v in resolved.items()}


def _route_completion_events(ctx: _Ctx, bus: str) -> str:
    """Local only: a rule on ``bus`` that sends every ``source: promptdrop`` event to a new queue.

    On AWS the bus exists before the stack (``default``, or one the user made) and whoever
    consumes the events adds their own rule; locally moto starts empty, so a bus other than
    ``default`` is created here, and the rule gives tests and ``local`` users somewhere to see
    the events. Returns the queue's URL.
    """
    events, sqs = ctx.client("events"), ctx.client("sqs")
    if bus != "default":
        events.create_event_bus(Name=bus)
    queue_name = _physical_name(ctx.stack_name, "CompletionEvents", max_len=80)
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
    with _clients(endpoint, region) as client:
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
        resolver = _Resolver(doc, _resolve_parameters(doc, parameters or {}, pseudo))
        ctx = _Ctx(client=client, stack_name=stack_name, region=region, account_id=account_id)
        resources: Mapping[str, Any] = doc["Resources"]
        for logical_id in _deploy_order(resources):
            resource = resources[logical_id]
            unknown = set(resource) - _RESOURCE_ATTRIBUTES
            if unknown:
                raise TemplateError(f"{logical_id}: resource attributes {sorted(unknown)} are not supported locally")
            if "Condition" in resource and not resolver.condition(resource["Condition"]):
                continue
            kind = resource["Type"]
            if kind in _NOT_DEPLOYED_LOCALLY:
                continue
            creator = _CREATORS.get(kind)
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
    for required in (_BUCKET_ID, _WORK_QUEUE_ID, _DLQ_ID, _TABLE_ID, _SECRET_ID):
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
        secret_arn=physical[_SECRET_ID],
        event_bus=event_bus,
        events_queue_url=events_queue_url,
        input_prefix=str(resolver.parameters["InputPrefix"]),
        output_prefix=str(resolver.parameters["OutputPrefix"]),
        resources=MappingProxyType(physical),
        _template_env=MappingProxyType(template_env),
    )
