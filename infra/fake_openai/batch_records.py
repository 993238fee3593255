"""What the fake's Batch API keeps: a :class:`File`, a :class:`Batch`, as the API shows them."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Final

from infra.fake_openai.catalog import ENDPOINTS

__all__ = ["BATCH_MAX_BYTES", "BY_PATH", "CANCELLED", "EXPIRED", "UNFINISHED", "Batch", "File"]

BATCH_MAX_BYTES: Final = 200 * 1024 * 1024  # the API's limit on a batch input file
BY_PATH: Final = {f"/v1{endpoint.path}": endpoint for endpoint in ENDPOINTS}
UNFINISHED: Final = frozenset({"validating", "in_progress", "finalizing", "cancelling"})
# What the error file says of a line the batch never ran.
EXPIRED: Final = {
    "code": "batch_expired",
    "message": "This request could not be executed before the completion window expired.",
}
CANCELLED: Final = {"code": "batch_cancelled", "message": "This request was not executed: the batch was cancelled."}
_TIMES: Final = ("in_progress", "finalizing", "completed", "failed", "expired", "cancelling", "cancelled")


@dataclass(slots=True)
class File:
    id: str
    filename: str
    purpose: str
    content: bytes
    created_at: int = field(default_factory=lambda: int(time.time()))

    def as_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "object": "file",
            "bytes": len(self.content),
            "created_at": self.created_at,
            "filename": self.filename,
            "purpose": self.purpose,
            "status": "processed",
            "expires_at": None,
            "status_details": None,
        }


@dataclass(slots=True)
class Batch:
    id: str
    endpoint: str
    input_file_id: str
    metadata: dict[str, str] | None
    created_at: int = field(default_factory=lambda: int(time.time()))
    status: str = "validating"
    times: dict[str, int] = field(default_factory=dict)  # in_progress_at, completed_at, …
    errors: list[dict[str, Any]] | None = None
    output_file_id: str | None = None
    error_file_id: str | None = None
    total: int = 0
    completed: int = 0
    failed: int = 0
    model: str | None = None
    enqueued_tokens: int = 0
    usage: list[int] = field(default_factory=lambda: [0, 0])  # input, output tokens
    cancel_requested: bool = False

    def as_json(self) -> dict[str, Any]:
        times = {f"{name}_at": self.times.get(name) for name in _TIMES}
        return {
            "id": self.id,
            "object": "batch",
            "endpoint": self.endpoint,
            "model": self.model,
            "errors": None if self.errors is None else {"object": "list", "data": self.errors},
            "input_file_id": self.input_file_id,
            "completion_window": "24h",
            "status": self.status,
            "output_file_id": self.output_file_id,
            "error_file_id": self.error_file_id,
            "created_at": self.created_at,
            "expires_at": self.created_at + 24 * 3600,
            **times,
            "request_counts": {"total": self.total, "completed": self.completed, "failed": self.failed},
            "usage": {
                "input_tokens": self.usage[0],
                "input_tokens_details": {"cached_tokens": 0},
                "output_tokens": self.usage[1],
                "output_tokens_details": {"reasoning_tokens": 0},
                "total_tokens": sum(self.usage),
            },
            "metadata": self.metadata,
        }
