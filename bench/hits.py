"""Hits against nginx, interleaved pair by pair (issue #16, parts 3 and 4).

    python bench/hits.py [--pairs 5] [--requests 200] [--phases latency,throughput,pip]
                         [--conns 8,1] [--pip-pairs N] [--before-src DIR]
                         [--proxpi-python .proxpi-venv/bin/python]

Sets up the data, the upstream and the warm proxy as ``bench/run.py`` does (the same
``Bench``: its setup and its priming, which also builds nginx's static tree of the proxy's
own page bytes), then measures each figure as pairs run back to back, proxy then nginx,
then nginx then proxy, and so on; every figure is the median of the per-pair
differences or ratios, because this machine's speed drifts by ~10% over minutes:

* ``latency``: one client, one keep-alive connection per server, pip's pattern of one
  request at a time: a project page (PEP 691 JSON, gzip), a ``.metadata`` and the
  smallest wheel, ``--requests`` of each per pair. Time to first byte (the status line)
  and to last byte, from a raw socket client (the same client for both servers, so its
  own cost cancels). Medians and p90 per server, and proxy - nginx in ms.
* ``throughput``: the largest cached wheel (~55 MB) to 8 ``wrk`` connections; MB/s and
  proxy ÷ nginx per pair. With ``--proxpi-python``, proxpi (gunicorn, threads) on the
  same upstream joins each round.
* ``pip``: warm ``pip install`` of the whole set through the proxy ÷ through nginx's
  static tree of the same pages; the median of the per-pair ratios with a 90% bootstrap
  interval (the pairs spread by ±4%), and the CPU seconds the server and pip used.

``--before-src DIR`` runs the ``cacheproxy/`` in DIR too, as ``before``, on a copy of the
warm cache, in the same pairs. More phases, not in the default run: ``cpu`` (CPU seconds
per GB on the loop thread and on other threads under 8 clients), ``syscalls`` (``strace
-c`` of each server under 8 clients: calls per MB, bytes per sendfile) and ``profile``
(the proxy under cProfile, serving the latency pattern and pip's sequence).

The load average is printed at the start and end of each phase. Results (every sample)
go to ``bench/results/hits-<time>.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import MB, RESULTS_DIR, fetch, free_port, machine, stop_process, wait_port
from load import wrk
from proxy import Proxy
from run import Bench, log, parse_args

# What pip 26 sends for a project page (its PEP 691 Accept, gzip).
PIP_ACCEPT = (
    "application/vnd.pypi.simple.v1+json, application/vnd.pypi.simple.v1+html; q=0.1, "
    "text/html; q=0.01"
)
KINDS = ("page", "metadata", "wheel")


def loadavg() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def pct(xs: Sequence[float], p: float) -> float:
    s = sorted(xs)
    return s[min(len(s) - 1, round(p / 100 * (len(s) - 1)))]


class KeepAlive:
    """A minimal HTTP/1.1 client on one keep-alive connection: Content-Length bodies
    only (both servers send one for everything measured here)."""

    def __init__(self, host: str, port: int) -> None:
        self.host = f"{host}:{port}"
        self.sock = socket.create_connection((host, port), timeout=30)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = bytearray(1 << 20)

    def get(self, path: str, headers: dict[str, str]) -> tuple[int, float, float, int]:
        """(status, seconds to the first byte, seconds to the last byte, body bytes)."""
        lines = [f"GET {path} HTTP/1.1", f"Host: {self.host}", "User-Agent: hits-bench"]
        lines += [f"{k}: {v}" for k, v in headers.items()]
        req = ("\r\n".join(lines) + "\r\n\r\n").encode()
        view = memoryview(self.buf)
        t0 = time.perf_counter()
        self.sock.sendall(req)
        n = self.sock.recv_into(view)
        t1 = time.perf_counter()
        if n == 0:
            raise ConnectionError("closed before the response")
        have = n
        while (end := self.buf.find(b"\r\n\r\n", 0, have)) < 0:
            got = self.sock.recv_into(view[have:])
            if got == 0:
                raise ConnectionError("closed in the headers")
            have += got
        head = bytes(self.buf[:end]).decode("latin-1").split("\r\n")
        status = int(head[0].split(" ", 2)[1])
        length = None
        for line in head[1:]:
            k, _, v = line.partition(":")
            if k.strip().lower() == "content-length":
                length = int(v.strip())
            elif k.strip().lower() == "transfer-encoding":
                raise RuntimeError(f"{path}: chunked response, not comparable")
        if length is None:
            raise RuntimeError(f"{path}: no Content-Length")
        left = length - (have - end - 4)
        while left > 0:
            got = self.sock.recv_into(view, min(left, len(self.buf)))
            if got == 0:
                raise ConnectionError("closed in the body")
            left -= got
        t2 = time.perf_counter()
        return status, t1 - t0, t2 - t0, length

    def close(self) -> None:
        self.sock.close()


def _targets(bench: Bench) -> dict[str, tuple[str, dict[str, str]]]:
    assert bench.ds is not None
    small = min(bench.ds.install, key=lambda d: d.size)
    # A page of typical size: the median project of the set.
    pages = sorted(bench.ds.install, key=lambda d: d.size)
    page = pages[len(pages) // 2]
    return {
        "page": (
            f"/simple/{page.project}/",
            {"Accept": PIP_ACCEPT, "Accept-Encoding": "gzip, deflate"},
        ),
        "metadata": (f"/packages/{small.rest}.metadata", {"Accept-Encoding": "gzip, deflate"}),
        "wheel": (f"/packages/{small.rest}", {"Accept-Encoding": "gzip, deflate"}),
    }


def _one_round(
    port: int, targets: dict[str, tuple[str, dict[str, str]]], n: int
) -> dict[str, dict[str, list[float]]]:
    client = KeepAlive("127.0.0.1", port)
    out: dict[str, dict[str, list[float]]] = {k: {"ttfb": [], "ttlb": []} for k in KINDS}
    sizes: dict[str, int] = {}
    try:
        for _ in range(10):  # warm the connection and both servers' caches
            for kind in KINDS:
                client.get(*targets[kind])
        for _ in range(n):
            for kind in KINDS:
                status, ttfb, ttlb, size = client.get(*targets[kind])
                if status != 200:
                    raise RuntimeError(f"{kind}: status {status}")
                if sizes.setdefault(kind, size) != size:
                    raise RuntimeError(f"{kind}: size changed")
                out[kind]["ttfb"].append(ttfb * 1000)
                out[kind]["ttlb"].append(ttlb * 1000)
    finally:
        client.close()
    out["sizes"] = {k: [float(v)] for k, v in sizes.items()}
    return out


def latency(bench: Bench, servers: dict[str, int], pairs: int, n: int) -> dict[str, object]:
    targets = _targets(bench)
    log(f"   latency: load {loadavg()}; targets {[t[0] for t in targets.values()]}")
    runs: dict[str, list[dict[str, dict[str, list[float]]]]] = {s: [] for s in servers}
    names = list(servers)
    for i in range(pairs):
        order = names if i % 2 == 0 else names[::-1]
        for s in order:
            runs[s].append(_one_round(servers[s], targets, n))
    for kind in KINDS:
        sz = {s: runs[s][0]["sizes"][kind][0] for s in names}
        if len(set(sz.values())) != 1:
            raise RuntimeError(f"{kind}: body sizes differ: {sz}")
    log(f"   latency: done, load {loadavg()}")
    summary: dict[str, object] = {}
    print(f"\nper-request latency on hits, one keep-alive client, {pairs} pairs × {n} requests")
    print("(ms; the difference is the median of the per-pair differences of medians)")
    print("| request | measure | server | p50 | p90 | − nginx p50 | per pair |")
    print("|---|---|---|---|---|---|---|")
    for kind in KINDS:
        size = int(runs["nginx"][0]["sizes"][kind][0])
        for m in ("ttfb", "ttlb"):
            for name in names:
                pooled = [x for r in runs[name] for x in r[kind][m]]
                diffs = [
                    statistics.median(a[kind][m]) - statistics.median(b[kind][m])
                    for a, b in zip(runs[name], runs["nginx"], strict=True)
                ]
                row = {
                    "p50": statistics.median(pooled),
                    "p90": pct(pooled, 90),
                    "diff_ms": statistics.median(diffs),
                    "diffs": diffs,
                }
                summary[f"{kind} {m} {name}"] = row
                print(
                    f"| {kind} ({size} B) | {m} | {name} | {row['p50']:.3f} | {row['p90']:.3f} "
                    f"| {row['diff_ms']:+.3f} | {', '.join(f'{d:+.2f}' for d in diffs)} |"
                )
    return {"summary": summary, "load_end": loadavg()}


def throughput(
    bench: Bench, servers: dict[str, str], pairs: int, duration: float, conns: int = 8
) -> dict[str, object]:
    assert bench.ds is not None
    big = bench.ds.largest
    paths = {s: f"/packages/{big.rest}" for s in servers}
    if "proxpi" in servers:  # proxpi's own file URLs
        paths["proxpi"] = f"/index/{big.project}/{big.filename}"
    for name, url in servers.items():
        for _ in range(2):  # proxpi fetches it on the first request
            r = fetch(url + paths[name])
        if r.status != 200 or r.sha256 != big.sha256:
            raise RuntimeError(f"{name}: large wheel not served intact ({r.status}, {r.error})")
    log(f"   throughput: {big.size / MB:.1f} MB wheel, {conns} connections; load {loadavg()}")
    mbps: dict[str, list[float]] = {s: [] for s in servers}
    errors: dict[str, int] = {}
    names = list(servers)
    for i in range(pairs):
        k = i % len(names)
        for s in names[k:] + names[:k]:
            res = wrk(servers[s] + paths[s], conns, duration, script_dir=bench.work)
            if res.errors:  # counted, not fatal: proxpi had a read error under load
                errors[s] = errors.get(s, 0) + res.errors
            mbps[s].append(res.mbps)
    print(f"\n{big.size / MB:.0f} MB wheel, {conns} clients (wrk, {duration:g} s), MB/s per round")
    print("| server | MB/s per round | median | ÷ nginx per round | median ratio |")
    print("|---|---|---|---|---|")
    out: dict[str, object] = {"mbps": mbps, "errors": errors, "load_end": loadavg()}
    if errors:
        print(f"wrk errors (socket errors or timeouts): {errors}")
    for s in names:
        ratios = [a / b for a, b in zip(mbps[s], mbps["nginx"], strict=True)]
        out[f"{s}_ratio"] = statistics.median(ratios)
        print(
            f"| {s} | {', '.join(f'{x:,.0f}' for x in mbps[s])} "
            f"| {statistics.median(mbps[s]):,.0f} "
            f"| {', '.join(f'{r:.2f}' for r in ratios)} | {statistics.median(ratios):.2f} |"
        )
    log(f"   throughput: done, load {loadavg()}")
    return out


def _cpu_seconds(pids: Sequence[int]) -> float:
    """User + system CPU seconds the processes ``pids`` have used so far."""
    total = 0.0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except FileNotFoundError:
            continue
        total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


def _median_interval(xs: Sequence[float], draws: int = 5000) -> tuple[float, float]:
    """A 90% bootstrap interval of the median of ``xs`` (fixed seed: reproducible)."""
    rng = random.Random(1)
    meds = sorted(statistics.median(rng.choices(xs, k=len(xs))) for _ in range(draws))
    return meds[draws // 20], meds[draws - draws // 20 - 1]


def warm_pip(
    bench: Bench, indexes: dict[str, str], pairs: int, pids: dict[str, Callable[[], list[int]]]
) -> dict[str, object]:
    """Warm pip installs, interleaved; per install also the CPU seconds the server's
    processes and pip used (what the server costs a 2-core machine pip runs on)."""
    log(f"   warm pip: load {loadavg()}")
    secs: dict[str, list[float]] = {s: [] for s in indexes}
    server_cpu: dict[str, list[float]] = {s: [] for s in indexes}
    client_cpu: dict[str, list[float]] = {s: [] for s in indexes}
    names = list(indexes)
    for i in range(pairs):
        order = names if i % 2 == 0 else names[::-1]
        for s in order:
            before = _cpu_seconds(pids[s]())
            kids = resource.getrusage(resource.RUSAGE_CHILDREN)
            secs[s].append(bench.install("pip", index=indexes[s]))
            after = resource.getrusage(resource.RUSAGE_CHILDREN)
            server_cpu[s].append(_cpu_seconds(pids[s]()) - before)
            client_cpu[s].append(after.ru_utime + after.ru_stime - kids.ru_utime - kids.ru_stime)
    print("\nwarm pip install (s), interleaved; ÷ nginx per pair; CPU s per install (median)")
    ratios = {}
    for name in names:
        ratios[name] = [a / b for a, b in zip(secs[name], secs["nginx"], strict=True)]
        low, high = _median_interval(ratios[name])
        print(
            f"| {name} | {', '.join(f'{x:.2f}' for x in secs[name])} "
            f"| {', '.join(f'{r:.3f}' for r in ratios[name])} "
            f"| median {statistics.median(ratios[name]):.3f} (90% interval {low:.3f}-{high:.3f}) "
            f"| server CPU {statistics.median(server_cpu[name]):.3f} "
            f"| pip CPU {statistics.median(client_cpu[name]):.2f} |"
        )
    log(f"   warm pip: done, load {loadavg()}")
    return {"seconds": secs, "ratios": ratios, "server_cpu": server_cpu, "client_cpu": client_cpu}


def profile(bench: Bench, n: int) -> dict[str, object]:
    """The warm proxy's Python time per hit: the same cache served by a proxy run under
    cProfile, the latency client's pattern ``n`` times, then pip's (page, metadata and
    wheel of every distribution of the set, one at a time). Prints the top functions."""
    import pstats

    assert bench.up is not None
    assert bench.ds is not None
    out = bench.work / "hits.prof"
    bench.main_proxy().stop(remove_cache=False)
    bench.proxies.pop("default", None)
    proxy = Proxy(
        bench.up.index_url,
        bench.work,
        cache_dir=bench.work / "cache-warm",
        python_args=["-m", "cProfile", "-o", str(out)],
    )
    requests = 0
    try:
        _one_round(proxy.port, _targets(bench), n)
        requests += 3 * (n + 10)
        client = KeepAlive("127.0.0.1", proxy.port)
        try:
            for d in bench.ds.install:
                for path, hdrs in (
                    (f"/simple/{d.project}/", {"Accept": PIP_ACCEPT, "Accept-Encoding": "gzip"}),
                    (f"/packages/{d.rest}.metadata", {}),
                    (f"/packages/{d.rest}", {}),
                ):
                    if client.get(path, hdrs)[0] != 200:
                        raise RuntimeError(f"{path}: not a 200")
                    requests += 1
        finally:
            client.close()
    finally:
        proxy.stop(remove_cache=False)
    stats = pstats.Stats(str(out))
    print(f"\ncProfile of the proxy, {requests} hits (top by own time, then cumulative)")
    stats.sort_stats("tottime").print_stats(25)
    stats.sort_stats("cumulative").print_stats(40)
    return {"requests": requests, "profile": str(out)}


def syscalls(bench: Bench, servers: dict[str, list[int]], duration: float) -> dict[str, object]:
    """``strace -c -f`` on each server's processes while ``wrk`` (8 connections) fetches
    the largest wheel: syscalls per MB moved, and bytes per sendfile call."""
    assert bench.ds is not None
    assert bench.base is not None
    big = bench.ds.largest
    urls = {"proxy": bench.main_proxy().url, "nginx": bench.base.url}
    out: dict[str, object] = {}
    for name, pids in servers.items():
        report = bench.work / f"strace-{name}.txt"
        cmd = ["strace", "-c", "-f", "-o", str(report)]
        for pid in pids:
            cmd += ["-p", str(pid)]
        tracer = subprocess.Popen(cmd, stderr=subprocess.DEVNULL)
        time.sleep(0.5)
        res = wrk(urls[name] + f"/packages/{big.rest}", 8, duration, script_dir=bench.work)
        tracer.send_signal(signal.SIGINT)
        tracer.wait(30)
        counts: dict[str, int] = {}
        for line in report.read_text().splitlines():
            parts = line.split()
            if len(parts) >= 5 and parts[0][0].isdigit() and parts[-1] != "total":
                counts[parts[-1]] = int(parts[3])
        mb = res.bytes / 1e6
        top = sorted(counts.items(), key=lambda kv: -kv[1])[:8]
        print(f"\n{name}: {mb:,.0f} MB in {res.seconds:.1f} s under strace ({res.mbps:,.0f} MB/s)")
        print("| syscall | calls | per MB |")
        print("|---|---|---|")
        for call, n in top:
            print(f"| {call} | {n:,} | {n / mb:.2f} |")
        if counts.get("sendfile"):
            print(f"bytes per sendfile call: {res.bytes / counts['sendfile'] / 1024:,.0f} KiB")
        out[name] = {"mb": mb, "calls": counts}
    return out


def _thread_cpu(pid: int) -> dict[str, float]:
    """CPU seconds (user + system) by thread name of process ``pid``."""
    tick = os.sysconf("SC_CLK_TCK")
    out: dict[str, float] = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
            name = (task / "comm").read_text().strip()
        except OSError:
            continue
        kind = "loop" if task.name == str(pid) else "threads"
        out[kind] = out.get(kind, 0.0) + (int(fields[11]) + int(fields[12])) / tick
        out.setdefault(f"name:{name}", 0.0)
    return out


def cpu(bench: Bench, servers: dict[str, Proxy], pairs: int, duration: float) -> dict[str, object]:
    """Where each proxy spends CPU while 8 ``wrk`` connections fetch the largest wheel:
    seconds per GB on the event loop's thread and on all other threads."""
    assert bench.ds is not None
    path = f"/packages/{bench.ds.largest.rest}"
    per_gb: dict[str, dict[str, list[float]]] = {s: {"loop": [], "threads": []} for s in servers}
    for i in range(pairs):
        names = list(servers) if i % 2 == 0 else list(servers)[::-1]
        for name in names:
            pid = servers[name].proc.pid
            t0 = _thread_cpu(pid)
            res = wrk(servers[name].url + path, 8, duration, script_dir=bench.work)
            t1 = _thread_cpu(pid)
            gb = res.bytes / 1e9
            for kind in ("loop", "threads"):
                per_gb[name][kind].append((t1.get(kind, 0.0) - t0.get(kind, 0.0)) / gb)
    print("\nCPU seconds per GB sent, 8 clients on the largest wheel (median over runs)")
    print("| server | event loop thread | other threads |")
    print("|---|---|---|")
    for name, d in per_gb.items():
        print(
            f"| {name} | {statistics.median(d['loop']):.3f} "
            f"| {statistics.median(d['threads']):.3f} |"
        )
    return {"per_gb": per_gb}


