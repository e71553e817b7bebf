"""Offline maintenance of a cache directory: verify, prune, stats (the CLI's verbs).

They work on a directory a proxy is serving from, too: verification only removes files
whose bytes no longer hash to their name, pruning takes the same lock as eviction, and
figures come from the shared store every worker writes to.
"""

import hashlib
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from cacheproxy.store.local import Storage

logger = logging.getLogger(__name__)

_READ = 1024 * 1024


@dataclass
class VerifyReport:
    checked: int = 0
    checked_bytes: int = 0
    bad: list[str] = field(default_factory=list)  # removed: bytes differ from their name
    unverifiable: int = 0  # files/url/ files whose index gives neither a hash nor a size

    def line(self) -> str:
        return (
            f"verified {self.checked} file(s), {self.checked_bytes / 1e9:.2f} GB: "
            f"{len(self.bad)} corrupt and removed"
            + (f"; {self.unverifiable} without any hash or size" if self.unverifiable else "")
        )


def _digest(path: Path, name: str = "sha256") -> str:
    digest = hashlib.new(name)
    with path.open("rb") as f:
        while chunk := f.read(_READ):
            digest.update(chunk)
    return digest.hexdigest()


def _url_expectations(storage: Storage) -> dict[Path, tuple[str | None, str | None, int | None]]:
    """files/url/ path -> (hash name, hex, size) from the records: what the index gave."""
    out: dict[Path, tuple[str | None, str | None, int | None]] = {}
    for _project, files in storage.file_maps():
        for key, rec in files.items():
            if rec.sha256 is None:
                out[storage.unhashed_blob_path(key)] = (rec.hash_name, rec.hash_value, rec.size)
    return out


def verify(storage: Storage, progress: Callable[[Path], None] | None = None) -> VerifyReport:
    """Re-hash every stored file; remove (and report) the ones that differ.

    A content-addressed file must hash to its name. A file kept under ``files/url/`` (its
    index gave no sha256) must match the other hash its record gives (md5, ...) and its
    size; one whose record is gone is removed (the start-up check would remove it too),
    and one whose index gave neither hash nor size is counted as unverifiable.
    """
    report = VerifyReport()
    for path in sorted((storage.root / "files" / "sha256").rglob("*")):
        if not path.is_file():
            continue
        if progress is not None:
            progress(path)
        try:
            actual = _digest(path)
            size = path.stat().st_size
        except FileNotFoundError:
            continue  # evicted meanwhile
        report.checked += 1
        report.checked_bytes += size
        if actual != path.name:
            _remove(report, path, f"sha256 {actual}")
    expectations = _url_expectations(storage)
    for path in sorted((storage.root / "files" / "url").rglob("*")):
        if not path.is_file():
            continue
        if progress is not None:
            progress(path)
        name, value, listed_size = expectations.get(path, (None, None, None))
        try:
            actual_size = path.stat().st_size
            digest = _digest(path, name) if name and value else None
        except FileNotFoundError:
            continue
        report.checked += 1
        report.checked_bytes += actual_size
        if listed_size is not None and actual_size != listed_size:
            _remove(report, path, f"{actual_size} bytes, not {listed_size}")
        elif digest is not None and digest != value:
            _remove(report, path, f"{name} {digest}")
        elif digest is None and listed_size is None:
            report.unverifiable += 1
    return report


def _remove(report: VerifyReport, path: Path, what: str) -> None:
    # Info, not error: the caller reports ``bad`` (cli/maintenance.py prints each one); an
    # error record would reach the terminal too and name the file twice.
    logger.info("corrupt file removed: %s (%s)", path, what)
    path.unlink(missing_ok=True)
    report.bad.append(str(path))
