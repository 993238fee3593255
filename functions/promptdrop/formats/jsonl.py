"""``.jsonl``: one request per line, streamed — and able to start mid-file at a line boundary."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import replace

from .parsed import LineError, Parsed
from .shapes import request_from_object

__all__ = ["custom_id_of", "parse_jsonl", "split_lines"]

_MAX_ERROR_SNIPPET = 200


def custom_id_of(raw: bytes, line: int) -> str:
    """The ``custom_id`` a ``.jsonl`` line will be parsed to (``line-<n>`` when it has none or does not parse)."""
    try:
        obj = json.loads(raw)
    except ValueError:
        return f"line-{line}"
    given = obj.get("custom_id") if isinstance(obj, dict) else None
    return f"line-{line}" if given is None else str(given)


async def split_lines(chunks: AsyncIterator[bytes], start: int = 0) -> AsyncIterator[tuple[int, bytes]]:
    """Split a byte stream on ``\\n`` into (byte offset, line) — a ``\\r`` before it dropped — holding one line at most.

    ``start`` is the offset of the stream's first byte in the file (a ranged read).
    """
    tail = b""
    offset = start
    async for chunk in chunks:
        parts = (tail + chunk).split(b"\n")
        tail = parts.pop()
        for part in parts:
            yield offset, part[:-1] if part.endswith(b"\r") else part
            offset += len(part) + 1
    if tail:
        yield offset, tail[:-1] if tail.endswith(b"\r") else tail


def _snippet(text: str) -> str:
    return text if len(text) <= _MAX_ERROR_SNIPPET else text[:_MAX_ERROR_SNIPPET] + "…"


async def parse_jsonl(
    chunks: AsyncIterator[bytes], default_model: str, start: int, first_line: int
) -> AsyncIterator[Parsed]:
    line = first_line - 1
    async for offset, raw in split_lines(chunks, start):
        line += 1
        if not raw.strip():
            continue
        default_id = f"line-{line}"
        try:
            text = raw.decode()
        except UnicodeDecodeError as exc:
            yield LineError(line, default_id, f"not valid UTF-8 (byte {exc.start})", offset)
            continue
        try:
            obj = json.loads(text)
        except json.JSONDecodeError as exc:
            message = f"not valid JSON: {exc.msg} at column {exc.colno}: {_snippet(text)}"
            yield LineError(line, default_id, message, offset)
            continue
        item = request_from_object(
            obj, line=line, default_id=default_id, default_model=default_model, text_len=len(text)
        )
        yield replace(item, offset=offset)
