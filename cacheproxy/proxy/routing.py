"""One upstream, page cache and file resolver per configured index, and the routes
between them (cacheproxy/indexes.py says why: no project is ever merged across indexes).

Each index has its own :class:`Upstream` (its URL, credentials, timeouts and, through its
own sessions, its own address policy: its host is the one it trusts), its own
:class:`Pages` (page keys ``<index>:<project>`` except for the default index) and its own
:class:`Files`. The store is shared: files are content-addressed, so the same sha256 is
stored once whichever index served it. File paths say which index listed them
(``/packages/-/<index>/…``, ``layout.index_rest``), so every view resolves a link to the
same bytes.
"""

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from typing import IO

import aiohttp
from yarl import URL

from cacheproxy.errors import NotFound, UpstreamError, UpstreamStatusError
from cacheproxy.figures.metrics import Metrics
from cacheproxy.indexes import IndexConfig, Route, route_for
from cacheproxy.proxy.files import Files, Resolved
from cacheproxy.proxy.metadata import Extractor
from cacheproxy.proxy.pages import Pages
from cacheproxy.proxy.upstream import PageResponse, Upstream, make_session
from cacheproxy.settings import Settings
from cacheproxy.simple.gate import Gate
from cacheproxy.simple.layout import (
    METADATA_SUFFIX,
    PROVENANCE_SUFFIX,
    index_of_key,
    project_of,
)
from cacheproxy.simple.models import ProjectPage
from cacheproxy.store.api import Store
from cacheproxy.store.pins import Pins

logger = logging.getLogger(__name__)

# The routed view's project list is kept under "-routed:" ("-" starts no index name).
ROUTED_LIST = "-routed"


def index_settings(settings: Settings, config: IndexConfig) -> Settings:
    """The settings one index's services run with: its URL, its own TTL and timeouts."""
    overrides = {
        name: value
        for name in ("index_ttl", "connect_timeout", "read_timeout", "page_timeout", "min_age")
        if (value := getattr(config, name)) is not None
    }
    if config.min_age == 0:
        # No cooldown on this index (the team's own): no min-age at all, so a file its index
        # gives no upload time for is not held for want of one (simple/gate.py fails closed
        # on unknown times whenever a min-age is set).
        overrides["min_age"] = None
    return replace(settings, upstream=config.url, indexes=(), routes=(), **overrides)


class IndexUpstream(Upstream):
    """An index's upstream: counts its requests under its name, and reads a 403 for a
    page as "no such project" when the index is known to answer so (PyTorch's does).

    A routed index's 401/403 is a 502 for the client (an UpstreamError, so a stored copy is
    served stale instead): the client's credentials are the proxy's business, not that
    index's, and no answer of a routed index may send the client elsewhere. The default
    index's pass through (web/responses.upstream_error says why).
    """

    def __init__(
        self,
        session: aiohttp.ClientSession,
        settings: Settings,
        metrics: Metrics,
        config: IndexConfig,
    ) -> None:
        super().__init__(session, settings, metrics)
        self.name = config.name
        self.routed = False  # set for every index but the default (Indexes.open)
        self._forbidden_is_missing = config.forbidden_is_missing
        self._counters = metrics

    def share_download_slots(self, other: Upstream) -> None:
        """Draw big downloads from ``other``'s slots: --max-downloads bounds the process,
        not each index."""
        self._slots = other._slots

    def _count(self, kind: str, outcome: str) -> None:
        # Index names come from the configuration, never from a request: a fixed label set.
        self._counters.add("index_upstream", self.name, kind, outcome)

    async def fetch_page(
        self, url: URL, *, etag: str | None = None, last_modified: str | None = None
    ) -> PageResponse:
        try:
            resp = await super().fetch_page(url, etag=etag, last_modified=last_modified)
        except UpstreamStatusError as e:
            if e.upstream_status == 403 and self._forbidden_is_missing:
                self._count("page", "not_found")
                return PageResponse(status=404, url=url)
            self._count("page", "error")
            if (refused := self._refused(e)) is e:
                raise
            raise refused from e
        except UpstreamError:
            self._count("page", "error")
            raise
        self._count("page", {200: "ok", 304: "not_modified"}.get(resp.status, "not_found"))
        return resp

    @asynccontextmanager
    async def open_file(
        self, url: str, *, range_header: str | None = None
    ) -> AsyncIterator[aiohttp.ClientResponse]:
        opened = False
        try:
            async with super().open_file(url, range_header=range_header) as resp:
                opened = True
                self._count("file", "ok")
                yield resp
        except UpstreamStatusError as e:
            if opened:
                raise
            self._count("file", "error")
            if (refused := self._refused(e)) is e:
                raise
            raise refused from e
        except UpstreamError:
            if not opened:
                self._count("file", "error")
            raise

    def _refused(self, e: UpstreamStatusError) -> UpstreamError:
        if self.routed and e.upstream_status in (401, 403):
            return UpstreamError(f"index {self.name}: {e}")
        return e


