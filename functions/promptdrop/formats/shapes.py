"""One decoded request object (a Batch API line or the short form) → a :class:`Request` or a :class:`LineError`."""

from __future__ import annotations

import json
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, ValidationError, model_validator

from .parsed import LineError, Parsed, Request

__all__ = ["request_from_object"]

# Completion tokens assumed for the tokens/min estimate when a request sets no max_tokens; the
# real usage corrects the estimate after the call.
_DEFAULT_COMPLETION_ESTIMATE = 256


class _BatchLine(BaseModel):
    """An OpenAI Batch API input line."""

    model_config = ConfigDict(extra="forbid")
    custom_id: str | int | None = None
    method: Literal["POST"] = "POST"
    url: Literal["/v1/chat/completions", "/chat/completions"]
    body: dict[str, Any]


class _ShortLine(BaseModel):
    """The short form: a prompt or messages, plus any chat-completions parameter."""

    model_config = ConfigDict(extra="allow")
    custom_id: str | int | None = None
    prompt: str | None = None
    messages: list[dict[str, Any]] | None = None
    system: str | None = None
    model: str | None = None

    @model_validator(mode="after")
    def _one_of_prompt_or_messages(self) -> _ShortLine:
        if (self.prompt is None) == (self.messages is None):
            raise ValueError('give exactly one of "prompt" or "messages"')
        return self


def _estimate_cost(body: dict[str, Any], text_len: int) -> int:
    # ~4 characters a token for English text, plus a few tokens of framing per message: no
    # tokenizer download at run time. Corrected with the real usage once the call returns.
    completion = body.get("max_completion_tokens") or body.get("max_tokens") or _DEFAULT_COMPLETION_ESTIMATE
    n = body.get("n") or 1
    completion_budget = completion * n if isinstance(completion, int) and isinstance(n, int) else 0
    return text_len // 4 + 4 * len(body.get("messages") or ()) + completion_budget


def _finish(body: dict[str, Any], *, line: int, custom_id: str, default_model: str, text_len: int) -> Parsed:
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        return LineError(line, custom_id, 'the request body needs a non-empty "messages" list')
    if body.get("stream"):
        return LineError(line, custom_id, '"stream": true is not supported in a batch; remove it')
    body.setdefault("model", default_model)
    encoded = json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode()
    return Request(line, custom_id, encoded, _estimate_cost(body, text_len))


def request_from_object(obj: object, *, line: int, default_id: str, default_model: str, text_len: int) -> Parsed:
    """Validate one decoded request object (either line shape) into a :class:`Request`."""
    if not isinstance(obj, dict):
        return LineError(line, default_id, f"expected a JSON object, got {type(obj).__name__}")
    try:
        if "body" in obj or "url" in obj:
            batch = _BatchLine.model_validate(obj)
            custom_id = default_id if batch.custom_id is None else str(batch.custom_id)
            body = batch.body
        else:
            short = _ShortLine.model_validate(obj)
            custom_id = default_id if short.custom_id is None else str(short.custom_id)
            body = dict(short.model_extra or {})
            messages = short.messages if short.messages is not None else [{"role": "user", "content": short.prompt}]
            if short.system is not None:
                messages = [{"role": "system", "content": short.system}, *messages]
            body["messages"] = messages
            if short.model is not None:
                body["model"] = short.model
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "line"
        raw_id = obj.get("custom_id")
        return LineError(line, str(raw_id) if raw_id is not None else default_id, f"{where}: {first['msg']}")
    return _finish(body, line=line, custom_id=custom_id, default_model=default_model, text_len=text_len)
