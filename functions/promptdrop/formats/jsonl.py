"""``.jsonl``: one request per line, streamed — and able to start mid-file at a line boundary."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import replace
from typing import Any

from ..engine.request import Endpoint
from ..records import FailureCode
from .json_text import JsonRefused, decode, syntax_error
from .limits import MAX_REQUEST_BYTES, shown
from .parsed import FileRejected, LineError, Parsed
from .shapes import custom_id_or_default, request_from_object

__all__ = ["UTF8_BOM", "custom_id_of", "parse_jsonl", "split_lines", "utf16_rejected"]

UTF8_BOM = b"\xef\xbb\xbf"
_UTF16_BOMS = (b"\xff\xfe", b"\xfe\xff")  # UTF-32's start with one of them too


def utf16_rejected(data: bytes) -> FileRejected | None:
    """A file that starts with a UTF-16 (or UTF-32) byte-order mark: the whole file is in the wrong encoding."""
    if data.startswith(_UTF16_BOMS):
        return FileRejected(
            FailureCode.UNDECODABLE,
            "the file is UTF-16 or UTF-32 (it starts with that byte-order mark): save it as UTF-8",
        )
    return None


def _decoded(raw: bytes, line: int) -> tuple[Any, str | None, str]:
    """(the line's JSON value, None) or (None, why it cannot be read); and its text."""
    if len(raw) > MAX_REQUEST_BYTES:
        limit = f"{MAX_REQUEST_BYTES:,} bytes (1 MiB)"
        return None, f"the line is longer than {limit}, the limit of one request: it was not parsed", ""
    if line == 1:
        raw = raw.removeprefix(UTF8_BOM)  # as editors on Windows save UTF-8; the .csv path strips it too
    try:
        text = raw.decode()
    except UnicodeDecodeError as exc:
        return None, f"not valid UTF-8 (byte {exc.start})", ""
    try:
        return decode(text), None, text
    except JsonRefused as exc:
        return None, str(exc), text
    except json.JSONDecodeError as exc:
        return None, f"{syntax_error(exc.msg, f'column {exc.colno}')}: {shown(text)}", text


def custom_id_of(raw: bytes, line: int) -> str:
    """The ``custom_id`` a ``.jsonl`` line will be parsed to (``line-<n>`` when it has none, or none usable).

    Used to find repeated ids across shards before any shard runs: it must agree with the parser.
    """
    obj, _, _ = _decoded(raw, line)
    given = obj.get("custom_id") if isinstance(obj, dict) else None
    return custom_id_or_default(given, f"line-{line}")[0]


async def split_lines(
    chunks: AsyncIterator[bytes], start: int = 0, *, max_bytes: int = MAX_REQUEST_BYTES
) -> AsyncIterator[tuple[int, bytes]]:
    """Split a byte stream on ``\\n`` into (byte offset, line) — a ``\\r`` before it dropped — holding one line at most.

    ``start`` is the offset of the stream's first byte in the file (a ranged read). A line longer
    than ``max_bytes`` is cut to its first ``max_bytes + 1`` bytes (the rest is read and dropped,
    never held): a 2 GB file without a newline costs 1 MiB of memory, and its line fails alone.
    """
    keep = max_bytes + 1
    head = b""  # the current line's first bytes, at most ``keep`` of them
    size = 0  # the current line's length so far (what its next line's offset is counted from)
    offset = start
    async for chunk in chunks:
        *complete, rest = chunk.split(b"\n")
        for part in complete:
            line = head + part[: keep - len(head)] if size else part[:keep]
            size += len(part)
            yield offset, line[:-1] if line.endswith(b"\r") and len(line) == size else line
            offset += size + 1
            head, size = b"", 0
        if rest:
            head += rest[: keep - len(head)]
            size += len(rest)
    if size:
        yield offset, head[:-1] if head.endswith(b"\r") and len(head) == size else head


async def parse_jsonl(
    chunks: AsyncIterator[bytes], default_model: str, start: int, first_line: int, endpoint: Endpoint = Endpoint.CHAT
) -> AsyncIterator[Parsed]:
    line = first_line - 1
    async for offset, raw in split_lines(chunks, start):
        line += 1
        if offset == 0 and (rejected := utf16_rejected(raw)) is not None:
            raise rejected  # line 1: nothing was sent yet
        if not raw.strip() or (line == 1 and raw.strip() == UTF8_BOM):
            continue
        default_id = f"line-{line}"
        obj, problem, text = _decoded(raw, line)
        if problem is not None:
            yield LineError(line, default_id, problem, offset)
            continue
        item = request_from_object(
            obj,
            line=line,
            default_id=default_id,
            default_model=default_model,
            text_len=len(text),
            default_endpoint=endpoint,
        )
        yield replace(item, offset=offset)
