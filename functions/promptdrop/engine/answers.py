"""Whether a 2xx body is an answer, what it used, why it stopped, its text — and whether the request
can use it (structured output valid, not cut off, not refused).

An answer is its endpoint's shape (:mod:`.endpoints`: its list, its ``object``) with something in
it: a Responses answer ``completed`` or ``incomplete`` (not ``queued``, ``in_progress``,
``failed``), a non-empty ``choices``/``data``/``results``/``output``, a ``model`` that is a string,
nested at most :data:`MAX_ANSWER_NESTING` deep. Anything else is a :class:`MalformedResponse`:
retried, then failed ``malformed_response``.
"""

from __future__ import annotations

import json
from enum import StrEnum
from typing import Any

from .endpoints import SPECS, EndpointSpec, spec_of, spec_of_answer
from .errors import MalformedResponse, UnusableAnswer
from .nesting import nesting_too_deep
from .readers import responses_refusal
from .request import Endpoint, Request
from .structured import ANY_OBJECT, canonical, validate

__all__ = [
    "MAX_ANSWER_NESTING",
    "AnswerCheck",
    "TextPolicy",
    "answer_text",
    "answer_text_of",
    "finish_reason",
    "parse_answer",
    "prompt_cache_of",
    "schema_of",
    "usage_of",
]

# Levels of arrays and objects in an answer, and in the JSON text of a structured answer. Far beyond
# real answers (a chat completion is 5 deep; Structured Outputs allow 10 levels of schema nesting);
# checked by a scan before decoding, so Python's recursion limit is never the judge.
MAX_ANSWER_NESTING = 100
# A Responses answer's statuses that are answers; "queued" and "in_progress" (a background
# response), "failed" and "cancelled" are not.
_ANSWERED = ("completed", "incomplete")


class TextPolicy(StrEnum):
    """What a plain-text answer that was cut off, filtered or refused is (``PROMPTDROP_TEXT_POLICY``)."""

    ACCEPT = "accept"  # an answer, as the API gave it (its finish_reason says what happened)
    STRICT = "strict"  # a failure: truncated, content_filtered, refused (retried like a bad structured answer)


def parse_answer(endpoint: Endpoint, content: bytes, status_code: int) -> dict[str, Any]:
    """A 2xx body as JSON, checked to be an answer of that endpoint (else :class:`MalformedResponse`, retried)."""
    try:
        text = content.decode()
    except UnicodeDecodeError as exc:
        raise MalformedResponse(f"the answer is not UTF-8: {exc}", status_code) from None
    if (at := nesting_too_deep(text, MAX_ANSWER_NESTING)) is not None:
        raise MalformedResponse(
            f"the answer nests deeper than {MAX_ANSWER_NESTING} levels (at character {at + 1})", status_code
        )
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise MalformedResponse(f"the answer is not JSON: {exc}", status_code) from None
    return answer_of(endpoint, data, status_code)


def answer_of(endpoint: Endpoint, data: object, status_code: int) -> dict[str, Any]:
    """Parsed JSON checked to be an answer of that endpoint (else :class:`MalformedResponse`) — a Batch API
    output line's body comes parsed already."""
    problem = _not_an_answer(spec_of(endpoint), data)
    if problem is not None:
        raise MalformedResponse(problem, status_code)
    return data  # type: ignore[return-value]  # a dict: _not_an_answer made sure


def _not_an_answer(spec: EndpointSpec, data: object) -> str | None:
    """Why a 2xx body is not an answer of ``spec``'s endpoint with something in it; None when it is one."""
    field, what = spec.answer_list, spec.answer_name
    if not isinstance(data, dict) or not isinstance(data.get(field), list):
        return f"the answer is not {what} (no {field} list)"
    # Its "object", when it gives one, must be the endpoint's (a Responses answer must give it: its
    # "output" list alone does not tell it apart).
    given = data.get("object", None if spec.endpoint is not Endpoint.RESPONSES else "")
    if spec.answer_object is not None and given is not None and given != spec.answer_object:
        return f"the answer is not {what} (object is {str(data.get('object'))[:40]!r})"
    if "model" in data and not isinstance(data["model"], str):
        return f"the answer's model is {type(data['model']).__name__}, not a string"
    status = data.get("status")
    if spec.endpoint is Endpoint.RESPONSES and status not in _ANSWERED:
        error = data.get("error")
        said = error.get("message") if isinstance(error, dict) else None
        return f"the response is {str(status)[:40]!r}, not an answer" + (f": {str(said)[:300]}" if said else "")
    if not data[field]:
        return f"the answer is {what} with an empty {field} list: nothing in it"
    return None


