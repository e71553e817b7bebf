"""HTTP handlers: parse the request, call the services, send stored bytes.

Everything expensive happened at miss time; a hit here is a record read, a header check and
a sendfile. Domain errors become a status and a one-line text body (never a traceback).
"""

import asyncio
import functools
import hmac
import logging
import os
import re
from typing import Any

from aiohttp import web
from packaging.utils import NormalizedName, canonicalize_name

from cacheproxy.errors import IndexParseError, NotFound, UpstreamError
from cacheproxy.figures.stats import PROMETHEUS_CONTENT_TYPE, collect_stats, render_prometheus
from cacheproxy.figures.status_page import render_status_page
from cacheproxy.proxy.pages import ROOT_KEY, PageResult
from cacheproxy.simple.layout import PREFIX
from cacheproxy.simple.negotiate import OFFERS, accepts_gzip, choose_media_type
from cacheproxy.store.local import DamagedBody
from cacheproxy.web.file_handlers import package_file
from cacheproxy.web.keys import (
    downloads_key,
    metrics_key,
    pages_key,
    settings_key,
    storage_key,
)
from cacheproxy.web.responses import SendfileResponse, etag_matches, text_error, upstream_error

logger = logging.getLogger(__name__)

# PEP 508 names; anything else cannot be a project (and must not reach upstream).
_NAME_RE = re.compile(r"^([A-Z0-9]|[A-Z0-9][A-Z0-9._-]*[A-Z0-9])$", re.IGNORECASE)


@functools.lru_cache(maxsize=4096)
def _project_name(raw: str) -> NormalizedName | None:
    """The normalised name (PEP 503), or None if ``raw`` cannot be a project; once per
    distinct spelling, since every page request needs it."""
    return canonicalize_name(raw) if _NAME_RE.match(raw) else None


def _wants_revalidation(request: web.Request) -> bool:
    cc = request.headers.get("Cache-Control", "").lower().replace(" ", "")
    return "no-cache" in cc or "max-age=0" in cc


def _index_headers(result: PageResult, etag: str, gz: bool) -> dict[str, str]:
    headers = {
        "ETag": etag,
        "Vary": "Accept, Accept-Encoding",  # standards 2.4
        "Cache-Control": f"max-age={result.max_age}, public",
        "X-Cache": result.cache,
    }
    if gz:
        headers["Content-Encoding"] = "gzip"
    if result.record.serial:
        headers["X-PyPI-Last-Serial"] = result.record.serial
    if result.reason:
        headers["X-Cache-Reason"] = result.reason[:200]
    return headers


async def _send_page(request: web.Request, result: PageResult) -> web.StreamResponse:
    # Form decoding turns the "+" of "…v1+json" into a space; media types have no spaces.
    # request.query builds a MultiDict: only worth it when there is a query string at all.
    fmt = None
    if request.query_string:
        fmt = request.query.get("format", "").replace(" ", "+") or None
    media = choose_media_type(request.headers.get("Accept"), fmt)
    if media is None:
        offered = ", ".join(m.content_type for m in OFFERS)
        return text_error(406, f"not acceptable; this index serves {offered}")
    gz = accepts_gzip(request.headers.get("Accept-Encoding"))
    kind = f"{media.kind}.gz" if gz else media.kind
    body = result.record.bodies[kind]
    headers = _index_headers(result, body.etag, gz)
    if etag_matches(request.headers.get("If-None-Match"), body.etag):
        return web.Response(status=304, headers=headers)
    headers["Content-Type"] = media.content_type
    if result.data is not None:  # answered before it is on disk (pages.py)
        return web.Response(body=result.data[body.name], headers=headers)
    storage = request.app[storage_key]
    try:
        if storage.bodies.fits(body.size):
            return web.Response(body=await storage.read_body(body), headers=headers)
        await storage.check_body(body)
        fobj = open(storage.page_body_path(body), "rb")  # closed by the response
        if (actual := os.fstat(fobj.fileno()).st_size) != body.size:
            fobj.close()
            raise DamagedBody(body, f"{actual} bytes, not {body.size}")
    except FileNotFoundError:
        # A refresh replaced this body between our record read and the open: retry once.
        raise _Retry() from None
    return SendfileResponse(fobj, offset=0, count=body.size, headers=headers)


class _Retry(Exception):
    pass


async def _drop_damaged(request: web.Request, key: str, e: DamagedBody) -> None:
    """Forget a page whose body is damaged, so the retry fetches it afresh."""
    logger.error("dropping page %s: %s", key or "/", e)
    storage = request.app[storage_key]
    await asyncio.to_thread(storage.drop_page, key)
    storage.drop_damaged_body(e.body)
    request.app[pages_key].forget(key)


async def simple_index(request: web.Request) -> web.StreamResponse:
    pages = request.app[pages_key]
    for _ in range(2):
        try:
            result = await pages.project_list(revalidate=_wants_revalidation(request))
            return await _send_page(request, result)
        except NotFound:
            return text_error(404, "upstream has no project list")
        except (UpstreamError, IndexParseError) as e:
            return upstream_error(e)
        except _Retry:
            pages.forget(ROOT_KEY)
            continue
        except DamagedBody as e:
            await _drop_damaged(request, ROOT_KEY, e)
    return text_error(503, "page changed while sending; retry")


