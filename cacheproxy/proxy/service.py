"""The proxy as one object: the store, upstream and the caching services, opened and closed
together. The web layer holds one :class:`Proxy` and reaches everything through it, so it
never touches the store or upstream directly.
"""

import asyncio
import contextlib
import logging
import os
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from packaging.utils import NormalizedName

from cacheproxy.figures.metrics import Metrics
from cacheproxy.proxy.downloads import Downloads
from cacheproxy.proxy.hosted import Hosted
from cacheproxy.proxy.json_api import json_api_key
from cacheproxy.proxy.lookahead import Lookahead
from cacheproxy.proxy.metadata import Extractor
from cacheproxy.proxy.pages import Pages
from cacheproxy.proxy.routing import Indexes, RoutedFiles
from cacheproxy.proxy.upstream import Upstream
from cacheproxy.proxy.users import Users
from cacheproxy.settings import Settings
from cacheproxy.simple.gate import Gate
from cacheproxy.store.evict import evict
from cacheproxy.store.hosted import HostedStore
from cacheproxy.store.local import Storage
from cacheproxy.store.pins import Pins
from cacheproxy.store.repair import log_repair
from cacheproxy.units import format_timestamp

logger = logging.getLogger(__name__)

EVICT_CHECK = 15.0  # seconds between size checks when nothing was stored here
REPAIR_TASK = "start-up consistency check"
REPAIR_CLOSE_WAIT = 30.0  # seconds a closing proxy gives that check to finish


@dataclass(slots=True)
class Proxy:
    """Everything one serving process shares. Create with :meth:`open`."""

    settings: Settings
    storage: Storage
    upstream: Upstream  # the default index's
    pages: Pages  # the default index's
    files: RoutedFiles  # every index's, by the index its path names
    downloads: Downloads  # every index's: one download per stored file
    indexes: Indexes  # each index's upstream, pages and files, and the routes (routing.py)
    _background: list["asyncio.Task[object]"]
    # The team's own packages (proxy/hosted.py) and who may upload or read (users.py).
    hosted: Hosted
    users: Users | None
    extractor: Extractor | None = None  # PEP 658 metadata read from wheels (metadata.py)
    lookahead: Lookahead | None = None  # pages of what that metadata requires (lookahead.py)

    @classmethod
    async def open(cls, settings: Settings, metrics: Metrics) -> "Proxy":
        """Open the cache directory and start the services; no network work yet (the
        upstream session connects lazily on the first miss).

        Raises:
            ConfigError: the cache directory is not usable.
        """
        # With several workers the parent process cleaned and checked the directory before
        # starting them (cli.serve); a worker doing it would delete its siblings' downloads.
        single = settings.workers == 1 and not settings.shared_dir
        team = await asyncio.to_thread(_open_team, settings)
        storage = await _open_storage(settings, metrics, clean=single)
        gate = Gate.from_settings(settings)
        indexes = Indexes.open(settings, storage, metrics, Pins(storage.root), gate)
        upstream, pages = indexes.default.upstream, indexes.default.pages
        downloads = Downloads(upstream, storage, metrics, settings.retries)
        background: list[asyncio.Task[object]] = []
        if single:
            background.append(
                asyncio.create_task(
                    asyncio.to_thread(log_repair, storage, metrics), name=REPAIR_TASK
                )
            )
        if settings.max_size is not None:
            background.append(
                asyncio.create_task(
                    _keep_within_limit(storage, metrics, settings.max_size, downloads)
                )
            )
        extractor = (
            Extractor(storage, upstream, downloads, metrics, offline=settings.offline)
            if settings.synthesize_metadata
            else None
        )
        lookahead = None
        if extractor is not None:
            indexes.use_extractor(extractor)
            if not settings.offline:
                lookahead = Lookahead(_page_fetcher(indexes, team[0]))
                extractor.on_requires = lookahead.requires
        files = RoutedFiles(indexes)
        return cls(
            settings,
            storage,
            upstream,
            pages,
            files,
            downloads,
            indexes,
            background,
            *team,
            extractor=extractor,
            lookahead=lookahead,
        )

    async def start_up_checked(self) -> None:
        """Wait for the start-up consistency check. It recounts the cache figures while the
        proxy serves: a file or page stored during its scan may be counted twice or not at
        all until the next start (tests that read those figures wait for it first)."""
        for task in self._background:
            if task.get_name() == REPAIR_TASK:
                await asyncio.wait([task])

    async def settle_reads_ahead(self) -> None:
        """Wait until no page or metadata read ahead of a request is running."""
        while True:
            if self.lookahead is not None:
                await self.lookahead.settle()
            if self.extractor is not None:
                await self.extractor.settle()
            if self.lookahead is None or not self.lookahead.busy:
                return

    async def close(self) -> None:
        for task in self._background:
            if task.get_name() == REPAIR_TASK:
                # A thread cannot be cancelled: let the start-up check finish (it is
                # bounded), or it would write to the store and the log after close.
                await asyncio.wait([task], timeout=REPAIR_CLOSE_WAIT)
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if self.lookahead is not None:
            await self.lookahead.close()
        if self.extractor is not None:
            await self.extractor.close()  # its reads use the downloads and sessions
        await self.downloads.close()
        await self.indexes.close()  # every index's pages and sessions
        await self.storage.close()
        await asyncio.to_thread(self.hosted.close_sync)
        if self.users is not None:
            self.users.close()

    def gate_report(self) -> dict[str, Any] | None:
        """The release-age gate's rule and what it holds back (None when it is off)."""
        gate = self.pages.gate
        # An index may have its own min_age (cacheproxy/indexes.py): on while any is on.
        if not any(index.pages.gate.active for index in self.indexes.all):
            return None
        # Every index's pages (a non-default index's projects show as "<index>:<project>").
        held = sorted(
            (h for index in self.indexes.all for h in index.pages.held_back()),
            key=lambda h: (h[0], h[1]),
        )
        return {
            "min_age_seconds": gate.min_age,
            "exclude_newer": None
            if gate.exclude_newer is None
            else format_timestamp(gate.exclude_newer),
            "unknown": "allow" if gate.allow_unknown else "deny",
            "exempt": [str(e) for e in gate.exempt],
            # The indexes whose own min_age replaces the global one (None: no cooldown).
            "min_age_by_index": {
                index.name: index.pages.gate.min_age
                for index in self.indexes.all
                if index.config.min_age is not None
            },
            "held": [
                {
                    "project": project,
                    "filename": filename,
                    "version": version,
                    "available_from": None if when is None else format_timestamp(when),
                }
                for project, filename, version, when in held
            ],
        }

    def check_ready(self) -> None:
        """Raise unless the cache directory takes a write and the records answer (sync)."""
        self.storage.check_writable()

    async def invalidate(self, project: str | None) -> int:
        """Forget one project page (``None``: every page); files are immutable and stay.

        Returns how many pages were forgotten.
        """
        await self.indexes.flush()  # a page still being written would come back
        if project is None:
            count = await asyncio.to_thread(self.storage.invalidate_all)
            for pages in self.indexes.every_pages():
                pages.forget_all()
            return count
        found = 0
        for index in self.indexes.all:  # the project's page of every index
            key = index.pages.key(project)
            found += await asyncio.to_thread(self.storage.invalidate_page, key)
            index.pages.forget(key)  # other workers: within pages.MEMO_SECONDS
            # Its JSON API documents too (proxy/json_api.py keys), or pip-tools would see
            # the old releases until their TTL ends.
            api = index.pages.key(json_api_key(NormalizedName(project), None))
            for key in await asyncio.to_thread(self._keys_of, api):
                await asyncio.to_thread(self.storage.invalidate_page, key)
                index.pages.forget(key)
        return found

    def _keys_of(self, api_key: str) -> list[str]:
        return [
            key
            for key, _record in self.storage.page_records()
            if key == api_key or key.startswith(f"{api_key}/")
        ]


