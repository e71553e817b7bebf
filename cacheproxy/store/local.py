"""Local-disk storage: diskcache for records, plain files for bodies.

Layout under the cache directory::

    index/                 diskcache: page records, file records (the only diskcache user)
    index.lock             held while the record store is opened (and, if damaged, replaced)
    index.broken-<time>-<pid>/  a damaged record store, moved aside (see open_index)
    stats/, stats.lock     the shared counters (counters.py); a damaged one is moved aside too
    files/sha256/ab/<hex>  distribution and metadata files, named by their sha256
    pages/<hex>            rendered page bodies (JSON, HTML and their gzip), by sha256
    tmp/                   downloads in progress; removed at start-up
    tmp.lock               shared by a ``cacheproxy warm`` while it runs (see share_tmp)
    logins/, logins.lock   failed logins by client address, for every worker (logins.py)

Files are content-addressed, so a stored file is correct by construction: it only gets its
name after its bytes hashed to it (or, for the rare index that publishes no sha256, it lives
under ``files/url/`` named by its URL, verified by the other hash the index gives (md5, …)
and by size). Bodies are plain files so hits go out with sendfile.

Records are shared by every worker process: a worker's in-memory copy of a project's file
records carries the version of the page it was rendered with, and is only trusted while
the page record read for the request names that version (see :meth:`Storage.get_file`).
A damaged record store (``index/``) is moved aside and started empty: files are named by
their hash and pages can be fetched again, so nothing is lost but time.

Everything here is behind this class so another backend is a new class, not a rewrite:
tiered.py puts this cache directory in front of an object store replicas share.
"""

import asyncio
import contextlib
import fcntl
import hashlib
import logging
import os
import shutil
import sqlite3
import tempfile
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path
from typing import IO, Any, TypeVar

import diskcache

from cacheproxy.errors import ConfigError
from cacheproxy.store.api import SharedFiles
from cacheproxy.store.body_cache import BodyCache
from cacheproxy.store.disk_writer import write_all
from cacheproxy.store.records import (
    Body,
    DamagedBody,
    FileMap,
    FileRecord,
    PageRecord,
    files_version,
    name_bodies,
    pack_file_record,
)

logger = logging.getLogger(__name__)

# A hit refreshes its file's mtime (the eviction order) when older than this.
TOUCH_AFTER = 60.0
# Page bodies being written (a few milliseconds each, in the page-writer thread).
PAGE_TEMP_PREFIX = "page-"
_T = TypeVar("_T")


def _unpack_map(raw: Any) -> tuple[str | None, FileMap] | None:
    """A stored file map and its version; None when unreadable (an incompatible version)."""
    version = None
    if isinstance(raw, tuple) and len(raw) == 2:
        version, raw = raw
    if not isinstance(raw, dict) or not (version is None or isinstance(version, str)):
        return None
    try:
        return version, {k: FileRecord(*v) for k, v in raw.items()}
    except TypeError:
        return None


def file_size(path: Path) -> int | None:
    """A file's size, None when it does not exist."""
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return None


def _body_problem(body: "Body", data: bytes) -> str | None:
    if len(data) != body.size:
        return f"{len(data)} bytes, not {body.size}"
    if hashlib.sha256(data).hexdigest() != body.name:
        return "its bytes do not hash to its name"
    return None


# Bound on Storage._checked (64-character names: a few MB at most).
_CHECKED_NAMES = 100_000
# How many file records the in-memory map cache may hold across projects (bounds memory:
# a record is a few hundred bytes; botocore alone lists thousands of files).
_MAP_CACHE_ENTRIES = 50_000


# Remembered "no such project" records: they expire after the negative TTL, and at most
# this many are kept (the oldest go first), so a flood of made-up names cannot grow the
# record store without end.
MAX_NEGATIVE_RECORDS = 10_000
_NEGATIVE_QUEUE = "negative"  # diskcache queue prefix: (name, fetched_at), oldest first
# Verified sizes of stored files remembered in memory (sha256 -> size, None: unknown).
_SIZE_ENTRIES = 100_000


