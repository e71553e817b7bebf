"""Profile the running proxy under one of the benchmark's loads, with py-spy.

    python bench/profile.py SCENARIO [--variant uvloop] [--duration 8] [--rate 250]

Scenarios: ``page-json-gz``, ``page-html``, ``page-304`` (the 3,000-file page, 16
connections), ``file-8`` (the largest cached wheel, 8 connections), ``cold-16`` (16
concurrent cold misses on one large file), ``cold-pip`` / ``cold-uv`` (a cold install of
the set), ``cold-huge`` (one cold download of the huge file, upstream uncapped).
``cold-steps`` is no profile but a clock: pip's request sequence (page, metadata, wheel for
each distribution, one at a time) cold through a fresh proxy and straight from upstream,
timing each request, so the cold-install overhead splits into pages, metadata and files.
``uv-timeline`` is a clock too: when (from the upstream's access log, in seconds from the
start of uv) a cold uv install fetched its pages, its first file and its largest file,
direct and through a fresh proxy.

Sets up the same data, upstream and proxy as ``bench/run.py``, attaches
``py-spy record --threads`` (blocking: it pauses the process for each sample, which costs
a little throughput but gives whole coroutine stacks) to the proxy process for the length
of the load,
and writes ``bench/results/profile-<scenario>.txt`` (collapsed stacks: load it in
speedscope, or feed it to flamegraph.pl). Prints where the samples are: the functions with
the most inclusive and the most
self samples, and how many samples were taken versus the wall-clock time (a
single-threaded process pegged on a CPU gives duration x rate samples on its loop thread).
Needs ``py-spy`` (``pip install py-spy``) and root or ptrace rights.
"""

from __future__ import annotations

import argparse
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import RESULTS_DIR, fetch, fetch_body, fetch_many
from dataset import BIG_PROJECT
from load import wrk
from proxy import VARIANTS, Proxy
from run import V1_JSON, Bench, parse_args

NONBLOCKING = False  # --nonblocking: less overhead, but async stacks come out torn
SCENARIOS = (
    "page-json-gz",
    "page-html",
    "page-304",
    "file-8",
    "cold-16",
    "cold-pip",
    "cold-uv",
    "cold-huge",
    "cold-steps",
    "uv-timeline",
)


def pyspy() -> str:
    local = Path(sys.executable).parent / "py-spy"
    found = str(local) if local.exists() else shutil.which("py-spy")
    if not found:
        raise SystemExit("profile: needs py-spy: pip install py-spy")
    return found