async def _open_storage(settings: Settings, metrics: Metrics, *, clean: bool) -> Storage:
    """The cache directory, alone or as the local tier of a store shared by replicas."""
    if settings.storage is None:
        return await Storage.open(settings.cache_dir, clean=clean)
    # Imported here: the object-store client is an optional extra (cacheproxy[s3]).
    from cacheproxy.store.tiered import TieredStore

    holder = settings.replica_id or f"{socket.gethostname()}-{os.getpid()}"
    return await TieredStore.open_tiered(
        settings.cache_dir,
        settings.storage,
        holder,
        ttl=settings.index_ttl,
        clean=clean,
        lease_ttl=settings.lease_ttl,
        tally=metrics,
    )


def _open_team(settings: Settings) -> tuple[Hosted, Users | None]:
    """The hosted indexes and the users file (ConfigError when either is unusable)."""
    store = HostedStore.open_sync(settings.cache_dir)
    hosted = Hosted.load_sync(store, settings.hosted, settings.max_upload_size)
    try:
        users = None
        if settings.users_file is not None:
            users = Users.for_cache(settings.users_file, settings.cache_dir)
    except BaseException:
        hosted.close_sync()
        raise
    return hosted, users


async def _keep_within_limit(
    storage: Storage, metrics: Metrics, max_size: int, downloads: Downloads
) -> None:
    """Evict when the cache grows past ``max_size``: checked when a download is stored and
    every EVICT_CHECK seconds (other workers store files too)."""
    while True:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(downloads.stored.wait(), EVICT_CHECK)
        downloads.stored.clear()
        if metrics.current("cache_bytes") > max_size:
            try:
                await asyncio.to_thread(evict, storage, metrics, max_bytes=max_size)
            except Exception:
                logger.exception("eviction failed; the next check tries again")


def _page_fetcher(
    indexes: Indexes, hosted: Hosted
) -> Callable[[NormalizedName], Awaitable[object]]:
    """How proxy/lookahead.py fetches a project's page ahead: from the index its route
    names, as a request would; never for a project the team hosts, whose name an upstream
    index must not learn from us (a dependency-confusion probe needs nothing more)."""

    async def fetch(name: NormalizedName) -> object:
        if hosted.names and await hosted.find(name) is not None:
            return None
        return await indexes.for_project(name).pages.project(name)

    return fetch
