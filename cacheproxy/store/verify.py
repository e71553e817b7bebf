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

    def line(self) -> str:
        return (
            f"verified {self.checked} file(s), {self.checked_bytes / 1e9:.2f} GB: "
            f"{len(self.bad)} corrupt and removed"
        )


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(_READ):
            digest.update(chunk)
    return digest.hexdigest()


def verify(storage: Storage, progress: Callable[[Path], None] | None = None) -> VerifyReport:
    """Re-hash every content-addressed file; remove (and report) the ones that differ.

    Files kept under ``files/url/`` (their index published no hash) cannot be re-hashed;
    their size is checked by the start-up check instead.
    """
    report = VerifyReport()
    for path in sorted((storage.root / "files" / "sha256").rglob("*")):
        if not path.is_file():
            continue
        if progress is not None:
            progress(path)
        try:
            actual = _sha256(path)
            size = path.stat().st_size
        except FileNotFoundError:
            continue  # evicted meanwhile
        report.checked += 1
        report.checked_bytes += size
        if actual != path.name:
            logger.error("corrupt file removed: %s (sha256 %s)", path, actual)
            path.unlink(missing_ok=True)
            report.bad.append(str(path))
    return report
