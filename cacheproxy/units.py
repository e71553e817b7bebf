"""Sizes, durations and times as people write and read them: ``50GB``, ``10%``, ``30d``,
``1.2 MB``, ``2026-11-30T12:00:00Z``.

Pure, apart from the one question a percentage asks: how large is the file system that
holds the cache directory.
"""

import os
import re
from datetime import UTC, datetime
from pathlib import Path

from cacheproxy.errors import ConfigError

_UNITS = {
    "": 1,
    "b": 1,
    "k": 10**3,
    "kb": 10**3,
    "m": 10**6,
    "mb": 10**6,
    "g": 10**9,
    "gb": 10**9,
    "t": 10**12,
    "tb": 10**12,
    "kib": 2**10,
    "mib": 2**20,
    "gib": 2**30,
    "tib": 2**40,
}
_DURATION = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_size(text: str, cache_dir: Path) -> int:
    """``50GB``, ``500MiB``, ``1.5T`` or ``10%`` (of the file system holding ``cache_dir``).

    Raises:
        ConfigError: not a size.
    """
    raw = text.strip().lower().replace(" ", "")
    if raw.endswith("%"):
        try:
            share = float(raw[:-1])
        except ValueError:
            raise ConfigError(f"max-size must be a size like 50GB or 10%, not {text!r}") from None
        if not 0 < share <= 100:
            raise ConfigError(f"max-size percentage must be in (0, 100], not {text!r}")
        probe = cache_dir
        while not probe.exists() and probe != probe.parent:
            probe = probe.parent
        st = os.statvfs(probe)
        return int(st.f_blocks * st.f_frsize * share / 100)
    match = re.fullmatch(r"([0-9]*\.?[0-9]+)([a-z]*)", raw)
    if match is None or match.group(2) not in _UNITS:
        raise ConfigError(f"max-size must be a size like 50GB or 10%, not {text!r}")
    value = int(float(match.group(1)) * _UNITS[match.group(2)])
    if value <= 0:
        raise ConfigError(f"max-size must be positive, not {text!r}")
    return value


def parse_duration(text: str) -> float:
    """``30d``, ``12h``, ``90m``, ``2w`` or plain seconds.

    Raises:
        ConfigError: not a duration.
    """
    match = re.fullmatch(r"([0-9]*\.?[0-9]+)([smhdw]?)", text.strip().lower())
    if match is None:
        raise ConfigError(f"not a duration like 30d or 12h: {text!r}")
    return float(match.group(1)) * _DURATION.get(match.group(2) or "s", 1)


def format_bytes(value: float) -> str:
    """Decimal units, as pip, uv and rich print sizes: ``854 B``, ``12.3 kB``, ``1.2 GB``."""
    if value < 1000:
        return f"{int(value)} B"
    for unit in ("kB", "MB", "GB", "TB"):
        value /= 1000
        # 999.96 would print as "1000.0 kB": carry it into the next unit instead.
        if value < 999.95:
            return f"{value:.1f} {unit}"
    return f"{value / 1000:.1f} PB"


class BadTimestamp(ValueError):
    """Not an RFC 3339 timestamp."""


def parse_timestamp(text: str) -> float:
    """An RFC 3339 / ISO 8601 time (``2026-11-30T12:00:00Z``; a date alone is midnight UTC)
    as seconds since the epoch; a time without a zone is UTC, as PEP 700's ``upload-time``.

    Raises:
        BadTimestamp: not such a time.
    """
    raw = text.strip()
    if raw.endswith(("Z", "z")):
        raw = raw[:-1] + "+00:00"
    try:
        when = datetime.fromisoformat(raw)
    except ValueError:
        raise BadTimestamp(f"not an RFC 3339 time: {text!r}") from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return when.timestamp()


def format_timestamp(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
