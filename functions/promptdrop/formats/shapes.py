"""One decoded request object (a Batch API line or the short form) → a :class:`Request` or a :class:`LineError`.

Everything a line can get wrong is found here, before it is sent: its shape, its ``custom_id``
(type, length, characters), parameters the API does not know (short form), a body that cannot
be encoded (a lone surrogate) or is too large. A Batch API line's ``body`` is sent as given: the
API is the authority on it, and answers a bad one with a 400 for that line alone.
"""

from __future__ import annotations

import functools
import json
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, ValidationError, field_validator, model_validator

from .limits import MAX_REQUEST_BYTES, custom_id_problem, json_type, shown
from .parsed import LineError, Parsed, Request

__all__ = ["SHORT_FORM_FIELDS", "chat_parameters", "custom_id_or_default", "request_from_object"]

# Completion tokens assumed for the tokens/min estimate when a request sets no max_tokens; the
# real usage corrects the estimate after the call.
_DEFAULT_COMPLETION_ESTIMATE = 256
# Estimates above this are refused by any tokens/min limit anyway (request_too_large); capped so
# that a max_tokens of 10**300 stays an integer the limiter's float arithmetic can take.
_MAX_COST = 10**12
# Compact, UTF-8 as is; allow_nan=False: a NaN that came another way than the strict decoder (a
# redriven dead letter) is refused rather than sent as non-standard JSON. Built once: json.dumps
# with arguments builds an encoder per call.
_ENCODER = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False)
# The short form's own fields: they shape the request and are not parameters themselves.
SHORT_FORM_FIELDS = ("custom_id", "prompt", "messages", "system", "model")


@functools.cache
def chat_parameters() -> frozenset[str]:
    """Every chat-completions request parameter, as the installed OpenAI SDK declares them.

    Taken from the SDK's own request types, so a parameter the API adds arrives with an SDK
    upgrade instead of a hand-kept list; computed once, on first use (not at import: cold start).
    """
    from openai.types.chat.completion_create_params import (
        CompletionCreateParamsNonStreaming,
        CompletionCreateParamsStreaming,
    )

    names: set[str] = set()
    for params in (CompletionCreateParamsNonStreaming, CompletionCreateParamsStreaming):
        names |= params.__required_keys__ | params.__optional_keys__
    return frozenset(names)


class _BatchLine(BaseModel):
    """An OpenAI Batch API input line (its custom_id is checked apart: see :func:`custom_id_or_default`)."""

    model_config = ConfigDict(extra="forbid")
    custom_id: object = None
    method: Literal["POST"] = "POST"
    url: Literal["/v1/chat/completions", "/chat/completions"]
    body: dict[str, Any]


class _ShortLine(BaseModel):
    """The short form: a prompt or messages, plus chat-completions parameters (checked by name apart)."""

    model_config = ConfigDict(extra="allow")
    custom_id: object = None
    prompt: str | None = None
    messages: list[dict[str, Any]] | None = None
    system: str | None = None
    model: str | None = None

    @field_validator("prompt", "model")
    @classmethod
    def _not_blank(cls, value: str | None) -> str | None:
        if value is not None and not value.strip():
            raise ValueError("is empty")
        return value

    @model_validator(mode="after")
    def _one_of_prompt_or_messages(self) -> _ShortLine:
        if (self.prompt is None) == (self.messages is None):
            raise ValueError('give exactly one of "prompt" or "messages"')
        return self


def custom_id_or_default(given: object, default_id: str) -> tuple[str, str | None]:
    """(the custom_id to use, why the given one cannot be used — or None).

    A line whose ``custom_id`` is unusable fails under its default id (``line-<n>``…): the given
    one would break the journal's key or the dead letter's body, so it is only quoted in the message.
    """
    if given is None:
        return default_id, None
    if isinstance(given, bool) or not isinstance(given, str | int):
        return default_id, f"custom_id must be a string (or an integer), got {json_type(given)}"
    custom_id = str(given)
    problem = custom_id_problem(custom_id)
    return (default_id, problem) if problem else (custom_id, None)


