"""The shared tier: what every replica needs, in one bucket of an S3-compatible store.

Layout under the location's prefix (object names)::

    files/sha256/ab/<hex>        verified files, named by their sha256 (as on local disk)
    pages/bodies/<sha256>        rendered page bodies, named by their sha256
    pages/files/<sha256>         a page's file records and stray keys, named by the sha256
                                 of that JSON (so written once, never changed)
    pages/records/<sha256(key)>  {"key", "record", "files"}: a page record and the name of
                                 its file records; the one object that changes (by
                                 compare-and-swap on its entity tag)
    leases/files/<hex>           one upstream download of a file across replicas
    leases/pages/<sha256(key)>   one upstream fetch of a page per TTL across replicas

Order makes it consistent without transactions: bodies and file records are written
(create-only) before the record that names them, and a file object is created only after
its bytes were verified on local disk. A reader that finds a record finds what it names;
one that finds a file object has the right bytes, and checks them anyway.

A record is replaced only by one fetched later (compare-and-swap, retried on a lost race),
so replicas never move a page back in time. Negative records ("no such project"), hosted
packages, pins and metadata read from wheels stay on each replica's local disk.

Every call can fail (the store is down or slow): :class:`Health` remembers the failure for
a few seconds so requests do not each wait out a timeout, and callers fall back to the
local tier and upstream. Nothing read from the store enters the local tier unverified.
"""

import asyncio
import contextlib
import hashlib
import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import TypeVar

from cacheproxy.errors import CacheProxyError
from cacheproxy.store.api import StoredCopy, UploadRight
from cacheproxy.store.leases import Lease, Leases
from cacheproxy.store.objectstore import ObjectStore, ObjectStoreError, Timeouts
from cacheproxy.store.records import FileMap, FileRecord, PageRecord, pack_file_record

logger = logging.getLogger(__name__)

T = TypeVar("T")

FILES = "files/sha256"
BODIES = "pages/bodies"
FILE_MAPS = "pages/files"
RECORDS = "pages/records"
# After a failure, how long calls skip the store before one tries it again.
RETRY_AFTER = 5.0
# A download lease lasts this long unless renewed (every third of it); a dead holder's
# lease is taken over this long (plus the allowed clock skew) after its last renewal.
FILE_LEASE_TTL = 10.0
# A page lease is not renewed: it only has to outlast one upstream fetch of a page.
PAGE_LEASE_TTL = 10.0
# Waiting for another replica: how often to look for its file or page.
POLL = 0.1
LEASE_POLL = 1.0
# How long a replica waits for another's download before it downloads the file itself:
# a client that gets no byte for longer gives up (pip's default read timeout is 15 s).
MAX_FILE_WAIT = 10.0
MAX_PAGE_WAIT = 3.0
# Uploads at once per process: each holds up to one part (8 MiB) in memory; more wait,
# reading their download's temporary later (nothing is buffered while they wait).
MAX_UPLOADS = 4
# Back-fill (files stored only locally while the store was down) has its own, smaller
# bound, so it never takes a slot a download's upload (that replicas wait on) needs.
BACKFILL_UPLOADS = 2
# Files remembered for back-fill; beyond it the oldest are forgotten (they stay on this
# replica's disk, and another replica that misses one fetches it from upstream).
MAX_UNSHARED = 10_000
# Calls a request waits on (records, page bodies, a file's first bytes, leases): a slow
# store must not hold a client long, when upstream or the local tier can answer instead.
QUICK = Timeouts(connect=2.0, read=3.0, call=5.0, attempts=2)


def file_object(sha256: str) -> str:
    return f"{FILES}/{sha256[:2]}/{sha256}"


def record_object(key: str) -> str:
    return f"{RECORDS}/{hashlib.sha256(key.encode()).hexdigest()}"


def _page_lease(key: str) -> str:
    return f"pages/{hashlib.sha256(key.encode()).hexdigest()}"


