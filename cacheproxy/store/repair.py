"""Start-up consistency check: make the records and the files on disk agree.

After a crash (kill -9, power loss) the cache may hold: a page record whose body files are
gone, body files no record points at (written just before the crash), files in the store
that no page lists, files damaged on disk (size differs from the index or from the size
recorded when the file was verified), or foreign junk. Temporaries are handled separately
(removed before anything starts). Each case is repaired or dropped and counted in one log
line. Files written while the check runs are newer than its start and left alone, so it can
run in the background while the proxy serves.

A content-addressed file (``files/sha256/``) that no record names is kept: it is valid by
construction (its name is its hash; ``verify`` re-hashes it), and the next fetch of a page
that lists it links it again. Records are lost for reasons that say nothing about the files
(a damaged record store is started empty, see local.py), so only an explicit ``prune`` or
the size limit removes such files. A ``files/url/`` file no record names cannot be checked
against anything and is removed.
"""

import logging
import os
import re
import sqlite3
import time
from dataclasses import dataclass, fields
from pathlib import Path

from cacheproxy.simple.layout import METADATA_SUFFIX
from cacheproxy.store.counters import Tally
from cacheproxy.store.local import Storage, file_size

logger = logging.getLogger(__name__)

_HEX64 = re.compile(r"^[0-9a-f]{64}$")
# Anything younger than this when the check starts may belong to a write in progress.
GRACE_SECONDS = 60.0


@dataclass
class RepairReport:
    pages: int = 0
    bodies: int = 0
    files: int = 0
    dropped_pages: int = 0  # records whose bodies were missing: refetched on next use
    orphan_bodies: int = 0
    orphan_files: int = 0  # files/url/ files no page lists any more (removed)
    damaged_files: int = 0  # size differs from the index, or a name that is not a hash
    unlisted_files: int = 0  # content-addressed files no page lists (kept)
    live_pages: int = 0  # after the repair: project pages held (status 200)
    kept_files: int = 0  # after the repair: files in the store, and their bytes
    kept_bytes: int = 0

    @property
    def changed(self) -> int:
        return self.dropped_pages + self.orphan_bodies + self.orphan_files + self.damaged_files

    def line(self) -> str:
        return (
            "consistency check: "
            + ", ".join(
                f"{f.name.replace('_', ' ')} {getattr(self, f.name)}"
                for f in fields(self)
                if not f.name.startswith(("live_", "kept_", "unlisted_"))
            )
            + f"; {self.unlisted_files} stored file(s) no page lists yet, kept"
        )


def _expected_files(storage: Storage) -> dict[Path, int | None]:
    """Every stored file some page links to, with its size when the index gives it."""
    expected: dict[Path, int | None] = {}
    for _project, files in storage.file_maps():
        for key, rec in files.items():
            if rec.sha256:
                expected[storage.blob_path(rec.sha256)] = rec.size
            else:
                expected[storage.unhashed_blob_path(key)] = rec.size
            if rec.metadata_sha256:
                expected.setdefault(storage.blob_path(rec.metadata_sha256), None)
            elif rec.metadata:
                expected.setdefault(storage.unhashed_blob_path(key + METADATA_SUFFIX), None)
    return expected


def repair(storage: Storage, now: float | None = None) -> RepairReport:
    """Check and repair the cache directory (synchronous: run it in a thread)."""
    cutoff = (time.time() if now is None else now) - GRACE_SECONDS
    report = RepairReport()
    referenced: set[str] = set()
    pages_dir = storage.root / "pages"
    for key, record in storage.page_records():
        report.pages += 1
        bodies = [] if record is None else list(record.bodies.values())
        names = [b.name for b in bodies]
        if record is None or any(file_size(pages_dir / b.name) != b.size for b in bodies):
            storage.drop_page(key)
            report.dropped_pages += 1
            continue
        referenced.update(names)
        report.live_pages += record.status == 200 and key != ""
    for body in pages_dir.iterdir():
        report.bodies += 1
        if body.name not in referenced and _older(body, cutoff):
            body.unlink(missing_ok=True)
            report.orphan_bodies += 1
    expected = _expected_files(storage)
    for path in (storage.root / "files").rglob("*"):
        if not path.is_file():
            continue
        report.files += 1
        rel = path.relative_to(storage.root / "files").parts
        well_named = (
            len(rel) == 3
            and rel[0] in ("sha256", "url")
            and _HEX64.match(rel[2]) is not None
            and rel[1] == rel[2][:2]
        )
        if not well_named:
            path.unlink(missing_ok=True)
            report.damaged_files += 1
            continue
        hashed = rel[0] == "sha256"
        if path not in expected:
            if not hashed and _older(path, cutoff):
                path.unlink(missing_ok=True)
                report.orphan_files += 1
                continue
            report.unlisted_files += hashed
        # Stored files were fsynced before their rename, so a crash cannot leave a short
        # one under its final name; a size that disagrees means the disk damaged it.
        # (Re-hashing everything is `cacheproxy verify`'s job, not start-up's.)
        size = storage.recorded_size(rel[2]) if hashed else None
        if size is None:
            size = expected.get(path)
        try:
            actual = path.stat().st_size
        except FileNotFoundError:
            continue  # evicted meanwhile
        if size is not None and actual != size:
            path.unlink(missing_ok=True)
            report.damaged_files += 1
            continue
        report.kept_files += 1
        report.kept_bytes += actual
    return report


def _older(path: Path, cutoff: float) -> bool:
    try:
        return os.stat(path).st_mtime < cutoff
    except FileNotFoundError:
        return False


def log_repair(storage: Storage, metrics: Tally | None = None) -> RepairReport:
    """Repair, log the one line, and reset the shared cache-size figures to what is there."""
    series = ("cache_files", "cache_bytes", "cache_pages")
    # The proxy serves while this scans: what it stores meanwhile is counted as it happens,
    # so keep those changes on top of the scanned figures rather than overwrite them.
    before = {name: metrics.current(name) for name in series} if metrics is not None else {}
    try:
        report = repair(storage)
    except sqlite3.DatabaseError as e:  # damage that opening the store did not show
        logger.error("consistency check stopped: the record store is damaged (%s)", e)
        return RepairReport()
    log = logger.warning if report.changed else logger.info
    log("%s", report.line())
    if metrics is not None:
        scanned = (report.kept_files, report.kept_bytes, report.live_pages)
        for name, value in zip(series, scanned, strict=True):
            metrics.set_total(name, value + metrics.current(name) - before[name])
    return report
