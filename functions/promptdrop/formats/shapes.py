"""One decoded request object (a Batch API line or the short form) → a :class:`Request` or a :class:`LineError`.

Everything a line can get wrong is found here, before it is sent: its shape, its endpoint (a
Batch API line's ``url`` and ``method``; a short form's ``endpoint``), its ``custom_id`` (type,
length, characters), parameters its endpoint does not know (short form), a structured-output
schema that cannot be compiled, a body that cannot be encoded (a lone surrogate) or is too large.
A Batch API line's ``body`` is sent as given: the API is the authority on it, and answers a bad
one with a 400 for that line alone. What each endpoint takes is in :mod:`promptdrop.engine.endpoints`.
"""

from __future__ import annotations

import json
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError, field_validator

from ..engine.answers import schema_of
from ..engine.endpoints import EndpointSpec, parameters, spec_of
from ..engine.request import Endpoint
from ..engine.structured import SchemaError, check_schema
from ..records import FailureCode
from .limits import MAX_REQUEST_BYTES, custom_id_problem, json_type, shown
from .parsed import LineError, Parsed, Request

__all__ = [
    "ENDPOINT_FIELD",
    "ENDPOINT_METADATA",
    "MODEL_METADATA",
    "SHORT_FORM_FIELDS",
    "chat_parameters",
    "custom_id_or_default",
    "request_from_object",
]

# The short form's field naming a line's endpoint, and the upload metadata naming the file's (else
# PROMPTDROP_ENDPOINT, else chat).
ENDPOINT_FIELD = "endpoint"
ENDPOINT_METADATA = "promptdrop-endpoint"
# The upload metadata naming the model of the file's lines that name none, in PROMPTDROP_MODEL's
# place (an endpoint with a usual model of its own, embeddings say, keeps it, as with the setting).
MODEL_METADATA = "promptdrop-model"

# Compact, UTF-8 as is; allow_nan=False: a NaN that came another way than the strict decoder (a
# redriven dead letter) is refused rather than sent as non-standard JSON. Built once: json.dumps
# with arguments builds an encoder per call.
_ENCODER = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False)
# The short form's own fields: they shape the request and are not parameters themselves.
SHORT_FORM_FIELDS = ("custom_id", "prompt", "messages", "system", "model", ENDPOINT_FIELD)
_ENDPOINTS = ", ".join(e.value for e in Endpoint)


def chat_parameters() -> frozenset[str]:
    """Every chat-completions request parameter, as the installed OpenAI SDK declares them."""
    return parameters(Endpoint.CHAT)


class _BatchLine(BaseModel):
    """An OpenAI Batch API input line (its custom_id is checked apart: see :func:`custom_id_or_default`)."""

    model_config = ConfigDict(extra="forbid")
    custom_id: object = None
    method: object = "POST"
    url: object
    body: dict[str, Any]


class _ShortLine(BaseModel):
    """The short form: a prompt or messages, plus its endpoint's parameters (checked by name apart)."""

    model_config = ConfigDict(extra="allow")
    custom_id: object = None
    prompt: str | None = None
    messages: list[dict[str, Any]] | None = None
    system: str | None = None
    model: str | None = None
    endpoint: str | None = None

    @field_validator("prompt", "model")
    @classmethod
    def _not_blank(cls, value: str | None) -> str | None:
        if value is not None and not value.strip():
            raise ValueError("is empty")
        return value


def endpoint_problem(url: object, what: str) -> str:
    return f"{what} {shown(str(url), 80)!r} is not an endpoint promptdrop sends; use one of {_ENDPOINTS}"


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


def _finish(
    body: dict[str, Any],
    endpoint: Endpoint,
    *,
    line: int,
    custom_id: str,
    default_model: str,
    text_len: int,
    columns: tuple[tuple[str, str], ...],
) -> Parsed:
    spec = spec_of(endpoint)
    needed = spec.required
    if needed == "messages" and not (isinstance(body.get(needed), list) and body[needed]):
        return LineError(line, custom_id, 'the request body needs a non-empty "messages" list')
    if needed is not None and needed not in body:
        return LineError(line, custom_id, f'the request body needs "{needed}" ({endpoint.value})')
    refused = next((why for name, why in spec.refused if body.get(name)), None)
    if refused is not None:
        return LineError(line, custom_id, refused)
    model = body.setdefault("model", spec.default_model or default_model)
    schema = schema_of(endpoint, body)
    if schema is not None:
        try:
            check_schema(schema)  # compiled once per distinct schema, here rather than at the first answer
        except SchemaError as exc:
            return LineError(line, custom_id, str(exc), code=FailureCode.INVALID_SCHEMA)
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
    cost, output = spec.token_estimate(body, text_len)
    return Request(
        line,
        custom_id,
        encoded,
        cost,
        output_tokens=output,
        columns=columns,
        model=model if isinstance(model, str) else "",
        endpoint=endpoint,
        output_schema=schema,
    )