@contextlib.contextmanager
def _exclusive(path: Path) -> Iterator[None]:
    """Hold an flock on ``path`` (several processes may open one cache directory at once)."""
    fd = os.open(path, os.O_CREAT | os.O_RDWR, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def open_diskcache(path: Path, probe: object, **options: Any) -> diskcache.Cache:
    """A diskcache store at ``path`` (``options`` as diskcache takes them), read once, for
    key ``probe``: damage may only show on the first read (:func:`open_moving_damage_aside`
    moves a damaged store aside). Closed again when that read fails."""
    cache = diskcache.Cache(str(path), **options)
    try:
        cache.get(probe)
    except BaseException:
        cache.close()
        raise
    return cache


def _open_index(path: Path) -> diskcache.Cache:
    # Records are small and must not be evicted behind our back; files and bodies live
    # outside diskcache, so its own size limit is not the cache's limit.
    return open_diskcache(path, ("ready",), size_limit=2**62, eviction_policy="none", timeout=60)


def open_index(root: Path) -> diskcache.Cache:
    """Open the record store; a damaged one is moved aside and started empty, in one log line.

    The records can all be rebuilt: stored files are named by their hash, pages can be
    fetched again. So a damaged SQLite file costs refetching pages, never the files (the
    start-up check keeps content-addressed files no record names; see repair.py).

    Raises:
        sqlite3.OperationalError: locked, or the disk cannot be read (not damage: kept).
    """
    return open_moving_damage_aside(
        root / "index",
        _open_index,
        "record store",
        "stored files are kept and pages are fetched again",
    )


def open_moving_damage_aside(
    path: Path,
    opener: Callable[[Path], _T],
    what: str,
    consequence: str,
    level: int = logging.ERROR,
) -> _T:
    """``opener(path)`` for a SQLite-backed store that can be started empty; a damaged one
    is moved to ``<name>.broken-<time>-<pid>`` beside it and opened afresh, in one log line
    at ``level`` naming ``what`` it was and the ``consequence``.

    ``opener`` must read once, as damage may only show on the first read. Several
    processes may open one cache directory at once: ``<name>.lock`` is held meanwhile, so
    one of them moves the store and the others open the new one.

    Raises:
        sqlite3.OperationalError: locked, or the disk cannot be read (not damage: kept).
    """
    path.parent.mkdir(parents=True, exist_ok=True)  # for the lock; diskcache makes path
    with _exclusive(path.with_name(f"{path.name}.lock")):
        try:
            return opener(path)
        except sqlite3.OperationalError:
            raise
        except sqlite3.DatabaseError as e:  # "file is not a database", "malformed", ...
            stamp = f"{time.strftime('%Y%m%dT%H%M%S')}-{os.getpid()}"
            broken = path.with_name(f"{path.name}.broken-{stamp}")
            os.replace(path, broken)
            logger.log(
                level,
                "%s %s is damaged (%s): moved to %s and started empty; %s",
                what,
                path,
                e,
                broken.name,
                consequence,
            )
            return opener(path)


def tmp_lock_path(root: Path) -> Path:
    """The lock that keeps a serve starting up from emptying tmp/ while a process that
    shares the cache directory (``cacheproxy warm``) has temporaries there."""
    return root / "tmp.lock"


def share_tmp(root: Path) -> int:
    """Hold tmp/ in use until the returned descriptor is closed: a ``serve`` starting
    meanwhile leaves it alone (:meth:`Storage.open_sync` with ``clean``). A shared flock
    (flock(2)): any number of sharers at once, released by the kernel if the holder dies.
    Waits while a starting serve is emptying tmp/ (moments).

    Raises:
        ConfigError: the lock file cannot be created or locked.
    """
    try:
        root.mkdir(parents=True, exist_ok=True)
        fd = os.open(tmp_lock_path(root), os.O_CREAT | os.O_RDWR, 0o644)
    except OSError as e:
        raise ConfigError(f"cache dir {root} is not usable: {e.strerror or e}") from e
    try:
        fcntl.flock(fd, fcntl.LOCK_SH)
    except OSError as e:  # a file system without locks (ENOLCK on some NFS mounts)
        os.close(fd)
        raise ConfigError(f"cache dir {root} cannot be locked: {e.strerror or e}") from e
    return fd


def _blob_relpath(sha256: str) -> str:
    return f"files/sha256/{sha256[:2]}/{sha256}"


class Storage:
    """Typed async facade over the cache directory. Create with :meth:`open`."""

    def __init__(self, root: Path, index: diskcache.Cache) -> None:
        self.root = root
        self._index = index
        self.tmp_dir = root / "tmp"
        # project -> (version, its file records), most recently used last (see get_file).
        self._maps: OrderedDict[str, tuple[str | None, FileMap]] = OrderedDict()
        self._map_entries = 0
        # Stray file keys of pages not yet written (see put_prepared) -> their project.
        self._pending_strays: dict[str, str] = {}
        # The loop thread reads the maps; worker threads (put_page, disk reads) update them.
        self._maps_lock = threading.Lock()
        # Separate pools, so a burst of writes (SQLite takes one writer at a time; file
        # commits fsync) never queues the record reads that hits and file lookups wait on.
        # One page writer: page writes are applied in the order they were asked for.
        self._reads = ThreadPoolExecutor(4, thread_name_prefix="cacheproxy-read")
        self._page_writes = ThreadPoolExecutor(1, thread_name_prefix="cacheproxy-page-write")
        self._file_writes = ThreadPoolExecutor(2, thread_name_prefix="cacheproxy-file-write")
        # Downloads hash and write their bytes here (disk_writer.py), one job per download.
        self.write_pool = ThreadPoolExecutor(4, thread_name_prefix="cacheproxy-download")
        self.bodies = BodyCache()
        # Page bodies known whole in this process: written here, or hashed once.
        self._checked: set[str] = set()
        # sha256 -> verified size of the stored file (None: stored before sizes were kept).
        self._sizes: OrderedDict[str, int | None] = OrderedDict()
        self.max_negative = MAX_NEGATIVE_RECORDS
        # One machine's cache: no files shared with other replicas (see store/tiered.py).
        self.shared: SharedFiles | None = None

    @staticmethod
    def instance_lock_path(root: Path) -> Path:
        """The file a ``cacheproxy serve`` keeps locked while it runs (cli/instance.py), so
        a second one on this directory stops before it cleans tmp/ under the first."""
        return root / "serve.lock"

    @classmethod
    async def open(cls, root: Path, *, clean: bool = True) -> "Storage":
        """Open (creating) the cache directory; with ``clean``, remove stale temporaries.

        Several worker processes share one directory: only the process that starts them
        cleans (before they start), or one worker would delete another's downloads.

        Raises:
            ConfigError: the directory cannot be created or written.
        """
        return await asyncio.to_thread(cls.open_sync, root, clean=clean)

    @classmethod
    def open_sync(cls, root: Path, *, clean: bool = True, **extra: Any) -> "Storage":
        """As :meth:`open`, in this thread; ``extra`` goes to a subclass's constructor."""
        try:
            for sub in ("files", "pages", "tmp"):
                (root / sub).mkdir(parents=True, exist_ok=True)
            probe = tempfile.NamedTemporaryFile(dir=root / "tmp", delete=True)
            probe.close()
            index = open_index(root)
        except OSError as e:
            raise ConfigError(f"cache dir {root} is not usable: {e.strerror or e}") from e
        except sqlite3.Error as e:
            raise ConfigError(f"cache dir {root}: record store not usable: {e}") from e
        storage = cls(root, index, **extra)
        if clean:
            storage._clean_tmp_unless_shared()
        (root / "tmp" / "locks").mkdir(exist_ok=True)
        return storage

    def _clean_tmp_unless_shared(self) -> None:
        """Empty tmp/, unless a sharer (:func:`share_tmp`) has temporaries there now."""
        try:
            fd = os.open(tmp_lock_path(self.root), os.O_CREAT | os.O_RDWR, 0o644)
        except OSError as e:
            self.close_sync()
            raise ConfigError(f"cache dir {self.root} is not usable: {e.strerror or e}") from e
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                logger.warning(
                    "not cleaning %s: a cacheproxy warm is using this cache directory and "
                    "has downloads in progress there; the next start cleans it",
                    self.tmp_dir,
                )
                return
            except OSError as e:  # a file system without locks (ENOLCK on some NFS mounts)
                self.close_sync()
                why = e.strerror or e
                raise ConfigError(f"cache dir {self.root} cannot be locked: {why}") from e
            removed = self._clean_tmp()
            if removed:
                logger.info("removed %d stale temporary file(s) from %s", removed, self.tmp_dir)
        finally:
            os.close(fd)  # releases the lock: a warm may start now

    def _clean_tmp(self) -> int:
        removed = 0
        for entry in self.tmp_dir.iterdir():
            try:
                if entry.is_dir():
                    shutil.rmtree(entry)  # locks/: nobody runs yet, so nobody holds one
                else:
                    entry.unlink()
                    removed += 1
            except FileNotFoundError:
                pass
        return removed

    async def close(self) -> None:
        await asyncio.to_thread(self.close_sync)

    def close_sync(self) -> None:
        for pool in (self._page_writes, self._file_writes, self.write_pool, self._reads):
            pool.shutdown(wait=True)
        self._index.close()

    async def _run(self, pool: ThreadPoolExecutor, fn: Callable[..., _T], *args: Any) -> _T:
        return await asyncio.get_running_loop().run_in_executor(pool, fn, *args)

    def check_writable(self) -> None:
        """Raise unless a file can be created in the cache dir and a record written.

        A full disk may still take a small file while SQLite cannot grow its database (or
        the other way round): both are tried.

        Raises:
            OSError: either write failed (a record store error is raised as one).
        """
        with tempfile.NamedTemporaryFile(dir=self.tmp_dir, prefix="ready-"):
            pass
        try:
            self._index.set(("ready",), time.time())
        except sqlite3.Error as e:
            raise OSError(f"cannot write a record: {e}") from e

    # -- whole-cache walks (repair.py) ---------------------------------------------------

    def page_records(self) -> Iterator[tuple[str, PageRecord | None]]:
        """Every page record (None when unreadable), for maintenance; synchronous."""
        for key in list(self._index.iterkeys()):
            if isinstance(key, tuple) and len(key) == 2 and key[0] == "page":
                raw = self._index.get(key)
                try:
                    yield key[1], PageRecord.from_dict(raw)
                except (KeyError, TypeError):
                    yield key[1], None

    def file_maps(self) -> Iterator[tuple[str, FileMap]]:
        for key in list(self._index.iterkeys()):
            if isinstance(key, tuple) and len(key) == 2 and key[0] == "files":
                unpacked = _unpack_map(self._index.get(key))
                if unpacked is not None:
                    yield key[1], unpacked[1]

    def local_files(self, key: str) -> FileMap | None:
        """The file records stored with page ``key`` (synchronous), None when none are."""
        unpacked = _unpack_map(self._index.get(("files", key)))
        return unpacked[1] if unpacked is not None else None

    def recorded_size(self, sha256: str) -> int | None:
        """The size a stored file had when it was verified and committed (synchronous)."""
        size = self._index.get(("size", sha256))
        return size if isinstance(size, int) else None

    def drop_page(self, key: str) -> bool:
        """Forget a page record (its next request fetches it afresh); True if it was there."""
        return bool(self._index.delete(("page", key)))

    def drop_all_pages(self) -> int:
        return sum(self.drop_page(key) for key, _record in list(self.page_records()))

    def invalidate_page(self, key: str) -> bool:
        """An admin's "fetch this page afresh" (synchronous): here, dropping the record."""
        return self.drop_page(key)

    def invalidate_all(self) -> int:
        return sum(self.invalidate_page(key) for key, _record in list(self.page_records()))

    # -- records -------------------------------------------------------------------------

    async def get_page(self, key: str) -> PageRecord | None:
        raw = await self._run(self._reads, self._index.get, ("page", key))
        if raw is None:
            return None
        try:
            return PageRecord.from_dict(raw)
        except (KeyError, TypeError):
            return None  # written by an incompatible version: a miss, not a crash

    async def put_page(
        self,
        key: str,
        record: PageRecord,
        bodies: Mapping[str, bytes] | None = None,
        files: FileMap | None = None,
        strays: Iterable[str] = (),
        expire: float | None = None,
    ) -> PageRecord:
        """Store bodies, then the file records they link to, then the page record.

        ``bodies`` maps a representation name ("json", "html.gz", …) to its bytes; the
        returned record points at them (and keeps ``record``'s other bodies). See
        :meth:`put_prepared` for ``files`` and ``strays``. A record that is not a 200 (a
        remembered "no such project") is dropped ``expire`` seconds after it is written,
        and only the newest :attr:`max_negative` of them are kept.

        Raises:
            OSError, sqlite3.Error: the disk is full or failing.
        """
        named, blobs = name_bodies(bodies or {})
        full = replace(record, bodies={**record.bodies, **named})
        await self._store_page(key, full, blobs, files, tuple(strays), expire)
        return full

    def remember_pending(
        self, key: str, files: FileMap, strays: Iterable[str], record: PageRecord | None = None
    ) -> None:
        """Make a page's file records visible to :meth:`get_file` before they are written,
        so the file requests that follow a page answered from memory resolve at once.
        ``record`` is the page record they were rendered with (their version)."""
        self._remember_map(key, None if record is None else files_version(record), files)
        with self._maps_lock:
            for stray in strays:
                self._pending_strays[stray] = key

    async def put_prepared(
        self,
        key: str,
        record: PageRecord,
        blobs: Mapping[str, bytes],
        files: FileMap | None = None,
        strays: tuple[str, ...] = (),
    ) -> None:
        """Write ``record``: its bodies (``blobs``, by body name; not fsynced, see
        :meth:`_write_body`), then the file records they link to, then the record itself.

        Order matters: a reader that finds the record always finds its bodies. ``files``
        are the page's file records, stored as one value per project (one write instead
        of thousands); ``strays`` are the keys whose filename does not name this project,
        which get a pointer so :meth:`get_file` finds them without a hint.
        """
        await self._store_page(key, record, blobs, files, strays)

    async def _store_page(
        self,
        key: str,
        record: PageRecord,
        blobs: Mapping[str, bytes],
        files: FileMap | None,
        strays: tuple[str, ...],
        expire: float | None = None,
    ) -> None:
        """The one write path of :meth:`put_page` and :meth:`put_prepared` (a subclass
        that also writes pages elsewhere, store/tiered.py, overrides only this)."""
        await self._run(
            self._page_writes, self._put_sync, key, record, blobs, files, strays, expire
        )

    def _put_sync(
        self,
        key: str,
        record: PageRecord,
        blobs: Mapping[str, bytes],
        files: FileMap | None,
        strays: tuple[str, ...],
        expire: float | None = None,
    ) -> None:
        for name, data in blobs.items():
            self._write_body(name, data)
        old = self._index.get(("page", key))
        version = files_version(record)
        negative = record.status != 200
        with self._index.transact():
            if files is not None:
                packed = {k: pack_file_record(r) for k, r in files.items()}
                self._index.set(("files", key), (version, packed))
                for stray in strays:
                    self._index.set(("file", stray), key)
            self._index.set(("page", key), record.to_dict(), expire=expire if negative else None)
            if negative:
                self._index.push((key, record.fetched_at), prefix=_NEGATIVE_QUEUE)
        if negative:
            self._bound_negatives()
        if files is not None:
            self._remember_map(key, version, files)
        if strays:
            with self._maps_lock:
                for stray in strays:
                    if self._pending_strays.get(stray) == key:
                        del self._pending_strays[stray]
        if old:
            self._drop_unreferenced(old, record)

    def _bound_negatives(self) -> None:
        """Drop the oldest "no such project" records beyond :attr:`max_negative`.

        They are queued as they are written (diskcache's queue: numbered keys, so its length
        is back - front); one that was refetched since (or found) is not the queued one, and
        stays. Runs in the page-writer thread.
        """
        while True:
            # Queue keys are "<prefix>-<number>" strings (the stubs type them loosely).
            front: str | None = self._index.peek(prefix=_NEGATIVE_QUEUE, side="front")[0]  # type: ignore[assignment]
            back: str | None = self._index.peek(prefix=_NEGATIVE_QUEUE, side="back")[0]  # type: ignore[assignment]
            if front is None or back is None:
                return
            if int(back.rsplit("-", 1)[1]) - int(front.rsplit("-", 1)[1]) < self.max_negative:
                return
            pulled: tuple[Any, Any] = self._index.pull(prefix=_NEGATIVE_QUEUE, side="front")  # type: ignore[assignment]
            item = pulled[1]
            if item is None:
                return
            name, fetched_at = item
            with self._index.transact():
                raw = self._index.get(("page", name))
                if (
                    isinstance(raw, dict)
                    and raw.get("status") != 200
                    and raw.get("fetched_at") == fetched_at
                ):
                    self._index.delete(("page", name))

    def _drop_unreferenced(self, old: Mapping[str, Any], new: PageRecord) -> None:
        keep = {b.name for b in new.bodies.values()}
        for body in old.get("bodies", {}).values():
            if body["name"] not in keep:
                # A request may be sending it right now; it holds an open descriptor, and
                # one that lost the race re-reads the record (see handlers).
                (self.root / "pages" / body["name"]).unlink(missing_ok=True)

    def _write_body(self, name: str, data: bytes) -> None:
        """Write a page body under its name (its sha256), without fsync.

        A page can always be fetched again, and fsyncs are what a burst of page misses
        queued on: each one also flushes every download being written at the time (ext4
        commits its journal as one), 4 per page. A body a crash damaged is caught before
        it is sent: each body is hashed once per process before its first use (see
        :meth:`_read_checked`), and the page fetched again. A file already there is only
        trusted when this process wrote or hashed it; otherwise it is replaced.
        """
        path = self.root / "pages" / name
        if name in self._checked and file_size(path) == len(data):
            return
        fd, tmp = tempfile.mkstemp(dir=self.tmp_dir, prefix=PAGE_TEMP_PREFIX)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        self._checked_add(name)

    def _checked_add(self, name: str) -> None:
        if len(self._checked) > _CHECKED_NAMES:
            self._checked.clear()  # bounded; the cost is one more hash per body
        self._checked.add(name)

    def drop_damaged_body(self, body: Body) -> None:
        """Remove a body found damaged, so nothing trusts it and the next write replaces it."""
        self._checked.discard(body.name)
        self.bodies.drop(body.name)
        self.page_body_path(body).unlink(missing_ok=True)

    async def open_body(self, body: Body) -> IO[bytes]:
        """A large body's file, opened for sendfile after it was checked whole.

        Raises:
            FileNotFoundError, DamagedBody: as for :meth:`read_body`.
        """
        await self.check_body(body)
        fobj = open(self.page_body_path(body), "rb")  # closed by the response
        if (actual := os.fstat(fobj.fileno()).st_size) != body.size:
            fobj.close()
            raise DamagedBody(body, f"{actual} bytes, not {body.size}")
        return fobj

    def page_body_path(self, body: Body) -> Path:
        return self.root / "pages" / body.name

    async def read_body(self, body: Body) -> bytes:
        """A small body's bytes, from memory when recently used (see body_cache.py).

        Raises:
            FileNotFoundError: a refresh replaced the body since its record was read.
            DamagedBody: the file is not what its record says.
        """
        data = self.bodies.get(body.name)
        if data is None:
            data = await self._run(self._reads, self._read_checked, body)
            self.bodies.put(body.name, data)
        return data

    async def check_body(self, body: Body) -> None:
        """Make sure a body about to be sent from disk is whole (hashed once per process).

        Raises:
            FileNotFoundError, DamagedBody: as for :meth:`read_body`.
        """
        if body.name not in self._checked:
            await self._run(self._reads, self._read_checked, body)

    def _read_checked(self, body: Body) -> bytes:
        data = self.page_body_path(body).read_bytes()
        if body.name not in self._checked:
            if (problem := _body_problem(body, data)) is not None:
                raise DamagedBody(body, problem)
            self._checked_add(body.name)
        elif len(data) != body.size:
            raise DamagedBody(body, f"{len(data)} bytes, not {body.size}")
        return data

    async def get_file(
        self, key: str, project: str | None, version: str | None = None
    ) -> FileRecord | None:
        """The record of file ``key``, looked up in ``project``'s map (the filename's
        project), else through a stray pointer.

        ``version`` is :func:`files_version` of the page record the caller holds for
        ``project``: an in-memory map of another version is not trusted (another worker
        stored a new rendering, whose files may have new bytes at the same URL) and the map
        is read again from the record store. None: whatever is stored (a stale fallback).
        """
        with self._maps_lock:
            for owner in (project, self._pending_strays.get(key)):
                entry = self._maps.get(owner) if owner is not None else None
                if entry is None:
                    continue
                if owner == project and version is not None and entry[0] != version:
                    continue  # superseded: read from the record store below
                if key in entry[1]:
                    self._maps.move_to_end(owner)  # type: ignore[arg-type]
                    return entry[1][key]
        return await self._run(self._reads, self._get_file_sync, key, project)

    def _get_file_sync(self, key: str, project: str | None) -> FileRecord | None:
        # Not in memory, or another version (a restart, another worker refreshed the page).
        for owner in (project, self._index.get(("file", key))):
            if not isinstance(owner, str):
                continue
            unpacked = _unpack_map(self._index.get(("files", owner)))
            if unpacked is None:
                continue  # none, or written by an incompatible version: a miss
            version, files = unpacked
            self._remember_map(owner, version, files)
            if key in files:
                return files[key]
        return None

    def _remember_map(self, project: str, version: str | None, files: FileMap) -> None:
        with self._maps_lock:
            self._remember_map_locked(project, version, files)

    def _remember_map_locked(self, project: str, version: str | None, files: FileMap) -> None:
        old = self._maps.pop(project, None)
        self._map_entries -= len(old[1]) if old else 0
        self._maps[project] = (version, files)
        self._map_entries += len(files)
        while self._map_entries > _MAP_CACHE_ENTRIES and len(self._maps) > 1:
            _name, dropped = self._maps.popitem(last=False)
            self._map_entries -= len(dropped[1])

    def forget_size(self, path: Path) -> None:
        """Drop the size record of a stored file about to be evicted (synchronous), so
        records do not outlive their files without end."""
        if path.parent.parent.name == "sha256":
            with contextlib.suppress(sqlite3.Error):
                self._index.delete(("size", path.name))

    async def verified_size(self, sha256: str) -> int | None:
        """The size the stored file ``sha256`` had when its hash was checked (recorded at
        commit); None when it was stored before sizes were recorded."""
        with self._maps_lock:
            if sha256 in self._sizes:
                self._sizes.move_to_end(sha256)
                return self._sizes[sha256]
        try:
            size = await self._run(self._reads, self.recorded_size, sha256)
        except sqlite3.Error:
            return None  # not remembered: asked again next time
        # Remembered even when None: the size is recorded before the file gets its name,
        # so a stored file without one will never have one (callers ask on a hit).
        self._note_size(sha256, size)
        return size

    def _note_size(self, sha256: str, size: int | None) -> None:
        with self._maps_lock:  # commits note sizes from a file-writer thread
            self._sizes[sha256] = size
            self._sizes.move_to_end(sha256)
            while len(self._sizes) > _SIZE_ENTRIES:
                self._sizes.popitem(last=False)

    def drop_damaged_file(self, path: Path, problem: str) -> None:
        """Remove a stored file found damaged on a hit; its next request downloads it again."""
        logger.error("stored file %s is damaged (%s): removed, fetching it again", path, problem)
        path.unlink(missing_ok=True)

    # -- blobs ---------------------------------------------------------------------------

    @staticmethod
    def open_blob(path: Path) -> IO[bytes]:
        """Open a stored file for sending, and keep the LRU clock of evict.py: its mtime,
        refreshed at most once a minute per file.

        Raises:
            FileNotFoundError: not stored (or evicted a moment ago).
        """
        fobj = open(path, "rb")  # closed by the response
        if time.time() - os.fstat(fobj.fileno()).st_mtime > TOUCH_AFTER:
            with contextlib.suppress(OSError):
                os.utime(fobj.fileno())
        return fobj

    def blob_path(self, sha256: str) -> Path:
        return self.root / _blob_relpath(sha256)

    def unhashed_blob_path(self, url_key: str) -> Path:
        """Where a file whose index gives no sha256 is kept (named by its proxy path)."""
        digest = hashlib.sha256(url_key.encode()).hexdigest()
        return self.root / "files" / "url" / digest[:2] / digest

    @staticmethod
    def write_chunk(fd: int, data: bytes) -> None:
        """Write all of ``data`` to a download's temporary (in a disk-writer thread).

        Raises:
            OSError: the disk is full (ENOSPC) or failing.
        """
        write_all(fd, data)

    def temp_path(self, final: Path) -> Path:
        """Where ``final`` is written while it downloads. A fixed name, so a worker
        process can follow a download that another worker runs."""
        return self.tmp_dir / f"dl-{final.parent.parent.name}-{final.name}"

    def lock_path(self, final: Path) -> Path:
        return self.tmp_dir / "locks" / f"{final.parent.parent.name}-{final.name}"

    def new_temp(self, final: Path) -> tuple[int, Path]:
        """Create (truncating) the temporary for ``final``; only its lock holder may."""
        path = self.temp_path(final)
        return os.open(path, os.O_CREAT | os.O_TRUNC | os.O_WRONLY, 0o644), path

    # -- metadata extracted from wheels (proxy/metadata.py) -------------------------------

    def extracted_metadata(self, wheel_sha256: str) -> str | None:
        """The sha256 of the core metadata extracted from wheel ``wheel_sha256`` (stored
        under that name), "" when it could not be read, None when never tried. Synchronous:
        page rendering asks it for the few wheels whose index advertises no metadata."""
        value = self._index.get(("extracted", wheel_sha256))
        return value if isinstance(value, str) else None

    async def store_extracted(self, wheel_sha256: str, data: bytes | None) -> str:
        """Store metadata extracted from a wheel (None: unreadable) and remember which it
        was; returns its sha256 ("" for unreadable)."""
        return await self._run(self._file_writes, self._store_extracted_sync, wheel_sha256, data)

    def _store_extracted_sync(self, wheel_sha256: str, data: bytes | None) -> str:
        digest = "" if data is None else hashlib.sha256(data).hexdigest()
        if data is not None and not self.blob_path(digest).exists():
            fd, tmp = tempfile.mkstemp(dir=self.tmp_dir, prefix="meta-")
            try:
                with os.fdopen(fd, "wb") as f:
                    f.write(data)
                self._commit_sync(Path(tmp), self.blob_path(digest))
            except BaseException:
                Path(tmp).unlink(missing_ok=True)
                raise
        self._index.set(("extracted", wheel_sha256), digest)
        return digest

    async def commit(self, tmp: Path, final: Path) -> None:
        """fsync and move a verified temporary into place (rename, never copy).

        A content-addressed file's size is recorded first, so a hit can tell a file the
        disk cut short even when the index gives no size (PEP 503 HTML has none), and a
        stored file without a size record is one from before sizes were kept.
        """
        await self._run(self._file_writes, self._commit_sync, tmp, final)

    def _commit_sync(self, tmp: Path, final: Path) -> None:
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
            size = os.fstat(fd).st_size
        finally:
            os.close(fd)
        if final.parent.parent.name == "sha256":
            try:
                self._index.set(("size", final.name), size)
            except sqlite3.Error as e:  # the file is still good; only the check is lost
                logger.warning("cannot record the size of %s: %s", final.name, e)
            self._note_size(final.name, size)
        final.parent.mkdir(parents=True, exist_ok=True)
        os.replace(tmp, final)
        os.utime(final, (time.time(), time.time()))
