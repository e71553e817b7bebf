"""A bucket (and a key prefix in it) on S3-compatible object storage, as a small async facade.

This module owns every call to the object store: addressing (``s3://BUCKET[/PREFIX]``),
conditional writes, multipart uploads, timeouts and the mapping of the client library's
many failures onto one exception, :class:`ObjectStoreError`, with a one-line message.
Callers name objects relative to the prefix and never see a client library type.

Why aiobotocore rather than obstore:

* Conditional writes are the whole point of a shared store for several replicas: a
  create-only put (``If-None-Match: *``) so a file is written once, and compare-and-swap
  (``If-Match: <etag>``) for leases. botocore's S3 model has both on PutObject, If-Match on
  DeleteObject (release a lease only if it is still ours) and If-None-Match on
  CompleteMultipartUpload, so a large file is create-only too and nothing is buffered in
  memory; ``test_the_installed_botocore_knows_conditional_writes`` checks the installed model.
  obstore (pre-1.0) has create-only and if-match puts, but turns a create-only write of a
  large file into a buffered one, and its API still changes between minor releases.
* It runs on aiohttp, which the proxy already depends on: one event loop and one HTTP stack.
* It reads credentials, region, endpoint (``AWS_ENDPOINT_URL_S3``/``AWS_ENDPOINT_URL``) and
  profiles from the standard AWS environment variables and files, so this module never
  handles a secret; it only ever formats error codes, operation names and keys.
* obstore is faster for bulk transfers, but a cache's hot path serves from the local tier;
  the store is read on a local miss and written once per file.

Every request runs under ``asyncio.timeout`` (the whole call, retries included) besides
botocore's per-socket connect and read timeouts; a streamed body is bounded per chunk.

botocore retries a failed request (``retries``). A conditional write whose first attempt
succeeded but whose response was lost comes back as 412 on the retry: callers that must know
(the leases in ``store/leases.py``) write a unique token and read the object back on a 412.
"""

import asyncio
import contextlib
import logging
import os
from collections.abc import AsyncIterator, Awaitable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import aiohttp
from aiobotocore.config import AioConfig
from aiobotocore.session import get_session
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectTimeoutError,
    EndpointConnectionError,
    NoCredentialsError,
    NoRegionError,
    PartialCredentialsError,
    ReadTimeoutError,
)

from cacheproxy.errors import SharedStoreError
from cacheproxy.urls import Location

if TYPE_CHECKING:
    from types_aiobotocore_s3 import S3Client
    from types_aiobotocore_s3.type_defs import CompletedPartTypeDef

logger = logging.getLogger(__name__)

T = TypeVar("T")

# S3's smallest part is 5 MiB (all but the last); 8 MiB parts keep a 1 GiB wheel at 128 parts,
# far below the 10,000-part limit, with one part in memory per upload.
PART_SIZE = 8 * 1024 * 1024
MIN_PART_SIZE = 5 * 1024 * 1024
CHUNK = 1024 * 1024
# SigV4 needs a region; S3-compatible stores accept any, and AWS's S3 answers this one
# with a redirect hint naming the right one. Used only when no setting names a region.
FALLBACK_REGION = "us-east-1"


class ObjectStoreError(SharedStoreError):
    """The object store failed or could not be reached; the message is one line."""


@dataclass(frozen=True)
class Timeouts:
    """Bounds, in seconds, on each call (the whole call, retries included) and its sockets."""

    connect: float = 5.0
    read: float = 30.0
    call: float = 60.0
    attempts: int = 3  # botocore's total attempts per request, the first included


@dataclass(frozen=True)
class ObjectInfo:
    """An object's name (relative to the prefix), entity tag and size."""

    name: str
    etag: str
    size: int
    modified: float = 0.0  # last write, seconds since the epoch (0 when not reported)


@dataclass(frozen=True)
class ObjectBytes:
    """A whole object read into memory (small objects: leases, records, pages)."""

    data: bytes
    info: ObjectInfo


def _one_line(text: str) -> str:
    return " ".join(text.split())[:300]


def _client_error(exc: ClientError) -> tuple[int, str]:
    status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
    code = exc.response.get("Error", {}).get("Code", "") or str(status)
    return status, code


