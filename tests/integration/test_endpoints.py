"""Every Batch API endpoint, mixed in one file, through the real handler against the fake OpenAI API."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from promptdrop import runtime

from infra.fake_openai import FakeOpenAIConfig, RunningFakeOpenAI, serve_in_thread
from infra.fake_openai.embeddings import embedding_vector
from infra.local_aws import LocalAws
from tests.integration.conftest import API_KEY, Pipeline, _pipeline

OUTPUT_LINE_KEYS = {"id", "custom_id", "response", "error"}
RESPONSE_KEYS = {"status_code", "request_id", "body"}


def batch_line(custom_id: str, url: str, body: dict[str, Any], method: str = "POST") -> str:
    return json.dumps({"custom_id": custom_id, "method": method, "url": url, "body": body})


ALL_FIVE = "\n".join(
    [
        batch_line(
            "chat", "/v1/chat/completions", {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "c"}]}
        ),
        batch_line("resp", "/v1/responses", {"model": "gpt-4o-mini", "input": "tell me", "max_output_tokens": 64}),
        batch_line("emb", "/v1/embeddings", {"model": "text-embedding-3-small", "input": ["one", "two"]}),
        batch_line("cmpl", "/v1/completions", {"model": "gpt-3.5-turbo-instruct", "prompt": "once upon"}),
        batch_line("mod", "/v1/moderations", {"input": "is this fine"}),
        batch_line("resp-short-url", "/responses", {"model": "gpt-4o-mini", "input": "no v1"}),
        json.dumps({"custom_id": "s-resp", "endpoint": "/v1/responses", "prompt": "hi", "system": "be brief"}),
        json.dumps({"custom_id": "s-emb", "endpoint": "/v1/embeddings", "prompt": "embed me", "dimensions": 8}),
        json.dumps({"custom_id": "s-mod", "endpoint": "/v1/moderations", "prompt": "moderate me"}),
        json.dumps({"custom_id": "s-cmpl", "endpoint": "/v1/completions", "prompt": "complete me", "max_tokens": 5}),
        batch_line("bad-url", "/v1/images/generations", {"prompt": "a cat"}),
        batch_line("bad-method", "/v1/chat/completions", {"messages": [{"role": "user", "content": "x"}]}, "GET"),
        json.dumps({"custom_id": "bad-param", "endpoint": "/v1/embeddings", "prompt": "x", "temperature": 0.2}),
    ]
)


def test_a_file_mixing_all_five_endpoints_gets_each_answer_as_the_batch_api_would(pipeline: Pipeline) -> None:
    # Given a .jsonl mixing every endpoint, as Batch API lines and short forms, and three bad lines
    key = "inputs/all-five.jsonl"
    pipeline.put(key, ALL_FIVE)

    # When it runs through the handler
    pipeline.drain()

    # Then every good line is answered in the Batch API output format, in input order
    results = pipeline.jsonl(key, ".out.jsonl")
    ids = ["chat", "resp", "emb", "cmpl", "mod", "resp-short-url", "s-resp", "s-emb", "s-mod", "s-cmpl"]
    assert [r["custom_id"] for r in results] == ids
    for result in results:
        assert set(result) == OUTPUT_LINE_KEYS
        assert result["error"] is None
        assert set(result["response"]) == RESPONSE_KEYS
        assert result["response"]["status_code"] == 200
    body = {r["custom_id"]: r["response"]["body"] for r in results}
    # and each body is the endpoint's own answer, as it came
    assert body["chat"]["object"] == "chat.completion"
    assert body["resp"]["object"] == "response"
    assert body["resp"]["status"] == "completed"
    assert body["resp"]["output"][0]["content"][0]["text"] == "Echo: tell me"
    assert body["emb"]["object"] == "list"
    assert [d["embedding"] for d in body["emb"]["data"]] == [embedding_vector(t, 1536) for t in ("one", "two")]
    assert body["cmpl"]["object"] == "text_completion"
    assert body["mod"]["results"][0]["flagged"] is False
    assert body["mod"]["model"] == "omni-moderation-latest"
    assert body["s-resp"]["instructions"] == "be brief"  # system -> instructions
    assert body["s-emb"]["data"][0]["embedding"] == embedding_vector("embed me", 8)
    assert body["s-emb"]["model"] == "text-embedding-3-small"  # the endpoint's default model
    assert body["s-cmpl"]["usage"]["completion_tokens"] <= 5

    # and the bad lines fail alone, each with its reason
    errors = {e["custom_id"]: e["error"] for e in pipeline.jsonl(key, ".errors.jsonl")}
    assert set(errors) == {"bad-url", "bad-method", "bad-param"}
    assert "'/v1/images/generations' is not an endpoint promptdrop sends" in errors["bad-url"]["message"]
    assert "method 'GET'" in errors["bad-method"]["message"]
    assert 'unknown parameter "temperature"' in errors["bad-param"]["message"]
    assert "/v1/embeddings parameter" in errors["bad-param"]["message"]

    # and the summary's tokens are each endpoint's usage shape, added up (moderations report none)
    summary = pipeline.summary(key)
    assert summary["counts"] == {"total": 13, "succeeded": 10, "failed": 3}
    usages = [b.get("usage") or {} for b in body.values()]
    prompt = sum(u.get("prompt_tokens", u.get("input_tokens", 0)) for u in usages)
    completion = sum(u.get("completion_tokens", u.get("output_tokens", 0)) for u in usages)
    assert (summary["tokens"]["prompt"], summary["tokens"]["completion"]) == (prompt, completion)
    assert prompt > 0
    assert completion > 0
    assert completion == pipeline.server.stats()["completion_tokens"]
    usage = body["resp"]["usage"]
    item = pipeline.items(summary["job_id"])
    (resp_item,) = [v for k, v in item.items() if k == "REQ#resp"]
    assert (resp_item["prompt_tokens"], resp_item["completion_tokens"]) == (
        usage["input_tokens"],
        usage["output_tokens"],
    )
    assert resp_item["finish_reason"] == "completed"
    (emb_item,) = [v for k, v in item.items() if k == "REQ#emb"]
    assert (emb_item["prompt_tokens"], emb_item["completion_tokens"]) == (body["emb"]["usage"]["prompt_tokens"], 0)


def test_a_dead_letter_of_another_endpoint_keeps_its_url(pipeline: Pipeline) -> None:
    # Given a Responses line the API refuses
    key = "inputs/resp-400.jsonl"
    pipeline.put(key, json.dumps({"custom_id": "r", "endpoint": "/v1/responses", "prompt": "no [[fail:400]]"}))
    pipeline.drain()
    # Then its dead letter is a Batch API line for /v1/responses, ready to redrive
    (letter,) = pipeline.dlq()
    assert letter["request"]["url"] == "/v1/responses"
    assert letter["request"]["body"]["input"] == "no [[fail:400]]"


def test_an_embeddings_answer_too_large_for_an_item_goes_through_s3(pipeline: Pipeline) -> None:
    # Given one embeddings line of 300 inputs (an answer of 300 x 1,536 floats: megabytes)
    key = "inputs/embed-many.jsonl"
    inputs = [f"sentence number {i}" for i in range(300)]
    pipeline.put(key, json.dumps({"custom_id": "big", "endpoint": "/v1/embeddings", "input": inputs}))
    pipeline.drain()
    # Then the journal item points at S3, and .out.jsonl holds the whole answer
    (result,) = pipeline.jsonl(key, ".out.jsonl")
    data = result["response"]["body"]["data"]
    assert len(data) == 300
    assert data[299]["embedding"] == embedding_vector(inputs[299], 1536)
    items = pipeline.items(pipeline.summary(key)["job_id"])
    assert items["REQ#big"]["response_s3_key"].endswith(".responses/1.json")
    assert "response" not in items["REQ#big"]


def test_a_txt_file_can_ask_the_responses_api_through_its_upload_metadata(pipeline: Pipeline) -> None:
    key = "inputs/question.txt"
    metadata = {"promptdrop-endpoint": "/v1/responses"}
    pipeline.s3.put_object(Bucket=pipeline.bucket, Key=key, Body=b"What is a bridge?", Metadata=metadata)
    pipeline.drain()
    (result,) = pipeline.jsonl(key, ".out.jsonl")
    assert result["response"]["body"]["object"] == "response"
    assert pipeline.output(key, ".out.txt") == b"Echo: What is a bridge?"


def test_a_csv_uses_the_endpoint_of_the_environment_and_its_parameter_columns(pipeline: Pipeline) -> None:
    # Given PROMPTDROP_ENDPOINT=/responses and a .csv with a Responses parameter column
    pipeline.configure(PROMPTDROP_ENDPOINT="/responses")
    key = "inputs/rows.csv"
    pipeline.put(key, "prompt,max_output_tokens,team\nfirst,32,red\nsecond,16,blue\n")
    pipeline.drain()
    results = pipeline.jsonl(key, ".out.jsonl")
    assert [r["response"]["body"]["object"] for r in results] == ["response", "response"]
    assert [r["response"]["body"]["max_output_tokens"] for r in results] == [32, 16]


def test_an_upload_naming_an_unknown_endpoint_fails_the_file(pipeline: Pipeline) -> None:
    key = "inputs/unknown.jsonl"
    metadata = {"promptdrop-endpoint": "/v1/images"}
    pipeline.s3.put_object(Bucket=pipeline.bucket, Key=key, Body=b'{"prompt": "x"}\n', Metadata=metadata)
    pipeline.drain()
    (letter,) = pipeline.dlq()
    assert (letter["kind"], letter["error"]["code"]) == ("file_failure", "invalid_endpoint")
    assert pipeline.server.stats()["requests"] == 0


# -- per-model limits ---------------------------------------------------------------------------------------------

LARGE, SMALL = "gpt-4o", "gpt-4o-mini"
LARGE_RPM, SMALL_RPM = 60, 6000


@pytest.fixture(scope="module")
def per_model_fake() -> Iterator[RunningFakeOpenAI]:
    limits = {LARGE: (LARGE_RPM, None), SMALL: (SMALL_RPM, None)}
    with serve_in_thread(FakeOpenAIConfig(require_api_key=API_KEY, model_limits=limits, burst_s=1)) as server:
        yield server


@pytest.fixture
def per_model(
    local_aws: LocalAws, per_model_fake: RunningFakeOpenAI, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Pipeline]:
    runtime.shutdown()  # the container's client is built for one base URL: start a new one
    yield from _pipeline(local_aws, per_model_fake, monkeypatch)
    runtime.shutdown()


def test_two_models_with_different_limits_each_run_at_their_own(per_model: Pipeline) -> None:
    # Given a file mixing 40 prompts for a model limited to 6,000/min and 4 for one limited to 60/min
    key = "inputs/two-models.jsonl"
    small = [f"small {i}" for i in range(40)]
    large = [f"large {i}" for i in range(4)]
    lines = [json.dumps({"prompt": p, "model": SMALL}) for p in small]
    lines[10:10] = [json.dumps({"prompt": p, "model": LARGE}) for p in large]
    per_model.put(key, "\n".join(lines))

    # When it runs
    per_model.drain()

    # Then every prompt of both models is answered
    summary = per_model.summary(key)
    assert (summary["status"], summary["counts"]["succeeded"]) == ("SUCCEEDED", 44)
    # and the small model was never held to the large one's limit: not one of its prompts drew a 429
    assert [per_model.times_seen(p) for p in small] == [1] * 40
    stats = per_model.server.stats()
    assert stats["models"][SMALL] == 40
    assert stats["models"][LARGE] >= 4
    # and each model's budget learned its own limit from its own headers
    learned = {model: budget_limits(per_model, model) for model in (SMALL, LARGE)}
    assert learned == {SMALL: SMALL_RPM, LARGE: LARGE_RPM}


def budget_limits(p: Pipeline, model: str) -> float:
    """The requests/min the fleet's budget item of ``model`` learned (README: "Dividing the account's rate limit")."""
    key = {"pk": {"S": f"BUDGET#{model}"}, "sk": {"S": "BUDGET"}}
    return float(p.ddb.get_item(TableName=p.stack.table, Key=key)["Item"]["rpm"]["N"])
