"""Maintenance of the shared tier: ``verify``, ``prune`` and ``stats`` on a bucket.

The CLI's verbs with ``--storage s3://BUCKET[/PREFIX]`` (cli/maintenance.py); the bucket's
layout is store/shared.py's. Every walk lists objects page by page, so a bucket of any size
is read with bounded memory, except pruning, which must sort the files by age.

They run beside live replicas:

* verify re-hashes every content-addressed object (``files/sha256/``, ``pages/bodies/``,
  ``pages/files/``) and parses every page record. A bad one is removed only if its entity
  tag is still the one of the bytes we read (``If-Match`` on DeleteObject), so a good copy
  written meanwhile stays. A replica reading a removed object fetches it from upstream
  again (store/shared.py: a missing body or file is a miss, never an error).
* prune removes stored files oldest first. S3 keeps no access time: the order is the
  object's ``LastModified``, the time it was stored, not when it was last used. Page
  bodies and records are never removed: they are small, and a file without its page cannot
  be verified. A replica copying a file that is removed meanwhile gets the rest from
  upstream (proxy/downloads.py).
"""

import asyncio
import contextlib
import hashlib
import json
import logging
import re
import time
from collections.abc import AsyncIterator, Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any, TypeVar

from cacheproxy.store.leases import PREFIX as LEASES
from cacheproxy.store.leases import LeaseState
from cacheproxy.store.objectstore import ObjectInfo, ObjectStore, ObjectStoreError
from cacheproxy.store.records import PageRecord
from cacheproxy.store.shared import BODIES, FILE_MAPS, FILES, RECORDS
from cacheproxy.urls import Location

logger = logging.getLogger(__name__)

T = TypeVar("T")

# Objects checked at once: a walk is bound by round trips, not by hashing.
CONCURRENCY = 4
_FILE_NAME = re.compile(rf"{FILES}/([0-9a-f]{{2}})/([0-9a-f]{{64}})")
_HEX = re.compile(r"[0-9a-f]{64}")


@contextlib.asynccontextmanager
async def connected(location: Location) -> AsyncIterator[ObjectStore]:
    """The store at ``location``, its client configured from the AWS_* environment."""
    async with ObjectStore.connect(location) as objects:
        yield objects


# -- verify ------------------------------------------------------------------------------


@dataclass
class BucketVerifyReport:
    location: str
    checked: int = 0  # files
    checked_bytes: int = 0
    pages_checked: int = 0  # bodies, file records and page records
    bad: list[str] = field(default_factory=list)  # "s3://.../name (why)", removed

    def line(self) -> str:
        return (
            f"verified {self.checked} file(s), {self.checked_bytes / 1e9:.2f} GB and "
            f"{self.pages_checked} page object(s) in {self.location}: "
            f"{len(self.bad)} corrupt and removed"
        )


async def verify_bucket(
    objects: ObjectStore, *, concurrency: int = CONCURRENCY
) -> BucketVerifyReport:
    """Check every file and page object in the store; remove (and report) the bad ones.

    Raises:
        ObjectStoreError: the store could not be listed, or a bad object not removed.
    """
    report = BucketVerifyReport(str(objects.location))

    async def check_file(info: ObjectInfo) -> None:
        await _check_file(objects, info, report)

    async def check_page(info: ObjectInfo) -> None:
        await _check_page_object(objects, info, report)

    await _for_each(objects.list_objects(f"{FILES}/"), check_file, concurrency)
    for prefix in (BODIES, FILE_MAPS, RECORDS):
        await _for_each(objects.list_objects(f"{prefix}/"), check_page, concurrency)
    report.bad.sort()
    return report


async def _check_file(objects: ObjectStore, info: ObjectInfo, report: BucketVerifyReport) -> None:
    shape = _FILE_NAME.fullmatch(info.name)
    if shape is None or shape.group(2)[:2] != shape.group(1):
        await _remove(objects, info.name, info.etag, "not named by its sha256", report)
        return
    read = await _hash_twice(objects, info.name)
    if read is None:
        return  # gone since the listing (evicted by a replica, pruned)
    if isinstance(read, str):
        await _remove(objects, info.name, info.etag, f"unreadable: {read}", report)
        return
    digest, size, etag = read
    report.checked += 1
    report.checked_bytes += size
    if digest != shape.group(2):
        await _remove(objects, info.name, etag, f"sha256 {digest}", report)


