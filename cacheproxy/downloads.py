"""Single-flight file downloads that every waiting request streams from while they run.

One :class:`Download` per file at a time (keyed by where the file will be stored). It runs
as its own task, not tied to the request that started it, so a client hanging up does not
stop it. It writes to a temporary file in the cache directory; readers open that file at
once and follow the ``written`` counter, so the first byte reaches a client as soon as it
arrives from upstream. At the end the size and sha256 are checked against the index; only
then is the file renamed into the store. On any failure the temporary is deleted and the
readers' transfers are broken off, so no client ever receives a "complete" wrong file.
"""

import asyncio
import hashlib
import logging
import os
from collections.abc import AsyncGenerator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import aiohttp

from cacheproxy.errors import CacheProxyError, IntegrityError, StorageFailed, UpstreamError
from cacheproxy.settings import redact_url
from cacheproxy.storage import Storage
from cacheproxy.upstream import Upstream

logger = logging.getLogger(__name__)

CHUNK = 256 * 1024
_RESUME_BACKOFF = 0.25


@dataclass(frozen=True, slots=True)
class FileSpec:
    """What to fetch and what it must be."""

    url: str
    final: Path  # where the verified file goes
    sha256: str | None
    size: int | None
    filename: str = ""  # for logs


class Download:
    """One upstream transfer in progress. Readers follow it with :meth:`stream`."""

    def __init__(self, spec: FileSpec, fd: int, tmp: Path) -> None:
        self.spec = spec
        self.tmp = tmp
        self._fd = fd
        self.written = 0
        self.size: int | None = spec.size
        loop = asyncio.get_running_loop()
        # Resolved when upstream has answered 200 (size known) or failed before any byte.
        self.started: asyncio.Future[None] = loop.create_future()
        self.finished: asyncio.Future[Path] = loop.create_future()
        self._progress: asyncio.Future[None] = loop.create_future()
        # Futures nobody awaited must not warn "exception was never retrieved".
        self.started.add_done_callback(_consume)
        self.finished.add_done_callback(_consume)

    def _notify(self) -> None:
        progress, self._progress = self._progress, asyncio.get_running_loop().create_future()
        if not progress.done():
            progress.set_result(None)

    def _verified(self) -> bool:
        return self.finished.done() and self.finished.exception() is None

    def open_reader(self) -> int:
        """An fd on the temporary, opened now, before a failure could unlink it."""
        return os.open(self.tmp, os.O_RDONLY)

    async def stream(
        self, reader_fd: int, start: int = 0, end: int | None = None
    ) -> AsyncGenerator[bytes]:
        """Yield bytes ``start..end`` (exclusive end; None = to the end) as they arrive.

        The caller owns (and closes) ``reader_fd``.

        Raises:
            CacheProxyError: the download failed; the transfer must be broken off.
        """
        offset = start
        while True:
            limit = self.written if end is None else min(self.written, end)
            if self.size is not None and not self._verified():
                # Hold back the last byte until the hash has checked out: a client that
                # got every byte of a Content-Length body would take a bad file as good.
                limit = min(limit, self.size - 1)
            if offset < limit:
                data = os.pread(reader_fd, min(CHUNK, limit - offset), offset)
                if not data:  # cannot happen for a growing file; never spin
                    raise IntegrityError("temporary file shorter than written")
                offset += len(data)
                yield data
                continue
            if end is not None and offset >= end:
                return
            if self.finished.done():
                if (failure := self.finished.exception()) is not None:
                    raise failure  # the same error for every reader: they decide per type
                if offset >= self.written:
                    return
                continue
            await asyncio.shield(self._progress)

    async def run(self, upstream: Upstream, storage: Storage, retries: int) -> None:
        spec = self.spec
        shown = redact_url(spec.url)
        digest = hashlib.sha256()
        resumes = 0
        try:
            while True:
                try:
                    await self._transfer(upstream, storage, digest, shown)
                    break
                except (aiohttp.ClientPayloadError, aiohttp.ClientConnectionError) as e:
                    # A reset or a short body mid-file: pick up where we are, with a Range
                    # (upstream file hosts support them; standards 0.6), rather than fail
                    # every waiting client.
                    if resumes >= retries:
                        raise
                    resumes += 1
                    logger.info("resuming %s at byte %d: %s", shown, self.written, e)
                    await asyncio.sleep(_RESUME_BACKOFF * resumes)
            if self.size is not None and self.written != self.size:
                raise IntegrityError(f"{shown}: got {self.written} of {self.size} bytes")
            if spec.sha256 is not None and digest.hexdigest() != spec.sha256:
                raise IntegrityError(f"{shown}: sha256 {digest.hexdigest()} != {spec.sha256}")
            os.close(self._fd)
            self._fd = -1
            try:
                await storage.commit(self.tmp, spec.final)
            except OSError as e:
                raise StorageFailed(f"cannot store {spec.filename}: {e.strerror or e}") from e
            self.size = self.written
            self.finished.set_result(spec.final)
            logger.info("stored %s (%d bytes)", spec.filename or spec.final.name, self.written)
        except BaseException as e:
            err = e if isinstance(e, CacheProxyError) else _as_error(e, shown)
            if isinstance(err, StorageFailed):
                logger.error("%s; serving it from upstream without storing", err)
            elif not isinstance(e, asyncio.CancelledError):
                logger.warning("download failed, nothing stored: %s", err)
            if not self.started.done():
                self.started.set_exception(err)
            self.finished.set_exception(err)
            if isinstance(e, asyncio.CancelledError):
                raise
        finally:
            if self._fd >= 0:
                os.close(self._fd)
            self.tmp.unlink(missing_ok=True)
            self._notify()

    async def _transfer(
        self, upstream: Upstream, storage: Storage, digest: "hashlib._Hash", shown: str
    ) -> None:
        """One upstream request: the whole file, or the rest of it from ``written``."""
        spec = self.spec
        resume_at = self.written
        range_header = f"bytes={resume_at}-" if resume_at else None
        async with upstream.open_file(spec.url, range_header=range_header) as resp:
            if resume_at:
                content_range = resp.headers.get("Content-Range", "")
                if resp.status != 206 or not content_range.startswith(f"bytes {resume_at}-"):
                    raise IntegrityError(f"{shown}: upstream cannot resume at byte {resume_at}")
            else:
                length = upstream.body_length(resp)
                if spec.size is not None and length is not None and length != spec.size:
                    raise IntegrityError(
                        f"{shown}: upstream length {length} != index size {spec.size}"
                    )
                self.size = spec.size if spec.size is not None else length
                if not self.started.done():
                    self.started.set_result(None)
            async for chunk in resp.content.iter_chunked(CHUNK):
                try:
                    storage.write_chunk(self._fd, chunk)  # local disk: cheap enough inline
                except OSError as e:
                    raise StorageFailed(f"cannot store {spec.filename}: {e.strerror or e}") from e
                digest.update(chunk)
                self.written += len(chunk)
                if self.size is not None and self.written > self.size:
                    raise IntegrityError(f"{shown}: body longer than {self.size} bytes")
                self._notify()


