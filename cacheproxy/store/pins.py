"""Hashes pinned by first download, for files an index lists without one.

Some indexes (PyTorch's, for some wheels) give no sha256 for a file. The first download
that completes is taken as the file (its size, when the index gave one, was checked); its
sha256 and size are pinned here, keyed by the file's URL, so every later download of that
URL must hash to the same bytes (a different body is refused like a wrong hash) and the
pages the proxy renders from then on carry the hash. A pin holds while the index lists the
file as before: when it gives a size that differs from the pinned one, the index says the
URL is another file now, and the next verified download pins that instead. One small file
per pin under ``pins/``, written whole (atomic rename), so every worker process sees it.
"""

import contextlib
import hashlib
import json
import logging
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Pin:
    sha256: str
    size: int


def _is_sha256(value: object) -> bool:
    return (
        isinstance(value, str) and len(value) == 64 and all(c in "0123456789abcdef" for c in value)
    )


class Pins:
    """The pins of one cache directory (synchronous: small local files)."""

    def __init__(self, root: Path) -> None:
        self._dir = root / "pins"
        self._tmp = root / "tmp"

    def _path(self, url: str) -> Path:
        digest = hashlib.sha256(url.encode()).hexdigest()
        return self._dir / digest[:2] / digest

    def get(self, url: str, listed_size: int | None = None) -> Pin | None:
        """The pin of ``url``, None when there is none (or it is unreadable, or the index
        now lists another size, ``listed_size``, for it)."""
        pin = self._read(url)
        if pin is None or (listed_size is not None and listed_size != pin.size):
            return None
        return pin

    def _read(self, url: str) -> Pin | None:
        try:
            data = json.loads(self._path(url).read_bytes())
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as e:
            logger.warning("ignoring an unreadable hash pin: %s", e)
            return None
        if not isinstance(data, dict) or data.get("url") != url:
            return None
        sha, size = data.get("sha256"), data.get("size")
        if not _is_sha256(sha) or not isinstance(size, int) or size < 0:
            return None
        assert isinstance(sha, str)
        return Pin(sha, size)

    def put(self, url: str, sha256: str, size: int) -> Pin:
        """Pin ``url`` to ``sha256``/``size`` unless a pin of that size holds already; the
        pin that holds is returned (of two at once, the first)."""
        existing = self._read(url)
        if existing is not None and existing.size == size:
            return existing
        path = self._path(url)
        path.parent.mkdir(parents=True, exist_ok=True)
        body = json.dumps({"url": url, "sha256": sha256, "size": size}).encode()
        fd, tmp = tempfile.mkstemp(dir=self._tmp, prefix="pin-")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(body)
                f.flush()
                os.fsync(f.fileno())
            if existing is not None:
                os.replace(tmp, path)  # the index lists another file at that URL now
            else:
                # link, not replace: of two processes pinning at once, the first one wins.
                with contextlib.suppress(FileExistsError):
                    os.link(tmp, path)
        finally:
            Path(tmp).unlink(missing_ok=True)
        return self._read(url) or Pin(sha256, size)

    @staticmethod
    def adopt(stored: Path, blob: Path) -> None:
        """Give a file stored under its URL (``stored``) its content address ``blob`` too,
        once its sha256 is pinned: the pages rendered from then on name it by that hash. A
        hard link, so no second copy; the URL name goes with the next start-up check."""
        if blob.exists():
            return
        blob.parent.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(FileExistsError):
            os.link(stored, blob)
