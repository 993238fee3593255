"""What the engine takes in: one API call, ready to send (its body serialized once, when parsed).

What each endpoint takes, bounds and answers is in :mod:`.endpoints`."""

from __future__ import annotations

import json
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

__all__ = ["CHAT_PATH", "Endpoint", "Request"]


class Endpoint(StrEnum):
    """Every endpoint a Batch API line may name (its ``url``), as the Batch API spells it."""

    CHAT = "/v1/chat/completions"
    RESPONSES = "/v1/responses"
    EMBEDDINGS = "/v1/embeddings"
    COMPLETIONS = "/v1/completions"
    MODERATIONS = "/v1/moderations"

    @property
    def path(self) -> str:
        """The path the SDK posts to (its base URL already ends in ``/v1``)."""
        return self.value.removeprefix("/v1")

    @classmethod
    def of(cls, url: object) -> Endpoint | None:
        """The endpoint a ``url`` names, with or without ``/v1`` (None: not one promptdrop sends)."""
        if not isinstance(url, str):
            return None
        try:
            return cls(url if url.startswith("/v1/") else "/v1" + url)
        except ValueError:
            return None


CHAT_PATH = Endpoint.CHAT.value


@dataclass(slots=True, frozen=True)
class Request:
    """One API call, ready to send."""

    line: int
    custom_id: str
    body: bytes
    cost: int  # estimated tokens (prompt + completion budget) for the tokens/min bucket
    offset: int = 0  # byte offset of its line in the file (.jsonl): where a continuation resumes
    # A .csv row as read, (name, cell) for every column in file order: carried through to the
    # outputs (the .out.csv), never sent as such (only the body is sent).
    columns: tuple[tuple[str, str], ...] = ()
    # The body's "model" (rate limits are per model). The parser sets it; when empty the engine
    # reads it from the body once per request.
    model: str = ""
    endpoint: Endpoint = Endpoint.CHAT
    # The JSON schema the answer must match (canonical JSON, the validator cache's key) when the
    # request asks for structured output; ``json_object`` is the schema {"type": "object"}. None: text.
    output_schema: str | None = None
    # Of ``cost``, the output tokens: the most it may be billed for, or the default estimate when it
    # sets no limit (engine.endpoints: EndpointSpec.token_estimate). The cost guard's worst case.
    output_tokens: int = 0
    # The body ends asking for the flex service tier (engine/flex.py added it; taken off to fall back).
    flex: bool = False

    def model_name(self) -> str:
        """The model this request is sent to: its rate limits, its share of the account's limits."""
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
            "url": self.endpoint.value,
            "body": json.loads(self.body),
        }
