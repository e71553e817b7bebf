"""The shared counters behind the figures: a small diskcache store in the cache directory.

``figures/metrics.py`` counts in memory and moves its deltas here every couple of seconds;
diskcache's ``incr`` is atomic across processes, so workers' counts add up. The store also
defines :class:`Tally`, what its own upkeep (eviction, the start-up check) reports to, so
that it needs nothing from the figures package above it.

A damaged store is moved aside and started empty (``local.open_moving_damage_aside``): the
counters are figures, not data, and must never stop the proxy from starting.
"""

import logging
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Protocol

import diskcache

from cacheproxy.store.local import open_diskcache, open_moving_damage_aside

Key = tuple[str, ...]
_ERRORS_KEPT = 20


def stats_dir(cache_dir: Path) -> Path:
    """Where the counters of the cache at ``cache_dir`` live."""
    return cache_dir / "stats"


class Tally(Protocol):
    """What store upkeep reports to (figures.metrics.Metrics is one)."""

    def add(self, *key: str, value: float = 1) -> None: ...

    def current(self, series: str) -> float: ...

    def set_total(self, series: str, value: float) -> None: ...


def _open(directory: Path) -> diskcache.Cache:
    return open_diskcache(directory, "errors", size_limit=2**40, eviction_policy="none")


class CounterStore:
    """Counters keyed by ``(series, *labels)`` plus the last few error messages."""

    def __init__(self, directory: Path) -> None:
        self._cache = open_moving_damage_aside(
            directory, _open, "statistics store", "counts start again", logging.WARNING
        )

    def add(self, deltas: Mapping[Key, float], errors: list[tuple[float, str]]) -> None:
        """Add ``deltas`` and append ``errors`` in one transaction."""
        with self._cache.transact():
            for key, value in list(deltas.items()):
                # incr adds in Python (read, add, write in its transaction), so float
                # deltas (seconds) work; the stubs say int.
                self._cache.incr(("c", *key), value, default=0)  # type: ignore[arg-type]
            if errors:
                kept = list(self._cache.get("errors", []))
                self._cache.set("errors", (kept + errors)[-_ERRORS_KEPT:])

    def drop_history_before(self, oldest: float) -> None:
        for key in list(self._cache.iterkeys()):
            if isinstance(key, tuple) and key[:2] == ("c", "history") and float(key[2]) < oldest:
                self._cache.delete(key)

    def counters(self) -> Iterator[tuple[Key, float]]:
        """Every counter, as ((series, *labels), value)."""
        for key in list(self._cache.iterkeys()):
            if isinstance(key, tuple) and key and key[0] == "c":
                value = self._cache.get(key)
                if isinstance(value, int | float):
                    yield key[1:], value

    def errors(self) -> list[tuple[float, str]]:
        return list(self._cache.get("errors", []))

    def get(self, series: str) -> float:
        value = self._cache.get(("c", series), 0)
        return value if isinstance(value, int | float) else 0

    def set(self, series: str, value: float) -> None:
        self._cache.set(("c", series), value)

    def close(self) -> None:
        self._cache.close()