class Health:
    """Whether the store answered lately. After a failure, calls skip it for
    :data:`RETRY_AFTER` seconds; then one goes through, and its outcome decides."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self.problem: str | None = None
        self._failed_at = 0.0

    @property
    def up(self) -> bool:
        return self.problem is None

    def usable(self) -> bool:
        return self.problem is None or self._clock() - self._failed_at > RETRY_AFTER

    def failed(self, exc: ObjectStoreError) -> None:
        if self.problem is None:
            logger.error("object store unusable, serving from local disk and upstream: %s", exc)
        self.problem = str(exc)
        self._failed_at = self._clock()

    def ok(self) -> None:
        if self.problem is not None:
            logger.warning("object store answers again")
        self.problem = None


@dataclass(frozen=True, slots=True)
class SharedPage:
    """A page as the store holds it: the record, its file records, the record's tag."""

    record: PageRecord
    etag: str
    files_name: str | None


def _pack(files: FileMap, strays: Iterable[str]) -> bytes:
    packed = {key: list(pack_file_record(r)) for key, r in sorted(files.items())}
    return json.dumps({"files": packed, "strays": sorted(strays)}, sort_keys=True).encode()


def _unpack(data: bytes) -> tuple[FileMap, tuple[str, ...]]:
    raw = json.loads(data)
    files = {key: FileRecord(*fields) for key, fields in raw["files"].items()}
    return files, tuple(raw["strays"])


