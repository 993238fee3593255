"""The local OpenAI-compatible fake OpenAI API, exercised through the real ``openai`` SDK."""

from __future__ import annotations

import json
import math
import subprocess
import sys
import time
import urllib.request
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, Literal

import aiohttp
import jsonschema
import openai
import pytest
from openai.types import (
    Completion,
    CreateEmbeddingResponse,
    ModerationCreateResponse,
    completion_create_params,
    embedding_create_params,
    moderation_create_params,
)
from openai.types.chat import ChatCompletion
from openai.types.chat import completion_create_params as chat_params
from openai.types.responses import Response, response_create_params
from pydantic import BaseModel

from infra.fake_openai import (
    FakeOpenAIConfig,
    RunningFakeOpenAI,
    format_duration,
    main,
    prompt_hash,
    serve_in_thread,
    structured,
    validation,
)

REPO_ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def server() -> Iterator[RunningFakeOpenAI]:
    with serve_in_thread() as running:
        yield running


@asynccontextmanager
async def client_for(
    server: RunningFakeOpenAI, *, api_key: str = "sk-local", max_retries: int = 0, timeout_s: float = 10.0
) -> AsyncIterator[openai.AsyncOpenAI]:
    async with openai.AsyncOpenAI(
        base_url=server.base_url, api_key=api_key, max_retries=max_retries, timeout=timeout_s
    ) as client:
        yield client


async def ask(
    client: openai.AsyncOpenAI, prompt: str, *, max_tokens: int | None = None, n: int | None = None
) -> ChatCompletion:
    return await client.chat.completions.create(
        model="gpt-test",
        messages=[{"role": "system", "content": "Be brief."}, {"role": "user", "content": prompt}],
        max_tokens=openai.omit if max_tokens is None else max_tokens,
        n=openai.omit if n is None else n,
    )


async def test_completion_parses_with_deterministic_content_and_usage(server: RunningFakeOpenAI) -> None:
    async with client_for(server) as client:
        raw = await client.chat.completions.with_raw_response.create(
            model="gpt-test", messages=[{"role": "user", "content": "What is 2+2?"}]
        )
        completion = raw.parse()
    assert isinstance(completion, ChatCompletion)
    assert completion.id.startswith("chatcmpl-")
    assert completion.object == "chat.completion"
    assert completion.model == "gpt-test"
    assert completion.system_fingerprint
    [choice] = completion.choices
    assert choice.index == 0
    assert choice.finish_reason == "stop"
    assert choice.message.role == "assistant"
    assert choice.message.content == "Echo: What is 2+2?"
    usage = completion.usage
    assert usage is not None
    assert usage.prompt_tokens == len("What is 2+2?") // 4 + 4
    assert usage.completion_tokens > 0
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens
    assert usage.prompt_tokens_details is not None
    assert usage.prompt_tokens_details.cached_tokens == 0
    assert usage.completion_tokens_details is not None
    assert usage.completion_tokens_details.reasoning_tokens == 0
    assert raw.headers["x-request-id"].startswith("req_")
    assert int(raw.headers["openai-processing-ms"]) >= 0
    assert "x-ratelimit-limit-requests" not in raw.headers


async def test_the_prompt_cache_reads_and_writes_long_prefixes_for_the_models_that_report_it(
    server: RunningFakeOpenAI,
) -> None:
    # Given a long shared system prompt (about 1,500 tokens) and two different questions
    system = "You answer questions about invoices, carefully and briefly. " * 100

    async def chat(model: str, question: str) -> tuple[int, int, int]:
        async with client_for(server) as client:
            done = await client.chat.completions.create(
                model=model, messages=[{"role": "system", "content": system}, {"role": "user", "content": question}]
            )
        assert done.usage is not None
        details = done.usage.prompt_tokens_details
        assert details is not None
        return done.usage.prompt_tokens, details.cached_tokens or 0, details.cache_write_tokens or 0

    # When a model that bills cache writes is asked twice
    prompt, read, written = await chat("gpt-5.6-cyber", "What is line 3?")
    # Then the first answer wrote its cacheable prefix (1,024 tokens and 128-token steps), read nothing
    assert (read, written) == (0, 1024 + (prompt - 1024) // 128 * 128)
    # and the second read the shared prefix, writing only what follows it
    prompt, read, written = await chat("gpt-5.6-cyber", "What is the total?")
    assert read >= 1024
    assert read % 128 == 0
    assert read + written == 1024 + (prompt - 1024) // 128 * 128
    # A short prompt is not cached; another model reports no cache at all
    async with client_for(server) as client:
        short = await client.chat.completions.create(
            model="gpt-5.6-cyber", messages=[{"role": "user", "content": "hi"}]
        )
    assert short.usage is not None
    details = short.usage.prompt_tokens_details
    assert details is not None
    assert (details.cached_tokens, details.cache_write_tokens) == (0, 0)
    assert (await chat("gpt-4o-mini", "What is line 3?"))[1:] == (0, 0)
    async with client_for(server) as client:
        response = await client.responses.create(model="gpt-6.1-sol", instructions=system, input="What is line 3?")
    assert response.usage is not None
    assert response.usage.input_tokens_details.cache_write_tokens >= 1024
    assert response.usage.input_tokens_details.cached_tokens == 0


async def test_long_prompt_is_echoed_up_to_200_chars_and_max_tokens_truncates(
    server: RunningFakeOpenAI,
) -> None:
    prompt = "x" * 500
    async with client_for(server) as client:
        full = await ask(client, prompt)
        short = await ask(client, prompt, max_tokens=3)
        two = await ask(client, "hi", n=2)
    assert full.choices[0].message.content == "Echo: " + "x" * 200
    assert short.choices[0].finish_reason == "length"
    assert short.usage is not None
    assert short.usage.completion_tokens == 3
    assert [c.index for c in two.choices] == [0, 1]


async def post_raw(server: RunningFakeOpenAI, path: str, body: object) -> tuple[int, dict[str, Any]]:
    """POST a body the SDK would not send (a missing required field, NaN); returns (status, JSON answer)."""
    async with aiohttp.ClientSession() as http:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        headers = {"Content-Type": "application/json"}
        async with http.post(f"{server.base_url}{path}", data=data, headers=headers) as response:
            return response.status, await response.json()


async def test_unknown_chat_parameter_is_refused_like_openai(server: RunningFakeOpenAI) -> None:
    async with client_for(server) as client:
        with pytest.raises(openai.BadRequestError) as one:
            await client.chat.completions.create(
                model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}], extra_body={"metadata_x": "a"}
            )
        with pytest.raises(openai.BadRequestError) as two:
            await client.chat.completions.create(
                model="gpt-4o-mini",
                messages=[{"role": "user", "content": "hi"}],
                extra_body={"city": "Lisbon", "row": 3},
            )
        # metadata is a chat-completions parameter (the SDK knows it): accepted
        ok = await client.chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}], metadata={"team": "support"}
        )
    assert one.value.status_code == 400
    assert one.value.body == {
        "message": "Unrecognized request argument supplied: metadata_x",
        "type": "invalid_request_error",
        "param": None,
        "code": None,
    }
    assert two.value.message.endswith("Unrecognized request arguments supplied: city, row")
    assert ok.choices[0].message.content == "Echo: hi"
    assert server.stats()["prompts"] == {prompt_hash("hi"): 1}  # refused requests reach no prompt


