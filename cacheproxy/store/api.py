"""What the proxy needs from a store: the interface every store implementation offers.

One implementation today, :class:`cacheproxy.store.local.Storage` (the cache directory on
local disk). An object-store implementation for replicas keeps a local tier of the same
shape in front of the bucket, so files are still sent from local paths (sendfile) and
downloads still stream through local temporaries; what changes behind this interface is
where records, page bodies and verified files also live, and how one download per file is
elected (a lease in the bucket instead of a lock file). Nothing in ``proxy/`` or ``web/``
names an implementation except ``proxy/service.py``, which opens one.
"""

from collections.abc import AsyncIterator, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Protocol

from cacheproxy.store.body_cache import BodyCache
from cacheproxy.store.records import Body, FileMap, FileRecord, PageRecord


@dataclass(frozen=True, slots=True)
class StoredCopy:
    """The file is in the shared store (``size`` bytes): copy it from there."""

    size: int


class UploadRight(Protocol):
    """This replica downloads the file from upstream for every replica (it holds the
    lease): :meth:`publish` its bytes, then :meth:`release`, always."""

    async def publish(self, chunks: AsyncIterator[bytes]) -> bool:
        """Put the file in the store as its bytes arrive; ``chunks`` ends only once the
        whole file is verified, and raises otherwise (then nothing is stored). A store
        failure is logged, not raised: the local copy still serves. True when the store
        holds the file afterwards."""

    async def release(self) -> None: ...


class SharedFiles(Protocol):
    """Verified files shared by the replicas of a team deployment (store/shared.py).

    Its calls raise :class:`cacheproxy.errors.SharedStoreError` when the store fails.
    """

    async def claim_file(self, sha256: str) -> StoredCopy | UploadRight | None:
        """Where to get file ``sha256``: the store, upstream for everyone, or (None)
        upstream without the store (it is down, or another replica's download is slow)."""

    def open_file(
        self, sha256: str
    ) -> AbstractAsyncContextManager[tuple[int, AsyncIterator[bytes]]]: ...

    async def drop_damaged_file(self, sha256: str) -> None: ...

    def not_shared(self, sha256: str) -> None:
        """File ``sha256`` was verified and stored on local disk only (the store was down
        or failed its upload): put it in the store once the store answers again."""


class Store(Protocol):
    """Records, page bodies and verified files, as the proxy uses them."""

    # The files replicas share (None: this store is one machine's own).
    shared: SharedFiles | None

    # Small page bodies kept in memory (body_cache.py); the proxy fills it on a miss.
    bodies: BodyCache
    # The threads a download's bytes are hashed and written in (disk_writer.py).
    write_pool: ThreadPoolExecutor

    async def close(self) -> None: ...

    def check_writable(self) -> None:
        """Raise unless a file and a record can be written now (readiness)."""

    # -- page records and bodies ----------------------------------------------------------

    async def get_page(self, key: str) -> PageRecord | None: ...

    async def put_page(
        self,
        key: str,
        record: PageRecord,
        bodies: Mapping[str, bytes] | None = None,
        files: FileMap | None = None,
        strays: Iterable[str] = (),
        expire: float | None = None,
    ) -> PageRecord: ...

    async def put_prepared(
        self,
        key: str,
        record: PageRecord,
        blobs: Mapping[str, bytes],
        files: FileMap | None = None,
        strays: tuple[str, ...] = (),
    ) -> None: ...

    def remember_pending(
        self, key: str, files: FileMap, strays: Iterable[str], record: PageRecord | None = None
    ) -> None: ...

    def drop_page(self, key: str) -> bool: ...

    def drop_all_pages(self) -> int: ...

    def invalidate_page(self, key: str) -> bool:
        """Forget a page wherever it is kept (an admin's request; synchronous), so the
        next request fetches it afresh; True if it was here."""

    def invalidate_all(self) -> int: ...

    async def read_body(self, body: Body) -> bytes: ...

    async def open_body(self, body: Body) -> IO[bytes]: ...

    def drop_damaged_body(self, body: Body) -> None: ...

    # -- file records and files -----------------------------------------------------------

    async def get_file(
        self, key: str, project: str | None, version: str | None = None
    ) -> FileRecord | None: ...

    async def verified_size(self, sha256: str) -> int | None: ...

    def drop_damaged_file(self, path: Path, problem: str) -> None: ...

    def open_blob(self, path: Path) -> IO[bytes]: ...

    def blob_path(self, sha256: str) -> Path: ...

    def unhashed_blob_path(self, url_key: str) -> Path: ...

    def extracted_metadata(self, wheel_sha256: str) -> str | None: ...

    async def store_extracted(self, wheel_sha256: str, data: bytes | None) -> str: ...

    # -- downloads in progress ------------------------------------------------------------

    def temp_path(self, final: Path) -> Path: ...

    def lock_path(self, final: Path) -> Path: ...

    def new_temp(self, final: Path) -> tuple[int, Path]: ...

    def write_chunk(self, fd: int, data: bytes) -> None: ...

    async def commit(self, tmp: Path, final: Path) -> None: ...
