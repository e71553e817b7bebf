"""HTTP handlers: parse the request, call the services, send stored bytes.

Everything expensive happened at miss time; a hit here is a record read, a header check and
a sendfile. Domain errors become a status and a one-line text body (never a traceback).
"""

import asyncio
import functools
import hashlib
import hmac
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from cacheproxy.errors import HeldBack, IndexParseError, NotFound, OfflineMiss, UpstreamError
from cacheproxy.figures.stats import PROMETHEUS_CONTENT_TYPE, collect_stats, render_prometheus
from cacheproxy.figures.status_page import render_status_page
from cacheproxy.proxy.json_api import VERSION_RE, json_api_key, with_origin
from cacheproxy.proxy.pages import ROOT_KEY, PageChanged, PageResult, Pages
from cacheproxy.simple.layout import PREFIX
from cacheproxy.simple.negotiate import accepts_gzip
from cacheproxy.web.file_handlers import package_file
from cacheproxy.web.hosted_handlers import hosted_project_response, send_rendered
from cacheproxy.web.index_counts import count_index
from cacheproxy.web.keys import metrics_key, proxy_key, settings_key
from cacheproxy.web.names import add_slash, bad_name, page_name, project_name, redirect
from cacheproxy.web.responses import (
    SendfileResponse,
    etag_matches,
    representation,
    text_error,
    upstream_error,
)

logger = logging.getLogger(__name__)


def _wants_revalidation(request: web.Request) -> bool:
    """The client asked for a revalidated page; pages.py decides whether that counts."""
    cc = request.headers.get("Cache-Control", "").lower().replace(" ", "")
    return "no-cache" in cc or "max-age=0" in cc


