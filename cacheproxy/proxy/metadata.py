"""Core metadata for wheels whose index advertises none (PEP 658 served by the proxy).

Resolvers need each candidate's ``METADATA``. Where the index gives no PEP 658 file
(PyTorch's index for many files, private indexes, remotes that drop the attribute), pip
downloads whole wheels to read a few kilobytes, and uv falls back to range requests of its
own. The proxy does it once for everyone:

* from the stored wheel, when it is cached (a zip read in a thread);
* otherwise with HTTP ``Range`` requests, as uv does client-side but in fewer round trips
  (each one is on a resolver's critical path): one read of the wheel's last 64 KiB, which
  holds the zip's end record and, for most wheels, the central directory and ``METADATA``
  too; a larger directory is read in one more request together with the bytes before it,
  where a wheel keeps ``RECORD`` and ``METADATA``;
* an upstream that ignores ranges gets one full download of the wheel (which is cached
  and verified as usual), then the zip read.

The extracted bytes are stored under their sha256 and remembered per wheel sha256, so a
page rendered later advertises that hash. They are served from memory while that commit
(an fsync) runs, as a resolver waits for each answer before its next request.

A page just fetched starts the reads a resolver is about to ask for (:meth:`prefetch`): the
newest release's wheels, when they are few or platform-independent, by ranges only (never
a whole download on speculation), a few at a time. The resolver's ``.metadata`` request
then joins the read already under way or finds it done. What was read names the release's
requirements: they go to :attr:`Extractor.on_requires` (proxy/lookahead.py fetches their
pages ahead of the resolver).

A wheel whose ``METADATA`` cannot be read is remembered as such and no longer advertised.
Metadata read through ranges cannot be checked against the wheel's sha256 (the wheel is not
all here); its member CRC-32 is checked, and a client that installs the wheel verifies
the wheel itself.
"""

import asyncio
import contextlib
import hashlib
import logging
import os
import struct
import zipfile
import zlib
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Collection
from dataclasses import dataclass
from pathlib import Path

from packaging.metadata import parse_email
from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import (
    NormalizedName,
    canonicalize_name,
    parse_wheel_filename,
)
from packaging.version import InvalidVersion, Version

from cacheproxy.errors import OfflineMiss
from cacheproxy.figures.metrics import Metrics
from cacheproxy.proxy.downloads import Downloads, FileSpec
from cacheproxy.proxy.upstream import Upstream
from cacheproxy.store.api import Store
from cacheproxy.store.records import FileMap

logger = logging.getLogger(__name__)

_EOCD = b"PK\x05\x06"
_EOCD64_LOCATOR = b"PK\x06\x07"
_EOCD64 = b"PK\x06\x06"
_CENTRAL = b"PK\x01\x02"
_LOCAL = b"PK\x03\x04"
# The first read. It holds the end record (22 bytes: wheels carry no zip comment) and the
# central directory and METADATA of a wheel of a few hundred members (pip's own: 437
# members, a 34 kB directory, METADATA 21 kB before it): one upstream round trip for those,
# where a 16 KiB tail needed two or three. Round trips, not bytes, are what a resolver
# waits for (bench/metadata.py): 48 KiB more is ~1 ms at 40 MB/s, a round trip 10 ms or
# more. Only a tail without the end record (a long comment) is read again, as long as an
# end record can need (a comment of up to 64 KiB, the zip64 locator).
FIRST_TAIL = 64 * 1024
TAIL_BYTES = 22 + 65535 + 20
# When the central directory is not all in the first tail, the bytes before it are read
# with it: RECORD (on real wheels 0.5-0.55 of the directory's size; read: 5/8 of it) plus
# this much for METADATA and the small .dist-info files written after it (WHEEL, entry
# points, top_level). A guess: when METADATA lies further back, one more read.
DIST_INFO_SLACK = 16 * 1024
# A local header's extra field is not in the central directory; read this much beyond.
_LOCAL_SLACK = 1024
# METADATA is a few kilobytes; refuse absurd sizes before inflating (a zip bomb).
MAX_METADATA = 16 * 1024 * 1024
# Speculative reads (prefetch) at once, per process: a burst of page misses (uv fetches a
# flat requirement list's pages together) must not become a burst of upstream reads.
PREFETCH_AT_ONCE = 4
# A release with more wheels than this is a platform matrix (numpy has dozens per
# release): which one a client takes depends on its platform, so only its pure-Python
# wheels are read ahead.
PREFETCH_WHEELS = 4
# Wheels whose stored metadata's hash is kept in memory, so a .metadata hit behind a page
# rendered before the read (which advertises no hash yet) skips the record store.
KNOWN_ENTRIES = 8192


