"""Input files → requests, streamed.

Every supported format (``.txt``, ``.jsonl``, ``.json``, ``.csv``) becomes a stream of
:class:`Request` (ready to send: the chat-completions body is serialized once, here) or
:class:`LineError` (that line fails alone; the rest of the file still runs). A whole-file problem
(unknown suffix, empty file, undecodable text file) raises :class:`FileRejected`.

``line`` is the 1-based position a user would look for (the physical line of a ``.jsonl``, the row
of a ``.csv`` counting the header, the item of a ``.json`` array) and it orders the outputs.
"""

from __future__ import annotations

import csv
import io
import json
import string
from collections.abc import AsyncGenerator, AsyncIterator, Iterator
from dataclasses import dataclass, replace
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, ValidationError, model_validator

from .engine.request import Request

__all__ = [
    "CSV_TEMPLATE_METADATA",
    "SUFFIXES",
    "FileRejected",
    "LineError",
    "Parsed",
    "Request",
    "custom_id_of",
    "parse_stream",
    "split_lines",
]

SUFFIXES = (".jsonl", ".json", ".txt", ".csv")
# The job header a .csv's prompt template comes in: the object's user metadata
# (``x-amz-meta-promptdrop-template``, e.g. ``aws s3 cp --metadata promptdrop-template=...``).
CSV_TEMPLATE_METADATA = "promptdrop-template"
_MAX_ERROR_SNIPPET = 200
# Completion tokens assumed for the tokens/min estimate when a request sets no max_tokens; the
# real usage corrects the estimate after the call.
_DEFAULT_COMPLETION_ESTIMATE = 256


class FileRejected(Exception):
    """The whole file cannot be processed (the reason is meant for the user)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(slots=True, frozen=True)
class LineError:
    """A line that could not be turned into a request; it fails alone."""

    line: int
    custom_id: str
    message: str
    offset: int = 0


Parsed = Request | LineError


class _BatchLine(BaseModel):
    """An OpenAI Batch API input line."""

    model_config = ConfigDict(extra="forbid")
    custom_id: str | int | None = None
    method: Literal["POST"] = "POST"
    url: Literal["/v1/chat/completions", "/chat/completions"]
    body: dict[str, Any]


class _ShortLine(BaseModel):
    """The short form: a prompt or messages, plus any chat-completions parameter."""

    model_config = ConfigDict(extra="allow")
    custom_id: str | int | None = None
    prompt: str | None = None
    messages: list[dict[str, Any]] | None = None
    system: str | None = None
    model: str | None = None

    @model_validator(mode="after")
    def _one_of_prompt_or_messages(self) -> _ShortLine:
        if (self.prompt is None) == (self.messages is None):
            raise ValueError('give exactly one of "prompt" or "messages"')
        return self


def _estimate_cost(body: dict[str, Any], text_len: int) -> int:
    # ~4 characters a token for English text, plus a few tokens of framing per message: no
    # tokenizer download at run time. Corrected with the real usage once the call returns.
    completion = body.get("max_completion_tokens") or body.get("max_tokens") or _DEFAULT_COMPLETION_ESTIMATE
    n = body.get("n") or 1
    completion_budget = completion * n if isinstance(completion, int) and isinstance(n, int) else 0
    return text_len // 4 + 4 * len(body.get("messages") or ()) + completion_budget


def _finish(body: dict[str, Any], *, line: int, custom_id: str, default_model: str, text_len: int) -> Parsed:
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        return LineError(line, custom_id, 'the request body needs a non-empty "messages" list')
    if body.get("stream"):
        return LineError(line, custom_id, '"stream": true is not supported in a batch; remove it')
    body.setdefault("model", default_model)
    encoded = json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode()
    return Request(line, custom_id, encoded, _estimate_cost(body, text_len))


def custom_id_of(raw: bytes, line: int) -> str:
    """The ``custom_id`` a ``.jsonl`` line will be parsed to (``line-<n>`` when it has none or does not parse)."""
    try:
        obj = json.loads(raw)
    except ValueError:
        return f"line-{line}"
    given = obj.get("custom_id") if isinstance(obj, dict) else None
    return f"line-{line}" if given is None else str(given)


def request_from_object(obj: object, *, line: int, default_id: str, default_model: str, text_len: int) -> Parsed:
    """Validate one decoded request object (either line shape) into a :class:`Request`."""
    if not isinstance(obj, dict):
        return LineError(line, default_id, f"expected a JSON object, got {type(obj).__name__}")
    try:
        if "body" in obj or "url" in obj:
            batch = _BatchLine.model_validate(obj)
            custom_id = default_id if batch.custom_id is None else str(batch.custom_id)
            body = batch.body
        else:
            short = _ShortLine.model_validate(obj)
            custom_id = default_id if short.custom_id is None else str(short.custom_id)
            body = dict(short.model_extra or {})
            messages = short.messages if short.messages is not None else [{"role": "user", "content": short.prompt}]
            if short.system is not None:
                messages = [{"role": "system", "content": short.system}, *messages]
            body["messages"] = messages
            if short.model is not None:
                body["model"] = short.model
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "line"
        raw_id = obj.get("custom_id")
        return LineError(line, str(raw_id) if raw_id is not None else default_id, f"{where}: {first['msg']}")
    return _finish(body, line=line, custom_id=custom_id, default_model=default_model, text_len=text_len)


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


async def _parse_jsonl(
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


async def _read_all(chunks: AsyncIterator[bytes]) -> bytes:
    return b"".join([chunk async for chunk in chunks])


def _decode_whole(data: bytes) -> str:
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise FileRejected("undecodable", f"the file is not valid UTF-8 text (byte {exc.start})") from None


def _parse_json(text: str, default_model: str) -> Iterator[Parsed]:
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


def _parse_csv(text: str, default_model: str, template: str | None = None) -> Iterator[Parsed]:
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
        async for item in _parse_jsonl(chunks, default_model, start, first_line):
            produced = True
            yield item
    elif suffix == ".txt":
        prompt = _decode_whole(await _read_all(chunks))
        if prompt.strip():
            produced = True
            yield request_from_object(
                {"prompt": prompt}, line=1, default_id=key, default_model=default_model, text_len=len(prompt)
            )
    elif suffix in (".json", ".csv"):
        text = _decode_whole(await _read_all(chunks))
        if text.strip():
            rows = _parse_json(text, default_model) if suffix == ".json" else _parse_csv(text, default_model, template)
            for item in rows:
                produced = True
                yield item
    else:
        raise FileRejected("unsupported_format", f"unknown suffix {suffix or '(none)'!r}; use one of {SUFFIXES}")
    if not produced and start == 0:
        raise FileRejected("empty", "the file holds no requests (empty or only blank lines)")