def _index_headers(result: PageResult, etag: str, gz: bool) -> dict[str, str]:
    headers = {
        "ETag": etag,
        "Vary": "Accept, Accept-Encoding",  # PEP 691 negotiation; RFC 9110 §12.5.5
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


async def serve_page(
    request: web.Request,
    key: str,
    get: Callable[[bool], Awaitable[PageResult]],
    not_found: Callable[[], web.Response],
    pages: Pages | None = None,
) -> web.StreamResponse:
    """Get a page through the cache and send the representation the client asked for.

    A body can be replaced by a refresh (or found damaged) between reading the record and
    sending it; pages.py then forgets the page and we ask once more. ``pages``: the index's
    (routing.py); the default index's when None.
    """
    pages = pages or request.app[proxy_key].pages
    client_revalidate = _wants_revalidation(request)
    for _ in range(2):
        try:
            result = await get(client_revalidate)
        except NotFound:
            return not_found()
        except OfflineMiss as e:
            return _offline_miss(e)
        except (UpstreamError, IndexParseError) as e:
            return upstream_error(e)
        chosen = representation(request)
        if isinstance(chosen, web.Response):
            return chosen
        media, gz = chosen
        body = result.record.bodies[f"{media.kind}.gz" if gz else media.kind]
        headers = _index_headers(result, body.etag, gz)
        if etag_matches(request.headers.get("If-None-Match"), body.etag):
            return web.Response(status=304, headers=headers)
        headers["Content-Type"] = media.content_type
        try:
            ready = await pages.body(key, result, body)
        except PageChanged:
            continue
        if ready.file is None:
            return web.Response(body=ready.data, headers=headers)
        return SendfileResponse(ready.file, offset=0, count=ready.size, headers=headers)
    return text_error(503, "page changed while sending; retry")


def _offline_miss(e: OfflineMiss) -> web.Response:
    """A page offline mode does not have: a 404, which pip and uv take as "no such project"
    and stop at once; a 504 made uv retry for seconds and gave pip no reason to show. The
    body and X-Cache-Reason say why, for people and for logs."""
    reason = f"{e} (the proxy runs with --offline and asks upstream nothing)"
    return text_error(404, reason, {"X-Cache": "MISS", "X-Cache-Reason": reason[:200]})


async def simple_index(request: web.Request) -> web.StreamResponse:
    # The routed view's list: the default index's, less what routes send elsewhere.
    proxy = request.app[proxy_key]
    pages = proxy.indexes.routed_list
    if proxy.hosted.names and await proxy.hosted.has_projects():
        merged = await _list_with_hosted(request, pages)
        if merged is not None:
            return merged
    return await serve_page(
        request,
        pages.key(ROOT_KEY),
        lambda client_revalidate: pages.project_list(client_revalidate=client_revalidate),
        lambda: text_error(404, "upstream has no project list"),
        pages,
    )


async def _list_with_hosted(request: web.Request, pages: Pages) -> web.StreamResponse | None:
    """``/simple/`` with the hosted projects, which /simple/<project>/ serves too
    (project_page): upstream's stored list and the hosted names, merged by
    proxy/hosted.py. None: no hosted project after all (send the stored list)."""
    hosted = request.app[proxy_key].hosted
    key = pages.key(ROOT_KEY)
    for _ in range(2):
        read: Callable[[], Awaitable[bytes]] | None = None
        tag: str | None = None
        cache = "HOSTED"
        try:
            result = await pages.project_list(client_revalidate=_wants_revalidation(request))
        except NotFound:  # upstream has no list: the hosted projects alone
            result = None
        except OfflineMiss as e:
            return _offline_miss(e)
        except (UpstreamError, IndexParseError) as e:
            return upstream_error(e)
        if result is not None:
            body = result.record.bodies["json"]
            read = functools.partial(pages.body_bytes, key, result, body)
            tag, cache = body.etag, result.cache
        try:
            rendered = await hosted.root_list(tag, read)
        except PageChanged:
            continue
        except IndexParseError as e:
            return upstream_error(e)
        return None if rendered is None else send_rendered(request, rendered, cache)
    return text_error(503, "page changed while sending; retry")


async def project_redirect(request: web.Request) -> web.StreamResponse:
    """``/simple/<name>`` (no slash) → ``/simple/<normalised>/`` (PEP 503)."""
    return add_slash(request)


async def project_page(request: web.Request) -> web.StreamResponse:
    name = page_name(request)
    if isinstance(name, web.Response):
        return name
    proxy = request.app[proxy_key]
    # A hosted project shadows every upstream index's of that name, routed or not
    # (proxy/hosted.py); no await at all without --hosted.
    if proxy.hosted.names:
        hosted = await hosted_project_response(request, name)
        if hosted is not None:
            return hosted
    # The routed view: the project comes from the one index its route names (else the
    # default), never from another (cacheproxy/indexes.py).
    index = proxy.indexes.for_project(name)
    pages = index.pages
    missing = f"no such project: {name}" + ("" if index.default else f" on index {index.name}")
    response = await serve_page(
        request,
        pages.key(name),
        lambda client_revalidate: pages.project(name, client_revalidate=client_revalidate),
        lambda: text_error(404, missing, {"X-Cache": "HIT"}),
        pages,
    )
    count_index(request, index.name, "page", response)
    return response


async def json_api(request: web.Request) -> web.StreamResponse:
    """``/pypi/<project>/json`` and ``/pypi/<project>/<version>/json``: PyPI's JSON API
    through the cache (proxy/json_api.py), its file URLs on this proxy."""
    raw = request.match_info["project"]
    version = request.match_info.get("version")
    name = project_name(raw)
    if name is None:
        return bad_name(raw)
    if version is not None and not VERSION_RE.match(version):
        return text_error(400, f"not a valid version: {version[:100]!r}")
    if name != raw:  # one URL (and one cache entry) per project, as for pages
        where = f"../{name}/json" if version is None else f"../../{name}/{version}/json"
        return redirect(request, where)
    hosted = request.app[proxy_key].hosted
    if hosted.names and (index := await hosted.find(name)) is not None:
        # Shadowed like its page (proxy/hosted.py): upstream's JSON for this name is never
        # fetched, or a tool reading it would see the public project.
        return text_error(404, f"{name} is on hosted index {index}, served by /simple/ only")
    # From the index the project is routed to, as its pages (cacheproxy/indexes.py).
    pages = request.app[proxy_key].indexes.for_project(name).pages
    key = pages.key(json_api_key(name, version))
    for _ in range(2):
        try:
            result = await pages.json_api(
                name, version, client_revalidate=_wants_revalidation(request)
            )
        except NotFound as e:
            return text_error(404, f"{name}{'' if version is None else ' ' + version}: {e}")
        except HeldBack as e:  # as a held file's path is answered (web/file_handlers.py)
            return text_error(403, str(e))
        except OfflineMiss as e:
            return _offline_miss(e)
        except (UpstreamError, IndexParseError) as e:
            return upstream_error(e)
        body = result.record.bodies["json"]
        origin = str(request.url.origin())
        # The bytes depend on the origin the client used: so does the ETag.
        etag = '"' + hashlib.sha256(f"{body.etag}{origin}".encode()).hexdigest()[:32] + '"'
        headers = {
            "ETag": etag,
            "Vary": "Accept-Encoding",
            "Cache-Control": f"max-age={result.max_age}, public",
            "X-Cache": result.cache,
        }
        if result.record.serial:
            headers["X-PyPI-Last-Serial"] = result.record.serial
        if result.reason:
            headers["X-Cache-Reason"] = result.reason[:200]
        if etag_matches(request.headers.get("If-None-Match"), etag):
            return web.Response(status=304, headers=headers)
        try:
            data = await pages.body_bytes(key, result, body)
        except PageChanged:
            continue
        headers["Content-Type"] = "application/json"
        resp = web.Response(body=with_origin(data, origin), headers=headers)
        if accepts_gzip(request.headers.get("Accept-Encoding")):
            resp.enable_compression()
        return resp
    return text_error(503, "document changed while sending; retry")


async def health(request: web.Request) -> web.Response:
    """Liveness: no upstream, no disk work."""
    return web.Response(text="ok\n")


async def ready(request: web.Request) -> web.Response:
    """Readiness: the cache directory takes a write and the record store answers."""
    try:
        await asyncio.to_thread(request.app[proxy_key].check_ready)
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
        in_flight=len(request.app[proxy_key].downloads),
        max_size=settings.max_size,
        index_url=f"{request.url.origin()}/simple/",
        gate=request.app[proxy_key].gate_report(),
        offline=settings.offline,
        indexes=[
            {
                "name": i.name,
                "url": i.config.shown,
                "default": i.default,
                "routes": [
                    r.pattern for r in request.app[proxy_key].indexes.routes if r.index == i.name
                ],
            }
            for i in request.app[proxy_key].indexes.all
        ],
    )


