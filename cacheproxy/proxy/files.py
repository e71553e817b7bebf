"""Distribution files and their PEP 658 metadata: from a link on the proxy to a FileSpec.

A file is known by the record its project page left when it was rendered. The page record
is read first (through the pages' one-second memo; a page past its TTL is revalidated, as
for a page request), and only the file records of that rendering are used: a private index
may re-upload different bytes at the same URL, and a stale in-memory record would serve the
old bytes as a hit while the page lists the new sha256. When there is no record (a lock
file's URL with the prefix swapped, or a page never fetched here), the project is read from
the filename and its page fetched, which records the file.
"""

import asyncio
import logging
import os
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import IO

from cacheproxy.errors import HeldBack, IndexParseError, NotFound, UpstreamError
from cacheproxy.proxy.downloads import FileSpec
from cacheproxy.proxy.metadata import Extracted, Extractor, prefetch_candidates
from cacheproxy.proxy.pages import Pages
from cacheproxy.proxy.upstream import Upstream
from cacheproxy.simple.gate import Gate, judge
from cacheproxy.simple.layout import (
    METADATA_SUFFIX,
    PROVENANCE_SUFFIX,
    metadata_url,
    project_of,
)
from cacheproxy.store.api import Store
from cacheproxy.store.pins import Pins
from cacheproxy.store.records import FileMap, FileRecord, files_version

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Resolved:
    spec: FileSpec
    filename: str
    is_metadata: bool
    # Metadata read from a wheel a moment ago and still being stored: served from here.
    data: bytes | None = None