@pytest.mark.parametrize(
    ("params", "message", "param", "code"),
    [
        (
            {"temperature": "0.2"},
            "Invalid type for 'temperature': expected a decimal, but got a string instead.",
            "temperature",
            "invalid_type",
        ),
        (
            {"max_tokens": "5"},
            "Invalid type for 'max_tokens': expected an integer, but got a string instead.",
            "max_tokens",
            "invalid_type",
        ),
        (
            {"max_tokens": 5.5},
            "Invalid type for 'max_tokens': expected an integer, but got a decimal instead.",
            "max_tokens",
            "invalid_type",
        ),
        (
            {"logprobs": 1},
            "Invalid type for 'logprobs': expected a boolean, but got an integer instead.",
            "logprobs",
            "invalid_type",
        ),
        (
            {"stop": 5},
            "Invalid type for 'stop': expected one of a string or an array, but got an integer instead.",
            "stop",
            "invalid_type",
        ),
        (
            {"response_format": "json"},
            "Invalid type for 'response_format': expected an object, but got a string instead.",
            "response_format",
            "invalid_type",
        ),
        (
            {"temperature": 3},
            "Invalid 'temperature': decimal above maximum value. Expected a value <= 2, but got 3 instead.",
            "temperature",
            "decimal_above_max_value",
        ),
        (
            {"n": 0},
            "Invalid 'n': integer below minimum value. Expected a value >= 1, but got 0 instead.",
            "n",
            "integer_below_min_value",
        ),
        (
            {"reasoning_effort": "huge"},
            "Invalid value: 'huge'. Supported values are: 'high', 'low', 'max', 'medium', 'minimal', 'none', "
            "and 'xhigh'.",
            "reasoning_effort",
            "invalid_value",
        ),
    ],
)
async def test_wrong_type_or_value_is_a_400_naming_the_parameter(
    server: RunningFakeOpenAI, params: dict[str, Any], message: str, param: str, code: str
) -> None:
    async with client_for(server) as client:
        with pytest.raises(openai.BadRequestError) as info:
            await client.chat.completions.create(
                model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}], extra_body=params
            )
    assert info.value.body == {"message": message, "type": "invalid_request_error", "param": param, "code": code}


@pytest.mark.parametrize(
    ("body", "message", "param"),
    [
        ({"messages": [{"role": "user", "content": "hi"}]}, "you must provide a model parameter", None),
        ({"model": "", "messages": [{"role": "user", "content": "hi"}]}, "you must provide a model parameter", None),
        ({"model": "m"}, "Missing required parameter: 'messages'.", "messages"),
        ({"model": "m", "messages": []}, "Invalid 'messages': empty array.", "messages"),
        ({"model": "m", "messages": ["hi"]}, "Invalid type for 'messages[0]': expected an object", "messages[0]"),
        ({"model": "m", "messages": [{"content": "hi"}]}, "Missing required parameter: 'messages[0].role'.", None),
        ({"model": "m", "messages": [{"role": "bot", "content": "hi"}]}, "Invalid value: 'bot'.", "messages[0].role"),
        ({"model": "m", "messages": [{"role": "user"}]}, "Missing required parameter: 'messages[0].content'.", None),
        ({"model": "m", "messages": [{"role": "user", "content": 7}]}, "Invalid type for 'messages[0].content'", None),
        ([1, 2], "The request body must be a JSON object.", None),
        (b'{"model": "m", "temperature": NaN}', "We could not parse the JSON body of your request.", None),
        (b'{"model": "m", "temperature": Infinity}', "We could not parse the JSON body of your request.", None),
    ],
)
async def test_missing_or_malformed_required_fields_are_a_400(
    server: RunningFakeOpenAI, body: object, message: str, param: str | None
) -> None:
    status, answer = await post_raw(server, "/chat/completions", body)
    assert status == 400
    assert answer["error"]["message"].startswith(message)
    assert answer["error"]["type"] == "invalid_request_error"
    if param is not None:
        assert answer["error"]["param"] == param


def test_accepted_parameters_follow_the_installed_sdk() -> None:
    # Given the SDK's TypedDicts, the fake accepts exactly their keys (stream comes from the streaming variant)
    expected = {
        "chat.completions": set(chat_params.CompletionCreateParamsBase.__annotations__) | {"stream"},
        "responses": set(response_create_params.ResponseCreateParamsBase.__annotations__) | {"stream"},
        "embeddings": set(embedding_create_params.EmbeddingCreateParams.__annotations__),
        "completions": set(completion_create_params.CompletionCreateParamsBase.__annotations__) | {"stream"},
        "moderations": set(moderation_create_params.ModerationCreateParams.__annotations__),
    }
    specs = {spec.name: spec for spec in validation.SPECS}
    assert {name: set(spec.params) for name, spec in specs.items()} == expected
    assert "metadata" in specs["chat.completions"].params
    # and every hand-kept range names a parameter the SDK knows, of a numeric type
    for spec in validation.SPECS:
        for name in spec.ranges:
            assert name in spec.params, (spec.name, name)
            assert spec.params[name].kinds & {"integer", "number"}, (spec.name, name)


async def test_stream_true_is_refused_clearly(server: RunningFakeOpenAI) -> None:
    status, answer = await post_raw(
        server, "/chat/completions", {"model": "m", "messages": [{"role": "user", "content": "hi"}], "stream": True}
    )
    assert status == 400
    assert answer["error"]["param"] == "stream"


async def test_rate_limit_headers_when_limits_are_configured() -> None:
    with serve_in_thread(FakeOpenAIConfig(rpm=600, tpm=100_000)) as server:
        async with client_for(server) as client:
            raw = await client.chat.completions.with_raw_response.create(
                model="gpt-test", messages=[{"role": "user", "content": "hello"}], max_tokens=10
            )
    headers = raw.headers
    assert headers["x-ratelimit-limit-requests"] == "600"
    assert headers["x-ratelimit-limit-tokens"] == "100000"
    assert int(headers["x-ratelimit-remaining-requests"]) == 599
    # Charged: the estimated prompt tokens (5 // 4 + 4 = 5) + max_tokens (10).
    assert int(headers["x-ratelimit-remaining-tokens"]) == 100_000 - 15
    assert headers["x-ratelimit-reset-requests"].endswith(("ms", "s"))
    assert headers["x-ratelimit-reset-tokens"].endswith(("ms", "s"))


