"""Hosted indexes: the team's own packages, uploaded here and served next to proxied ones.

Owns the upload (receive into a temporary while hashing, check, then move into place),
the hosted pages (the same models and renderer as proxied pages: sha256, size,
upload-time, requires-python, PEP 658/714 metadata, PEP 592 yanks), yank and delete, and
the routing rule: a project that exists on a hosted index is served from there only,
never from upstream (a public project of the same name is shadowed, so nobody can take
over a private name by publishing it publicly: "dependency confusion").

All records are kept in memory as one snapshot, reloaded when another process (a worker,
``cacheproxy hosted yank``) changed them: every change replaces a marker file, which each
page request stats (no thread hop), so an upload to one worker is seen by the next
request to any worker; the change counter in the records is also read every
SNAPSHOT_SECONDS, in case a marker was missed.
"""

import asyncio
import gzip
import hashlib
import logging
import os
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from packaging.utils import NormalizedName, canonicalize_name
from packaging.version import InvalidVersion, Version

from cacheproxy.proxy.uploads import Checked, Received, UploadRefused, check_upload
from cacheproxy.simple.layout import project_of
from cacheproxy.simple.models import DistFile, ProjectList, ProjectPage
from cacheproxy.simple.parse import parse_project_list
from cacheproxy.simple.render import render_html, render_json, render_list_html, render_list_json
from cacheproxy.store.disk_writer import write_all
from cacheproxy.store.hosted import (
    FileExists,
    HostedFile,
    HostedStore,
    NameUsed,
    NoSuchFile,
    Snapshot,
)

logger = logging.getLogger(__name__)
audit = logging.getLogger("cacheproxy.audit")

SNAPSHOT_SECONDS = 1.0
# A stored project list above this size is merged with the hosted names in a thread, so
# the event loop keeps serving (an upstream's whole list can be tens of megabytes).
_THREAD_MERGE_BYTES = 256 * 1024
# Received bytes are written in batches of this size, in a thread (off the event loop).
_WRITE_BATCH = 1024 * 1024

__all__ = ["FileExists", "Hosted", "HostedFile", "NoSuchFile", "Upload", "UploadRefused"]


def iso_time(timestamp: float) -> str:
    """PEP 700's upload-time: ISO 8601 in UTC, microseconds and a ``Z`` (as PyPI writes)."""
    whole = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(timestamp))
    return f"{whole}.{int(timestamp % 1 * 1_000_000):06d}Z"


@dataclass(frozen=True, slots=True)
class Rendered:
    """A hosted page's representations: body name ("json", "html.gz"...) -> bytes, ETag."""

    bodies: Mapping[str, tuple[bytes, str]]


def _bodies(json_body: bytes, html_body: bytes) -> Rendered:
    out: dict[str, tuple[bytes, str]] = {}
    for kind, data in (("json", json_body), ("html", html_body)):
        for name, body in ((kind, data), (f"{kind}.gz", gzip.compress(data, mtime=0))):
            digest = hashlib.sha256(body).hexdigest()[:32]
            out[name] = (body, f'"h{digest}{"-gz" if name.endswith(".gz") else ""}"')
    return Rendered(out)


def _version_key(v: str) -> tuple[int, Version | str]:
    try:
        return (1, Version(v))
    except InvalidVersion:
        return (0, v)


def with_hosted(listed: ProjectList, hosted: list[str]) -> ProjectList:
    """``listed`` (an upstream's project list, in its order and spelling) with the hosted
    project names it lacks, each name once by its PEP 503 normalized form.

    ``hosted`` is sorted; each is put before the first listed name that sorts after it, so
    a list sorted by normalized name (as the upstreams' are) stays sorted, and the listed
    names keep their order whatever it is. A name both have keeps upstream's spelling (the
    hosted project is the one served: see :meth:`Hosted.find`).
    """
    seen = {canonicalize_name(n) for n in listed.names}
    extra = [n for n in hosted if n not in seen]
    if not extra:
        return listed
    names: list[str] = []
    pending = 0
    for name in listed.names:
        canonical = canonicalize_name(name)
        while pending < len(extra) and extra[pending] < canonical:
            names.append(extra[pending])
            pending += 1
        names.append(name)
    names.extend(extra[pending:])
    return ProjectList(names=tuple(names), api_version=listed.api_version, meta=listed.meta)


