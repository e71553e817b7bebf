"""Keeping the cache within its size limit: least recently used files go first.

"Recently used" is the file's mtime: a hit refreshes it (at most once a minute, see
Storage.open_blob), so the order survives restarts with no bookkeeping of its own, and every
worker sees the same order. Files used in the last few minutes are never removed, and a
file that is being sent keeps streaming even if it is removed (its reader holds it open;
POSIX frees the blocks only after the last close).

Pages are not evicted: they are small, and without its page a file cannot be verified.
"""

import logging
import time
from dataclasses import dataclass
from pathlib import Path

from cacheproxy.store.counters import Tally
from cacheproxy.store.filelock import FileLock
from cacheproxy.store.local import Storage

logger = logging.getLogger(__name__)

# Evict down to this share of the limit, so we do not run again for every new file.
LOW_WATER = 0.9
# Never remove a file used (or stored) this recently: it may be in a transfer right now.
PROTECT_SECONDS = 300.0


@dataclass
class EvictReport:
    files: int = 0  # in the store before
    bytes: int = 0
    removed: int = 0
    removed_bytes: int = 0
    skipped_recent: int = 0  # would have gone, but were used too recently

    def line(self) -> str:
        kept = self.bytes - self.removed_bytes
        return (
            f"removed {self.removed} file(s), {self.removed_bytes / 1e9:.2f} GB; cache now "
            f"{kept / 1e9:.2f} GB in {self.files - self.removed} file(s)"
            + (f"; {self.skipped_recent} recently used kept" if self.skipped_recent else "")
        )


def _stored_files(storage: Storage) -> list[tuple[float, int, Path]]:
    out = []
    for path in (storage.root / "files").rglob("*"):
        try:
            st = path.stat()
        except FileNotFoundError:
            continue
        if path.is_file():
            out.append((st.st_mtime, st.st_size, path))
    return out


def evict(
    storage: Storage,
    metrics: Tally | None,
    *,
    max_bytes: int | None,
    older_than: float | None = None,
    now: float | None = None,
    protect: float = PROTECT_SECONDS,
) -> EvictReport | None:
    """Remove least recently used files above ``max_bytes`` (down to LOW_WATER of it) and
    files unused for ``older_than`` seconds. None when another process is already at it.
    Synchronous (a directory walk): run it in a thread."""
    lock = FileLock(storage.tmp_dir / "locks" / "evict")
    if not lock.try_acquire():
        return None
    try:
        now = time.time() if now is None else now
        files = sorted(_stored_files(storage))  # oldest mtime first
        report = EvictReport(files=len(files), bytes=sum(size for _, size, _ in files))
        total = report.bytes
        target = None if max_bytes is None else int(max_bytes * LOW_WATER)
        over = max_bytes is not None and total > max_bytes
        for mtime, size, path in files:
            too_old = older_than is not None and now - mtime > older_than
            too_big = over and target is not None and total > target
            if not (too_old or too_big):
                if older_than is None:
                    break  # sorted: nothing later qualifies either
                continue
            if now - mtime < protect:
                report.skipped_recent += 1
                continue
            storage.forget_size(path)  # first: a file stored again records its own
            path.unlink(missing_ok=True)
            total -= size
            report.removed += 1
            report.removed_bytes += size
        if metrics is not None:
            metrics.add("evictions", value=report.removed)
            metrics.set_total("cache_files", report.files - report.removed)
            metrics.set_total("cache_bytes", report.bytes - report.removed_bytes)
        if report.removed:
            logger.info("eviction: %s", report.line())
        return report
    finally:
        lock.release(remove=False)