class Proxpi:
    """proxpi on the same upstream, under gunicorn with threads (its documented way)."""

    def __init__(self, python: str, upstream: str, work: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        cache = work / "proxpi-cache"
        cache.mkdir(exist_ok=True)
        env = dict(os.environ)
        env.update(
            PROXPI_INDEX_URL=upstream,
            PROXPI_CACHE_DIR=str(cache),
            PROXPI_CACHE_SIZE=str(10 * 1024**3),
            PROXPI_INDEX_TTL="3600",
        )
        gunicorn = str(Path(python).parent / "gunicorn")
        cmd = [gunicorn, "--threads", "8", "--bind", f"127.0.0.1:{self.port}"]
        cmd += ["--log-level", "warning", "proxpi.server:app"]
        self.log = open(work / "proxpi.log", "wb")
        self.proc = subprocess.Popen(cmd, env=env, stdout=self.log, stderr=subprocess.STDOUT)
        wait_port(self.port, proc=self.proc)

    def stop(self) -> None:
        stop_process(self.proc)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--pairs", type=int, default=5)
    p.add_argument("--requests", type=int, default=200, help="per kind, per server, per pair")
    p.add_argument("--duration", type=float, default=4.0, help="seconds per wrk run")
    p.add_argument(
        "--phases",
        default="latency,throughput,pip",
        help="and: cpu (CPU per GB, loop thread vs others), syscalls (strace -c under wrk), "
        "profile (cProfile of hits)",
    )
    p.add_argument(
        "--conns", default="8", help="wrk connections for throughput, comma-separated (8)"
    )
    p.add_argument("--pip-pairs", type=int, default=None, help="default: --pairs")
    p.add_argument("--proxpi-python", default=None, help="a Python with proxpi and gunicorn")
    p.add_argument(
        "--before-src",
        type=Path,
        default=None,
        help="a directory holding another cacheproxy/ (e.g. `git archive main cacheproxy`): "
        "run it too, as 'before', on the same cache, in the same pairs",
    )
    p.add_argument("--keep", action="store_true")
    a = p.parse_args(argv)
    phases = {x.strip() for x in a.phases.split(",") if x.strip()}
    a.conns = [int(x) for x in a.conns.split(",") if x.strip()]
    bench_args = ["--huge-mb", "1", "--phases", "warm"] + (["--keep"] if a.keep else [])
    bench = Bench(parse_args(bench_args))
    started = time.monotonic()
    meta = {
        "command": " ".join(["python", "bench/hits.py", *(argv or sys.argv[1:])]),
        "machine": machine(),
        "load_start": loadavg(),
    }
    print(f"command: {meta['command']}\nload at start: {meta['load_start']}")
    out: dict[str, object] = {"meta": meta}
    proxpi: Proxpi | None = None
    try:
        bench.setup()
        bench.prime_and_baseline()
        assert bench.base is not None
        assert bench.up is not None
        proxy = bench.main_proxy()
        out["sources"] = bench.source_digest
        before: Proxy | None = None
        if a.before_src is not None:
            env = dict(os.environ)
            env["PYTHONPATH"] = str(a.before_src.resolve())
            # A copy of the warm cache: one serve per cache directory (cli/instance.py).
            copy = bench.work / "cache-before"
            shutil.copytree(
                bench.work / "cache-warm", copy, ignore=shutil.ignore_patterns("serve.lock")
            )
            before = Proxy(bench.up.index_url, bench.work, cache_dir=copy, env=env)
            bench.proxies["before"] = before
        if "latency" in phases:
            out["latency"] = latency(
                bench,
                {
                    "proxy": proxy.port,
                    **({"before": before.port} if before else {}),
                    "nginx": int(bench.base.url.rsplit(":", 1)[1]),
                },
                a.pairs,
                a.requests,
            )
        if "throughput" in phases:
            servers = {"proxy": proxy.url, "nginx": bench.base.url}
            if before is not None:
                servers["before"] = before.url
            if a.proxpi_python:
                proxpi = Proxpi(a.proxpi_python, bench.up.index_url, bench.work)
                servers["proxpi"] = proxpi.url
            for conns in a.conns:
                out[f"throughput_{conns}"] = throughput(bench, servers, a.pairs, a.duration, conns)
        if "cpu" in phases:
            procs = {"proxy": proxy, **({"before": before} if before else {})}
            out["cpu"] = cpu(bench, procs, a.pairs, a.duration)
        if "syscalls" in phases:
            out["syscalls"] = syscalls(
                bench, {"proxy": proxy.pids(), "nginx": bench.base.pids()[1:]}, a.duration
            )
        if "profile" in phases:
            out["profile"] = profile(bench, a.requests)
        if "pip" in phases:
            indexes = {"proxy": proxy.index_url, "nginx": bench.base.index_url}
            base = bench.base
            pids: dict[str, Callable[[], list[int]]] = {"proxy": proxy.pids, "nginx": base.pids}
            if before is not None:
                indexes["before"] = before.index_url
                pids["before"] = before.pids
            out["pip"] = warm_pip(bench, indexes, a.pip_pairs or a.pairs, pids)
    finally:
        if proxpi is not None:
            proxpi.stop()
        bench.teardown()
    meta["load_end"] = loadavg()
    meta["seconds"] = round(time.monotonic() - started)
    print(f"\nload at end: {meta['load_end']}; {meta['seconds']} s")
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    path = RESULTS_DIR / f"hits-{time.strftime('%Y%m%d-%H%M%S')}.json"
    path.write_text(json.dumps(out, indent=2, default=str))
    log(f"results: {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
