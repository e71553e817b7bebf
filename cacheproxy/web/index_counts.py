"""Responses counted by the upstream index that served them (cacheproxy/indexes.py).

Only for the routes that name an index (pages and files); label values are index names
from the configuration, never from a request, so the series stay a small fixed set.
"""

from aiohttp import web

from cacheproxy.web.keys import metrics_key


def count_index(request: web.Request, index: str, route: str, response: web.StreamResponse) -> None:
    cache = response.headers.get("X-Cache", "-")
    status = f"{response.status // 100}xx"
    request.app[metrics_key].add("index_requests", index, route, status, cache)
