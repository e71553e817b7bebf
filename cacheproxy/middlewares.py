"""The last-resort error middleware: a bug becomes a logged traceback and a one-line 500."""

import logging

from aiohttp import web
from aiohttp.typedefs import Handler

from cacheproxy.responses import text_error

logger = logging.getLogger(__name__)


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except web.HTTPException as e:
        if e.status >= 400 and not e.text:
            return text_error(e.status, e.reason)
        raise
    except (ConnectionResetError, ConnectionError):
        raise
    except Exception:
        logger.exception("unhandled error serving %s %s", request.method, request.path)
        return text_error(500, "internal error (logged by the proxy)")
