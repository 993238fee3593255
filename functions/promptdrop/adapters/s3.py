"""Input objects in, output files out."""

from __future__ import annotations

import functools
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import IO, TYPE_CHECKING, Any

if TYPE_CHECKING:
    from types_aiobotocore_s3 import S3Client

__all__ = ["ObjectChanged", "ObjectInfo", "ObjectStore"]

_CHUNK = 256 * 1024


class ObjectChanged(Exception):
    """The version of the object a job is about is gone: replaced (no versioning) or deleted."""


@dataclass(slots=True, frozen=True)
class ObjectInfo:
    etag: str
    version_id: str | None
    size: int


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
        return ObjectInfo(head["ETag"].strip('"'), head.get("VersionId"), head["ContentLength"])

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

    async def put_file(self, bucket: str, key: str, fileobj: IO[bytes], content_type: str) -> None:
        """Upload a spooled file (multipart when large), from its start."""
        fileobj.seek(0)
        await self._s3.upload_fileobj(
            fileobj, bucket, key, ExtraArgs={"ContentType": content_type}, Config=_upload_config()
        )

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


@functools.cache
def _upload_config() -> Any:
    """Outputs over 5 MiB go up in 5 MiB parts (S3's smallest), two in flight and one read ahead:
    an upload adds ~40 MB to the peak whatever the file's size (measured on a 70 MB file; the
    defaults read up to 100 parts of 8 MiB ahead and added 109 MB). Imported on first use:
    s3transfer costs ~9 ms of cold start.
    """
    from boto3.s3.transfer import TransferConfig

    mib = 1024 * 1024
    return TransferConfig(multipart_threshold=5 * mib, multipart_chunksize=5 * mib, max_concurrency=2, max_io_queue=1)
