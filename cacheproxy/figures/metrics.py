"""Counters that survive restarts and add up across worker processes.

Each process counts in memory (a dict add on the hot path, nothing more) and flushes its
deltas every couple of seconds into a small diskcache store in the cache directory
(``stats/``; diskcache's ``incr`` is atomic across processes). Everything that reads
figures (``/-/metrics``, ``/-/stats``, the status page, ``cacheproxy stats``) reads that
store after flushing its own deltas, so any worker answers with the totals of all of them.
Prometheus counters may therefore start above zero after a restart; that is allowed.

Series (label values are small fixed sets, never user input):

* ``requests``: (route, status class, cache outcome)
* ``bytes``: (source,) bytes sent to clients from the cache or relayed from upstream
* ``upstream``: (kind, outcome) requests to upstream; ``upstream_seconds``: latency
  histogram to the response headers, per kind
* ``upstream_bytes`` / ``upstream_download_seconds``: file bytes fetched and time taken
* ``tier_bytes``: (tier,) file bytes by where they came from: ``local`` (hits sent to
  clients from this replica's disk), ``store`` (copied from the store replicas share,
  store/tiered.py, and sent on as they arrive), ``upstream`` (downloaded from the index)
* ``coalesced`` (requests that joined a running download), ``stale`` (stale pages
  served), ``evictions`` (files removed to respect the size limit)
* ``history``: hits/misses/stale per 5-minute bucket, for the status page chart
* ``project``: hits and bytes per project, for "top projects"
"""

import asyncio
import contextlib
import logging
import threading
import time
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from cacheproxy.store.counters import CounterStore, Key, stats_dir

logger = logging.getLogger(__name__)

# Upper bounds (seconds) of the upstream latency histogram buckets.
LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
HISTORY_BUCKET = 300  # seconds: 5-minute buckets
HISTORY_KEEP = 6 * 3600  # seconds of history kept
FLUSH_INTERVAL = 2.0
_ERRORS_KEPT = 20  # recent error messages kept in memory between flushes

# (route, status // 100, cache outcome, project, history bucket) of one kind of response.
_ResponseKey = tuple[str, int, str, str | None, int]
_OUTCOMES = ("HIT", "MISS", "STALE")


class Metrics:
    """In-memory deltas plus the shared store. One per process (per app in tests)."""

    def __init__(self, stats_dir: Path, clock: Any = time.time) -> None:
        self._store = CounterStore(stats_dir)
        self._clock = clock
        self._lock = threading.Lock()  # flushes run in a worker thread
        # One flush at a time, start to end: a reader's flush (stats, the status page)
        # must not return while the periodic one has taken the deltas but not yet
        # written them, or the reader sees some of them missing.
        self._flushing = threading.Lock()
        self._deltas: defaultdict[Key, float] = defaultdict(float)
        self._responses: defaultdict[_ResponseKey, int] = defaultdict(int)
        self._response_bytes: defaultdict[_ResponseKey, int] = defaultdict(int)
        self._errors: list[tuple[float, str]] = []
        self.started = clock()

    @classmethod
    def for_cache(cls, cache_dir: Path) -> "Metrics":
        """The counters of the cache at ``cache_dir`` (where they live is the store's)."""
        return cls(stats_dir(cache_dir))

    # -- counting (hot path: dict updates only) --------------------------------------------

    def add(self, *key: str, value: float = 1) -> None:
        self._deltas[key] += value

    def request(self, route: str, status: int, cache: str, sent: int, project: str | None) -> None:
        # One increment per response (two with bytes); expanded into the series at flush.
        bucket = int(self._clock() // HISTORY_BUCKET * HISTORY_BUCKET)
        key = (route, status // 100, cache, project, bucket)
        self._responses[key] += 1
        if sent:
            self._response_bytes[key] += sent

    def _expand(
        self,
        deltas: defaultdict[Key, float],
        responses: list[tuple[_ResponseKey, int]],
        sent: dict[_ResponseKey, int],
    ) -> None:
        for key, count in responses:
            route, status_class, cache, project, bucket = key
            nbytes = sent.get(key, 0)
            deltas[("requests", route, f"{status_class}xx", cache)] += count
            if nbytes:
                source = "cache" if cache in ("HIT", "STALE") else "upstream"
                deltas[("bytes", source)] += nbytes
            # Hit ratio and history count answers only: an error that says "MISS" missed
            # nothing.
            served = status_class < 4
            if served and cache in _OUTCOMES and route in ("page", "file", "metadata"):
                deltas[("history", str(bucket), cache.lower())] += count
                if project is not None and cache == "HIT":
                    deltas[("project", project, "hits")] += count
                    deltas[("project", project, "bytes")] += nbytes

    def upstream(self, kind: str, outcome: str, seconds: float) -> None:
        self.add("upstream", kind, outcome)
        for bound in LATENCY_BUCKETS:
            if seconds <= bound:
                self.add("upstream_seconds", kind, str(bound))
                break
        else:
            self.add("upstream_seconds", kind, "+Inf")
        self.add("upstream_seconds_sum", kind, value=seconds)

    def error(self, message: str) -> None:
        with self._lock:
            self._errors.append((self._clock(), message[:300]))
            del self._errors[:-_ERRORS_KEPT]

    # -- the shared store ------------------------------------------------------------------

    def flush(self) -> None:
        """Move this process's deltas into the shared store (synchronous; thread-safe)."""
        with self._flushing:
            self._flush()

    def _flush(self) -> None:
        with self._lock:
            deltas, self._deltas = self._deltas, defaultdict(float)
            responses, self._responses = self._responses, defaultdict(int)
            sent, self._response_bytes = self._response_bytes, defaultdict(int)
            errors, self._errors = self._errors, []
        # The event loop adds without the lock (it must stay cheap): copy each swapped-out
        # dict in one C-level step rather than iterate it while a late add could land.
        self._expand(deltas, list(responses.items()), dict(sent))
        if not deltas and not errors:
            return
        self._store.add(deltas, errors)
        self._store.drop_history_before(self._clock() - HISTORY_KEEP)

    def counters(self) -> Iterator[tuple[Key, float]]:
        """Every shared counter, as ((series, *labels), value)."""
        return self._store.counters()

    def recent_errors(self) -> list[tuple[float, str]]:
        return self._store.errors()

    def current(self, series: str) -> float:
        """A shared counter's total including this process's unflushed delta (one read)."""
        with self._flushing, self._lock:
            local = self._deltas.get((series,), 0.0)
            value = self._store.get(series)
        return value + local

    def set_total(self, series: str, value: float) -> None:
        """Set a shared counter outright (the cache's size after a scan of the disk)."""
        with self._flushing:
            with self._lock:
                self._deltas.pop((series,), None)
            self._store.set(series, value)

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.flush()
        self._store.close()


async def flush_periodically(metrics: Metrics) -> None:
    """Run until cancelled; the final flush happens in ``Metrics.close``."""
    while True:
        await asyncio.sleep(FLUSH_INTERVAL)
        try:
            await asyncio.to_thread(metrics.flush)
        except Exception:  # a full disk must not stop serving; the next flush retries
            logger.warning("could not flush metrics", exc_info=True)