async def project_redirect(request: web.Request) -> web.StreamResponse:
    """``/simple/<name>`` (no slash) → ``/simple/<normalised>/`` (PEP 503)."""
    raw = request.match_info["project"]
    if not _NAME_RE.match(raw):
        return text_error(400, f"not a valid project name: {raw[:100]!r}")
    return _redirect(request, f"{canonicalize_name(raw)}/")


def _redirect(request: web.Request, location: str) -> web.Response:
    # Relative Location, so a proxy behind a path prefix or any Host keeps working.
    if request.query_string:
        location = f"{location}?{request.query_string}"
    return web.Response(status=301, headers={"Location": location})


async def project_page(request: web.Request) -> web.StreamResponse:
    raw = request.match_info["project"]
    name = _project_name(raw)
    if name is None:
        return text_error(400, f"not a valid project name: {raw[:100]!r}")
    if name != raw:
        # PEP 503: one URL (and one cache entry) per project.
        return _redirect(request, f"../{name}/")
    pages = request.app[pages_key]
    for _ in range(2):
        try:
            result = await pages.project(name, revalidate=_wants_revalidation(request))
            return await _send_page(request, result)
        except NotFound:
            return text_error(404, f"no such project: {name}", {"X-Cache": "HIT"})
        except (UpstreamError, IndexParseError) as e:
            return upstream_error(e)
        except _Retry:
            pages.forget(name)
            continue
        except DamagedBody as e:
            await _drop_damaged(request, name, e)
    return text_error(503, "page changed while sending; retry")


async def health(request: web.Request) -> web.Response:
    """Liveness: no upstream, no disk work."""
    return web.Response(text="ok\n")


async def ready(request: web.Request) -> web.Response:
    """Readiness: the cache directory takes a write and the record store answers."""
    storage = request.app[storage_key]
    try:
        await asyncio.to_thread(storage.check_writable)
    except Exception as e:  # any failure here means "do not send traffic"
        return text_error(503, f"not ready: {e}")
    return web.Response(text="ready\n")


def _stats(request: web.Request) -> dict[str, Any]:
    settings = request.app[settings_key]
    return collect_stats(
        request.app[metrics_key],
        upstream=settings.upstream_redacted,
        cache_dir=str(settings.cache_dir),
        workers=settings.workers,
        in_flight=len(request.app[downloads_key]),
        max_size=settings.max_size,
        index_url=f"{request.url.origin()}/simple/",
    )


async def stats(request: web.Request) -> web.Response:
    return web.json_response(await asyncio.to_thread(_stats, request))


async def admin_invalidate(request: web.Request) -> web.Response:
    """POST /-/admin/invalidate[/<project>]: forget one project page, or every page.

    Files are not touched (they never change at a URL); the next request for a page
    fetches it from upstream afresh. Off unless CACHEPROXY_ADMIN_TOKEN is set.
    """
    token = request.app[settings_key].admin_token
    if token is None:
        return text_error(404, "admin endpoints are off (set CACHEPROXY_ADMIN_TOKEN)")
    given = request.headers.get("Authorization", "")
    if not hmac.compare_digest(given.encode(), f"Bearer {token}".encode()):
        return text_error(401, "admin token required", {"WWW-Authenticate": "Bearer"})
    storage = request.app[storage_key]
    await request.app[pages_key].flush()  # a page still being written would come back
    raw = request.match_info.get("project")
    if raw is None:
        count = await asyncio.to_thread(storage.drop_all_pages)
        request.app[pages_key].forget_all()
        return web.json_response({"invalidated": count})
    if not _NAME_RE.match(raw):
        return text_error(400, f"not a valid project name: {raw[:100]!r}")
    name = canonicalize_name(raw)
    found = await asyncio.to_thread(storage.drop_page, name)
    request.app[pages_key].forget(name)  # other workers: within pages.MEMO_SECONDS
    return web.json_response({"invalidated": 1 if found else 0, "project": name})


async def metrics(request: web.Request) -> web.Response:
    settings = request.app[settings_key]
    live = {
        "cacheproxy_downloads_in_flight": float(len(request.app[downloads_key])),
        "cacheproxy_cache_max_size_bytes": float(settings.max_size or 0),
    }
    body = await asyncio.to_thread(render_prometheus, request.app[metrics_key], live)
    return web.Response(body=body, headers={"Content-Type": PROMETHEUS_CONTENT_TYPE})


async def home(request: web.Request) -> web.Response:
    """The status page for people (status_page.py): server-rendered, no external assets."""
    body = render_status_page(await asyncio.to_thread(_stats, request))
    return web.Response(body=body, content_type="text/html", charset="utf-8")


def setup_routes(app: web.Application) -> None:
    app.router.add_get("/", home)
    app.router.add_get("/-/health", health)
    app.router.add_get("/-/ready", ready)
    app.router.add_get("/-/stats", stats)
    app.router.add_get("/-/metrics", metrics)
    app.router.add_post("/-/admin/invalidate", admin_invalidate)
    app.router.add_post("/-/admin/invalidate/{project}", admin_invalidate)
    app.router.add_get("/simple/", simple_index)
    app.router.add_get("/simple/{project}", project_redirect)
    app.router.add_get("/simple/{project}/", project_page)
    app.router.add_get(PREFIX + "{tail:.+}", package_file)
