"""Input files → requests, streamed.

Every supported format (``.txt``, ``.jsonl``, ``.json``, ``.csv``) becomes a stream of
:class:`Request` (ready to send: the chat-completions body is serialized once, here) or
:class:`LineError` (that line fails alone; the rest of the file still runs). A whole-file problem
(unknown suffix, empty file, undecodable text file, a document over its size limit, a .json with a
syntax error, a .csv with broken quoting) raises :class:`FileRejected` — before anything is sent:
the only thing found mid-file is a .jsonl that changed while being read (``object_changed``).
The limits are in ``limits``.

``line`` is the 1-based position a user would look for (the physical line of a ``.jsonl``, the row
of a ``.csv`` counting the header, the item of a ``.json`` array) and it orders the outputs.

One module per format (``jsonl``, ``documents`` for ``.json``/``.txt``, ``csv_rows``); ``shapes``
turns one decoded object into a request, for all of them; ``json_text`` is the strict JSON they
all read with; ``limits`` holds every limit and the ``custom_id`` rules.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator

from ..engine.request import Endpoint
from ..records import FailureCode
from .csv_rows import CSV_TEMPLATE_METADATA, parse_csv
from .documents import decode_whole, parse_json, read_all, txt_request
from .jsonl import custom_id_of, parse_jsonl, split_lines
from .limits import MAX_CUSTOM_ID_BYTES, MAX_DOCUMENT_BYTES, MAX_NESTING, MAX_REQUEST_BYTES, shown
from .parsed import FileRejected, LineError, Parsed, Request
from .shapes import ENDPOINT_METADATA, MODEL_METADATA, chat_parameters, request_from_object

__all__ = [
    "CSV_TEMPLATE_METADATA",
    "ENDPOINT_METADATA",
    "MAX_CUSTOM_ID_BYTES",
    "MAX_DOCUMENT_BYTES",
    "MAX_NESTING",
    "MAX_REQUEST_BYTES",
    "MODEL_METADATA",
    "SUFFIXES",
    "FileRejected",
    "LineError",
    "Parsed",
    "Request",
    "chat_parameters",
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
    endpoint: str = Endpoint.CHAT.value,
) -> AsyncGenerator[Parsed]:
    """Turn an input file's byte chunks into requests and line errors, in input order.

    Raises :class:`FileRejected` for problems that doom the whole file. Only ``.jsonl`` is parsed
    incrementally — and can start mid-file: ``chunks`` then begin at byte ``start``, which is the
    start of line ``first_line`` — the other formats are one prompt (``.txt``) or small documents.
    ``template`` is a ``.csv``'s prompt template (its job header), when it has one; ``endpoint``
    the file's default endpoint for short-form lines (its ``promptdrop-endpoint`` metadata, else the
    setting): one promptdrop does not send rejects the file (``invalid_endpoint``).
    """
    suffix = suffix.lower()
    file_endpoint = Endpoint.of(endpoint)
    if file_endpoint is None:
        raise FileRejected(
            FailureCode.INVALID_ENDPOINT,
            f"{ENDPOINT_METADATA} {shown(endpoint, 80)!r} is not an endpoint promptdrop sends; "
            f"use one of {', '.join(e.value for e in Endpoint)}",
        )
    produced = False
    if suffix == ".jsonl":
        async for item in parse_jsonl(chunks, default_model, start, first_line, file_endpoint):
            produced = True
            yield item
    elif suffix == ".txt":
        why = "a .txt is one prompt, and a request is at most 1 MiB"
        prompt = decode_whole(await read_all(chunks, limit=MAX_REQUEST_BYTES, why=why))
        if prompt.strip():
            produced = True
            yield txt_request(prompt, key=key, default_model=default_model, endpoint=file_endpoint)
    elif suffix in (".json", ".csv"):
        why = f"{suffix} files are read whole; use .jsonl for larger files (streamed, and split into shards)"
        text = decode_whole(await read_all(chunks, limit=MAX_DOCUMENT_BYTES, why=why))
        if text.strip():
            rows = (
                parse_json(text, default_model, file_endpoint)
                if suffix == ".json"
                else parse_csv(text, default_model, template, file_endpoint)
            )
            for item in rows:
                produced = True
                yield item
    else:
        raise FileRejected(
            FailureCode.UNSUPPORTED_FORMAT, f"unknown suffix {shown(suffix, 40) or '(none)'!r}; use one of {SUFFIXES}"
        )
    if not produced and start == 0:
        raise FileRejected(FailureCode.EMPTY, "the file holds no requests (empty or only blank lines)")
