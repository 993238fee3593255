"""JSON as promptdrop reads it: standard JSON only, of bounded depth, each key once.

Python's ``json`` accepts more than the standard, and what it accepts it sends on: ``NaN``,
``Infinity`` and ``-Infinity`` (and ``1e400``, decoded to ``inf``) come back out as non-standard
JSON the API refuses; a line nested 100,000 deep raises ``RecursionError``; an integer of 5,000
digits raises ``ValueError``; a key given twice silently keeps its last value. Here each of those
is a :class:`JsonRefused` with a message for the user, so the line (or the item) fails alone.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

from ..engine.nesting import nesting_too_deep  # the engine bounds answers the same way
from .limits import MAX_NESTING, shown

__all__ = [
    "JsonRefused",
    "decode",
    "lenient_end",
    "nesting_too_deep",
    "skip_whitespace",
    "strict_decoder",
    "syntax_error",
]


def syntax_error(message: str, where: str) -> str:
    """The decoder's complaint (``JSONDecodeError.msg``), then ``where`` (``column 12``): some of its
    messages end in "at" ("Unterminated string starting at", "Invalid control character at")."""
    return f"not valid JSON: {message.removesuffix(' at')} at {where}"


class JsonRefused(ValueError):
    """Parsable by Python, but not JSON promptdrop will send (the message says why)."""


def _refuse_constant(name: str) -> Any:
    raise JsonRefused(f"{name} is not valid JSON and the API refuses it: use a number or null")


def _finite_float(text: str) -> float:
    value = float(text)
    if math.isinf(value):
        raise JsonRefused(
            f"the number {shown(text, 40)} is too large for a 64-bit float (it would be sent as Infinity)"
        )
    return value


def _bounded_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:  # longer than Python's int/str conversion limit (4,300 digits by default)
        raise JsonRefused(f"an integer of {len(text):,} digits is too long: no parameter takes one") from None
    # Past 64 bits no parameter takes it either, and a ``max_tokens`` of 10**400 would overflow the
    # cost guard's float arithmetic: the line fails here, with its reason.
    if not -(2**63) <= value < 2**63:
        raise JsonRefused(
            f"the integer {shown(text, 24)} is outside the signed 64-bit range: no parameter takes one that large"
        )
    return value


def _keys_once(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj = dict(pairs)
    if len(obj) == len(pairs):
        return obj
    seen: set[str] = set()
    for key, _ in pairs:
        if key in seen:
            raise JsonRefused(f'the key "{shown(key, 60)}" appears twice in one object: give it once')
        seen.add(key)
    raise AssertionError("unreachable: a shorter dict means a repeated key")


_STRICT = json.JSONDecoder(
    object_pairs_hook=_keys_once,
    parse_float=_finite_float,
    parse_int=_bounded_int,
    parse_constant=_refuse_constant,
)
# Only finds where a value ends (after the strict decoder refused it): accepts what it refuses.
_LENIENT = json.JSONDecoder(parse_int=lambda _: 0, parse_float=lambda _: 0.0)
_WHITESPACE = re.compile(r"[ \t\n\r]*")


def strict_decoder() -> json.JSONDecoder:
    """The decoder behind :func:`decode`, for ``raw_decode`` of one value in a document."""
    return _STRICT


def lenient_end(text: str, index: int) -> int:
    """Where the JSON value starting at ``index`` ends, ignoring what the strict decoder refuses."""
    return _LENIENT.raw_decode(text, index)[1]


def skip_whitespace(text: str, index: int) -> int:
    return _WHITESPACE.match(text, index).end()  # type: ignore[union-attr]  # matches the empty string


def decode(text: str) -> Any:
    """One JSON value, strictly: raises :class:`JsonRefused` (or ``json.JSONDecodeError`` for bad syntax)."""
    if (at := nesting_too_deep(text, MAX_NESTING)) is not None:
        raise JsonRefused(f"arrays and objects nest deeper than {MAX_NESTING} levels (at character {at + 1})")
    return _STRICT.decode(text)
