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
    # A .csv row as read, (name, cell) for every column in file order: carried through to the
    # outputs (the .out.csv), never sent as such (only the body is sent).
    columns: tuple[tuple[str, str], ...] = ()

    def batch_line(self) -> dict[str, Any]:
        """This request as an OpenAI Batch API input line (what a dead letter carries)."""
        return {
            "custom_id": self.custom_id,
            "method": "POST",
            "url": CHAT_PATH,
            "body": json.loads(self.body),
        }
