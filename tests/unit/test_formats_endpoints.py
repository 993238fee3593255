"""Short forms on every endpoint: what a prompt becomes, which parameters are known, the token estimate."""

from __future__ import annotations

import json
from typing import Any

import pytest
from promptdrop.engine.request import Endpoint
from promptdrop.formats import LineError, Request, request_from_object


def parse(obj: dict[str, Any], endpoint: Endpoint = Endpoint.CHAT) -> Request | LineError:
    text = json.dumps(obj)
    return request_from_object(
        obj, line=1, default_id="line-1", default_model="gpt-4o-mini", text_len=len(text), default_endpoint=endpoint
    )


def body(item: Request | LineError) -> dict[str, Any]:
    assert isinstance(item, Request), item
    value: dict[str, Any] = json.loads(item.body)
    return value


@pytest.mark.parametrize(
    ("endpoint", "expected"),
    [
        (Endpoint.CHAT, {"messages": [{"role": "user", "content": "hi"}], "model": "gpt-4o-mini"}),
        (Endpoint.RESPONSES, {"input": "hi", "model": "gpt-4o-mini"}),
        (Endpoint.EMBEDDINGS, {"input": "hi", "model": "text-embedding-3-small"}),
        (Endpoint.COMPLETIONS, {"prompt": "hi", "model": "gpt-3.5-turbo-instruct"}),
        (Endpoint.MODERATIONS, {"input": "hi", "model": "omni-moderation-latest"}),
    ],
)
def test_a_prompt_becomes_each_endpoints_own_field(endpoint: Endpoint, expected: dict[str, Any]) -> None:
    # The file's endpoint, or the line's own "endpoint" field: the same request
    by_file, by_line = parse({"prompt": "hi"}, endpoint), parse({"prompt": "hi", "endpoint": endpoint.value})
    assert body(by_file) == body(by_line) == expected
    assert isinstance(by_file, Request)
    assert (by_file.endpoint, by_file.batch_line()["url"]) == (endpoint, endpoint.value)


def test_system_becomes_instructions_on_responses_and_is_refused_where_it_means_nothing() -> None:
    assert body(parse({"prompt": "hi", "system": "brief"}, Endpoint.RESPONSES))["instructions"] == "brief"
    refused = parse({"prompt": "hi", "system": "brief"}, Endpoint.EMBEDDINGS)
    assert isinstance(refused, LineError)
    assert "system: not taken by /v1/embeddings" in refused.message


def test_parameters_are_those_of_the_lines_endpoint() -> None:
    assert isinstance(parse({"prompt": "hi", "max_output_tokens": 9}, Endpoint.RESPONSES), Request)
    wrong = parse({"prompt": "hi", "max_output_tokens": 9})
    assert isinstance(wrong, LineError)
    assert "not a /v1/chat/completions parameter" in wrong.message
    assert isinstance(parse({"input": ["a", "b"], "dimensions": 8}, Endpoint.EMBEDDINGS), Request)


def test_the_token_estimate_follows_the_endpoint() -> None:
    long = "x" * 400  # ~100 tokens of input
    chat, responses = (
        parse({"prompt": long, "max_tokens": 50}),
        parse({"prompt": long, "max_output_tokens": 50}, Endpoint.RESPONSES),
    )
    embeddings = parse({"prompt": long}, Endpoint.EMBEDDINGS)
    assert isinstance(chat, Request)
    assert isinstance(responses, Request)
    assert isinstance(embeddings, Request)
    assert 150 <= chat.cost < 170
    assert 150 <= responses.cost < 170
    assert 100 <= embeddings.cost < 110  # no completion budget


def test_a_background_response_is_refused_with_its_reason() -> None:
    # A background response would be answered "queued", its answer later by polling: nothing to wait for here
    for line in (
        {"prompt": "hi", "endpoint": "/v1/responses", "background": True},
        {"custom_id": "b", "url": "/v1/responses", "body": {"model": "gpt-4o", "input": "hi", "background": True}},
    ):
        refused = parse(line)
        assert isinstance(refused, LineError)
        assert '"background": true is not supported' in refused.message
    assert isinstance(parse({"prompt": "hi", "background": False}, Endpoint.RESPONSES), Request)
