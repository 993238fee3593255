"""Whole documents: ``.json`` (one request object or an array of them) and ``.txt`` (one prompt).

Both are read whole, so both have a size limit checked while reading: past it, the read stops
and the file fails (``too_large``) before anything is sent.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from typing import Any

from ..engine.request import Endpoint
from ..records import FailureCode
from .json_text import JsonRefused, lenient_end, nesting_too_deep, skip_whitespace, strict_decoder, syntax_error
from .jsonl import utf16_rejected
from .limits import MAX_NESTING, custom_id_problem
from .parsed import FileRejected, LineError, Parsed
from .shapes import request_from_object

__all__ = ["decode_whole", "parse_json", "read_all", "txt_request"]


async def read_all(chunks: AsyncIterator[bytes], *, limit: int, why: str) -> bytes:
    """The whole file, or :class:`FileRejected` (``too_large``) as soon as it passes ``limit`` bytes."""
    parts: list[bytes] = []
    size = 0
    async for chunk in chunks:
        size += len(chunk)
        if size > limit:
            aclose = getattr(chunks, "aclose", None)
            if aclose is not None:
                await aclose()  # stop the download now rather than when the generator is collected
            raise FileRejected(FailureCode.TOO_LARGE, f"the file is larger than {limit:,} bytes: {why}")
        parts.append(chunk)
    return b"".join(parts)


def decode_whole(data: bytes) -> str:
    if (rejected := utf16_rejected(data)) is not None:
        raise rejected
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise FileRejected(FailureCode.UNDECODABLE, f"the file is not valid UTF-8 text (byte {exc.start})") from None


class _Refused:
    """An item the strict decoder refused (NaN, a repeated key…): it fails alone."""

    __slots__ = ("reason",)

    def __init__(self, reason: str) -> None:
        self.reason = reason


def _syntax_error(text: str, index: int, message: str) -> FileRejected:
    line = text.count("\n", 0, index) + 1
    column = index - text.rfind("\n", 0, index)
    return FileRejected(FailureCode.INVALID_JSON, syntax_error(message, f"line {line} column {column}"))


class _Items:
    """Decodes a document's request objects (or its one object) each alone, so a refused item fails alone.

    A syntax error, or nesting past the limit, rejects the file: there is no line framing to
    resume after. Everything is decoded before any item is sent.
    """

    def __init__(self, text: str) -> None:
        self.text = text
        self.decoder = strict_decoder()

    def one(self, index: int) -> tuple[Any, int]:
        try:
            return self.decoder.raw_decode(self.text, index)
        except JsonRefused as exc:
            return _Refused(str(exc)), lenient_end(self.text, index)
        except json.JSONDecodeError as exc:
            raise _syntax_error(self.text, exc.pos, exc.msg) from None

    def array(self, index: int) -> tuple[list[Any], int]:
        """The items of the array whose ``[`` is just before ``index``; and the index after its ``]``."""
        text = self.text
        items: list[Any] = []
        index = skip_whitespace(text, index)
        if text.startswith("]", index):
            return items, index + 1
        while True:
            item, index = self.one(index)
            items.append(item)
            index = skip_whitespace(text, index)
            if text.startswith("]", index):
                return items, index + 1
            if not text.startswith(",", index):
                raise _syntax_error(text, index, "Expecting ',' delimiter")
            index = skip_whitespace(text, index + 1)

    def all(self) -> list[Any]:
        text = self.text
        start = skip_whitespace(text, 0)
        is_array = text.startswith("[", start)
        # An array adds one level to its items; the limit is per request.
        if (at := nesting_too_deep(text, MAX_NESTING + is_array)) is not None:
            line = text.count("\n", 0, at) + 1
            raise FileRejected(
                FailureCode.TOO_DEEP,
                f"arrays and objects nest deeper than {MAX_NESTING} levels in a request (line {line})",
            )
        if is_array:
            items, end = self.array(start + 1)
        else:
            item, end = self.one(start)
            items = [item]
        end = skip_whitespace(text, end)
        if end < len(text):
            raise _syntax_error(text, end, "Extra data")
        return items


def parse_json(text: str, default_model: str, endpoint: Endpoint = Endpoint.CHAT) -> Iterator[Parsed]:
    items = _Items(text).all()
    if not items:
        raise FileRejected(FailureCode.EMPTY, "the JSON array holds no requests")
    for i, item in enumerate(items, start=1):
        if isinstance(item, _Refused):
            yield LineError(i, f"item-{i}", item.reason)
            continue
        text_len = len(json.dumps(item)) if isinstance(item, dict) else 0
        yield request_from_object(
            item,
            line=i,
            default_id=f"item-{i}",
            default_model=default_model,
            text_len=text_len,
            default_endpoint=endpoint,
        )


def txt_request(prompt: str, *, key: str, default_model: str, endpoint: Endpoint = Endpoint.CHAT) -> Parsed:
    """A ``.txt``: the whole file is one user prompt, named by its key (or ``line-1`` when the key cannot be an id)."""
    default_id = key if custom_id_problem(key) is None else "line-1"
    return request_from_object(
        {"prompt": prompt},
        line=1,
        default_id=default_id,
        default_model=default_model,
        text_len=len(prompt),
        default_endpoint=endpoint,
    )
