"""The API endpoints: what each one reads from a request (:class:`Ask`) and the body it answers (:class:`Answer`).

Answers are deterministic functions of the prompt (``"Echo: "`` + its first 200 characters), so a test can
tell which answer belongs to which prompt. Token counts are estimates (4 characters a token), the same
ones the rate limiter charges.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass
from json.encoder import encode_basestring_ascii
from typing import Any, Final, Protocol

from infra.fake_openai.validation import CHAT_SPEC, ApiError, check_body, check_messages, invalid

__all__ = ["CHAT", "ECHO_CHARS", "ECHO_PREFIX", "Answer", "Ask", "Endpoint"]

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


@dataclass(frozen=True, slots=True)
class Answer:
    body: bytes
    input_tokens: int
    output_tokens: int


class Endpoint(Protocol):
    #: The path under ``/v1``.
    path: str

    def parse(self, body: object) -> Ask | ApiError: ...

    def render(self, ask: Ask, rng: random.Random) -> Answer: ...


def _text_of(content: object) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = [p.get("text") for p in content if isinstance(p, dict)]
        return "\n".join(p for p in parts if isinstance(p, str))
    return ""


def _no_stream(body: dict[str, Any]) -> ApiError | None:
    if body.get("stream"):
        return invalid("The fake OpenAI API does not stream: send 'stream': false or leave it out.", "stream")
    return None


# -- /v1/chat/completions --------------------------------------------------------------------------------------

# The chat.completion body as templates (what json.dumps of the equivalent dict gives, but cheaper: the hot path).
_CHOICE_TEMPLATE: Final = (
    '{"index":%d,"message":{"role":"assistant","content":%s,"refusal":null,"annotations":[]},'
    '"logprobs":null,"finish_reason":"%s"}'
)
_COMPLETION_TEMPLATE: Final = (
    '{"id":"chatcmpl-%029x","object":"chat.completion","created":%d,"model":%s,"choices":[%s],'
    '"usage":{"prompt_tokens":%d,"completion_tokens":%d,"total_tokens":%d,'
    '"prompt_tokens_details":{"cached_tokens":0,"audio_tokens":0},'
    '"completion_tokens_details":{"reasoning_tokens":0,"audio_tokens":0,'
    '"accepted_prediction_tokens":0,"rejected_prediction_tokens":0}},'
    f'"service_tier":"default","system_fingerprint":"{_SYSTEM_FINGERPRINT}"}}'
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
        return Ask(
            model=body["model"],
            text=last_user if last_user is not None else last_any,
            input_tokens=total // 4 + 4 * len(messages),
            max_output_tokens=body.get("max_completion_tokens") or body.get("max_tokens"),
            outputs=body.get("n") or 1,
            body=body,
        )

    def render(self, ask: Ask, rng: random.Random) -> Answer:
        content = ECHO_PREFIX + ask.text[:ECHO_CHARS]
        completion_tokens = len(content) // 4 + 1
        finish_reason = "stop"
        if ask.max_output_tokens is not None and ask.max_output_tokens < completion_tokens:
            content = content[: ask.max_output_tokens * 4]
            completion_tokens = ask.max_output_tokens
            finish_reason = "length"
        encoded = _encode_str(content)
        choices = ",".join(_CHOICE_TEMPLATE % (i, encoded, finish_reason) for i in range(ask.outputs))
        completion_tokens *= ask.outputs
        body = _COMPLETION_TEMPLATE % (
            rng.getrandbits(116),
            int(time.time()),
            _encode_str(ask.model),
            choices,
            ask.input_tokens,
            completion_tokens,
            ask.input_tokens + completion_tokens,
        )
        return Answer(body.encode(), ask.input_tokens, completion_tokens)


CHAT: Final = ChatCompletions()