class Unreadable(ValueError):
    """The wheel has no readable ``*.dist-info/METADATA``."""


class RangesUnsupported(Exception):
    """Upstream answered a Range request with the whole file."""


class _NotOnSpeculation(Exception):
    """A prefetch stopped where a whole download would be needed."""


@dataclass(frozen=True, slots=True)
class Extracted:
    """A wheel's extracted metadata: its sha256 ("" when unreadable) and, while it is
    being committed to the store, the bytes themselves (None once stored)."""

    sha256: str
    data: bytes | None = None


@dataclass(frozen=True, slots=True)
class _Member:
    name: str
    method: int
    crc: int
    compressed: int
    size: int
    offset: int  # of its local header


def metadata_member_name(names: list[str], wheel_filename: str) -> str:
    """The wheel's ``<name>-<version>.dist-info/METADATA`` (the binary distribution format:
    one ``.dist-info`` directory at the top level, named for the project).

    Raises:
        Unreadable: none, or several without one named for the project.
    """
    found = [n for n in names if n.count("/") == 1 and n.endswith(".dist-info/METADATA")]
    if len(found) == 1:
        return found[0]
    project = canonicalize_name(parse_wheel_filename(wheel_filename)[0])
    named = [n for n in found if canonicalize_name(n.split("-", 1)[0]) == project]
    if len(named) == 1:
        return named[0]
    raise Unreadable(f"{wheel_filename}: no single .dist-info/METADATA")


def from_stored_wheel(path: Path, wheel_filename: str) -> bytes:
    """``METADATA`` read from a stored wheel (synchronous: run it in a thread).

    Raises:
        Unreadable: not a zip, or no METADATA in it.
    """
    try:
        with zipfile.ZipFile(path) as zf:
            name = metadata_member_name(zf.namelist(), wheel_filename)
            info = zf.getinfo(name)
            if info.file_size > MAX_METADATA:
                raise Unreadable(f"{wheel_filename}: METADATA of {info.file_size} bytes")
            return zf.read(name)
    except (zipfile.BadZipFile, OSError, EOFError, KeyError) as e:
        raise Unreadable(f"{wheel_filename}: {e}") from None


def _end_record(tail: bytes) -> tuple[int, int, int | None]:
    """(central directory offset, its size, the zip64 end record's offset if any).

    Raises:
        Unreadable: no end record.
    """
    at = tail.rfind(_EOCD)
    if at < 0 or len(tail) - at < 22:
        raise Unreadable("no zip end record")
    _sig, _d, _cd, _n1, _n2, cd_size, cd_offset, _c = struct.unpack_from("<4sHHHHIIH", tail, at)
    if cd_offset != 0xFFFFFFFF and cd_size != 0xFFFFFFFF:
        return cd_offset, cd_size, None
    loc = at - 20  # zip64: the locator sits just before the end record
    if loc < 0 or tail[loc : loc + 4] != _EOCD64_LOCATOR:
        raise Unreadable("zip64 end record locator missing")
    (eocd64_offset,) = struct.unpack_from("<Q", tail, loc + 8)
    return 0, 0, eocd64_offset


def _zip64_sizes(record: bytes) -> tuple[int, int]:
    if record[:4] != _EOCD64 or len(record) < 56:
        raise Unreadable("bad zip64 end record")
    cd_size, cd_offset = struct.unpack_from("<QQ", record, 40)
    return cd_offset, cd_size