async def test_rpm_limit_answers_429_with_retry_after_once_the_bucket_is_empty() -> None:
    with serve_in_thread(FakeOpenAIConfig(rpm=3)) as server:
        async with client_for(server) as client:
            results: list[ChatCompletion | openai.RateLimitError] = []
            for i in range(5):
                try:
                    results.append(await ask(client, f"prompt {i}"))
                except openai.RateLimitError as exc:
                    results.append(exc)
        stats = server.stats()
    assert all(isinstance(r, ChatCompletion) for r in results[:3])
    errors = results[3:]
    assert all(isinstance(e, openai.RateLimitError) for e in errors)
    for error in errors:
        assert isinstance(error, openai.RateLimitError)
        assert error.code == "rate_limit_exceeded"
        assert error.type == "requests"
        assert "Limit 3, Used 3, Requested 1" in error.message
        # 3 rpm refills one request every 20 s.
        assert 1 <= int(error.response.headers["retry-after"]) <= 20
        assert 0 < int(error.response.headers["retry-after-ms"]) <= 20_000
        assert error.response.headers["x-ratelimit-remaining-requests"] == "0"
    assert stats["status"] == {"200": 3, "429": 2}
    assert stats["rate_limited"] == 2


async def test_tpm_limit_and_request_too_large() -> None:
    with serve_in_thread(FakeOpenAIConfig(tpm=100)) as server:
        async with client_for(server) as client:
            with pytest.raises(openai.RateLimitError) as too_large:
                await ask(client, "hello", max_tokens=500)
            await ask(client, "hello", max_tokens=80)  # 9 + 80 of 100 tokens
            with pytest.raises(openai.RateLimitError) as exhausted:
                await ask(client, "hello", max_tokens=80)
    assert too_large.value.type == "tokens"
    assert "Request too large" in too_large.value.message
    assert exhausted.value.type == "tokens"
    assert exhausted.value.code == "rate_limit_exceeded"
    assert "retry-after-ms" in exhausted.value.response.headers


async def test_each_model_has_its_own_limits_and_headers() -> None:
    # Given a default of 3 requests/min and gpt-4o's own 600 requests/min and 50,000 tokens/min
    config = FakeOpenAIConfig(rpm=3, model_limits={"gpt-4o": (600, 50_000)})
    with serve_in_thread(config) as server:
        async with client_for(server) as client:

            async def call(model: str) -> dict[str, str]:
                raw = await client.chat.completions.with_raw_response.create(
                    model=model, messages=[{"role": "user", "content": "hello"}], max_tokens=10
                )
                return dict(raw.headers)

            # When the small model's 3 requests are used up
            small = [await call("gpt-4o-mini") for _ in range(3)]
            with pytest.raises(openai.RateLimitError) as limited:
                await call("gpt-4o-mini")
            # Then the large model still answers, with its own headers,
            large = await call("gpt-4o")
            # and another model without an override has the default limit, in a bucket of its own
            other = await call("gpt-4.1")
    assert [h["x-ratelimit-remaining-requests"] for h in small] == ["2", "1", "0"]
    assert small[0]["x-ratelimit-limit-requests"] == "3"
    assert "x-ratelimit-limit-tokens" not in small[0]
    assert "Rate limit reached for gpt-4o-mini" in limited.value.message
    assert large["x-ratelimit-limit-requests"] == "600"
    assert large["x-ratelimit-remaining-requests"] == "599"
    assert large["x-ratelimit-limit-tokens"] == "50000"
    assert int(large["x-ratelimit-remaining-tokens"]) == 50_000 - 15
    assert other["x-ratelimit-limit-requests"] == "3"
    assert other["x-ratelimit-remaining-requests"] == "2"
    assert server.stats()["models"] == {"gpt-4o-mini": 4, "gpt-4o": 1, "gpt-4.1": 1}


async def test_a_model_override_alone_limits_only_that_model() -> None:
    with serve_in_thread(FakeOpenAIConfig(model_limits={"gpt-4o": (None, 100)})) as server:
        async with client_for(server) as client:
            raw = await client.chat.completions.with_raw_response.create(
                model="gpt-4o", messages=[{"role": "user", "content": "hello"}], max_tokens=10
            )
            free = await client.chat.completions.with_raw_response.create(
                model="gpt-4o-mini", messages=[{"role": "user", "content": "hello"}], max_tokens=10
            )
    assert raw.headers["x-ratelimit-limit-tokens"] == "100"
    assert "x-ratelimit-limit-requests" not in raw.headers
    assert "x-ratelimit-limit-tokens" not in free.headers


async def test_fail_500_twice_marker_fails_twice_then_succeeds(server: RunningFakeOpenAI) -> None:
    prompt = "flaky [[fail:500x2]]"
    async with client_for(server) as client:
        for _ in range(2):
            with pytest.raises(openai.InternalServerError) as info:
                await ask(client, prompt)
            assert info.value.status_code == 500
            assert info.value.type == "server_error"
        completion = await ask(client, prompt)
        assert completion.choices[0].message.content == "Echo: " + prompt
        # Another prompt is not affected by this prompt's count.
        with pytest.raises(openai.InternalServerError):
            await ask(client, "other [[fail:500x2]]")
    stats = server.stats()
    assert stats["prompts"][prompt_hash(prompt)] == 3
    assert stats["prompts_ok"][prompt_hash(prompt)] == 1
    assert stats["injected"]["marker"] == 3


async def test_fail_429_marker_sends_short_retry_after_and_sdk_retries(server: RunningFakeOpenAI) -> None:
    async with client_for(server) as client:
        with pytest.raises(openai.RateLimitError) as info:
            await ask(client, "a [[fail:429x1]]")
    headers = info.value.response.headers
    assert headers["retry-after-ms"] == "50"
    assert headers["retry-after"] == "0"
    assert info.value.code == "rate_limit_exceeded"

    async with client_for(server, max_retries=2) as client:
        completion = await ask(client, "b [[fail:429x1]]")
    assert completion.choices[0].message.content == "Echo: b [[fail:429x1]]"
    assert server.stats()["prompts"][prompt_hash("b [[fail:429x1]]")] == 2


async def test_permanent_markers(server: RunningFakeOpenAI) -> None:
    async with client_for(server) as client:
        for _ in range(2):
            with pytest.raises(openai.BadRequestError) as bad:
                await ask(client, "[[fail:400]] nope")
            assert bad.value.type == "invalid_request_error"
        with pytest.raises(openai.NotFoundError):
            await ask(client, "[[fail:404]]")
        with pytest.raises(openai.UnprocessableEntityError):
            await ask(client, "[[fail:422]]")
        with pytest.raises(openai.RateLimitError) as quota:
            await ask(client, "[[quota]]")
    assert quota.value.code == "insufficient_quota"
    assert quota.value.type == "insufficient_quota"
    assert "retry-after" not in quota.value.response.headers


