"""Index pages: fresh when possible, stale rather than broken, one upstream fetch at a time.

Freshness policy for each page (project pages and the root project list):

* within its TTL (``index_ttl``; ``negative_ttl`` for a remembered 404) it is served as
  stored (HIT), whatever the client's ``Cache-Control`` says: pip sends ``max-age=0`` with
  every page request, and honouring it would make every warm build ask upstream once per
  project. Only with ``client_revalidate_after`` set does a client's ``max-age=0`` or
  ``no-cache`` make a page older than that be revalidated (nginx, devpi and proxpi too
  serve within their own TTL by default);
* after it, upstream is asked conditionally with the stored ETag/Last-Modified: a 304 only
  refreshes the timestamp (HIT), a 200 is parsed, rendered and stored (MISS);
* when upstream fails or times out, the stored copy is served (STALE) and upstream is left
  alone for ``failure_backoff`` seconds; with no copy the error goes to the client;
* offline mode never asks upstream.

All the work happens here, once, on the miss: the stored record holds the rendered JSON
and HTML (and their gzip) with ETags, and the file records the links point at. A hit only
reads a small record and sends a file.

A miss is answered from the rendered bytes in memory while they are written to disk in
the background (fsyncs and one SQLite transaction: tens of milliseconds when a client asks
for forty pages at once). Until the write is done the page stays *pending*: its hits are
served from those bytes and its file records are already visible, so the wheel request
that follows the page resolves. A crash before the write ends loses only the page, which
the next request fetches again.
"""

import asyncio
import gzip
import logging
import math
import time
from collections import OrderedDict
from collections.abc import Callable, Collection, Coroutine, Mapping
from dataclasses import dataclass, replace
from typing import IO, Any, TypeVar

from packaging.utils import NormalizedName, canonicalize_name
from yarl import URL

from cacheproxy.errors import HeldBack, IndexParseError, NotFound, OfflineMiss, UpstreamError
from cacheproxy.figures.metrics import Metrics
from cacheproxy.proxy.heap import heap_trimmer
from cacheproxy.proxy.json_api import (
    KEY_PREFIX,
    Checked,
    Listed,
    adopt_release,
    dump_json_api,
    info_version,
    json_api_base,
    json_api_key,
    json_api_url,
    listed_files,
    newest_release,
    parse_json_api,
    rewrite_json_api,
)
from cacheproxy.proxy.upstream import PageResponse, Upstream
from cacheproxy.settings import Settings
from cacheproxy.simple.gate import Filtered, Gate, Held, filter_page, release_line, upload_epoch
from cacheproxy.simple.layout import (
    BadPath,
    file_key,
    index_rest,
    page_link,
    project_of,
    upstream_rest,
)
from cacheproxy.simple.models import DistFile, ProjectPage
from cacheproxy.simple.parse import parse_project_list, parse_project_page
from cacheproxy.simple.render import (
    render_html,
    render_json,
    render_list_html,
    render_list_json,
)
from cacheproxy.store.api import Store
from cacheproxy.store.records import (
    Body,
    DamagedBody,
    FileMap,
    FileRecord,
    PageRecord,
    files_version,
    name_bodies,
    strongest_hash,
)

logger = logging.getLogger(__name__)

T = TypeVar("T")

ROOT_KEY = ""  # the project list's key; no project normalises to ""
# The root list is huge upstream and changes constantly but matters to nobody's install.
ROOT_MIN_TTL = 3600.0
MEMO_SECONDS = 1.0
MEMO_ENTRIES = 4096
# Pages whose upstream fetch failed recently (for failure_backoff); the oldest are forgotten
# first, so a flood of made-up names cannot grow it without end.
FAILED_ENTRIES = 4096
# Pages above this size are rendered in a worker thread so the event loop keeps serving.
_THREAD_RENDER_BYTES = 256 * 1024


class PageChanged(Exception):
    """The body a record named was replaced by a refresh, or found damaged (then the page
    was dropped): get the page again."""


@dataclass(frozen=True, slots=True)
class ReadyBody:
    """One representation ready to send: its bytes, or an open file the response closes."""

    size: int
    data: bytes | None = None
    file: IO[bytes] | None = None


@dataclass(frozen=True, slots=True)
class PageResult:
    record: PageRecord
    cache: str  # "HIT", "MISS" or "STALE"
    max_age: int  # what clients may cache it for
    reason: str | None = None  # why it is stale
    # The bodies' bytes by body name while the page is pending (not yet on disk).
    data: Mapping[str, bytes] | None = None