def _is_precondition(exc: ClientError) -> bool:
    status, code = _client_error(exc)
    # 409 ConditionalRequestConflict: AWS's answer when another conditional write to the
    # same key is in flight; for us that is a lost race like 412.
    return status in {409, 412} or code in {"PreconditionFailed", "ConditionalRequestConflict"}


def _is_missing(exc: ClientError) -> bool:
    """The object is not there (not: the bucket is not there, which is a failure)."""
    status, code = _client_error(exc)
    if code == "NoSuchBucket":
        return False
    return status == 404 or code in {"NoSuchKey", "NotFound", "404"}


def describe(exc: BaseException) -> tuple[str, bool]:
    """A one-line reason for a client failure and whether it was a timeout.

    Built from error codes and exception types only: botocore's own messages may quote
    request URLs, and nothing here may ever echo a header or a credential.
    """
    if isinstance(exc, ClientError):
        status, code = _client_error(exc)
        return f"{_one_line(code)[:80]} (HTTP {status})", False
    if isinstance(exc, TimeoutError | ConnectTimeoutError | ReadTimeoutError):
        return "timed out", True
    if isinstance(exc, EndpointConnectionError):
        return "cannot connect to the endpoint", False
    if isinstance(exc, NoCredentialsError | PartialCredentialsError):
        return "no usable credentials in the AWS environment variables or files", False
    if isinstance(exc, NoRegionError):
        return "no region configured (AWS_REGION or a profile's region)", False
    return type(exc).__name__, False


def _fail(op: str, key: str, exc: BaseException) -> ObjectStoreError:
    reason, timeout = describe(exc)
    return ObjectStoreError(f"object store {op} {key}: {reason}", timeout=timeout)


# What a call may raise besides our own errors. botocore's ParamValidationError is a
# BotoCoreError; a ValueError of ours (an invalid name) is a bug and propagates as one.
_FAILURES = (ClientError, BotoCoreError, aiohttp.ClientError, OSError, TimeoutError)


