"""The API endpoints: what each one reads from a request (:class:`Ask`) and the body it answers
(:class:`Answer`) — chat, Responses and completions here, embeddings in :mod:`.embeddings`,
moderations in :mod:`.moderations`.

Answers are deterministic functions of the prompt (``"Echo: "`` + its first 200 characters, repeated to the server's
``batch_answer_chars`` in batches), so a test can tell which answer belongs to which prompt. Token counts are estimates
(4 characters a token), the same ones the rate limiter charges.
"""

from __future__ import annotations

import json
import random
import time
from dataclasses import dataclass, field
from json.encoder import encode_basestring_ascii
from typing import Any, Final, Protocol

from infra.fake_openai.structured import (
    OutputFormat,
    chat_format,
    instance,
    json_word_error,
    mismatch,
    responses_format,
)
from infra.fake_openai.validation import (
    CHAT_SPEC,
    COMPLETIONS_SPEC,
    RESPONSES_ROLES,
    RESPONSES_SPEC,
    ApiError,
    check_body,
    check_messages,
    invalid,
    invalid_type,
    invalid_value,
    missing,
)

__all__ = [
    "CHAT",
    "ECHO_CHARS",
    "ECHO_PREFIX",
    "Answer",
    "Ask",
    "ChatCompletions",
    "Completions",
    "Endpoint",
    "Responses",
]

ECHO_PREFIX: Final = "Echo: "
ECHO_CHARS: Final = 200
_SYSTEM_FINGERPRINT: Final = "fp_local_fake_openai"
_encode_str: Final = encode_basestring_ascii  # a str as a JSON string literal, in C


@dataclass(slots=True)
class Ask:
    """What the server needs from a valid request."""

    model: str
    #: The prompt text: what markers are looked for in and ``/stats`` ``prompts`` counts (by hash).
    text: str
    input_tokens: int
    max_output_tokens: int | None
    #: How many answers are generated (choices): each is charged ``max_output_tokens`` by the rate limiter.
    outputs: int
    body: dict[str, Any]
    #: The separate inputs of endpoints that take several (embeddings, completions, moderations).
    inputs: list[Any] = field(default_factory=list)
    #: The JSON the request asked for (chat ``response_format``, Responses ``text.format``), if any.
    format: OutputFormat | None = None
    #: Of ``input_tokens``, those read from the prompt cache and those written to it (:mod:`.prompt_cache`).
    cached_tokens: int = 0
    cache_write_tokens: int = 0
    answer_chars: int = 0  #: the echo repeated to that length (0: the echo alone): ``batch_answer_chars``


@dataclass(frozen=True, slots=True)
class Answer:
    body: bytes
    input_tokens: int
    output_tokens: int


class Endpoint(Protocol):
    #: The path under ``/v1``.
    path: str

    def parse(self, body: object) -> Ask | ApiError: ...

    def render(self, ask: Ask, rng: random.Random, misbehave: str = "") -> Answer:
        """The answer; ``misbehave`` is one of ``OUTPUT_MARKERS`` when an ``[[output:...]]`` marker applies."""
        ...


def served_tier(body: dict[str, Any]) -> str:
    """The ``service_tier`` an answer says it was served at: ``flex`` when asked (and served), else ``default``."""
    return "flex" if body.get("service_tier") == "flex" else "default"


def _text_of(content: object) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = [p.get("text") for p in content if isinstance(p, dict)]
        return "\n".join(p for p in parts if isinstance(p, str))
    return ""


