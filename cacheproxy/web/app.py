"""The application factory: wiring, resources in cleanup contexts, no globals."""

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

from aiohttp import web

from cacheproxy.figures.metrics import Metrics, flush_periodically
from cacheproxy.proxy.downloads import Downloads
from cacheproxy.proxy.files import Files
from cacheproxy.proxy.pages import Pages
from cacheproxy.proxy.upstream import Upstream, make_session
from cacheproxy.settings import Settings
from cacheproxy.store.evict import evict
from cacheproxy.store.local import Storage
from cacheproxy.store.repair import log_repair
from cacheproxy.web.handlers import setup_routes
from cacheproxy.web.keys import (
    downloads_key,
    files_key,
    metrics_key,
    pages_key,
    session_key,
    settings_key,
    storage_key,
    upstream_key,
)
from cacheproxy.web.middlewares import serve_middleware

logger = logging.getLogger(__name__)

EVICT_CHECK = 15.0  # seconds between size checks when nothing was stored here


async def storage_ctx(app: web.Application) -> AsyncIterator[None]:
    settings = app[settings_key]
    # With several workers the parent process cleaned and checked the directory before
    # starting them (cli.serve); a worker doing it would delete its siblings' downloads.
    single = settings.workers == 1 and not settings.shared_dir
    storage = await Storage.open(settings.cache_dir, clean=single)
    app[storage_key] = storage
    metrics = await asyncio.to_thread(Metrics, settings.cache_dir / "stats")
    app[metrics_key] = metrics
    check = asyncio.create_task(asyncio.to_thread(log_repair, storage, metrics)) if single else None
    flusher = asyncio.create_task(flush_periodically(metrics))
    yield
    flusher.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await flusher
    if check is not None:
        with contextlib.suppress(Exception):
            await check  # a thread cannot be cancelled; it is bounded by the cache size
    await asyncio.to_thread(metrics.close)
    await storage.close()


async def upstream_ctx(app: web.Application) -> AsyncIterator[None]:
    settings = app[settings_key]
    # No network work at start-up: the session connects lazily on the first miss.
    session = make_session(settings)
    app[session_key] = session
    app[upstream_key] = Upstream(session, settings, app[metrics_key])
    yield
    await session.close()


async def services_ctx(app: web.Application) -> AsyncIterator[None]:
    settings, storage, upstream = app[settings_key], app[storage_key], app[upstream_key]
    metrics = app[metrics_key]
    pages = Pages(storage, upstream, settings, metrics)
    downloads = Downloads(upstream, storage, metrics, settings.retries)
    app[pages_key] = pages
    app[files_key] = Files(storage, pages)
    app[downloads_key] = downloads
    evictor = (
        asyncio.create_task(keep_within_limit(storage, metrics, settings.max_size, downloads))
        if settings.max_size is not None
        else None
    )
    yield
    if evictor is not None:
        evictor.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await evictor
    await downloads.close()
    await pages.close()


async def keep_within_limit(
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


def create_app(settings: Settings) -> web.Application:
    app = web.Application(middlewares=[serve_middleware], client_max_size=1024 * 1024)
    app[settings_key] = settings
    # Order matters: later contexts use what earlier ones created, and close first.
    app.cleanup_ctx.extend([storage_ctx, upstream_ctx, services_ctx])
    setup_routes(app)
    return app