def render_list(projects: ProjectList) -> Rendered:
    """A project list's representations, links as every /simple/ list has them."""

    def link_for(name: str) -> str:
        return f"{canonicalize_name(name)}/"

    return _bodies(render_list_json(projects, link_for), render_list_html(projects, link_for))


def project_page(project: str, files: Mapping[str, HostedFile]) -> ProjectPage:
    """The model of a hosted project page (api-version 1.1: PEP 700 versions and sizes)."""
    ordered = sorted(files.values(), key=lambda f: (_version_key(f.version), f.filename))
    dist_files = tuple(
        DistFile(
            filename=f.filename,
            url=f.filename,
            hashes={"sha256": f.sha256},
            requires_python=f.requires_python,
            yanked=f.yanked,
            core_metadata={"sha256": f.metadata_sha256} if f.metadata_sha256 else False,
            size=f.size,
            upload_time=iso_time(f.upload_time),
        )
        for f in ordered
    )
    versions = tuple(dict.fromkeys(f.version for f in ordered))
    return ProjectPage(
        name=canonicalize_name(project), files=dist_files, api_version="1.1", versions=versions
    )


class Upload:
    """One upload's file part being received: written to a temporary and hashed."""

    def __init__(self, fd: int, path: Path, limit: int) -> None:
        self._fd: int | None = fd
        self.path = path
        self._limit = limit
        self._hash = hashlib.sha256()
        self._batch: list[bytes] = []
        self._batched = 0
        self.size = 0

    async def write(self, chunk: bytes) -> None:
        """Take the next bytes.

        Raises:
            UploadRefused: past the size limit (413).
        """
        self.size += len(chunk)
        if self.size > self._limit:
            raise UploadRefused(413, f"file is larger than the upload limit of {self._limit} bytes")
        self._batch.append(chunk)
        self._batched += len(chunk)
        if self._batched >= _WRITE_BATCH:
            await self._flush()

    async def _flush(self) -> None:
        data = b"".join(self._batch)
        self._batch, self._batched = [], 0
        if data:
            await asyncio.to_thread(self._write_sync, data)

    def _write_sync(self, data: bytes) -> None:
        assert self._fd is not None
        self._hash.update(data)
        write_all(self._fd, data)

    async def finish(self, filename: str) -> Received:
        await self._flush()
        self._close()
        return Received(self.path, filename, self.size, self._hash.hexdigest())

    def _close(self) -> None:
        if self._fd is not None:
            fd, self._fd = self._fd, None
            os.close(fd)

    def discard(self) -> None:
        """Drop the temporary (a refused or broken upload stores nothing)."""
        self._close()
        self.path.unlink(missing_ok=True)