class ObjectStore:
    """Objects under one :class:`Location`. Open with :meth:`connect`."""

    def __init__(self, client: "S3Client", location: Location, timeouts: Timeouts) -> None:
        self._client = client
        self.location = location
        self.timeouts = timeouts

    @classmethod
    @contextlib.asynccontextmanager
    async def connect(
        cls,
        location: Location,
        *,
        endpoint_url: str | None = None,
        timeouts: Timeouts | None = None,
    ) -> AsyncIterator["ObjectStore"]:
        """A store whose client reads credentials, region and endpoint the standard way.

        ``endpoint_url`` overrides ``AWS_ENDPOINT_URL_S3``/``AWS_ENDPOINT_URL`` and the
        profile's ``endpoint_url`` for S3-compatible stores.
        """
        timeouts = timeouts or Timeouts()
        session = get_session()
        # botocore's region setting reads AWS_DEFAULT_REGION and profiles, not AWS_REGION
        # (the newer name other AWS SDKs use), so that one is looked at here.
        region = (
            session.get_config_variable("region") or os.environ.get("AWS_REGION") or FALLBACK_REGION
        )
        config = AioConfig(
            connect_timeout=timeouts.connect,
            read_timeout=timeouts.read,
            retries={"max_attempts": timeouts.attempts, "mode": "standard"},
            # botocore 1.36 started adding CRC checksums to every upload by default, which
            # several S3-compatible stores rejected (boto/boto3#4392, boto/botocore#3352):
            # send them only where the API requires them. Our files are checked by sha256.
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
        )
        async with contextlib.AsyncExitStack() as stack:
            try:
                client = await stack.enter_async_context(
                    session.create_client(
                        "s3", region_name=region, endpoint_url=endpoint_url, config=config
                    )
                )
            except _FAILURES as exc:
                raise _fail("connect", str(location), exc) from exc
            yield cls(client, location, timeouts)

    def with_timeouts(self, timeouts: Timeouts) -> "ObjectStore":
        """The same client and location with other bounds on each call (its sockets keep
        the connect and read timeouts the client was made with)."""
        return ObjectStore(self._client, self.location, timeouts)

    async def _call(self, op: str, key: str, call: Awaitable[T]) -> T:
        try:
            async with asyncio.timeout(self.timeouts.call):
                return await call
        except _FAILURES as exc:
            raise _fail(op, key, exc) from exc

    def _info(self, key: str, response: Any) -> ObjectInfo:
        modified = response.get("LastModified")
        return ObjectInfo(
            self.location.name(key),
            str(response.get("ETag", "")),
            int(response.get("ContentLength", response.get("Size", 0))),
            modified.timestamp() if modified is not None else 0.0,
        )

    async def head(self, name: str) -> ObjectInfo | None:
        """The object's tag and size, or None when there is no such object."""
        key = self.location.key(name)
        try:
            async with asyncio.timeout(self.timeouts.call):
                response = await self._client.head_object(Bucket=self.location.bucket, Key=key)
        except ClientError as exc:
            if _is_missing(exc):
                return None
            raise _fail("head", key, exc) from exc
        except _FAILURES as exc:
            raise _fail("head", key, exc) from exc
        return self._info(key, response)

    async def _get_object(self, key: str) -> Any | None:
        """GetObject's response (its body not read yet); None when there is no such object."""
        try:
            async with asyncio.timeout(self.timeouts.call):
                return await self._client.get_object(Bucket=self.location.bucket, Key=key)
        except ClientError as exc:
            if _is_missing(exc):
                return None
            raise _fail("get", key, exc) from exc
        except _FAILURES as exc:
            raise _fail("get", key, exc) from exc

    async def _chunks(self, key: str, body: Any) -> AsyncIterator[bytes]:
        """A body's bytes as they arrive, each read bounded by the read timeout."""
        try:
            while True:
                async with asyncio.timeout(self.timeouts.read):
                    chunk = await body.read(CHUNK)
                if not chunk:
                    return
                yield chunk
        except _FAILURES as exc:
            raise _fail("get", key, exc) from exc

    async def get(self, name: str) -> ObjectBytes | None:
        """The whole object in memory, or None when there is no such object."""
        key = self.location.key(name)
        response = await self._get_object(key)
        if response is None:
            return None
        try:
            async with asyncio.timeout(self.timeouts.call), response["Body"] as body:
                data = await body.read()
        except _FAILURES as exc:
            raise _fail("get", key, exc) from exc
        info = self._info(key, response)
        if len(data) != info.size:
            raise ObjectStoreError(f"object store get {key}: {len(data)} of {info.size} bytes")
        return ObjectBytes(data, info)

    @contextlib.asynccontextmanager
    async def stream(self, name: str) -> AsyncIterator[tuple[ObjectInfo, AsyncIterator[bytes]]]:
        """The object's info and its bytes as they arrive, each chunk bounded by the read
        timeout; ObjectStoreError (never None) when it is missing or a read fails.

        For a reader that writes the bytes somewhere itself (a download's temporary, which
        clients follow while it grows: proxy/downloads.py) and checks them there.
        """
        key = self.location.key(name)
        response = await self._get_object(key)
        if response is None:
            raise ObjectStoreError(f"object store get {key}: no such object")
        async with response["Body"] as body:
            yield self._info(key, response), self._chunks(key, body)

    async def get_to_file(self, name: str, dest: Path) -> ObjectInfo | None:
        """Stream the object into ``dest`` (created or truncated); None when it is missing.

        On any failure ``dest`` is removed, so a caller never finds a partial file there.
        Each chunk is bounded by the read timeout, not the whole transfer by the call one.
        """
        key = self.location.key(name)
        response = await self._get_object(key)
        if response is None:
            return None
        info = self._info(key, response)
        written = 0
        try:
            async with response["Body"] as body:
                with dest.open("wb") as out:
                    async for chunk in self._chunks(key, body):
                        # A local file in our own directory, like store/disk_writer.py.
                        out.write(chunk)
                        written += len(chunk)
            if written != info.size:
                raise ObjectStoreError(f"object store get {key}: {written} of {info.size} bytes")
        except BaseException as exc:
            dest.unlink(missing_ok=True)  # noqa: ASYNC240 - a local unlink, as in disk_writer.py
            if isinstance(exc, _FAILURES):
                raise _fail("get", key, exc) from exc
            raise
        return info

    async def _put(
        self, op: str, name: str, data: bytes, *, create: bool = False, etag: str | None = None
    ) -> str | None:
        key = self.location.key(name)
        bucket = self.location.bucket
        try:
            async with asyncio.timeout(self.timeouts.call):
                if create:
                    response = await self._client.put_object(
                        Bucket=bucket, Key=key, Body=data, IfNoneMatch="*"
                    )
                elif etag is not None:
                    response = await self._client.put_object(
                        Bucket=bucket, Key=key, Body=data, IfMatch=etag
                    )
                else:
                    response = await self._client.put_object(Bucket=bucket, Key=key, Body=data)
        except ClientError as exc:
            if (create or etag is not None) and (_is_precondition(exc) or _is_missing(exc)):
                return None
            raise _fail(op, key, exc) from exc
        except _FAILURES as exc:
            raise _fail(op, key, exc) from exc
        return response["ETag"]

    async def put(self, name: str, data: bytes) -> str:
        """Write (or overwrite) the object; its new entity tag."""
        etag = await self._put("put", name, data)
        assert etag is not None  # unconditional: only a failure raises
        return etag

    async def put_create_only(self, name: str, data: bytes) -> str | None:
        """Create the object if there is none (``If-None-Match: *``); never overwrites.

        Its entity tag, or None when the object already exists.
        """
        return await self._put("create", name, data, create=True)

    async def put_if_match(self, name: str, data: bytes, etag: str) -> str | None:
        """Replace the object only if its entity tag is still ``etag`` (compare-and-swap).

        The new entity tag, or None when it changed or is gone (412, 409 or 404).
        """
        return await self._put("swap", name, data, etag=etag)

    async def delete(self, name: str, *, etag: str | None = None) -> bool:
        """Remove the object; with ``etag``, only if that is still its tag.

        False when the condition failed (another version, or none); unconditional deletes of
        a missing object succeed, as in S3.
        """
        key = self.location.key(name)
        bucket = self.location.bucket
        try:
            async with asyncio.timeout(self.timeouts.call):
                if etag is None:
                    await self._client.delete_object(Bucket=bucket, Key=key)
                else:
                    await self._client.delete_object(Bucket=bucket, Key=key, IfMatch=etag)
        except ClientError as exc:
            if etag is not None and (_is_precondition(exc) or _is_missing(exc)):
                return False
            raise _fail("delete", key, exc) from exc
        except _FAILURES as exc:
            raise _fail("delete", key, exc) from exc
        return True

    async def list_objects(
        self, prefix: str = "", *, page_size: int = 1000
    ) -> AsyncIterator[ObjectInfo]:
        """Every object whose name starts with ``prefix``, in key order, page by page."""
        base = f"{self.location.prefix}/" if self.location.prefix else ""
        start = base + prefix
        bucket = self.location.bucket
        token = ""
        while True:
            page = await self._call(
                "list",
                start or "/",
                self._client.list_objects_v2(
                    Bucket=bucket, Prefix=start, ContinuationToken=token, MaxKeys=page_size
                )
                if token
                else self._client.list_objects_v2(Bucket=bucket, Prefix=start, MaxKeys=page_size),
            )
            for item in page.get("Contents", []):
                yield self._info(item["Key"], item)
            if not page.get("IsTruncated"):
                return
            token = page["NextContinuationToken"]

    async def put_file(
        self, name: str, path: Path, *, create_only: bool = True, part_size: int = PART_SIZE
    ) -> str | None:
        """Upload a local file; with ``create_only``, only if there is no such object yet.

        Small files go up in one request. Larger ones go up as a multipart upload that is
        completed only after every part is in, and aborted on any failure or cancellation,
        so no reader ever sees a partial object. The new entity tag, or None when
        ``create_only`` and the object exists.

        A multipart create-only write is exclusive only where the store checks
        ``If-None-Match`` on CompleteMultipartUpload atomically: SeaweedFS 4.48 lets two
        racing completes both succeed (see tests/test_objectstore.py). One writer per key
        is the download lease's job (store/leases.py); this only never overwrites a key that
        existed before the upload began to complete.
        """
        if part_size < MIN_PART_SIZE:
            raise ValueError(f"part size {part_size} is below S3's minimum {MIN_PART_SIZE}")
        size = (await asyncio.to_thread(path.stat)).st_size
        if size <= part_size:
            data = await asyncio.to_thread(path.read_bytes)
            if create_only:
                return await self.put_create_only(name, data)
            return await self.put(name, data)
        return await self._multipart(name, path, create_only=create_only, part_size=part_size)

    async def _multipart(
        self, name: str, path: Path, *, create_only: bool, part_size: int
    ) -> str | None:
        async def parts() -> AsyncIterator[bytes]:
            with path.open("rb") as source:
                while chunk := await asyncio.to_thread(source.read, part_size):
                    yield chunk

        return await self.put_stream(name, parts(), create_only=create_only, part_size=part_size)

    async def put_stream(
        self,
        name: str,
        chunks: AsyncIterator[bytes],
        *,
        create_only: bool = True,
        part_size: int = PART_SIZE,
    ) -> str | None:
        """Upload bytes as they come (a download still running): parts go up as they fill,
        and the object is created only when ``chunks`` ends; if it raises (the download
        failed its check), the upload is aborted and nothing is ever visible.

        Up to ``part_size`` bytes in all go up in one request at the end. The new entity
        tag, or None when ``create_only`` and the object exists (see :meth:`put_file`).
        """
        if part_size < MIN_PART_SIZE:
            raise ValueError(f"part size {part_size} is below S3's minimum {MIN_PART_SIZE}")
        key = self.location.key(name)
        bucket = self.location.bucket
        pending = bytearray()
        upload_id: str | None = None
        parts: list[CompletedPartTypeDef] = []
        try:
            async for chunk in chunks:
                pending += chunk
                while len(pending) > part_size:  # the last part is sent at the end
                    if upload_id is None:
                        created = await self._call(
                            "upload",
                            key,
                            self._client.create_multipart_upload(Bucket=bucket, Key=key),
                        )
                        upload_id = created["UploadId"]
                    part = bytes(pending[:part_size])
                    del pending[:part_size]
                    parts.append(await self._upload_part(key, upload_id, len(parts) + 1, part))
            if upload_id is None:
                data = bytes(pending)
                return await (
                    self.put_create_only(name, data) if create_only else self.put(name, data)
                )
            if pending:
                parts.append(
                    await self._upload_part(key, upload_id, len(parts) + 1, bytes(pending))
                )
            return await self._complete(key, upload_id, parts, create_only=create_only)
        except BaseException as exc:
            if upload_id is not None:
                await self._abort(key, upload_id)
            if isinstance(exc, _FAILURES):
                raise _fail("upload", key, exc) from exc
            raise

    async def _upload_part(
        self, key: str, upload_id: str, number: int, data: bytes
    ) -> "CompletedPartTypeDef":
        async with asyncio.timeout(self.timeouts.call):
            response = await self._client.upload_part(
                Bucket=self.location.bucket,
                Key=key,
                UploadId=upload_id,
                PartNumber=number,
                Body=data,
            )
        return {"ETag": response["ETag"], "PartNumber": number}

    async def _complete(
        self, key: str, upload_id: str, parts: "list[CompletedPartTypeDef]", *, create_only: bool
    ) -> str | None:
        bucket = self.location.bucket
        try:
            async with asyncio.timeout(self.timeouts.call):
                if create_only:
                    done = await self._client.complete_multipart_upload(
                        Bucket=bucket,
                        Key=key,
                        UploadId=upload_id,
                        MultipartUpload={"Parts": parts},
                        IfNoneMatch="*",
                    )
                else:
                    done = await self._client.complete_multipart_upload(
                        Bucket=bucket,
                        Key=key,
                        UploadId=upload_id,
                        MultipartUpload={"Parts": parts},
                    )
        except ClientError as exc:
            if create_only and _is_precondition(exc):
                await self._abort(key, upload_id)
                return None
            raise
        return done["ETag"]

    async def _abort(self, key: str, upload_id: str) -> None:
        """Abort a multipart upload, even from a cancelled task; a failure is only logged.

        An upload left open is invisible to readers but keeps its parts stored until a
        bucket lifecycle rule (AbortIncompleteMultipartUpload) removes them.
        """
        abort = self._client.abort_multipart_upload(
            Bucket=self.location.bucket, Key=key, UploadId=upload_id
        )
        try:
            async with asyncio.timeout(self.timeouts.call):
                await asyncio.shield(abort)
        except _FAILURES as exc:
            logger.warning("object store abort %s: %s", key, describe(exc)[0])
        # A second cancellation while we wait propagates; the shielded abort goes on.