def _estimate_cost(body: dict[str, Any], text_len: int) -> int:
    # ~4 characters a token for English text, plus a few tokens of framing per message: no
    # tokenizer download at run time. Corrected with the real usage once the call returns.
    completion = body.get("max_completion_tokens") or body.get("max_tokens") or _DEFAULT_COMPLETION_ESTIMATE
    n = body.get("n") or 1
    completion_budget = completion * n if isinstance(completion, int) and isinstance(n, int) else 0
    return min(_MAX_COST, text_len // 4 + 4 * len(body.get("messages") or ()) + max(0, completion_budget))


def _finish(
    body: dict[str, Any],
    *,
    line: int,
    custom_id: str,
    default_model: str,
    text_len: int,
    columns: tuple[tuple[str, str], ...],
) -> Parsed:
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        return LineError(line, custom_id, 'the request body needs a non-empty "messages" list')
    if body.get("stream"):
        return LineError(line, custom_id, '"stream": true is not supported in a batch; remove it')
    body.setdefault("model", default_model)
    try:
        encoded = _ENCODER.encode(body).encode()
    except UnicodeEncodeError as exc:
        char = exc.object[exc.start] if isinstance(exc.object, str) else "?"
        return LineError(
            line,
            custom_id,
            f"the request holds a lone surrogate (\\u{ord(char):04x}): an escape from \\ud800 to \\udfff "
            "must be half of a pair; it is not text the API can take",
        )
    except ValueError as exc:
        return LineError(line, custom_id, f"the request is not standard JSON: {exc}")
    if len(encoded) > MAX_REQUEST_BYTES:
        return LineError(
            line,
            custom_id,
            f"the request is {len(encoded):,} bytes; the limit is {MAX_REQUEST_BYTES:,} (1 MiB) a request",
        )
    model = body["model"]
    return Request(
        line,
        custom_id,
        encoded,
        _estimate_cost(body, text_len),
        columns=columns,
        model=model if isinstance(model, str) else "",  # the engine paces by it: no second decode
    )


def _unknown_parameters(names: list[str]) -> str:
    accepted = ", ".join(sorted(chat_parameters() - {"messages", "model"}))
    quoted = ", ".join(f'"{shown(name, 60)}"' for name in names[:5]) + (", …" if len(names) > 5 else "")
    what = "parameter" if len(names) == 1 else "parameters"
    return (
        f"unknown {what} {quoted}: not sent, the API refuses what is not a chat-completions parameter. "
        f"A line takes {', '.join(SHORT_FORM_FIELDS)} and the parameters {accepted}"
    )


def request_from_object(
    obj: object,
    *,
    line: int,
    default_id: str,
    default_model: str,
    text_len: int,
    columns: tuple[tuple[str, str], ...] = (),
) -> Parsed:
    """Validate one decoded request object (either line shape) into a :class:`Request`."""
    if not isinstance(obj, dict):
        return LineError(line, default_id, f"expected a JSON object, got {json_type(obj)}")
    custom_id, problem = custom_id_or_default(obj.get("custom_id"), default_id)
    if problem is not None:
        return LineError(line, custom_id, problem)
    try:
        if "body" in obj or "url" in obj:
            body = _BatchLine.model_validate(obj).body
        else:
            short = _ShortLine.model_validate(obj)
            body = dict(short.model_extra or {})
            parameters = chat_parameters()
            unknown = [name for name in body if name not in parameters]
            if unknown:
                return LineError(line, custom_id, _unknown_parameters(unknown))
            messages = short.messages if short.messages is not None else [{"role": "user", "content": short.prompt}]
            if short.system is not None:
                messages = [{"role": "system", "content": short.system}, *messages]
            body["messages"] = messages
            if short.model is not None:
                body["model"] = short.model
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(shown(str(p), 60) for p in first["loc"]) or "line"
        # Our own validators' messages without pydantic's "Value error, " prefix.
        cause = first.get("ctx", {}).get("error") if first["type"] == "value_error" else None
        return LineError(line, custom_id, f"{where}: {cause or first['msg']}")
    return _finish(
        body, line=line, custom_id=custom_id, default_model=default_model, text_len=text_len, columns=columns
    )