def usage_of(body: dict[str, Any]) -> tuple[int, int]:
    """(input tokens, output tokens) of an answer of any endpoint; (0, 0) when it reports none."""
    usage = body.get("usage")
    if not isinstance(usage, dict):
        return 0, 0
    spec = spec_of_answer(body) or SPECS[Endpoint.CHAT]
    given, answered = spec.usage_fields
    return _int(usage.get(given)), _int(usage.get(answered))


def prompt_cache_of(body: dict[str, Any]) -> tuple[int, int]:
    """(tokens read from the prompt cache, tokens written to it) of an answer: part of its input tokens,
    each billed at its own rate. Chat and completions report them in ``usage.prompt_tokens_details``,
    Responses in ``usage.input_tokens_details`` (``cached_tokens``, ``cache_write_tokens``); (0, 0) when
    the answer reports neither."""
    usage = body.get("usage")
    if not isinstance(usage, dict):
        return 0, 0
    details = usage.get("prompt_tokens_details") or usage.get("input_tokens_details")
    if not isinstance(details, dict):
        return 0, 0
    return _int(details.get("cached_tokens")), _int(details.get("cache_write_tokens"))


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
    """The answer's text (``.out.txt``, ``.out.csv``): its endpoint's (README, "Endpoints"); None when it has none."""
    spec = spec_of_answer(body)
    return None if spec is None else spec.text(body)


def answer_text_of(response_json: str) -> str | None:
    """:func:`answer_text` of an answer stored as JSON text (the journal's)."""
    try:
        body = json.loads(response_json)
    except (ValueError, RecursionError):
        return None
    return answer_text(body) if isinstance(body, dict) else None


def schema_of(endpoint: Endpoint, body: dict[str, Any]) -> str | None:
    """The schema a request's answer must match (canonical JSON), when it asks for JSON; else None.

    Chat: ``response_format`` ``{"type": "json_schema", "json_schema": {"schema": …}}`` or
    ``{"type": "json_object"}``; Responses: ``text.format`` ``{"type": "json_schema", "schema": …}``
    or ``{"type": "json_object"}``.
    """
    structured = spec_of(endpoint).structured
    if structured is None:
        return None
    fmt = _at(body, structured.format_at)
    kind = fmt.get("type") if isinstance(fmt, dict) else None
    if kind == "json_object":
        return ANY_OBJECT
    schema = _at(fmt, structured.schema_at)
    if kind == "json_schema" and isinstance(schema, dict):
        return canonical(schema)
    return None


def _at(value: object, path: tuple[str, ...]) -> object:
    for name in path:
        value = value.get(name) if isinstance(value, dict) else None
    return value


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
            texts: list[str | None] = [spec_of(endpoint).text(body)]
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
            raise UnusableAnswer("refused", f"the model refused: {refusal or responses_refusal(body)}", body)
        what = "cut off (max tokens)" if why == "truncated" else "stopped by the content filter"
        raise UnusableAnswer(why, f"the answer was {what}: finish_reason {finish_reason(body)!r}", body)


# A finish that makes an answer unusable → its failure code.
_FINISHES = {"length": "truncated", "content_filter": "content_filtered"}


def _responses_stop(body: dict[str, Any]) -> str | None:
    if responses_refusal(body) is not None:
        return "refused"
    if body.get("status") == "incomplete":
        return "truncated" if finish_reason(body) == "max_output_tokens" else "content_filtered"
    return None


def _matches(body: dict[str, Any], schema: str, text: object) -> None:
    if not isinstance(text, str):
        raise UnusableAnswer("invalid_output", "the answer has no text to read as JSON", body)
    if (at := nesting_too_deep(text, MAX_ANSWER_NESTING)) is not None:
        raise UnusableAnswer(
            "too_deep", f"the answer's JSON nests deeper than {MAX_ANSWER_NESTING} levels (at character {at + 1})", body
        )
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise UnusableAnswer("invalid_output", f"the answer is not valid JSON: {exc}", body) from None
    problem = validate(schema, value)
    if problem is not None:
        raise UnusableAnswer("invalid_output", f"the answer does not match the schema: {problem}", body)


def _int(value: object) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0
