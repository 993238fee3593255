"""``.csv``: a ``prompt`` column, or data rows and a prompt template from the upload's job header.

A column is sent only when it is part of the request: the prompt (the ``prompt`` column, or the
template's columns), ``custom_id``, ``model``, ``system``, ``endpoint`` and the parameters of the
file's endpoint (chat completions unless its upload names another). Every other column is never
sent: the API answers an unknown parameter with a 400, which would fail every row of a table of
data. The whole row — every column, sent or not — rides on the request (``Request.columns``; a
failing row's on its ``LineError``) to the ``.out.csv``.
"""

from __future__ import annotations

import csv
import io
import string
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

from ..engine.endpoints import parameters
from ..engine.request import Endpoint
from ..records import FailureCode
from .json_text import decode
from .limits import MAX_DOCUMENT_BYTES, MAX_REQUEST_BYTES, shown
from .parsed import FileRejected, LineError, Parsed
from .shapes import ENDPOINT_FIELD, custom_id_or_default, request_from_object

__all__ = ["CSV_TEMPLATE_METADATA", "parse_csv"]

# The job header a .csv's prompt template comes in: the object's user metadata
# (``x-amz-meta-promptdrop-template``, e.g. ``aws s3 cp --metadata promptdrop-template=...``).
CSV_TEMPLATE_METADATA = "promptdrop-template"


def _compile_template(template: str, columns: list[str]) -> list[tuple[str, str | None]]:
    """A prompt template's (literal text, column name) parts; ``{column}`` only, ``{{``/``}}`` for braces."""
    try:
        parts = list(string.Formatter().parse(template))
    except ValueError as exc:
        raise FileRejected(FailureCode.INVALID_TEMPLATE, f"the prompt template is not valid: {exc}") from None
    compiled: list[tuple[str, str | None]] = []
    for literal, name, spec, conversion in parts:
        if name is not None and (spec or conversion or name not in columns):
            field = "{" + name + (f"!{conversion}" if conversion else "") + (f":{spec}" if spec else "") + "}"
            why = "takes a column name alone" if name in columns else f"names no column of the .csv ({columns})"
            raise FileRejected(FailureCode.INVALID_TEMPLATE, f"the prompt template's {field} {why}")
        compiled.append((literal, name))
    if not any(name for _, name in compiled):
        raise FileRejected(
            FailureCode.INVALID_TEMPLATE, "the prompt template uses no column: every row would ask the same"
        )
    return compiled


def _csv_value(cell: str) -> Any:
    """A parameter cell as JSON when it is standard JSON (``0.2``, ``true``, ``{"type": "json_object"}``), else text."""
    try:
        return decode(cell)
    except ValueError:  # not JSON (or JSON the API refuses: NaN, 1e400…): sent as the text it is
        return cell


def _reader(text: str) -> Any:
    """A strict reader: a quote where none may be (``"a"b``), or a quoted cell never closed, raises —
    a lenient reader would run the rest of the file into one cell."""
    # The csv module's own field limit (131,072 characters by default) would raise mid-file; a
    # cell is bounded by the document's limit instead (and a request's, once it is a prompt).
    # Process-wide, and the same value every time.
    csv.field_size_limit(MAX_DOCUMENT_BYTES)
    return csv.reader(io.StringIO(text, newline=""), strict=True)


def _rows(text: str) -> Iterator[list[str]]:
    """The records of a .csv, blank lines skipped (they count as no row, as in ``csv.DictReader``)."""
    for record in _reader(text):
        if record:
            yield record


def _check_quoting(text: str) -> None:
    """Read every record once before any is sent: past broken quoting, every row boundary is a guess."""
    reader = _reader(text)
    rows = 0
    try:
        for record in reader:
            rows += bool(record)
    except csv.Error as exc:
        raise FileRejected(
            FailureCode.INVALID_CSV,
            f"row {rows + 1} (read up to line {reader.line_num}): {exc}. A cell holding a comma, a quote or a "
            'line break must be quoted, each quote inside it doubled ("say ""hi"""). Nothing was sent',
        ) from None


