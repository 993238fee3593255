"""Input objects in, output files out."""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from types_aiobotocore_s3 import S3Client
    from types_aiobotocore_s3.type_defs import CompletedPartTypeDef

__all__ = ["ObjectChanged", "ObjectInfo", "ObjectStore"]

_CHUNK = 256 * 1024
# Outputs go up in parts of this size (S3's smallest is 5 MiB): one part in memory at a time.
PART_BYTES = 8 * 1024 * 1024


class ObjectChanged(Exception):
    """The version of the object a job is about is gone: replaced (no versioning) or deleted."""


@dataclass(slots=True, frozen=True)
class ObjectInfo:
    etag: str
    version_id: str | None
    size: int
    # The user metadata (``x-amz-meta-*``, names in lower case) as the HEAD found it: the job header.
    metadata: dict[str, str] = field(default_factory=dict, compare=False)


class ObjectStore:
    """S3 reads and writes for one run (the client is bound to the run's event loop)."""

    def __init__(self, client: S3Client) -> None:
        self._s3 = client

    async def head(self, bucket: str, key: str) -> ObjectInfo | None:
        """The object's identity, or None when it does not exist (any more)."""
        try:
            head = await self._s3.head_object(Bucket=bucket, Key=key)
        except self._s3.exceptions.ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                return None
            raise
        return ObjectInfo(
            head["ETag"].strip('"'), head.get("VersionId"), head["ContentLength"], dict(head.get("Metadata", {}))
        )

    async def stream(
        self, bucket: str, key: str, info: ObjectInfo, *, start: int = 0, end: int | None = None
    ) -> AsyncIterator[bytes]:
        """The object's bytes ``[start, end)`` in chunks, pinned to the version (or ETag) of the job."""
        extra = _pinned(info)
        if start or end is not None:
            extra["Range"] = f"bytes={start}-{'' if end is None else end - 1}"
        try:
            response = await self._s3.get_object(Bucket=bucket, Key=key, **extra)
        except self._s3.exceptions.ClientError as exc:
            raise _replaced(exc, key) from None
        body = response["Body"]
        async with body:  # (entering yields the raw aiohttp response: keep the StreamingBody)
            while chunk := await body.read(_CHUNK):
                yield chunk

    async def metadata(self, bucket: str, key: str, info: ObjectInfo) -> dict[str, str]:
        """The user metadata (``x-amz-meta-*``, names in lower case) of the job's version of the object."""
        try:
            head = await self._s3.head_object(Bucket=bucket, Key=key, **_pinned(info))
        except self._s3.exceptions.ClientError as exc:
            raise _replaced(exc, key) from None
        return dict(head.get("Metadata", {}))

    async def put_bytes(self, bucket: str, key: str, data: bytes, content_type: str) -> None:
        await self._s3.put_object(Bucket=bucket, Key=key, Body=data, ContentType=content_type)

    async def put_json(self, bucket: str, key: str, value: Any) -> None:
        data = json.dumps(value, ensure_ascii=False, indent=2).encode()
        await self.put_bytes(bucket, key, data, "application/json")

    async def put_stream(self, bucket: str, key: str, chunks: Iterable[bytes], content_type: str) -> None:
        """Upload what ``chunks`` yields as one object, holding one part in memory and nothing on disk.

        Up to :data:`PART_BYTES` it is one ``PutObject``; beyond, a multipart upload of parts of that
        size (S3 allows 10,000 parts: 80 GB), aborted if anything fails so no part is left billed.
        """
        upload: _Multipart | None = None
        part = bytearray()
        try:
            for chunk in chunks:
                part += chunk
                if len(part) >= PART_BYTES:
                    if upload is None:
                        created = await self._s3.create_multipart_upload(
                            Bucket=bucket, Key=key, ContentType=content_type
                        )
                        upload = _Multipart(self._s3, bucket, key, created["UploadId"])
                    await upload.add(bytes(part))
                    part.clear()
            if upload is None:
                await self._s3.put_object(Bucket=bucket, Key=key, Body=bytes(part), ContentType=content_type)
                return
            if part:
                await upload.add(bytes(part))
            await upload.complete()
        except BaseException:
            if upload is not None:
                with contextlib.suppress(Exception):
                    await self._s3.abort_multipart_upload(Bucket=bucket, Key=key, UploadId=upload.upload_id)
            raise

    async def get_json(self, bucket: str, key: str) -> Any:
        response = await self._s3.get_object(Bucket=bucket, Key=key)
        body = response["Body"]
        async with body:
            return json.loads(await body.read())


def _pinned(info: ObjectInfo) -> dict[str, Any]:
    """Read the version the job is about — never a newer upload under the same key."""
    return {"VersionId": info.version_id} if info.version_id else {"IfMatch": f'"{info.etag}"'}


def _replaced(exc: Exception, key: str) -> Exception:
    """A read of the job's version that found it gone (412 / 404) becomes :class:`ObjectChanged`."""
    code = getattr(exc, "response", {}).get("Error", {}).get("Code")
    if code in ("412", "PreconditionFailed", "404", "NoSuchKey", "NoSuchVersion", "NotFound"):
        return ObjectChanged(f"{key} was replaced or deleted before this job could read it")
    return exc


class _Multipart:
    """One multipart upload's parts, in order."""

    def __init__(self, client: S3Client, bucket: str, key: str, upload_id: str) -> None:
        self._s3 = client
        self._bucket = bucket
        self._key = key
        self.upload_id = upload_id
        self._parts: list[CompletedPartTypeDef] = []

    async def add(self, data: bytes) -> None:
        number = len(self._parts) + 1
        answer = await self._s3.upload_part(
            Bucket=self._bucket, Key=self._key, UploadId=self.upload_id, PartNumber=number, Body=data
        )
        self._parts.append({"PartNumber": number, "ETag": answer["ETag"]})

    async def complete(self) -> None:
        await self._s3.complete_multipart_upload(
            Bucket=self._bucket, Key=self._key, UploadId=self.upload_id, MultipartUpload={"Parts": self._parts}
        )