def _gzip(data: bytes) -> bytes:
    # mtime=0: the same body always compresses to the same bytes, hence the same ETag.
    return gzip.compress(data, compresslevel=6, mtime=0)


def _with_gzip(bodies: dict[str, bytes]) -> dict[str, bytes]:
    return {**bodies, **{f"{k}.gz": _gzip(v) for k, v in bodies.items()}}


@dataclass(frozen=True, slots=True)
class Rendered:
    """What a miss produces: the bodies to store and the file records behind their links."""

    bodies: dict[str, bytes]
    files: FileMap | None = None
    strays: tuple[str, ...] = ()
    gated: Filtered | None = None  # what the release-age gate held back, when it is on


def render_project(
    page: ProjectPage,
    allowed: Callable[[str], bool] = bool,
    shown: ProjectPage | None = None,
    extracted: Callable[[str], str | None] | None = None,
    place: Callable[[str], str] | None = None,
) -> Rendered:
    """Rewrite every link to the proxy; return the bodies and the file records behind them.

    Files whose URL fails ``allowed`` (see ``upstream.file_url_allowed``) are dropped:
    never advertised, so never fetched. ``shown`` is the page as listed (the release-age
    gate's view, a subset of ``page``'s files): every file of ``page`` gets a record, so a
    held file is refused by name (403) rather than unknown (404). ``place`` maps an
    upstream path to the file's path under ``/packages/`` (``layout.index_rest``: which
    index it came from).

    ``extracted`` (the store's ``extracted_metadata``) turns on PEP 658 metadata for wheels
    whose index gives none (proxy/metadata.py): advertised with the hash of what was read
    from the wheel, or without one until it is read; not at all once found unreadable.
    """
    links: dict[int, str] = {}
    records: FileMap = {}
    strays: list[str] = []
    kept: list[DistFile] = []
    listed = {id(f) for f in (shown or page).files}
    for f in page.files:
        shown_here = id(f) in listed
        if not allowed(f.url):
            logger.warning("dropping %s from %s: its host is not allowed", f.filename, page.name)
            continue
        rest = upstream_rest(f.url)
        if place is not None:
            rest = place(rest)
        try:
            key = file_key(rest)
        except BadPath:
            logger.warning("dropping %s from %s: unusable URL path", f.filename, page.name)
            continue
        if f.provenance is not None and not allowed(f.provenance):
            f = replace(f, provenance=None)  # never advertised, so never fetched
        synthesized = False
        if extracted is not None and f.core_metadata is False and _extractable(f):
            assert f.sha256 is not None
            known = extracted(f.sha256)
            if known != "":  # "": read before and found unreadable
                f = replace(f, core_metadata={"sha256": known} if known else True)
                synthesized = True
        links[id(f)] = page_link(rest)
        if shown_here:
            kept.append(f)
        other = None if f.sha256 else strongest_hash(f.hashes)
        records[key] = FileRecord(
            url=f.url,
            sha256=f.sha256,
            size=f.size,
            metadata_sha256=f.metadata_sha256,
            metadata=f.core_metadata is not False,
            uploaded=upload_epoch(f.upload_time),
            provenance=f.provenance,
            hash_name=other[0] if other else None,
            hash_value=other[1] if other else None,
            extracted=True if synthesized else None,
        )
        if project_of(key.rsplit("/", 1)[-1]) != page.name:
            strays.append(key)
    page = replace(shown or page, files=tuple(kept))

    def link_for(f: DistFile) -> str:
        return links[id(f)]

    bodies = {"json": render_json(page, link_for), "html": render_html(page, link_for)}
    return Rendered(_with_gzip(bodies), records, tuple(strays))


def _extractable(f: DistFile) -> bool:
    """A wheel with a sha256 (what its extracted metadata is remembered by)."""
    return f.filename.endswith(".whl") and f.sha256 is not None


