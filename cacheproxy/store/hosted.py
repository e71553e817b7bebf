"""Hosted indexes on disk: the team's own uploaded files and their records.

Layout under the cache directory::

    hosted/records/            diskcache: one record per (index, project): filename -> file
    hosted/files/ab/<sha256>   uploaded files and the METADATA taken from wheels, by sha256
    hosted/changed             replaced at every change: one stat tells a process to reload
    tmp/upload-*               uploads being received (removed at start-up with all of tmp/)

Kept apart from the proxied ``files/``: eviction (evict.py) and repair (repair.py) walk
only that tree, and an uploaded file is the only copy there is, so nothing may evict it.
Records of one project change in one SQLite transaction, so two uploads of one filename
(from two worker processes, say) cannot both win.
"""

import contextlib
import logging
import os
import tempfile
from collections.abc import Mapping
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import diskcache

from cacheproxy.errors import ConfigError
from cacheproxy.store.disk_writer import write_all

logger = logging.getLogger(__name__)

UPLOAD_TEMP_PREFIX = "upload-"
_GENERATION = ("generation",)


@dataclass(frozen=True, slots=True)
class HostedFile:
    """One uploaded distribution file, with what its pages advertise."""

    filename: str
    version: str
    sha256: str
    size: int
    upload_time: float  # seconds since the epoch
    uploader: str
    requires_python: str | None = None
    metadata_sha256: str | None = None  # PEP 658: the wheel's METADATA, stored beside it
    yanked: bool | str = False  # PEP 592: True, or the reason

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "HostedFile":
        names = cls.__dataclass_fields__
        return cls(**{k: v for k, v in d.items() if k in names})


# index -> project -> filename -> file
Snapshot = dict[str, dict[str, dict[str, HostedFile]]]


class FileExists(Exception):
    """The index already has a file of that name with other bytes."""


class NameUsed(Exception):
    """A deleted file had this name: it may come back only with the same bytes."""


class NoSuchFile(Exception):
    """The index has no file of that name."""