@dataclass(slots=True)
class Index:
    """One configured index and the services that serve it."""

    config: IndexConfig
    default: bool
    upstream: IndexUpstream
    pages: Pages
    files: Files
    session: aiohttp.ClientSession

    @property
    def name(self) -> str:
        return self.config.name


def apply_pins(page: ProjectPage, pins: Pins) -> ProjectPage:
    """The page with the pinned sha256 (and size) of every file its index lists with no
    hash at all (pins.py), so clients see the hash every later download is checked against."""
    files = []
    changed = False
    for f in page.files:
        if not f.hashes and (pin := pins.get(f.url, f.size)) is not None:
            size = f.size if f.size is not None else pin.size
            f = replace(f, hashes={**f.hashes, "sha256": pin.sha256}, size=size)
            changed = True
        files.append(f)
    return replace(page, files=tuple(files)) if changed else page


class Indexes:
    """Every configured index, the default first, and the routes between them."""

    def __init__(
        self, indexes: Sequence[Index], routes: Sequence[Route], routed_list: Pages | None = None
    ) -> None:
        self.all = tuple(indexes)
        self.default = indexes[0]
        self.routes = tuple(routes)
        # The project list of the routed /simple/ (the default's own when nothing is routed
        # away from it).
        self.routed_list = routed_list or self.default.pages
        self._by_name: Mapping[str, Index] = {i.name: i for i in indexes}
        self._tasks: set[asyncio.Task[None]] = set()

    @classmethod
    def open(
        cls,
        settings: Settings,
        storage: Store,
        metrics: Metrics,
        pins: Pins,
        gate: Gate | None = None,
    ) -> "Indexes":
        """Every index's services over one store; one release-age gate for all of them."""
        built: list[Index] = []
        routes = settings.routes
        default_name = settings.index_configs[0].name

        def routed_away(name: str) -> bool:
            return route_for(name, routes, default_name) != default_name

        for position, config in enumerate(settings.index_configs):
            own = index_settings(settings, config)
            # An index with its own min_age has its own gate; the others share the global one.
            own_gate = gate if config.min_age is None else Gate.from_settings(own)
            session = make_session(own)
            upstream = IndexUpstream(session, own, metrics, config)
            upstream.routed = position > 0
            if built:
                upstream.share_download_slots(built[0].upstream)

            def prepare(page: ProjectPage) -> ProjectPage:
                return apply_pins(page, pins)

            pages = Pages(
                storage,
                upstream,
                own,
                metrics,
                gate=own_gate,
                index=config.name,
                default=position == 0,
                prepare=prepare,
                routed_away=routed_away if position == 0 else None,
            )
            files = Files(storage, pages, own_gate, upstream=upstream, pins=pins)
            built.append(Index(config, position == 0, upstream, pages, files, session))
        default = built[0]
        routed_list = default.pages
        if any(route.index != default.name for route in settings.routes):
            # The routed /simple/ list must not claim a project another index serves: the
            # default index's list less those names, kept apart from the default's own.
            def keep(name: str) -> bool:
                return route_for(name, settings.routes, default.name) == default.name

            routed_list = Pages(
                storage,
                default.upstream,
                index_settings(settings, default.config),
                metrics,
                gate=gate,
                index=ROUTED_LIST,
                default=False,
                keep=keep,
            )
        indexes = cls(built, settings.routes, routed_list)
        for index in built:
            index.files.on_pinned = indexes._pinned_handler(index)
        return indexes

    def use_extractor(self, extractor: Extractor) -> None:
        """Read PEP 658 metadata from the wheels of every index (proxy/metadata.py); it is
        made after the indexes, from the downloads they share."""
        for index in self.all:
            index.files._extractor = extractor
            index.pages.on_fetched = index.files.prefetch_metadata

    def get(self, name: str) -> Index | None:
        return self._by_name.get(name)

    def for_project(self, name: str) -> Index:
        """The index project ``name`` (normalized) comes from: its route's, else the
        default. Only that index is ever asked for it."""
        if not self.routes:
            return self.default
        return self._by_name[route_for(name, self.routes, self.default.name)]

    def for_file(self, key: str) -> Index | None:
        """The index whose page listed file ``key`` (None: no such index)."""
        name = index_of_key(key)
        return self.default if name is None else self._by_name.get(name)

    def _pinned_handler(self, index: Index) -> "_Pinned":
        return _Pinned(self, index)

    def _expire_later(self, index: Index, key: str) -> None:
        task = asyncio.create_task(self._expire(index, key), name=f"expire page {key}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    @staticmethod
    async def _expire(index: Index, key: str) -> None:
        try:
            await index.pages.expire(key)
        except Exception as e:  # the pin holds; the page shows it at its next refresh
            logger.warning("cannot mark page %s for a new rendering: %s", key, e)

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for pages in self.every_pages():
            await pages.close()
        for index in self.all:
            with contextlib.suppress(Exception):
                await index.upstream.close()  # its file session
            with contextlib.suppress(Exception):
                await index.session.close()

    async def flush(self) -> None:
        for pages in self.every_pages():
            await pages.flush()

    def every_pages(self) -> list[Pages]:
        """Every page cache: each index's, and the routed project list's when it has one."""
        pages = [index.pages for index in self.all]
        return pages if self.routed_list in pages else [*pages, self.routed_list]


@dataclass(frozen=True, slots=True)
class _Pinned:
    """A download pinned a hash: render the page that lists the file again."""

    indexes: Indexes
    index: Index

    def __call__(self, filename: str, sha256: str) -> None:
        project = project_of(filename)
        if project is not None:
            self.indexes._expire_later(self.index, self.index.pages.key(project))


class RoutedFiles:
    """``/packages/<key>`` for every index: the key says which index listed the file."""

    def __init__(self, indexes: Indexes) -> None:
        self._indexes = indexes

    async def open_stored(self, resolved: Resolved) -> IO[bytes]:
        """As :meth:`Files.open_stored` (one store for every index)."""
        return await self._indexes.default.files.open_stored(resolved)

    async def resolve(self, key: str) -> Resolved:
        """As :meth:`Files.resolve`, through the index named in ``key``.

        Raises:
            NotFound: no such index, or its pages list no such file.
            UpstreamError: the page that would list it could not be fetched.
        """
        index = self._indexes.for_file(key)
        if index is None:
            raise NotFound(f"no index named {index_of_key(key)!r} is configured")
        if index_of_key(key) is None and self._indexes.routes:
            # A bare path is the default index's; a project routed elsewhere is never looked
            # up there (its files are under -/<index>/, Pages._placer).
            filename = key.rsplit("/", 1)[-1]
            project = project_of(_dist_name(filename))
            if project is not None:
                routed = self._indexes.for_project(project)
                if not routed.default:
                    raise NotFound(
                        f"{project} comes from index {routed.name}: "
                        f"its files are under /packages/-/{routed.name}/"
                    )
        return await index.files.resolve(key)


def _dist_name(filename: str) -> str:
    """The distribution's filename behind a PEP 658 metadata or PEP 740 provenance name."""
    for suffix in (METADATA_SUFFIX, PROVENANCE_SUFFIX):
        if filename.endswith(suffix):
            return filename[: -len(suffix)]
    return filename
