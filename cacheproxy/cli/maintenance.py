"""``cacheproxy prune``, ``verify`` and ``stats``: maintenance of a cache directory, and
with ``--storage s3://BUCKET[/PREFIX]`` of the bucket replicas share.

The bucket's code (store/bucket_maintenance.py) is imported only when a store is given, so
an install without the s3 extra (no aiobotocore) still maintains its cache directory.
"""

import argparse
import asyncio
import importlib.util
import json
import os
import sys
import time
from typing import TYPE_CHECKING, Any

from cacheproxy.cli import exitcodes
from cacheproxy.errors import ConfigError, SharedStoreError
from cacheproxy.figures.metrics import Metrics
from cacheproxy.figures.stats import collect_stats
from cacheproxy.settings import Settings, build_settings
from cacheproxy.store.evict import evict
from cacheproxy.store.local import Storage
from cacheproxy.store.verify import verify
from cacheproxy.units import format_bytes, parse_duration
from cacheproxy.urls import Location

if TYPE_CHECKING:
    from cacheproxy.store.bucket_maintenance import BucketStats


def _cache_dir_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--cache-dir",
        help="the cache directory [CACHEPROXY_CACHE_DIR, default ~/.cache/cacheproxy]",
    )


def _storage_arg(p: argparse.ArgumentParser, what: str) -> None:
    p.add_argument(
        "--storage",
        help=f"local, or s3://BUCKET[/PREFIX]: {what} (credentials, region and endpoint "
        "from the AWS_* variables) [CACHEPROXY_STORAGE, local]",
    )


def add_parsers(subparsers: "argparse._SubParsersAction[Any]") -> None:
    prune = subparsers.add_parser(
        "prune",
        help="remove least recently used files to fit a size, or files unused for long; "
        "with --storage, the bucket's files stored longest ago",
    )
    _cache_dir_arg(prune)
    _storage_arg(
        prune,
        "prune the bucket replicas share instead of the cache directory. S3 keeps no access "
        "time: files go in the order they were stored (LastModified), pages are kept, and "
        "--max-size must be a size given here (CACHEPROXY_MAX_SIZE is each replica's "
        "local limit)",
    )
    prune.add_argument("--max-size", help="e.g. 50GB or 20%% [CACHEPROXY_MAX_SIZE]")
    prune.add_argument(
        "--older-than",
        help="remove files unused for this long, e.g. 30d (on a bucket: stored this long ago)",
    )
    prune.set_defaults(func=run_prune)
    ver = subparsers.add_parser("verify", help="re-hash stored files; remove any that differ")
    _cache_dir_arg(ver)
    _storage_arg(
        ver, "re-hash the bucket's files and pages too (and the cache directory if there is one)"
    )
    ver.set_defaults(func=run_verify)
    st = subparsers.add_parser("stats", help="print the cache's figures")
    _cache_dir_arg(st)
    _storage_arg(st, "count the bucket's files, pages and leases too")
    st.add_argument("--json", action="store_true", help="the /-/stats document instead")
    st.set_defaults(func=run_stats)


def _settings(args: argparse.Namespace) -> Settings:
    """The same :class:`Settings` ``serve`` builds, from these flags and CACHEPROXY_*."""
    flags = {
        "cache_dir": args.cache_dir,
        "max_size": getattr(args, "max_size", None),
        "storage": args.storage,
    }
    return build_settings(flags, os.environ)


def _need_s3_extra(location: Location) -> None:
    if importlib.util.find_spec("aiobotocore") is None:
        raise ConfigError(
            f"--storage {location} needs the s3 extra: install this checkout with "
            "pip install '.[s3]'"
        )


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
        older = parse_duration(args.older_than) if args.older_than else None
        if settings.storage is not None:
            return _prune_store(settings.storage, args.max_size, settings.max_size, older)
        max_bytes = settings.max_size
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


