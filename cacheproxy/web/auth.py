"""HTTP Basic authentication for uploads and, with ``--auth-reads``, for reads.

A 401 carries ``WWW-Authenticate: Basic realm="cacheproxy"`` (RFC 7617), which is what
makes pip, uv and twine retry with credentials from the index URL, netrc or keyring.
A valid user without the right gets a 403. Who is valid is proxy/users.py's business.
"""

import base64
import binascii
import logging

from aiohttp import web
from aiohttp.typedefs import Handler

from cacheproxy.proxy.users import Users
from cacheproxy.web.keys import proxy_key
from cacheproxy.web.responses import text_error

logger = logging.getLogger(__name__)

REALM = 'Basic realm="cacheproxy"'
USER_KEY = web.RequestKey("user", str)  # the authenticated user name
# Never behind a user: liveness probes carry no credentials. The admin routes have their
# own bearer token (handlers.admin_invalidate).
_OPEN_PATHS = ("/-/health",)
_OWN_AUTH_PREFIX = "/-/admin/"


def basic_credentials(header: str | None) -> tuple[str, str] | None:
    """``(user, password)`` from an ``Authorization: Basic`` header, None if absent or
    malformed (RFC 7617: base64 of ``user:password``, UTF-8)."""
    if not header:
        return None
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return None
    user, sep, password = decoded.partition(":")
    return (user, password) if sep else None


def unauthorized(message: str) -> web.Response:
    return text_error(401, message, {"WWW-Authenticate": REALM})


def client_address(request: web.Request) -> str:
    return request.remote or "unknown"


async def authenticate(request: web.Request, users: Users) -> str | web.Response:
    """The user the request's credentials name, or the response refusing it (401, 429)."""
    if (cached := request.get(USER_KEY)) is not None:
        return str(cached)
    address = client_address(request)
    credentials = basic_credentials(request.headers.get("Authorization"))
    if credentials is None:
        return unauthorized("authentication required")
    wait = users.blocked_for(address)
    if wait > 0:
        return text_error(
            429,
            "too many failed logins from this address; try again later",
            {"Retry-After": str(int(wait) + 1)},
        )
    user, password = credentials
    if not await users.verify(user, password, address):
        return unauthorized("wrong user name or password")
    request[USER_KEY] = user
    return user


@web.middleware
async def auth_reads_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """``--auth-reads``: every request needs a user, except liveness and the admin routes.

    Installed only with ``--auth-reads``, so an open index pays nothing for it.
    """
    path = request.path
    if path in _OPEN_PATHS or path.startswith(_OWN_AUTH_PREFIX):
        return await handler(request)
    users = request.app[proxy_key].users
    if users is None:  # settings refuse --auth-reads without --users; never open by mistake
        return text_error(403, "reads need a user but no users file is loaded")
    found = await authenticate(request, users)
    if isinstance(found, web.Response):
        return found
    return await handler(request)