def _header(record: list[str], template: str | None) -> tuple[list[str], list[tuple[str, str | None]] | None]:
    names = [name.strip() for name in record]
    named = [name for name in names if name]
    twice = sorted({name for name in named if named.count(name) > 1})
    if twice:
        raise FileRejected(
            FailureCode.INVALID_CSV,
            f"the header names {', '.join(repr(shown(n, 60)) for n in twice)} more than once: "
            "each column needs its own name",
        )
    parts = _compile_template(template, named) if template is not None else None
    if parts is None and "prompt" not in named:
        raise FileRejected(
            FailureCode.INVALID_CSV,
            f'a .csv needs a "prompt" column, or a prompt template in its {CSV_TEMPLATE_METADATA} metadata; '
            f"found {[shown(n, 60) for n in named]}",
        )
    return names, parts


def parse_csv(
    text: str, default_model: str, template: str | None = None, endpoint: Endpoint = Endpoint.CHAT
) -> Iterator[Parsed]:
    """Each row → a request: the prompt, custom_id, model, system and parameter columns are sent,
    no other; the whole row is carried (``Request.columns``) to the outputs."""
    _check_quoting(text)
    records = _rows(text)
    header = next(records, None)
    if header is None:
        raise FileRejected(FailureCode.EMPTY, "the .csv holds no rows")
    names, parts = _header(header, template)
    used = {name for _, name in parts or () if name}
    prompt_columns = used if parts is not None else {"prompt"}
    # The parameter columns of the file's endpoint (a row naming another in an "endpoint" column
    # sends the same columns: its unknown ones fail that row with the reason).
    sent = (
        prompt_columns
        | {"custom_id", "model", "system", ENDPOINT_FIELD}
        | (parameters(endpoint) - {"messages", "model"})
    )
    width = len(names)
    produced = False
    for row_number, record in enumerate(records, start=2):  # the header is row 1
        if not any(record):
            continue  # a row of empty cells
        produced = True
        default_id = f"line-{row_number}"
        # The row as read, one cell per header column (a short row padded): for the .out.csv.
        cells = tuple(zip(names, [*record[:width], *[""] * (width - len(record))], strict=True))
        if any(record[width:]):  # its cells are shifted: not even its custom_id can be trusted
            yield LineError(
                row_number,
                default_id,
                f"the row has {len(record)} cells but the header {width} columns: quote a cell that holds a comma",
                columns=cells,
            )
            continue
        row = dict(zip(names, record, strict=False))
        custom_id, _ = custom_id_or_default(row.get("custom_id") or None, default_id)
        if parts is not None:
            if not any(row.get(name) for name in used):
                yield LineError(
                    row_number, custom_id, f"the template's columns {sorted(used)} are all empty", columns=cells
                )
                continue
            # Measured before it is built: a template naming an 800 KB cell 600 times would build
            # 480 MB only for the request's size check to refuse it.
            size = sum(len(literal) + (len(row.get(name) or "") if name else 0) for literal, name in parts)
            if size > MAX_REQUEST_BYTES:  # characters: at least as many bytes
                why = (
                    f"the template builds a prompt of {size:,} characters from this row; a request is at most "
                    f"{MAX_REQUEST_BYTES:,} bytes (1 MiB)"
                )
                yield LineError(row_number, custom_id, why, columns=cells)
                continue
            prompt = "".join(literal + (row.get(name) or "" if name else "") for literal, name in parts)
        else:
            prompt = row.get("prompt") or ""
        if not prompt.strip():
            yield LineError(row_number, custom_id, "empty prompt", columns=cells)
            continue
        fields: dict[str, Any] = {
            name: cell if name in ("custom_id", "model", "system", ENDPOINT_FIELD) else _csv_value(cell)
            for name, cell in row.items()
            if name in sent and name not in prompt_columns and cell
        }
        item = request_from_object(
            {**fields, "prompt": prompt},
            line=row_number,
            default_id=default_id,
            default_model=default_model,
            text_len=len(prompt),
            columns=cells,
            default_endpoint=endpoint,
        )
        yield replace(item, columns=cells) if isinstance(item, LineError) else item
    if not produced:
        raise FileRejected(FailureCode.EMPTY, "the .csv has a header but no rows")