def _prune_store(
    location: Location, given: str | None, parsed: int | None, older: float | None
) -> int:
    """Prune the bucket. Its size comes from --max-size only: CACHEPROXY_MAX_SIZE is the
    local tier's limit in a replica's environment, far below what the bucket holds."""
    if given is not None and given.strip().endswith("%"):
        raise ConfigError(
            f"--max-size {given.strip()}: a share of a disk means nothing for a bucket; "
            "give a size like 500GB"
        )
    max_bytes = parsed if given is not None else None
    if max_bytes is None and older is None:
        raise ConfigError(
            "prune --storage needs --max-size or --older-than (CACHEPROXY_MAX_SIZE is "
            "each replica's local limit, not the bucket's)"
        )
    _need_s3_extra(location)
    from cacheproxy.store.bucket_maintenance import prune_store

    try:
        report = asyncio.run(prune_store(location, max_bytes=max_bytes, older_than=older))
    except SharedStoreError as e:
        return _store_failed(e)
    print(f"prune: {report.line()}")
    return exitcodes.OK


def _store_failed(e: SharedStoreError) -> int:
    # The message is one line naming the operation and key (store/objectstore.py), and
    # never a credential.
    print(f"cacheproxy: error: {e}", file=sys.stderr)
    return exitcodes.FAILED


def run_verify(args: argparse.Namespace) -> int:
    try:
        settings = _settings(args)
        if settings.storage is not None:
            _need_s3_extra(settings.storage)
        # With a store, a host with no local tier (an operator's machine) checks the store.
        local = settings.storage is None or settings.cache_dir.is_dir()
        storage = _open(settings) if local else None
    except ConfigError as e:
        return _fail(e)
    bad = False
    if storage is not None:
        try:
            report = verify(storage)
        finally:
            storage.close_sync()
        for path in report.bad:
            print(f"corrupt, removed: {path}")
        where = "" if settings.storage is None else f"local tier {storage.root}: "
        print(f"verify: {where}{report.line()}")
        bad = bool(report.bad)
    elif settings.storage is not None:
        print(f"verify: no local tier at {settings.cache_dir}; checking the store only")
    if settings.storage is not None:
        from cacheproxy.store.bucket_maintenance import verify_store

        try:
            store_report = asyncio.run(verify_store(settings.storage))
        except SharedStoreError as e:
            return _store_failed(e)
        for name in store_report.bad:
            print(f"corrupt, removed: {name}")
        print(f"verify: {store_report.line()}")
        bad = bad or bool(store_report.bad)
    return exitcodes.FAILED if bad else exitcodes.OK


def run_stats(args: argparse.Namespace) -> int:
    try:
        settings = _settings(args)
        if settings.storage is not None:
            _need_s3_extra(settings.storage)
        # With a store, a host with no local tier (an operator's machine) shows the store.
        local = settings.storage is None or settings.cache_dir.is_dir()
        storage = _open(settings) if local else None
    except ConfigError as e:
        return _fail(e)
    data: dict[str, Any] = {}
    if storage is not None:
        data = _local_stats(settings, storage)
    bucket = None
    if settings.storage is not None:
        from cacheproxy.store.bucket_maintenance import store_stats

        try:
            bucket = asyncio.run(store_stats(settings.storage))
        except SharedStoreError as e:
            return _store_failed(e)
        data["store"] = bucket.to_dict()
    if args.json:
        print(json.dumps(data, indent=2))
        return exitcodes.OK
    rows = _local_rows(data) if storage is not None else []
    if bucket is not None:
        rows += _store_rows(bucket)
    width = max(len(k) for k, _ in rows)
    for k, v in rows:
        print(f"{k:<{width}}  {v}")
    return exitcodes.OK


def _local_stats(settings: Settings, storage: Storage) -> dict[str, Any]:
    metrics = Metrics.for_cache(settings.cache_dir)
    try:
        return collect_stats(
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


def _local_rows(data: dict[str, Any]) -> list[tuple[str, str]]:
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
        rows.append(("recent error", f"{_utc(err['time'])} {err['message']}"))
    return rows


def _store_rows(bucket: "BucketStats") -> list[tuple[str, str]]:
    oldest = "" if bucket.oldest_file is None else f", oldest stored {_utc(bucket.oldest_file)}"
    leases = f"{bucket.leases_in_flight} in flight"
    if bucket.leases_expired:
        leases += f", {bucket.leases_expired} expired (left by a stopped replica)"
    return [
        ("store", bucket.location),
        ("store files", f"{bucket.files} ({format_bytes(bucket.size_bytes)}{oldest})"),
        ("store pages", f"{bucket.pages} ({format_bytes(bucket.page_bytes)})"),
        ("store leases", leases),
    ]


def _utc(when: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(when)) + "Z"