class Hosted:
    """Every hosted index of this proxy. One instance per app (see service.Proxy)."""

    def __init__(
        self,
        store: HostedStore,
        names: tuple[str, ...],
        max_upload: int,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._store = store
        self.names = names
        self._max_upload = max_upload
        self._clock = clock
        self._generation = -1
        self._snapshot: Snapshot = {}
        self._checked_at = -SNAPSHOT_SECONDS
        self._mark: tuple[int, int] | None = None
        self._loading: asyncio.Task[None] | None = None
        self._rendered: dict[tuple[str, str, str], tuple[object, Rendered]] = {}
        # The routed /simple/ list with the hosted names: (upstream body's ETag, snapshot).
        self._root: tuple[str, object, Rendered] | None = None

    @classmethod
    def load_sync(cls, store: HostedStore, names: tuple[str, ...], max_upload: int) -> "Hosted":
        """The service over an open store (opened by service.py or the command line),
        with its records read."""
        hosted = cls(store, names, max_upload)
        hosted._load_sync()
        return hosted

    def close_sync(self) -> None:
        self._store.close_sync()

    # -- the snapshot ---------------------------------------------------------------------

    def _load_sync(self) -> None:
        mark = self._store.change_mark()  # first: a change after this is seen next time
        generation = self._store.generation()
        if generation != self._generation:
            self._generation, self._snapshot = self._store.load_all()
        self._mark = mark
        self._checked_at = time.monotonic()

    async def _fresh(self) -> Snapshot:
        stale = time.monotonic() - self._checked_at >= SNAPSHOT_SECONDS
        if stale or self._store.change_mark() != self._mark:
            if self._loading is None:
                self._loading = asyncio.create_task(asyncio.to_thread(self._load_sync))
                self._loading.add_done_callback(lambda _t: setattr(self, "_loading", None))
            await asyncio.shield(self._loading)
        return self._snapshot

    async def refresh(self) -> None:
        """Reload now (after a change made here)."""
        await asyncio.to_thread(self._load_sync)

    async def find(self, project: NormalizedName) -> str | None:
        """The hosted index that serves ``project`` (the first in ``--hosted`` order that
        has a file of it), or None: then upstream serves it."""
        if not self.names:
            return None
        snapshot = await self._fresh()
        for name in self.names:
            if snapshot.get(name, {}).get(project):
                return name
        return None

    async def projects(self, index: str) -> list[str]:
        return sorted(p for p, files in (await self._fresh()).get(index, {}).items() if files)

    async def shadowed(self) -> dict[str, list[str]]:
        """Every hosted project by index: upstream's projects of these names are hidden."""
        snapshot = await self._fresh()
        return {name: sorted(snapshot.get(name, {})) for name in self.names}

    async def files(self, index: str, project: str) -> Mapping[str, HostedFile] | None:
        return (await self._fresh()).get(index, {}).get(project) or None

    async def file(self, index: str, filename: str) -> HostedFile | None:
        """The record of ``filename`` on ``index`` (its project read from the name)."""
        project = project_of(filename)
        if project is None:
            return None
        return (await self._fresh()).get(index, {}).get(project, {}).get(filename)

    def open_file(self, sha256: str) -> IO[bytes]:
        """A stored file (or METADATA) opened for sending; the response closes it.

        Raises:
            FileNotFoundError: deleted a moment ago.
        """
        return open(self._store.blob_path(sha256), "rb")

    # -- pages -----------------------------------------------------------------------------

    async def page(self, index: str, project: str, files_link: str) -> Rendered | None:
        """The rendered page of ``project`` on ``index``; ``files_link`` is the relative
        path from the page to ``/index/<index>/files/`` (it differs between the views)."""
        files = await self.files(index, project)
        if files is None:
            return None
        memo_key = (index, project, files_link)
        memo = self._rendered.get(memo_key)
        if memo is not None and memo[0] is files:
            return memo[1]
        page = project_page(project, files)

        def link_for(f: DistFile) -> str:
            return files_link + f.filename

        rendered = _bodies(render_json(page, link_for), render_html(page, link_for))
        if len(self._rendered) > 1024:
            self._rendered.clear()
        self._rendered[memo_key] = (files, rendered)
        return rendered

    async def project_list(self, index: str) -> Rendered:
        return render_list(ProjectList(names=tuple(await self.projects(index))))

    def _every_project(self, snapshot: Snapshot) -> list[str]:
        """The projects of every hosted index, sorted, each once (names are normalized)."""
        return sorted(
            {p for name in self.names for p, files in snapshot.get(name, {}).items() if files}
        )

    async def has_projects(self) -> bool:
        """Whether any hosted index has a project (then /simple/ lists them too)."""
        return bool(self._every_project(await self._fresh())) if self.names else False

    async def root_list(
        self, upstream_etag: str | None, read: Callable[[], Awaitable[bytes]] | None
    ) -> Rendered | None:
        """The ``/simple/`` list: upstream's stored PEP 691 list, with ETag
        ``upstream_etag`` and bytes from ``read`` (None: upstream has none), with every
        hosted project, rendered as the stored list is (pages.Pages._fetch_list). None when
        no hosted index has a project: the stored list is then sent as it is. ``read`` is
        called only when the merge is not already kept for this ETag and snapshot: a hit
        does not read an upstream list of tens of megabytes again.

        Raises:
            IndexParseError: the stored list is not a JSON project list.
            Whatever ``read`` raises.
        """
        snapshot = await self._fresh()
        hosted = self._every_project(snapshot)
        if not hosted:
            return None
        tag = upstream_etag or ""
        if (memo := self._root) is not None and memo[0] == tag and memo[1] is snapshot:
            return memo[2]
        upstream_json = None if read is None else await read()

        def merge() -> Rendered:
            listed = ProjectList(names=())
            if upstream_json is not None:
                listed = parse_project_list(upstream_json, "application/json")
            return render_list(with_hosted(listed, hosted))

        if upstream_json is not None and len(upstream_json) > _THREAD_MERGE_BYTES:
            rendered = await asyncio.to_thread(merge)
        else:
            rendered = merge()
        self._root = (tag, snapshot, rendered)
        return rendered

    # -- uploads ---------------------------------------------------------------------------

    async def begin_upload(self) -> Upload:
        fd, path = await asyncio.to_thread(self._store.new_upload)
        return Upload(fd, path, self._max_upload)

    async def accept(
        self, index: str, fields: Mapping[str, str], received: Received, user: str
    ) -> bool:
        """Check a received upload and store it. True: stored; False: the same file was
        already there (an idempotent re-upload). The temporary is gone either way.

        Raises:
            UploadRefused: a 4xx and the reason; nothing was stored.
        """
        try:
            checked = await asyncio.to_thread(check_upload, fields, received)
            record = self._record(received, checked, user)
            try:
                stored = await asyncio.to_thread(
                    self._store.add, index, checked.project, record, received.path, checked.metadata
                )
            except FileExists:
                raise UploadRefused(
                    400, f"File already exists: {received.filename} (with other contents)"
                ) from None
            except NameUsed:
                raise UploadRefused(
                    400,
                    f"This filename has already been used: {received.filename} was deleted "
                    "and may come back only with the same contents; use a new version",
                ) from None
        finally:
            received.path.unlink(missing_ok=True)
        await self.refresh()
        if stored:
            audit.info(
                "upload: %s stored %s on index %s (%d bytes, sha256 %s)",
                user,
                received.filename,
                index,
                received.size,
                received.sha256,
            )
        return stored

    def _record(self, received: Received, checked: Checked, user: str) -> HostedFile:
        metadata_sha = hashlib.sha256(checked.metadata).hexdigest() if checked.metadata else None
        return HostedFile(
            filename=received.filename,
            version=checked.version,
            sha256=received.sha256,
            size=received.size,
            upload_time=self._clock(),
            uploader=user,
            requires_python=checked.requires_python,
            metadata_sha256=metadata_sha,
        )

    # -- yank and delete -------------------------------------------------------------------

    def _project_of(self, filename: str) -> str:
        project = project_of(filename)
        if project is None:
            raise NoSuchFile(filename)
        return project

    async def set_yanked(self, index: str, filename: str, yanked: bool | str, actor: str) -> None:
        """Yank (True or a reason) or unyank (False) a hosted file; audited.

        Raises:
            NoSuchFile: the index has no such file.
        """
        project = self._project_of(filename)
        await asyncio.to_thread(self._store.set_yanked, index, project, filename, yanked)
        await self.refresh()
        what = "unyank" if yanked is False else "yank"
        reason = f" ({yanked})" if isinstance(yanked, str) and yanked else ""
        audit.info("%s: %s %sed %s on index %s%s", what, actor, what, filename, index, reason)

    async def delete(self, index: str, filename: str, actor: str) -> None:
        """Remove a hosted file; audited.

        Raises:
            NoSuchFile: the index has no such file.
        """
        project = self._project_of(filename)
        await asyncio.to_thread(self._store.delete, index, project, filename)
        await self.refresh()
        audit.info("delete: %s deleted %s from index %s", actor, filename, index)
