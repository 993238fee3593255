"""The whole pipeline, locally: moto server + template resources + the fake OpenAI API + the real handler.

``pipeline`` gives a test a fresh stack with the function's environment set (as Lambda would set
it from template.yaml), the OpenAI key stored in the stack's Secrets Manager secret, and helpers
to upload inputs, play the SQS event-source mapping and read back S3, DynamoDB and the DLQ.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote_plus

import boto3
import pytest
from promptdrop import runtime
from promptdrop.adapters.items import request_pks
from promptdrop.handler import lambda_handler
from promptdrop.settings import get_settings

from infra.event_source import LocalContext, SqsEventSource
from infra.fake_openai import FakeOpenAIConfig, RunningFakeOpenAI, prompt_hash, serve_in_thread
from infra.invoke import spawn
from infra.local_aws import LocalAws

API_KEY = "sk-local-test"
ROOT = Path(__file__).parents[2]


@pytest.fixture(scope="session")
def fake_openai() -> Iterator[RunningFakeOpenAI]:
    with serve_in_thread(FakeOpenAIConfig(require_api_key=API_KEY)) as server:
        yield server


@pytest.fixture(scope="session")
def slow_fake_openai() -> Iterator[RunningFakeOpenAI]:
    """100 ms a call: long enough for runs to overlap, to be killed mid-way, to hit a deadline."""
    with serve_in_thread(FakeOpenAIConfig(require_api_key=API_KEY, latency_ms=100, jitter_ms=20)) as server:
        yield server


@pytest.fixture(scope="session")
def boto_session() -> boto3.Session:
    """One boto3 session for the tests' own clients: a new session loads every service's model again
    (0.15 s of CPU for a test's four clients, against 0.02 s from a session that has them)."""
    return boto3.Session()


@pytest.fixture(scope="session", autouse=True)
def _close_runtime() -> Iterator[None]:
    yield
    runtime.shutdown()


@dataclass
class Pipeline:
    stack: LocalAws
    server: RunningFakeOpenAI
    s3: Any
    ddb: Any
    sqs: Any
    env: dict[str, str]
    monkeypatch: pytest.MonkeyPatch

    def configure(self, **env: str) -> None:
        """Change the function's environment (for this process and for spawned invocations)."""
        for name, value in env.items():
            self.monkeypatch.setenv(name, value)
        self.env.update(env)
        get_settings.cache_clear()

    def spawn(self, event: dict[str, Any], *, timeout_s: float = 900) -> subprocess.Popen[str]:
        """Invoke the handler in a new process: another Lambda container, running at the same time."""
        env = {**os.environ, **self.env, "POWERTOOLS_LOG_LEVEL": "WARNING", "POWERTOOLS_METRICS_DISABLED": "true"}
        return spawn(event, env, "--timeout-s", str(timeout_s))

    @staticmethod
    def response(process: subprocess.Popen[str]) -> Any:
        assert process.stdout is not None
        out = process.stdout.read()
        process.stdout.close()
        assert process.wait(timeout=120) == 0, out
        return json.loads(out.strip().splitlines()[-1])

    def s3_event(self, key: str) -> dict[str, Any]:
        """A direct S3 ObjectCreated event for ``key`` (URL-encoded, as S3 sends it)."""
        return {
            "Records": [
                {
                    "eventSource": "aws:s3",
                    "eventName": "ObjectCreated:Put",
                    "s3": {"bucket": {"name": self.bucket}, "object": {"key": quote_plus(key)}},
                }
            ]
        }

    def sqs_event(self, message: dict[str, Any]) -> dict[str, Any]:
        """What Lambda's event-source mapping hands the handler for one received SQS message."""
        with SqsEventSource.for_stack(self.stack) as event_source:
            return event_source.build_event([message])

    def receive_work(self, count: int) -> list[dict[str, Any]]:
        """Take ``count`` messages off the work queue (deleted: the caller runs them)."""
        got: list[dict[str, Any]] = []
        while len(got) < count:
            batch = self.sqs.receive_message(
                QueueUrl=self.stack.work_queue_url,
                MaxNumberOfMessages=min(10, count - len(got)),
                AttributeNames=["All"],
                WaitTimeSeconds=1,
            ).get("Messages", [])
            assert batch, f"expected {count} work messages, got {len(got)}"
            for message in batch:
                self.sqs.delete_message(QueueUrl=self.stack.work_queue_url, ReceiptHandle=message["ReceiptHandle"])
            got += batch
        return got

    def prompts_seen(self) -> int:
        return sum(self.server.stats()["prompts"].values())

    @property
    def bucket(self) -> str:
        return self.stack.bucket

    def put(self, key: str, data: bytes | str) -> None:
        body = data.encode() if isinstance(data, str) else data
        self.s3.put_object(Bucket=self.bucket, Key=key, Body=body)

    def drain(self, **kwargs: Any) -> int:
        """Play Lambda's SQS event-source mapping until the work queue is empty."""
        with SqsEventSource.for_stack(self.stack) as event_source:
            return event_source.drain(lambda_handler, wait_s=0, **kwargs)

    def invoke(self, event: dict[str, Any], context: LocalContext | None = None) -> Any:
        return lambda_handler(event, context or LocalContext())

    def output(self, key: str, suffix: str) -> bytes:
        body: bytes = self.s3.get_object(Bucket=self.bucket, Key=f"results/{key}{suffix}")["Body"].read()
        return body

    def jsonl(self, key: str, suffix: str) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.output(key, suffix).splitlines()]

    def summary(self, key: str) -> dict[str, Any]:
        value: dict[str, Any] = json.loads(self.output(key, ".summary.json"))
        return value

    def summary_missing(self, key: str) -> bool:
        listed = self.s3.list_objects_v2(Bucket=self.bucket, Prefix=f"results/{key}.summary.json")
        return listed.get("KeyCount", 0) == 0

    def dlq(self) -> list[dict[str, Any]]:
        messages: list[dict[str, Any]] = []
        while True:
            got = self.sqs.receive_message(QueueUrl=self.stack.dlq_url, MaxNumberOfMessages=10, WaitTimeSeconds=0)
            batch = got.get("Messages", [])
            if not batch:
                return messages
            for message in batch:
                messages.append(json.loads(message["Body"]))
                self.sqs.delete_message(QueueUrl=self.stack.dlq_url, ReceiptHandle=message["ReceiptHandle"])

    def dlq_peek(self) -> list[dict[str, Any]]:
        """The dead letters, left in the queue (visible again at once) for a redrive to move."""
        got = self.sqs.receive_message(QueueUrl=self.stack.dlq_url, MaxNumberOfMessages=10, WaitTimeSeconds=0)
        batch = got.get("Messages", [])
        for message in batch:
            self.sqs.change_message_visibility(
                QueueUrl=self.stack.dlq_url, ReceiptHandle=message["ReceiptHandle"], VisibilityTimeout=0
            )
        return [json.loads(m["Body"]) for m in batch]

    def events(self) -> Any:
        """An EventBridge client on the local stack."""
        client = boto3.client("events", region_name=self.stack.region, endpoint_url=self.stack.endpoint)
        self.monkeypatch.setattr(self, "_events", client, raising=False)
        return client

    def items(self, job_id: str) -> dict[str, dict[str, Any]]:
        """The job's DynamoDB items by sort key (its request items from every partition), as plain values."""
        deserializer = boto3.dynamodb.types.TypeDeserializer()
        raw = [
            item
            for pk in [f"JOB#{job_id}", *request_pks(job_id)]
            for item in self.ddb.query(
                TableName=self.stack.table,
                KeyConditionExpression="pk = :pk",
                ExpressionAttributeValues={":pk": {"S": pk}},
            )["Items"]
        ]
        return {item["sk"]["S"]: {k: deserializer.deserialize(v) for k, v in item.items()} for item in raw}

    @property
    def secrets(self) -> Any:
        client = boto3.client("secretsmanager", region_name=self.stack.region, endpoint_url=self.stack.endpoint)
        self.monkeypatch.setattr(self, "_secrets", client, raising=False)
        return client

    def stack_secret(self, value: str) -> None:
        """Store another OpenAI key in the stack's secret (read when the runtime is next built)."""
        secrets = boto3.client("secretsmanager", region_name=self.stack.region, endpoint_url=self.stack.endpoint)
        with contextlib.closing(secrets):
            secrets.put_secret_value(SecretId=self.stack.secret_arn, SecretString=value)
        runtime.shutdown()  # the key is read once per container: start a new one

    def times_seen(self, prompt: str) -> int:
        count: int = self.server.stats()["prompts"].get(prompt_hash(prompt), 0)
        return count