def _members(directory: bytes) -> list[_Member]:
    """The entries of a central directory.

    Raises:
        Unreadable: it is cut short or garbled.
    """
    out: list[_Member] = []
    at = 0
    while at + 46 <= len(directory) and directory[at : at + 4] == _CENTRAL:
        (method, _t, _d, crc, comp, size, n, e, c) = struct.unpack_from(
            "<HHHIIIHHH", directory, at + 10
        )
        (offset,) = struct.unpack_from("<I", directory, at + 42)
        name = directory[at + 46 : at + 46 + n].decode("utf-8", "replace")
        extra = directory[at + 46 + n : at + 46 + n + e]
        comp, size, offset = _zip64_extra(extra, comp, size, offset)
        out.append(_Member(name, method, crc, comp, size, offset))
        at += 46 + n + e + c
    if not out:
        raise Unreadable("empty or unreadable central directory")
    return out


def _zip64_extra(extra: bytes, comp: int, size: int, offset: int) -> tuple[int, int, int]:
    """Values the central directory left at 0xFFFFFFFF, from the zip64 extra field."""
    at = 0
    while at + 4 <= len(extra):
        tag, length = struct.unpack_from("<HH", extra, at)
        if tag == 0x0001:
            fields = extra[at + 4 : at + 4 + length]
            pos = 0
            values = [size, comp, offset]
            for i, v in enumerate(values):
                if v == 0xFFFFFFFF and pos + 8 <= len(fields):
                    (values[i],) = struct.unpack_from("<Q", fields, pos)
                    pos += 8
            size, comp, offset = values
            break
        at += 4 + length
    return comp, size, offset


def _inflate(member: _Member, local: bytes) -> bytes:
    """The member's bytes from the data following its local header (``local`` starts at
    the header).

    Raises:
        Unreadable: a bad header, an unknown method, or a CRC-32 that does not match.
    """
    if local[:4] != _LOCAL or len(local) < 30:
        raise Unreadable("bad local header")
    n, e = struct.unpack_from("<HH", local, 26)
    data = local[30 + n + e : 30 + n + e + member.compressed]
    if len(data) != member.compressed:
        raise RangesUnsupported  # the slack was not enough: read the member afresh
    if member.method == zipfile.ZIP_STORED:
        out = data
    elif member.method == zipfile.ZIP_DEFLATED:
        try:
            out = zlib.decompressobj(-15).decompress(data, MAX_METADATA + 1)
        except zlib.error as e:
            raise Unreadable(f"METADATA does not inflate: {e}") from None
    else:
        raise Unreadable(f"METADATA compressed with method {member.method}")
    if len(out) != member.size or zlib.crc32(out) != member.crc:
        raise Unreadable("METADATA fails its CRC-32")
    return out


