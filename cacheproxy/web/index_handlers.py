"""One index alone: ``/index/<name>/simple/`` and ``/index/<name>/packages/``.

``/simple/`` is the routed view (each project from the index its route names, handlers.py);
these URLs show one configured index by itself, for a client that must see exactly that
index. A page's bytes are the same in both views (its file links are relative, and say
which index listed the file: ``layout.index_rest``), so a file resolves to the same
verified bytes whichever view linked it. Names of indexes come from the configuration.
"""

import logging

from aiohttp import web
from aiohttp.typedefs import Handler

from cacheproxy.proxy.pages import ROOT_KEY
from cacheproxy.proxy.routing import Index
from cacheproxy.web.file_handlers import package_file
from cacheproxy.web.handlers import serve_page
from cacheproxy.web.index_counts import count_index
from cacheproxy.web.keys import proxy_key
from cacheproxy.web.names import add_slash, page_name
from cacheproxy.web.responses import text_error

logger = logging.getLogger(__name__)


def _index(request: web.Request) -> Index | None:
    return request.app[proxy_key].indexes.get(request.match_info["index"])


def _no_index(request: web.Request) -> web.Response:
    # The name is the client's: shown cut short, and never counted as a label.
    return text_error(404, f"no index named {request.match_info['index'][:40]!r} is configured")


async def index_list(request: web.Request) -> web.StreamResponse:
    index = _index(request)
    if index is None:
        return _no_index(request)
    pages = index.pages
    response = await serve_page(
        request,
        pages.key(ROOT_KEY),
        lambda client_revalidate: pages.project_list(client_revalidate=client_revalidate),
        lambda: text_error(404, f"index {index.name} has no project list"),
        pages,
    )
    count_index(request, index.name, "list", response)
    return response


async def index_project_redirect(request: web.Request) -> web.StreamResponse:
    """``/index/<name>/simple/<project>`` (no slash) → the normalised page (PEP 503)."""
    return add_slash(request)


async def index_project(request: web.Request) -> web.StreamResponse:
    index = _index(request)
    if index is None:
        return _no_index(request)
    name = page_name(request)
    if isinstance(name, web.Response):
        return name
    pages = index.pages
    response = await serve_page(
        request,
        pages.key(name),
        lambda client_revalidate: pages.project(name, client_revalidate=client_revalidate),
        lambda: text_error(
            404, f"no such project: {name} on index {index.name}", {"X-Cache": "HIT"}
        ),
        pages,
    )
    count_index(request, index.name, "page", response)
    return response


async def index_file(request: web.Request) -> web.StreamResponse:
    """The same file as ``/packages/<path>``: the path names the index that listed it."""
    if _index(request) is None:
        return _no_index(request)
    return await package_file(request)


# The views under /index/NAME/simple/, shared with the hosted indexes: registered by
# hosted_handlers.setup_hosted_routes, which sends here a NAME that is not hosted.
INDEX_VIEWS: dict[str, Handler] = {
    "/index/{index}/simple/": index_list,
    "/index/{index}/simple/{project}": index_project_redirect,
    "/index/{index}/simple/{project}/": index_project,
}


def setup_index_routes(app: web.Application) -> None:
    """The routes only upstream indexes have (the shared ones: INDEX_VIEWS)."""
    app.router.add_get("/index/{index}/packages/{tail:.+}", index_file)
