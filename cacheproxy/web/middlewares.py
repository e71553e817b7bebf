"""The middleware: request metrics, and the last-resort error handler (a bug becomes a
logged traceback and a one-line 500, never a traceback to the client; running out of file
descriptors is a logged line and a 503)."""

import logging

from aiohttp import web
from aiohttp.typedefs import Handler

from cacheproxy.simple.layout import METADATA_SUFFIX, PREFIX, project_of
from cacheproxy.web.connections import is_out_of_descriptors
from cacheproxy.web.keys import metrics_key
from cacheproxy.web.responses import text_error

logger = logging.getLogger(__name__)


def _contain(request: web.Request, e: Exception) -> web.StreamResponse:
    """The last-resort answer to an exception a handler let out."""
    if isinstance(e, web.HTTPException):
        if e.status >= 400 and not e.text:
            return text_error(e.status, e.reason)
        raise e
    if isinstance(e, ConnectionError):
        raise e
    if is_out_of_descriptors(e):  # not a bug: a condition, one line (web/connections.py)
        logger.warning("out of file descriptors serving %s %s: %s", request.method, request.path, e)
        return text_error(503, "proxy out of file descriptors; retry", {"Retry-After": "1"})
    logger.exception("unhandled error serving %s %s", request.method, request.path)
    return text_error(500, "internal error (logged by the proxy)")


def _route(path: str) -> str:
    if path.startswith(PREFIX):
        return "metadata" if path.endswith(METADATA_SUFFIX) else "file"
    if path == "/simple/":
        return "list"
    if path.startswith("/simple/"):
        return "page"
    if path.startswith("/index/"):  # one index's own views: hosted or upstream
        return "index"
    if path.startswith("/-/"):
        return "ops"
    return "other"


@web.middleware
async def serve_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Count every response by route, status and cache outcome, and the bytes it carried;
    turn a bug into a logged traceback and a one-line 500, never a traceback to the client.

    One middleware, not two: each layer costs every request a coroutine and a wrapper,
    which shows in the 304 profile. Only dict updates here (see metrics.py).
    """
    try:
        response = await handler(request)
    except Exception as e:
        try:
            response = _contain(request, e)
        except web.HTTPException as http:  # 404 for unknown routes, 405, ...: counted
            _count(request, http.status, None)
            raise
    _count(request, response.status, response)
    return response


def _count(request: web.Request, status: int, response: web.StreamResponse | None) -> None:
    path = request.path
    route = _route(path)
    cache = response.headers.get("X-Cache", "-") if response is not None else "-"
    sent = 0
    if response is not None and request.method != "HEAD" and status in (200, 206):
        sent = response.content_length or 0
    project = None
    if route == "page":
        project = path[len("/simple/") :].strip("/") or None
    elif route in ("file", "metadata"):
        project = project_of(path.rsplit("/", 1)[-1].removesuffix(METADATA_SUFFIX))
    request.app[metrics_key].request(route, status, cache, sent, project)
