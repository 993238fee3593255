"""A unit's admitted requests → the provider's Batch API input files, uploaded and started as batches.

The API takes one endpoint and one model per batch, at most 50,000 requests and 200 MB
(``PROMPTDROP_BATCH_MAX_REQUESTS`` / ``PROMPTDROP_BATCH_MAX_BYTES`` may set less). So requests are
spooled to disk (``/tmp``), one spool per (endpoint, model); when the next request would overflow its
spool, every spool is submitted — a checkpoint: every line before it is then in a batch or final, and
the unit's state says so (``cursor``). A run that dies between checkpoints submits those lines again
from the cursor, never a line twice: each batch is noted on the unit item (input file uploaded)
before it is created, with metadata naming the job, the unit and its number, so a run that dies
after creating it finds it at the provider instead of creating a second one.

Each line goes as the Batch API's input line with the request's own ``custom_id`` (unique in the
unit: a repeated one was failed as a repeat before it got here) and its body as parsed, byte for byte.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from ..engine.request import Request
from ..messages import UnitMessage
from .batch_state import WAITING_TOKENS, ProviderBatch, UnitBatches
from .ports import BatchApi

__all__ = ["TOKEN_LIMIT", "Spools", "batch_metadata", "input_line", "note_failure", "submit_batch", "submit_spools"]

TOKEN_LIMIT = "token_limit_exceeded"  # noqa: S105 (an error code)  the Batch API's code for a batch over the model's enqueued-token limit


@dataclass(slots=True)
class _Spool:
    path: Path
    file: IO[bytes]
    requests: int = 0
    bytes: int = 0
    first_line: int = 0
    last_line: int = 0
    start: int = 0


@dataclass(slots=True)
class Spools:
    """The input files being written, one per (endpoint, model), in a directory of their own."""

    max_requests: int
    max_bytes: int
    directory: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="promptdrop-batch-")))
    _open: dict[tuple[str, str], _Spool] = field(default_factory=dict)

    def fits(self, request: Request, line: bytes) -> bool:
        """Whether ``line`` fits its spool (an empty spool takes any line: one line is its own batch)."""
        spool = self._open.get(_group(request))
        if spool is None or not spool.requests:
            return True
        return spool.requests < self.max_requests and spool.bytes + len(line) <= self.max_bytes

    def add(self, request: Request, line: bytes) -> None:
        group = _group(request)
        spool = self._open.get(group)
        if spool is None:
            path = self.directory / f"{len(self._open)}.jsonl"
            spool = self._open[group] = _Spool(path, path.open("wb"), first_line=request.line, start=request.offset)
        spool.file.write(line)
        spool.requests += 1
        spool.bytes += len(line)
        spool.last_line = request.line

    def __bool__(self) -> bool:
        return bool(self._open)

    def take(self) -> list[tuple[str, str, _Spool]]:
        """The spools written so far, closed — (endpoint, model, spool) — and a fresh start."""
        taken = []
        for (endpoint, model), spool in self._open.items():
            spool.file.close()
            taken.append((endpoint, model, spool))
        self._open = {}
        return taken

    def discard(self) -> None:
        """Close and delete every spool (those not submitted: the run stopped, or an upload failed)."""
        self.take()
        shutil.rmtree(self.directory, ignore_errors=True)


def input_line(request: Request) -> bytes:
    """The request as a Batch API input line: its body as parsed, byte for byte."""
    custom_id = json.dumps(request.custom_id).encode()
    return b'{"custom_id":%s,"method":"POST","url":"%s","body":%s}\n' % (
        custom_id,
        request.endpoint.value.encode(),
        request.body,
    )


def _group(request: Request) -> tuple[str, str]:
    return request.endpoint.value, request.model_name()


def batch_metadata(unit: UnitMessage, seq: int) -> dict[str, str]:
    """What names a batch at the provider as this unit's ``seq``-th (at most 16 keys of 512 characters)."""
    return {"promptdrop_job": unit.job_id, "promptdrop_unit": unit.unit, "promptdrop_seq": str(seq)}


async def submit_spools(
    spools: Spools, unit: UnitMessage, state: UnitBatches, api: BatchApi, save: Callable[[], Awaitable[None]]
) -> list[ProviderBatch]:
    """Upload and start a batch for each spool; each noted in ``state`` (and saved) before it is created."""
    started = []
    for endpoint, model, spool in spools.take():
        try:
            file_id = await api.upload(model, spool.path)
        finally:
            spool.path.unlink(missing_ok=True)
        batch = ProviderBatch(
            seq=len(state.batches),
            endpoint=endpoint,
            model=model,
            requests=spool.requests,
            first_line=spool.first_line,
            last_line=spool.last_line,
            start=spool.start,
            input_file_id=file_id,
        )
        state.batches.append(batch)
        await save()
        await submit_batch(batch, unit, api)
        await save()
        started.append(batch)
    return started


async def submit_batch(batch: ProviderBatch, unit: UnitMessage, api: BatchApi) -> None:
    """Create the batch at the provider — or find the one a run that died before noting it created."""
    metadata = batch_metadata(unit, batch.seq)
    view = await api.find(batch.model, metadata) if batch.batch_id is None and batch.tries == 0 else None
    if view is None:
        view = await api.create(batch.model, batch.input_file_id, batch.endpoint, metadata)
    batch.tries += 1
    batch.batch_id, batch.status = view.id, view.status
    batch.error = None


def note_failure(batch: ProviderBatch, errors: tuple[tuple[str, str], ...]) -> None:
    """A batch the provider failed: over the enqueued-token limit, it waits to be created again."""
    if any(code == TOKEN_LIMIT for code, _ in errors):
        batch.status = WAITING_TOKENS
    batch.error = "; ".join(f"{code}: {message}" for code, message in errors)[:500] or "the batch failed"
