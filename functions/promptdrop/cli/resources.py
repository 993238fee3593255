"""Where the CLI finds the deployment: flags, then ``--stack NAME``, then the environment.

The environment variables are the function's own (``PROMPTDROP_TABLE``, ``PROMPTDROP_DLQ_URL``,
``PROMPTDROP_WORK_QUEUE_URL``, ``PROMPTDROP_INPUT_PREFIX``) plus ``PROMPTDROP_BUCKET`` for the input
bucket; ``--stack`` reads a deployed stack's outputs (template.yaml ``Outputs``) and its
``InputPrefix`` parameter. boto3 finds credentials, region and ``AWS_ENDPOINT_URL`` by itself.
"""

from __future__ import annotations

import argparse
import os
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any

import boto3

from .errors import CliError

__all__ = ["Clients", "Resources", "add_resource_flags", "resolve"]

DEFAULT_INPUT_PREFIX = "inputs/"

# resource -> (flag, environment variable, stack output)
_SOURCES: dict[str, tuple[str, str, str]] = {
    "table": ("--table", "PROMPTDROP_TABLE", "JobsTableName"),
    "bucket": ("--bucket", "PROMPTDROP_BUCKET", "InputBucketName"),
    "dlq_url": ("--dlq-url", "PROMPTDROP_DLQ_URL", "DeadLetterQueueUrl"),
    "work_queue_url": ("--work-queue-url", "PROMPTDROP_WORK_QUEUE_URL", "WorkQueueUrl"),
}
_HELP = {
    "table": "the jobs table",
    "bucket": "the input bucket",
    "dlq_url": "the dead-letter queue URL",
    "work_queue_url": "the work queue URL",
}


@dataclass(frozen=True)
class Resources:
    """The deployment's names, as far as they were given."""

    table: str | None = None
    bucket: str | None = None
    dlq_url: str | None = None
    work_queue_url: str | None = None
    input_prefix: str = DEFAULT_INPUT_PREFIX

    def need(self, name: str) -> str:
        """The resource ``name``, or a :class:`CliError` saying the three ways to give it."""
        value: str | None = getattr(self, name)
        if value:
            return value
        flag, env, output = _SOURCES[name]
        raise CliError(f"which {_HELP[name]}? give {flag}, or --stack NAME (its {output} output), or set {env}")


def add_resource_flags(parser: argparse.ArgumentParser, *names: str) -> None:
    """``--stack`` and a flag per resource in ``names`` (and ``--input-prefix`` with ``bucket``)."""
    group = parser.add_argument_group("where the deployment is (flag, else --stack, else environment)")
    group.add_argument("--stack", metavar="NAME", help="a deployed promptdrop stack: read its outputs")
    for name in names:
        flag, env, output = _SOURCES[name]
        metavar = "NAME" if name in ("table", "bucket") else "URL"
        group.add_argument(flag, dest=name, metavar=metavar, help=f"{_HELP[name]} (stack output {output}; ${env})")
    if "bucket" in names:
        group.add_argument(
            "--input-prefix",
            metavar="PREFIX",
            help=f"key prefix the function processes (stack parameter InputPrefix; $PROMPTDROP_INPUT_PREFIX; "
            f"default {DEFAULT_INPUT_PREFIX})",
        )


def resolve(args: argparse.Namespace, clients: Clients) -> Resources:
    """Each resource from its flag, else the stack named by ``--stack``, else the environment."""
    stack: dict[str, str] = clients.stack_outputs(args.stack) if getattr(args, "stack", None) else {}
    found: dict[str, Any] = {}
    for name, (_, env, output) in _SOURCES.items():
        found[name] = getattr(args, name, None) or stack.get(output) or os.environ.get(env) or None
    prefix = getattr(args, "input_prefix", None)
    if prefix is None:
        prefix = stack.get("InputPrefix", os.environ.get("PROMPTDROP_INPUT_PREFIX", DEFAULT_INPUT_PREFIX))
    return Resources(input_prefix=prefix, **found)


class Clients(AbstractContextManager["Clients"]):
    """boto3 clients made on first use and closed together (``with Clients() as aws:``)."""

    def __init__(self) -> None:
        self._made: dict[str, Any] = {}

    def _client(self, name: str) -> Any:  # boto3 ships no type information: Any at this edge
        if name not in self._made:
            self._made[name] = boto3.client(name)  # type: ignore[call-overload,unused-ignore]
        return self._made[name]

    @property
    def s3(self) -> Any:
        return self._client("s3")

    @property
    def ddb(self) -> Any:
        return self._client("dynamodb")

    @property
    def sqs(self) -> Any:
        return self._client("sqs")

    @property
    def cfn(self) -> Any:
        return self._client("cloudformation")

    def stack_outputs(self, stack_name: str) -> dict[str, str]:
        """The stack's outputs and parameters by name (parameters too: InputPrefix is one)."""
        try:
            (stack,) = self.cfn.describe_stacks(StackName=stack_name)["Stacks"]
        except self.cfn.exceptions.ClientError as exc:
            raise CliError(f"cannot read the stack {stack_name!r}: {exc}") from None
        values = {p["ParameterKey"]: p.get("ParameterValue", "") for p in stack.get("Parameters", [])}
        values.update({o["OutputKey"]: o["OutputValue"] for o in stack.get("Outputs", [])})
        return values

    def __exit__(self, *exc_info: object) -> None:
        for client in self._made.values():
            client.close()
        self._made.clear()
