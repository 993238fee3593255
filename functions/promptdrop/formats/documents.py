"""Whole documents: ``.json`` (one request object or an array of them) and ``.txt`` (one prompt)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator

from .parsed import FileRejected, Parsed
from .shapes import request_from_object

__all__ = ["decode_whole", "parse_json", "read_all"]


async def read_all(chunks: AsyncIterator[bytes]) -> bytes:
    return b"".join([chunk async for chunk in chunks])


def decode_whole(data: bytes) -> str:
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise FileRejected("undecodable", f"the file is not valid UTF-8 text (byte {exc.start})") from None


def parse_json(text: str, default_model: str) -> Iterator[Parsed]:
    # A JSON document has no line framing to fail alone on, so a syntax error rejects the file;
    # an invalid item still fails alone. Use .jsonl for files too large to hold in memory.
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise FileRejected(
            "invalid_json", f"not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}"
        ) from None
    items = doc if isinstance(doc, list) else [doc]
    if not items:
        raise FileRejected("empty", "the JSON array holds no requests")
    for i, item in enumerate(items, start=1):
        text_len = len(json.dumps(item)) if isinstance(item, dict) else 0
        yield request_from_object(item, line=i, default_id=f"item-{i}", default_model=default_model, text_len=text_len)