def record(pids: list[int], seconds: float, rate: int, out: Path) -> list[subprocess.Popen[bytes]]:
    procs = []
    for i, pid in enumerate(pids):
        cmd = [pyspy(), "record", "--pid", str(pid), "--duration", str(int(seconds + 0.999))]
        cmd += ["--rate", str(rate), "--threads", "--format", "raw"]
        if NONBLOCKING:
            cmd.append("--nonblocking")
        cmd += ["--output", str(out.with_suffix(f".{i}.txt") if len(pids) > 1 else out)]
        procs.append(subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
    time.sleep(0.5)  # py-spy attaches
    return procs


def summarise(path: Path, seconds: float, rate: int, top: int = 25) -> str:
    stacks: Counter[str] = Counter()
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if stack and count.isdigit():
            stacks[stack] += int(count)
    total = sum(stacks.values())
    inclusive: Counter[str] = Counter()
    self_: Counter[str] = Counter()
    threads: Counter[str] = Counter()
    idle = 0
    for stack, n in list(stacks.items()):
        # A thread-pool worker blocked on its queue is idle, whatever py-spy thinks.
        if stack.rsplit(";", 1)[-1].startswith("_worker (concurrent/futures/thread.py"):
            idle += n
            del stacks[stack]
    total = sum(stacks.values())
    for stack, n in stacks.items():
        frames = [re.sub(r":\d+\)$", ")", f) for f in stack.split(";")]
        threads[frames[0]] += n
        for f in set(frames[1:]):
            inclusive[f] += n
        self_[frames[-1]] += n
    lines = [
        f"{path.name}: {total} samples in {seconds:.1f}s at {rate}/s "
        f"(= {total / (seconds * rate):.0%} of one CPU, all threads; "
        f"{idle} idle pool samples dropped)",
        "threads: " + ", ".join(f"{t} {n / total:.0%}" for t, n in threads.most_common(6)),
        "",
        "inclusive:",
    ]
    lines += [f"  {n / total:6.1%}  {f}" for f, n in inclusive.most_common(top)]
    lines += ["", "self:"]
    lines += [f"  {n / total:6.1%}  {f}" for f, n in self_.most_common(top)]
    return "\n".join(lines)


def cold_steps(bench: Bench) -> int:
    assert bench.up is not None
    assert bench.ds is not None
    ds, up = bench.ds, bench.up
    proxy = Proxy(up.index_url, bench.work)
    kinds = ("page", "metadata", "file")
    sums: dict[str, dict[str, float]] = {
        "direct": dict.fromkeys(kinds, 0.0),
        "proxy": dict.fromkeys(kinds, 0.0),
    }
    ttfb: dict[str, dict[str, float]] = {
        "direct": dict.fromkeys(kinds, 0.0),
        "proxy": dict.fromkeys(kinds, 0.0),
    }
    try:
        for d in ds.install:
            for who in ("direct", "proxy"):
                index = up.index_url if who == "direct" else proxy.index_url
                files = ds.files_base if who == "direct" else proxy.url
                urls = {
                    "page": (
                        f"{index}{d.project}/",
                        {"Accept": V1_JSON, "Accept-Encoding": "gzip"},
                    ),
                    "metadata": (f"{files}/packages/{d.rest}.metadata", {}),
                    "file": (f"{files}/packages/{d.rest}", {}),
                }
                for kind, (url, hdrs) in urls.items():
                    r = fetch(url, hdrs)
                    if r.status != 200:
                        raise RuntimeError(f"{who} {kind} {url}: {r.status} {r.error}")
                    sums[who][kind] += r.seconds
                    ttfb[who][kind] += r.first_byte - r.started
    finally:
        proxy.stop()
    n = len(ds.install)
    print(f"pip's cold request sequence, {n} distributions, one request at a time (s, summed)")
    print(
        "| request | direct | cold proxy | extra | extra per request (ms) "
        "| proxy time to first byte (ms, mean) |"
    )
    print("|---|---|---|---|---|---|")
    for kind in kinds:
        dx, px = sums["direct"][kind], sums["proxy"][kind]
        print(
            f"| {kind} | {dx:.2f} | {px:.2f} | {px - dx:+.2f} | {1000 * (px - dx) / n:+.1f} "
            f"| {1000 * ttfb['proxy'][kind] / n:.1f} "
            f"(direct {1000 * ttfb['direct'][kind] / n:.1f}) |"
        )
    dt, pt = sum(sums["direct"].values()), sum(sums["proxy"].values())
    print(f"| all | {dt:.2f} | {pt:.2f} | {pt - dt:+.2f} | | |")
    return 0


def uv_timeline(bench: Bench, rounds: int = 2) -> int:
    """When, seen from the upstream's access log, a cold uv install fetched what."""
    assert bench.up is not None
    assert bench.ds is not None
    big = f"/packages/{bench.ds.largest.rest}"
    print("| via | uv s | pages upstream | first file request | largest file upstream | uv done |")
    print("|---|---|---|---|---|---|")
    for _ in range(rounds):
        for who in ("direct", "proxy"):
            p = bench._fresh_proxy() if who == "proxy" else None
            mark = bench.up.log_mark()
            t0 = time.time()
            took = bench.install("uv", index=p.index_url if p else bench.up.index_url)
            t1 = time.time()
            time.sleep(0.3)
            if p is not None:
                p.stop()
            lines = [ln for ln in bench.up.log_since(mark) if ln.end >= t0]
            pages = [ln for ln in lines if ln.host == "index"]
            files = [ln for ln in lines if ln.host == "files"]
            b = next(ln for ln in files if ln.uri == big)
            print(
                f"| {who} | {took:.2f} | {min(ln.start for ln in pages) - t0:.2f}–"
                f"{max(ln.end for ln in pages) - t0:.2f} "
                f"| {min(ln.start for ln in files) - t0:.2f} "
                f"| {b.start - t0:.2f}–{b.end - t0:.2f} | {t1 - t0:.2f} |"
            )
    return 0


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("scenario", choices=SCENARIOS)
    p.add_argument("--variant", default="default", choices=list(VARIANTS))
    p.add_argument("--duration", type=float, default=8.0)
    p.add_argument("--rate", type=int, default=250)
    p.add_argument("--quick", action="store_true", help="the small data set")
    p.add_argument("--huge-mb", type=int, default=300)
    p.add_argument("--nonblocking", action="store_true", help="py-spy --nonblocking")
    a = p.parse_args()
    global NONBLOCKING
    NONBLOCKING = a.nonblocking
    bench = Bench(
        parse_args(
            [
                "--huge-mb",
                str(a.huge_mb if a.scenario == "cold-huge" else 1),
                *(["--quick"] if a.quick else []),
            ]
        )
    )
    out = (
        RESULTS_DIR / f"profile-{a.scenario}{'' if a.variant == 'default' else '-' + a.variant}.txt"
    )
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    try:
        bench.setup()
        assert bench.up is not None
        assert bench.ds is not None
        ds = bench.ds
        if a.scenario == "cold-steps":
            return cold_steps(bench)
        if a.scenario == "uv-timeline":
            return uv_timeline(bench)
        if a.scenario in ("cold-pip", "cold-uv", "cold-huge"):
            proxy = Proxy(bench.up.index_url, bench.work, variant=a.variant)
            if a.scenario == "cold-huge":
                fetch_body(f"{proxy.url}/simple/huge/", {"Accept": V1_JSON})
            try:
                spies = record(proxy.worker_pids(), 120, a.rate, out)
                t0 = time.perf_counter()
                if a.scenario == "cold-huge":
                    r = fetch(f"{proxy.url}/packages/{ds.huge.rest}", timeout=300)
                    print(
                        f"cold huge: {r.status}, {r.size / 1e6:.0f} MB in {r.seconds:.2f}s "
                        f"= {r.size / 1e6 / r.seconds:.0f} MB/s"
                    )
                else:
                    bench.install(a.scenario.removeprefix("cold-"), index=proxy.index_url)
                took = time.perf_counter() - t0
                for s in spies:
                    s.send_signal(signal.SIGINT)  # py-spy writes its output on Ctrl-C
                for s in spies:
                    s.wait(30)
            finally:
                proxy.stop()
            print(summarise(out, took, a.rate))
            return 0
        if a.scenario == "cold-16":
            f = ds.coalesce
            proxy = bench._cold_proxy(a.variant, "coalesce")
            try:
                spies = record(proxy.worker_pids(), 60, a.rate, out)
                results, took = fetch_many(f"{proxy.url}/packages/{f.rest}", 16)
                for s in spies:
                    s.send_signal(signal.SIGINT)
                for s in spies:
                    s.wait(30)
            finally:
                proxy.stop()
            ok = sum(1 for r in results if r.sha256 == f.sha256)
            print(f"16 cold clients: {ok} intact, {took:.2f}s")
            print(summarise(out, took, a.rate))
            return 0
        proxy = bench.main_proxy(a.variant)
        big = ds.largest
        fetch(f"{proxy.url}/packages/{big.rest}")  # into the cache
        st, h, _ = fetch_body(
            f"{proxy.url}/simple/{BIG_PROJECT}/", {"Accept": V1_JSON, "Accept-Encoding": "gzip"}
        )
        assert st == 200
        if a.scenario == "file-8":
            url, conns, hdrs = f"{proxy.url}/packages/{big.rest}", 8, {}
        else:
            url, conns = f"{proxy.url}/simple/{BIG_PROJECT}/", 16
            if a.scenario == "page-html":
                hdrs = {"Accept": "text/html"}
            else:
                hdrs = {"Accept": V1_JSON, "Accept-Encoding": "gzip"}
                if a.scenario == "page-304":
                    hdrs["If-None-Match"] = h["etag"]
        fetch(url, hdrs)
        spies = record(proxy.worker_pids(), a.duration, a.rate, out)
        result: list[object] = []
        t = threading.Thread(
            target=lambda: result.append(
                wrk(url, conns, a.duration - 1, hdrs, script_dir=bench.work)
            )
        )
        t.start()
        t.join(a.duration + 60)
        for s in spies:
            s.wait(a.duration + 30)
        r = result[0] if result else None
        if r is not None:
            print(
                f"load: {r.rps:,.0f} req/s, {r.mbps:,.0f} MB/s, p50 {r.p50_ms:.2f} ms, "
                f"p99 {r.p99_ms:.2f} ms, {r.errors} errors"
            )  # type: ignore[attr-defined]
        files = [out] if out.exists() else sorted(out.parent.glob(out.stem + ".*.txt"))
        for f in files:
            print(summarise(f, a.duration, a.rate))
        return 0
    finally:
        bench.teardown()


if __name__ == "__main__":
    raise SystemExit(main())