def _unknown_parameters(names: list[str], endpoint: Endpoint) -> str:
    own = {"messages", "model", "input", "prompt", "instructions"}
    accepted = ", ".join(sorted(parameters(endpoint) - own))
    quoted = ", ".join(f'"{shown(name, 60)}"' for name in names[:5]) + (", …" if len(names) > 5 else "")
    what = "parameter" if len(names) == 1 else "parameters"
    return (
        f"unknown {what} {quoted}: not sent, the API refuses what is not a {endpoint.value} parameter. "
        f"A line takes {', '.join(SHORT_FORM_FIELDS)} and the parameters {accepted}"
    )


def _batch_line(obj: dict[str, Any], line: int, custom_id: str) -> tuple[dict[str, Any], Endpoint] | LineError:
    batch = _BatchLine.model_validate(obj)
    if batch.method != "POST":
        return LineError(line, custom_id, f"method {shown(str(batch.method), 40)!r}: a Batch API line is a POST")
    endpoint = Endpoint.of(batch.url)
    if endpoint is None:
        return LineError(line, custom_id, endpoint_problem(batch.url, "url"))
    return batch.body, endpoint


def _short_line(
    obj: dict[str, Any], line: int, custom_id: str, default_endpoint: Endpoint
) -> tuple[dict[str, Any], Endpoint] | LineError:
    short = _ShortLine.model_validate(obj)
    endpoint = default_endpoint if short.endpoint is None else Endpoint.of(short.endpoint)
    if endpoint is None:
        return LineError(line, custom_id, endpoint_problem(short.endpoint, ENDPOINT_FIELD))
    body = dict(short.model_extra or {})
    known = parameters(endpoint)
    unknown = [name for name in body if name not in known]
    if unknown:
        return LineError(line, custom_id, _unknown_parameters(unknown, endpoint))
    # Responses, embeddings and moderations may take their own "input" (a list, say) instead of a prompt.
    spec = spec_of(endpoint)
    direct = spec.prompt_field == "input" and "input" in body
    given = [name for name, value in (("prompt", short.prompt), ("messages", short.messages)) if value is not None]
    if len(given) + direct != 1:
        return LineError(line, custom_id, f"line: give exactly one of {spec.prompt_fields}")
    if not direct or short.system is not None:
        fields, problem = _short_form_body(spec, short.prompt, short.messages, short.system)
        if problem is not None:
            return LineError(line, custom_id, problem)
        body.update({k: v for k, v in fields.items() if not (direct and k == "input")})
    if short.model is not None:
        body["model"] = short.model
    return body, endpoint


def _short_form_body(
    spec: EndpointSpec, prompt: str | None, messages: list[dict[str, Any]] | None, system: str | None
) -> tuple[dict[str, Any], str | None]:
    """The fields a short form's ``prompt``/``messages``/``system`` become on its endpoint; or why they cannot."""
    if spec.prompt_field == "messages":  # chat: the prompt is a user message, system a system message first
        turns = messages if messages is not None else [{"role": "user", "content": prompt}]
        return {"messages": [{"role": "system", "content": system}, *turns] if system is not None else turns}, None
    if spec.system_field is not None:  # Responses: messages are an input too, system its instructions
        body: dict[str, Any] = {spec.prompt_field: messages if messages is not None else prompt}
        if system is not None:
            body[spec.system_field] = system
        return body, None
    unused = [name for name, value in (("messages", messages), ("system", system)) if value is not None]
    if unused:
        return {}, f"{' and '.join(unused)}: not taken by {spec.endpoint.value} (give a prompt)"
    return {spec.prompt_field: prompt}, None


def request_from_object(
    obj: object,
    *,
    line: int,
    default_id: str,
    default_model: str,
    text_len: int,
    columns: tuple[tuple[str, str], ...] = (),
    default_endpoint: Endpoint = Endpoint.CHAT,
) -> Parsed:
    """Validate one decoded request object (either line shape) into a :class:`Request`.

    ``default_endpoint`` is a short form's when it names none (the file's); a Batch API line names its own.
    """
    if not isinstance(obj, dict):
        return LineError(line, default_id, f"expected a JSON object, got {json_type(obj)}")
    custom_id, problem = custom_id_or_default(obj.get("custom_id"), default_id)
    if problem is not None:
        return LineError(line, custom_id, problem)
    try:
        if "body" in obj or "url" in obj:
            shaped = _batch_line(obj, line, custom_id)
        else:
            shaped = _short_line(obj, line, custom_id, default_endpoint)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(shown(str(p), 60) for p in first["loc"]) or "line"
        # Our own validators' messages without pydantic's "Value error, " prefix.
        cause = first.get("ctx", {}).get("error") if first["type"] == "value_error" else None
        return LineError(line, custom_id, f"{where}: {cause or first['msg']}")
    if isinstance(shaped, LineError):
        return shaped
    body, endpoint = shaped
    return _finish(
        body, endpoint, line=line, custom_id=custom_id, default_model=default_model, text_len=text_len, columns=columns
    )
