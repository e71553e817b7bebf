"""Figures for people and machines: the /-/stats JSON, the status page's data, and the
Prometheus exposition of /-/metrics (official client library, our own registry per app:
no globals), all read from the shared counters of :mod:`cacheproxy.figures.metrics`."""

import time
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from cacheproxy import __version__
from cacheproxy.figures.index_stats import index_families, index_stats
from cacheproxy.figures.metrics import HISTORY_BUCKET, HISTORY_KEEP, LATENCY_BUCKETS, Metrics
from cacheproxy.store.counters import Key

PROMETHEUS_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def _sum(counters: Iterable[tuple[Key, float]], series: str) -> dict[Key, float]:
    out: dict[Key, float] = defaultdict(float)
    for key, value in counters:
        if key[0] == series:
            out[key[1:]] += value
    return out


class Snapshot:
    """All shared counters, read once."""

    def __init__(self, metrics: Metrics) -> None:
        self.counters = list(metrics.counters())

    def series(self, name: str) -> dict[Key, float]:
        return _sum(self.counters, name)

    def total(self, name: str) -> float:
        return sum(self.series(name).values())


def collect_stats(
    metrics: Metrics,
    *,
    upstream: str,
    cache_dir: str,
    workers: int,
    in_flight: int,
    max_size: int | None,
    index_url: str | None = None,
    gate: dict[str, Any] | None = None,
    offline: bool = False,
    indexes: Sequence[Mapping[str, Any]] = (),
) -> dict[str, Any]:
    """The /-/stats document (the status page renders the same dict). Synchronous: it
    flushes this process's deltas and reads the store, so run it in a thread."""
    metrics.flush()
    snap = Snapshot(metrics)
    requests = snap.series("requests")
    by_cache: dict[str, float] = defaultdict(float)
    errors = 0.0
    for (route, status, cache), n in requests.items():
        if route in ("page", "file", "metadata") and status in ("2xx", "3xx"):
            by_cache[cache] += n
        if status == "5xx":
            errors += n
    hits, misses, stale = by_cache["HIT"], by_cache["MISS"], by_cache["STALE"]
    served = hits + misses + stale
    sent = snap.series("bytes")
    from_cache = sent.get(("cache",), 0.0)
    upstream_bytes = snap.total("upstream_bytes")
    upstream_seconds = snap.total("upstream_download_seconds")
    latency_sum = snap.total("upstream_seconds_sum")
    latency_count = snap.total("upstream")
    # Estimate: cached bytes at the upstream speed seen on misses, plus one upstream round
    # trip (mean latency to headers) per hit.
    saved = 0.0
    if upstream_bytes and upstream_seconds:
        saved += from_cache / (upstream_bytes / upstream_seconds)
    if latency_count:
        saved += hits * latency_sum / latency_count
    projects: dict[str, dict[str, float]] = defaultdict(lambda: {"hits": 0.0, "bytes": 0.0})
    for (name, what), n in snap.series("project").items():
        projects[name][what] += n
    top = sorted(projects.items(), key=lambda kv: (-kv[1]["hits"], kv[0]))[:10]
    return {
        "version": __version__,
        "uptime_seconds": round(time.time() - metrics.started, 1),
        "upstream": upstream,
        # True: --offline, the upstream above is configured but never contacted.
        "offline": offline,
        "cache_dir": cache_dir,
        "workers": workers,
        "index_url": index_url,
        "requests": {
            "total": int(sum(requests.values())),
            "hits": int(hits),
            "misses": int(misses),
            "stale": int(stale),
            "errors": int(errors),
        },
        "hit_ratio": round(hits / served, 4) if served else None,
        "bytes": {"from_cache": int(from_cache), "from_upstream": int(sent.get(("upstream",), 0))},
        # File bytes by tier: local disk, the store replicas share, upstream (metrics.py).
        "tiers": {tier: int(n) for (tier,), n in sorted(snap.series("tier_bytes").items())},
        "time_saved_seconds": round(saved, 1),
        "cache": {
            "size_bytes": int(snap.total("cache_bytes")),
            "files": int(snap.total("cache_files")),
            "pages": int(snap.total("cache_pages")),
            "max_size_bytes": max_size,
            "evictions": int(snap.total("evictions")),
        },
        "downloads": {
            "in_flight": in_flight,
            "coalesced_waiters": int(snap.total("coalesced")),
            # Replicas: files put in the shared store after an outage (store/tiered.py).
            "backfilled": int(snap.total("backfilled")),
        },
        "top_projects": [
            {"name": name, "hits": int(v["hits"]), "bytes": int(v["bytes"])} for name, v in top
        ],
        "recent_errors": [{"time": t, "message": m} for t, m in reversed(metrics.recent_errors())],
        "history": _history(snap),
        "gate": gate,  # the release-age gate and what it holds back (None: off)
        "indexes": index_stats(snap, indexes),
    }


