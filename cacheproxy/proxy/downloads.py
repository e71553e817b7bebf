"""Single-flight file downloads that every waiting request streams from while they run.

One :class:`Download` per file at a time (keyed by where the file will be stored). It runs
as its own task, not tied to the request that started it, so a client hanging up does not
stop it. It writes to a temporary file in the cache directory; readers open that file at
once and follow the ``written`` counter, so the first byte reaches a client as soon as it
arrives from upstream. At the end the size and sha256 are checked against the index; only
then is the file renamed into the store. On any failure the temporary is deleted and the
readers' transfers are broken off, so no client ever receives a "complete" wrong file.

Across worker processes sharing the cache directory, a lock file per file elects the one
process that downloads it (:mod:`cacheproxy.store.filelock`); the others *follow* its temporary
(a fixed name) by watching it grow, and take the final file's appearance as success. The
kernel drops the lock of a worker that dies, so followers notice that too.
"""

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Coroutine, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from cacheproxy.errors import (
    CacheProxyError,
    IntegrityError,
    SharedStoreError,
    StorageFailed,
    UpstreamError,
)
from cacheproxy.figures.metrics import Metrics
from cacheproxy.proxy.upstream import Upstream
from cacheproxy.store.api import SharedFiles, Store, StoredCopy, UploadRight
from cacheproxy.store.disk_writer import DiskWriter
from cacheproxy.store.filelock import FileLock
from cacheproxy.urls import redact_url

logger = logging.getLogger(__name__)

CHUNK = 256 * 1024
Span = tuple[int, int]  # (offset, length) of bytes ready in a temporary


def read_span(fd: int, offset: int, length: int) -> Iterator[bytes]:
    """Read a span of a temporary in CHUNK pieces.

    Raises:
        IntegrityError: the file is shorter than the download says it has written.
    """
    end = offset + length
    while offset < end:
        data = os.pread(fd, min(CHUNK, end - offset), offset)
        if not data:  # cannot happen for a growing file; never spin
            raise IntegrityError("temporary file shorter than written")
        offset += len(data)
        yield data


_RESUME_BACKOFF = 0.25
# Following another worker's download: how often to look, and after how long without
# progress to check that its owner is still alive.
_FOLLOW_POLL = 0.02
_STALL_PROBE = 1.0
_JOIN_ATTEMPTS = 250  # x _FOLLOW_POLL: five seconds to find the other worker's temporary


@dataclass(frozen=True, slots=True)
class Relay:
    """A file's bytes piped from upstream; ``size`` is the whole file's, when known."""

    size: int | None
    chunks: AsyncIterator[bytes]


@dataclass(frozen=True, slots=True)
class FileSpec:
    """What to fetch and what it must be."""

    url: str
    final: Path  # where the verified file goes
    sha256: str | None
    size: int | None
    filename: str = ""  # for logs
    # Without a sha256: another hash the index gives (hashlib name, hex), checked instead.
    hash_name: str | None = None
    hash_value: str | None = None
    # The index the file is fetched through (its credentials and address policy, see
    # routing.py); None: the Downloads' own.
    upstream: Upstream | None = field(default=None, compare=False)
    # Called with (sha256, size) once a download of it is verified and stored (pins.py).
    verified: Callable[[str, int], None] | None = field(default=None, compare=False)