class Files:
    """Resolves file keys to what must be fetched and where it is stored."""

    def __init__(
        self,
        storage: Store,
        pages: Pages,
        gate: Gate | None = None,
        clock: Callable[[], float] = time.time,
        extractor: Extractor | None = None,
        upstream: Upstream | None = None,
        pins: Pins | None = None,
    ) -> None:
        self._storage = storage
        self._pages = pages
        self._gate = gate if gate is not None else Gate()
        self._clock = clock
        self._extractor = extractor
        # One Files per index (routing.py): its files are fetched through its upstream.
        self._upstream = upstream
        self._pins = pins
        # Told (filename, sha256) when a download pinned a hash: its page shows it then.
        self.on_pinned: Callable[[str, str], None] | None = None

    def _check_gate(self, filename: str, record: FileRecord) -> None:
        """Refuse a file the release-age gate holds back; log one it lets through only by
        an exemption (the break-glass path is audited).

        Raises:
            HeldBack: the gate holds it.
        """
        project = project_of(filename)
        if not self._gate.active or project is None:
            return
        held = judge(self._gate, project, filename, record.uploaded, self._clock())
        if held is None:
            return
        exemption = self._gate.is_exempt(project, held.version)
        if exemption is None:
            raise HeldBack(held.line())
        logger.warning(
            "serving %s despite the release-age gate: exempted by %s", filename, exemption
        )

    async def open_stored(self, resolved: Resolved) -> IO[bytes]:
        """The stored file, opened for sending (and marked used, for eviction), after its
        size was checked against its record.

        Raises:
            FileNotFoundError: not stored yet (or damaged, and removed): join or start its
                download.
        """
        spec = resolved.spec
        fobj = self._storage.open_blob(spec.final)
        # A content-addressed file's verified size first: an index may misstate a size,
        # never a sha256 (then its size record is the truth).
        expected = await self._storage.verified_size(spec.sha256) if spec.sha256 else None
        if expected is None:
            expected = spec.size
        actual = os.fstat(fobj.fileno()).st_size
        if expected is not None and actual != expected:
            fobj.close()
            problem = f"{actual} bytes, its record says {expected}"
            self._storage.drop_damaged_file(spec.final, problem)
            raise FileNotFoundError(spec.final)
        return fobj

    async def resolve(self, key: str) -> Resolved:
        """What ``/packages/<key>`` serves.

        Raises:
            NotFound: no index page lists this file (or its metadata is not advertised).
            UpstreamError: the page that would list it could not be fetched.
        """
        filename = key.rsplit("/", 1)[-1]
        if key.endswith(METADATA_SUFFIX):
            # Its distribution's record first (in memory on a hit): a .metadata has no
            # record of its own, and looking one up first cost every hit a read of the
            # record store in a thread (bench/hits.py).
            resolved = await self._metadata(key, filename)
            if resolved is not None:
                return resolved
        record = await self._record(key, filename)
        if record is not None:
            self._check_gate(filename, record)
            return Resolved(self._spec(key, record), filename, is_metadata=False)
        if key.endswith(PROVENANCE_SUFFIX):
            dist_key = key[: -len(PROVENANCE_SUFFIX)]
            dist_name = filename[: -len(PROVENANCE_SUFFIX)]
            dist = await self._record(dist_key, dist_name)
            if dist is not None:
                self._check_gate(dist_name, dist)
                # PEP 740: served from where the index said, cached like metadata without
                # a hash; a client verifies the attestations against the file it got.
                if dist.provenance is None:
                    raise NotFound(f"no provenance is advertised for {dist_name}")
                spec = FileSpec(
                    url=dist.provenance,
                    final=self._storage.unhashed_blob_path(key),
                    sha256=None,
                    size=None,
                    filename=filename,
                    upstream=self._upstream,
                )
                return Resolved(spec, filename, is_metadata=True)
        raise NotFound(f"{filename} is not listed by the upstream index")

    async def _metadata(self, key: str, filename: str) -> Resolved | None:
        """The PEP 658 metadata ``key`` of a listed distribution; None: no such listed
        distribution.

        Raises:
            NotFound: its distribution advertises no metadata.
        """
        dist_key = key[: -len(METADATA_SUFFIX)]
        dist = await self._record(dist_key, filename[: -len(METADATA_SUFFIX)])
        if dist is None:
            return None
        self._check_gate(filename[: -len(METADATA_SUFFIX)], dist)
        # PEP 658: only what upstream advertised is served (never a 404 for an
        # advertised file: clients would fail the install).
        if not dist.metadata:
            raise NotFound(f"no metadata is advertised for {dist_key.rsplit('/', 1)[-1]}")
        if dist.extracted:
            return await self._extracted(dist_key, dist, filename)
        sha = dist.metadata_sha256
        final = self._storage.blob_path(sha) if sha else self._storage.unhashed_blob_path(key)
        spec = FileSpec(
            url=metadata_url(dist.url),
            final=final,
            sha256=sha,
            size=None,
            filename=filename,
            upstream=self._upstream,
        )
        return Resolved(spec, filename, is_metadata=True)

    async def _record(self, key: str, filename: str) -> FileRecord | None:
        project = project_of(filename)
        if project is None:
            return await self._storage.get_file(key, None)  # a stray pointer, if any
        # File records are kept by the page that listed them: this index's key for it.
        owner = self._pages.key(project)
        # The page (fresh, or refreshed) says which file records are current; a page not
        # fetched yet is fetched, and rendering it records its files. Not listed: the page
        # is revalidated once (a file uploaded since), as pip does after a 404.
        for revalidate in (False, True):
            try:
                page = await self._pages.project(project, revalidate=revalidate)
            except NotFound:
                # No such project now: only a file another project's page lists (a stray).
                return await self._storage.get_file(key, None)
            except (UpstreamError, IndexParseError):
                # Upstream failed and nothing is stored: what the records still hold.
                record = await self._storage.get_file(key, owner)
                if record is None:
                    raise
                return record
            record = await self._storage.get_file(key, owner, files_version(page.record))
            if record is not None:
                return record
        return None

    async def _extracted(self, dist_key: str, dist: FileRecord, filename: str) -> Resolved:
        """The metadata the proxy reads from the wheel itself (proxy/metadata.py), read now
        if it was not yet (or its stored copy was evicted since).

        Raises:
            NotFound: the wheel has no readable METADATA (so it is no longer advertised).
            UpstreamError: upstream failed while reading it.
        """
        if self._extractor is None or dist.sha256 is None:
            raise NotFound(f"{filename}: metadata extraction is off")
        found = self._extractor.fresh(dist.sha256)
        if found is None:
            # A page rendered after the read names its hash already, and this process
            # remembers the recent ones: no record lookup (a thread hop) then.
            sha = dist.metadata_sha256 or self._extractor.known(dist.sha256)
            if sha is None:
                sha = await asyncio.to_thread(self._storage.extracted_metadata, dist.sha256)
                if sha is not None:
                    self._extractor.remember(dist.sha256, sha)
            if sha is None or (sha and not self._storage.blob_path(sha).exists()):
                found = await self._extractor.extract(self._spec(dist_key, dist))
            else:
                found = Extracted(sha)
        if not found.sha256:
            raise NotFound(f"{filename}: the wheel has no readable METADATA")
        final = self._storage.blob_path(found.sha256)
        spec = FileSpec(url="", final=final, sha256=found.sha256, size=None, filename=filename)
        return Resolved(spec, filename, is_metadata=True, data=found.data)

    def prefetch_metadata(self, files: FileMap, held: Collection[str]) -> None:
        """Start reading the metadata a resolver will ask for next, from a page just
        fetched (proxy/metadata.py ``prefetch_candidates``)."""
        if self._extractor is None:
            return
        keys = prefetch_candidates(files, held)
        self._extractor.prefetch([self._spec(key, files[key]) for key in keys])

    def _spec(self, key: str, record: FileRecord) -> FileSpec:
        # Pinned: files listed with no hash at all (an md5-only one is checked by its md5).
        if record.sha256 is None and record.hash_name is None and self._pins is not None:
            return self._unhashed_spec(key, record, self._pins)
        final = (
            self._storage.blob_path(record.sha256)
            if record.sha256
            else self._storage.unhashed_blob_path(key)
        )
        return FileSpec(
            url=record.url,
            final=final,
            sha256=record.sha256,
            size=record.size,
            filename=key.rsplit("/", 1)[-1],
            hash_name=record.hash_name,
            hash_value=record.hash_value,
            upstream=self._upstream,
        )

    def _unhashed_spec(self, key: str, record: FileRecord, pins: Pins) -> FileSpec:
        """A file its index lists without a sha256: checked against the hash its first
        download pinned (pins.py), and pinned by that download when there is none yet.

        A pin holds while the index lists the file as before: a size the index now gives
        that differs from the pinned one is the index saying it is another file, and the
        next verified download pins that. Until the same bytes are stored by their hash
        (another index listing them with one), the file is stored under its URL; from then
        on that one copy serves both.
        """
        filename = key.rsplit("/", 1)[-1]
        unhashed = self._storage.unhashed_blob_path(key)
        pin = pins.get(record.url, record.size)
        if pin is None:

            def verified(sha256: str, size: int) -> None:
                pinned = pins.put(record.url, sha256, size)
                if pinned.sha256 == sha256:
                    pins.adopt(unhashed, self._storage.blob_path(sha256))
                logger.info("pinned %s to sha256 %s (its index lists no hash)", filename, sha256)
                if self.on_pinned is not None:
                    self.on_pinned(filename, pinned.sha256)

            return FileSpec(
                url=record.url,
                final=unhashed,
                sha256=None,
                size=record.size,
                filename=filename,
                hash_name=record.hash_name,
                hash_value=record.hash_value,
                upstream=self._upstream,
                verified=verified,
            )
        blob = self._storage.blob_path(pin.sha256)
        return FileSpec(
            url=record.url,
            final=blob if blob.exists() else unhashed,
            sha256=pin.sha256,
            size=pin.size,
            filename=filename,
            upstream=self._upstream,
        )