class SharedStore:
    """Pages, file records and verified files in the store, and the leases that make
    replicas fetch each of them from upstream once."""

    def __init__(
        self,
        objects: ObjectStore,
        holder: str,
        *,
        clock: Callable[[], float] = time.time,
        file_lease_ttl: float = FILE_LEASE_TTL,
        max_file_wait: float = MAX_FILE_WAIT,
    ) -> None:
        self.objects = objects  # background writes: the store's own bounds
        self.quick = objects.with_timeouts(QUICK)  # what a waiting request reads
        self.holder = holder
        self.health = Health()
        self.file_leases = Leases(self.quick, holder, ttl=file_lease_ttl, clock=clock)
        self.page_leases = Leases(self.quick, holder, ttl=PAGE_LEASE_TTL, clock=clock)
        self.max_file_wait = max_file_wait
        self._uploads = asyncio.Semaphore(MAX_UPLOADS)
        self.clock = clock
        # Verified files stored only on this replica's disk (the store was down or failed
        # their upload), to put in the store once it answers again; insertion-ordered.
        self.unshared: dict[str, None] = {}

    async def guarded(self, call: Awaitable[T]) -> T:
        """``await call``; an ObjectStoreError marks the store down and is raised again."""
        try:
            result = await call
        except ObjectStoreError as exc:
            self.health.failed(exc)
            raise
        self.health.ok()
        return result

    async def probe(self) -> None:
        """One request that needs the bucket and valid credentials (readiness). A GET, not
        a HEAD: a HEAD's 404 has no body, so a missing bucket would look like a missing key."""
        await self.guarded(self.quick.get("ready"))

    # -- pages ---------------------------------------------------------------------------

    async def read_record(self, key: str) -> SharedPage | None:
        found = await self.guarded(self.quick.get(record_object(key)))
        if found is None:
            return None
        try:
            raw = json.loads(found.data)
            if raw["key"] != key:  # a hash collision cannot happen; a foreign object can
                return None
            return SharedPage(PageRecord.from_dict(raw["record"]), found.info.etag, raw["files"])
        except (ValueError, KeyError, TypeError):
            logger.warning("ignoring an unreadable page record for %s in the store", key or "/")
            return None

    async def read_page(
        self, page: SharedPage
    ) -> tuple[dict[str, bytes], FileMap | None, tuple[str, ...]] | None:
        """The bodies (by name, each checked against its name) and file records of
        ``page``; None when one is missing or damaged (the page is then fetched again)."""
        blobs: dict[str, bytes] = {}
        for body in page.record.bodies.values():
            found = await self.guarded(self.quick.get(f"{BODIES}/{body.name}"))
            if (
                found is None
                or len(found.data) != body.size
                or hashlib.sha256(found.data).hexdigest() != body.name
            ):
                logger.warning("page body %s in the store is missing or damaged", body.name)
                return None
            blobs[body.name] = found.data
        if page.files_name is None:
            return blobs, None, ()
        found = await self.guarded(self.quick.get(f"{FILE_MAPS}/{page.files_name}"))
        if found is None or hashlib.sha256(found.data).hexdigest() != page.files_name:
            logger.warning("file records %s in the store are missing or damaged", page.files_name)
            return None
        files, strays = _unpack(found.data)
        return blobs, files, strays

    async def write_page(
        self,
        key: str,
        record: PageRecord,
        blobs: Mapping[str, bytes],
        files: FileMap | None,
        strays: Iterable[str],
    ) -> None:
        """Bodies and file records (create-only), then the record (compare-and-swap)."""
        for name, data in blobs.items():
            await self.guarded(self.objects.put_create_only(f"{BODIES}/{name}", data))
        files_name = None
        if files is not None:
            packed = _pack(files, strays)
            files_name = hashlib.sha256(packed).hexdigest()
            await self.guarded(self.objects.put_create_only(f"{FILE_MAPS}/{files_name}", packed))
        await self.write_record(key, record, files_name)

    async def write_record(self, key: str, record: PageRecord, files_name: str | None) -> str:
        """Replace the store's record of ``key`` unless it holds a later fetch.

        Returns "written", "newer" (another replica fetched it later: a page never goes
        back in time) or "missing": ``files_name`` is None (a 304 refresh keeps the
        current record's file records) but the store has no record with these bodies.
        """
        name = record_object(key)
        for _ in range(5):  # each lost race means a newer write landed: bounded
            current = await self.read_record(key)
            if current is not None and current.record.fetched_at >= record.fetched_at:
                return "newer"
            names = files_name
            if names is None and record.bodies:
                if current is None or not _same_bodies(current, record):
                    return "missing"
                names = current.files_name
            data = json.dumps(
                {"key": key, "record": record.to_dict(), "files": names}, sort_keys=True
            ).encode()
            if current is None:
                written = await self.guarded(self.objects.put_create_only(name, data))
            else:
                written = await self.guarded(self.objects.put_if_match(name, data, current.etag))
            if written is not None:
                return "written"
        return "newer"

    async def drop_record(self, key: str) -> None:
        """Remove the store's record of ``key`` (its bodies stay: other records may name
        them, and a later fetch rewrites them create-only)."""
        with contextlib.suppress(ObjectStoreError):
            await self.guarded(self.objects.delete(record_object(key)))

    async def lease_page(self, key: str) -> Lease | None:
        return await self.guarded(self.page_leases.acquire(_page_lease(key)))

    async def release(self, leases: Leases, lease: Lease) -> None:
        with contextlib.suppress(ObjectStoreError):
            await self.guarded(leases.release(lease))

    # -- files ---------------------------------------------------------------------------

    async def file_size(self, sha256: str) -> int | None:
        info = await self.guarded(self.quick.head(file_object(sha256)))
        return info.size if info is not None else None

    @contextlib.asynccontextmanager
    async def open_file(self, sha256: str) -> AsyncIterator[tuple[int, AsyncIterator[bytes]]]:
        """The stored file's size and bytes as they arrive (ObjectStoreError on failure)."""
        async with self.quick.stream(file_object(sha256)) as (info, chunks):
            yield info.size, chunks

    async def claim_file(self, sha256: str) -> StoredCopy | UploadRight | None:
        """Where this replica gets file ``sha256`` from: the store (:class:`StoredCopy`),
        or upstream for every replica (:class:`FileLease`: under the file's lease, after
        waiting for another replica's download of it if one runs, or without the lease when
        that takes longer than :attr:`max_file_wait`); None: from upstream, without the
        store (it is down)."""
        if not self.health.usable():
            return None
        lease_name = f"files/{sha256}"
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.max_file_wait
        next_try = loop.time()
        try:
            while True:
                size = await self.file_size(sha256)
                if size is not None:
                    return StoredCopy(size)
                if loop.time() >= next_try:
                    lease = await self.guarded(self.file_leases.acquire(lease_name))
                    if lease is not None:
                        # It may have landed between our look and our lease.
                        if (size := await self.file_size(sha256)) is not None:
                            await self.release(self.file_leases, lease)
                            return StoredCopy(size)
                        return FileLease(self, sha256, lease)
                    next_try = loop.time() + LEASE_POLL
                if loop.time() >= deadline:
                    logger.info(
                        "another replica still downloads %s after %.0f s; downloading it here",
                        sha256,
                        self.max_file_wait,
                    )
                    # No lease, but the verified file still goes to the store: objects are
                    # named by their hash and created only once, so two writers agree.
                    return FileLease(self, sha256, None)
                await asyncio.sleep(POLL)
        except ObjectStoreError:
            return None

    async def publish_file(self, sha256: str, chunks: AsyncIterator[bytes]) -> None:
        """Upload a file under its hash as it downloads (create-only: never overwrites);
        the object appears only when ``chunks`` ends, after the download was verified."""
        async with self._uploads:
            await self.guarded(self.objects.put_stream(file_object(sha256), chunks))

    def not_shared(self, sha256: str) -> None:
        """File ``sha256`` is verified on local disk but not in the store: back-fill it."""
        self.unshared.pop(sha256, None)
        while len(self.unshared) >= MAX_UNSHARED:
            del self.unshared[next(iter(self.unshared))]
        self.unshared[sha256] = None

    def take_unshared(self) -> list[str]:
        """The files to back-fill now (oldest first); they are forgotten until a failed
        back-fill hands one back with :meth:`not_shared`."""
        taken = list(self.unshared)
        self.unshared.clear()
        return taken

    async def backfill_file(self, sha256: str, chunks: AsyncIterator[bytes]) -> bool:
        """Put a file verified on local disk in the store, create-only (as
        :meth:`publish_file`): False when it is there already (another replica stored it
        meanwhile; it is never overwritten). ``chunks`` raises if the bytes do not hash to
        ``sha256``, and then nothing is stored."""
        return await self.guarded(self.objects.put_stream(file_object(sha256), chunks)) is not None

    async def drop_damaged_file(self, sha256: str) -> None:
        """Remove a stored file whose bytes did not hash to its name."""
        logger.error("file %s in the object store is damaged: removed", sha256)
        with contextlib.suppress(ObjectStoreError):
            await self.guarded(self.objects.delete(file_object(sha256)))


