"""Wall-clock trace of the proxy's cold path: where a cold request's extra milliseconds go.

    python bench/trace.py [--quick]

py-spy samples CPU; a cold request through the proxy is mostly *waiting* (upstream, fsync
in a worker thread), which a sampler does not attribute. This runs the proxy in-process
(``cacheproxy.web.app.create_app`` on an ``AppRunner``, same settings as ``bench/run.py``),
wraps a list of its functions with timers (monkeypatched at run time: nothing in
``cacheproxy/`` changes; functions that no longer exist are skipped), then plays pip's
cold sequence (page, metadata, wheel for each distribution, one at a time) from a client
thread against a fresh cache and prints, per function: calls, total and mean wall time.
Compare with ``bench/profile.py cold-steps`` (the same sequence timed from outside).
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import importlib
import inspect
import sys
import tempfile
import threading
import time
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import fetch, free_port
from run import V1_JSON, Bench, parse_args

TARGETS = [
    "cacheproxy.web.handlers:project_page",
    "cacheproxy.proxy.pages:Pages._get",
    "cacheproxy.proxy.pages:Pages._read",
    "cacheproxy.proxy.pages:Pages._fetch",
    "cacheproxy.proxy.pages:Pages._store",
    "cacheproxy.proxy.pages:render_project",
    "cacheproxy.proxy.pages:parse_project_page",
    "cacheproxy.proxy.pages:_with_gzip",
    "cacheproxy.proxy.upstream:Upstream.fetch_page",
    "cacheproxy.store.local:Storage.get_page",
    "cacheproxy.store.local:Storage.put_page",
    "cacheproxy.store.local:Storage.put_prepared",
    "cacheproxy.proxy.pages:name_bodies",
    "cacheproxy.store.local:Storage._write_body",
    "cacheproxy.store.local:Storage.get_file",
    "cacheproxy.store.local:Storage.commit",
    "cacheproxy.web.file_handlers:package_file",
    "cacheproxy.web.file_handlers:_serve_miss",
    "cacheproxy.web.file_handlers:_stream",
    "cacheproxy.proxy.files:Files.resolve",
    "cacheproxy.proxy.downloads:Downloads.join",
    "cacheproxy.proxy.downloads:Download.run",
    "cacheproxy.proxy.downloads:Download._transfer",
    "cacheproxy.proxy.upstream:Upstream._open_once",
]

STATS: dict[str, list[float]] = defaultdict(list)


def _wrap(name: str, fn):  # type: ignore[no-untyped-def]
    if inspect.iscoroutinefunction(fn):

        @functools.wraps(fn)
        async def awrapper(*a, **kw):  # type: ignore[no-untyped-def]
            t = time.perf_counter()
            try:
                return await fn(*a, **kw)
            finally:
                STATS[name].append(time.perf_counter() - t)

        return awrapper
    if inspect.isasyncgenfunction(fn) or inspect.isgeneratorfunction(fn):
        return None  # generators: the time is in their consumers
    if getattr(fn, "__wrapped_by_trace__", False):
        return None

    @functools.wraps(fn)
    def wrapper(*a, **kw):  # type: ignore[no-untyped-def]
        t = time.perf_counter()
        try:
            return fn(*a, **kw)
        finally:
            STATS[name].append(time.perf_counter() - t)

    return wrapper


def install_wrappers() -> list[str]:
    done = []
    for target in TARGETS:
        mod_name, _, qual = target.partition(":")
        try:
            mod = importlib.import_module(mod_name)
        except ImportError:
            continue
        owner: object = mod
        parts = qual.split(".")
        try:
            for p in parts[:-1]:
                owner = getattr(owner, p)
            raw = inspect.getattr_static(owner, parts[-1])
        except AttributeError:
            continue
        fn = raw.__func__ if isinstance(raw, (staticmethod, classmethod)) else raw
        wrapped = _wrap(qual, fn)
        if wrapped is None:
            continue
        if isinstance(raw, staticmethod):
            wrapped = staticmethod(wrapped)
        elif isinstance(raw, classmethod):
            wrapped = classmethod(wrapped)
        setattr(owner, parts[-1], wrapped)
        # Names imported elsewhere (from x import f) keep the old object: patch those too.
        if owner is mod:
            for other in list(sys.modules.values()):
                if (
                    getattr(other, "__name__", "").startswith("cacheproxy")
                    and getattr(other, parts[-1], None) is fn
                ):
                    setattr(other, parts[-1], wrapped)
        done.append(qual)
    return done


async def serve(
    bench: Bench, cache: Path, port: int, ready: threading.Event, stop: asyncio.Event
) -> None:
    from aiohttp import web

    from cacheproxy.settings import build_settings
    from cacheproxy.web.app import create_app

    assert bench.up is not None
    flags = {
        "host": "127.0.0.1",
        "port": str(port),
        "cache_dir": str(cache),
        "upstream": bench.up.index_url,
        "index_ttl": "3600",
    }
    settings = build_settings(flags, {})
    runner = web.AppRunner(create_app(settings), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", port)
    await site.start()
    ready.set()
    await stop.wait()
    await runner.cleanup()


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true")
    p.add_argument(
        "--client",
        choices=["steps", "pip", "uv"],
        default="steps",
        help="pip's sequence one request at a time (steps), or a real cold pip/uv install",
    )
    a = p.parse_args()
    import logging

    logging.basicConfig(level=logging.WARNING)
    wrapped = install_wrappers()
    bench = Bench(parse_args(["--huge-mb", "1", *(["--quick"] if a.quick else [])]))
    try:
        bench.setup()
        assert bench.ds is not None
        ds = bench.ds
        port = free_port()
        cache = Path(tempfile.mkdtemp(prefix="trace-cache-", dir=bench.work))
        loop = asyncio.new_event_loop()
        stop = asyncio.Event()
        ready = threading.Event()
        clock: dict[str, float] = defaultdict(float)

        def client() -> None:
            ready.wait(30)
            base = f"http://127.0.0.1:{port}"
            fetch(f"{base}/simple/huge/", {"Accept": V1_JSON})  # first-request costs out of the way
            STATS.clear()
            if a.client != "steps":
                t0 = time.perf_counter()
                try:
                    bench.install(a.client, index=f"{base}/simple/")
                finally:
                    clock[f"{a.client} install"] = time.perf_counter() - t0
                    loop.call_soon_threadsafe(stop.set)
                return
            for d in ds.install:
                for kind, url, hdrs in (
                    (
                        "page",
                        f"{base}/simple/{d.project}/",
                        {"Accept": V1_JSON, "Accept-Encoding": "gzip"},
                    ),
                    ("metadata", f"{base}/packages/{d.rest}.metadata", {}),
                    ("file", f"{base}/packages/{d.rest}", {}),
                ):
                    r = fetch(url, hdrs)
                    if r.status != 200:
                        print(f"{kind} {url}: {r.status} {r.error}")
                    clock[kind] += r.seconds
            loop.call_soon_threadsafe(stop.set)

        t = threading.Thread(target=client, daemon=True)
        t.start()
        loop.run_until_complete(asyncio.wait_for(serve(bench, cache, port, ready, stop), 600))
        t.join(5)
    finally:
        bench.teardown()
    n = len(ds.install)
    print(
        f"client side, {n} distributions: "
        + ", ".join(
            f"{k} {v:.2f}s ({1000 * v / n:.1f} ms per distribution)" for k, v in clock.items()
        )
    )
    print(f"wrapped: {len(wrapped)} functions\n")
    print("| function | calls | total ms | mean ms |")
    print("|---|---|---|---|")
    for name, xs in sorted(STATS.items(), key=lambda kv: -sum(kv[1])):
        print(f"| {name} | {len(xs)} | {1000 * sum(xs):.1f} | {1000 * sum(xs) / len(xs):.2f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
