"""The application factory: wiring, resources in cleanup contexts, no globals."""

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

from aiohttp import web

from cacheproxy.figures.metrics import Metrics, flush_periodically
from cacheproxy.proxy.service import Proxy
from cacheproxy.settings import Settings
from cacheproxy.web.auth import auth_reads_middleware
from cacheproxy.web.handlers import setup_routes
from cacheproxy.web.hosted_handlers import setup_hosted_routes
from cacheproxy.web.index_handlers import INDEX_VIEWS, setup_index_routes
from cacheproxy.web.keys import metrics_key, proxy_key, settings_key
from cacheproxy.web.middlewares import serve_middleware

logger = logging.getLogger(__name__)


async def metrics_ctx(app: web.Application) -> AsyncIterator[None]:
    metrics = await asyncio.to_thread(Metrics.for_cache, app[settings_key].cache_dir)
    app[metrics_key] = metrics
    flusher = asyncio.create_task(flush_periodically(metrics))
    yield
    flusher.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await flusher
    await asyncio.to_thread(metrics.close)


async def proxy_ctx(app: web.Application) -> AsyncIterator[None]:
    proxy = await Proxy.open(app[settings_key], app[metrics_key])
    app[proxy_key] = proxy
    yield
    await proxy.close()


def create_app(settings: Settings) -> web.Application:
    middlewares = [serve_middleware]
    if settings.auth_reads:  # only then: an open index pays nothing for authentication
        middlewares.append(auth_reads_middleware)
    app = web.Application(middlewares=middlewares, client_max_size=1024 * 1024)
    app[settings_key] = settings
    # Order matters: later contexts use what earlier ones created, and close first.
    app.cleanup_ctx.extend([metrics_ctx, proxy_ctx])
    setup_routes(app)
    setup_hosted_routes(app, INDEX_VIEWS)
    setup_index_routes(app)
    return app
