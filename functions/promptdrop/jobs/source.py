"""Reading a job's version of its input object: byte ranges, the upload's job header, a unit's parsed lines."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncGenerator, AsyncIterator, Iterator, Mapping
from enum import StrEnum
from typing import TypeVar

from ..adapters.s3 import ObjectChanged, ObjectInfo
from ..formats import CSV_TEMPLATE_METADATA, ENDPOINT_METADATA, MODEL_METADATA, FileRejected, Parsed, parse_stream
from ..messages import UnitMessage
from ..records import FailureCode
from .ports import ObjectStore

__all__ = [
    "endpoint_of",
    "header_choice",
    "header_of",
    "parse_unit",
    "read",
    "rejected_if_changed",
    "suffix",
    "template_of",
]


def suffix(key: str) -> str:
    """The key's suffix in lower case (``""`` when it has none)."""
    dot = key.rfind(".")
    return key[dot:].lower() if dot > key.rfind("/") else ""


@contextlib.contextmanager
def rejected_if_changed() -> Iterator[None]:
    """The job's version of the object is gone: that will not change, so the file fails (no retry loop)."""
    try:
        yield
    except ObjectChanged as exc:
        raise FileRejected(FailureCode.OBJECT_CHANGED, f"{exc}; a new upload is a job of its own") from None


def _info(unit: UnitMessage) -> ObjectInfo:
    return ObjectInfo(unit.etag, unit.version_id, 0)


async def read(
    store: ObjectStore, unit: UnitMessage, *, start: int = 0, end: int | None = None
) -> AsyncIterator[bytes]:
    """The bytes ``[start, end)`` of the job's version of the file."""
    with rejected_if_changed():
        async for chunk in store.stream(unit.bucket, unit.key, _info(unit), start=start, end=end):
            yield chunk


async def header_of(store: ObjectStore, unit: UnitMessage) -> dict[str, str]:
    """The upload's job header: its user metadata (a ``.csv``'s template, the file's budget)."""
    with rejected_if_changed():
        return await store.metadata(unit.bucket, unit.key, _info(unit))


async def template_of(store: ObjectStore, unit: UnitMessage) -> str | None:
    """A ``.csv``'s prompt template: the upload's metadata ``promptdrop-template``, if given."""
    return (await header_of(store, unit)).get(CSV_TEMPLATE_METADATA)


async def endpoint_of(store: ObjectStore, unit: UnitMessage, default: str) -> str:
    """The file's endpoint for short-form lines: the upload's metadata ``promptdrop-endpoint``, else ``default``."""
    return (await header_of(store, unit)).get(ENDPOINT_METADATA) or default


def parse_unit(
    store: ObjectStore, unit: UnitMessage, default_model: str, header: Mapping[str, str], default_endpoint: str
) -> AsyncGenerator[Parsed]:
    """The unit's lines, parsed with its job header: a ``.csv``'s template, the file's endpoint
    (``promptdrop-endpoint``, else ``default_endpoint``) and the model of lines naming none
    (``promptdrop-model``, else ``default_model``)."""
    kind = suffix(unit.key)
    return parse_stream(
        kind,
        read(store, unit, start=unit.start, end=unit.end),
        key=unit.key,
        default_model=header.get(MODEL_METADATA, "").strip() or default_model,
        start=unit.start,
        first_line=unit.first_line,
        template=header.get(CSV_TEMPLATE_METADATA) if kind == ".csv" else None,
        endpoint=header.get(ENDPOINT_METADATA) or default_endpoint,
    )


Choice = TypeVar("Choice", bound=StrEnum)


def header_choice(
    metadata: Mapping[str, str], name: str, kind: type[Choice], default: str, code: FailureCode
) -> Choice:
    """One of ``kind``'s values from the upload's job header ``name`` (any case), else ``default``
    (the environment's); a value that is none of them fails the file with ``code``, naming them."""
    value = metadata.get(name)
    if value is None:
        return kind(default)
    try:
        return kind(value.strip().lower())
    except ValueError:
        choices = ", ".join(choice.value for choice in kind)
        raise FileRejected(code, f"{name}={value[:40]!r} is not one of {choices}") from None
