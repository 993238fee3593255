"""Each endpoint's answer, in one place: is it one (its shape), what it used (``usage``), why it
stopped, its text — and whether the request can use it (structured output valid, not cut off,
not refused).

The shapes, by endpoint: chat and (legacy) completions answer ``choices`` (``finish_reason``
each), Responses an ``object: "response"`` with an ``output`` list (``status``, and
``incomplete_details.reason`` when incomplete), embeddings ``data``, moderations ``results``.
Usage: ``prompt_tokens``/``completion_tokens`` (chat, completions), ``input_tokens``/
``output_tokens`` (Responses), ``prompt_tokens`` alone (embeddings), none (moderations).
"""

from __future__ import annotations

import json
from enum import StrEnum
from typing import Any

from .errors import MalformedResponse, UnusableAnswer
from .request import Endpoint, Request
from .structured import ANY_OBJECT, canonical, validate

__all__ = ["AnswerCheck", "TextPolicy", "answer_text", "finish_reason", "parse_answer", "schema_of", "usage_of"]

# The list each endpoint's answer must hold, and what that answer is called in an error.
_SHAPES = {
    Endpoint.CHAT: ("choices", "a chat completion"),
    Endpoint.RESPONSES: ("output", "a response"),
    Endpoint.EMBEDDINGS: ("data", "an embeddings list"),
    Endpoint.COMPLETIONS: ("choices", "a text completion"),
    Endpoint.MODERATIONS: ("results", "a moderation"),
}
# An answer's "object" → its endpoint (moderations have none), for text read back from the journal.
_OBJECTS = {
    "chat.completion": Endpoint.CHAT,
    "response": Endpoint.RESPONSES,
    "list": Endpoint.EMBEDDINGS,
    "text_completion": Endpoint.COMPLETIONS,
}


class TextPolicy(StrEnum):
    """What a plain-text answer that was cut off, filtered or refused is (``PROMPTDROP_TEXT_POLICY``)."""

    ACCEPT = "accept"  # an answer, as the API gave it (its finish_reason says what happened)
    STRICT = "strict"  # a failure: truncated, content_filtered, refused (retried like a bad structured answer)


def parse_answer(endpoint: Endpoint, content: bytes, status_code: int) -> dict[str, Any]:
    """A 2xx body as JSON, checked to be that endpoint's answer (else :class:`MalformedResponse`, retried)."""
    try:
        data = json.loads(content)
    except ValueError as exc:
        raise MalformedResponse(f"the answer is not JSON: {exc}", status_code) from None
    field, what = _SHAPES[endpoint]
    if not isinstance(data, dict) or not isinstance(data.get(field), list):
        raise MalformedResponse(f"the answer is not {what} (no {field} list)", status_code)
    if endpoint is Endpoint.RESPONSES and data.get("object") != "response":
        raise MalformedResponse(f"the answer is not {what} (object is {data.get('object')!r})", status_code)
    return data


def usage_of(body: dict[str, Any]) -> tuple[int, int]:
    """(input tokens, output tokens) of an answer of any endpoint; (0, 0) when it reports none."""
    usage = body.get("usage")
    if not isinstance(usage, dict):
        return 0, 0
    if "input_tokens" in usage:  # Responses
        return _int(usage.get("input_tokens")), _int(usage.get("output_tokens"))
    return _int(usage.get("prompt_tokens")), _int(usage.get("completion_tokens"))


def finish_reason(body: dict[str, Any]) -> str | None:
    """Why the (first) answer stopped: ``stop``, ``length``…; Responses: ``completed`` or the incomplete reason."""
    if body.get("object") == "response":
        details = body.get("incomplete_details")
        if body.get("status") == "incomplete" and isinstance(details, dict):
            return str(details.get("reason") or "incomplete")
        status = body.get("status")
        return status if isinstance(status, str) else None
    choices = body.get("choices")
    if isinstance(choices, list) and choices and isinstance(choices[0], dict):
        reason = choices[0].get("finish_reason")
        return reason if isinstance(reason, str) else None
    return None


def answer_text(body: dict[str, Any]) -> str | None:
    """The answer's text (``.out.txt``): chat's message content, Responses' ``output_text``, a completion's text."""
    endpoint = _OBJECTS.get(str(body.get("object")))
    if endpoint is Endpoint.RESPONSES:
        return _output_text(body)
    choices = body.get("choices")
    if endpoint not in (Endpoint.CHAT, Endpoint.COMPLETIONS) or not isinstance(choices, list) or not choices:
        return None
    first = choices[0] if isinstance(choices[0], dict) else {}
    text = first.get("message", {}).get("content") if endpoint is Endpoint.CHAT else first.get("text")
    return text if isinstance(text, str) else None