async def test_flex_is_served_to_the_models_that_offer_it_and_refused_when_capacity_is_short() -> None:
    with serve_in_thread(FakeOpenAIConfig(seed=3)) as server:
        async with client_for(server) as client:
            messages: Any = [{"role": "user", "content": "hello"}]
            flex = await client.chat.completions.create(model="gpt-5-mini", messages=messages, service_tier="flex")
            assert flex.service_tier == "flex"
            standard = await client.chat.completions.create(model="gpt-5-mini", messages=messages)
            assert standard.service_tier == "default"
            answer = await client.responses.create(model="o4-mini", input="hello", service_tier="flex")
            assert answer.service_tier == "flex"
            with pytest.raises(openai.BadRequestError) as unsupported:  # as the API: no flex tier for this model
                await client.chat.completions.create(model="gpt-4o-mini", messages=messages, service_tier="flex")
            assert unsupported.value.body["param"] == "service_tier"  # type: ignore[index]
            short: Any = [{"role": "user", "content": "busy [[flex_unavailable:x2]]"}]
            for _ in range(2):
                with pytest.raises(openai.RateLimitError) as refused:
                    await client.chat.completions.create(model="gpt-5-mini", messages=short, service_tier="flex")
                assert refused.value.code == "resource_unavailable"
            third = await client.chat.completions.create(model="gpt-5-mini", messages=short, service_tier="flex")
            assert third.service_tier == "flex"
        stats = server.stats()
    assert stats["service_tiers"] == {"flex": 3, "default": 1}
    assert stats["flex_unavailable"] == 2
    assert stats["rate_limited"] == 0  # not counted as a rate limit


async def test_flex_capacity_refusals_at_a_configured_rate() -> None:
    with serve_in_thread(FakeOpenAIConfig(seed=11, flex_unavailable_rate=0.5)) as server:
        async with client_for(server) as client:
            messages: Any = [{"role": "user", "content": "hello"}]
            refused = 0
            for _ in range(40):
                try:
                    await client.chat.completions.create(model="gpt-5-nano", messages=messages, service_tier="flex")
                except openai.RateLimitError:
                    refused += 1
                await client.chat.completions.create(model="gpt-5-nano", messages=messages)  # never refused
    assert 8 <= refused <= 32
    assert server.stats()["service_tiers"]["default"] == 40


async def test_stats_counts_prompts_and_reset(server: RunningFakeOpenAI) -> None:
    async with client_for(server) as client:
        for prompt in ("one", "two", "two"):
            await ask(client, prompt)
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{server.root_url}/stats") as response:
            assert response.status == 200
            stats = await response.json()
        assert stats["requests"] == 3
        assert stats["status"] == {"200": 3}
        assert stats["prompts"] == {prompt_hash("one"): 1, prompt_hash("two"): 2}
        assert server.stats()["prompts"] == stats["prompts"]

        async with http.post(f"{server.root_url}/stats/reset") as response:
            assert response.status == 200
        assert server.stats()["prompts"] == {}
        assert server.stats()["requests"] == 0

        async with http.get(f"{server.root_url}/health") as response:
            assert response.status == 200
        async with http.post(f"{server.base_url}/chat/completions", data=b"{not json") as response:
            assert response.status == 400
            assert (await response.json())["error"]["type"] == "invalid_request_error"
        async with http.get(f"{server.base_url}/nope") as response:
            assert response.status == 404
            assert "error" in await response.json()


async def test_reset_forgets_marker_counts(server: RunningFakeOpenAI) -> None:
    async with client_for(server) as client:
        with pytest.raises(openai.InternalServerError):
            await ask(client, "[[fail:500x1]]")
        await ask(client, "[[fail:500x1]]")
        server.reset()
        with pytest.raises(openai.InternalServerError):
            await ask(client, "[[fail:500x1]]")


async def test_malformed_marker_returns_invalid_json(server: RunningFakeOpenAI) -> None:
    async with aiohttp.ClientSession() as http:
        body = {"model": "m", "messages": [{"role": "user", "content": "[[malformed:x1]]"}]}
        async with http.post(f"{server.base_url}/chat/completions", json=body) as response:
            assert response.status == 200
            text = await response.text()
        with pytest.raises(json.JSONDecodeError):
            json.loads(text)
        async with http.post(f"{server.base_url}/chat/completions", json=body) as response:
            assert (await response.json())["choices"][0]["message"]["content"] == "Echo: [[malformed:x1]]"


async def test_hang_marker_times_the_client_out_and_server_still_stops_quickly() -> None:
    started = time.monotonic()
    with serve_in_thread(FakeOpenAIConfig(hang_s=30)) as server:
        async with client_for(server, timeout_s=0.2) as client:
            with pytest.raises(openai.APITimeoutError):
                await ask(client, "slow [[hang:x1]]")
            completion = await ask(client, "slow [[hang:x1]]")
    assert completion.choices[0].message.content == "Echo: slow [[hang:x1]]"
    assert time.monotonic() - started < 5


async def test_require_api_key() -> None:
    with serve_in_thread(FakeOpenAIConfig(require_api_key="sk-right")) as server:
        async with client_for(server, api_key="sk-wrong") as client:
            with pytest.raises(openai.AuthenticationError) as info:
                await ask(client, "hello")
        assert info.value.code == "invalid_api_key"
        async with client_for(server, api_key="sk-right") as client:
            assert (await ask(client, "hello")).choices[0].message.content == "Echo: hello"


async def test_random_faults_are_reproducible_with_a_seed() -> None:
    async def statuses() -> list[int]:
        config = FakeOpenAIConfig(fail_500_rate=0.3, fail_429_rate=0.2, seed=7)
        seen: list[int] = []
        with serve_in_thread(config) as server:
            async with client_for(server) as client:
                for i in range(20):
                    try:
                        await ask(client, f"p{i}")
                        seen.append(200)
                    except openai.APIStatusError as exc:
                        seen.append(exc.status_code)
        return seen

    first = await statuses()
    assert first == await statuses()
    assert {200, 429, 500} <= set(first)


def test_config_validation() -> None:
    with pytest.raises(ValueError, match="fail_500_rate"):
        FakeOpenAIConfig(fail_500_rate=1.5)
    with pytest.raises(ValueError, match="rpm"):
        FakeOpenAIConfig(rpm=0)
    with pytest.raises(ValueError, match="add up"):
        FakeOpenAIConfig(fail_500_rate=0.6, hang_rate=0.6)
    with pytest.raises(ValueError, match=r"model_limits\['gpt-4o'\]"):
        FakeOpenAIConfig(model_limits={"gpt-4o": (0, 10)})
    assert main(["--fail-500-rate", "2"]) == 2
    with pytest.raises(SystemExit):
        main(["--model-limit", "gpt-4o=500"])  # no comma: argparse explains MODEL=RPM,TPM


@pytest.mark.parametrize(
    ("seconds", "expected"),
    [
        (0, "0s"),
        (0.005, "5ms"),
        (0.12, "120ms"),
        (1, "1s"),
        (8.64, "8.64s"),
        (360, "6m0s"),
        (3723.5, "1h2m3.5s"),
    ],
)
def test_format_duration(seconds: float, expected: str) -> None:
    assert format_duration(seconds) == expected


