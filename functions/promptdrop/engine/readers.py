"""How each endpoint's answer reads: its text (``.out.txt``, ``.out.csv``) and what a person is shown
of it (``promptdrop results``). :mod:`.endpoints` names which reader is each endpoint's."""

from __future__ import annotations

import base64
import binascii
from typing import Any

__all__ = [
    "chat_summary",
    "chat_text",
    "completion_text",
    "embeddings_summary",
    "moderations_summary",
    "nothing",
    "output_parts",
    "responses_refusal",
    "responses_summary",
    "responses_text",
]

Body = dict[str, Any]


def _first_choice(body: Body) -> Body:
    choices = body.get("choices")
    first = choices[0] if isinstance(choices, list) and choices else None
    return first if isinstance(first, dict) else {}


def chat_text(body: Body) -> str | None:
    message = _first_choice(body).get("message")
    content = message.get("content") if isinstance(message, dict) else None
    return content if isinstance(content, str) else None


def chat_summary(body: Body) -> str | None:
    message = _first_choice(body).get("message")
    if not isinstance(message, dict):
        return None
    if isinstance(message.get("refusal"), str):
        return f"refused: {message['refusal']}"
    calls = message.get("tool_calls")
    if message.get("content") is None and isinstance(calls, list) and calls:
        names = [c.get("function", {}).get("name") for c in calls if isinstance(c, dict)]
        return "tool calls: " + ", ".join(str(n) for n in names)
    return chat_text(body)


def completion_text(body: Body) -> str | None:
    text = _first_choice(body).get("text")
    return text if isinstance(text, str) else None


def output_parts(body: Body) -> list[Body]:
    """The content parts of every message of a Responses answer's ``output``."""
    return [
        part
        for item in body.get("output") or ()
        if isinstance(item, dict) and item.get("type") == "message"
        for part in item.get("content") or ()
        if isinstance(part, dict)
    ]


def responses_text(body: Body) -> str | None:
    """What the SDK calls ``output_text``: every ``output_text`` part of every message, joined."""
    parts = output_parts(body)
    texts = [p["text"] for p in parts if p.get("type") == "output_text" and isinstance(p.get("text"), str)]
    return "".join(texts) if texts else None


def responses_refusal(body: Body) -> str | None:
    for part in output_parts(body):
        if part.get("type") == "refusal":
            return str(part.get("refusal") or "refused")
    return None


def responses_summary(body: Body) -> str | None:
    refusal = responses_refusal(body)
    return f"refused: {refusal}" if refusal is not None else responses_text(body)


def _dimensions(vector: object) -> int | None:
    if isinstance(vector, list):
        return len(vector)
    if isinstance(vector, str):  # encoding_format "base64": little-endian float32s
        try:
            return len(base64.b64decode(vector, validate=True)) // 4
        except (binascii.Error, ValueError):
            return None
    return None


def embeddings_summary(body: Body) -> str | None:
    data = body.get("data")
    if not isinstance(data, list) or not data:
        return None
    sizes = {_dimensions(d.get("embedding")) if isinstance(d, dict) else None for d in data}
    dims = f"{sizes.pop()} dims" if len(sizes) == 1 and None not in sizes else "dims vary"
    return f"embedding: {dims}" if len(data) == 1 else f"{len(data):,} embeddings × {dims}"  # noqa: RUF001  # a product


def _verdict(result: object) -> str:
    if not isinstance(result, dict):
        return "?"
    categories = result.get("categories")
    named = [name for name, hit in categories.items() if hit is True] if isinstance(categories, dict) else []
    if result.get("flagged") is True:
        return "flagged: " + ", ".join(named) if named else "flagged"
    return "not flagged"


def moderations_summary(body: Body) -> str | None:
    results = body.get("results")
    if not isinstance(results, list) or not results:
        return None
    if len(results) == 1:
        return _verdict(results[0])
    return "; ".join(f"{i}: {_verdict(r)}" for i, r in enumerate(results, start=1))


def nothing(body: Body) -> None:
    return None
