"""Output files in input order, built from the journal with memory that does not grow with the file.

Journal records arrive in key order; each formatted line is appended to a temporary file and only
its (line, offset, length) kept in compact arrays, then copied out sorted by input line.
"""

from __future__ import annotations

import json
import tempfile
from array import array
from collections.abc import Iterator
from typing import IO, Any

from .prices import estimate_cost_usd  # re-exported: the summary's and the CLI's estimate
from .records import RequestRecord

__all__ = ["OrderedSpool", "estimate_cost_usd", "line_of", "output_line"]


_TEXT = json.JSONEncoder(ensure_ascii=False)  # built once: json.dumps with an option builds one per call


def output_line(job_id: str, record: RequestRecord, response_json: str | None) -> bytes:
    """One line of ``.out.jsonl`` / ``.errors.jsonl`` in the OpenAI Batch API output format; its ``id``
    ends in its input line (:func:`line_of`)."""
    head: dict[str, Any] = {"id": f"batch_req_{job_id[:12]}_{record.line}", "custom_id": record.custom_id}
    prefix = _TEXT.encode(head)[:-1]
    if response_json is not None:
        meta = json.dumps({"status_code": record.status_code, "request_id": record.request_id})[:-1]
        response = f'{meta}, "body": {response_json}}}'  # embedded as stored: not parsed again
    else:
        response = "null"
    error = "null"
    if not record.succeeded:
        err = record.error or {}
        error = _TEXT.encode({"code": err.get("code"), "message": err.get("message")})
    return f'{prefix}, "response": {response}, "error": {error}}}\n'.encode()


def line_of(output_id: object) -> int | None:
    """The input line of an output line, read from its ``id`` (:func:`output_line`); None if it has none."""
    tail = output_id.rpartition("_")[2] if isinstance(output_id, str) else ""
    return int(tail) if tail.isascii() and tail.isdigit() else None


class OrderedSpool:
    """Collects byte lines in any order; writes them out sorted by their input line."""

    def __init__(self) -> None:
        self._file: IO[bytes] = tempfile.TemporaryFile()  # noqa: SIM115  # closed by close()
        self._lines = array("q")
        self._offsets = array("q")
        self._lengths = array("q")
        self._end = 0

    def __len__(self) -> int:
        return len(self._lines)

    def add(self, line: int, data: bytes) -> None:
        self._file.write(data)
        self._lines.append(line)
        self._offsets.append(self._end)
        self._lengths.append(len(data))
        self._end += len(data)

    def sorted_lines(self) -> Iterator[bytes]:
        """The lines in input order, read back one at a time (no second copy on disk).

        Input lines are numbered 1..N, each at most once here, so the order is an index by line
        number — 8 bytes a line, no sort — rather than a sorted list of Python ints (~70 bytes a line).
        """
        self._file.flush()
        lines, offsets, lengths = self._lines, self._offsets, self._lengths
        position = array("q", [-1]) * (max(lines, default=0) + 1)
        more: dict[int, list[int]] = {}  # a second item for one line: never expected, never dropped
        for i, line in enumerate(lines):
            if position[line] == -1:
                position[line] = i
            else:
                more.setdefault(line, []).append(i)
        for line, first in enumerate(position):
            for i in (first, *more.get(line, ())) if first != -1 else ():
                self._file.seek(offsets[i])
                yield self._file.read(lengths[i])

    def close(self) -> None:
        self._file.close()
