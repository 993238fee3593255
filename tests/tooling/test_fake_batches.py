"""The fake OpenAI API's Batch API (``/v1/files``, ``/v1/batches``), exercised through the real ``openai`` SDK."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import openai
import pytest
from openai.types import Batch

from infra.fake_openai import FakeOpenAIConfig, serve_in_thread

KEY = "sk-batch-test"
FINAL = {"completed", "failed", "expired", "cancelled"}


@asynccontextmanager
async def api(**config: Any) -> AsyncIterator[openai.AsyncOpenAI]:
    with serve_in_thread(FakeOpenAIConfig(require_api_key=KEY, **config)) as server:
        async with openai.AsyncOpenAI(base_url=server.base_url, api_key=KEY, max_retries=0) as client:
            yield client


def line(
    custom_id: str, prompt: str, *, model: str = "gpt-4o-mini", url: str = "/v1/chat/completions"
) -> dict[str, Any]:
    body = {"model": model, "messages": [{"role": "user", "content": prompt}], "max_tokens": 20}
    return {"custom_id": custom_id, "method": "POST", "url": url, "body": body}


def jsonl(lines: list[dict[str, Any]]) -> bytes:
    return b"".join(json.dumps(each).encode() + b"\n" for each in lines)


async def submit(client: openai.AsyncOpenAI, lines: list[dict[str, Any]], **params: Any) -> Batch:
    upload = await client.files.create(file=("input.jsonl", jsonl(lines)), purpose="batch")
    return await client.batches.create(
        input_file_id=upload.id, endpoint="/v1/chat/completions", completion_window="24h", **params
    )


async def settled(client: openai.AsyncOpenAI, batch_id: str) -> Batch:
    for _ in range(500):
        batch = await client.batches.retrieve(batch_id)
        if batch.status in FINAL:
            return batch
        await asyncio.sleep(0.01)
    raise AssertionError(f"batch {batch_id} never settled")


async def lines_of(client: openai.AsyncOpenAI, file_id: str | None) -> list[dict[str, Any]]:
    assert file_id is not None
    content = await client.files.content(file_id)
    return [json.loads(each) for each in content.content.splitlines()]


async def test_a_batch_runs_to_completed_with_an_output_and_an_error_file() -> None:
    async with api() as client:
        batch = await submit(
            client, [line("a", "first"), line("b", "[[fail:400]] refused"), line("c", "third")], metadata={"job": "j1"}
        )
        assert batch.status == "validating"
        assert batch.metadata == {"job": "j1"}
        done = await settled(client, batch.id)
        assert done.status == "completed"
        assert done.request_counts is not None
        assert (done.request_counts.total, done.request_counts.completed, done.request_counts.failed) == (3, 2, 1)
        out = await lines_of(client, done.output_file_id)
        assert [each["custom_id"] for each in out] == ["a", "c"]
        assert out[0]["response"]["status_code"] == 200
        assert out[0]["response"]["body"]["choices"][0]["message"]["content"] == "Echo: first"
        (failed,) = await lines_of(client, done.error_file_id)
        assert failed["custom_id"] == "b"
        assert failed["response"]["status_code"] == 400
        assert "error" in failed["response"]["body"]
        assert done.usage is not None
        assert done.usage.total_tokens > 0
        await client.files.delete(done.output_file_id)  # type: ignore[arg-type]
        with pytest.raises(openai.NotFoundError):
            await client.files.retrieve(done.output_file_id)  # type: ignore[arg-type]


async def test_batch_answer_chars_makes_each_batch_answer_that_long_and_prices_it_so() -> None:
    async with api(batch_answer_chars=4000) as client:
        long = line("a", "first")
        long["body"].pop("max_tokens")
        batch = await submit(client, [long, line("b", "cut")])
        done = await settled(client, batch.id)
        out = {each["custom_id"]: each["response"]["body"] for each in await lines_of(client, done.output_file_id)}
    text = out["a"]["choices"][0]["message"]["content"]
    assert len(text) == 4000
    assert text.startswith("Echo: first Echo: first ")
    assert out["a"]["usage"]["completion_tokens"] == 4000 // 4 + 1
    # max_tokens still cuts it, as the API does
    assert out["b"]["choices"][0]["finish_reason"] == "length"
    assert out["b"]["usage"]["completion_tokens"] == 20


async def test_a_batch_file_larger_than_a_request_body_is_taken_whole() -> None:
    # 40 MB: past the endpoints' 32 MiB body limit, within the Batch API's 200 MB.
    lines = [line(f"q{i}", "x" * 4000) for i in range(10_000)]
    async with api() as client:
        upload = await client.files.create(file=("big.jsonl", jsonl(lines)), purpose="batch")
        assert upload.bytes == len(jsonl(lines)) > 40_000_000


async def test_a_batch_that_expires_returns_what_it_finished_and_the_rest_as_expired() -> None:
    async with api(batch_expire_after=2) as client:
        batch = await submit(client, [line(f"r{i}", f"prompt {i}") for i in range(5)])
        done = await settled(client, batch.id)
    assert done.status == "expired"
    assert done.expired_at is not None
    assert done.request_counts is not None
    assert (done.request_counts.completed, done.request_counts.failed) == (2, 3)


async def test_validation_failures_name_their_lines() -> None:
    async with api() as client:
        lines = [line("a", "x"), line("a", "again"), line("b", "y", url="/v1/embeddings"), line("c", "z", model="o3")]
        done = await settled(client, (await submit(client, lines)).id)
    assert done.status == "failed"
    assert done.errors is not None
    codes = {(error.code, error.line) for error in done.errors.data or []}
    assert ("duplicate_custom_id", 2) in codes
    assert ("mismatched_endpoint", 3) in codes
    assert ("mismatched_model", None) in codes


async def test_the_enqueued_token_limit_fails_a_batch_until_earlier_ones_drain() -> None:
    async with api(batch_enqueued_tokens=120, batch_line_s=0.05) as client:
        first = await submit(client, [line(f"a{i}", "one") for i in range(3)])  # 3 x (4 + 20) tokens: within 120
        second = await submit(client, [line(f"b{i}", "two") for i in range(3)])
        refused = await settled(client, second.id)
        assert refused.status == "failed"
        assert refused.errors is not None
        assert refused.errors.data is not None
        assert refused.errors.data[0].code == "token_limit_exceeded"
        assert (await settled(client, first.id)).status == "completed"
        again = await submit(client, [line(f"b{i}", "two") for i in range(3)])
        assert (await settled(client, again.id)).status == "completed"


async def test_a_cancelled_batch_keeps_what_it_finished() -> None:
    async with api(batch_line_s=0.05) as client:
        batch = await submit(client, [line(f"r{i}", f"prompt {i}") for i in range(40)])
        await asyncio.sleep(0.2)
        cancelling = await client.batches.cancel(batch.id)
        assert cancelling.status == "cancelling"
        done = await settled(client, batch.id)
        assert done.status == "cancelled"
        out = await lines_of(client, done.output_file_id)
        rest = await lines_of(client, done.error_file_id)
    assert 0 < len(out) < 40
    assert len(out) + len(rest) == 40
    assert {each["error"]["code"] for each in rest} == {"batch_cancelled"}


async def test_what_the_api_refuses_is_refused() -> None:
    async with api() as client:
        with pytest.raises(openai.BadRequestError):  # a batch file must be .jsonl
            await client.files.create(file=("input.csv", b"a,b\n"), purpose="batch")
        upload = await client.files.create(file=("input.jsonl", jsonl([line("a", "x")])), purpose="batch")
        with pytest.raises(openai.BadRequestError):  # only the 24h window exists
            await client.batches.create(
                input_file_id=upload.id,
                endpoint="/v1/chat/completions",
                completion_window="1h",  # type: ignore[arg-type]
            )
        with pytest.raises(openai.BadRequestError):  # an unknown body parameter
            await client.batches.create(
                input_file_id=upload.id,
                endpoint="/v1/chat/completions",
                completion_window="24h",
                extra_body={"priority": "high"},
            )
        with pytest.raises(openai.BadRequestError):
            await client.batches.create(
                input_file_id="file-nope", endpoint="/v1/chat/completions", completion_window="24h"
            )
    with serve_in_thread(FakeOpenAIConfig(require_api_key=KEY)) as server:
        async with openai.AsyncOpenAI(base_url=server.base_url, api_key="sk-wrong", max_retries=0) as client:
            with pytest.raises(openai.AuthenticationError):
                await client.batches.list()
