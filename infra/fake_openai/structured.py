"""Structured outputs: the JSON a request asks for, checked as the API checks it, and answers that conform or not.

A chat request's ``response_format`` (``{"type": "json_schema", "json_schema": {"name", "schema", "strict"}}`` or
``{"type": "json_object"}``) and a Responses request's ``text.format`` (the same, flat: ``{"type": "json_schema",
"name", "schema", "strict"}``) become an :class:`OutputFormat`. :func:`instance` builds a small instance valid
against the schema (every property, the first enum value, one array item, numbers and lengths within their
bounds); :func:`mismatch` builds valid JSON that violates it, for the ``[[output:schema_mismatch]]`` marker.

Strict schemas are held to the API's strict-mode rules that a schema most often breaks: an object root, and
every object with ``additionalProperties: false`` and all its properties ``required``.
"""

from __future__ import annotations

import re
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final, Literal

from openai.types.responses.response_format_text_json_schema_config_param import (
    ResponseFormatTextJSONSchemaConfigParam,
)
from openai.types.responses.response_text_config_param import ResponseTextConfigParam
from openai.types.shared_params.response_format_json_schema import JSONSchema

from infra.fake_openai.validation import ApiError, invalid, invalid_type, invalid_value, json_kind, missing

__all__ = ["OutputFormat", "chat_format", "instance", "json_word_error", "mismatch", "responses_format"]

_FORMAT_TYPES: Final = ("json_object", "json_schema", "text")
_NAME_RE: Final = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")
_JSON_SCHEMA_KEYS: Final = frozenset(typing.get_type_hints(JSONSchema))
_TEXT_KEYS: Final = frozenset(typing.get_type_hints(ResponseTextConfigParam))
_TEXT_FORMAT_KEYS: Final = frozenset(typing.get_type_hints(ResponseFormatTextJSONSchemaConfigParam))
_MAX_DEPTH: Final = 32

_STRING_FORMATS: Final = {
    "date-time": "2024-01-01T00:00:00Z",
    "date": "2024-01-01",
    "time": "00:00:00",
    "duration": "P1D",
    "email": "echo@example.com",
    "hostname": "example.com",
    "ipv4": "192.0.2.1",
    "ipv6": "2001:db8::1",
    "uri": "https://example.com/",
    "uuid": "00000000-0000-4000-8000-000000000000",
}


@dataclass(frozen=True, slots=True)
class OutputFormat:
    """What shape of answer a request asked for."""

    kind: Literal["json_object", "json_schema"]
    schema: Mapping[str, Any] | None = None
    name: str = ""
    strict: bool = False


# -- reading and checking the request's format -------------------------------------------------------------------


def _format_type(value: Mapping[str, Any], where: str) -> str | ApiError:
    kind = value.get("type")
    if kind is None:
        return missing(f"{where}.type")
    if not isinstance(kind, str):
        return invalid_type(f"{where}.type", ("string",), kind)
    if kind not in _FORMAT_TYPES:
        return invalid_value(f"{where}.type", kind, _FORMAT_TYPES)
    return kind


def _schema_format(spec: Mapping[str, Any], where: str, param: str) -> OutputFormat | ApiError:
    """``name``, ``schema`` and ``strict`` of a json_schema format found at ``where``."""
    name = spec.get("name")
    if name is None:
        return missing(f"{where}.name")
    if not isinstance(name, str):
        return invalid_type(f"{where}.name", ("string",), name)
    if not _NAME_RE.match(name):
        return invalid(
            f"Invalid '{where}.name': string does not match pattern. Expected a string that matches the pattern "
            f"'^[a-zA-Z0-9_-]+$' of at most 64 characters.",
            f"{where}.name",
            "invalid_value",
        )
    schema = spec.get("schema")
    if schema is not None and not isinstance(schema, dict):
        return invalid_type(f"{where}.schema", ("object",), schema)
    strict = spec.get("strict")
    if strict is not None and not isinstance(strict, bool):
        return invalid_type(f"{where}.strict", ("boolean",), strict)
    if strict and schema is not None:
        error = _strict_error(schema, name, param)
        if error is not None:
            return error
    return OutputFormat("json_schema", schema, name, bool(strict))