def test_cli_starts_prints_its_url_and_stops() -> None:
    with subprocess.Popen(
        [
            sys.executable,
            "-m",
            "infra.fake_openai",
            "--port",
            "0",
            "--latency-ms",
            "1",
            "--rpm",
            "100",
            "--model-limit",
            "gpt-4o=7,",
        ],
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    ) as proc:
        try:
            assert proc.stdout is not None
            line = proc.stdout.readline().strip()
            assert line.startswith("fake OpenAI API listening on http://127.0.0.1:"), line
            base_url = line.rsplit(" ", 1)[1]
            assert base_url.endswith("/v1")
            root = base_url.removesuffix("/v1")
            with urllib.request.urlopen(f"{root}/health", timeout=5) as response:
                assert response.status == 200
            limits = {}
            for model in ("gpt-4o", "gpt-4o-mini"):
                body = {"model": model, "messages": [{"role": "user", "content": "hi"}]}
                request = urllib.request.Request(
                    f"{base_url}/chat/completions",
                    data=json.dumps(body).encode(),
                    headers={"Content-Type": "application/json"},
                )
                with urllib.request.urlopen(request, timeout=5) as response:
                    limits[model] = response.headers["x-ratelimit-limit-requests"]
            assert limits == {"gpt-4o": "7", "gpt-4o-mini": "100"}
        finally:
            proc.terminate()
            _, stderr = proc.communicate(timeout=10)
    assert proc.returncode == 0, stderr


# -- every Batch API endpoint -------------------------------------------------------------------------------------


async def test_responses_answer_parses_into_a_response_with_output_text_and_usage(server: RunningFakeOpenAI) -> None:
    async with client_for(server) as client:
        response = await client.responses.create(
            model="gpt-4o-mini", input="What is 2+2?", instructions="Be brief.", metadata={"run": "7"}
        )
        as_messages = await client.responses.create(
            model="gpt-4o-mini",
            input=[
                {"role": "system", "content": "Be brief."},
                {"role": "user", "content": [{"type": "input_text", "text": "Name a colour."}]},
            ],
        )
    assert isinstance(response, Response)
    assert response.id.startswith("resp_")
    assert response.object == "response"
    assert response.status == "completed"
    assert response.output_text == "Echo: What is 2+2?"
    [message] = response.output
    assert message.type == "message"
    assert message.role == "assistant"
    assert message.status == "completed"
    assert response.instructions == "Be brief."
    assert response.metadata == {"run": "7"}
    usage = response.usage
    assert usage is not None
    assert usage.input_tokens == (len("What is 2+2?") + len("Be brief.")) // 4 + 4
    assert usage.output_tokens > 0
    assert usage.total_tokens == usage.input_tokens + usage.output_tokens
    assert usage.input_tokens_details.cached_tokens == 0
    assert usage.output_tokens_details.reasoning_tokens == 0
    assert as_messages.output_text == "Echo: Name a colour."
    assert server.stats()["prompts"][prompt_hash("Name a colour.")] == 1


async def test_responses_max_output_tokens_cut_makes_it_incomplete(server: RunningFakeOpenAI) -> None:
    async with client_for(server) as client:
        response = await client.responses.create(model="gpt-4o-mini", input="x" * 400, max_output_tokens=16)
    assert response.status == "incomplete"
    assert response.incomplete_details is not None
    assert response.incomplete_details.reason == "max_output_tokens"
    assert response.output_text == ("Echo: " + "x" * 400)[:64]
    assert response.usage is not None
    assert response.usage.output_tokens == 16


@pytest.mark.parametrize(
    ("body", "message", "param", "code"),
    [
        (
            {"model": "m", "input": "hi", "metadata_x": 1},
            "Unknown parameter: 'metadata_x'.",
            "metadata_x",
            "unknown_parameter",
        ),
        (
            {"model": "m", "input": "hi", "messages": []},
            "Unknown parameter: 'messages'.",
            "messages",
            "unknown_parameter",
        ),
        ({"input": "hi"}, "Missing required parameter: 'model'.", "model", "missing_required_parameter"),
        ({"model": "m"}, "Missing required parameter: 'input'.", "input", "missing_required_parameter"),
        (
            {"model": "m", "input": "hi", "temperature": "0.2"},
            "Invalid type for 'temperature': expected a decimal, but got a string instead.",
            "temperature",
            "invalid_type",
        ),
        (
            {"model": "m", "input": 5},
            "Invalid type for 'input': expected one of a string or an array, but got an integer instead.",
            "input",
            "invalid_type",
        ),
        (
            {"model": "m", "input": "hi", "max_output_tokens": 5},
            "Invalid 'max_output_tokens': integer below minimum value. Expected a value >= 16, but got 5 instead.",
            "max_output_tokens",
            "integer_below_min_value",
        ),
        (
            {"model": "m", "input": "hi", "previous_response_id": "resp_1"},
            "Previous response with id 'resp_1' not found.",
            "previous_response_id",
            "previous_response_not_found",
        ),
    ],
)
async def test_responses_refuses_what_the_api_refuses(
    server: RunningFakeOpenAI, body: dict[str, Any], message: str, param: str, code: str
) -> None:
    status, answer = await post_raw(server, "/responses", body)
    assert status == 400
    assert answer["error"] == {"message": message, "type": "invalid_request_error", "param": param, "code": code}


async def test_embeddings_are_deterministic_unit_vectors_with_the_asked_dimensions(server: RunningFakeOpenAI) -> None:
    async with client_for(server) as client:
        small = await client.embeddings.create(model="text-embedding-3-small", input=["a cat", "a dog"])
        again = await client.embeddings.create(model="text-embedding-3-small", input="a cat", encoding_format="float")
        large = await client.embeddings.create(model="text-embedding-3-large", input="a cat")
        cut = await client.embeddings.create(model="text-embedding-3-small", input=[[1, 2, 3], [4, 5]], dimensions=256)
    assert isinstance(small, CreateEmbeddingResponse)
    assert small.object == "list"
    assert [(d.object, d.index, len(d.embedding)) for d in small.data] == [
        ("embedding", 0, 1536),
        ("embedding", 1, 1536),
    ]
    cat, dog = (d.embedding for d in small.data)
    assert math.isclose(math.fsum(x * x for x in cat), 1.0, rel_tol=1e-4)
    assert cat != dog
    # the SDK asks for base64 by default; the floats are the same vector
    assert again.data[0].embedding == pytest.approx(cat, abs=1e-6)
    assert len(large.data[0].embedding) == 3072
    assert [len(d.embedding) for d in cut.data] == [256, 256]
    assert small.usage.prompt_tokens == small.usage.total_tokens == 2 * (len("a cat") // 4 + 1)
    assert cut.usage.prompt_tokens == 5  # token arrays count their tokens


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"model": "text-embedding-3-small", "input": ""}, "'$.input' is invalid."),
        ({"model": "text-embedding-3-small", "input": []}, "'$.input' is invalid."),
        ({"model": "text-embedding-3-small", "input": ["a", 1]}, "'$.input' is invalid."),
        ({"model": "text-embedding-3-small"}, "Missing required parameter: 'input'."),
        ({"input": "a"}, "you must provide a model parameter"),
        ({"model": "text-embedding-ada-002", "input": "a", "dimensions": 8}, "This model does not support"),
        ({"model": "text-embedding-3-small", "input": "a", "dimensions": 4096}, "Invalid 'dimensions': integer above"),
        ({"model": "text-embedding-3-small", "input": "a", "dimensions": 0}, "Invalid 'dimensions': integer below"),
        ({"model": "text-embedding-3-small", "input": "a", "encoding_format": "hex"}, "Invalid value: 'hex'."),
        ({"model": "text-embedding-3-small", "input": "a", "temperature": 0}, "Unrecognized request argument"),
    ],
)
async def test_embeddings_refuse_what_the_api_refuses(
    server: RunningFakeOpenAI, body: dict[str, Any], message: str
) -> None:
    status, answer = await post_raw(server, "/embeddings", body)
    assert status == 400
    assert answer["error"]["message"].startswith(message)