class Download:
    """One upstream transfer in progress. Readers follow it with :meth:`stream`."""

    def __init__(self, spec: FileSpec, tmp: Path, fd: int = -1) -> None:
        self.spec = spec
        self.tmp = tmp
        self._fd = fd  # the writing end, for the owner; -1 for a follower
        self.written = 0  # bytes in the temporary: what readers may read
        self.received = 0  # bytes from upstream (ahead of `written` by the disk backlog)
        self._writer: DiskWriter | None = None  # the owner's; None for a follower
        self.sha256: str | None = None  # of the verified bytes, once stored by the owner
        self.size: int | None = spec.size
        # Replicas (store/tiered.py): the shared store holds the file; copy it from there.
        self.from_store: SharedFiles | None = None
        self.store_bytes = 0  # of `received`, the bytes that came from the shared store
        self.store_cut = False  # the store failed part way: the rest was asked of upstream
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

    @property
    def succeeded(self) -> bool:
        return self._verified()

    def grow(self, written: int) -> None:
        """A follower saw the owner's temporary reach ``written`` bytes."""
        self.written = written
        if not self.started.done():
            self.started.set_result(None)
        self._notify()

    def complete(self, size: int) -> None:
        """A follower saw the verified file land in the store."""
        self.written = self.size = size
        if not self.started.done():
            self.started.set_result(None)
        self.finished.set_result(self.spec.final)
        self._notify()

    def fail(self, err: CacheProxyError) -> None:
        if not self.started.done():
            self.started.set_exception(err)
        if not self.finished.done():
            self.finished.set_exception(err)
        self._notify()

    def _verified(self) -> bool:
        return self.finished.done() and self.finished.exception() is None

    def open_reader(self) -> int:
        """An fd on the temporary, opened now, before a failure could unlink it."""
        return os.open(self.tmp, os.O_RDONLY)

    async def spans(self, start: int = 0, end: int | None = None) -> AsyncGenerator[Span]:
        """Yield ``(offset, length)`` spans of bytes ``start..end`` (exclusive end; None =
        to the end) as they reach the temporary; a reader sends each from its own fd.

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
                yield offset, limit - offset
                offset = limit
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

    async def run(self, upstream: Upstream, storage: Store, retries: int) -> None:
        spec = self.spec
        shown = redact_url(spec.url)
        other = spec.hash_name if spec.sha256 is None and spec.hash_value else None
        writer = DiskWriter(
            self._fd, storage.write_pool, self._written, storage.write_chunk, also_hash=other
        )
        self._writer = writer
        self._fd = -1  # the writer owns (and closes) it now
        resumes = 0
        try:
            copied = self.from_store is not None and await self._copy_from_store(writer)
            while not copied:
                try:
                    await self._transfer(upstream, writer, shown)
                    break
                except (aiohttp.ClientPayloadError, aiohttp.ClientConnectionError) as e:
                    # A reset or a short body mid-file: pick up where we are, with a Range
                    # (upstream file hosts support them, as PyPI's does), rather than fail
                    # every waiting client.
                    if resumes >= retries:
                        raise
                    resumes += 1
                    logger.info("resuming %s at byte %d: %s", shown, self.received, e)
                    await asyncio.sleep(_RESUME_BACKOFF * resumes)
            try:
                await writer.finish()
            except OSError as e:
                raise StorageFailed(f"cannot store {spec.filename}: {e.strerror or e}") from e
            self.written = writer.done  # its progress callback may still be on its way
            if self.size is not None and self.written != self.size:
                raise IntegrityError(f"{shown}: got {self.written} of {self.size} bytes")
            digest = writer.digest.hexdigest()
            if spec.sha256 is not None and digest != spec.sha256:
                raise IntegrityError(f"{shown}: sha256 {digest} != {spec.sha256}")
            if writer.other_digest is not None and (
                (got := writer.other_digest.hexdigest()) != spec.hash_value
            ):
                raise IntegrityError(f"{shown}: {spec.hash_name} {got} != {spec.hash_value}")
            writer.close()
            try:
                await storage.commit(self.tmp, spec.final)
            except OSError as e:
                raise StorageFailed(f"cannot store {spec.filename}: {e.strerror or e}") from e
            self.size = self.written
            self.sha256 = digest
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
            writer.close()  # a second close is a no-op for the thread
            self.tmp.unlink(missing_ok=True)
            self._notify()

    def _written(self) -> None:
        """The writer thread put more bytes in the file (called on the loop)."""
        # `written` only moves once bytes are in the file: readers pread up to it.
        if self._writer is not None:
            self.written = self._writer.done
        self._notify()

    async def _copy_from_store(self, writer: DiskWriter) -> bool:
        """Copy the file from the shared store; False when that failed part way (the rest
        then comes from upstream, with a Range from where the store stopped: the hash
        checks the whole, whichever tier each byte came from)."""
        spec = self.spec
        assert self.from_store is not None
        assert spec.sha256 is not None
        try:
            async with self.from_store.open_file(spec.sha256) as (size, chunks):
                if spec.size is not None and size != spec.size:
                    raise IntegrityError(
                        f"{spec.filename} in the object store: {size} bytes, not {spec.size}"
                    )
                self.size = size
                if not self.started.done():
                    self.started.set_result(None)
                shown = f"{spec.filename} in the object store"
                async for chunk in chunks:
                    self.store_bytes += len(chunk)
                    await self._take(writer, chunk, size, shown)
        except SharedStoreError as e:
            self.store_cut = True
            logger.warning(
                "copying %s from the object store stopped at byte %d (%s); "
                "the rest comes from upstream",
                spec.filename,
                self.received,
                e,
            )
            return False
        return True

    async def _transfer(self, upstream: Upstream, writer: DiskWriter, shown: str) -> None:
        """One upstream request: the whole file, or the rest of it from ``received``."""
        spec = self.spec
        resume_at = self.received
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
                await self._take(writer, chunk, self.size, shown)

    async def _take(self, writer: DiskWriter, chunk: bytes, size: int | None, shown: str) -> None:
        """Hand one chunk of the file (from the store or upstream) to the writer: never more
        than ``size`` bytes in all, never past a failed write."""
        self.received += len(chunk)
        if size is not None and self.received > size:
            raise IntegrityError(f"{shown}: body longer than {size} bytes")
        if writer.error is not None:
            raise StorageFailed(
                f"cannot store {self.spec.filename}: {writer.error.strerror or writer.error}"
            )
        writer.put(chunk)
        await writer.wait_for_room()


async def _verified_bytes(download: Download, fd: int) -> AsyncIterator[bytes]:
    """The download's bytes as they reach its temporary (read through ``fd``, which this
    closes), ending only once the whole file is verified (its last byte is held back until
    then, see :meth:`Download.spans`)."""
    try:
        async for offset, length in download.spans():
            for data in read_span(fd, offset, length):
                yield data
    finally:
        os.close(fd)


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
    """The downloads this process runs or follows, keyed by their final path."""

    def __init__(
        self, upstream: Upstream, storage: Store, metrics: Metrics, retries: int = 2
    ) -> None:
        self._upstream = upstream
        self._storage = storage
        self._metrics = metrics
        self._retries = retries
        self._inflight: dict[Path, Download] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        # Set whenever this process stores a file (the size-limit check waits on it).
        self.stored = asyncio.Event()

    def __len__(self) -> int:
        return len(self._inflight)

    @contextlib.asynccontextmanager
    async def upstream_range(
        self, spec: FileSpec, start: int, end: int, content_range: str
    ) -> AsyncIterator[AsyncIterator[bytes] | None]:
        """Bytes ``start..end`` (inclusive) of the file straight from upstream, for a Range
        far ahead of our own download; None when upstream does not send exactly that range.

        uv reads a wheel's zip directory (its last bytes) before deciding to download it;
        on a cold multi-GB wheel, waiting for our download to get there would stall its
        resolution. The full download keeps running and is verified as usual.

        Raises:
            UpstreamError: upstream could not be asked.
        """
        upstream = spec.upstream or self._upstream
        async with upstream.open_file(spec.url, range_header=f"bytes={start}-{end}") as up:
            if up.status != 206 or up.headers.get("Content-Range") != content_range:
                yield None
            else:
                yield up.content.iter_chunked(CHUNK)

    @contextlib.asynccontextmanager
    async def relay(self, spec: FileSpec, offset: int, end: int | None) -> AsyncIterator[Relay]:
        """Bytes ``offset..end`` (exclusive; None: to the end) straight from upstream,
        storing nothing: for when the cache cannot store (a full disk). The client still
        gets its file and checks its hash, as it does for any index.

        Raises:
            UpstreamError: upstream could not be asked.
            ConnectionResetError: upstream cannot send the rest as a range.
        """
        whole = offset == 0 and end is None
        range_header = None if whole else f"bytes={offset}-{'' if end is None else end - 1}"
        upstream = spec.upstream or self._upstream
        async with upstream.open_file(spec.url, range_header=range_header) as up:
            if range_header and not up.headers.get("Content-Range", "").startswith(
                f"bytes {offset}-"
            ):
                raise ConnectionResetError("upstream cannot send the rest as a range")
            size = spec.size if spec.size is not None else up.content_length
            yield Relay(size, up.content.iter_chunked(CHUNK))

    async def join(self, spec: FileSpec) -> tuple[Download, int, bool]:
        """The download of ``spec`` (started if nobody runs one), a reader fd on its
        temporary, and whether this call started it.

        The reader is opened in the same step as the lookup (no await in between), so a
        download that fails later cannot delete its temporary before we hold it open.

        Raises:
            FileNotFoundError: the file was stored a moment ago; open it from the store.
            OSError: the temporary cannot be created (disk full).
        """
        for _ in range(_JOIN_ATTEMPTS):
            download = self._inflight.get(spec.final)
            if download is not None and download.finished.done():
                if download.finished.exception() is None:
                    raise FileNotFoundError(spec.final)  # committed: the caller opens it
                download = None  # failed and not yet forgotten: start afresh
            if download is not None:
                self._metrics.add("coalesced")
                return download, download.open_reader(), False
            lock = FileLock(self._storage.lock_path(spec.final))
            if lock.try_acquire():
                return self._own(spec, lock)
            if spec.final.exists():
                raise FileNotFoundError(spec.final)
            tmp = self._storage.temp_path(spec.final)
            try:
                reader = os.open(tmp, os.O_RDONLY)
            except FileNotFoundError:
                # The other worker holds the lock but has not created the temporary yet,
                # or has just renamed it into place: look again in a moment.
                await asyncio.sleep(_FOLLOW_POLL)
                continue
            download = Download(spec, tmp)
            self._start(download, self._follow(download))
            self._metrics.add("coalesced")
            return download, reader, False
        raise UpstreamError(f"could not join the download of {spec.filename}; retry")

    def _own(self, spec: FileSpec, lock: FileLock) -> tuple[Download, int, bool]:
        if spec.final.exists():  # finished between our store lookup and taking the lock
            lock.release(remove=False)
            raise FileNotFoundError(spec.final)
        try:
            fd, tmp = self._storage.new_temp(spec.final)
        except OSError:
            lock.release(remove=False)
            raise
        download = Download(spec, tmp, fd)
        reader = download.open_reader()
        self._start(download, self._run(download, lock))
        return download, reader, True

    def _start(self, download: Download, work: Coroutine[Any, Any, None]) -> None:
        self._inflight[download.spec.final] = download
        task = asyncio.create_task(work, name=f"download {download.spec.filename}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _forget(self, download: Download) -> None:
        if self._inflight.get(download.spec.final) is download:
            del self._inflight[download.spec.final]

    async def _run(self, download: Download, lock: FileLock) -> None:
        started = time.monotonic()
        right: UploadRight | None = None
        sharing: asyncio.Task[bool] | None = None
        shared = False  # the store holds the file (put there by this download)
        try:
            upstream = download.spec.upstream or self._upstream
            right = await self._claim(download)
            if right is not None:
                # Parts go up while the bytes arrive; the object appears after the check.
                reader = download.open_reader()  # now, while the temporary surely exists
                sharing = asyncio.create_task(right.publish(_verified_bytes(download, reader)))
            await download.run(upstream, self._storage, self._retries)
            if sharing is not None:
                shared = await sharing
        finally:
            if sharing is not None and not sharing.done():
                sharing.cancel()  # we are being cancelled: the upload is aborted
                with contextlib.suppress(asyncio.CancelledError):
                    await sharing
            if right is not None:
                await right.release()
            await self._after_store_copy(download)
            from_upstream = max(download.written - download.store_bytes, 0)
            self._metrics.add("upstream_bytes", value=from_upstream)
            self._metrics.add("tier_bytes", "upstream", value=from_upstream)
            self._metrics.add(
                "tier_bytes", "store", value=min(download.store_bytes, download.written)
            )
            self._metrics.add("upstream_download_seconds", value=time.monotonic() - started)
            if download.succeeded:
                if not shared:
                    self._not_shared(download)
                self._metrics.add("cache_files")
                self._metrics.add("cache_bytes", value=download.written)
                self.stored.set()
                if download.spec.verified is not None and download.sha256 is not None:
                    try:
                        download.spec.verified(download.sha256, download.written)
                    except Exception:  # the file is stored and served; a pin is extra
                        logger.exception("cannot pin the hash of %s", download.spec.filename)
            elif download.finished.done() and (failure := download.finished.exception()):
                self._metrics.error(str(failure))
            self._forget(download)
            # On success the file is in place: the lock file can go. After a failure it
            # stays (empty), so no second lock file can ever exist next to a held one.
            lock.release(remove=download.succeeded)

    async def _claim(self, download: Download) -> UploadRight | None:
        """With a shared store (replicas), where the file comes from: the store (then
        ``download.from_store`` is set) or upstream, under the returned right to put it in
        the store for every replica. None: upstream, for this replica only."""
        shared, sha256 = self._storage.shared, download.spec.sha256
        if shared is None or sha256 is None:
            return None
        claim = await shared.claim_file(sha256)
        if isinstance(claim, StoredCopy):
            download.from_store = shared
            return None
        return claim

    def _not_shared(self, download: Download) -> None:
        """A file downloaded from upstream and verified that the shared store did not get
        (it was down, or failed the upload): the store back-fills it later."""
        # Only files named by their sha256 are shared (see _claim).
        shared, sha256 = self._storage.shared, download.spec.sha256
        if shared is not None and download.from_store is None and sha256 is not None:
            shared.not_shared(sha256)

    async def _after_store_copy(self, download: Download) -> None:
        """A copy from the store that did not hash to its name: remove it there, so the
        next request downloads the file from upstream. Not after the store failed part way:
        the failure may then be upstream's (a resume it refused, or bad bytes), and the
        store's object is not known to be bad."""
        failure = download.finished.exception() if download.finished.done() else None
        shared, sha256 = download.from_store, download.spec.sha256
        if (
            isinstance(failure, IntegrityError)
            and not download.store_cut
            and shared is not None
            and sha256 is not None
        ):
            with contextlib.suppress(SharedStoreError):
                await shared.drop_damaged_file(sha256)

    async def _follow(self, download: Download) -> None:
        """Track a download another worker runs: its temporary's size is our progress;
        the final file appearing is success; the temporary vanishing without one, or the
        owner's lock going while nothing moves (it died), is failure."""
        spec = download.spec
        loop = asyncio.get_running_loop()
        last_move = loop.time()
        try:
            if download.size is not None and not download.started.done():
                download.started.set_result(None)
            while True:
                if spec.final.exists():
                    download.complete(spec.final.stat().st_size)
                    return
                try:
                    size = os.stat(download.tmp).st_size
                except FileNotFoundError:
                    if spec.final.exists():
                        continue
                    raise UpstreamError(
                        f"the worker downloading {spec.filename} failed; retry"
                    ) from None
                if size > download.written:
                    download.grow(size)
                    last_move = loop.time()
                elif loop.time() - last_move > _STALL_PROBE and not FileLock.is_held(
                    self._storage.lock_path(spec.final)
                ):
                    if spec.final.exists():
                        continue
                    raise UpstreamError(f"the worker downloading {spec.filename} stopped; retry")
                await asyncio.sleep(_FOLLOW_POLL)
        except BaseException as e:
            download.fail(e if isinstance(e, CacheProxyError) else _as_error(e, spec.filename))
            if isinstance(e, asyncio.CancelledError):
                raise
        finally:
            self._forget(download)

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
