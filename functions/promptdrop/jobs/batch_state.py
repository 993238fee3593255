"""What a unit run through the provider's Batch API remembers between its checks (README, "Modes").

Kept as JSON on the unit's lease item (``batches``), written only by the run that holds the unit:
each provider batch it submitted — where its lines lie in the file, how far the provider has come,
whether its answers are merged into the journal — and the numbers that keep its wait honest: the
check message that is the live one, and how far into the file the lines are all in a batch or final.
A unit has a few batches (one per endpoint and model, each at most 50,000 requests and 200 MB), so
the item stays far below DynamoDB's 400 KB.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

__all__ = ["ENDED", "SUBMITTING", "WAITING_TOKENS", "ProviderBatch", "UnitBatches"]

# A provider batch's statuses that will not change again (its output and error files are final).
ENDED = frozenset({"completed", "expired", "cancelled", "failed"})
SUBMITTING = "submitting"  # its input file is uploaded; the batch may or may not exist at the provider yet
WAITING_TOKENS = "waiting_tokens"  # refused for the model's enqueued-token limit: created again as others drain


@dataclass(slots=True)
class ProviderBatch:
    """One batch at the provider: one endpoint, one model, the lines ``first_line..last_line`` of it."""

    seq: int  # its number in the unit (its metadata at the provider names it: a lost reply finds it again)
    endpoint: str
    model: str
    requests: int
    first_line: int
    last_line: int
    start: int  # the byte offset of first_line's line (a .jsonl's; 0 for formats read whole)
    input_file_id: str
    batch_id: str | None = None
    status: str = SUBMITTING
    completed: int = 0  # as the provider last reported (request_counts)
    failed: int = 0
    output_file_id: str | None = None
    error_file_id: str | None = None
    error: str | None = None  # why the provider failed it (its errors.data), when it did
    tries: int = 0  # batches created for its input file (more than one: refused for enqueued tokens)
    merged: bool = False  # its answers and failures are in the journal; its files deleted at the provider

    @property
    def ended(self) -> bool:
        return self.status in ENDED


@dataclass(slots=True)
class UnitBatches:
    """A unit's provider batches, and where its submission stands."""

    batches: list[ProviderBatch] = field(default_factory=list)
    check: int = 0  # the check message acted on: an older one is a duplicate, dropped
    checks_waited: int = 0  # checks that found a batch still running: the next wait backs off
    cursor: int = 0  # every line up to this one is in a batch or final (a later submission goes on after it)
    submitted: bool = False  # the whole unit is in batches (or final)
    cancelling: bool = False  # its batches were asked to stop (a cancel, or auto's deadline)
    switched: bool = False  # auto's deadline came: what is left goes flex, then standard
    fallback: bool = False  # every batch merged; lines they left go in real time
    # The check message queued last (its body): `promptdrop cancel` sends it again so that the cancel
    # is acted on now, not at a check up to 15 minutes away (the number is the live one's).
    check_message: str | None = None

    def to_json(self) -> str:
        return json.dumps(asdict(self), separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str | None) -> UnitBatches:
        if not text:
            return cls()
        data: dict[str, Any] = json.loads(text)
        batches = [ProviderBatch(**entry) for entry in data.pop("batches", [])]
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        return cls(batches=batches, **known)

    @property
    def live(self) -> list[ProviderBatch]:
        """The batches whose answers are not merged yet."""
        return [batch for batch in self.batches if not batch.merged]

    @property
    def provider_counts(self) -> tuple[int, int, int]:
        """(requests, completed, failed) across the unit's batches, as the provider reports them."""
        return (
            sum(b.requests for b in self.batches),
            sum(b.completed for b in self.batches),
            sum(b.failed for b in self.batches),
        )