class Extractor:
    """Produces (and stores) a wheel's core metadata; one extraction per wheel at a time."""

    def __init__(
        self,
        storage: Store,
        upstream: Upstream,
        downloads: Downloads,
        metrics: Metrics,
        offline: bool = False,
    ) -> None:
        self._offline = offline
        self._storage = storage
        self._upstream = upstream
        self._downloads = downloads
        self._metrics = metrics
        self._running: dict[str, asyncio.Task[Extracted]] = {}
        # Read, being committed: by wheel sha256 (served from here until stored).
        self._fresh: dict[str, Extracted] = {}
        self._commits: set[asyncio.Task[None]] = set()
        self._prefetching = 0
        # Wheels a read ahead found without ranges: the request that follows downloads at
        # once (bounded: only prefetches add to it, and it is emptied when it grows).
        self._no_ranges: set[str] = set()
        self._known: OrderedDict[str, str] = OrderedDict()  # wheel sha256 -> metadata's
        # Told the unconditional requirements of every release read (proxy/lookahead.py).
        self.on_requires: Callable[[list[NormalizedName]], None] | None = None

    def fresh(self, wheel_sha256: str) -> Extracted | None:
        """The metadata of wheel ``wheel_sha256`` if it was read and is being stored."""
        return self._fresh.get(wheel_sha256)

    def known(self, wheel_sha256: str) -> str | None:
        """The sha256 of wheel ``wheel_sha256``'s stored metadata ("" unreadable) if this
        process has seen it lately; None: ask the store (``Store.extracted_metadata``)."""
        sha = self._known.get(wheel_sha256)
        if sha is not None:
            self._known.move_to_end(wheel_sha256)
        return sha

    def remember(self, wheel_sha256: str, sha256: str) -> None:
        """Keep what :meth:`known` answers (the store said it, or a commit stored it)."""
        self._known[wheel_sha256] = sha256
        self._known.move_to_end(wheel_sha256)
        while len(self._known) > KNOWN_ENTRIES:
            self._known.popitem(last=False)

    async def extract(self, wheel: FileSpec) -> Extracted:
        """``wheel``'s metadata, extracted first if needed (joining a read under way).
        ``wheel`` must have a sha256 (it names what is remembered).

        Raises:
            UpstreamError: upstream failed; nothing is remembered (the next request tries
                again). OfflineMiss: offline, and the wheel is not stored.
        """
        assert wheel.sha256 is not None
        if (found := self._fresh.get(wheel.sha256)) is not None:
            return found
        task = self._running.get(wheel.sha256) or self._start(wheel, speculative=False)
        try:
            return await asyncio.shield(task)
        except _NotOnSpeculation:
            # A prefetch that stopped short of a whole download: do it now, it is asked for.
            again = self._running.get(wheel.sha256)
            if again is None or again is task:
                again = self._start(wheel, speculative=False)
            return await asyncio.shield(again)

    def prefetch(self, wheels: list[FileSpec]) -> None:
        """Start reading ``wheels``' metadata before anyone asks (see the module text);
        skipped when :data:`PREFETCH_AT_ONCE` reads of this kind are running already."""
        for wheel in wheels:
            if self._offline or self._prefetching >= PREFETCH_AT_ONCE:
                return
            sha = wheel.sha256
            if sha is None or sha in self._running or sha in self._fresh:
                continue
            self._prefetching += 1
            self._metrics.add("metadata_prefetched")
            self._start(wheel, speculative=True).add_done_callback(self._prefetched)

    def _prefetched(self, task: "asyncio.Task[Extracted]") -> None:
        self._prefetching -= 1
        if task.cancelled():
            return
        if (e := task.exception()) is not None and not isinstance(e, _NotOnSpeculation):
            # Nothing is remembered: the client's own request tries again and reports it.
            logger.info("reading ahead %s failed: %s", task.get_name(), e)

    def _start(self, wheel: FileSpec, *, speculative: bool) -> "asyncio.Task[Extracted]":
        sha = wheel.sha256
        assert sha is not None
        task = asyncio.create_task(
            self._extract(wheel, speculative), name=f"metadata {wheel.filename}"
        )
        self._running[sha] = task

        def done(_t: "asyncio.Task[Extracted]") -> None:
            if self._running.get(sha) is task:
                del self._running[sha]

        task.add_done_callback(done)
        return task

    async def _extract(self, wheel: FileSpec, speculative: bool) -> Extracted:
        assert wheel.sha256 is not None
        try:
            data, source = await self._read(wheel, speculative)
        except OfflineMiss:
            raise  # not remembered: online again, it can be read
        except Unreadable as e:
            logger.warning("no metadata to advertise for %s: %s", wheel.filename, e)
            found = Extracted(await self._storage.store_extracted(wheel.sha256, None))
            self.remember(wheel.sha256, found.sha256)
            return found
        self._metrics.add("metadata_extracted", source)
        if self.on_requires is not None:
            self.on_requires(requirements_of(data))
        found = Extracted(hashlib.sha256(data).hexdigest(), data)
        self._fresh[wheel.sha256] = found
        commit = asyncio.create_task(
            self._commit(wheel, data), name=f"store metadata {wheel.filename}"
        )
        self._commits.add(commit)
        commit.add_done_callback(self._commits.discard)
        return found

    async def _commit(self, wheel: FileSpec, data: bytes) -> None:
        assert wheel.sha256 is not None
        try:
            self.remember(wheel.sha256, await self._storage.store_extracted(wheel.sha256, data))
        except Exception as e:  # served from memory all the same; read again next time
            logger.warning("cannot store the metadata read from %s: %s", wheel.filename, e)
        finally:
            self._fresh.pop(wheel.sha256, None)

    async def settle(self) -> None:
        """Wait until no read or commit is under way (its errors are its requests')."""
        while self._running or self._commits:
            await asyncio.gather(*self._running.values(), *self._commits, return_exceptions=True)

    async def close(self) -> None:
        """Stop reading; let the commits under way land (the store closes next)."""
        for task in list(self._running.values()):
            task.cancel()
        await self.settle()

    async def _read(self, wheel: FileSpec, speculative: bool) -> tuple[bytes, str]:
        if wheel.final.exists():
            data = await asyncio.to_thread(from_stored_wheel, wheel.final, wheel.filename)
            return data, "stored_wheel"
        if self._offline:
            raise OfflineMiss(f"offline mode: {wheel.filename} is not cached, nor its metadata")
        if wheel.sha256 not in self._no_ranges:
            try:
                return await self._by_ranges(wheel), "ranges"
            except RangesUnsupported:
                if speculative:
                    if len(self._no_ranges) >= 1024:
                        self._no_ranges.clear()
                    self._no_ranges.add(wheel.sha256 or "")
                    raise _NotOnSpeculation from None
        self._no_ranges.discard(wheel.sha256 or "")
        await self._download(wheel)
        data = await asyncio.to_thread(from_stored_wheel, wheel.final, wheel.filename)
        return data, "download"

    async def _download(self, wheel: FileSpec) -> None:
        """Download (and store, verified) the whole wheel through the usual path."""
        try:
            download, reader, _new = await self._downloads.join(wheel)
        except FileNotFoundError:
            return  # stored a moment ago
        try:
            await asyncio.shield(download.finished)
        finally:
            os.close(reader)

    async def _get(self, wheel: FileSpec, first: int, last: int | None) -> tuple[bytes, int]:
        """Bytes ``first..last`` (inclusive; ``first`` negative and ``last`` None: a suffix)
        and the file's total size.

        Raises:
            RangesUnsupported: upstream sent the whole file.
        """
        spec = f"bytes={first}" if first < 0 else f"bytes={first}-{last}"
        upstream = wheel.upstream or self._upstream  # the index that listed it (routing.py)
        async with upstream.open_file(wheel.url, range_header=spec) as resp:
            content_range = resp.headers.get("Content-Range", "")
            if resp.status != 206 or "/" not in content_range:
                raise RangesUnsupported
            total = content_range.rsplit("/", 1)[1]
            data = await resp.content.read()
        if not total.isdigit():
            raise RangesUnsupported
        return data, int(total)

    async def _by_ranges(self, wheel: FileSpec) -> bytes:
        suffix = await self._suffix(wheel)
        cd_offset, cd_size, eocd64 = _end_record(suffix.data)
        if eocd64 is not None:
            record = await suffix.read(self._get, wheel, eocd64, 56)
            cd_offset, cd_size = _zip64_sizes(record)
        if cd_offset < suffix.start:
            # The directory is not all here. A wheel's .dist-info is written last (RECORD
            # at the very end, just before the directory: the binary distribution format),
            # so METADATA almost always lies within RECORD's size plus a little before the
            # directory; RECORD (a line per entry, the hashes deflating poorly) is smaller
            # than the directory (46 bytes plus the name per entry): pip 24.2's is 0.55 of
            # it, setuptools 67.6's 0.49. One read of both saves a round trip.
            before = cd_size * 5 // 8 + DIST_INFO_SLACK
            await suffix.extend(self._get, wheel, cd_offset - before)
        directory = await suffix.read(self._get, wheel, cd_offset, cd_size)
        members = _members(directory)
        name = metadata_member_name([m.name for m in members], wheel.filename)
        member = next(m for m in members if m.name == name)
        if member.size > MAX_METADATA or member.compressed > MAX_METADATA:
            raise Unreadable(f"{wheel.filename}: METADATA of {member.size} bytes")
        length = 30 + len(name.encode()) + member.compressed + _LOCAL_SLACK
        return _inflate(member, await suffix.read(self._get, wheel, member.offset, length))

    async def _suffix(self, wheel: FileSpec) -> "_Suffix":
        """The wheel's last bytes: its end record is in them, if it is a zip."""
        tail, total = await self._get(wheel, -FIRST_TAIL, None)
        if tail.rfind(_EOCD) < 0 and len(tail) < total:
            tail, total = await self._get(wheel, -TAIL_BYTES, None)
        return _Suffix(tail, total)