async def _hash_twice(objects: ObjectStore, name: str) -> tuple[str, int, str] | str | None:
    """The object's (sha256, size, entity tag); None when it is gone; the reason when two
    reads failed while the object is there (a damaged object, not a passing fault).

    Raises:
        ObjectStoreError: a timeout, or the store failed to say whether the object exists.
    """
    problem = ""
    for _ in range(2):
        try:
            return await _hash_object(objects, name)
        except ObjectStoreError as exc:
            if exc.timeout:
                raise  # a slow store, not a bad object: never a reason to remove it
            if await objects.head(name) is None:
                return None
            problem = str(exc)
    return problem


async def _hash_object(objects: ObjectStore, name: str) -> tuple[str, int, str]:
    digest = hashlib.sha256()
    size = 0
    async with objects.stream(name) as (info, chunks):
        async for chunk in chunks:
            digest.update(chunk)
            size += len(chunk)
    if size != info.size:
        raise ObjectStoreError(f"object store get {name}: {size} of {info.size} bytes")
    return digest.hexdigest(), size, info.etag


async def _check_page_object(
    objects: ObjectStore, info: ObjectInfo, report: BucketVerifyReport
) -> None:
    found = await objects.get(info.name)
    if found is None:
        return
    report.pages_checked += 1
    problem = _page_problem(info.name, found.data)
    if problem is not None:
        await _remove(objects, info.name, found.info.etag, problem, report)


def _page_problem(name: str, data: bytes) -> str | None:
    """Why a page object is bad (None: it is good). Bodies and file records are named by
    their sha256; a record by the sha256 of the page key it holds (store/shared.py)."""
    prefix, _, last = name.rpartition("/")
    if not _HEX.fullmatch(last):
        return "not named by a sha256"
    if prefix != RECORDS:
        digest = hashlib.sha256(data).hexdigest()
        return None if digest == last else f"sha256 {digest}"
    try:
        raw = json.loads(data)
        key = raw["key"]
        PageRecord.from_dict(raw["record"])
        files = raw["files"]
    except (ValueError, KeyError, TypeError, AttributeError):
        # store/shared.py ignores such a record, and its create-only write of a new one
        # fails while it exists: left alone, it would keep the page out of the store.
        return "not a page record"
    if not isinstance(key, str) or hashlib.sha256(key.encode()).hexdigest() != last:
        return "a record of another page"
    if files is not None and not (isinstance(files, str) and _HEX.fullmatch(files)):
        return "not a page record"
    return None


async def _remove(
    objects: ObjectStore, name: str, etag: str, why: str, report: BucketVerifyReport
) -> None:
    # With the tag of what we read: a good copy written since then is not removed.
    if await objects.delete(name, etag=etag):
        # Info, not error: the caller prints ``bad`` (cli/maintenance.py), once each.
        logger.info("corrupt object removed from the store: %s (%s)", name, why)
        report.bad.append(f"{report.location}/{name} ({why})")
    else:
        logger.info("%s changed while it was checked: kept", name)


async def _for_each(
    items: AsyncIterator[T], work: Callable[[T], Coroutine[Any, Any, None]], limit: int
) -> None:
    """``work`` on every item, ``limit`` at a time; the first failure stops the rest."""
    running: set[asyncio.Task[None]] = set()

    async def settle(until: str) -> None:
        nonlocal running
        done, running = await asyncio.wait(running, return_when=until)
        for task in done:
            task.result()

    try:
        async for item in items:
            if len(running) >= limit:
                await settle(asyncio.FIRST_COMPLETED)
            running.add(asyncio.create_task(work(item)))
        while running:
            await settle(asyncio.FIRST_EXCEPTION)
    finally:
        for task in running:
            task.cancel()
        await asyncio.gather(*running, return_exceptions=True)


# -- prune -------------------------------------------------------------------------------