class Pages:
    """Gets index pages through the cache. One instance per app."""

    def __init__(
        self,
        storage: Store,
        upstream: Upstream,
        settings: Settings,
        metrics: Metrics,
        clock: Callable[[], float] = time.time,
        gate: Gate | None = None,
        *,
        index: str = "",
        default: bool = True,
        prepare: Callable[[ProjectPage], ProjectPage] | None = None,
        keep: Callable[[str], bool] | None = None,
        routed_away: Callable[[str], bool] | None = None,
    ) -> None:
        # One Pages per upstream index (proxy/routing.py). The default index keeps its
        # keys as they were (caches from before indexes stay valid); another index's are
        # "<index>:<key>", which no project name or JSON API key of the default can be.
        self.index = index
        self._default = default
        self._prefix = "" if default else f"{index}:"
        self._prepare = prepare
        # Which (normalized) names the project list keeps: the routed view lists only the
        # default index's projects that no route sends to another index (routing.py).
        self._keep = keep
        # Projects a route sends to another index: the default index's own page of one (its
        # single-index view only) links its files under -/<index>/, so a bare /packages/
        # path never leads to the default index for a routed project (routing.py).
        self._routed_away = routed_away
        self._metrics = metrics
        self._storage = storage
        self._upstream = upstream
        self._settings = settings
        self._clock = clock
        self._inflight: dict[str, asyncio.Task[PageResult]] = {}
        # Page records read in the last MEMO_SECONDS, so a hot page's hits (and 304s) skip
        # the record store (a thread hop and an unpickle each). Short, because another
        # worker may refresh or invalidate the page: it sees the change within a second.
        self._memo: OrderedDict[str, tuple[float, PageRecord]] = OrderedDict()
        self._failed_at: OrderedDict[str, float] = OrderedDict()
        # Pages answered but not yet written: key -> (record, bytes by body name).
        self._pending: dict[str, tuple[PageRecord, Mapping[str, bytes]]] = {}
        self._writes: dict[str, asyncio.Task[None]] = {}
        self._large_renders = asyncio.Lock()
        self._trim_heap = heap_trimmer()
        gate = gate if gate is not None else Gate()
        self.gate = gate
        # The gate's identity: a page filtered under another rule is filtered again.
        self._gate_key = repr(gate) if gate.active else None
        # What the gate holds back, by project, as last seen by this process (status page).
        self._held: OrderedDict[str, tuple[tuple[str, str | None, float | None], ...]] = (
            OrderedDict()
        )
        # Told each page's file records (and the filenames the gate holds) when it is
        # fetched: the proxy's metadata reads start ahead of the resolver (files.py).
        self.on_fetched: Callable[[FileMap, Collection[str]], None] | None = None

    async def project(
        self, name: NormalizedName, *, revalidate: bool = False, client_revalidate: bool = False
    ) -> PageResult:
        """The project page, via the cache.

        ``revalidate``: the proxy needs a fresher copy (a file its copy does not list): one
        older than ``revalidate_floor`` is asked for again. ``client_revalidate``: the
        client sent ``max-age=0``/``no-cache``; see the module docstring.

        Raises:
            NotFound: upstream says there is no such project.
            UpstreamError: upstream failed and nothing is stored (OfflineMiss offline).
        """
        floor = self._floor(revalidate, client_revalidate)
        key = self._prefix + name
        return await self._get(key, self._settings.index_ttl, floor, self._fetch_project)

    async def json_api(
        self, name: NormalizedName, version: str | None, *, client_revalidate: bool = False
    ) -> PageResult:
        """PyPI's JSON API document of a project (or of one release), via the cache, with
        the freshness policy of pages (json_api.py says what is stored).

        With the release-age gate on, the document shows what the project page shows
        (:meth:`_store_json_api`); a release the gate holds entirely is not served.

        Raises:
            NotFound: no such project or release, or upstream has no JSON API.
            HeldBack: the gate holds every file of the release (of every release, for the
                project's document).
            UpstreamError: as for :meth:`project`.
        """
        base = json_api_base(self._upstream.index_url)
        if base is None:
            raise NotFound("upstream has no JSON API (only an index at <origin>/simple/ has)")
        key = self._prefix + json_api_key(name, version)
        floor = self._floor(False, client_revalidate)
        result = await self._get(key, self._settings.index_ttl, floor, self._fetch_json_api)
        if result.record.held:  # a document's held files: its whole release is held
            raise HeldBack(release_line(name, version, result.record.held))
        return result

    async def project_list(self, *, client_revalidate: bool = False) -> PageResult:
        """The root project list, via the cache (same errors as :meth:`project`)."""
        ttl = max(self._settings.index_ttl, ROOT_MIN_TTL)
        floor = self._floor(False, client_revalidate)
        return await self._get(self._prefix + ROOT_KEY, ttl, floor, self._fetch_list)

    def key(self, name: str) -> str:
        """The record key of ``name`` (a project, ROOT_KEY: the project list, or a JSON API
        key) in this index's pages."""
        return self._prefix + name

    async def expire(self, key: str) -> None:
        """Make the next request fetch page ``key`` afresh and unconditionally, so that it
        is rendered again (a hash pinned since must show in it); the stored copy stays, to
        be served stale while upstream is down."""
        if (earlier := self._writes.get(key)) is not None:
            await asyncio.wait([earlier])
        record = await self._storage.get_page(key)
        if record is None or record.status != 200:
            return
        stale = replace(record, fetched_at=0.0, upstream_etag=None, upstream_last_modified=None)
        await self._storage.put_page(key, stale)
        self.forget(key)

    def _floor(self, revalidate: bool, client_revalidate: bool) -> float | None:
        """The age past which a page within its TTL is revalidated anyway (None: never)."""
        floors = []
        if revalidate:
            floors.append(self._settings.revalidate_floor)
        if client_revalidate and self._settings.client_revalidate_after is not None:
            floors.append(self._settings.client_revalidate_after)
        return min(floors, default=None)

    async def _get(
        self,
        key: str,
        ttl: float,
        floor: float | None,
        fetch: Callable[[str, PageRecord | None], Coroutine[Any, Any, PageResult]],
    ) -> PageResult:
        record = await self._read(key)
        now = self._clock()
        if record is not None and self._needs_gating(key, record, now):
            if "source" in record.bodies:
                return await self._single_flight(key, record, self._refilter)
            if self._settings.offline:
                # Never hand out what the gate would hold: no source to filter, no upstream.
                raise OfflineMiss(f"offline mode: project {key!r} was cached without the gate")
            # Stored before the gate was on: fetch it whole (no validators: a 304 would
            # keep the unfiltered bodies).
            record = replace(
                record, fetched_at=-math.inf, upstream_etag=None, upstream_last_modified=None
            )
        if record is not None:
            age = now - record.fetched_at
            lifetime = ttl if record.status == 200 else self._settings.negative_ttl
            fresh = age < lifetime and not (floor is not None and age >= floor)
            if fresh or self._settings.offline:
                return self._result(record, "HIT", max(0.0, lifetime - age), key=key)
            failed_at = self._failed_at.get(key)
            if failed_at is not None and now - failed_at < self._settings.failure_backoff:
                return self._result(record, "STALE", 0, "upstream recently failed", key=key)
        elif self._settings.offline:
            what = f"project {key!r}" if key else "the project list"
            if key[len(self._prefix) :].startswith(KEY_PREFIX):
                what = f"JSON API document {key.removeprefix(KEY_PREFIX)!r}"
            raise OfflineMiss(f"offline mode: {what} is not cached")
        try:
            return await self._single_flight(key, record, fetch)
        except (UpstreamError, IndexParseError) as e:
            if record is None:
                raise
            logger.warning("serving stale %s: %s", key or "/", e)
            return self._result(record, "STALE", 0, str(e), key=key)

    async def _single_flight(
        self,
        key: str,
        record: PageRecord | None,
        fetch: Callable[[str, PageRecord | None], Coroutine[Any, Any, PageResult]],
    ) -> PageResult:
        task = self._inflight.get(key)
        if task is None:
            task = asyncio.create_task(fetch(key, record), name=f"page {key or '/'}")
            self._inflight[key] = task
            task.add_done_callback(lambda _t: self._inflight.pop(key, None))
        # Shielded: a client hanging up must not cancel the fetch other clients share.
        return await asyncio.shield(task)

    def _needs_gating(self, key: str, record: PageRecord, now: float) -> bool:
        """Whether ``record``'s bodies must be filtered again: the gate's rule changed, or a
        held file has aged in since."""
        bare = key[len(self._prefix) :]
        if record.status != 200 or bare == ROOT_KEY:
            return False
        if record.gate != self._gate_key:
            return True  # the gate was turned on or off, or its rule changed
        return record.gate_changes_at is not None and now >= record.gate_changes_at

    async def _refilter(self, key: str, old: PageRecord | None) -> PageResult:
        """Filter a stored page again from upstream's body kept with it: no upstream
        request, and the page keeps its freshness."""
        if old is None or old.source_url is None:  # _get only sends pages kept with a source
            raise IndexParseError(f"page {key}: nothing to filter again")
        is_document = key[len(self._prefix) :].startswith(KEY_PREFIX)
        try:
            body = await self._storage.read_body(old.bodies["source"])
        except (FileNotFoundError, DamagedBody):
            unusable = replace(
                old, fetched_at=-math.inf, upstream_etag=None, upstream_last_modified=None
            )
            if is_document:
                return await self._fetch_json_api(key, unusable)
            return await self._fetch_project(key, unusable)
        resp = PageResponse(
            200,
            URL(old.source_url, encoded=True),
            body,
            old.source_type,
            old.upstream_etag,
            old.upstream_last_modified,
            old.serial,
        )
        if is_document:
            return await self._store_json_api(key, old, resp, fetched_at=old.fetched_at)
        return await self._store(
            key, old, resp, self._project_renderer(key, resp), fetched_at=old.fetched_at
        )

    def held_back(self) -> list[tuple[str, str, str | None, float | None]]:
        """(project, filename, version, available from) of what the gate holds back, in the
        pages this process has seen; None as the time means unknown or never."""
        return [(p, *h) for p, held in self._held.items() for h in held]

    def _remember_held(self, key: str, record: PageRecord) -> None:
        if key[len(self._prefix) :].startswith(KEY_PREFIX):
            return  # a JSON API document's held files are its project page's
        if record.held:
            self._held[key] = record.held
            self._held.move_to_end(key)
            while len(self._held) > MEMO_ENTRIES:
                self._held.popitem(last=False)
        else:
            self._held.pop(key, None)

    async def _read(self, key: str) -> PageRecord | None:
        pending = self._pending.get(key)
        if pending is not None:
            return pending[0]
        memo = self._memo.get(key)
        if memo is not None and time.monotonic() - memo[0] < MEMO_SECONDS:
            return memo[1]
        record = await self._storage.get_page(key)
        if record is not None:
            self._remember(key, record)
        return record

    def _remember(self, key: str, record: PageRecord) -> None:
        self._remember_held(key, record)
        self._memo[key] = (time.monotonic(), record)
        self._memo.move_to_end(key)
        while len(self._memo) > MEMO_ENTRIES:
            self._memo.popitem(last=False)

    async def body_bytes(self, key: str, result: PageResult, body: Body) -> bytes:
        """:meth:`body`'s bytes, read (in a thread) when it is a file.

        Raises:
            PageChanged: as :meth:`body`.
        """
        ready = await self.body(key, result, body)
        if ready.data is not None:
            return ready.data
        assert ready.file is not None
        return await asyncio.to_thread(_read_closing, ready.file)

    async def body(self, key: str, result: PageResult, body: Body) -> ReadyBody:
        """``body`` of page ``key`` (one of ``result``'s), checked and ready to send: from
        memory while the page is pending or when small, else an open file.

        Raises:
            PageChanged: the body is gone or damaged; the page was forgotten (and a
                damaged one dropped, so the next request fetches it afresh).
        """
        if result.data is not None:  # answered before it is on disk
            return ReadyBody(body.size, data=result.data[body.name])
        try:
            if self._storage.bodies.fits(body.size):
                return ReadyBody(body.size, data=await self._storage.read_body(body))
            return ReadyBody(body.size, file=await self._storage.open_body(body))
        except FileNotFoundError:
            # A refresh replaced this body between our record read and the open.
            self.forget(key)
            raise PageChanged(key) from None
        except DamagedBody as e:
            logger.error("dropping page %s: %s", key or "/", e)
            await asyncio.to_thread(self._storage.drop_page, key)
            self._storage.drop_damaged_body(e.body)
            self.forget(key)
            raise PageChanged(key) from None

    def forget(self, key: str) -> None:
        """Drop the in-memory copy (its body was replaced, or the page was invalidated)."""
        self._memo.pop(key, None)

    def forget_all(self) -> None:
        self._memo.clear()

    def _result(
        self,
        record: PageRecord,
        cache: str,
        max_age: float,
        reason: str | None = None,
        *,
        key: str | None = None,
    ) -> PageResult:
        if record.status != 200:
            raise NotFound("no such project upstream")
        ttl = int(min(max_age, self._settings.index_ttl))
        pending = self._pending.get(key) if key is not None else None
        data = pending[1] if pending is not None and pending[0] is record else None
        return PageResult(record, cache, ttl, reason, data)

    async def _fetch(
        self, key: str, old: PageRecord | None, url: URL | None = None
    ) -> PageResponse:
        url = url or self._upstream.page_url(key[len(self._prefix) :] or None)
        usable = old is not None and old.status == 200
        try:
            resp = await self._upstream.fetch_page(
                url,
                etag=old.upstream_etag if usable and old else None,
                last_modified=old.upstream_last_modified if usable and old else None,
            )
        except UpstreamError:
            self._note_failure(key)
            raise
        self._failed_at.pop(key, None)
        if resp.status == 304 and not usable:
            # We sent no validator; a 304 here is an upstream bug. Treat it as a failure.
            raise UpstreamError(f"upstream answered 304 to an unconditional request for {key}")
        return resp

    def _note_failure(self, key: str) -> None:
        self._failed_at[key] = self._clock()
        self._failed_at.move_to_end(key)
        while len(self._failed_at) > FAILED_ENTRIES:
            self._failed_at.popitem(last=False)

    async def _store(
        self,
        key: str,
        old: PageRecord | None,
        resp: PageResponse,
        render: Callable[[], Rendered],
        *,
        fetched_at: float | None = None,
    ) -> PageResult:
        now = self._clock() if fetched_at is None else fetched_at
        if (earlier := self._writes.get(key)) is not None:
            await asyncio.wait([earlier])  # a record update must land after the write
        if resp.status == 304 and old is not None:
            record = replace(old, fetched_at=now)
            try:
                record = await self._storage.put_page(key, record)
            except Exception as e:  # disk full or failing: still the right answer
                self._cannot_store(key, e)
            self._remember(key, record)
            return self._result(record, "HIT", self._settings.index_ttl)
        if resp.status == 404:
            try:
                negative = PageRecord(404, now)
                expire = self._settings.negative_ttl
                self._remember(key, await self._storage.put_page(key, negative, expire=expire))
            except Exception as e:  # served, not remembered: the next request asks again
                self._cannot_store(key, e)
                self.forget(key)
            if key[len(self._prefix) :] and old is not None and old.status == 200:
                self._metrics.add("cache_pages", value=-1)
            raise NotFound("no such project upstream")

        def work() -> tuple[Rendered, PageRecord, dict[str, bytes]]:
            rendered = render()
            gated = rendered.gated
            bodies = rendered.bodies if gated is None else {**rendered.bodies, "source": resp.body}
            named, blobs = name_bodies(bodies)
            record = PageRecord(
                status=200,
                fetched_at=now,
                upstream_etag=resp.etag,
                upstream_last_modified=resp.last_modified,
                serial=resp.serial,
                bodies=named,
                gate=None if gated is None else self._gate_key,
                gate_changes_at=None if gated is None else gated.changes_at,
                held=()
                if gated is None
                else tuple((h.filename, h.version, h.available_at) for h in gated.held),
                source_type=None if gated is None else resp.content_type,
                source_url=None if gated is None else str(resp.url),
            )
            return rendered, record, blobs

        if len(resp.body) > _THREAD_RENDER_BYTES:
            # One large page at a time per process: each one's parse and render briefly
            # take several times its size (bench/memory.py), and forty pages missed at once
            # would add them up. They hold the GIL, so running them together saved no time.
            async with self._large_renders:
                rendered, record, blobs = await asyncio.to_thread(self._trimmed, work)
        else:
            rendered, record, blobs = work()
        if rendered.files is not None:
            self._storage.remember_pending(key, rendered.files, rendered.strays, record)
            if self.on_fetched is not None:
                self.on_fetched(rendered.files, {held[0] for held in record.held})
        self._pending[key] = (record, blobs)
        self._remember(key, record)
        # Not put in the store's in-memory body cache here: pip and uv each ask for one of
        # the four representations, and a body enters that cache on its first hit
        # (Storage.read_body), so the three nobody asks for never hold memory.
        previous = self._writes.get(key)
        new_page = bool(key[len(self._prefix) :]) and (old is None or old.status != 200)
        if new_page:
            self._metrics.add("cache_pages")  # taken back if the write fails
        write = asyncio.create_task(
            self._write(key, record, blobs, rendered, previous, new_page),
            name=f"store page {key or '/'}",
        )
        self._writes[key] = write
        return PageResult(record, "MISS", int(self._settings.index_ttl), data=blobs)

    def _trimmed(self, work: Callable[[], T]) -> T:
        """``work()``, then the C heap's free pages handed back to the system."""
        try:
            return work()
        finally:
            if self._trim_heap is not None:
                self._trim_heap()

    async def _write(
        self,
        key: str,
        record: PageRecord,
        blobs: Mapping[str, bytes],
        rendered: Rendered,
        previous: asyncio.Task[None] | None,
        new_page: bool,
    ) -> None:
        """Write an answered page to disk, after any earlier write of the same page."""
        try:
            if previous is not None:
                await asyncio.wait([previous])
            await self._storage.put_prepared(key, record, blobs, rendered.files, rendered.strays)
        except Exception as e:  # disk full or failing: served, not kept; try again next time
            self._cannot_store(key, e)
            if new_page:
                self._metrics.add("cache_pages", value=-1)
            self.forget(key)
        finally:
            if self._pending.get(key, (None,))[0] is record:
                del self._pending[key]
            if self._writes.get(key) is asyncio.current_task():
                del self._writes[key]

    def _cannot_store(self, key: str, e: Exception) -> None:
        logger.error("cannot store page %s: %s", key or "/", e)
        self._metrics.error(f"cannot store page {key or '/'}: {e}")

    async def _fetch_project(self, key: str, old: PageRecord | None) -> PageResult:
        resp = await self._fetch(key, old)
        return await self._store(key, old, resp, self._project_renderer(key, resp))

    def _place(self, rest: str) -> str:
        """Where a file of this index goes under ``/packages/`` (layout.index_rest)."""
        return index_rest(rest, self.index, self._default)

    def _placer(self, name: str) -> Callable[[str], str]:
        """:meth:`_place` for the files of project ``name``."""
        if not (self._default and self._routed_away is not None and self._routed_away(name)):
            return self._place
        return lambda rest: index_rest(rest, self.index, default=False)

    def _project_renderer(self, key: str, resp: PageResponse) -> Callable[[], Rendered]:
        name = canonicalize_name(key[len(self._prefix) :])
        now = self._clock()
        synthesize = self._settings.synthesize_metadata
        extracted = self._storage.extracted_metadata if synthesize else None
        prepare = self._prepare
        place = self._placer(name)

        def render() -> Rendered:
            page = parse_project_page(resp.body, resp.content_type, resp.url, name)
            if prepare is not None:
                page = prepare(page)
            if self._gate_key is None:
                return render_project(
                    page, self._upstream.may_fetch, place=place, extracted=extracted
                )
            gated = filter_page(self.gate, page, now)
            rendered = render_project(
                page,
                self._upstream.may_fetch,
                shown=gated.page,
                extracted=extracted,
                place=place,
            )
            return replace(rendered, gated=gated)

        return render

    async def _fetch_json_api(self, key: str, old: PageRecord | None) -> PageResult:
        name, version = _document_of(key[len(self._prefix) :])
        base = json_api_base(self._upstream.index_url)
        if base is None:  # json_api() checked it; a refilter after a change of upstream
            raise NotFound("upstream has no JSON API (only an index at <origin>/simple/ has)")
        resp = await self._fetch(key, old, json_api_url(base, name, version))
        return await self._store_json_api(key, old, resp)

    async def _store_json_api(
        self,
        key: str,
        old: PageRecord | None,
        resp: PageResponse,
        *,
        fetched_at: float | None = None,
    ) -> PageResult:
        """Store a JSON API document checked against the project page (json_api.py): only
        the files the page shows, with the page's sha256, under the page's gate. When
        ``info`` named a release left with no file, the newest shown release's own
        document (fetched and cached like any) gives ``info`` and ``urls``.

        The record keeps upstream's body and the page's next gate change, so the document
        is checked again when a held file ages in (:meth:`_refilter`); its ``held`` is set
        only when the gate holds the whole release (json_api() answers 403 then).
        """
        if resp.status != 200:  # a 304 keeps the stored document, a 404 is remembered
            return await self._store(key, old, resp, _never_rendered, fetched_at=fetched_at)
        name, version = _document_of(key[len(self._prefix) :])
        page_record, listed = await self._listed(name, revalidate=False)
        doc, checked = await self._checked_document(resp, name, listed)
        if checked.contradicted:
            # Perhaps the page predates the document: ask again once, as files.py does.
            fresher, again = await self._listed(name, revalidate=True)
            if files_version(fresher) != files_version(page_record):
                page_record, listed = fresher, again
                doc, checked = await self._checked_document(resp, name, listed)
        held: tuple[tuple[str, str | None, float | None], ...] = ()
        if version is not None:
            if checked.urls_emptied and checked.held:
                held = tuple(checked.held.values())
        elif (shown := info_version(doc)) is not None and shown in checked.emptied:
            newest = newest_release(doc)
            if newest is None:
                if not checked.held:
                    raise IndexParseError(f"no file of {name}'s JSON API document is on its page")
                held = tuple(checked.held.values())
            else:
                adopt_release(doc, newest, await self._own_document(name, newest))
        gated = None
        if self._gate_key is not None:
            gated = Filtered(
                ProjectPage(name=name, files=()),
                tuple(Held(name, f, v, when, "") for f, v, when in held),
                page_record.gate_changes_at,
            )

        def render() -> Rendered:
            # Not gzipped ahead: the origin goes in when the document is sent (json_api.py).
            # Every file is a "stray" of this key (no filename names "pypi/…"): each gets a
            # pointer, so /packages/... finds it without the project page.
            files = checked.records
            return Rendered({"json": dump_json_api(doc)}, files, tuple(files), gated=gated)

        return await self._store(key, old, resp, render, fetched_at=fetched_at)

    async def _listed(self, name: NormalizedName, *, revalidate: bool) -> tuple[PageRecord, Listed]:
        """The project page's record and what it shows (json_api.Listed).

        Raises:
            NotFound, UpstreamError: as for :meth:`project`.
        """
        key = self._prefix + name
        for _ in range(2):
            result = await self.project(name, revalidate=revalidate)
            try:
                data = await self.body_bytes(key, result, result.record.bodies["json"])
            except PageChanged:
                continue
            return result.record, listed_files(data, result.record.held)
        raise UpstreamError(f"project page {name} changed twice while it was read; retry")

    async def _checked_document(
        self, resp: PageResponse, name: NormalizedName, listed: Listed
    ) -> tuple[dict[str, Any], Checked]:
        def check() -> tuple[dict[str, Any], Checked]:
            doc = parse_json_api(resp.body)
            checked = rewrite_json_api(
                doc, str(resp.url), self._upstream.may_fetch, self._placer(name), listed
            )
            return doc, checked

        if len(resp.body) > _THREAD_RENDER_BYTES:
            return await asyncio.to_thread(check)
        return check()

    async def _own_document(self, name: NormalizedName, version: str) -> dict[str, Any] | None:
        """Release ``version``'s own document, through the cache (None: upstream has none,
        or it is held after all: json_api.adopt_release keeps only the project's keys)."""
        try:
            result = await self.json_api(name, version)
            data = await self.body_bytes(
                self._prefix + json_api_key(name, version), result, result.record.bodies["json"]
            )
        except (NotFound, HeldBack, PageChanged):
            return None
        return parse_json_api(data)

    async def _fetch_list(self, key: str, old: PageRecord | None) -> PageResult:
        resp = await self._fetch(key, old)
        keep = self._keep

        def render() -> Rendered:
            projects = parse_project_list(resp.body, resp.content_type)
            if keep is not None:
                names = tuple(n for n in projects.names if keep(canonicalize_name(n)))
                projects = replace(projects, names=names)

            def link_for(name: str) -> str:
                return f"{canonicalize_name(name)}/"

            bodies = {
                "json": render_list_json(projects, link_for),
                "html": render_list_html(projects, link_for),
            }
            return Rendered(_with_gzip(bodies))

        return await self._store(key, old, resp, render)

    async def flush(self) -> None:
        """Wait until every answered page is on disk."""
        while self._writes:
            await asyncio.wait(list(self._writes.values()))

    async def close(self) -> None:
        for task in list(self._inflight.values()):
            task.cancel()
        await asyncio.gather(*self._inflight.values(), return_exceptions=True)
        await self.flush()  # pages already answered are kept


def _document_of(bare_key: str) -> tuple[NormalizedName, str | None]:
    """(project, version or None) of a JSON API document's key (json_api.json_api_key)."""
    name, _sep, version = bare_key.removeprefix(KEY_PREFIX).partition("/")
    return NormalizedName(name), version or None


def _never_rendered() -> Rendered:
    raise AssertionError("a 304 or 404 answer is stored without rendering")  # _store


def _read_closing(fobj: IO[bytes]) -> bytes:
    with fobj:
        return fobj.read()
