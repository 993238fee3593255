"""Each endpoint's answer (shape, usage, finish, text) and whether a request can use it; the schema cache."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
from promptdrop.engine import structured
from promptdrop.engine.answers import (
    MAX_ANSWER_NESTING,
    AnswerCheck,
    TextPolicy,
    answer_text,
    answer_text_of,
    finish_reason,
    parse_answer,
    prompt_cache_of,
    schema_of,
    usage_of,
)
from promptdrop.engine.endpoints import spec_of_answer
from promptdrop.engine.errors import MalformedResponse, UnusableAnswer, classify
from promptdrop.engine.nesting import nesting_too_deep
from promptdrop.engine.request import Endpoint, Request
from promptdrop.engine.structured import ANY_OBJECT, SchemaError, canonical, check_schema, validate
from promptdrop.settings import ENDPOINTS

SCHEMA = {"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"], "additionalProperties": False}


def chat(content: str | None, finish: str = "stop", refusal: str | None = None) -> dict[str, Any]:
    message = {"role": "assistant", "content": content, "refusal": refusal}
    return {
        "object": "chat.completion",
        "choices": [{"index": 0, "message": message, "finish_reason": finish}],
        "usage": {"prompt_tokens": 7, "completion_tokens": 3, "total_tokens": 10},
    }


def response(text: str | None, status: str = "completed", reason: str | None = None, more: str = "") -> dict[str, Any]:
    part = {"type": "output_text", "text": text} if text is not None else {"type": "refusal", "refusal": "no"}
    parts = [part, {"type": "output_text", "text": more}] if more else [part]
    return {
        "object": "response",
        "status": status,
        "incomplete_details": {"reason": reason} if reason else None,
        "output": [{"type": "reasoning"}, {"type": "message", "content": parts}],
        "usage": {"input_tokens": 11, "output_tokens": 5, "total_tokens": 16},
    }


EMBEDDINGS = {"object": "list", "data": [{"embedding": [0.1]}], "usage": {"prompt_tokens": 4, "total_tokens": 4}}
COMPLETION = {"object": "text_completion", "choices": [{"text": "once", "finish_reason": "length"}], "usage": {}}
MODERATION = {"id": "modr-1", "model": "omni-moderation-latest", "results": [{"flagged": False}]}


@pytest.mark.parametrize(
    ("endpoint", "body"),
    [
        (Endpoint.CHAT, chat("x")),
        (Endpoint.RESPONSES, response("x")),
        (Endpoint.EMBEDDINGS, EMBEDDINGS),
        (Endpoint.COMPLETIONS, COMPLETION),
        (Endpoint.MODERATIONS, MODERATION),
    ],
)
def test_each_endpoint_accepts_its_own_answer_and_no_other(endpoint: Endpoint, body: dict[str, Any]) -> None:
    assert parse_answer(endpoint, json.dumps(body).encode(), 200) == body
    others = [EMBEDDINGS, MODERATION] if endpoint in (Endpoint.CHAT, Endpoint.COMPLETIONS) else [chat("x")]
    for other in others:
        with pytest.raises(MalformedResponse):
            parse_answer(endpoint, json.dumps(other).encode(), 200)
    with pytest.raises(MalformedResponse, match="not JSON"):
        parse_answer(endpoint, b"{half", 200)


def test_a_response_must_say_it_is_one() -> None:
    with pytest.raises(MalformedResponse, match="object is 'list'"):
        parse_answer(Endpoint.RESPONSES, json.dumps({"object": "list", "output": []}).encode(), 200)


def test_usage_finish_and_text_follow_each_endpoints_shape() -> None:
    assert usage_of(chat("x")) == (7, 3)
    assert usage_of(response("x")) == (11, 5)
    assert usage_of(EMBEDDINGS) == (4, 0)
    assert usage_of(MODERATION) == (0, 0)
    assert finish_reason(chat("x", "length")) == "length"
    assert finish_reason(response("x")) == "completed"
    assert finish_reason(response("x", "incomplete", "max_output_tokens")) == "max_output_tokens"
    assert finish_reason(EMBEDDINGS) is None
    assert answer_text(chat("hello")) == "hello"
    assert answer_text(response("hello", more="!")) == "hello!"  # every output_text part of the messages, joined
    assert answer_text(COMPLETION) == "once"
    assert answer_text(EMBEDDINGS) is None


def test_prompt_cache_reads_and_writes_follow_each_endpoints_usage_shape() -> None:
    chat_usage = {"prompt_tokens": 3000, "prompt_tokens_details": {"cached_tokens": 1024, "cache_write_tokens": 1920}}
    assert prompt_cache_of({"usage": chat_usage}) == (1024, 1920)
    responses_usage = {"input_tokens": 3000, "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 2048}}
    assert prompt_cache_of({"usage": responses_usage}) == (0, 2048)
    assert prompt_cache_of(chat("x")) == (0, 0)  # an older answer reports no cache at all
    not_counts = {"cached_tokens": "9", "cache_write_tokens": True}
    assert prompt_cache_of({"usage": {"prompt_tokens_details": not_counts}}) == (0, 0)
    assert prompt_cache_of({"usage": None}) == (0, 0)


def test_the_schema_a_request_asks_for_is_read_from_its_endpoints_field() -> None:
    chat_format = {"response_format": {"type": "json_schema", "json_schema": {"name": "r", "schema": SCHEMA}}}
    assert schema_of(Endpoint.CHAT, chat_format) == canonical(SCHEMA)
    assert schema_of(Endpoint.CHAT, {"response_format": {"type": "json_object"}}) == ANY_OBJECT
    assert schema_of(Endpoint.CHAT, {"response_format": {"type": "text"}}) is None
    responses_format = {"text": {"format": {"type": "json_schema", "name": "r", "schema": SCHEMA}}}
    assert schema_of(Endpoint.RESPONSES, responses_format) == canonical(SCHEMA)
    assert schema_of(Endpoint.RESPONSES, {"text": {"format": {"type": "json_object"}}}) == ANY_OBJECT
    assert schema_of(Endpoint.EMBEDDINGS, chat_format) is None


def request(endpoint: Endpoint = Endpoint.CHAT, schema: str | None = canonical(SCHEMA)) -> Request:
    return Request(1, "r", b"{}", 1, endpoint=endpoint, output_schema=schema)


@pytest.mark.parametrize(
    ("endpoint", "body", "code", "message"),
    [
        (Endpoint.CHAT, chat("```json\n{}\n```"), "invalid_output", "not valid JSON"),
        (Endpoint.CHAT, chat('{"a": "one"}'), "invalid_output", "does not match the schema: data.a must be integer"),
        (Endpoint.CHAT, chat('{"a": 1', "length"), "truncated", "cut off"),
        (Endpoint.CHAT, chat(None, refusal="I can't"), "refused", "I can't"),
        (Endpoint.CHAT, chat('{"a"', "content_filter"), "content_filtered", "content filter"),
        (Endpoint.RESPONSES, response('{"b": 1}'), "invalid_output", "does not match"),
        (Endpoint.RESPONSES, response('{"a"', "incomplete", "max_output_tokens"), "truncated", "cut off"),
        (Endpoint.RESPONSES, response(None), "refused", "refused"),
    ],
)
def test_a_structured_answer_the_request_cannot_use_says_why(
    endpoint: Endpoint, body: dict[str, Any], code: str, message: str
) -> None:
    with pytest.raises(UnusableAnswer) as caught:
        AnswerCheck().check(request(endpoint), body)
    assert caught.value.code == code
    assert message in str(caught.value)
    info = classify(caught.value)
    assert (info.code, info.status_code, info.body) == (code, 200, body)  # the answer is kept


def test_a_good_structured_answer_passes_and_plain_text_follows_the_policy() -> None:
    AnswerCheck().check(request(), chat('{"a": 1}'))
    AnswerCheck().check(request(Endpoint.RESPONSES), response('{"a": 1}'))
    plain = request(schema=None)
    AnswerCheck().check(plain, chat("cut", "length"))  # accept: an answer
    with pytest.raises(UnusableAnswer, match="cut off"):
        AnswerCheck(TextPolicy.STRICT).check(plain, chat("cut", "length"))
    AnswerCheck(TextPolicy.STRICT).check(request(Endpoint.EMBEDDINGS, None), EMBEDDINGS)


def test_validators_are_compiled_once_per_distinct_schema() -> None:
    # Given a schema written twice with its keys in another order
    same = json.loads(json.dumps(SCHEMA))
    reordered = dict(reversed(list(same.items())))
    before = structured.cache_info()
    # When its answers are validated many times
    for _ in range(50):
        assert validate(canonical(same), {"a": 1}) is None
        assert validate(canonical(reordered), {"a": "x"}) == "data.a must be integer"
    # Then it was compiled at most once
    after = structured.cache_info()
    assert after.misses - before.misses <= 1
    assert after.hits - before.hits >= 99


def test_a_schema_is_never_fetched_nor_allowed_to_fill_in_defaults() -> None:
    with pytest.raises(SchemaError, match="only references within the schema itself"):
        check_schema(canonical({"$ref": "http://169.254.169.254/latest"}))
    with pytest.raises(SchemaError, match="cannot be used"):
        check_schema(canonical({"type": "object", "maxProperties": "3"}))
    value: dict[str, Any] = {}
    assert validate(canonical({"type": "object", "properties": {"a": {"default": 1}}}), value) is None
    assert value == {}  # the answer as it came


def test_the_settings_endpoints_are_the_engines() -> None:
    assert tuple(e.value for e in Endpoint) == ENDPOINTS
    assert Endpoint.of("/responses") is Endpoint.RESPONSES
    assert Endpoint.of("/v1/embeddings") is Endpoint.EMBEDDINGS
    assert Endpoint.of("/v1/images/generations") is None
    assert Endpoint.RESPONSES.path == "/responses"


# -- what is not an answer (issue 20): retried as malformed, then failed malformed_response --------------------


def no_choices() -> dict[str, Any]:
    return {**chat("x"), "choices": []}


@pytest.mark.parametrize(
    ("endpoint", "body", "message"),
    [
        (Endpoint.RESPONSES, {**response("x"), "status": "queued", "output": []}, "the response is 'queued'"),
        (Endpoint.RESPONSES, {**response("x"), "status": "in_progress"}, "the response is 'in_progress'"),
        (
            Endpoint.RESPONSES,
            {**response("x"), "status": "failed", "error": {"code": "server_error", "message": "it broke"}},
            "the response is 'failed', not an answer: it broke",
        ),
        (Endpoint.RESPONSES, {**response("x"), "output": []}, "empty output list"),
        (Endpoint.CHAT, no_choices(), "empty choices list"),
        (Endpoint.COMPLETIONS, {**COMPLETION, "choices": []}, "empty choices list"),
        (Endpoint.EMBEDDINGS, {"object": "list", "data": [], "usage": {}}, "empty data list"),
        (Endpoint.EMBEDDINGS, {"object": "list", "usage": {}}, "no data list"),
        (Endpoint.MODERATIONS, {**MODERATION, "results": []}, "empty results list"),
        (Endpoint.CHAT, {**chat("x"), "model": ["gpt-4o"]}, "the answer's model is list, not a string"),
        (Endpoint.EMBEDDINGS, {**EMBEDDINGS, "model": 4}, "the answer's model is int, not a string"),
    ],
)
def test_an_answer_with_nothing_in_it_is_malformed_not_a_success(
    endpoint: Endpoint, body: dict[str, Any], message: str
) -> None:
    with pytest.raises(MalformedResponse, match=message) as caught:
        parse_answer(endpoint, json.dumps(body).encode(), 200)
    info = classify(caught.value)
    assert (info.code, info.disposition.value) == ("malformed_response", "transient")  # retried, then failed


def test_an_answer_nested_past_the_bound_is_refused_before_it_is_decoded() -> None:
    # Given a body nested 5,000 deep (json.loads would raise RecursionError)
    deep = b'{"object": "chat.completion", "choices": [' + b"[" * 5000 + b"]" * 5000 + b"]}"
    with pytest.raises(MalformedResponse, match=f"nests deeper than {MAX_ANSWER_NESTING} levels"):
        parse_answer(Endpoint.CHAT, deep, 200)
    with pytest.raises(MalformedResponse, match="not UTF-8"):
        parse_answer(Endpoint.CHAT, b'{"choices": ["\xff"]}', 200)


def test_a_json_answer_nested_past_the_bound_fails_too_deep_not_a_crash() -> None:
    # Given a json_object request answered with an object nested 5,000 deep (in the message's text)
    text = '{"a":' * 5000 + "1" + "}" * 5000
    with pytest.raises(UnusableAnswer) as caught:
        AnswerCheck().check(request(schema=ANY_OBJECT), chat(text))
    assert caught.value.code == "too_deep"
    info = classify(caught.value)
    assert (info.code, info.disposition.value) == ("too_deep", "permanent")  # once the output attempts are spent
    assert answer_text_of(json.dumps(chat(text))) == text  # the outputs still read its text


def test_each_endpoints_answer_as_a_person_is_shown_it() -> None:
    vector = [0.5] * 1536
    embeddings = {"object": "list", "data": [{"embedding": vector}, {"embedding": vector}]}
    one = {"object": "list", "data": [{"embedding": base64.b64encode(b"\0" * 4 * 256).decode()}]}
    flagged = {"flagged": True, "categories": {"violence": True, "harassment": False, "hate": True}}
    shown = {
        "chat": chat("hello\nthere"),
        "refused": chat(None, refusal="I can't"),
        "response": response("hi", more="!"),
        "completion": COMPLETION,
        "moderation": MODERATION,
        "flagged": {"model": "omni-moderation-latest", "results": [flagged]},
        "two": {"results": [{"flagged": False}, flagged]},
        "embeddings": embeddings,
        "base64": one,
    }
    assert {name: spec_of_answer(body).shown(body) for name, body in shown.items()} == {  # type: ignore[union-attr]
        "chat": "hello\nthere",
        "refused": "refused: I can't",
        "response": "hi!",
        "completion": "once",
        "moderation": "not flagged",
        "flagged": "flagged: violence, hate",
        "two": "1: not flagged; 2: flagged: violence, hate",
        "embeddings": "2 embeddings × 1536 dims",  # noqa: RUF001
        "base64": "embedding: 256 dims",
    }
    assert spec_of_answer({"error": {}}) is None


@pytest.mark.parametrize(
    ("text", "at"),
    [
        ('["[[[[", "{{{{", 1, 2.5e-3, [true, null]]', None),  # brackets in strings do not nest
        ('["\\"[[[[", [[[1]]]]', 13),  # an escaped quote does not end its string: the 4th level opens at 13
        ('["\\\\", [[[1]]]]', 9),  # an escaped backslash does: the string ends, and what follows nests
        ("[" * 4 + "0" * 50_000 + "]" * 4, 3),
        ('"unterminated [[[[', 17),  # a quote that opens no string is passed over
    ],
)
def test_nesting_is_counted_outside_strings_without_decoding(text: str, at: int | None) -> None:
    assert nesting_too_deep(text, 3) == at
