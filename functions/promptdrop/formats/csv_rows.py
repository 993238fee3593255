"""``.csv``: a ``prompt`` column, or data rows and a prompt template from the upload's job header."""

from __future__ import annotations

import csv
import io
import json
import string
from collections.abc import Iterator
from typing import Any

from .parsed import FileRejected, LineError, Parsed
from .shapes import request_from_object

__all__ = ["CSV_TEMPLATE_METADATA", "parse_csv"]

# The job header a .csv's prompt template comes in: the object's user metadata
# (``x-amz-meta-promptdrop-template``, e.g. ``aws s3 cp --metadata promptdrop-template=...``).
CSV_TEMPLATE_METADATA = "promptdrop-template"


def _compile_template(template: str, columns: list[str]) -> list[tuple[str, str | None]]:
    """A prompt template's (literal text, column name) parts; ``{column}`` only, ``{{``/``}}`` for braces."""
    try:
        parts = list(string.Formatter().parse(template))
    except ValueError as exc:
        raise FileRejected("invalid_template", f"the prompt template is not valid: {exc}") from None
    compiled: list[tuple[str, str | None]] = []
    for literal, name, spec, conversion in parts:
        if name is not None and (spec or conversion or name not in columns):
            field = "{" + name + (f"!{conversion}" if conversion else "") + (f":{spec}" if spec else "") + "}"
            why = "takes a column name alone" if name in columns else f"names no column of the .csv ({columns})"
            raise FileRejected("invalid_template", f"the prompt template's {field} {why}")
        compiled.append((literal, name))
    if not any(name for _, name in compiled):
        raise FileRejected("invalid_template", "the prompt template uses no column: every row would ask the same")
    return compiled


def _csv_value(column: str, cell: str) -> Any:
    """A parameter cell as JSON when it is JSON (``0.2``, ``true``, ``{"type": "json_object"}``), else text."""
    if column in ("custom_id", "model", "system"):
        return cell
    try:
        return json.loads(cell)
    except ValueError:
        return cell


def parse_csv(text: str, default_model: str, template: str | None = None) -> Iterator[Parsed]:
    reader = csv.DictReader(io.StringIO(text, newline=""))
    columns = [c for c in reader.fieldnames or [] if c]
    parts = _compile_template(template, columns) if template is not None else None
    used = {name for _, name in parts or () if name}
    if parts is None and "prompt" not in columns:
        raise FileRejected(
            "invalid_csv",
            f'a .csv needs a "prompt" column, or a prompt template in its {CSV_TEMPLATE_METADATA} metadata; '
            f"found {columns}",
        )
    for row_number, row in enumerate(reader, start=2):  # the header is line 1
        default_id = f"line-{row_number}"
        if not any(v for k, v in row.items() if k):
            continue  # a blank row
        custom_id = row.get("custom_id") or default_id
        if parts is not None:
            if not any(row.get(name) for name in used):
                yield LineError(row_number, custom_id, f"the template's columns {sorted(used)} are all empty")
                continue
            prompt = "".join(literal + (row.get(name) or "" if name else "") for literal, name in parts)
        else:
            prompt = row.get("prompt") or ""
        if not prompt.strip():
            yield LineError(row_number, custom_id, "empty prompt")
            continue
        fields = {k: _csv_value(k, v) for k, v in row.items() if k and v and k not in used and k != "prompt"}
        yield request_from_object(
            {**fields, "prompt": prompt},
            line=row_number,
            default_id=default_id,
            default_model=default_model,
            text_len=len(prompt),
        )