def _history(snap: Snapshot) -> list[dict[str, Any]]:
    buckets: dict[int, dict[str, int]] = {}
    for (bucket, kind), n in snap.series("history").items():
        buckets.setdefault(int(float(bucket)), {"hit": 0, "miss": 0, "stale": 0})[kind] = int(n)
    if not buckets:
        return []
    now = int(time.time() // HISTORY_BUCKET * HISTORY_BUCKET)
    start = max(min(buckets), now - HISTORY_KEEP + HISTORY_BUCKET)
    out = []
    for t in range(start, now + 1, HISTORY_BUCKET):  # continuous: empty buckets are zeros
        b = buckets.get(t, {"hit": 0, "miss": 0, "stale": 0})
        out.append({"time": float(t), "hits": b["hit"], "misses": b["miss"], "stale": b["stale"]})
    return out


class _SharedCollector(Collector):
    def __init__(self, metrics: Metrics, live: dict[str, float]) -> None:
        self._metrics = metrics
        self._live = live

    def collect(self) -> Iterable[Metric]:
        snap = Snapshot(self._metrics)
        req = CounterMetricFamily(
            "cacheproxy_requests",
            "Responses by route, status class and cache outcome (X-Cache).",
            labels=["route", "status", "cache"],
        )
        for (route, status, cache), n in sorted(snap.series("requests").items()):
            req.add_metric([route, status, cache], n)
        yield req
        sent = CounterMetricFamily(
            "cacheproxy_response_bytes",
            "Bytes sent to clients, by where they came from (cache or upstream).",
            labels=["source"],
        )
        for (source,), n in sorted(snap.series("bytes").items()):
            sent.add_metric([source], n)
        yield sent
        up = CounterMetricFamily(
            "cacheproxy_upstream_requests",
            "Requests to upstream by kind (page, file) and outcome.",
            labels=["kind", "outcome"],
        )
        for (kind, outcome), n in sorted(snap.series("upstream").items()):
            up.add_metric([kind, outcome], n)
        yield up
        yield from self._latency(snap)
        extracted = CounterMetricFamily(
            "cacheproxy_metadata_extracted",
            "PEP 658 metadata the proxy read from wheels whose index gives none, by where "
            "it read them: stored_wheel, ranges (of the upstream wheel), download.",
            labels=["source"],
        )
        for (source,), n in sorted(snap.series("metadata_extracted").items()):
            extracted.add_metric([source], n)
        yield extracted
        tiers = CounterMetricFamily(
            "cacheproxy_file_bytes",
            "File bytes by tier: local (sent from this replica's disk), store (copied from "
            "the object store replicas share), upstream (downloaded from the index).",
            labels=["tier"],
        )
        for (tier,), n in sorted(snap.series("tier_bytes").items()):
            tiers.add_metric([tier], n)
        yield tiers
        yield from index_families(snap)
        for name, series, doc in (
            ("cacheproxy_upstream_bytes", "upstream_bytes", "File bytes fetched from upstream."),
            (
                "cacheproxy_upstream_download_seconds",
                "upstream_download_seconds",
                "Time spent downloading files from upstream.",
            ),
            (
                "cacheproxy_coalesced_waiters",
                "coalesced",
                "Requests that joined a download already running (here or in another worker).",
            ),
            ("cacheproxy_evictions", "evictions", "Files removed to respect the size limit."),
            (
                "cacheproxy_metadata_prefetched",
                "metadata_prefetched",
                "PEP 658 metadata reads begun before a client asked: the newest release's "
                "wheels of a page just fetched from an index that gives no metadata.",
            ),
        ):
            family = CounterMetricFamily(name, doc)
            family.add_metric([], snap.total(series))
            yield family
        stale = CounterMetricFamily("cacheproxy_stale_served", "Stale index pages served.")
        stale.add_metric(
            [], sum(n for (_r, _s, c), n in snap.series("requests").items() if c == "STALE")
        )
        yield stale
        for name, series, doc in (
            ("cacheproxy_cache_size_bytes", "cache_bytes", "Bytes of files in the cache."),
            ("cacheproxy_cache_files", "cache_files", "Files in the cache."),
            ("cacheproxy_cache_pages", "cache_pages", "Index pages in the cache."),
        ):
            gauge = GaugeMetricFamily(name, doc)
            gauge.add_metric([], snap.total(series))
            yield gauge
        for name, doc in (
            ("cacheproxy_offline", "1 in offline mode: upstream is never contacted."),
            ("cacheproxy_downloads_in_flight", "Downloads running in this worker now."),
            ("cacheproxy_cache_max_size_bytes", "The size limit of stored files (absent: none)."),
        ):
            # A figure the caller left out does not exist here (no size limit): Prometheus
            # convention is an absent series, never a made-up 0.
            if name in self._live:
                gauge = GaugeMetricFamily(name, doc)
                gauge.add_metric([], self._live[name])
                yield gauge

    def _latency(self, snap: Snapshot) -> Iterable[Metric]:
        hist = HistogramMetricFamily(
            "cacheproxy_upstream_request_duration_seconds",
            "Upstream latency to the response headers, by kind.",
            labels=["kind"],
        )
        counts = snap.series("upstream_seconds")
        sums = snap.series("upstream_seconds_sum")
        for kind in sorted({k[0] for k in counts}):
            cumulative, buckets = 0.0, []
            for bound in [*(str(b) for b in LATENCY_BUCKETS), "+Inf"]:
                cumulative += counts.get((kind, bound), 0.0)
                buckets.append((bound, cumulative))
            hist.add_metric([kind], buckets, sums.get((kind,), 0.0))
        yield hist


def render_prometheus(metrics: Metrics, live: dict[str, float]) -> bytes:
    """The Prometheus text exposition (synchronous: run it in a thread)."""
    metrics.flush()
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_SharedCollector(metrics, live))
    return generate_latest(registry)