Fetch = Callable[[FileSpec, int, int | None], Awaitable[tuple[bytes, int]]]


class _Suffix:
    """The bytes read so far of a wheel by ranges: always one run up to its end, so a
    slice of it is never asked for twice, and reads next to it grow it (rather than
    leaving a gap that would need another round trip)."""

    def __init__(self, data: bytes, total: int) -> None:
        self.data = data
        self.total = total

    @property
    def start(self) -> int:
        return self.total - len(self.data)

    async def extend(self, fetch: Fetch, wheel: FileSpec, offset: int) -> None:
        """Read from ``offset`` (at least 0) up to what is held."""
        offset = max(offset, 0)
        if offset < self.start:
            data, _total = await fetch(wheel, offset, self.start - 1)
            if len(data) != self.start - offset:
                raise RangesUnsupported  # not the bytes asked for
            self.data = data + self.data

    async def read(self, fetch: Fetch, wheel: FileSpec, offset: int, length: int) -> bytes:
        """``length`` bytes at ``offset`` (fewer at the end of the file). Held: no request.
        Reaching into what is held: the run grows by the missing part. Wholly below it (a
        wheel whose .dist-info is not at its end): those bytes alone, never the gap."""
        if offset < self.start <= offset + length:
            await self.extend(fetch, wheel, offset)
        if offset >= self.start:
            return self.data[offset - self.start : offset - self.start + length]
        data, _total = await fetch(wheel, offset, offset + length - 1)
        return data


