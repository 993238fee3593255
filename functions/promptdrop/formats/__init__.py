"""Input files → requests, streamed.

Every supported format (``.txt``, ``.jsonl``, ``.json``, ``.csv``) becomes a stream of
:class:`Request` (ready to send: the chat-completions body is serialized once, here) or
:class:`LineError` (that line fails alone; the rest of the file still runs). A whole-file problem
(unknown suffix, empty file, undecodable text file) raises :class:`FileRejected`.

``line`` is the 1-based position a user would look for (the physical line of a ``.jsonl``, the row
of a ``.csv`` counting the header, the item of a ``.json`` array) and it orders the outputs.

One module per format (``jsonl``, ``documents`` for ``.json``/``.txt``, ``csv_rows``); ``shapes``
turns one decoded object into a request, for all of them.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator

from .csv_rows import CSV_TEMPLATE_METADATA, parse_csv
from .documents import decode_whole, parse_json, read_all
from .jsonl import custom_id_of, parse_jsonl, split_lines
from .parsed import FileRejected, LineError, Parsed, Request
from .shapes import request_from_object

__all__ = [
    "CSV_TEMPLATE_METADATA",
    "SUFFIXES",
    "FileRejected",
    "LineError",
    "Parsed",
    "Request",
    "custom_id_of",
    "parse_stream",
    "request_from_object",
    "split_lines",
]

SUFFIXES = (".jsonl", ".json", ".txt", ".csv")


async def parse_stream(
    suffix: str,
    chunks: AsyncIterator[bytes],
    *,
    key: str,
    default_model: str,
    start: int = 0,
    first_line: int = 1,
    template: str | None = None,
) -> AsyncGenerator[Parsed]:
    """Turn an input file's byte chunks into requests and line errors, in input order.

    Raises :class:`FileRejected` for problems that doom the whole file. Only ``.jsonl`` is parsed
    incrementally — and can start mid-file: ``chunks`` then begin at byte ``start``, which is the
    start of line ``first_line`` — the other formats are one prompt (``.txt``) or small documents.
    ``template`` is a ``.csv``'s prompt template (its job header), when it has one.
    """
    suffix = suffix.lower()
    produced = False
    if suffix == ".jsonl":
        async for item in parse_jsonl(chunks, default_model, start, first_line):
            produced = True
            yield item
    elif suffix == ".txt":
        prompt = decode_whole(await read_all(chunks))
        if prompt.strip():
            produced = True
            yield request_from_object(
                {"prompt": prompt}, line=1, default_id=key, default_model=default_model, text_len=len(prompt)
            )
    elif suffix in (".json", ".csv"):
        text = decode_whole(await read_all(chunks))
        if text.strip():
            rows = parse_json(text, default_model) if suffix == ".json" else parse_csv(text, default_model, template)
            for item in rows:
                produced = True
                yield item
    else:
        raise FileRejected("unsupported_format", f"unknown suffix {suffix or '(none)'!r}; use one of {SUFFIXES}")
    if not produced and start == 0:
        raise FileRejected("empty", "the file holds no requests (empty or only blank lines)")