@dataclass
class BucketPruneReport:
    location: str
    files: int = 0  # in the store before
    bytes: int = 0
    removed: int = 0
    removed_bytes: int = 0

    def line(self) -> str:
        kept = self.bytes - self.removed_bytes
        return (
            f"removed {self.removed} file(s), {self.removed_bytes / 1e9:.2f} GB from "
            f"{self.location}; the store now holds {kept / 1e9:.2f} GB in "
            f"{self.files - self.removed} file(s)"
        )


async def prune_bucket(
    objects: ObjectStore,
    *,
    max_bytes: int | None,
    older_than: float | None = None,
    now: float | None = None,
) -> BucketPruneReport:
    """Remove stored files, oldest stored first, until they total at most ``max_bytes``,
    and every file stored more than ``older_than`` seconds ago. Pages are kept.

    Raises:
        ObjectStoreError: the store could not be listed or a file not removed.
    """
    now = time.time() if now is None else now
    files = [info async for info in objects.list_objects(f"{FILES}/")]
    files.sort(key=lambda info: (info.modified, info.name))
    report = BucketPruneReport(str(objects.location), len(files), sum(f.size for f in files))
    total = report.bytes
    for info in files:
        too_old = older_than is not None and now - info.modified > older_than
        too_big = max_bytes is not None and total > max_bytes
        if not (too_old or too_big):
            if older_than is None:
                break  # oldest first: no later file is too old either
            continue
        # The listed tag: a file stored again since the listing is a new copy; keep it.
        if await objects.delete(info.name, etag=info.etag):
            report.removed += 1
            report.removed_bytes += info.size
        total -= info.size  # removed, or replaced or gone meanwhile: not ours to count
    if report.removed:
        logger.info("store pruned: %s", report.line())
    return report


# -- stats -------------------------------------------------------------------------------


@dataclass
class BucketStats:
    location: str
    files: int = 0
    size_bytes: int = 0
    oldest_file: float | None = None  # when the oldest file still there was stored
    pages: int = 0  # page records
    page_bytes: int = 0  # bodies, file records and page records
    leases_in_flight: int = 0  # downloads and page fetches a replica runs for all now
    leases_expired: int = 0  # left by a replica that stopped mid-way; taken over on use

    def to_dict(self) -> dict[str, Any]:
        """The ``store`` section of ``cacheproxy stats --json``."""
        return {
            "location": self.location,
            "files": self.files,
            "size_bytes": self.size_bytes,
            "oldest_file": self.oldest_file,
            "pages": self.pages,
            "page_bytes": self.page_bytes,
            "leases": {"in_flight": self.leases_in_flight, "expired": self.leases_expired},
        }


async def bucket_stats(objects: ObjectStore, *, now: float | None = None) -> BucketStats:
    """Count the store's files, pages and leases (one listing each; a read per lease).

    Raises:
        ObjectStoreError: the store could not be listed.
    """
    now = time.time() if now is None else now
    stats = BucketStats(str(objects.location))
    async for info in objects.list_objects(f"{FILES}/"):
        stats.files += 1
        stats.size_bytes += info.size
        if stats.oldest_file is None or info.modified < stats.oldest_file:
            stats.oldest_file = info.modified
    for prefix in (BODIES, FILE_MAPS, RECORDS):
        async for info in objects.list_objects(f"{prefix}/"):
            stats.page_bytes += info.size
            stats.pages += prefix == RECORDS
    async for info in objects.list_objects(f"{LEASES}/"):
        found = await objects.get(info.name)
        state = LeaseState.decode(found.data) if found is not None else None
        if state is None:
            continue  # released since the listing, or not a lease
        if state.expires_at > now:
            stats.leases_in_flight += 1
        else:
            stats.leases_expired += 1
    return stats


# -- the CLI's entry points: one connection each ------------------------------------------


async def verify_store(location: Location) -> BucketVerifyReport:
    async with connected(location) as objects:
        return await verify_bucket(objects)


async def prune_store(
    location: Location, *, max_bytes: int | None, older_than: float | None
) -> BucketPruneReport:
    async with connected(location) as objects:
        return await prune_bucket(objects, max_bytes=max_bytes, older_than=older_than)


async def store_stats(location: Location) -> BucketStats:
    async with connected(location) as objects:
        return await bucket_stats(objects)
