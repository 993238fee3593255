"""What the engine takes in: one API call, ready to send (its body serialized once, when parsed)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

__all__ = ["CHAT_PATH", "Request"]

CHAT_PATH = "/v1/chat/completions"


@dataclass(slots=True, frozen=True)
class Request:
    """One chat-completions call, ready to send."""

    line: int
    custom_id: str
    body: bytes
    cost: int  # estimated tokens (prompt + completion budget) for the tokens/min bucket
    offset: int = 0  # byte offset of its line in the file (.jsonl): where a continuation resumes
    # A .csv row's columns that are not part of the request, (name, cell) in file order: carried
    # through to the outputs, never sent (the API refuses parameters it does not know).
    columns: tuple[tuple[str, str], ...] = ()
    # The body's "model" (rate limits are per model), set by the parser; when empty (a caller that
    # did not), the engine reads it from the body.
    model: str = ""

    def model_name(self) -> str:
        """The model this request is sent to: its rate limits, its share of the account's budget."""
        if self.model:
            return self.model
        try:
            body = json.loads(self.body)
        except ValueError:
            return ""
        model = body.get("model") if isinstance(body, dict) else None
        return model if isinstance(model, str) else ""

    def batch_line(self) -> dict[str, Any]:
        """This request as an OpenAI Batch API input line (what a dead letter carries)."""
        return {
            "custom_id": self.custom_id,
            "method": "POST",
            "url": CHAT_PATH,
            "body": json.loads(self.body),
        }
