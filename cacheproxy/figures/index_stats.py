"""Figures per upstream index (cacheproxy/indexes.py): which index served what.

Two series, counted under the index's configured name (never a name from a request, so the
label sets stay small and fixed): ``index_requests`` (index, route, status class, cache
outcome), counted by the web layer for pages and files, and ``index_upstream`` (index,
kind, outcome), counted by each index's upstream (proxy/routing.py).
"""

import html
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from prometheus_client.core import CounterMetricFamily, Metric

if TYPE_CHECKING:
    from cacheproxy.figures.stats import Snapshot


def index_stats(snap: "Snapshot", indexes: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """One entry per configured index (``indexes``: name, url shown, default, routes)
    with its responses and upstream requests."""
    requests: dict[str, dict[str, int]] = defaultdict(
        lambda: {"hits": 0, "misses": 0, "stale": 0, "errors": 0, "not_found": 0}
    )
    for (index, _route, status, cache), n in snap.series("index_requests").items():
        counts = requests[index]
        if status == "5xx":
            counts["errors"] += int(n)
        elif status == "4xx":
            counts["not_found"] += int(n)
        elif cache in ("HIT", "MISS", "STALE"):
            counts[{"HIT": "hits", "MISS": "misses", "STALE": "stale"}[cache]] += int(n)
    upstream: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for (index, kind, outcome), n in snap.series("index_upstream").items():
        upstream[index][f"{kind}_{outcome}"] += int(n)
    return [
        {**dict(i), "requests": requests[i["name"]], "upstream": dict(upstream[i["name"]])}
        for i in indexes
    ]


def index_families(snap: "Snapshot") -> Iterable[Metric]:
    req = CounterMetricFamily(
        "cacheproxy_index_requests",
        "Page and file responses by the upstream index that served them.",
        labels=["index", "route", "status", "cache"],
    )
    for (index, route, status, cache), n in sorted(snap.series("index_requests").items()):
        req.add_metric([index, route, status, cache], n)
    yield req
    up = CounterMetricFamily(
        "cacheproxy_index_upstream_requests",
        "Requests to each upstream index by kind (page, file) and outcome.",
        labels=["index", "kind", "outcome"],
    )
    for (index, kind, outcome), n in sorted(snap.series("index_upstream").items()):
        up.add_metric([index, kind, outcome], n)
    yield up


def _e(value: object) -> str:
    return html.escape("" if value is None else str(value), quote=True)


def indexes_section(indexes: Any) -> str:
    """The status page's "Indexes" table; empty with a single index (nothing to say)."""
    if not isinstance(indexes, list) or len(indexes) < 2:
        return ""
    rows = []
    for i in indexes:
        if not isinstance(i, Mapping):
            continue
        req = i.get("requests") if isinstance(i.get("requests"), Mapping) else {}
        assert isinstance(req, Mapping)
        routes = i.get("routes") if isinstance(i.get("routes"), list) else []
        assert isinstance(routes, list)
        shown = ", ".join(str(r) for r in routes) or (
            "every other project" if i.get("default") else "—"
        )
        rows.append(
            f'<tr><td class="name">{_e(i.get("name"))}</td>'
            f'<td><code class="wrap">{_e(i.get("url"))}</code></td>'
            f"<td>{_e(shown)}</td>"
            f'<td class="num">{_e(req.get("hits", 0))}</td>'
            f'<td class="num">{_e(req.get("misses", 0))}</td>'
            f'<td class="num">{_e(req.get("stale", 0))}</td>'
            f'<td class="num">{_e(req.get("errors", 0))}</td></tr>'
        )
    return (
        '<section><h2>Indexes</h2><div class="table"><table><thead><tr>'
        '<th>Index</th><th>URL</th><th>Projects</th><th class="num">Hits</th>'
        '<th class="num">Misses</th><th class="num">Stale</th><th class="num">Errors</th>'
        "</tr></thead><tbody>" + "".join(rows) + "</tbody></table></div></section>"
    )
