"""Project names in request paths: which spellings can be a project, and the PEP 503
redirect of every other spelling to the normalised one. Every page route uses these, so a
name is checked the same way before it reaches a store or an upstream."""

import functools
import re
from urllib.parse import quote

from aiohttp import web
from packaging.utils import NormalizedName, canonicalize_name

from cacheproxy.web.responses import text_error

# PEP 508 names; anything else cannot be a project (and must not reach upstream).
NAME_RE = re.compile(r"^([A-Z0-9]|[A-Z0-9][A-Z0-9._-]*[A-Z0-9])$", re.IGNORECASE)


@functools.lru_cache(maxsize=4096)
def project_name(raw: str) -> NormalizedName | None:
    """The normalised name (PEP 503), or None if ``raw`` cannot be a project; once per
    distinct spelling, since every page request needs it."""
    return canonicalize_name(raw) if NAME_RE.match(raw) else None


def bad_name(raw: str) -> web.Response:
    return text_error(400, f"not a valid project name: {raw[:100]!r}")


def redirect(request: web.Request, location: str) -> web.Response:
    """A 301 to ``location`` (relative, so a proxy behind a path prefix or any Host keeps
    working), with the request's query.

    The query as the client sent it, still percent-encoded: the decoded one can hold CR/LF,
    which aiohttp refuses in a header (no answer, a traceback). quote() keeps the escapes
    ("%" is safe) and encodes anything else not allowed in a URI (RFC 3986 3.4).
    """
    if query := request.rel_url.raw_query_string:
        location += "?" + quote(query, safe="!$&'()*+,;=:@/?%")
    return web.Response(status=301, headers={"Location": location})


def page_name(request: web.Request) -> NormalizedName | web.Response:
    """The normalised project of a ``…/<project>/`` page route, or the answer instead: a
    400 for what cannot be a name, a 301 to the normalised spelling (PEP 503: one URL, and
    one cache entry, per project)."""
    raw = request.match_info["project"]
    name = project_name(raw)
    if name is None:
        return bad_name(raw)
    if name != raw:
        return redirect(request, f"../{name}/")
    return name


def add_slash(request: web.Request) -> web.Response:
    """``…/<project>`` (no slash) → ``…/<normalised>/`` (PEP 503)."""
    raw = request.match_info["project"]
    name = project_name(raw)
    return bad_name(raw) if name is None else redirect(request, f"{name}/")
