"""Failed logins by client address, shared by every process serving one cache directory.

``serve --workers N`` runs N processes behind one port; a limit each counted alone would
give a guesser N times the attempts. The times of each address's last failures live in a
small diskcache store (``logins/`` in the cache directory); a failure updates them in one
transaction (diskcache's ``transact``: SQLite ``BEGIN IMMEDIATE``, WAL), so the failures of
two workers at the same instant both count. Entries expire with their window, and the
store is bounded, so a flood of addresses cannot grow it without end. Times are wall-clock
seconds: the processes share them, and a restart does not forget a block.

A damaged store is moved aside and started empty (local.open_moving_damage_aside): all it
loses is the failures of the last window.
"""

import logging
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import diskcache

from cacheproxy.store.local import open_diskcache, open_moving_damage_aside

logger = logging.getLogger(__name__)

# Far above what a window of failures from many addresses takes (a few dozen bytes each);
# past it diskcache drops the oldest entries (a guesser's oldest failures, at worst).
_SIZE_LIMIT = 64 * 2**20


def logins_dir(cache_dir: Path) -> Path:
    """Where the failed logins of the cache at ``cache_dir`` are kept."""
    return cache_dir / "logins"


def seconds_blocked(times: Sequence[float], now: float, limit: int, window: float) -> float:
    """Seconds until an address whose failures happened at ``times`` (oldest first) may try
    again: 0 unless ``limit`` of them fall within the last ``window`` seconds."""
    recent = [t for t in times if now - t < window]
    if len(recent) < limit:
        return 0.0
    return window - (now - recent[-limit])


def _open(directory: Path) -> diskcache.Cache:
    return open_diskcache(
        directory, "", size_limit=_SIZE_LIMIT, eviction_policy="least-recently-stored"
    )


class SharedFailures:
    """The last ``limit`` failure times of each address, within ``window`` seconds."""

    def __init__(
        self,
        directory: Path,
        limit: int,
        window: float,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._limit = limit
        self._window = window
        self._clock = clock
        self._cache = open_moving_damage_aside(
            directory, _open, "failed-login store", "recent failures are forgotten"
        )

    def _times(self, address: str) -> tuple[float, ...]:
        times = self._cache.get(address, ())
        return times if isinstance(times, tuple) else ()

    def blocked_for(self, address: str) -> float:
        """Seconds until ``address`` may try again (0: it may now). One indexed read."""
        return seconds_blocked(self._times(address), self._clock(), self._limit, self._window)

    def add(self, address: str) -> None:
        """Count one failure of ``address`` (a write: call it in a thread)."""
        with self._cache.transact():
            now = self._clock()
            times = (*(t for t in self._times(address) if now - t < self._window), now)
            self._cache.set(address, times[-self._limit :], expire=self._window)

    def close(self) -> None:
        self._cache.close()
