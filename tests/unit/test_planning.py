"""Planning a split file: the lines that repeat a custom_id are found from 8-byte hashes; the line counts."""

from __future__ import annotations

import asyncio
import json
from array import array
from typing import Any

from promptdrop.jobs.planning import _repeated, count_lines, plan_shards
from promptdrop.messages import UnitMessage
from promptdrop.settings import Settings


def test_repeated_hashes_are_found_in_every_part_and_blank_lines_are_not() -> None:
    # Given hashes over the whole 64-bit range, a few twice or three times, and blank lines (0)
    top = 1 << 63
    hashes = array("Q", [0, 5, top + 7, 9, 0, 5, (1 << 64) - 1, top + 7, 11, (1 << 64) - 1, top + 7, 0])

    # When the repeated ones are asked for
    twice = _repeated(hashes)

    # Then each repeated hash is there once, from the lowest part to the highest, and no blank line
    assert twice == {5, top + 7, (1 << 64) - 1}


class BytesInMemory:
    """The object store's reads of one object held in memory, in small chunks (lines cross them)."""

    def __init__(self, data: bytes, metadata: dict[str, str] | None = None) -> None:
        self.data = data
        self.meta = metadata or {}

    async def stream(self, bucket: str, key: str, info: Any, *, start: int = 0, end: int | None = None) -> Any:
        data = self.data[start:end]
        for i in range(0, len(data), 7):
            yield data[i : i + 7]

    async def metadata(self, bucket: str, key: str, info: Any) -> dict[str, str]:
        return self.meta


def whole(key: str) -> UnitMessage:
    return UnitMessage(job_id="j", bucket="b", key=key, etag="e", unit="all")


def count(key: str, data: bytes, metadata: dict[str, str] | None = None) -> int:
    store = BytesInMemory(data, metadata)
    settings = Settings(table="t", dlq_url="q")
    return asyncio.run(count_lines(store, whole(key), settings, metadata or {}))  # type: ignore[arg-type]


def test_a_file_run_whole_counts_the_lines_that_will_have_an_outcome() -> None:
    # A .jsonl: its non-blank lines, a line that does not parse included (it fails: an outcome)
    assert count("k.jsonl", b'{"prompt": "a"}\n\n{broken\r\n   \n{"prompt": "b"}') == 3
    # A .csv: its rows, not its header, a quoted newline inside one row
    assert count("k.csv", b'city\nLyon\n"Porto,\nstill Porto"\n', {"promptdrop-template": "{city}"}) == 2
    # A .json: its items; a .txt: its one prompt
    assert count("k.json", b'[{"prompt": "a"}, {"prompt": "b"}, 3]') == 3
    assert count("k.txt", b"one prompt\non two lines\n") == 1


def test_the_planner_counts_a_split_files_non_blank_lines() -> None:
    data = b"".join(
        json.dumps({"prompt": f"p{i}"}).encode() + b"\n" + (b"\n" if i % 10 == 0 else b"") for i in range(100)
    )
    plan = asyncio.run(plan_shards(BytesInMemory(data), whole("k.jsonl"), 1024))  # type: ignore[arg-type]
    assert len(plan.shards) > 1
    assert (plan.line_count, plan.repeats) == (100, [])