async def test_legacy_completions_answer_each_prompt_n_times(server: RunningFakeOpenAI) -> None:
    async with client_for(server) as client:
        completion = await client.completions.create(
            model="gpt-3.5-turbo-instruct", prompt=["Say hi", "Say bye"], n=2, max_tokens=50, logprobs=1
        )
        default_cap = await client.completions.create(model="gpt-3.5-turbo-instruct", prompt="y" * 200)
        echoed = await client.completions.create(model="gpt-3.5-turbo-instruct", prompt="Hello", echo=True)
    assert isinstance(completion, Completion)
    assert completion.object == "text_completion"
    assert [(c.index, c.text, c.finish_reason) for c in completion.choices] == [
        (0, "Echo: Say hi", "stop"),
        (1, "Echo: Say hi", "stop"),
        (2, "Echo: Say bye", "stop"),
        (3, "Echo: Say bye", "stop"),
    ]
    assert completion.choices[0].logprobs is not None
    assert completion.usage is not None
    assert completion.usage.prompt_tokens == 2 * (len("Say hi") // 4 + 1)
    assert completion.usage.total_tokens == completion.usage.prompt_tokens + completion.usage.completion_tokens
    # the endpoint's own default max_tokens is 16
    assert default_cap.choices[0].finish_reason == "length"
    assert default_cap.usage is not None
    assert default_cap.usage.completion_tokens == 16
    assert echoed.choices[0].text == "HelloEcho: Hello"


async def test_legacy_completions_refuse_chat_parameters(server: RunningFakeOpenAI) -> None:
    status, answer = await post_raw(
        server, "/completions", {"model": "m", "prompt": "hi", "messages": [{"role": "user", "content": "hi"}]}
    )
    assert status == 400
    assert answer["error"]["message"] == "Unrecognized request argument supplied: messages"
    status, answer = await post_raw(server, "/completions", {"model": "m"})
    assert answer["error"]["message"] == "Missing required parameter: 'prompt'."


async def test_moderations_answer_one_result_per_input(server: RunningFakeOpenAI) -> None:
    async with client_for(server) as client:
        moderation = await client.moderations.create(input=["hello", "goodbye"])
        multimodal = await client.moderations.create(
            model="omni-moderation-latest",
            input=[
                {"type": "text", "text": "a picture"},
                {"type": "image_url", "image_url": {"url": "https://example.com/a.png"}},
            ],
        )
    assert isinstance(moderation, ModerationCreateResponse)
    assert moderation.id.startswith("modr-")
    assert moderation.model == "omni-moderation-latest"
    assert len(moderation.results) == 2
    result = moderation.results[0]
    assert result.flagged is False
    assert result.categories.harassment_threatening is False
    assert 0 <= result.category_scores.self_harm < 0.01
    assert set(result.category_scores.model_dump(by_alias=True)) >= {"hate", "self-harm", "violence/graphic"}
    [picture] = multimodal.results
    assert picture.category_applied_input_types.violence == ["text", "image"]
    assert picture.category_applied_input_types.hate == ["text"]


async def test_models_lists_the_sdk_models_and_the_configured_ones() -> None:
    with serve_in_thread(FakeOpenAIConfig(model_limits={"my-fine-tune": (10, 1000)})) as server:
        async with client_for(server) as client:
            models = [m.id async for m in client.models.list()]
            one = await client.models.retrieve("gpt-4o")
    assert {"gpt-4o", "gpt-4o-mini", "text-embedding-3-small", "omni-moderation-latest", "my-fine-tune"} <= set(models)
    assert one.id == "gpt-4o"
    assert one.object == "model"


async def test_every_endpoint_charges_its_tokens_and_honours_markers() -> None:
    # Given 100,000 tokens/min for every model (each its own bucket)
    with serve_in_thread(FakeOpenAIConfig(tpm=100_000)) as server:
        async with client_for(server) as client:
            responses = await client.responses.with_raw_response.create(model="r", input="hello", max_output_tokens=20)
            embeddings = await client.embeddings.with_raw_response.create(model="e", input="hello world!")
            legacy = await client.completions.with_raw_response.create(model="c", prompt="hello", max_tokens=10)
            moderation = await client.moderations.with_raw_response.create(model="o", input="hello")
            # and the per-prompt markers work on every endpoint
            for call in (
                lambda: client.responses.create(model="r", input="flaky [[fail:500x1]]"),
                lambda: client.embeddings.create(model="e", input="flaky [[fail:500x1]]"),
                lambda: client.completions.create(model="c", prompt="flaky [[fail:500x1]]"),
                lambda: client.moderations.create(input="flaky [[fail:500x1]]"),
            ):
                server.reset()
                with pytest.raises(openai.InternalServerError):
                    await call()
                await call()

    def spent(raw: Any) -> int:
        return 100_000 - int(raw.headers["x-ratelimit-remaining-tokens"])

    assert spent(responses) == (len("hello") // 4 + 4) + 20  # input + max_output_tokens
    assert spent(embeddings) == len("hello world!") // 4 + 1  # input only
    assert spent(legacy) == (len("hello") // 4 + 1) + 10  # prompt + max_tokens
    assert spent(moderation) == len("hello") // 4 + 1


# -- structured outputs -----------------------------------------------------------------------------------------

TICKET_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "category": {"type": "string", "enum": ["billing", "bug", "question"]},
        "summary": {"type": "string", "maxLength": 40},
        "priority": {"type": "integer", "minimum": 1, "maximum": 5},
        "score": {"type": "number", "exclusiveMinimum": 0},
        "urgent": {"type": "boolean"},
        "opened": {"type": "string", "format": "date"},
        "assignee": {"anyOf": [{"type": "string", "minLength": 3}, {"type": "null"}]},
        "tags": {"type": "array", "items": {"type": "string"}, "minItems": 1},
        "customer": {"$ref": "#/$defs/customer"},
    },
    "required": ["category", "summary", "priority", "score", "urgent", "opened", "assignee", "tags", "customer"],
    "additionalProperties": False,
    "$defs": {
        "customer": {
            "type": "object",
            "properties": {"name": {"type": "string"}, "plan": {"type": "string", "const": "pro"}},
            "required": ["name", "plan"],
            "additionalProperties": False,
        }
    },
}


def ticket_format(schema: dict[str, Any] | None = None, *, strict: bool = True) -> dict[str, Any]:
    return {
        "type": "json_schema",
        "json_schema": {"name": "ticket", "schema": schema or TICKET_SCHEMA, "strict": strict},
    }


async def ask_structured(
    client: openai.AsyncOpenAI, prompt: str, response_format: dict[str, Any], **params: Any
) -> ChatCompletion:
    return await client.chat.completions.create(
        model="gpt-4o-mini",
        messages=[{"role": "user", "content": prompt}],
        response_format=response_format,  # type: ignore[arg-type]
        **params,
    )


async def test_json_schema_answers_conform_to_the_requested_schema(server: RunningFakeOpenAI) -> None:
    async with client_for(server) as client:
        completion = await ask_structured(client, "Classify: charged twice", ticket_format())
        response = await client.responses.create(
            model="gpt-4o-mini",
            input="Classify: charged twice",
            text={"format": {"type": "json_schema", "name": "ticket", "schema": TICKET_SCHEMA, "strict": True}},
        )
    content = completion.choices[0].message.content
    assert content is not None
    answer = json.loads(content)
    jsonschema.validate(answer, TICKET_SCHEMA)
    assert answer["category"] == "billing"  # the first enum value
    assert answer["customer"]["plan"] == "pro"
    assert completion.choices[0].finish_reason == "stop"
    jsonschema.validate(json.loads(response.output_text), TICKET_SCHEMA)
    assert response.text is not None
    assert response.text.format is not None
    assert response.text.format.type == "json_schema"


class Ticket(BaseModel):
    category: Literal["billing", "bug", "question"]
    summary: str
    priority: int
    tags: list[str]


async def test_the_sdks_parse_helpers_get_a_valid_instance(server: RunningFakeOpenAI) -> None:
    async with client_for(server) as client:
        chat = await client.chat.completions.parse(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "Classify: crash"}], response_format=Ticket
        )
        response = await client.responses.parse(model="gpt-4o-mini", input="Classify: crash", text_format=Ticket)
    parsed = chat.choices[0].message.parsed
    assert parsed == Ticket(
        category="billing", summary="Echo: Classify: crash", priority=0, tags=["Echo: Classify: crash"]
    )
    assert response.output_parsed == parsed