def prefetch_candidates(files: FileMap, held: Collection[str]) -> list[str]:
    """The keys of the wheels worth reading ahead in a page's ``files`` (see the module
    text): those of its newest release a client can take (not held back by the release-age
    gate; a final release unless there are only pre-releases, as resolvers choose), whose
    metadata the proxy reads and has not read yet; only the pure-Python ones of a release
    with more than :data:`PREFETCH_WHEELS` wheels."""
    # Called on the event loop for every page fetched, numpy's 4,500 files included: no
    # filename is parsed when nothing is left to read (an index that gives metadata), and
    # each distinct version string is parsed once (parse_wheel_filename for every file
    # took 50 ms on such a page).
    if not any(r.extracted and r.metadata_sha256 is None for r in files.values()):
        return []
    releases: dict[str, list[tuple[str, bool, bool]]] = {}  # version: (key, unread, pure)
    for key, record in files.items():
        filename = key.rsplit("/", 1)[-1]
        # {name}-{version}(-{build})?-{python}-{abi}-{platform}.whl (PEP 427)
        parts = filename[:-4].split("-") if filename.endswith(".whl") else []
        if len(parts) not in (5, 6) or filename in held:
            continue
        unread = bool(record.extracted) and record.metadata_sha256 is None
        pure = all(platform == "any" for platform in parts[-1].split("."))
        releases.setdefault(parts[1], []).append((key, unread, pure))
    versions: dict[str, Version] = {}
    for text in releases:
        with contextlib.suppress(InvalidVersion):
            versions[text] = Version(text)
    if not versions:
        return []
    finals = [text for text, version in versions.items() if not version.is_prerelease]
    wheels = releases[max(finals or versions, key=versions.__getitem__)]
    if len(wheels) > PREFETCH_WHEELS:
        wheels = [w for w in wheels if w[2]]
    return [key for key, unread, _pure in wheels if unread][:PREFETCH_WHEELS]


def requirements_of(metadata: bytes) -> list[NormalizedName]:
    """The projects a release's core metadata requires whatever the environment: its
    ``Requires-Dist`` without a marker (a marker names an extra, a platform or a Python;
    only the client knows those), each once. Unparsable lines are skipped."""
    try:
        raw, _unparsed = parse_email(metadata)
    except ValueError:
        return []
    names: dict[NormalizedName, None] = {}
    for line in raw.get("requires_dist", []):
        try:
            req = Requirement(line)
        except InvalidRequirement:
            continue
        if req.marker is None and req.url is None:
            names[canonicalize_name(req.name)] = None
    return list(names)
