"""``.out.csv``: a ``.csv`` input's rows with their answers — the file a spreadsheet user opens.

Every input column in input order (the header's names as the parser reads them: trimmed), then
``answer`` (the answer's text), ``status`` (``SUCCEEDED``/``FAILED``), ``error`` (``code: message``)
and, when rows asked for a JSON schema, one ``answer.<property>`` column per top-level property of
it (schema order; the union over the file's schemas, in order of first appearance). A name an
input column already has gets a leading ``_`` (``_status``). One row per journaled line, in input
order — a failed row and a row that never parsed too, with the cells it had.

UTF-8 with a byte-order mark: Excel reads a UTF-8 CSV as such only with one (without, it guesses the
legacy code page and garbles every accent); Python's ``utf-8-sig``, pandas
(``encoding="utf-8-sig"``), LibreOffice and promptdrop's own ``.csv`` input all skip it. Rows end in
``\\r\\n`` (RFC 4180, the ``csv`` module's default). Cells are written as they are: a cell starting
with ``=``, ``+``, ``-``, ``@``, a tab or a carriage return is a formula to a spreadsheet (README,
"Outputs"). Not neutralised (a leading ``'``): that would change the data — ``-5``, ``+47 22 …`` —
for every program that reads the file, to guard only the spreadsheets that open it carelessly.

Rows are spooled as JSON in an :class:`~promptdrop.outputs.OrderedSpool` while the journal is read
(in key order) and formatted once the header is known: memory does not grow with the file.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from typing import Any

from ..engine.answers import answer_text_of
from ..outputs import OrderedSpool
from ..records import RequestRecord
from .answer_cells import field_cells

__all__ = ["BOM", "CsvTable"]

BOM = "\ufeff"
OWN_COLUMNS = ("answer", "status", "error")
FIELD_PREFIX = "answer."


class CsvTable:
    """Collects rows in any order; :meth:`lines` gives the file, in input order."""

    def __init__(self) -> None:
        self._spool = OrderedSpool()
        self._names: list[str] | None = None  # the input's header (every row has the same)
        self._fields: dict[str, None] = {}  # schema properties, in order of first appearance

    def close(self) -> None:
        self._spool.close()

    def add(self, record: RequestRecord, columns: str | None, response_json: str | None) -> None:
        """One journaled line: ``columns`` its stored cells (JSON text), ``response_json`` its answer."""
        stored: dict[str, Any] = json.loads(columns) if columns else {}
        cells = [(str(name), str(cell)) for name, cell in stored.get("cells") or ()]
        fields = [str(name) for name in stored.get("fields") or ()]
        if cells and self._names is None:
            self._names = [name for name, _ in cells]
        for name in fields:
            self._fields.setdefault(name)
        text = answer_text_of(response_json) if record.succeeded and response_json is not None else None
        error = record.error or {}
        row = {
            "cells": [cell for _, cell in cells],
            "answer": text or "",
            "status": str(record.status),
            "error": "" if record.succeeded else f"{error.get('code')}: {error.get('message')}",
            "fields": dict(zip(fields, field_cells(text, fields), strict=True)),
        }
        self._spool.add(record.line, json.dumps(row, ensure_ascii=False).encode() + b"\n")

    def header(self) -> list[str]:
        names = self._names or []
        taken = set(names)
        own = [_unique(name, taken) for name in (*OWN_COLUMNS, *(FIELD_PREFIX + f for f in self._fields))]
        return [*names, *own]

    def lines(self) -> Iterator[bytes]:
        """The file's bytes: the BOM and the header, then a row per line in input order."""
        width = len(self._names or [])
        fields = list(self._fields)
        buffer = io.StringIO()
        writer = csv.writer(buffer)

        def take() -> bytes:
            data = buffer.getvalue().encode()
            buffer.seek(0)
            buffer.truncate()
            return data

        buffer.write(BOM)
        writer.writerow(self.header())
        yield take()
        for data in self._spool.sorted_lines():
            row = json.loads(data)
            cells: list[str] = row["cells"][:width]
            cells += [""] * (width - len(cells))
            values = row["fields"]
            writer.writerow([*cells, row["answer"], row["status"], row["error"], *(values.get(f, "") for f in fields)])
            yield take()


def _unique(name: str, taken: set[str]) -> str:
    while name in taken:
        name = "_" + name
    taken.add(name)
    return name
