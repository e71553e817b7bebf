"""Hash and write a download's bytes in a worker thread, in order, off the event loop.

Profiled on a cold download (bench/profile.py cold-huge), the loop spent 27% of its time
in ``sha256.update`` and 17% in ``os.write``: both release the GIL, so done in a thread
they run on another core while the loop reads from upstream and serves clients. The loop
only queues chunks; :attr:`DiskWriter.done` moves (and ``on_progress`` is called on the
loop) when the bytes are in the file, so readers never see bytes before they are written.

One drain job at a time per download (an actor on a shared pool), so writes and the
hash stay in order. The thread owns the descriptor from the start: it is closed there,
after the last write, so a write can never land on a descriptor number reused elsewhere.
"""

import asyncio
import collections
import contextlib
import hashlib
import logging
import os
import threading
from collections.abc import Callable
from concurrent.futures import Executor

logger = logging.getLogger(__name__)

# How much may wait in memory for the disk before the download stops reading upstream.
MAX_BACKLOG = 8 * 1024 * 1024
# Flush to disk every this many bytes, so the fsync at commit (which the last byte sent to
# clients waits for) has little left to do: 35 ms for a 54 MB wheel here otherwise.
WRITEBACK_EVERY = 8 * 1024 * 1024


def write_all(fd: int, data: bytes | memoryview) -> None:
    """Write all of ``data`` (os.write may write less than asked).

    Raises:
        OSError: the disk is full (ENOSPC) or failing.
    """
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def flush_to_disk(fd: int) -> None:
    """Start the disk write-back of what ``fd`` holds (best effort: commit fsyncs)."""
    with contextlib.suppress(OSError):  # commit's fsync reports a failing disk
        os.fdatasync(fd)


class DiskWriter:
    """The writing end of one download's temporary file."""

    def __init__(
        self,
        fd: int,
        pool: Executor,
        on_progress: Callable[[], None],
        write: Callable[[int, bytes], None] = write_all,
        also_hash: str | None = None,
    ) -> None:
        self._fd = fd
        self._pool = pool
        self._on_progress = on_progress
        self._write = write
        self._loop = asyncio.get_running_loop()
        self._lock = threading.Lock()
        # Chunks to write; None, queued last, means "close the descriptor".
        self._pending: collections.deque[bytes | None] = collections.deque()
        self._draining = False
        self._publish_queued = False
        self._closing = False
        self.digest = hashlib.sha256()
        # A second hash, when the index gives another one instead of a sha256 (md5, ...).
        self.other_digest = hashlib.new(also_hash) if also_hash is not None else None
        self.queued = 0  # bytes handed over (loop side)
        self.done = 0  # bytes in the file (written by the thread, read on the loop)
        self.error: OSError | None = None
        self._flushed_at = 0
        self._waiters: list[tuple[int, asyncio.Future[None]]] = []
        self.closed = asyncio.Event()  # set once the thread has closed the descriptor

    # -- loop side ------------------------------------------------------------------------

    def put(self, chunk: bytes) -> None:
        if not chunk:
            return
        self.queued += len(chunk)
        self._submit(chunk)

    async def wait_for_room(self) -> None:
        """Back-pressure: wait while more than MAX_BACKLOG bytes are not yet written."""
        if self.queued - self.done > MAX_BACKLOG and self.error is None:
            await self._until(self.queued - MAX_BACKLOG // 2)

    async def finish(self) -> None:
        """Wait until every queued byte is in the file.

        Raises:
            OSError: a write failed (the rest was dropped).
        """
        if self.done < self.queued and self.error is None:
            await self._until(self.queued)
        if self.error is not None:
            raise self.error

    def close(self) -> None:
        """Have the descriptor closed after whatever is still queued (once: a second
        close could hit a descriptor number reused meanwhile)."""
        if not self._closing:
            self._closing = True
            self._submit(None)

    def _submit(self, item: bytes | None) -> None:
        with self._lock:
            self._pending.append(item)
            if self._draining:
                return
            self._draining = True
        self._pool.submit(self._drain)

    def _until(self, done: int) -> "asyncio.Future[None]":
        fut = self._loop.create_future()
        self._waiters.append((done, fut))
        return fut

    def _publish(self) -> None:
        self._publish_queued = False  # before reading `done`: see _drain
        still = []
        for target, fut in self._waiters:
            if fut.done():
                continue
            if self.done >= target or self.error is not None:
                fut.set_result(None)
            else:
                still.append((target, fut))
        self._waiters = still
        self._on_progress()

    # -- thread side ----------------------------------------------------------------------

    def _drain(self) -> None:
        while True:
            with self._lock:
                if not self._pending:
                    self._draining = False
                    return
                item = self._pending.popleft()
            if item is None:
                os.close(self._fd)
                self._call_loop(self.closed.set)
                continue
            if self.error is not None:
                continue  # after a failed write nothing more goes to the file
            try:
                self._write(self._fd, item)
                self.digest.update(item)
                if self.other_digest is not None:
                    self.other_digest.update(item)
                if self.done + len(item) - self._flushed_at >= WRITEBACK_EVERY:
                    self._flushed_at = self.done + len(item)
                    flush_to_disk(self._fd)
            except OSError as e:
                self.error = e
            except Exception as e:  # never leave the loop waiting on a dead drain job
                logger.exception("writing a download failed")
                self.error = OSError(f"write failed: {e}")
            else:
                self.done += len(item)
            if not self._publish_queued:
                self._publish_queued = True
                self._call_loop(self._publish)

    def _call_loop(self, fn: Callable[[], object]) -> None:
        with contextlib.suppress(RuntimeError):  # the loop is gone: nobody waits any more
            self._loop.call_soon_threadsafe(fn)
