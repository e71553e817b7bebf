"""``cacheproxy prune``, ``verify`` and ``stats``: maintenance of a cache directory."""

import argparse
import os
import sys
import time
from typing import Any

from cacheproxy.cli import exitcodes
from cacheproxy.errors import ConfigError
from cacheproxy.figures.metrics import Metrics
from cacheproxy.figures.stats import collect_stats
from cacheproxy.settings import Settings, build_settings
from cacheproxy.store.evict import evict
from cacheproxy.store.local import Storage
from cacheproxy.store.verify import verify
from cacheproxy.units import format_bytes, parse_duration


def _cache_dir_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--cache-dir",
        help="the cache directory [CACHEPROXY_CACHE_DIR, default ~/.cache/cacheproxy]",
    )


def add_parsers(subparsers: "argparse._SubParsersAction[Any]") -> None:
    prune = subparsers.add_parser(
        "prune", help="remove least recently used files to fit a size, or files unused for long"
    )
    _cache_dir_arg(prune)
    prune.add_argument("--max-size", help="e.g. 50GB or 20%% [CACHEPROXY_MAX_SIZE]")
    prune.add_argument("--older-than", help="remove files unused for this long, e.g. 30d")
    prune.set_defaults(func=run_prune)
    ver = subparsers.add_parser("verify", help="re-hash stored files; remove any that differ")
    _cache_dir_arg(ver)
    ver.set_defaults(func=run_verify)
    st = subparsers.add_parser("stats", help="print the cache's figures")
    _cache_dir_arg(st)
    st.add_argument("--json", action="store_true", help="the /-/stats document instead")
    st.set_defaults(func=run_stats)


def _settings(args: argparse.Namespace) -> Settings:
    """The same :class:`Settings` ``serve`` builds, from these flags and CACHEPROXY_*."""
    flags = {"cache_dir": args.cache_dir, "max_size": getattr(args, "max_size", None)}
    return build_settings(flags, os.environ)


def _open(settings: Settings) -> Storage:
    if not settings.cache_dir.is_dir():
        raise ConfigError(f"no cache directory at {settings.cache_dir}")
    # clean=False: a proxy may be running on this directory right now.
    return Storage.open_sync(settings.cache_dir, clean=False)


def _fail(e: Exception) -> int:
    print(f"cacheproxy: error: {e}", file=sys.stderr)
    return exitcodes.USAGE


def run_prune(args: argparse.Namespace) -> int:
    try:
        settings = _settings(args)
        max_bytes = settings.max_size
        older = parse_duration(args.older_than) if args.older_than else None
        if max_bytes is None and older is None:
            raise ConfigError("prune needs --max-size or --older-than")
        storage = _open(settings)
    except ConfigError as e:
        return _fail(e)
    metrics = Metrics.for_cache(settings.cache_dir)
    try:
        report = evict(storage, metrics, max_bytes=max_bytes, older_than=older)
    finally:
        metrics.close()
        storage.close_sync()
    if report is None:
        print("prune: another process is evicting right now; try again in a moment")
        return exitcodes.FAILED
    print(f"prune: {report.line()}")
    return exitcodes.OK


def run_verify(args: argparse.Namespace) -> int:
    try:
        storage = _open(_settings(args))
    except ConfigError as e:
        return _fail(e)
    try:
        report = verify(storage)
    finally:
        storage.close_sync()
    for bad in report.bad:
        print(f"corrupt, removed: {bad}")
    print(f"verify: {report.line()}")
    return exitcodes.FAILED if report.bad else exitcodes.OK


def run_stats(args: argparse.Namespace) -> int:
    try:
        settings = _settings(args)
        storage = _open(settings)
    except ConfigError as e:
        return _fail(e)
    metrics = Metrics.for_cache(settings.cache_dir)
    try:
        data = collect_stats(
            metrics,
            upstream="-",
            cache_dir=str(storage.root),
            workers=0,
            in_flight=0,
            max_size=None,
        )
    finally:
        metrics.close()
        storage.close_sync()
    if args.json:
        import json

        print(json.dumps(data, indent=2))
        return exitcodes.OK
    req, cache, sent = data["requests"], data["cache"], data["bytes"]
    ratio = "-" if data["hit_ratio"] is None else f"{data['hit_ratio'] * 100:.1f}%"
    rows = [
        ("cache dir", data["cache_dir"]),
        ("files", f"{cache['files']} ({format_bytes(cache['size_bytes'])})"),
        ("pages", str(cache["pages"])),
        ("evictions", str(cache["evictions"])),
        (
            "requests",
            f"{req['total']} ({req['hits']} hits, {req['misses']} misses, "
            f"{req['stale']} stale, {req['errors']} errors)",
        ),
        ("hit ratio", ratio),
        ("sent from cache", format_bytes(sent["from_cache"])),
        ("sent from upstream", format_bytes(sent["from_upstream"])),
        ("time saved", f"{data['time_saved_seconds']:.0f} s (estimate)"),
    ]
    for p in data["top_projects"][:5]:
        rows.append(("top project", f"{p['name']}: {p['hits']} hits, {format_bytes(p['bytes'])}"))
    for err in data["recent_errors"][:3]:
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(err["time"]))
        rows.append(("recent error", f"{when}Z {err['message']}"))
    width = max(len(k) for k, _ in rows)
    for k, v in rows:
        print(f"{k:<{width}}  {v}")
    return exitcodes.OK