def _echo(text: str, chars: int = 0) -> str:  # ``chars``: repeated to that length (a large answer, priced as such)
    echo = ECHO_PREFIX + text[:ECHO_CHARS]
    return echo if len(echo) >= chars else ((echo + " ") * (chars // len(echo) + 1))[:chars]


def _tokens(text: str) -> int:
    """The estimate of a text's tokens used everywhere here: 4 characters a token, at least 1."""
    return len(text) // 4 + 1


def _hex_id(rng: random.Random, prefix: str, digits: int) -> str:
    return f"{prefix}{rng.getrandbits(digits * 4):0{digits}x}"


def _dumps(body: dict[str, Any]) -> bytes:
    return json.dumps(body, separators=(",", ":")).encode()


def _no_stream(body: dict[str, Any]) -> ApiError | None:
    if body.get("stream"):
        return invalid("The fake OpenAI API does not stream: send 'stream': false or leave it out.", "stream")
    return None


REFUSAL: Final = "I'm sorry, but I can't help with that."
_DEEP: Final = 5000


@dataclass(frozen=True, slots=True)
class _Output:
    """One generated answer: its text (``None`` when refused), refusal, why it stopped and its tokens."""

    text: str | None
    refusal: str | None
    finish_reason: str  # "stop", "length" or "content_filter"
    tokens: int


def _output(prompt: str, fmt: OutputFormat | None, max_tokens: int | None, misbehave: str, chars: int = 0) -> _Output:
    """The answer to ``prompt``: its echo, as the JSON asked for, cut at ``max_tokens``, misbehaving on demand:
    ``invalid_json``: the JSON in a Markdown fence (not JSON); ``schema_mismatch``: valid JSON that breaks the
    schema; ``truncated``/``content_filter``: cut in half, finish_reason ``length``/``content_filter``;
    ``deep``: a JSON object nested 5,000 deep; ``refusal``: no text, a refusal.
    """
    echo = _echo(prompt, chars)
    if misbehave == "refusal":
        return _Output(None, REFUSAL, "stop", _tokens(REFUSAL))
    if fmt is None:
        text = echo
    elif fmt.kind == "json_schema" and fmt.schema is not None:
        text = json.dumps(instance(fmt.schema, echo))
    else:
        text = json.dumps({"answer": echo})
    if misbehave == "deep":  # valid JSON nested past any sane bound (json.loads raises RecursionError)
        text = '{"a":' * _DEEP + "1" + "}" * _DEEP
    elif misbehave == "invalid_json":
        text = "```json\n" + (text if fmt is not None else json.dumps({"answer": echo})) + "\n```"
    elif misbehave == "schema_mismatch":
        text = json.dumps(mismatch(fmt, echo))
    if misbehave in ("truncated", "content_filter"):
        cut = text[: max(1, len(text) // 2)]
        if misbehave == "truncated":
            return _Output(cut, None, "length", max_tokens or _tokens(cut))
        return _Output(cut, None, "content_filter", _tokens(cut))
    tokens = _tokens(text)
    if max_tokens is not None and max_tokens < tokens:
        return _Output(text[: max_tokens * 4], None, "length", max_tokens)
    return _Output(text, None, "stop", tokens)


# -- /v1/chat/completions --------------------------------------------------------------------------------------

# The chat.completion body as templates (what json.dumps of the equivalent dict gives, but cheaper: the hot path).
_CHOICE_TEMPLATE: Final = (
    '{"index":%d,"message":{"role":"assistant","content":%s,"refusal":%s,"annotations":[]},'
    '"logprobs":null,"finish_reason":"%s"}'
)
_COMPLETION_TEMPLATE: Final = (
    '{"id":"chatcmpl-%029x","object":"chat.completion","created":%d,"model":%s,"choices":[%s],'
    '"usage":{"prompt_tokens":%d,"completion_tokens":%d,"total_tokens":%d,'
    '"prompt_tokens_details":{"cached_tokens":%d,"cache_write_tokens":%d,"audio_tokens":0},'
    '"completion_tokens_details":{"reasoning_tokens":0,"audio_tokens":0,'
    '"accepted_prediction_tokens":0,"rejected_prediction_tokens":0}},'
    f'"service_tier":"%s","system_fingerprint":"{_SYSTEM_FINGERPRINT}"}}'
)


class ChatCompletions:
    path = "/chat/completions"

    def parse(self, body: object) -> Ask | ApiError:
        error = check_body(CHAT_SPEC, body)
        if error is not None:
            return error
        assert isinstance(body, dict)  # check_body made sure
        messages: list[Any] = body["messages"]
        error = check_messages(messages) or _no_stream(body)
        if error is not None:
            return error
        total = 0
        last_user: str | None = None
        last_any = ""
        for message in messages:
            text = _text_of(message.get("content"))
            total += len(text)
            last_any = text
            if message["role"] == "user":
                last_user = text
        fmt: OutputFormat | None = None
        if "response_format" in body:
            parsed = chat_format(body["response_format"])
            if isinstance(parsed, ApiError):
                return parsed
            fmt = parsed
            if fmt is not None and fmt.kind == "json_object":
                error = json_word_error([_text_of(m.get("content")) for m in messages], responses=False)
                if error is not None:
                    return error
        return Ask(
            model=body["model"],
            text=last_user if last_user is not None else last_any,
            input_tokens=total // 4 + 4 * len(messages),
            max_output_tokens=body.get("max_completion_tokens") or body.get("max_tokens"),
            outputs=body.get("n") or 1,
            body=body,
            format=fmt,
        )

    def render(self, ask: Ask, rng: random.Random, misbehave: str = "") -> Answer:
        out = _output(ask.text, ask.format, ask.max_output_tokens, misbehave, ask.answer_chars)
        content = "null" if out.text is None else _encode_str(out.text)
        refusal = "null" if out.refusal is None else _encode_str(out.refusal)
        choices = ",".join(_CHOICE_TEMPLATE % (i, content, refusal, out.finish_reason) for i in range(ask.outputs))
        completion_tokens = out.tokens * ask.outputs
        body = _COMPLETION_TEMPLATE % (
            rng.getrandbits(116),
            int(time.time()),
            _encode_str(ask.model),
            choices,
            ask.input_tokens,
            completion_tokens,
            ask.input_tokens + completion_tokens,
            ask.cached_tokens,
            ask.cache_write_tokens,
            served_tier(ask.body),
        )
        return Answer(body.encode(), ask.input_tokens, completion_tokens)


# -- inputs that may be several: embeddings, completions --------------------------------------------------------------


def _is_token(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _inputs(value: object, param: str, *, allow_empty_string: bool) -> list[str | list[int]] | ApiError:
    """A string, an array of strings, an array of token ids or an array of token-id arrays -> the inputs."""
    inputs: list[str | list[int]] | None = None
    if isinstance(value, str):
        inputs = [value]
    elif isinstance(value, list) and value:
        if all(isinstance(v, str) for v in value):
            inputs = list(value)
        elif all(_is_token(v) for v in value):
            inputs = [value]
        elif all(isinstance(v, list) and v and all(_is_token(t) for t in v) for v in value):
            inputs = list(value)
    if inputs is None or (not allow_empty_string and any(i == "" for i in inputs)):
        return invalid(
            f"'$.{param}' is invalid. Please check the API reference: https://platform.openai.com/docs/api-reference."
        )
    return inputs


def _input_text(item: str | list[int]) -> str:
    return item if isinstance(item, str) else " ".join(map(str, item))


def _input_tokens(item: str | list[int]) -> int:
    return _tokens(item) if isinstance(item, str) else len(item)


# -- /v1/responses ----------------------------------------------------------------------------------------------------


class Responses:
    path = "/responses"

    def parse(self, body: object) -> Ask | ApiError:
        error = check_body(RESPONSES_SPEC, body)
        if error is not None:
            return error
        assert isinstance(body, dict)
        error = _no_stream(body)
        if error is not None:
            return error
        previous = body.get("previous_response_id")
        if previous is not None:  # the fake keeps no responses: every id is unknown
            return invalid(
                f"Previous response with id '{previous}' not found.",
                "previous_response_id",
                "previous_response_not_found",
            )
        given = body.get("input")
        if given is None and body.get("prompt") is None:
            return missing("input")
        text, chars, messages = "", 0, 1
        parts: list[str] = []
        if isinstance(given, str):
            text, chars = given, len(given)
        elif isinstance(given, list):
            messages = len(given)
            last_any: str | None = None
            last_user: str | None = None
            for i, item in enumerate(given):
                if not isinstance(item, dict):
                    return invalid_type(f"input[{i}]", ("object",), item)
                role = item.get("role")
                if role is not None and role not in RESPONSES_ROLES:
                    return invalid_value(f"input[{i}].role", str(role), RESPONSES_ROLES)
                part = _text_of(item.get("content"))
                parts.append(part)
                chars += len(part)
                last_any = part
                if role == "user":
                    last_user = part
            text = last_user if last_user is not None else (last_any or "")
        instructions = body.get("instructions") or ""
        fmt: OutputFormat | None = None
        if "text" in body:
            parsed = responses_format(body["text"])
            if isinstance(parsed, ApiError):
                return parsed
            fmt = parsed
            if fmt is not None and fmt.kind == "json_object":
                texts = [instructions, given] if isinstance(given, str) else [instructions, *parts]
                error = json_word_error(texts, responses=True)
                if error is not None:
                    return error
        return Ask(
            model=body["model"],
            text=text,
            input_tokens=(chars + len(instructions)) // 4 + 4 * messages,
            max_output_tokens=body.get("max_output_tokens"),
            outputs=1,
            body=body,
            format=fmt,
        )

    def render(self, ask: Ask, rng: random.Random, misbehave: str = "") -> Answer:
        body = ask.body
        out = _output(ask.text, ask.format, ask.max_output_tokens, misbehave, ask.answer_chars)
        output_tokens = out.tokens
        status, incomplete = "completed", None
        if out.finish_reason != "stop":
            reason = "max_output_tokens" if out.finish_reason == "length" else out.finish_reason
            status, incomplete = "incomplete", {"reason": reason}
        content: list[dict[str, Any]] = [
            {"type": "output_text", "annotations": [], "logprobs": [], "text": out.text}
            if out.refusal is None
            else {"type": "refusal", "refusal": out.refusal}
        ]
        now = int(time.time())
        response = {
            "id": _hex_id(rng, "resp_", 50),
            "object": "response",
            "created_at": now,
            "status": status,
            "background": False,
            "completed_at": now if status == "completed" else None,
            "error": None,
            "incomplete_details": incomplete,
            "instructions": body.get("instructions"),
            "max_output_tokens": body.get("max_output_tokens"),
            "max_tool_calls": body.get("max_tool_calls"),
            "model": ask.model,
            "output": [
                {
                    "id": _hex_id(rng, "msg_", 50),
                    "type": "message",
                    "status": status,
                    "content": content,
                    "role": "assistant",
                }
            ],
            "parallel_tool_calls": body.get("parallel_tool_calls", True),
            "previous_response_id": None,
            "prompt_cache_key": body.get("prompt_cache_key"),
            "reasoning": body.get("reasoning") or {"effort": None, "summary": None},
            "safety_identifier": body.get("safety_identifier"),
            "service_tier": served_tier(body),
            "store": body.get("store", True),
            "temperature": body.get("temperature", 1.0),
            "text": {"format": {"type": "text"}, "verbosity": "medium", **(body.get("text") or {})},
            "tool_choice": body.get("tool_choice", "auto"),
            "tools": body.get("tools", []),
            "top_logprobs": body.get("top_logprobs", 0),
            "top_p": body.get("top_p", 1.0),
            "truncation": body.get("truncation", "disabled"),
            "usage": {
                "input_tokens": ask.input_tokens,
                "input_tokens_details": {
                    "cached_tokens": ask.cached_tokens,
                    "cache_write_tokens": ask.cache_write_tokens,
                },
                "output_tokens": output_tokens,
                "output_tokens_details": {"reasoning_tokens": 0},
                "total_tokens": ask.input_tokens + output_tokens,
            },
            "user": body.get("user"),
            "metadata": body.get("metadata") or {},
        }
        return Answer(_dumps(response), ask.input_tokens, output_tokens)


# -- /v1/completions (legacy) -----------------------------------------------------------------------------------------

_LEGACY_DEFAULT_MAX_TOKENS: Final = 16  # the API's own default for this endpoint


class Completions:
    path = "/completions"

    def parse(self, body: object) -> Ask | ApiError:
        error = check_body(COMPLETIONS_SPEC, body)
        if error is not None:
            return error
        assert isinstance(body, dict)
        error = _no_stream(body)
        if error is not None:
            return error
        prompt = body["prompt"]
        inputs = [""] if prompt is None else _inputs(prompt, "prompt", allow_empty_string=True)
        if isinstance(inputs, ApiError):
            return inputs
        n = body.get("n") or 1
        best_of = body.get("best_of")
        if best_of is not None and best_of < n:
            return invalid("best_of must be greater than or equal to n.", "best_of")
        max_tokens = body.get("max_tokens")
        return Ask(
            model=body["model"],
            text="\n".join(_input_text(i) for i in inputs),
            input_tokens=sum(_input_tokens(i) for i in inputs),
            max_output_tokens=_LEGACY_DEFAULT_MAX_TOKENS if max_tokens is None else max_tokens,
            outputs=len(inputs) * n,
            body=body,
            inputs=inputs,
        )

    def render(self, ask: Ask, rng: random.Random, misbehave: str = "") -> Answer:
        body = ask.body
        n = body.get("n") or 1
        logprobs = body.get("logprobs")
        choices = []
        output_tokens = 0
        for i, item in enumerate(ask.inputs):
            prompt = _input_text(item)
            out = _output(prompt, None, ask.max_output_tokens, misbehave, ask.answer_chars)
            text = out.text if out.text is not None else (out.refusal or "")  # no refusal field here
            tokens, finish_reason = out.tokens, out.finish_reason
            if body.get("echo"):
                text = prompt + text
            for j in range(n):
                choices.append(
                    {
                        "text": text,
                        "index": i * n + j,
                        "logprobs": None if logprobs is None else _legacy_logprobs(text, logprobs),
                        "finish_reason": finish_reason,
                    }
                )
                output_tokens += tokens
        completion = {
            "id": _hex_id(rng, "cmpl-", 29),
            "object": "text_completion",
            "created": int(time.time()),
            "model": ask.model,
            "choices": choices,
            "usage": {
                "prompt_tokens": ask.input_tokens,
                "completion_tokens": output_tokens,
                "total_tokens": ask.input_tokens + output_tokens,
            },
            "system_fingerprint": _SYSTEM_FINGERPRINT,
        }
        return Answer(_dumps(completion), ask.input_tokens, output_tokens)


def _legacy_logprobs(text: str, top: int) -> dict[str, Any]:
    """The legacy ``logprobs`` object, with the text cut into 4-character tokens, each certain."""
    tokens = [text[i : i + 4] for i in range(0, len(text), 4)]
    return {
        "tokens": tokens,
        "token_logprobs": [0.0] * len(tokens),
        "top_logprobs": [{t: 0.0} for t in tokens] if top > 0 else None,
        "text_offset": list(range(0, len(text), 4)),
    }


CHAT: Final = ChatCompletions()