class HostedStore:
    """The records and files of every hosted index. Synchronous: callers use threads."""

    def __init__(self, root: Path, records: diskcache.Cache) -> None:
        self._root = root
        self._records = records
        self._files = root / "hosted" / "files"
        self._tmp = root / "tmp"
        self._marker = root / "hosted" / "changed"

    @classmethod
    def open_sync(cls, root: Path) -> "HostedStore":
        """Open (creating) the hosted part of the cache directory.

        Raises:
            ConfigError: it cannot be created.
        """
        try:
            (root / "hosted" / "files").mkdir(parents=True, exist_ok=True)
            (root / "tmp").mkdir(parents=True, exist_ok=True)
            records = diskcache.Cache(
                str(root / "hosted" / "records"),
                size_limit=2**62,
                eviction_policy="none",
                timeout=60,
            )
        except OSError as e:
            raise ConfigError(f"cache dir {root} is not usable: {e.strerror or e}") from e
        return cls(root, records)

    def close_sync(self) -> None:
        self._records.close()

    def generation(self) -> int:
        """A number that changes whenever any record changes (in any process)."""
        value = self._records.get(_GENERATION, 0)
        return value if isinstance(value, int) else 0

    def change_mark(self) -> tuple[int, int] | None:
        """Cheap enough for every page request (one stat, no thread): it differs after any
        change by any process. Each change replaces the marker (a new inode and mtime)."""
        try:
            st = os.stat(self._marker)
        except FileNotFoundError:
            return None
        return st.st_ino, st.st_mtime_ns

    def _changed(self) -> None:
        """Count a change and replace the marker (inside the change's transaction)."""
        generation = self._records.incr(_GENERATION, default=0)
        fd, tmp = self.new_upload()
        try:
            write_all(fd, str(generation).encode())
        finally:
            os.close(fd)
        os.replace(tmp, self._marker)

    def load_all(self) -> tuple[int, Snapshot]:
        """Every record, and the generation they are from."""
        with self._records.transact():
            generation = self.generation()
            found: Snapshot = {}
            for key in list(self._records.iterkeys()):
                if not (isinstance(key, tuple) and len(key) == 3 and key[0] == "project"):
                    continue
                raw = self._records.get(key)
                if not isinstance(raw, dict) or not raw:
                    continue
                try:
                    files = {name: HostedFile.from_dict(d) for name, d in raw.items()}
                except TypeError:
                    logger.error("unreadable hosted record %s/%s: skipped", key[1], key[2])
                    continue
                found.setdefault(key[1], {})[key[2]] = files
        return generation, found

    def blob_path(self, sha256: str) -> Path:
        return self._files / sha256[:2] / sha256

    def new_upload(self) -> tuple[int, Path]:
        """A temporary (open for writing) that an upload is received into."""
        fd, name = tempfile.mkstemp(dir=self._tmp, prefix=UPLOAD_TEMP_PREFIX)
        return fd, Path(name)

    def add(
        self, index: str, project: str, record: HostedFile, tmp: Path, metadata: bytes | None
    ) -> bool:
        """Move a verified upload into place and record it.

        Returns True when stored, False when the same bytes were already there (an
        idempotent re-upload; ``tmp`` is removed).

        Raises:
            FileExists: ``index`` has a file of that name with other bytes.
            NameUsed: a deleted file had that name and other bytes.
        """
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)  # before the record can point at it
        finally:
            os.close(fd)
        key = ("project", index, project)
        try:
            with self._records.transact():
                files = self._records.get(key) or {}
                old = files.get(record.filename)
                if old is not None:
                    if old["sha256"] != record.sha256:
                        raise FileExists(record.filename)
                    return False
                # A file never changes at its URL (clients cache it for a year): a deleted
                # name may only come back with the bytes it had, as on PyPI.
                was = self._records.get(("deleted", index, record.filename))
                if was is not None and was != record.sha256:
                    raise NameUsed(record.filename)
                self._put_blob(record.sha256, tmp)
                if metadata is not None and record.metadata_sha256 is not None:
                    self._put_bytes(record.metadata_sha256, metadata)
                self._records.set(key, {**files, record.filename: asdict(record)})
                self._changed()
            return True
        finally:
            tmp.unlink(missing_ok=True)

    def _put_blob(self, sha256: str, tmp: Path) -> None:
        final = self.blob_path(sha256)
        final.parent.mkdir(parents=True, exist_ok=True)
        os.replace(tmp, final)

    def _put_bytes(self, sha256: str, data: bytes) -> None:
        final = self.blob_path(sha256)
        if final.exists():
            return
        fd, tmp = self.new_upload()
        try:
            with contextlib.closing(os.fdopen(fd, "wb")) as f:
                write_all(f.fileno(), data)
                f.flush()
                os.fsync(f.fileno())
            self._put_blob(sha256, tmp)
        finally:
            tmp.unlink(missing_ok=True)

    def set_yanked(self, index: str, project: str, filename: str, yanked: bool | str) -> HostedFile:
        """Yank (``True`` or a reason) or unyank (``False``) one file.

        Raises:
            NoSuchFile: ``index`` has no such file.
        """
        key = ("project", index, project)
        with self._records.transact():
            files = self._records.get(key) or {}
            if filename not in files:
                raise NoSuchFile(filename)
            record = replace(HostedFile.from_dict(files[filename]), yanked=yanked)
            self._records.set(key, {**files, filename: asdict(record)})
            self._changed()
        return record

    def delete(self, index: str, project: str, filename: str) -> HostedFile:
        """Remove one file from an index, and its bytes unless another record uses them.

        Raises:
            NoSuchFile: ``index`` has no such file.
        """
        key = ("project", index, project)
        with self._records.transact():
            files = dict(self._records.get(key) or {})
            if filename not in files:
                raise NoSuchFile(filename)
            record = HostedFile.from_dict(files.pop(filename))
            self._records.set(("deleted", index, filename), record.sha256)
            if files:
                self._records.set(key, files)
            else:
                self._records.delete(key)
            self._changed()
            _generation, everything = self.load_all()
            used = {
                sha
                for projects in everything.values()
                for by_name in projects.values()
                for f in by_name.values()
                for sha in (f.sha256, f.metadata_sha256)
            }
            for sha in (record.sha256, record.metadata_sha256):
                if sha is not None and sha not in used:
                    self.blob_path(sha).unlink(missing_ok=True)
        return record
