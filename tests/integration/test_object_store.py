"""Outputs streamed to S3 in parts, against the moto server: one part in memory, none left behind."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import aioboto3
import pytest
from promptdrop.adapters.s3 import PART_BYTES, ObjectStore

from infra.local_aws import LocalAws


@pytest.fixture
async def store(local_aws: LocalAws, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[tuple[ObjectStore, object]]:
    for name, value in local_aws.function_env().items():
        monkeypatch.setenv(name, value)
    async with aioboto3.Session().client("s3") as s3:
        yield ObjectStore(s3), s3


def lines(count: int, size: int) -> Iterator[bytes]:
    for i in range(count):
        yield f"{i:08d}".encode().ljust(size - 1, b"x") + b"\n"


async def test_a_large_output_goes_up_in_parts_and_reads_back_whole(
    store: tuple[ObjectStore, object], local_aws: LocalAws
) -> None:
    objects, s3 = store
    # 20,000 lines of 1 KiB: 19.5 MiB, three parts of 8 MiB (the last one smaller)
    await objects.put_stream(local_aws.bucket, "results/big.out.jsonl", lines(20_000, 1024), "application/x-ndjson")
    head = await s3.head_object(Bucket=local_aws.bucket, Key="results/big.out.jsonl")  # type: ignore[attr-defined]
    assert head["ContentLength"] == 20_000 * 1024
    assert head["ETag"].strip('"').endswith("-3")  # a multipart object of three parts
    assert 20_000 * 1024 // PART_BYTES == 2
    body = await (await s3.get_object(Bucket=local_aws.bucket, Key="results/big.out.jsonl"))["Body"].read()  # type: ignore[attr-defined]
    assert body == b"".join(lines(20_000, 1024))


async def test_a_small_output_is_one_put(store: tuple[ObjectStore, object], local_aws: LocalAws) -> None:
    objects, s3 = store
    await objects.put_stream(local_aws.bucket, "results/small.out.jsonl", lines(3, 10), "application/x-ndjson")
    head = await s3.head_object(Bucket=local_aws.bucket, Key="results/small.out.jsonl")  # type: ignore[attr-defined]
    assert (head["ContentLength"], "-" in head["ETag"]) == (30, False)


async def test_an_upload_that_fails_midway_leaves_no_object_and_no_parts(
    store: tuple[ObjectStore, object], local_aws: LocalAws
) -> None:
    objects, s3 = store

    def broken() -> Iterator[bytes]:
        yield from lines(10_000, 1024)  # more than one part
        raise OSError("the spool could not be read")

    with pytest.raises(OSError, match="spool"):
        await objects.put_stream(local_aws.bucket, "results/broken.out.jsonl", broken(), "application/x-ndjson")
    uploads = await s3.list_multipart_uploads(Bucket=local_aws.bucket)  # type: ignore[attr-defined]
    assert uploads.get("Uploads", []) == []
    listed = await s3.list_objects_v2(Bucket=local_aws.bucket, Prefix="results/broken")  # type: ignore[attr-defined]
    assert listed.get("KeyCount", 0) == 0