async def _stats_with_hosted(request: web.Request) -> dict[str, Any]:
    found = await asyncio.to_thread(_stats, request)
    # Projects on a hosted index shadow upstream's of the same name (proxy/hosted.py).
    found["hosted"] = await request.app[proxy_key].hosted.shadowed()
    return found


async def stats(request: web.Request) -> web.Response:
    return web.json_response(await _stats_with_hosted(request))


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
    proxy = request.app[proxy_key]
    raw = request.match_info.get("project")
    if raw is None:
        return web.json_response({"invalidated": await proxy.invalidate(None)})
    name = project_name(raw)
    if name is None:
        return bad_name(raw)
    return web.json_response({"invalidated": await proxy.invalidate(name), "project": name})


async def metrics(request: web.Request) -> web.Response:
    settings = request.app[settings_key]
    live = {
        "cacheproxy_offline": 1.0 if settings.offline else 0.0,
        "cacheproxy_downloads_in_flight": float(len(request.app[proxy_key].downloads)),
    }
    if settings.max_size is not None:  # no limit: no series (a 0 would read as "0 bytes")
        live["cacheproxy_cache_max_size_bytes"] = float(settings.max_size)
    body = await asyncio.to_thread(render_prometheus, request.app[metrics_key], live)
    return web.Response(body=body, headers={"Content-Type": PROMETHEUS_CONTENT_TYPE})


async def home(request: web.Request) -> web.Response:
    """The status page for people (status_page.py): server-rendered, no external assets."""
    body = render_status_page(await _stats_with_hosted(request))
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
    app.router.add_get("/pypi/{project}/json", json_api)
    app.router.add_get("/pypi/{project}/{version}/json", json_api)