def _same_bodies(current: SharedPage, record: PageRecord) -> bool:
    ours = {k: b.name for k, b in record.bodies.items()}
    return ours == {k: b.name for k, b in current.record.bodies.items()}


class FileLease:
    """This replica downloads the file from upstream for everyone: the lease is renewed
    until :meth:`publish` uploads the verified file, or :meth:`release` gives up."""

    def __init__(self, shared: SharedStore, sha256: str, lease: Lease | None) -> None:
        self._shared = shared
        self.sha256 = sha256
        self._lease = lease  # None: publish without one (waiting for another took too long)
        self._renewing = asyncio.create_task(self._renew(), name=f"lease {sha256[:12]}")

    async def _renew(self) -> None:
        leases = self._shared.file_leases
        while self._lease is not None:
            await asyncio.sleep(leases.ttl / 3)
            try:
                renewed = await self._shared.guarded(leases.renew(self._lease))
            except ObjectStoreError:
                continue  # still ours until it expires; the next renewal may get through
            if renewed is None:
                logger.warning("lost the download lease of %s to another replica", self.sha256)
            self._lease = renewed

    async def publish(self, chunks: AsyncIterator[bytes]) -> bool:
        """Upload the file as it is verified; a store failure is logged (the local copy
        still serves); a failed download (``chunks`` raises) stores nothing. True when
        the store holds the file now (this upload, or another replica's before it)."""
        try:
            await self._shared.publish_file(self.sha256, chunks)
        except ObjectStoreError as exc:
            logger.error("cannot put %s in the object store: %s", self.sha256, exc)
            return False
        except CacheProxyError:
            return False  # the download failed: it was logged there, and nothing was stored
        return True

    async def release(self) -> None:
        self._renewing.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._renewing
        lease, self._lease = self._lease, None
        if lease is not None:
            await self._shared.release(self._shared.file_leases, lease)
