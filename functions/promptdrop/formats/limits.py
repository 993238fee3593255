"""The limits every input is held to, checked while parsing: before anything is sent or paid for.

The README's "Limits" section lists each one and what happens past it; keep the two in step.
"""

from __future__ import annotations

import re

__all__ = [
    "MAX_CUSTOM_ID_BYTES",
    "MAX_DOCUMENT_BYTES",
    "MAX_NESTING",
    "MAX_REQUEST_BYTES",
    "custom_id_problem",
    "json_type",
    "shown",
]

# A .jsonl line, a .txt file and the serialized body of any request. A request is held in memory
# from parse to answer, and up to twice the concurrency of them at once (the queue and the
# workers): 200 MiB at the default concurrency of 100, of the function's 1,024 MB. 1 MiB is about
# 250,000 tokens of English text; images and documents larger than that belong behind a URL. A
# longer .jsonl line is never held whole (split_lines keeps its first MAX_REQUEST_BYTES + 1 bytes).
MAX_REQUEST_BYTES = 1024 * 1024

# A .json or .csv document is read whole (and a .csv read twice: its quoting is checked before
# any row is sent). 32 MiB of text is a few hundred MB once decoded into Python objects; larger
# files belong in a .jsonl, which is streamed and split into shards (PROMPTDROP_SHARD_BYTES).
MAX_DOCUMENT_BYTES = 32 * 1024 * 1024

# Levels of arrays and objects in one request. Real requests need a few (messages → content
# parts) to a few dozen (a JSON schema in response_format or tools; Structured Outputs allow 10
# levels of schema nesting). Checked before decoding, so Python's recursion limit is never the
# judge — and every later json.loads of the request (a dead letter, a redrive) stays far from it.
MAX_NESTING = 100

# DynamoDB sort keys are at most 1,024 bytes, and the journal's is ``REQ#<custom_id>`` plus an
# internal suffix for a repeated id (``#line-<n>``): half the key leaves room for both, and for
# any escaping the journal needs to keep user ids apart from its own.
MAX_CUSTOM_ID_BYTES = 512

# Characters a custom_id may not hold: control characters (C0, DEL, C1), surrogates (only a lone
# "\ud800"-style escape makes one) and U+FFFE/U+FFFF. SQS refuses a message body holding a C0
# control other than tab/LF/CR, a surrogate or U+FFFE/U+FFFF (SendMessage: #x9 | #xA | #xD |
# #x20-#xD7FF | #xE000-#xFFFD | #x10000-#x10FFFF), and an id is a key people type, grep and print:
# a control character in one is always a mistake, so the rule is the simpler "no control characters".
_REFUSED_IN_ID = re.compile("[\x00-\x1f\x7f-\x9f\ud800-\udfff\ufffe\uffff]")
# What user text shown in an error message is escaped of (the same set: messages go to SQS).
_UNSAFE_IN_MESSAGE = _REFUSED_IN_ID
_MAX_SHOWN = 200


def shown(text: str, limit: int = _MAX_SHOWN) -> str:
    """User text as quoted in an error message: at most ``limit`` characters, control characters escaped.

    Error messages go to the errors file, the journal and the DLQ: whatever the input held, the
    message stays short and holds no character SQS would refuse.
    """
    cut = text if len(text) <= limit else text[:limit] + "…"
    return _UNSAFE_IN_MESSAGE.sub(lambda m: f"\\u{ord(m.group()):04x}", cut)


def custom_id_problem(custom_id: str) -> str | None:
    """Why ``custom_id`` cannot be used, or None when it can."""
    if not custom_id:
        return "custom_id is empty: give a non-empty string, or leave custom_id out for the default"
    size = len(custom_id.encode("utf-8", "surrogatepass"))
    if size > MAX_CUSTOM_ID_BYTES:
        return (
            f"custom_id is {size:,} bytes in UTF-8; the limit is {MAX_CUSTOM_ID_BYTES} bytes "
            f"(it is part of a DynamoDB key): {shown(custom_id, 60)}"
        )
    if (found := _REFUSED_IN_ID.search(custom_id)) is not None:
        return (
            f"custom_id holds U+{ord(found.group()):04X} at character {found.start() + 1}: control characters, "
            "lone surrogates and U+FFFE/U+FFFF are not allowed in a custom_id"
        )
    return None


def json_type(value: object) -> str:
    """The JSON name of a decoded value's type, for messages ("an array", not "list")."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__