async def test_json_object_answers_a_json_object_and_needs_the_word_json(server: RunningFakeOpenAI) -> None:
    async with client_for(server) as client:
        completion = await ask_structured(client, "Reply in JSON: hi", {"type": "json_object"})
        with pytest.raises(openai.BadRequestError) as chat_refused:
            await ask_structured(client, "Reply: hi", {"type": "json_object"})
        response = await client.responses.create(
            model="m", input="hi", instructions="Answer in JSON.", text={"format": {"type": "json_object"}}
        )
        with pytest.raises(openai.BadRequestError) as responses_refused:
            await client.responses.create(model="m", input="hi", text={"format": {"type": "json_object"}})
    assert json.loads(completion.choices[0].message.content or "") == {"answer": "Echo: Reply in JSON: hi"}
    assert "must contain the word 'json'" in chat_refused.value.message
    assert chat_refused.value.param == "messages"
    assert isinstance(json.loads(response.output_text), dict)
    assert "must contain the word 'json'" in responses_refused.value.message


@pytest.mark.parametrize(
    ("response_format", "message", "param"),
    [
        (
            {"type": "xml"},
            "Invalid value: 'xml'. Supported values are: 'json_object', 'json_schema', and 'text'.",
            "response_format.type",
        ),
        ({"type": "json_schema"}, "Missing required parameter: 'response_format.json_schema'.", None),
        (
            {"type": "json_schema", "json_schema": {"schema": {}}},
            "Missing required parameter: 'response_format.json_schema.name'.",
            None,
        ),
        ({"type": "json_schema", "json_schema": {"name": "a b"}}, "Invalid 'response_format.json_schema.name'", None),
        (
            {"type": "json_schema", "json_schema": {"name": "t", "schema": {}, "strict": True, "extra": 1}},
            "Unknown parameter: 'response_format.json_schema.extra'.",
            None,
        ),
        (
            ticket_format({"type": "array", "items": {"type": "string"}}),
            "Invalid schema for response_format 'ticket': schema must be a JSON Schema of 'type: \"object\"', "
            "got 'type: \"array\"'.",
            "response_format",
        ),
        (
            ticket_format({"type": "object", "properties": {"a": {"type": "string"}}, "required": ["a"]}),
            "Invalid schema for response_format 'ticket': In context=(), 'additionalProperties' is required to be "
            "supplied and to be false.",
            "response_format",
        ),
        (
            ticket_format(
                {
                    "type": "object",
                    "properties": {
                        "a": {
                            "type": "object",
                            "properties": {"b": {"type": "string"}, "c": {"type": "string"}},
                            "required": ["b"],
                            "additionalProperties": False,
                        }
                    },
                    "required": ["a"],
                    "additionalProperties": False,
                }
            ),
            "Invalid schema for response_format 'ticket': In context=('properties', 'a'), 'required' is required to "
            "be supplied and to be an array including every key in properties. Missing 'c'.",
            "response_format",
        ),
    ],
)
async def test_bad_response_formats_and_non_strict_schemas_are_refused(
    server: RunningFakeOpenAI, response_format: dict[str, Any], message: str, param: str | None
) -> None:
    async with client_for(server) as client:
        with pytest.raises(openai.BadRequestError) as info:
            await ask_structured(client, "hi", response_format)
    assert info.value.message.endswith(message) or message in info.value.message
    if param is not None:
        assert info.value.param == param


async def test_a_non_strict_schema_is_answered_as_is(server: RunningFakeOpenAI) -> None:
    schema = {"type": "object", "properties": {"a": {"type": "string"}, "b": {"type": "integer"}}, "required": ["a"]}
    async with client_for(server) as client:
        completion = await ask_structured(client, "hi", ticket_format(schema, strict=False))
    jsonschema.validate(json.loads(completion.choices[0].message.content or ""), schema)


async def test_output_invalid_json_marker_twice_then_valid(server: RunningFakeOpenAI) -> None:
    prompt = "Classify [[output:invalid_json:x2]]"
    async with client_for(server) as client:
        answers = [await ask_structured(client, prompt, ticket_format()) for _ in range(3)]
    contents = [a.choices[0].message.content or "" for a in answers]
    for content in contents[:2]:
        with pytest.raises(json.JSONDecodeError):
            json.loads(content)
    jsonschema.validate(json.loads(contents[2]), TICKET_SCHEMA)
    assert server.stats()["status"] == {"200": 3}
    assert server.stats()["injected"] == {"marker": 2}


