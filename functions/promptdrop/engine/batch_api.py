"""The provider's Batch API, as promptdrop's batch mode uses it: ``/v1/files`` and ``/v1/batches``.

Through the SDK's own typed methods (these calls are a handful per batch, not one per request: no
need for the lean path of :mod:`.client`), with the SDK's retries — a file upload or a status read
that meets a passing fault is simply asked again. Input files are uploaded from disk and output
files downloaded to disk, streamed: either can be 200 MB, more than a Lambda should hold in memory.
"""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import openai
from openai import AsyncOpenAI

__all__ = ["BatchView", "OpenAIBatches", "ProviderUnavailable"]

_RETRIES = 3  # the SDK's own, for these few calls (the engine's requests set 0 and retry themselves)
_LIST_PAGES = 10  # how far back a lost batch is looked for (100 a page): the newest 1,000
_CHUNK = 1 << 20


class ProviderUnavailable(ConnectionError):
    """The Batch API could not be reached, or was busy or broken for a while (after the SDK's retries):
    a network fault, so the run's message comes back and tries again (adapters/faults.py)."""


@contextlib.contextmanager
def _passing_faults() -> Iterator[None]:
    try:
        yield
    except (openai.APIConnectionError, openai.RateLimitError, openai.InternalServerError) as exc:
        raise ProviderUnavailable(f"the Batch API: {type(exc).__name__}: {exc}"[:500]) from exc


@dataclass(slots=True, frozen=True)
class BatchView:
    """A provider batch as the API shows it."""

    id: str
    status: str
    output_file_id: str | None = None
    error_file_id: str | None = None
    total: int = 0
    completed: int = 0
    failed: int = 0
    errors: tuple[tuple[str, str], ...] = ()  # (code, message) of why it failed validation
    metadata: Mapping[str, str] | None = None


def _view(batch: Any) -> BatchView:
    counts = batch.request_counts
    errors = tuple((str(e.code or ""), str(e.message or "")) for e in (batch.errors.data or [] if batch.errors else []))
    return BatchView(
        id=batch.id,
        status=batch.status,
        output_file_id=batch.output_file_id,
        error_file_id=batch.error_file_id,
        total=counts.total if counts else 0,
        completed=counts.completed if counts else 0,
        failed=counts.failed if counts else 0,
        errors=errors,
        metadata=batch.metadata,
    )


class OpenAIBatches:
    """Files and batches at the API of each model's route (a batch holds one model: its route's
    client, its key or token as fresh as the route keeps it)."""

    def __init__(self, client_of: Callable[[str], Awaitable[AsyncOpenAI]]) -> None:
        self._client_of = client_of

    async def _client(self, model: str) -> AsyncOpenAI:
        # Asked per call, not once: the route's client takes a rotated key, a renewed token.
        return (await self._client_of(model)).with_options(max_retries=_RETRIES)

    async def upload(self, model: str, path: Path) -> str:
        """Upload a ``.jsonl`` input file (purpose ``batch``): its file id."""
        client = await self._client(model)
        with path.open("rb") as file, _passing_faults():
            created = await client.files.create(file=(path.name, file), purpose="batch")
        return created.id

    async def create(self, model: str, input_file_id: str, endpoint: str, metadata: Mapping[str, str]) -> BatchView:
        client = await self._client(model)
        with _passing_faults():
            batch = await client.batches.create(
                input_file_id=input_file_id,
                endpoint=endpoint,  # type: ignore[arg-type]  # one of the Batch API's endpoints (Endpoint's values)
                completion_window="24h",
                metadata=dict(metadata),
            )
        return _view(batch)

    async def find(self, model: str, metadata: Mapping[str, str]) -> BatchView | None:
        """The newest batch whose metadata holds all of ``metadata`` (one created by a run that died
        before it could note its id), or None."""
        client = await self._client(model)
        with _passing_faults():
            page = await client.batches.list(limit=100)
            for _ in range(_LIST_PAGES):
                for batch in page.data:
                    given = batch.metadata or {}
                    if all(given.get(k) == v for k, v in metadata.items()):
                        return _view(batch)
                if not page.has_next_page():
                    break
                page = await page.get_next_page()
        return None

    async def get(self, model: str, batch_id: str) -> BatchView:
        client = await self._client(model)
        with _passing_faults():
            return _view(await client.batches.retrieve(batch_id))

    async def cancel(self, model: str, batch_id: str) -> BatchView:
        """Ask the provider to stop the batch (what it finished is kept); one already ending is left be."""
        client = await self._client(model)
        try:
            with _passing_faults():
                return _view(await client.batches.cancel(batch_id))
        except openai.ConflictError:  # 409: it is no longer running (ended, or cancelling already)
            return await self.get(model, batch_id)

    async def download(self, model: str, file_id: str, path: Path) -> None:
        """A file's content to ``path``, streamed."""
        client = await self._client(model)
        with _passing_faults():
            async with client.files.with_streaming_response.content(file_id) as response:
                with path.open("wb") as out:
                    async for chunk in response.iter_bytes(_CHUNK):
                        out.write(chunk)

    async def delete(self, model: str, file_id: str) -> None:
        """Delete a file at the provider (gone already: nothing to do)."""
        client = await self._client(model)
        with contextlib.suppress(openai.NotFoundError), _passing_faults():
            await client.files.delete(file_id)
