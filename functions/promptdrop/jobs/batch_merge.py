"""An ended provider batch's output and error files → the journal, each line recorded once.

The files are downloaded to disk (streamed: they can be hundreds of MB) and indexed by ``custom_id``
(where each line lies: the index of 50,000 lines is a few MB, whatever their answers weigh). Then
the batch's lines are read again from the input file — its window of lines, its endpoint and model
— and each request not yet final in the journal takes its line from the files: so each outcome is
recorded with its own request (its line, its ``.csv`` cells, its schema), in input order, and a
merge run twice, or cut short by the deadline or a crash, records each line once (what the journal
has final is skipped). A line the batch did not finish (:func:`~promptdrop.engine.batch_lines.line_result`
says which) is failed with its reason under the fallback ``fail``, or left for the real-time
fallback under ``realtime``.

Memory stays flat: one line of the files in memory at a time, read by its offset.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from ..engine.answers import AnswerCheck
from ..engine.batch_lines import LineResult, line_result, not_run
from ..engine.request import Request
from ..messages import UnitMessage
from ..settings import Settings
from .batch_state import ProviderBatch
from .ports import BatchApi, Journal, ObjectStore
from .progress import Progress
from .recorder import Recorder
from .source import parse_unit

__all__ = ["Merge", "merge_batch"]


@dataclass(slots=True)
class Merge:
    """What merging one batch did."""

    recorded: int = 0
    left: int = 0  # lines it did not finish, left for the real-time fallback
    stopped: bool = False  # the deadline came first: merged again by the next check


class _Index:
    """Where each ``custom_id``'s line lies in the downloaded files."""

    def __init__(self) -> None:
        self._files: list[int] = []  # file descriptors, by number
        self._at: dict[str, tuple[int, int, int]] = {}  # custom_id -> (file, offset, length)

    def add(self, path: Path) -> None:
        number = len(self._files)
        self._files.append(os.open(path, os.O_RDONLY))
        offset = 0
        with path.open("rb") as file:
            for line in file:
                if line.strip():
                    custom_id = json.loads(line).get("custom_id")
                    if isinstance(custom_id, str):
                        self._at[custom_id] = (number, offset, len(line))
                offset += len(line)

    def line(self, custom_id: str) -> Mapping[str, object] | None:
        found = self._at.pop(custom_id, None)
        if found is None:
            return None
        number, offset, length = found
        value = json.loads(os.pread(self._files[number], length, offset))
        return value if isinstance(value, dict) else None

    def close(self) -> None:
        for descriptor in self._files:
            os.close(descriptor)


async def merge_batch(
    batch: ProviderBatch,
    unit: UnitMessage,
    header: Mapping[str, str],
    *,
    settings: Settings,
    store: ObjectStore,
    journal: Journal,
    api: BatchApi,
    recorder: Recorder,
    progress: Progress,
    answers: AnswerCheck,
    secrets: Iterable[str],
    fail_unfinished: bool,
    should_stop: Callable[[], bool],
) -> Merge:
    """Record the batch's outcomes (``fail_unfinished``: its unfinished lines too, as failures)."""
    merge = Merge()
    done = await journal.requests.done_lines(unit.job_id)
    # Its lines, read from the first one's offset (a .jsonl's); a format read whole is read from its start.
    window = unit.model_copy(update={"start": batch.start, "first_line": batch.first_line if batch.start else 1})
    index = _Index()
    with tempfile.TemporaryDirectory(prefix="promptdrop-merge-") as directory:
        try:
            for file_id in (batch.output_file_id, batch.error_file_id):
                if file_id:
                    path = Path(directory) / file_id
                    await api.download(batch.model, file_id, path)
                    index.add(path)
            parsed = parse_unit(store, window, settings.model, header, settings.endpoint)
            try:
                async for item in parsed:
                    if item.line > batch.last_line:
                        break
                    if not _in(batch, item) or item.line in done:
                        continue
                    assert isinstance(item, Request)  # _in made sure
                    result = _result(batch, item, index.line(item.custom_id), answers, secrets)
                    progress.sent()
                    if result.final or fail_unfinished:
                        await recorder.merged(result.outcome)
                        merge.recorded += 1
                    else:
                        merge.left += 1
                    if should_stop():
                        merge.stopped = True
                        break
            finally:
                await parsed.aclose()
        finally:
            index.close()
    await recorder.flush()  # on record before the batch is noted merged
    return merge


def _in(batch: ProviderBatch, item: object) -> bool:
    """Whether ``item`` is a request of the batch's endpoint and model (lines of its window may be others')."""
    return isinstance(item, Request) and item.endpoint.value == batch.endpoint and item.model_name() == batch.model


def _result(
    batch: ProviderBatch,
    request: Request,
    line: Mapping[str, object] | None,
    answers: AnswerCheck,
    secrets: Iterable[str],
) -> LineResult:
    if line is not None:
        return line_result(request, line, answers, secrets=secrets)
    # In neither file: the batch ended before it ran the line (a failed batch writes no files).
    code = "batch_expired" if batch.status == "expired" else "batch_failed"
    why = batch.error or f"the provider's batch {batch.batch_id} ended {batch.status} without running it"
    return not_run(request, code, why)
