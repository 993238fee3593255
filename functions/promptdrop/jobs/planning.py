"""A job's identity, its output keys, how a large ``.jsonl`` is cut into shards, and the file's line count."""

from __future__ import annotations

import asyncio
import hashlib
import itertools
from array import array
from collections.abc import Mapping
from dataclasses import dataclass

from ..adapters.s3 import ObjectInfo
from ..formats import custom_id_of, split_lines
from ..messages import UnitMessage
from ..settings import Settings
from .ports import ObjectStore
from .source import parse_unit, read, suffix

__all__ = [
    "S3_KEY_MAX_BYTES",
    "Plan",
    "Repeat",
    "count_lines",
    "make_job_id",
    "output_base",
    "output_keys",
    "plan_shards",
]

# (line, custom_id, the earlier line using it)
Repeat = tuple[int, str, int]


def make_job_id(bucket: str, key: str, info: ObjectInfo) -> str:
    """The same upload is the same job; new content (a new ETag or version) is a new job."""
    identity = info.version_id or info.etag
    return hashlib.sha256(f"{bucket}\n{key}\n{identity}".encode()).hexdigest()[:32]


# S3 keys are at most 1,024 bytes (UTF-8). The longest name an output adds to its base is a large
# answer's ``.responses/<line>.json``.
S3_KEY_MAX_BYTES = 1024
_LONGEST_SUFFIX = len(".responses/18446744073709551615.json")


def output_base(output_prefix: str, key: str) -> str:
    """Where a job's outputs go: ``<prefix><key>``, or — when that would make an output key longer
    than S3 allows — ``<prefix>_long-keys/<sha256 of the key>`` (the summary names the input key)."""
    base = output_prefix + key
    if len(base.encode()) + _LONGEST_SUFFIX <= S3_KEY_MAX_BYTES:
        return base
    return f"{output_prefix}_long-keys/{hashlib.sha256(key.encode()).hexdigest()}"


def output_keys(settings: Settings, key: str, *, suffix: str) -> dict[str, str]:
    """The job's output files by name; ``suffix`` the input's (lower case): a ``.txt`` gets its
    answer alone (``.out.txt``), a ``.csv`` its rows with their answers (``.out.csv``)."""
    base = output_base(settings.output_prefix, key)
    keys = {
        "results": base + ".out.jsonl",
        "errors": base + ".errors.jsonl",
        "summary": base + ".summary.json",
    }
    if suffix == ".txt":
        keys["text"] = base + ".out.txt"
    if suffix == ".csv":
        keys["csv"] = base + ".out.csv"
    return keys


@dataclass(slots=True, frozen=True)
class Plan:
    shards: list[UnitMessage]
    repeats: list[Repeat]
    line_count: int  # the file's non-blank lines: the outcomes the job will have


async def count_lines(store: ObjectStore, whole: UnitMessage, settings: Settings, header: Mapping[str, str]) -> int:
    """The outcomes a file run whole will have, counted by a first pass beside its run (a second
    read of the object: a file run whole is at most ``PROMPTDROP_SHARD_BYTES``).

    A ``.txt`` is one prompt. A ``.jsonl``: its non-blank lines, from the streamed bytes (no JSON
    parsed; a line that does not parse is one outcome all the same). A ``.csv`` or ``.json`` (at
    most 32 MiB) is counted by its parser, giving way to the run between items.
    """
    lines = 0
    kind = suffix(whole.key)
    if kind == ".txt":
        return 1
    if kind == ".jsonl":
        async for _, raw in split_lines(read(store, whole)):
            lines += 1 if raw.strip() else 0
        return lines
    parsed = parse_unit(store, whole, settings.model, header, settings.endpoint)
    try:
        async for _ in parsed:
            lines += 1
            if lines % 512 == 0:
                await asyncio.sleep(0)  # a large .csv: the run's own tasks go on meanwhile
    finally:
        await parsed.aclose()
    return lines


async def plan_shards(store: ObjectStore, whole: UnitMessage, shard_bytes: int) -> Plan:
    """Cut the file into line-aligned shards of about ``shard_bytes`` (one pass, one line held),
    and count its non-blank lines on the way.

    Shard boundaries are a pure function of the file: a redelivery plans the same shards. Also
    finds the lines that repeat an earlier line's ``custom_id``: in different shards they would run
    at once (both sent, one answer kept), so they fail before any shard starts. That costs 8 bytes a
    line (a 64-bit hash of its ``custom_id``), and a second read of the file only when two hashes
    match — so a million-line file is planned in a few MB.
    """
    shards: list[UnitMessage] = []
    hashes = array("Q")  # one per line, in order; 0 for a blank line
    start, first_line, line = 0, 1, 0

    def shard(end: int | None) -> UnitMessage:
        return whole.model_copy(
            update={"unit": f"shard-{len(shards)}", "start": start, "end": end, "first_line": first_line}
        )

    async for offset, raw in split_lines(read(store, whole)):
        line += 1
        if offset - start >= shard_bytes:
            shards.append(shard(offset))
            start, first_line = offset, line
        hashes.append(_hash(custom_id_of(raw, line)) if raw.strip() else 0)
    shards.append(shard(None))
    twice = _repeated(hashes)
    repeats = await _repeats(store, whole, hashes, twice) if twice else []
    return Plan(shards, repeats, line_count=len(hashes) - hashes.count(0))


def _hash(custom_id: str) -> int:
    return int.from_bytes(hashlib.blake2b(custom_id.encode(), digest_size=8).digest()) or 1


_BUCKET_BITS = 6  # the hashes are sorted in 2**6 parts, by their top bits
_BUCKETS = 1 << _BUCKET_BITS


def _repeated(hashes: array[int]) -> set[int]:
    """The hashes that occur on more than one line (blank lines aside).

    Sorted a 64th at a time, by their top bits: sorting them all at once makes a list of a million
    Python ints for a million lines, about 45 MB on top of the 8 MB array.
    """
    buckets = [array("Q") for _ in range(_BUCKETS)]
    for h in hashes:
        if h:
            buckets[h >> (64 - _BUCKET_BITS)].append(h)
    twice: set[int] = set()
    while buckets:
        ordered = sorted(buckets.pop())
        twice.update(h for h, after in itertools.pairwise(ordered) if h == after)
    return twice


async def _repeats(store: ObjectStore, whole: UnitMessage, hashes: array[int], twice: set[int]) -> list[Repeat]:
    """The second read: exact ``custom_id`` comparison for the lines whose hashes matched."""
    first_line_of: dict[str, int] = {}
    repeats: list[Repeat] = []
    line = 0
    async for _, raw in split_lines(read(store, whole)):
        line += 1
        if hashes[line - 1] in twice:
            custom_id = custom_id_of(raw, line)
            earlier = first_line_of.setdefault(custom_id, line)
            if earlier != line:
                repeats.append((line, custom_id, earlier))
    return repeats
