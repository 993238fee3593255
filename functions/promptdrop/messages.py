"""Every message promptdrop puts on a queue, one definition each (README, "Dead-letter queue").

Dead letters (``prompt_failure``, ``file_failure``) and the function's own work messages (``unit``:
a shard or a continuation) are one union on ``kind``: the sender builds the model and calls
:meth:`dump`, the handler and the CLI call :func:`parse`. Parsing is lenient about fields it does
not know (an older or newer sender); ``dump`` produces what SQS accepts: at most 256 KiB, only the
characters SQS allows.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

from .jsonsafe import dumps

__all__ = ["KINDS", "MAX_BODY_BYTES", "FileFailure", "PromptFailure", "QueueMessage", "UnitMessage", "parse"]

MAX_BODY_BYTES = 250_000  # SQS's 256 KiB message limit, with room for attributes
_MAX_ERROR_FIELD = 2_000  # records.MAX_ERROR_MESSAGE_CHARS: every error promptdrop builds is within it already


class _Message(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)

    def dump(self) -> str:
        """The message body as SQS takes it."""
        return dumps(self.model_dump(mode="json"))


class UnitMessage(_Message):
    """A part of a job one invocation runs — the whole file ("all") or a shard: line-aligned bytes."""

    kind: Literal["unit"] = "unit"
    job_id: str
    bucket: str
    key: str
    etag: str
    version_id: str | None = None
    unit: str
    start: int = 0
    end: int | None = None  # exclusive; None = to the end of the object
    first_line: int = 1
    # Continuations this unit has taken: function → work queue → function is the loop Lambda's
    # recursion detection watches (the template allows it); this is promptdrop's own bound.
    hops: int = 0
    # A unit run through the provider's Batch API (jobs/batch_mode.py) waits between checks as a delayed
    # message; each check is numbered, and only the newest is acted on (a duplicate's chain ends there).
    check: int = 0


class PromptFailure(_Message):
    """A request that finally failed: redriving it runs it again and merges it into its job."""

    kind: Literal["prompt_failure"] = "prompt_failure"
    job_id: str
    bucket: str
    key: str
    etag: str | None = None
    custom_id: str
    line: int
    request: dict[str, Any] | None = None  # the Batch API input line; None when the line never parsed
    error: dict[str, Any] = Field(default_factory=dict)
    attempts: int = 0
    failed_at: str | None = None

    def dump(self) -> str:
        body = super().dump()
        if len(body.encode()) <= MAX_BODY_BYTES:
            return body
        # An oversized prompt: keep the message (its reason, and the line that finds it) without the body.
        fields = self.model_dump(mode="json")
        if self.request is not None:
            fields["request"] = {k: v for k, v in self.request.items() if k != "body"} | {"body_truncated": True}
            body = dumps(fields)
        if len(body.encode()) <= MAX_BODY_BYTES:
            return body
        # Still over (an error built by an older sender, a request of odd fields): what finds the line,
        # the request's route and the error's fields cut — every message promptdrop sends fits SQS.
        if self.request is not None:
            route = {k: self.request.get(k) for k in ("custom_id", "method", "url")}
            fields["request"] = route | {"body_truncated": True}
        fields["error"] = {k: v[:_MAX_ERROR_FIELD] if isinstance(v, str) else v for k, v in self.error.items()}
        return dumps(fields)


class FileFailure(_Message):
    """A file that could not be run (or was stopped): redriving it runs the file again."""

    kind: Literal["file_failure"] = "file_failure"
    job_id: str | None = None
    bucket: str
    key: str
    error: dict[str, Any] = Field(default_factory=dict)


QueueMessage = Annotated[UnitMessage | PromptFailure | FileFailure, Field(discriminator="kind")]
KINDS: tuple[str, ...] = ("prompt_failure", "file_failure", "unit")
_ADAPTER: TypeAdapter[UnitMessage | PromptFailure | FileFailure] = TypeAdapter(QueueMessage)


def parse(body: dict[str, Any]) -> UnitMessage | PromptFailure | FileFailure:
    """A decoded message body with a ``kind`` as its model (raises pydantic's ValidationError)."""
    return _ADAPTER.validate_python(body)
