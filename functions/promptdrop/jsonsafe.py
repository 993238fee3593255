"""JSON text that every store downstream accepts.

``json.dumps(..., ensure_ascii=False)`` writes a lone surrogate (``"\\ud800"`` in the input decodes
to one) as is, which no UTF-8 encoder accepts, and U+FFFE/U+FFFF, which SQS refuses. Those few
are written as ``\\u`` escapes instead: the same JSON value, and everything else stays readable.
"""

from __future__ import annotations

import json
import re
from typing import Any

__all__ = ["dumps"]

# SQS accepts #x9 | #xA | #xD | #x20-#xD7FF | #xE000-#xFFFD | #x10000-#x10FFFF; JSON escapes the
# control characters itself.
_UNSAFE = re.compile("[\ud800-\udfff\ufffe\uffff]")


def _escape(match: re.Match[str]) -> str:
    return f"\\u{ord(match.group()):04x}"


# Built once: ``json.dumps`` with any option builds a new encoder per call, about half of its cost
# for an answer's body (this runs once per answer).
_COMPACT = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))


def dumps(value: Any, *, indent: int | None = None) -> str:
    text = json.dumps(value, ensure_ascii=False, indent=indent) if indent else _COMPACT.encode(value)
    return text if text.isascii() else _UNSAFE.sub(_escape, text)  # isascii: a fraction of the search
