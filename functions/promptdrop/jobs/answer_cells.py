"""What a spreadsheet shows of an answer: the top-level fields of a structured answer, one cell
each. The answer's text, per endpoint, is :func:`promptdrop.engine.answers.answer_text`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

__all__ = ["field_cells", "schema_fields"]


def schema_fields(body: Mapping[str, Any]) -> list[str]:
    """The top-level properties of the JSON schema a request asked its answer to follow, in schema
    order: chat ``response_format`` (``{"type": "json_schema", "json_schema": {"schema": …}}``) or
    Responses ``text.format`` (``{"type": "json_schema", "schema": …}``); none for other requests."""
    fmt = body.get("response_format")
    text = body.get("text")
    if not isinstance(fmt, dict) and isinstance(text, dict):
        fmt = text.get("format")
    if not isinstance(fmt, dict) or fmt.get("type") != "json_schema":
        return []
    spec = fmt.get("json_schema") if isinstance(fmt.get("json_schema"), dict) else fmt
    schema = spec.get("schema") if isinstance(spec, dict) else None
    properties = schema.get("properties") if isinstance(schema, dict) else None
    return [name for name in properties if isinstance(name, str)] if isinstance(properties, dict) else []


def field_cells(text: str | None, fields: Sequence[str]) -> list[str]:
    """One cell per field from a JSON-object answer: text as is, other values as JSON, null or
    missing as empty. An answer that is not a JSON object fills none (its text is in ``answer``)."""
    if not fields:
        return []
    try:
        value = json.loads(text) if text else None
    except ValueError:
        value = None
    if not isinstance(value, dict):
        return [""] * len(fields)
    return [_cell(value.get(name)) for name in fields]


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False)