def _as_error(e: BaseException, shown: str) -> CacheProxyError:
    if isinstance(e, asyncio.CancelledError):
        return UpstreamError(f"download of {shown} was cancelled")
    if isinstance(e, TimeoutError):
        return UpstreamError(f"timed out reading {shown}")
    return UpstreamError(f"reading {shown} failed: {str(e) or type(e).__name__}")


def _consume(fut: "asyncio.Future[object] | asyncio.Future[None] | asyncio.Future[Path]") -> None:
    if not fut.cancelled():
        fut.exception()


class Downloads:
    """The in-flight downloads of one process, keyed by their final path."""

    def __init__(self, upstream: Upstream, storage: Storage, retries: int = 2) -> None:
        self._upstream = upstream
        self._storage = storage
        self._retries = retries
        self._inflight: dict[Path, Download] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self.on_start: Callable[[FileSpec], Awaitable[None]] | None = None

    def __len__(self) -> int:
        return len(self._inflight)

    def join(self, spec: FileSpec) -> tuple[Download, int, bool]:
        """The download for ``spec`` (started if none runs), a reader fd, and whether new.

        Synchronous on purpose: the reader is opened in the same step as the lookup, so a
        download that fails later cannot unlink its temporary before we hold it open.

        Raises:
            FileNotFoundError: the file was stored a moment ago; open it from the store.
        """
        download = self._inflight.get(spec.final)
        if download is not None and download.finished.done():
            if download.finished.exception() is None:
                raise FileNotFoundError(spec.final)  # committed: the caller opens it
            download = None  # failed and not yet forgotten: start afresh
        started = download is None
        if download is None:
            fd, tmp = self._storage.new_temp()
            download = Download(spec, fd, tmp)
            self._inflight[spec.final] = download
            task = asyncio.create_task(self._run(download), name=f"download {spec.final.name}")
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        # The temporary vanishes when the download ends (renamed or deleted); then the
        # caller looks in the store again.
        return download, download.open_reader(), started

    async def _run(self, download: Download) -> None:
        try:
            await download.run(self._upstream, self._storage, self._retries)
        finally:
            if self._inflight.get(download.spec.final) is download:
                del self._inflight[download.spec.final]

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
