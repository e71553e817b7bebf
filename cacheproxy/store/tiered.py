"""A replica's store: the local cache directory as a tier in front of a shared bucket.

Everything is served from the local tier (:class:`cacheproxy.store.local.Storage`, which
this extends), so hits cost what they cost on one machine: sendfile from local paths. The
bucket (:mod:`cacheproxy.store.shared`) is read where the local tier has nothing or only
a stale copy, and written after the local tier:

* pages: a record missing or past its TTL locally is looked up in the store, and a later
  one there is copied in (bodies checked against their names) instead of asking upstream.
  Stale everywhere, one replica takes the page's lease and asks upstream; the others wait
  a moment for its record. Every page this replica fetches is written back.
* files: :attr:`shared` tells a download where to get a file (proxy/downloads.py): from
  the store, or from upstream for every replica under a lease, then put in the store.

When the store fails, requests go on from the local tier and upstream (``Health``), and
``/-/ready`` says the store is down until a probe gets through again. Files downloaded
meanwhile are verified and kept locally; once a probe gets through, they are *back-filled*:
uploaded in the background, create-only and hashed again on the way, so the other
replicas find them in the store. The list of them is kept in memory only (see
:meth:`TieredStore._start_backfill`).
"""

import asyncio
import contextlib
import hashlib
import logging
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Coroutine, Mapping
from pathlib import Path
from typing import Any, BinaryIO

from cacheproxy.errors import SharedStoreError
from cacheproxy.store.counters import Tally
from cacheproxy.store.leases import Lease
from cacheproxy.store.local import Storage
from cacheproxy.store.objectstore import PART_SIZE, ObjectStore, Timeouts
from cacheproxy.store.records import DamagedBody, FileMap, PageRecord
from cacheproxy.store.shared import (
    BACKFILL_UPLOADS,
    FILE_LEASE_TTL,
    MAX_PAGE_WAIT,
    PAGE_LEASE_TTL,
    POLL,
    SharedPage,
    SharedStore,
)
from cacheproxy.urls import Location

logger = logging.getLogger(__name__)

PROBE_EVERY = 5.0  # seconds between readiness probes of the store
CLOSE_WAIT = 10.0  # seconds a closing replica gives its writes to the store
# A store that does not answer must not hold requests long: a replica serves from its
# local tier and upstream meanwhile (a whole-call bound; large files are streamed, each
# read bounded by `read`).
STORE_TIMEOUTS = Timeouts(connect=3.0, read=15.0, call=30.0, attempts=2)


