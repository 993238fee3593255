"""Routes, through the real handler: one file's models sent to three local servers, each checking the
auth of the provider it stands in for — a key from Secrets Manager as a bearer token (OpenAI), a Bedrock
token minted from the moto credentials and checked by its form, a key in Azure's ``api-key`` header —
each route's limits held apart, and a rotated key and expiring tokens picked up without a failed request.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator

import boto3
import pytest
from promptdrop import runtime

from infra.fake_openai import FakeOpenAIConfig, RunningFakeOpenAI, serve_in_thread
from infra.local_aws import deploy
from infra.moto_server import local_aws_env
from tests.integration.conftest import API_KEY, Pipeline, _pipeline

AZURE_KEY = "azure-key-0123456789abcdef"
REGION = "us-west-2"
MOTO_ACCESS_KEY = local_aws_env("http://unused")["AWS_ACCESS_KEY_ID"]  # what the function's tokens are signed by


@pytest.fixture(autouse=True)
def _runtime_closed_after() -> Iterator[None]:
    """The runtime a routing table built goes with the test (its prices are the process's: tests of
    OpenAI's prices may run next in this process)."""
    yield
    runtime.shutdown()


@pytest.fixture
def openai_api() -> Iterator[RunningFakeOpenAI]:
    with serve_in_thread(FakeOpenAIConfig(require_api_key=API_KEY)) as server:
        yield server


@pytest.fixture
def bedrock_api() -> Iterator[RunningFakeOpenAI]:
    config = FakeOpenAIConfig(auth="bedrock", bedrock_access_key=MOTO_ACCESS_KEY, bedrock_region=REGION)
    with serve_in_thread(config) as server:
        yield server


@pytest.fixture
def azure_api() -> Iterator[RunningFakeOpenAI]:
    with serve_in_thread(FakeOpenAIConfig(auth="api-key", require_api_key=AZURE_KEY)) as server:
        yield server


def routes(
    pipeline: Pipeline,
    openai_api: RunningFakeOpenAI,
    bedrock_api: RunningFakeOpenAI,
    azure_api: RunningFakeOpenAI,
    *,
    token_ttl_s: int = 900,
    azure_rpm: int | None = None,
) -> list[dict[str, object]]:
    """The table: Bedrock's gpt-oss models, Azure's deployments, everything else to OpenAI (the stack's secret)."""
    name = f"{pipeline.stack.table}/azure-key"
    azure_secret = pipeline.secrets.create_secret(Name=name, SecretString=AZURE_KEY)["ARN"]
    return [
        {
            "name": "bedrock",
            "models": ["openai.gpt-oss-*"],
            "base_url": bedrock_api.base_url,
            "auth": "bedrock",
            "region": REGION,
            "token_ttl_s": token_ttl_s,
        },
        {
            "name": "azure",
            "models": ["azure-*"],
            "base_url": azure_api.base_url,
            "auth": "api-key",
            "secret_arn": azure_secret,
            "rpm": azure_rpm,
        },
        {"name": "openai", "models": ["*"], "base_url": openai_api.base_url},
    ]


MODELS = ("gpt-4o-mini", "openai.gpt-oss-120b-1:0", "azure-gpt-4o", "gpt-4.1")


def mixed_file(lines: int, tag: str) -> str:
    return "\n".join(
        json.dumps({"model": MODELS[i % len(MODELS)], "prompt": f"{tag} {i}", "temperature": 0}) for i in range(lines)
    )


def test_one_file_mixes_models_over_three_routes_each_with_its_own_auth(
    pipeline: Pipeline, openai_api: RunningFakeOpenAI, bedrock_api: RunningFakeOpenAI, azure_api: RunningFakeOpenAI
) -> None:
    # Given three routes to three servers, each checking its own kind of credentials
    table = routes(pipeline, openai_api, bedrock_api, azure_api)
    pipeline.configure(PROMPTDROP_ROUTES=json.dumps(table))
    key = "inputs/mixed.jsonl"
    pipeline.put(key, mixed_file(40, "mixed"))

    # When the file runs
    pipeline.drain()

    # Then every line is answered, each by its model's route, none refused
    summary = pipeline.summary(key)
    assert (summary["status"], summary["counts"]["succeeded"]) == ("SUCCEEDED", 40)
    assert openai_api.stats()["models"] == {"gpt-4o-mini": 10, "gpt-4.1": 10}
    assert bedrock_api.stats()["models"] == {"openai.gpt-oss-120b-1:0": 10}
    assert azure_api.stats()["models"] == {"azure-gpt-4o": 10}
    for server in (openai_api, bedrock_api, azure_api):
        assert server.stats()["auth"] == {"credentials_seen": 1, "refused": 0}
    answers = pipeline.jsonl(key, ".out.jsonl")
    assert [a["response"]["body"]["model"] for a in answers[:4]] == list(MODELS)
    # and each route's models share the fleet's limits in items of their own
    budgets = pipeline.ddb.scan(
        TableName=pipeline.stack.table,
        FilterExpression="begins_with(pk, :b)",
        ExpressionAttributeValues={":b": {"S": "BUDGET#"}},
    )["Items"]
    assert {item["pk"]["S"] for item in budgets} == {
        "BUDGET#openai/gpt-4o-mini",
        "BUDGET#openai/gpt-4.1",
        "BUDGET#bedrock/openai.gpt-oss-120b-1:0",
        "BUDGET#azure/azure-gpt-4o",
    }


def test_a_slow_routes_limit_does_not_slow_another_routes_file(
    pipeline: Pipeline, openai_api: RunningFakeOpenAI, bedrock_api: RunningFakeOpenAI, azure_api: RunningFakeOpenAI
) -> None:
    # Given the Azure route held to 6 requests a minute (one every 10 s), the others unlimited
    table = routes(pipeline, openai_api, bedrock_api, azure_api, azure_rpm=6)
    pipeline.configure(PROMPTDROP_ROUTES=json.dumps(table))
    slow, fast = "inputs/azure.jsonl", "inputs/openai.jsonl"
    pipeline.put(slow, "\n".join(json.dumps({"model": "azure-gpt-4o", "prompt": f"slow {i}"}) for i in range(3)))
    pipeline.put(fast, "\n".join(json.dumps({"model": "gpt-4o-mini", "prompt": f"fast {i}"}) for i in range(30)))

    # When both files run at once, in two containers
    slow_run = pipeline.spawn(pipeline.s3_event(slow))
    fast_run = pipeline.spawn(pipeline.s3_event(fast))

    # Then the fast route's file is done while the slow route has answered at most its first requests
    (fast_job,) = pipeline.response(fast_run)["jobs"]
    assert (fast_job["status"], fast_job["succeeded"]) == ("SUCCEEDED", 30)
    assert sum(azure_api.stats()["models"].values()) < 3
    # and the slow file ends too, every line answered at its route's pace
    (slow_job,) = pipeline.response(slow_run)["jobs"]
    assert (slow_job["status"], slow_job["succeeded"]) == ("SUCCEEDED", 3)


def test_a_rotated_key_and_expiring_tokens_are_picked_up_without_a_failed_request(
    pipeline: Pipeline, openai_api: RunningFakeOpenAI, bedrock_api: RunningFakeOpenAI, azure_api: RunningFakeOpenAI
) -> None:
    # Given Bedrock tokens that live 2 s, and keys re-read from their secrets after 1 s
    table = routes(pipeline, openai_api, bedrock_api, azure_api, token_ttl_s=2)
    pipeline.configure(PROMPTDROP_ROUTES=json.dumps(table), PROMPTDROP_SECRET_TTL_S="1")
    pipeline.put("inputs/before.jsonl", mixed_file(12, "before"))
    pipeline.drain()

    # When the OpenAI key is rotated (the server honours both keys for a while), and time passes
    new_key = "sk-rotated-1234567890abcdef"
    openai_api.keys.accept(API_KEY, new_key)
    pipeline.secrets.put_secret_value(SecretId=pipeline.stack.secret_arn, SecretString=new_key)
    time.sleep(2.5)  # past the keys' re-read and the first token's whole life
    pipeline.put("inputs/during.jsonl", mixed_file(12, "during"))
    pipeline.drain()
    # and the old key is revoked, the token of the run before expired in its turn
    openai_api.keys.accept(new_key)
    time.sleep(2.5)
    pipeline.put("inputs/after.jsonl", mixed_file(12, "after"))
    pipeline.drain()

    # Then the same warm container sent every request with good credentials: nothing refused, all answered
    for key in ("inputs/before.jsonl", "inputs/during.jsonl", "inputs/after.jsonl"):
        assert pipeline.summary(key)["counts"]["succeeded"] == 12, key
    assert openai_api.stats()["auth"] == {"credentials_seen": 2, "refused": 0}
    assert openai_api.keys.seen[new_key] == 12  # every request after the rotation used the new key
    bedrock = bedrock_api.stats()["auth"]
    assert bedrock["refused"] == 0
    assert bedrock["credentials_seen"] >= 3  # a new token for each run: the old one had expired


@pytest.fixture
def keyless_api() -> Iterator[RunningFakeOpenAI]:
    """A server that asks for no key (a vLLM beside the function)."""
    with serve_in_thread(FakeOpenAIConfig()) as server:
        yield server


@pytest.fixture
def keyless_pipeline(
    moto_endpoint: str,
    bedrock_api: RunningFakeOpenAI,
    keyless_api: RunningFakeOpenAI,
    monkeypatch: pytest.MonkeyPatch,
    boto_session: boto3.Session,
) -> Iterator[Pipeline]:
    """The stack deployed from the template with no key secret, its routing table a parameter: Bedrock's
    models through tokens, everything else to a server that asks for no key."""
    table = [
        {
            "name": "bedrock",
            "models": ["openai.gpt-oss-*"],
            "base_url": bedrock_api.base_url,
            "auth": "bedrock",
            "region": REGION,
        },
        {
            "name": "vllm",
            "models": ["*"],
            "base_url": keyless_api.base_url,
            "auth": "none",
            "prices": {"input": 0, "output": 0},
        },
    ]
    parameters = {"ApiKeySecret": "none", "Routes": json.dumps(table)}
    stack = deploy(moto_endpoint, stack_name=f"pd-{uuid.uuid4().hex[:10]}", parameters=parameters)
    yield from _pipeline(stack, keyless_api, monkeypatch, boto_session)


def test_a_deployment_of_bedrock_and_keyless_routes_runs_with_no_secret_at_all(
    keyless_pipeline: Pipeline, bedrock_api: RunningFakeOpenAI, keyless_api: RunningFakeOpenAI
) -> None:
    # Given a stack with no key secret: none created, none named to the function
    pipeline = keyless_pipeline
    assert pipeline.stack.secret_arn == ""
    assert "PROMPTDROP_OPENAI_SECRET_ARN" not in pipeline.env
    assert json.loads(pipeline.env["PROMPTDROP_ROUTES"])[0]["auth"] == "bedrock"  # as Lambda sets it from the template
    key = "inputs/keyless.jsonl"
    models = ["openai.gpt-oss-20b-1:0", "Qwen/Qwen3-8B"] * 5
    pipeline.put(key, "\n".join(json.dumps({"model": m, "prompt": f"keyless {i}"}) for i, m in enumerate(models)))

    # When a file for both routes runs
    pipeline.drain()

    # Then it is answered with no key stored anywhere: a token minted from the role, nothing for the local server
    summary = pipeline.summary(key)
    assert (summary["status"], summary["counts"]["succeeded"]) == ("SUCCEEDED", 10)
    assert bedrock_api.stats()["auth"] == {"credentials_seen": 1, "refused": 0}
    assert keyless_api.stats()["models"] == {"Qwen/Qwen3-8B": 5}
    listed = pipeline.secrets.list_secrets()["SecretList"]
    assert not [secret for secret in listed if secret["Name"].startswith(pipeline.stack.stack_name)]