def schema_of(endpoint: Endpoint, body: dict[str, Any]) -> str | None:
    """The schema a request's answer must match (canonical JSON), when it asks for JSON; else None.

    Chat: ``response_format`` ``{"type": "json_schema", "json_schema": {"schema": …}}`` or
    ``{"type": "json_object"}``; Responses: ``text.format`` ``{"type": "json_schema", "schema": …}``
    or ``{"type": "json_object"}``.
    """
    if endpoint is Endpoint.CHAT:
        fmt = body.get("response_format")
        spec = fmt.get("json_schema") if isinstance(fmt, dict) else None
    elif endpoint is Endpoint.RESPONSES:
        text = body.get("text")
        fmt = text.get("format") if isinstance(text, dict) else None
        spec = fmt
    else:
        return None
    kind = fmt.get("type") if isinstance(fmt, dict) else None
    if kind == "json_object":
        return ANY_OBJECT
    if kind == "json_schema" and isinstance(spec, dict) and isinstance(spec.get("schema"), dict):
        return canonical(spec["schema"])
    return None


class AnswerCheck:
    """Whether an answer is one the request can use; :meth:`check` raises :class:`UnusableAnswer` if not."""

    __slots__ = ("_strict",)

    def __init__(self, text_policy: TextPolicy = TextPolicy.ACCEPT) -> None:
        self._strict = text_policy is TextPolicy.STRICT

    def check(self, request: Request, body: dict[str, Any]) -> None:
        schema = request.output_schema
        if schema is None and not self._strict:
            return
        endpoint = request.endpoint
        if endpoint is Endpoint.RESPONSES:
            self._stopped(body, _responses_stop(body))
            texts: list[str | None] = [_output_text(body)]
        elif endpoint in (Endpoint.CHAT, Endpoint.COMPLETIONS):
            texts = []
            for item in body["choices"]:
                choice = item if isinstance(item, dict) else {}
                message = choice.get("message") if endpoint is Endpoint.CHAT else None
                refusal = message.get("refusal") if isinstance(message, dict) else None
                self._stopped(body, "refused" if refusal else _FINISHES.get(str(choice.get("finish_reason"))), refusal)
                texts.append(message.get("content") if isinstance(message, dict) else choice.get("text"))
        else:
            return  # embeddings and moderations: nothing to cut off or refuse
        if schema is not None:
            for text in texts:
                _matches(body, schema, text)

    @staticmethod
    def _stopped(body: dict[str, Any], why: str | None, refusal: object = None) -> None:
        if why is None:
            return
        if why == "refused":
            raise UnusableAnswer("refused", f"the model refused: {refusal or _refusal(body)}", body)
        what = "cut off (max tokens)" if why == "truncated" else "stopped by the content filter"
        raise UnusableAnswer(why, f"the answer was {what}: finish_reason {finish_reason(body)!r}", body)


# A finish that makes an answer unusable → its failure code.
_FINISHES = {"length": "truncated", "content_filter": "content_filtered"}


def _responses_stop(body: dict[str, Any]) -> str | None:
    if _refusal(body) is not None:
        return "refused"
    if body.get("status") == "incomplete":
        return "truncated" if finish_reason(body) == "max_output_tokens" else "content_filtered"
    return None


def _matches(body: dict[str, Any], schema: str, text: object) -> None:
    if not isinstance(text, str):
        raise UnusableAnswer("invalid_output", "the answer has no text to read as JSON", body)
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise UnusableAnswer("invalid_output", f"the answer is not valid JSON: {exc}", body) from None
    problem = validate(schema, value)
    if problem is not None:
        raise UnusableAnswer("invalid_output", f"the answer does not match the schema: {problem}", body)


def _content(body: dict[str, Any]) -> list[dict[str, Any]]:
    return [
        part
        for item in body.get("output") or ()
        if isinstance(item, dict) and item.get("type") == "message"
        for part in item.get("content") or ()
        if isinstance(part, dict)
    ]


def _output_text(body: dict[str, Any]) -> str | None:
    """What the SDK calls ``output_text``: every ``output_text`` part of every message, joined."""
    parts = [p["text"] for p in _content(body) if p.get("type") == "output_text" and isinstance(p.get("text"), str)]
    return "".join(parts) if parts else None


def _refusal(body: dict[str, Any]) -> str | None:
    for part in _content(body):
        if part.get("type") == "refusal":
            return str(part.get("refusal") or "refused")
    return None


def _int(value: object) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0