def _unknown(value: Mapping[str, Any], known: frozenset[str], where: str) -> ApiError | None:
    for key in value:
        if key not in known:
            return invalid(f"Unknown parameter: '{where}.{key}'.", f"{where}.{key}", "unknown_parameter")
    return None


def chat_format(response_format: Mapping[str, Any]) -> OutputFormat | ApiError | None:
    """A chat ``response_format`` (already known to be an object); ``None`` for plain text."""
    kind = _format_type(response_format, "response_format")
    if isinstance(kind, ApiError):
        return kind
    if kind == "text":
        return None
    if kind == "json_object":
        return OutputFormat("json_object")
    spec = response_format.get("json_schema")
    if spec is None:
        return missing("response_format.json_schema")
    if not isinstance(spec, dict):
        return invalid_type("response_format.json_schema", ("object",), spec)
    return _unknown(spec, _JSON_SCHEMA_KEYS, "response_format.json_schema") or _schema_format(
        spec, "response_format.json_schema", "response_format"
    )


def responses_format(text: Mapping[str, Any]) -> OutputFormat | ApiError | None:
    """A Responses ``text`` config (already known to be an object); ``None`` for plain text."""
    error = _unknown(text, _TEXT_KEYS, "text")
    if error is not None:
        return error
    fmt = text.get("format")
    if fmt is None:
        return None
    if not isinstance(fmt, dict):
        return invalid_type("text.format", ("object",), fmt)
    kind = _format_type(fmt, "text.format")
    if isinstance(kind, ApiError):
        return kind
    if kind == "text":
        return None
    if kind == "json_object":
        return OutputFormat("json_object")
    error = _unknown(fmt, _TEXT_FORMAT_KEYS, "text.format")
    if error is not None:
        return error
    if fmt.get("schema") is None:
        return missing("text.format.schema")
    return _schema_format(fmt, "text.format", "text.format.schema")


def json_word_error(texts: list[str], *, responses: bool) -> ApiError | None:
    """json_object needs the word "json" somewhere in the messages, or the API refuses the request."""
    if any("json" in text.lower() for text in texts):
        return None
    if responses:
        return invalid(
            "Response input messages must contain the word 'json' in some form to use 'text.format' of type "
            "'json_object'.",
            "input",
        )
    return invalid(
        "'messages' must contain the word 'json' in some form, to use 'response_format' of type 'json_object'.",
        "messages",
    )


def _strict_error(schema: Mapping[str, Any], name: str, param: str) -> ApiError | None:
    """The first strict-mode rule ``schema`` breaks, as the API words it."""

    def refuse(detail: str) -> ApiError:
        return invalid(f"Invalid schema for response_format '{name}': {detail}", param)

    root_type = schema.get("type")
    if root_type != "object":
        return refuse(f"schema must be a JSON Schema of 'type: \"object\"', got 'type: \"{root_type}\"'.")
    stack: list[tuple[tuple[str, ...], Any]] = [((), schema)]
    while stack:
        context, node = stack.pop()
        if not isinstance(node, dict):
            continue
        properties = node.get("properties")
        if node.get("type") == "object" or isinstance(properties, dict):
            if node.get("additionalProperties") is not False:
                return refuse(
                    f"In context={context!r}, 'additionalProperties' is required to be supplied and to be false."
                )
            required = node.get("required")
            keys = list(properties) if isinstance(properties, dict) else []
            absent = [k for k in keys if not isinstance(required, list) or k not in required]
            if absent:
                return refuse(
                    f"In context={context!r}, 'required' is required to be supplied and to be an array including "
                    f"every key in properties. Missing '{absent[0]}'."
                )
        children: list[tuple[tuple[str, ...], Any]] = []
        for key in ("properties", "$defs", "definitions"):
            group = node.get(key)
            if isinstance(group, dict):
                children += [((*context, key, child), sub) for child, sub in group.items()]
        items = node.get("items")
        if isinstance(items, dict):
            children.append(((*context, "items"), items))
        for key in ("anyOf", "allOf"):
            group = node.get(key)
            if isinstance(group, list):
                children += [((*context, key, str(i)), sub) for i, sub in enumerate(group)]
        stack += reversed(children)
    return None


# -- answers ------------------------------------------------------------------------------------------------------