async def test_output_schema_mismatch_marker_is_valid_json_against_the_schema(server: RunningFakeOpenAI) -> None:
    async with client_for(server) as client:
        chat = await ask_structured(client, "Classify [[output:schema_mismatch]]", ticket_format())
        obj = await ask_structured(client, "JSON please [[output:schema_mismatch]]", {"type": "json_object"})
        response = await client.responses.create(
            model="m",
            input="Classify [[output:schema_mismatch]]",
            text={"format": {"type": "json_schema", "name": "ticket", "schema": TICKET_SCHEMA, "strict": True}},
        )
    for content in (chat.choices[0].message.content, response.output_text):
        answer = json.loads(content or "")
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(answer, TICKET_SCHEMA)
    assert not isinstance(json.loads(obj.choices[0].message.content or ""), dict)


async def test_output_truncated_marker(server: RunningFakeOpenAI) -> None:
    async with client_for(server) as client:
        chat = await ask_structured(client, "Classify [[output:truncated]]", ticket_format(), max_tokens=500)
        response = await client.responses.create(model="m", input="Tell me [[output:truncated]]")
        legacy = await client.completions.create(model="m", prompt="Tell me [[output:truncated]]")
    [choice] = chat.choices
    assert choice.finish_reason == "length"
    with pytest.raises(json.JSONDecodeError):
        json.loads(choice.message.content or "")
    assert chat.usage is not None
    assert chat.usage.completion_tokens == 500
    assert response.status == "incomplete"
    assert response.incomplete_details is not None
    assert response.incomplete_details.reason == "max_output_tokens"
    assert response.output[0].status == "incomplete"  # type: ignore[union-attr]
    assert legacy.choices[0].finish_reason == "length"


async def test_output_refusal_marker(server: RunningFakeOpenAI) -> None:
    async with client_for(server) as client:
        chat = await ask_structured(client, "Classify [[output:refusal]]", ticket_format())
        response = await client.responses.create(model="m", input="Tell me [[output:refusal]]")
    message = chat.choices[0].message
    assert message.content is None
    assert message.refusal == "I'm sorry, but I can't help with that."
    assert chat.choices[0].finish_reason == "stop"
    [item] = response.output
    assert item.type == "message"
    assert [c.type for c in item.content] == ["refusal"]
    assert response.output_text == ""


async def test_output_content_filter_marker(server: RunningFakeOpenAI) -> None:
    async with client_for(server) as client:
        chat = await ask(client, "Tell me [[output:content_filter]]")
        response = await client.responses.create(model="m", input="Tell me [[output:content_filter]]")
        legacy = await client.completions.create(model="m", prompt="Tell me [[output:content_filter]]")
        moderation = await client.moderations.create(input="Tell me [[output:content_filter]]")
    assert chat.choices[0].finish_reason == "content_filter"
    assert response.status == "incomplete"
    assert response.incomplete_details is not None
    assert response.incomplete_details.reason == "content_filter"
    assert legacy.choices[0].finish_reason == "content_filter"
    assert moderation.results[0].flagged is True
    assert moderation.results[0].categories.violence is True


@pytest.mark.parametrize("status", ["queued", "in_progress", "failed"])
async def test_output_status_markers_answer_a_response_that_is_not_one_yet(
    server: RunningFakeOpenAI, status: str
) -> None:
    async with client_for(server) as client:
        response = await client.responses.create(model="m", input=f"Tell me [[output:{status}]]")
        chat = await ask(client, f"Tell me [[output:{status}]]")  # no status: answered as usual
    assert (response.status, response.output, response.usage) == (status, [], None)
    assert (response.error is not None) is (status == "failed")
    assert chat.choices[0].message.content == f"Echo: Tell me [[output:{status}]]"


async def test_output_empty_bad_model_and_deep_markers(server: RunningFakeOpenAI) -> None:
    async with client_for(server) as client:
        chat = await ask(client, "Tell me [[output:empty]]")
        response = await client.responses.create(model="m", input="Tell me [[output:empty]]")
        # (the SDK itself refuses an embeddings answer without data: read as it came)
        embedding = await client.with_raw_response.embeddings.create(model="e", input="x [[output:empty]]")
        legacy = await client.completions.create(model="m", prompt="Tell me [[output:empty]]")
        moderation = await client.moderations.create(input="Tell me [[output:empty]]")
        raw = await client.with_raw_response.embeddings.create(model="e", input="x [[output:bad_model]]")
        deep = await ask_structured(client, "JSON please [[output:deep]]", {"type": "json_object"})
    assert (chat.choices, response.output, legacy.choices, moderation.results) == ([], [], [], [])
    assert json.loads(embedding.http_response.content)["data"] == []
    assert json.loads(raw.http_response.content)["model"] == ["e"]
    text = deep.choices[0].message.content or ""
    assert text.startswith('{"a":' * 5000 + "1}")
    with pytest.raises(RecursionError):
        json.loads(text)


async def test_output_markers_follow_fault_markers_in_order(server: RunningFakeOpenAI) -> None:
    prompt = "Classify [[fail:500x1]] [[output:refusal:x1]]"
    async with client_for(server) as client:
        with pytest.raises(openai.InternalServerError):
            await ask_structured(client, prompt, ticket_format())
        refused = await ask_structured(client, prompt, ticket_format())
        answered = await ask_structured(client, prompt, ticket_format())
    assert refused.choices[0].message.refusal is not None
    jsonschema.validate(json.loads(answered.choices[0].message.content or ""), TICKET_SCHEMA)


@pytest.mark.parametrize(
    "schema",
    [
        {"type": "object", "properties": {"n": {"type": "integer", "exclusiveMinimum": 3, "multipleOf": 5}}},
        {"type": "object", "properties": {"x": {"type": "number", "minimum": -2.5, "maximum": -1}}},
        {"type": "object", "properties": {"s": {"type": ["string", "null"], "minLength": 300}}},
        {"type": "object", "properties": {"s": {"type": "string", "maxLength": 0}}},
        {
            "type": "object",
            "properties": {"a": {"type": "array", "minItems": 3, "maxItems": 3, "items": {"type": "boolean"}}},
        },
        {
            "type": "object",
            "properties": {"t": {"type": "array", "prefixItems": [{"type": "integer"}, {"type": "string"}]}},
        },
        {"type": "object", "properties": {"o": {"oneOf": [{"type": "null"}, {"type": "integer"}]}}},
        {"type": "object", "properties": {"m": {"allOf": [{"type": "object"}, {"required": ["k"]}]}}},
        {"type": "object", "properties": {"e": {"type": "string", "format": "email"}, "u": {"format": "uuid"}}},
        {"type": "object", "required": ["only"]},
        {
            "type": "object",
            "properties": {"tree": {"$ref": "#/definitions/node"}},
            "definitions": {"node": {"type": "object", "properties": {"children": {"type": "array", "maxItems": 0}}}},
        },
    ],
)
def test_generated_instances_validate_against_their_schema(schema: dict[str, Any]) -> None:
    value = structured.instance(schema, "Echo: hi")
    jsonschema.validate(value, schema, format_checker=jsonschema.FormatChecker())
    mismatched = structured.mismatch(structured.OutputFormat("json_schema", schema, "t"), "Echo: hi")
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(mismatched, schema)