@pytest.fixture
def pipeline(
    local_aws: LocalAws, fake_openai: RunningFakeOpenAI, monkeypatch: pytest.MonkeyPatch, boto_session: boto3.Session
) -> Iterator[Pipeline]:
    yield from _pipeline(local_aws, fake_openai, monkeypatch, boto_session)


@pytest.fixture
def slow_pipeline(
    local_aws: LocalAws,
    slow_fake_openai: RunningFakeOpenAI,
    monkeypatch: pytest.MonkeyPatch,
    boto_session: boto3.Session,
) -> Iterator[Pipeline]:
    yield from _pipeline(local_aws, slow_fake_openai, monkeypatch, boto_session)


def _pipeline(
    local_aws: LocalAws,
    fake_openai: RunningFakeOpenAI,
    monkeypatch: pytest.MonkeyPatch,
    session: boto3.Session | None = None,
) -> Iterator[Pipeline]:
    env = local_aws.function_env(
        OPENAI_BASE_URL=fake_openai.base_url,
        PROMPTDROP_MAX_CONCURRENCY="8",
        POWERTOOLS_METRICS_NAMESPACE="promptdrop-test",
    )
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    session = session or boto3.Session(region_name=local_aws.region)
    clients = {
        name: session.client(name, endpoint_url=local_aws.endpoint, region_name=local_aws.region)  # type: ignore[call-overload]
        for name in ("s3", "dynamodb", "sqs", "secretsmanager")
    }
    if local_aws.secret_arn:  # a deployment whose routes need no key has no secret (ApiKeySecret=none)
        clients["secretsmanager"].put_secret_value(SecretId=local_aws.secret_arn, SecretString=API_KEY)
    get_settings.cache_clear()
    fake_openai.reset()
    yield Pipeline(local_aws, fake_openai, clients["s3"], clients["dynamodb"], clients["sqs"], dict(env), monkeypatch)
    get_settings.cache_clear()
    for client in clients.values():
        client.close()