def _resolve(ref: str, root: Mapping[str, Any]) -> Any:
    """A local ``$ref`` (``#``, ``#/$defs/X``, ``#/definitions/X``, any ``#/a/b`` path); ``{}`` if unknown."""
    node: Any = root
    path = ref.removeprefix("#").strip("/")
    for part in path.split("/") if path else []:
        if not isinstance(node, dict):
            return {}
        node = node.get(part.replace("~1", "/").replace("~0", "~"), {})
    return node


def _number(schema: Mapping[str, Any], integer: bool) -> int | float:
    low = schema.get("minimum")
    high = schema.get("maximum")
    ex_low = schema.get("exclusiveMinimum")
    ex_high = schema.get("exclusiveMaximum")
    value: float = 0
    if isinstance(low, int | float):
        value = max(value, low)
    if isinstance(ex_low, int | float) and value <= ex_low:
        value = ex_low + (1 if integer else 0.5)
    if isinstance(high, int | float):
        value = min(value, high)
    if isinstance(ex_high, int | float) and value >= ex_high:
        value = ex_high - (1 if integer else 0.5)
    step = schema.get("multipleOf")
    if isinstance(step, int | float) and step > 0:
        value = -(-value // step) * step  # the first multiple at or above
    if integer:
        return int(value)
    return value


def _string(schema: Mapping[str, Any], echo: str) -> str:
    fmt = schema.get("format")
    value = _STRING_FORMATS.get(fmt, echo) if isinstance(fmt, str) else echo
    high = schema.get("maxLength")
    if isinstance(high, int):
        value = value[:high]
    low = schema.get("minLength")
    if isinstance(low, int) and len(value) < low:
        value += "x" * (low - len(value))
    return value


def instance(schema: Any, echo: str, root: Mapping[str, Any] | None = None, depth: int = 0) -> Any:
    """A small value valid against ``schema``, its strings ``echo`` (the fake's answer text) where free."""
    if not isinstance(schema, dict) or depth > _MAX_DEPTH:
        return echo
    root = schema if root is None else root
    if "$ref" in schema:
        return instance(_resolve(str(schema["$ref"]), root), echo, root, depth + 1)
    if "const" in schema:
        return schema["const"]
    enum = schema.get("enum")
    if isinstance(enum, list) and enum:
        return enum[0]
    for key in ("anyOf", "oneOf"):
        options = schema.get(key)
        if isinstance(options, list) and options:
            return instance(options[0], echo, root, depth + 1)
    all_of = schema.get("allOf")
    if isinstance(all_of, list) and all_of:
        merged = {k: v for k, v in schema.items() if k != "allOf"}
        for part in all_of:
            if isinstance(part, dict):
                merged = {**merged, **part}
        return instance(merged, echo, root, depth + 1)
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "null")
    if kind is None:
        kind = "object" if "properties" in schema else "array" if "items" in schema else "string"
    if kind == "object":
        properties = schema.get("properties")
        value = {k: instance(v, echo, root, depth + 1) for k, v in (properties or {}).items()}
        for key in schema.get("required") or ():
            value.setdefault(key, echo)
        return value
    if kind == "array":
        prefix = schema.get("prefixItems")
        items = [instance(s, echo, root, depth + 1) for s in prefix] if isinstance(prefix, list) else []
        wanted = max(1, schema.get("minItems") or 0, len(items))
        cap = schema.get("maxItems")
        if isinstance(cap, int):
            wanted = min(wanted, cap)
        while len(items) < wanted:
            items.append(instance(schema.get("items", {}), echo, root, depth + 1))
        return items[:wanted]
    if kind == "integer":
        return _number(schema, integer=True)
    if kind == "number":
        return _number(schema, integer=False)
    if kind == "boolean":
        return True
    if kind == "null":
        return None
    return _string(schema, echo)


def mismatch(fmt: OutputFormat | None, echo: str) -> Any:
    """Valid JSON that does not match what was asked: a required property missing, or the wrong type."""
    if fmt is None or fmt.kind == "json_object" or fmt.schema is None:
        return [echo]  # an array where an object was asked for
    value = instance(fmt.schema, echo)
    if isinstance(value, dict):
        required = fmt.schema.get("required")
        if isinstance(required, list) and required and required[0] in value:
            del value[required[0]]
            return value
        return [value]
    return {"unexpected": value} if json_kind(value) != "object" else [value]