class TieredStore(Storage):
    """The local tier (all of :class:`Storage`) with a shared store behind it."""

    def __init__(
        self,
        root: Path,
        index: Any,
        *,
        store: SharedStore,
        ttl: float,
        clock: Callable[[], float],
        client: contextlib.AsyncExitStack,
        loop: asyncio.AbstractEventLoop,
        tally: Tally | None = None,
    ) -> None:
        super().__init__(root, index)
        self.store = store
        self.shared = store
        self.ttl = ttl
        self.clock = clock
        self._client = client  # closes the store's client
        self._loop = loop
        self._tally = tally  # figures.metrics.Metrics: back-filled files
        self._probe: asyncio.Task[None] | None = None
        self._backfill: asyncio.Task[None] | None = None
        self._page_leases: dict[str, Lease] = {}  # pages this replica asks upstream for
        self._no_wait: dict[str, float] = {}  # pages not to wait for another replica on
        self._looking: dict[str, asyncio.Future[PageRecord | None]] = {}
        self._publishing: dict[str, asyncio.Task[None]] = {}  # the last write of each page
        self._tasks: set[asyncio.Future[None]] = set()
        self._invalidated: dict[str, float] = {}  # page -> when an admin invalidated it

    @classmethod
    async def open_tiered(
        cls,
        root: Path,
        location: Location,
        holder: str,
        *,
        ttl: float,
        clean: bool = True,
        clock: Callable[[], float] = time.time,
        timeouts: Timeouts = STORE_TIMEOUTS,
        lease_ttl: float = FILE_LEASE_TTL,
        tally: Tally | None = None,
    ) -> "TieredStore":
        """The local tier at ``root`` in front of ``location``; a page is fresh for ``ttl``.

        No request is made yet: a replica starts (and serves its local tier) while the
        store is down, and says so on ``/-/ready``.
        """
        stack = contextlib.AsyncExitStack()
        objects = await stack.enter_async_context(ObjectStore.connect(location, timeouts=timeouts))
        try:
            tiered = await asyncio.to_thread(
                cls.open_sync,
                root,
                clean=clean,
                store=SharedStore(objects, holder, clock=clock, file_lease_ttl=lease_ttl),
                ttl=ttl,
                clock=clock,
                client=stack,
                loop=asyncio.get_running_loop(),
                tally=tally,
            )
        except BaseException:
            await stack.aclose()
            raise
        assert isinstance(tiered, TieredStore)
        tiered._probe = asyncio.create_task(tiered._probe_forever(), name="object store probe")
        return tiered

    async def _probe_forever(self) -> None:
        while True:
            with contextlib.suppress(SharedStoreError):
                await self.store.probe()
                self._start_backfill()
            await asyncio.sleep(PROBE_EVERY)

    # -- back-fill -----------------------------------------------------------------------

    def _start_backfill(self) -> None:
        """The store answers: put in it what this replica stored only locally meanwhile
        (in the background: requests never wait for it).

        What to back-fill is remembered in memory, not on disk: a replica's local tier is
        usually as short-lived as the replica (an ``emptyDir`` in
        deploy/kubernetes/replicas/), and a file a restarted replica forgot is only fetched
        from upstream once more by a replica that misses it, as without back-fill.
        """
        if self.store.unshared and (self._backfill is None or self._backfill.done()):
            self._backfill = asyncio.create_task(self._backfill_all(), name="back-fill")

    async def _backfill_all(self) -> None:
        todo = iter(self.store.take_unshared())
        counts: Counter[str] = Counter()

        async def worker() -> None:
            for sha256 in todo:  # shared by the workers: each file is taken once
                counts[await self._backfill_one(sha256)] += 1

        await asyncio.gather(*(worker() for _ in range(BACKFILL_UPLOADS)))
        logger.info(
            "back-fill of the object store: %d files put, %d there already, %d evicted "
            "here, %d damaged here, %d left for later",
            counts["put"],
            counts["there"],
            counts["gone"],
            counts["damaged"],
            counts["later"],
        )
        if self._tally is not None and counts["put"]:
            self._tally.add("backfilled", value=counts["put"])

    async def _backfill_one(self, sha256: str) -> str:
        """Put one locally stored file in the store; what happened, for the log line."""
        if not self.store.health.usable():
            self.store.not_shared(sha256)  # down again: the next recovery tries it
            return "later"
        try:
            if await self.store.file_size(sha256) is not None:
                return "there"  # another replica stored it meanwhile: never overwritten
            source = await asyncio.to_thread(self.blob_path(sha256).open, "rb")
        except FileNotFoundError:
            return "gone"  # evicted since: nothing to share (upstream has it)
        except SharedStoreError:
            self.store.not_shared(sha256)
            return "later"
        try:
            if await self.store.backfill_file(sha256, _checked_chunks(source, sha256)):
                return "put"
            return "there"
        except SharedStoreError:
            self.store.not_shared(sha256)
            return "later"
        except DamagedFile as exc:
            self.drop_damaged_file(self.blob_path(sha256), str(exc))
            return "damaged"
        finally:
            source.close()

    async def close(self) -> None:
        for task in (self._probe, self._backfill):  # back-fill waits for the next start
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        pending = [*self._publishing.values(), *self._tasks]
        if pending:
            await asyncio.wait(pending, timeout=CLOSE_WAIT)
        for lease in list(self._page_leases.values()):
            await self.store.release(self.store.page_leases, lease)
        await self._client.aclose()
        await super().close()

    def check_writable(self) -> None:
        """The local tier takes writes and the store answered its last request."""
        super().check_writable()
        if (problem := self.store.health.problem) is not None:
            raise OSError(problem)

    # -- pages ---------------------------------------------------------------------------

    def invalidate_page(self, key: str) -> bool:
        """Forget a page here and in the store (an admin's invalidation), so the next
        request fetches it afresh; other replicas drop their copies within a TTL. (A page
        dropped for a damaged local body keeps the store's copy: that one is checked.)"""
        dropped = super().drop_page(key)
        # Until a later fetch, no copy fetched before now is read back from the store,
        # whether or not the delete below has landed (or failed).
        _bounded(self._invalidated)
        self._invalidated[key] = self.clock()
        # Called from a thread (proxy/service.py): the store's client lives on the loop.
        self._loop.call_soon_threadsafe(self._spawn, self.store.drop_record(key))
        return dropped

    def _fresh(self, record: PageRecord) -> bool:
        return self.clock() - record.fetched_at < self.ttl

    async def get_page(self, key: str) -> PageRecord | None:
        local = await super().get_page(key)
        if local is not None and (local.status != 200 or self._fresh(local)):
            return local
        if not self.store.health.usable():
            return local
        # One look per page at a time: concurrent requests share it.
        looking = self._looking.get(key)
        if looking is None:
            looking = asyncio.ensure_future(self._from_store(key, local))
            self._looking[key] = looking
            looking.add_done_callback(lambda _f: self._looking.pop(key, None))
        return await asyncio.shield(looking)

    async def _from_store(self, key: str, local: PageRecord | None) -> PageRecord | None:
        try:
            return await self._from_store_or_lease(key, local)
        except SharedStoreError:
            return local

    async def _from_store_or_lease(self, key: str, local: PageRecord | None) -> PageRecord | None:
        page = self._if_later(key, await self.store.read_record(key), local)
        if page is not None and await self._install(key, page):
            local = page.record
            if self._fresh(local):
                return local
        if self._no_wait.get(key, 0.0) > self.clock():
            return local  # waited for another replica in vain lately: ask upstream here
        lease = await self.store.lease_page(key)
        if lease is not None:
            _bounded(self._page_leases)
            self._page_leases[key] = lease  # released once our fetch is written back
            return local
        # Another replica is asking upstream: wait a moment for its record.
        loop = asyncio.get_running_loop()
        deadline = loop.time() + MAX_PAGE_WAIT
        while loop.time() < deadline:
            await asyncio.sleep(POLL)
            page = self._if_later(key, await self.store.read_record(key), local)
            if page is not None:
                if await self._install(key, page):
                    return page.record
                break
        _bounded(self._no_wait)
        self._no_wait[key] = self.clock() + PAGE_LEASE_TTL
        return local

    def _if_later(
        self, key: str, page: SharedPage | None, local: PageRecord | None
    ) -> SharedPage | None:
        """``page`` if it is a fetch later than ``local`` and than any invalidation of
        ``key`` here (whose delete in the store may not have landed yet), else None."""
        if page is None or page.record.fetched_at <= self._invalidated.get(key, -1.0):
            return None
        if local is not None and page.record.fetched_at <= local.fetched_at:
            return None
        return page

    async def _install(self, key: str, page: SharedPage) -> bool:
        """Copy a page from the store into the local tier; False when it is incomplete."""
        content = await self.store.read_page(page)
        if content is None:
            return False
        blobs, files, strays = content
        await super()._store_page(key, page.record, blobs, files, strays)  # not written back
        return True

    async def _store_page(
        self,
        key: str,
        record: PageRecord,
        blobs: Mapping[str, bytes],
        files: FileMap | None,
        strays: tuple[str, ...],
        expire: float | None = None,
    ) -> None:
        """Every page this replica writes (put_page, put_prepared) goes to the local tier,
        then, if a 200, to the store; a "no such project" is this replica's own."""
        await super()._store_page(key, record, blobs, files, strays, expire)
        if record.status == 200:
            self._publish(key, record, blobs, files, strays)
        else:
            self._done_fetching(key)

    def _publish(
        self,
        key: str,
        record: PageRecord,
        blobs: Mapping[str, bytes],
        files: FileMap | None,
        strays: tuple[str, ...],
    ) -> None:
        """Write the page to the store in the background, after any earlier write of it."""
        previous = self._publishing.get(key)
        task = asyncio.create_task(
            self._write_back(key, record, blobs, files, strays, previous),
            name=f"share page {key or '/'}",
        )
        self._publishing[key] = task

        def forget(done: "asyncio.Task[None]") -> None:
            if self._publishing.get(key) is done:
                del self._publishing[key]

        task.add_done_callback(forget)

    async def _write_back(
        self,
        key: str,
        record: PageRecord,
        blobs: Mapping[str, bytes],
        files: FileMap | None,
        strays: tuple[str, ...],
        previous: "asyncio.Task[None] | None",
    ) -> None:
        if previous is not None:
            await asyncio.wait([previous])
        try:
            if not self.store.health.usable():
                return
            if blobs or files is not None or not record.bodies:
                await self.store.write_page(key, record, blobs, files, strays)
            elif await self.store.write_record(key, record, None) == "missing":
                # A refresh (304) of a page the store does not have (it was down when the
                # page was first fetched): write the whole page from the local tier.
                blobs, files = await asyncio.to_thread(self._local_content, key, record)
                await self.store.write_page(key, record, blobs, files, ())
        except (SharedStoreError, FileNotFoundError, DamagedBody) as exc:
            logger.warning("page %s not shared: %s", key or "/", exc)
        finally:
            self._done_fetching(key)

    def _local_content(
        self, key: str, record: PageRecord
    ) -> tuple[dict[str, bytes], FileMap | None]:
        blobs = {body.name: self._read_checked(body) for body in record.bodies.values()}
        return blobs, self.local_files(key)

    def _done_fetching(self, key: str) -> None:
        lease = self._page_leases.pop(key, None)
        self._no_wait.pop(key, None)
        if lease is not None:
            self._spawn(self.store.release(self.store.page_leases, lease))

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.ensure_future(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)


class DamagedFile(Exception):
    """A locally stored file does not hash to its name (found while back-filling)."""


async def _checked_chunks(source: BinaryIO, sha256: str) -> AsyncIterator[bytes]:
    """The bytes of a stored file, read and hashed in a thread; raises :class:`DamagedFile`
    at the end unless they hash to ``sha256`` (the upload is then aborted)."""
    digest = hashlib.sha256()

    def read() -> bytes:
        data = source.read(PART_SIZE)
        digest.update(data)
        return data

    while data := await asyncio.to_thread(read):
        yield data
    if digest.hexdigest() != sha256:
        raise DamagedFile(f"sha256 {digest.hexdigest()} != {sha256}")


# Pages a replica tracks leases and waits for at once; beyond it the oldest are forgotten
# (a lease expires in the store by itself; a forgotten wait only means one more fetch).
_TRACKED = 10_000


def _bounded(tracked: dict[str, Any]) -> None:
    while len(tracked) >= _TRACKED:
        del tracked[next(iter(tracked))]
