"""The benchmark suite of issue #6: cacheproxy against its baselines, in one run, as ratios.

    python bench/run.py [--quick] [--variants uvloop,workers2] [--reps N] [--duration S]

Sets up, in one temp dir: the data (``bench/dataset.py``), a static upstream shaped like
the real index with a bandwidth cap (nginx, ``bench/nginx.py``), the proxy under test as
a real process, and the baselines: a local wheelhouse (``--find-links``) and nginx serving
the same pages and files statically. Then measures (medians over repeats, every ratio
against a baseline measured in the same run, interleaved with it):

1. warm ``pip``/``uv`` installs of the pinned set: proxy ÷ local wheelhouse, ÷ nginx;
2. cold installs through the proxy ÷ straight from the (capped) upstream, and the upstream
   requests the proxy made (HEADs, project list, connections, duplicate GETs);
3. MB/s of the largest cached wheel at 1/8/32 concurrent clients ÷ nginx;
4. req/s, p50/p99 of a 3,000-file project page, HTML and JSON, identity and gzip, and
   304 revalidations ÷ nginx;
5. 16 concurrent cold misses on one large file: upstream bytes ÷ size, clients served,
   time ÷ one cold download;
6. peak RSS of the proxy under (3) at 32 clients and during a cold 500 MB download.

Prints a table (measurement, proxy, baseline, ratio, target, met?) and writes the full
results to ``bench/results/`` (git-ignored). ``--quick`` is a < 60 s smoke run on a small
set (its figures are not meaningful). Needs Debian's ``nginx`` (with
``libnginx-mod-http-echo`` for the upstream delay) and ``wrk``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (
    MB,
    REPO,
    RESULTS_DIR,
    RssMonitor,
    client_env,
    fetch,
    fetch_body,
    fetch_many,
    free_port,
    machine,
    phase,
    tool_version,
    uv_binary,
)
from dataset import BIG_PROJECT, Dataset, build
from load import have_wrk, wrk, wrk_version
from nginx import Baseline, LogLine, Upstream, have_nginx, nginx_version
from proxy import VARIANTS, Proxy, snapshot

V1_JSON = "application/vnd.pypi.simple.v1+json"
PHASES = ("cold", "warm", "throughput", "pages", "coalesce", "rss")
PAGE_SCENARIOS = {
    # name: (Accept, gzip?, conditional?)
    "html": ("text/html", False, False),
    "html.gz": ("text/html", True, False),
    "json": (V1_JSON, False, False),
    "json.gz": (V1_JSON, True, False),
    "304 json.gz": (V1_JSON, True, True),
}


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def median(xs: Sequence[float | None]) -> float:
    vals = [x for x in xs if x is not None]
    return statistics.median(vals) if vals else float("nan")


def paired(a: Sequence[float | None], b: Sequence[float | None]) -> float | None:
    """Median over repeats of a[i] ÷ b[i]: each pair ran back to back, so slow drifts of a
    shared machine cancel out better than in a ratio of medians."""
    ratios = [x / y for x, y in zip(a, b, strict=True) if x is not None and y]
    return statistics.median(ratios) if ratios else None


@dataclass
class Row:
    section: str
    measurement: str
    proxy: float | None
    baseline: float | None
    unit: str
    target: str = ""  # e.g. "<= 1.05", ">= 0.9", "== 1.00"
    ratio: float | None = None
    met: bool | None = None
    baseline_name: str = ""
    note: str = ""

    def __post_init__(self) -> None:
        if self.ratio is None and self.proxy is not None and self.baseline:
            self.ratio = self.proxy / self.baseline
        value = self.ratio if self.ratio is not None else self.proxy
        if self.target and value is not None:
            op, num = self.target.split()
            x = float(num)
            self.met = {
                "<=": value <= x + 1e-9,
                ">=": value >= x - 1e-9,
                "==": abs(value - x) < 0.005,
                "<": value < x,
                ">": value > x,
            }[op]


@dataclass
class Results:
    rows: list[Row] = field(default_factory=list)
    details: dict[str, object] = field(default_factory=dict)
    variant_rows: list[dict[str, object]] = field(default_factory=list)

    def add(self, *args: object, **kw: object) -> Row:
        row = Row(*args, **kw)  # type: ignore[arg-type]
        self.rows.append(row)
        return row


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.quick: bool = args.quick
        self.work = Path(tempfile.mkdtemp(prefix="cacheproxy-bench-", dir=args.workdir))
        self.work.chmod(0o755)  # nginx workers run as an unprivileged user
        self.res = Results()
        self.uv = uv_binary()
        self.env = client_env()
        # Clients unpack into tmpfs: the machine's disk is shared and noisy, and what is
        # compared is the index, not the disk. pip's and uv's temporaries go there too.
        self.client_tmp = Path(
            tempfile.mkdtemp(prefix="cacheproxy-bench-clients-", dir=args.client_tmp)
        )
        self.env["TMPDIR"] = str(self.client_tmp)
        self.variants = ["default", *[v for v in args.variants if v != "default"]]
        self.proxies: dict[str, Proxy] = {}
        self.up: Upstream | None = None
        self.base: Baseline | None = None
        self.ds: Dataset | None = None

    # -- setup ---------------------------------------------------------------------------

    def setup(self) -> None:
        a = self.args
        self.source_digest = snapshot(self.work / "src")
        log(f"   proxy sources snapshot: {self.source_digest}")
        index_port, files_port = free_port(), free_port()
        with phase("data", log):
            self.ds = build(
                self.work / "data",
                f"http://127.0.0.1:{files_port}",
                quick=self.quick,
                huge_mb=a.huge_mb,
                shape=a.shape,
            )
            ds = self.ds
            log(
                f"   {len(ds.install)} wheels, {ds.install_bytes / MB:.1f} MB, largest "
                f"{ds.largest.size / MB:.1f} MB; big page {ds.big_files} files; "
                f"huge file {ds.huge.size / MB:.0f} MB"
            )
        self.up = Upstream(
            self.work / "nginx-upstream",
            self.ds.index_root,
            self.ds.files_root,
            index_port,
            files_port,
            a.cap,
            a.upstream_delay_ms,
        )
        self.up.start()

    def main_proxy(self, variant: str = "default") -> Proxy:
        """A long-lived proxy on the shared warm cache (one process per variant).

        If it has died since (it should not), that is recorded as a failure and it is
        started again on the same cache, so one crash does not void the whole run.
        """
        old = self.proxies.get(variant)
        if old is not None and old.proc.poll() is not None:
            self.failure(
                f"{variant} proxy exited with {old.proc.returncode}", RuntimeError("restarted"), old
            )
            del self.proxies[variant]
        if variant not in self.proxies:
            assert self.up is not None
            cache = self.work / "cache-warm"
            self.proxies[variant] = Proxy(
                self.up.index_url, self.work, variant=variant, cache_dir=cache
            )
        return self.proxies[variant]

    def teardown(self) -> None:
        for p in self.proxies.values():
            with contextlib.suppress(Exception):
                p.stop(remove_cache=False)
        for n in (self.base, self.up):
            if n is not None:
                with contextlib.suppress(Exception):
                    n.stop()
        shutil.rmtree(self.client_tmp, ignore_errors=True)
        if not self.args.keep:
            shutil.rmtree(self.work, ignore_errors=True)
        else:
            log(f"kept {self.work}")

    def failure(self, what: str, e: Exception, proxy: Proxy | None) -> None:
        """Record a failed step (and keep the proxy's log) instead of aborting the run."""
        RESULTS_DIR.mkdir(parents=True, exist_ok=True)
        saved = ""
        if proxy is not None and proxy.log_path.exists():
            time.sleep(0.3)
            dest = RESULTS_DIR / f"failure-{time.strftime('%Y%m%d-%H%M%S')}-{proxy.port}.log"
            shutil.copy(proxy.log_path, dest)
            saved = f" (proxy log: {dest})"
        msg = f"{what}: {str(e)[-600:]}{saved}"
        log(f"   FAILED {msg}")
        self.res.details.setdefault("failures", []).append(msg)  # type: ignore[union-attr]

    # -- clients -------------------------------------------------------------------------

    def install(self, tool: str, *, index: str | None = None, links: Path | None = None) -> float:
        assert self.ds is not None
        target = Path(tempfile.mkdtemp(prefix="target-", dir=self.client_tmp))
        if tool == "pip":
            cmd = [sys.executable, "-m", "pip", "install", "-q", "--no-cache-dir", "--no-deps"]
        else:
            cmd = [
                self.uv,
                "pip",
                "install",
                "-q",
                "--no-cache",
                "--no-deps",
                "--python",
                sys.executable,
            ]
        cmd += ["--target", str(target)]
        cmd += ["--index-url", index] if index else ["--no-index", "--find-links", str(links)]
        cmd += self.ds.pins
        t0 = time.perf_counter()
        out = subprocess.run(cmd, env=self.env, capture_output=True, text=True, timeout=900)
        elapsed = time.perf_counter() - t0
        try:
            if out.returncode != 0:
                raise RuntimeError(f"{tool} install failed: {(out.stderr or out.stdout)[-2000:]}")
            got = len(list(target.glob("*.dist-info")))
            if got != len(self.ds.pins):
                raise RuntimeError(f"{tool} installed {got} of {len(self.ds.pins)} distributions")
        finally:
            shutil.rmtree(target, ignore_errors=True)
        return elapsed

    # -- (2) cold installs ---------------------------------------------------------------

    def cold(self) -> None:
        assert self.up is not None
        assert self.ds is not None
        for tool in ("pip", "uv"):
            # uv's cold install is short and noisy: more repeats for the same wall time.
            reps = (
                self.args.cold_reps if tool == "pip" or self.quick else max(self.args.cold_reps, 5)
            )
            direct: list[float | None] = []
            proxied: list[float | None] = []
            logs: dict[str, list[LogLine]] = {}
            for rep in range(reps):
                order = ("direct", "proxy") if rep % 2 == 0 else ("proxy", "direct")
                for which in order:
                    mark = self.up.log_mark()
                    if which == "direct":
                        direct.append(self.install(tool, index=self.up.index_url))
                    else:
                        p = self._fresh_proxy()
                        try:
                            proxied.append(self.install(tool, index=p.index_url))
                            time.sleep(0.3)  # let the proxy's last commit land in the log
                        except RuntimeError as e:
                            proxied.append(None)
                            self.failure(f"cold {tool} through the proxy", e, p)
                        finally:
                            p.stop()
                    logs.setdefault(which, self.up.log_since(mark))
            d, c = median(direct), median(proxied)
            log(f"   {tool}: direct {d:.2f}s, cold proxy {c:.2f}s  (samples {direct} / {proxied})")
            self.res.add(
                "2 cold install",
                f"cold {tool} install (s)",
                c,
                d,
                "s",
                "<= 1.05",
                ratio=paired(proxied, direct),
                baseline_name="direct from upstream",
            )
            self.res.details[f"cold_{tool}"] = {"direct": direct, "proxy": proxied}
            up = _upstream_summary(logs["proxy"], self.ds)
            dn = _upstream_summary(logs["direct"], self.ds)
            self.res.details[f"cold_{tool}_upstream"] = {"proxy": up, "direct": dn}
            if tool == "pip":
                self.res.add(
                    "2 cold install",
                    "upstream HEAD requests (proxy, pip)",
                    up["head"],
                    None,
                    "",
                    "== 0",
                )
                self.res.add(
                    "2 cold install",
                    "upstream project-list requests",
                    up["root_list"],
                    None,
                    "",
                    "== 0",
                )
                self.res.add(
                    "2 cold install",
                    "upstream GETs per file (proxy ÷ direct)",
                    up["file_gets"],
                    dn["file_gets"],
                    "",
                    "== 1.00",
                    baseline_name="direct GETs",
                )
            self.res.add(
                "2 cold install",
                f"upstream connections, {tool} (proxy vs direct)",
                up["connections"],
                dn["connections"],
                "conns",
                baseline_name="direct",
                note=f"{up['requests']} requests over {up['connections']} connections",
            )
            self.res.variant_rows.append(
                {
                    "variant": "default",
                    "what": f"cold {tool} install s",
                    "proxy": c,
                    "nginx": d,
                    "ratio": paired(proxied, direct),
                }
            )
        # The variants' cold uv installs (the one cold figure they could change: CPU-bound).
        for v in self.variants[1:]:
            direct, proxied = [], []
            for _rep in range(max(self.args.cold_reps, 5) if not self.quick else 1):
                direct.append(self.install("uv", index=self.up.index_url))
                p = self._fresh_proxy(v)
                try:
                    proxied.append(self.install("uv", index=p.index_url))
                except RuntimeError as e:
                    proxied.append(None)
                    self.failure(f"cold uv through the {v} proxy", e, p)
                finally:
                    p.stop()
            self.res.details[f"cold_uv_{v}"] = {"direct": direct, "proxy": proxied}
            self.res.variant_rows.append(
                {
                    "variant": v,
                    "what": "cold uv install s",
                    "proxy": median(proxied),
                    "nginx": median(direct),
                    "ratio": paired(proxied, direct),
                }
            )

    # -- prime + baseline tree -----------------------------------------------------------

    def prime_and_baseline(self) -> None:
        assert self.up is not None
        assert self.ds is not None
        proxy = self.main_proxy()
        with phase("prime the warm cache (pip + uv through the proxy, big page)", log):
            self.install("pip", index=proxy.index_url)
            self.install("uv", index=proxy.index_url)
            for accept in (V1_JSON, "text/html"):
                st, _, _ = fetch_body(f"{proxy.url}/simple/{BIG_PROJECT}/", {"Accept": accept})
                if st != 200:
                    raise RuntimeError(f"big page: proxy answered {st}")
        # nginx's tree: the proxy's own page bytes (identity and gzip), the same files.
        root = self.work / "baseline-root"
        projects = [d.project for d in self.ds.install] + [BIG_PROJECT]
        for project in projects:
            d = root / "simple" / project
            d.mkdir(parents=True, exist_ok=True)
            for kind, accept in (("json", V1_JSON), ("html", "text/html")):
                for gz in (False, True):
                    hdrs = {"Accept": accept, "Accept-Encoding": "gzip" if gz else "identity"}
                    st, h, body = fetch_body(f"{proxy.url}/simple/{project}/", hdrs)
                    if st != 200 or h.get("x-cache") != "HIT":
                        raise RuntimeError(f"{project} {kind} gz={gz}: {st} {h.get('x-cache')}")
                    if gz != (h.get("content-encoding") == "gzip"):
                        raise RuntimeError(
                            f"{project}: unexpected Content-Encoding {h.get('content-encoding')}"
                        )
                    (d / f"index.{kind}{'.gz' if gz else ''}").write_bytes(body)
        os.symlink(self.ds.files_root / "packages", root / "packages")
        self.base = Baseline(
            self.work / "nginx-baseline", root, free_port(), self.args.nginx_workers
        )
        self.base.start()
        # Same bytes from both: a sanity check of the baseline's negotiation.
        for accept, gz in ((V1_JSON, True), ("text/html", False)):
            hdrs = {"Accept": accept, "Accept-Encoding": "gzip" if gz else "identity"}
            a = fetch_body(f"{proxy.url}/simple/{BIG_PROJECT}/", hdrs)
            b = fetch_body(f"{self.base.url}/simple/{BIG_PROJECT}/", hdrs)
            if a[2] != b[2]:
                raise RuntimeError(
                    f"nginx and the proxy disagree on the big page ({accept}, gz={gz})"
                )

    # -- (1) warm installs ---------------------------------------------------------------

    def warm(self) -> None:
        assert self.up is not None
        assert self.base is not None
        assert self.ds is not None
        reps = self.args.install_reps
        for tool in ("pip", "uv"):
            samples: dict[str, list[float | None]] = {"local": [], "nginx": [], "proxy": []}
            upstream_requests = 0
            for rep in range(reps):
                order = ["local", "nginx", "proxy"]
                order = order[rep % 3 :] + order[: rep % 3]
                for which in order:
                    if which == "local":
                        samples["local"].append(self.install(tool, links=self.ds.wheelhouse))
                    elif which == "nginx":
                        samples["nginx"].append(self.install(tool, index=self.base.index_url))
                    else:
                        proxy = self.main_proxy()
                        mark = self.up.log_mark()
                        try:
                            samples["proxy"].append(self.install(tool, index=proxy.index_url))
                        except RuntimeError as e:
                            samples["proxy"].append(None)
                            self.failure(f"warm {tool} through the proxy", e, proxy)
                        upstream_requests += len(self.up.log_since(mark))
            m = {k: median(v) for k, v in samples.items()}
            log(f"   {tool}: " + ", ".join(f"{k} {v:.2f}s" for k, v in m.items()))
            self.res.details[f"warm_{tool}"] = samples
            sec = "1 warm install"
            px, lo, ng = samples["proxy"], samples["local"], samples["nginx"]
            if tool == "pip":
                self.res.add(
                    sec,
                    "warm pip install (s)",
                    m["proxy"],
                    m["local"],
                    "s",
                    "<= 1.05",
                    ratio=paired(px, lo),
                    baseline_name="local wheelhouse",
                )
                self.res.add(
                    sec,
                    "warm pip install (s)",
                    m["proxy"],
                    m["nginx"],
                    "s",
                    ratio=paired(px, ng),
                    baseline_name="nginx static",
                )
            else:
                self.res.add(
                    sec,
                    "warm uv install (s)",
                    m["proxy"],
                    m["nginx"],
                    "s",
                    "<= 1.05",
                    ratio=paired(px, ng),
                    baseline_name="nginx static",
                )
                self.res.add(
                    sec,
                    "warm uv install (s)",
                    m["proxy"],
                    m["local"],
                    "s",
                    ratio=paired(px, lo),
                    baseline_name="local wheelhouse",
                )
            self.res.add(
                sec,
                f"nginx static {tool} install (s), for scale",
                m["nginx"],
                m["local"],
                "s",
                ratio=paired(ng, lo),
                baseline_name="local wheelhouse",
            )
            self.res.add(
                sec,
                f"upstream requests during warm {tool} installs",
                upstream_requests,
                None,
                "",
                "== 0",
            )

    # -- (3) large-file throughput -------------------------------------------------------

    def servers(self) -> list[tuple[str, str, Callable[[], list[int]]]]:
        assert self.base is not None
        out: list[tuple[str, str, Callable[[], list[int]]]] = [
            ("nginx", self.base.url, self.base.pids)
        ]
        for v in self.variants:
            p = self.main_proxy(v)
            out.append((v, p.url, p.pids))
        return out

    def throughput(self) -> None:
        assert self.ds is not None
        big = self.ds.largest
        path = f"/packages/{big.rest}"
        servers = self.servers()
        for name, url, _ in servers:
            r = fetch(url + path)
            if r.status != 200 or r.sha256 != big.sha256:
                raise RuntimeError(f"{name}: large wheel not served intact ({r.status}, {r.error})")
            if name != "nginx" and r.headers.get("x-cache") != "HIT":
                raise RuntimeError(f"{name}: large wheel is not a cache hit")
        data: dict[str, dict[int, list[dict[str, float]]]] = {n: {} for n, _, _ in servers}
        rss: dict[str, list[float]] = {n: [] for n, _, _ in servers}
        for conns in (1, 8, 32):
            for rep in range(self.args.reps):
                k = rep % len(servers)
                for name, url, pids in servers[k:] + servers[:k]:
                    if conns == 32:
                        with RssMonitor(pids) as mon:
                            r = wrk(url + path, conns, self.args.duration, script_dir=self.work)
                        rss[name].append(mon.peak_mib)
                    else:
                        r = wrk(url + path, conns, self.args.duration, script_dir=self.work)
                    data[name].setdefault(conns, []).append(r.as_dict())
        self.res.details["throughput"] = {"file_bytes": big.size, "runs": data, "rss_mib": rss}
        for conns in (1, 8, 32):
            ns = [d["mbps"] for d in data["nginx"][conns]]
            n = median(ns)
            for v in self.variants:
                ps = [d["mbps"] for d in data[v][conns]]
                p = median(ps)
                errs = sum(d["errors"] for d in data[v][conns])
                if v == "default":
                    self.res.add(
                        "3 large-file throughput",
                        f"{big.size / MB:.0f} MB wheel, {conns} client(s) (MB/s)",
                        p,
                        n,
                        "MB/s",
                        ">= 0.9" if conns == 8 else "",
                        ratio=paired(ps, ns),
                        baseline_name="nginx",
                        note=f"{errs} errors" if errs else "",
                    )
                self.res.variant_rows.append(
                    {
                        "variant": v,
                        "what": f"throughput {conns}c MB/s",
                        "proxy": p,
                        "nginx": n,
                        "ratio": paired(ps, ns),
                    }
                )
        n_rss = max(rss["nginx"]) if rss["nginx"] else None
        for v in self.variants:
            p_rss = max(rss[v]) if rss[v] else None
            if v == "default":
                self.res.add(
                    "6 peak RSS",
                    "peak RSS, 32 clients on the large wheel (MiB)",
                    p_rss,
                    n_rss,
                    "MiB",
                    "",
                    baseline_name="nginx, PSS of master + workers",
                    note="target: proxy <= 100 MiB",
                )
                if p_rss is not None:
                    self.res.rows[-1].met = p_rss <= 100
                    self.res.rows[-1].target = "proxy <= 100"
            self.res.variant_rows.append(
                {
                    "variant": v,
                    "what": "peak RSS 32c MiB",
                    "proxy": p_rss,
                    "nginx": n_rss,
                    "ratio": None,
                }
            )

    # -- (4) big project page ------------------------------------------------------------

    def pages(self) -> None:
        servers = self.servers()
        path = f"/simple/{BIG_PROJECT}/"
        data: dict[str, dict[str, list[dict[str, float]]]] = {n: {} for n, _, _ in servers}
        sizes: dict[str, dict[str, int]] = {}
        for scenario, (accept, gz, conditional) in PAGE_SCENARIOS.items():
            per_server: dict[str, dict[str, str]] = {}
            for name, url, _ in servers:
                hdrs = {"Accept": accept, "Accept-Encoding": "gzip" if gz else "identity"}
                st, h, body = fetch_body(url + path, hdrs)
                if st != 200 or (gz != (h.get("content-encoding") == "gzip")):
                    raise RuntimeError(f"{name} {scenario}: {st} {h.get('content-encoding')}")
                sizes.setdefault(scenario, {})[name] = len(body)
                if conditional:
                    hdrs["If-None-Match"] = h["etag"]
                    st2, _, _ = fetch_body(url + path, hdrs)
                    if st2 != 304:
                        raise RuntimeError(f"{name} {scenario}: expected 304, got {st2}")
                per_server[name] = hdrs
            for rep in range(self.args.reps):
                k = rep % len(servers)
                for name, url, _ in servers[k:] + servers[:k]:
                    r = wrk(
                        url + path,
                        self.args.page_conns,
                        self.args.duration,
                        per_server[name],
                        script_dir=self.work,
                    )
                    data[name].setdefault(scenario, []).append(r.as_dict())
        self.res.details["pages"] = {
            "files_on_page": self.ds.big_files if self.ds else None,
            "body_bytes": sizes,
            "runs": data,
            "connections": self.args.page_conns,
        }
        pct: dict[str, dict[str, tuple[float, float]]] = {}
        for scenario in PAGE_SCENARIOS:
            ns = [d["rps"] for d in data["nginx"][scenario]]
            n = median(ns)
            for v in self.variants:
                runs = data[v][scenario]
                ps = [d["rps"] for d in runs]
                p = median(ps)
                errs = sum(d["errors"] for d in runs)
                pct.setdefault(v, {})[scenario] = (
                    median([d["p50_ms"] for d in runs]),
                    median([d["p99_ms"] for d in runs]),
                )
                if v == "default":
                    size = sizes[scenario]["default"]
                    self.res.add(
                        "4 big project page",
                        f"{scenario} ({size / 1000:.0f} kB) req/s",
                        p,
                        n,
                        "req/s",
                        ">= 0.25",
                        ratio=paired(ps, ns),
                        baseline_name="nginx",
                        note=(
                            f"p50/p99 {pct[v][scenario][0]:.2f}/{pct[v][scenario][1]:.2f} ms "
                            "vs nginx "
                            f"{median([d['p50_ms'] for d in data['nginx'][scenario]]):.2f}/"
                            f"{median([d['p99_ms'] for d in data['nginx'][scenario]]):.2f} ms"
                            + (f"; {errs} errors" if errs else "")
                        ),
                    )
                self.res.variant_rows.append(
                    {
                        "variant": v,
                        "what": f"page {scenario} req/s",
                        "proxy": p,
                        "nginx": n,
                        "ratio": paired(ps, ns),
                    }
                )
        r304 = [d["rps"] for d in data["default"]["304 json.gz"]]
        r200 = [d["rps"] for d in data["default"]["json.gz"]]
        self.res.add(
            "4 big project page",
            "304 req/s ÷ 200 json.gz req/s (proxy)",
            median(r304),
            median(r200),
            "req/s",
            "> 1.0",
            ratio=paired(r304, r200),
            baseline_name="proxy 200",
        )
        self.res.details["pages_latency_ms"] = {
            "nginx": {
                s: (
                    median([d["p50_ms"] for d in data["nginx"][s]]),
                    median([d["p99_ms"] for d in data["nginx"][s]]),
                )
                for s in PAGE_SCENARIOS
            },
            **pct,
        }

    # -- (5) coalescing ------------------------------------------------------------------

    def _fresh_proxy(self, variant: str = "default") -> Proxy:
        """A proxy with an empty cache that has already served one miss: a long-running
        proxy meeting new packages, not a process answering its first request (which pays
        Python's lazy imports and the upstream session's first connection, ~0.1 s)."""
        assert self.up is not None
        p = Proxy(self.up.index_url, self.work, variant=variant)
        for _ in range(max(1, p.workers)):
            fetch_body(f"{p.url}/simple/huge/", {"Accept": V1_JSON})
        return p

    def _cold_proxy(self, variant: str, project: str) -> Proxy:
        assert self.up is not None
        p = Proxy(self.up.index_url, self.work, variant=variant)
        st, _, _ = fetch_body(f"{p.url}/simple/{project}/", {"Accept": V1_JSON})
        if st != 200:
            p.stop()
            raise RuntimeError(f"cold proxy: page {project} answered {st}")
        return p

    def coalesce(self) -> None:
        assert self.up is not None
        assert self.ds is not None
        f = self.ds.coalesce
        path = f"/packages/{f.rest}"
        clients = 16
        for v in self.variants:
            solo, direct, wall, ratios, served = [], [], [], [], []
            for _rep in range(self.args.coalesce_reps):
                r = fetch(self.ds.files_base + path)
                if r.status != 200 or r.sha256 != f.sha256:
                    raise RuntimeError(f"upstream served the coalesce file badly: {r.status}")
                direct.append(r.seconds)
                p = self._cold_proxy(v, "coalesce")
                try:
                    r = fetch(p.url + path)
                    if r.status != 200 or r.sha256 != f.sha256:
                        raise RuntimeError(f"{v}: solo cold download failed: {r.status} {r.error}")
                    solo.append(r.seconds)
                finally:
                    p.stop()
                p = self._cold_proxy(v, "coalesce")
                try:
                    mark = self.up.log_mark()
                    results, t = fetch_many(p.url + path, clients)
                    time.sleep(0.3)
                    lines = [
                        ln
                        for ln in self.up.log_since(mark)
                        if ln.uri == path and ln.method == "GET"
                    ]
                finally:
                    p.stop()
                wall.append(t)
                ratios.append(sum(ln.body_bytes for ln in lines) / f.size)
                served.append(
                    sum(
                        1
                        for r in results
                        if r.status == 200
                        and r.size == f.size
                        and r.sha256 == f.sha256
                        and r.headers.get("x-cache") == "MISS"
                    )
                )
            s, w = median(solo), median(wall)
            self.res.details[f"coalesce_{v}"] = {
                "solo_proxy_s": solo,
                "solo_direct_s": direct,
                "wall_16_s": wall,
                "upstream_bytes_ratio": ratios,
                "served": served,
            }
            if v == "default":
                sec = "5 coalescing"
                self.res.add(
                    sec,
                    f"16 cold clients, one {f.size / MB:.0f} MB file: upstream bytes ÷ size",
                    max(ratios),
                    None,
                    "×",
                    "== 1.00",
                    note=f"per repeat {ratios}",
                )
                self.res.add(
                    sec, "clients streamed (of 16, worst repeat)", min(served), None, "", "== 16"
                )
                self.res.add(
                    sec,
                    "16-client wall time ÷ one cold download (s)",
                    w,
                    s,
                    "s",
                    "<= 1.2",
                    ratio=paired(wall, solo),
                    baseline_name="solo through proxy",
                )
                self.res.add(
                    sec,
                    "one cold download through proxy ÷ direct (s)",
                    s,
                    median(direct),
                    "s",
                    "<= 1.05",
                    ratio=paired(solo, direct),
                    baseline_name="direct from upstream",
                )
            self.res.variant_rows.append(
                {
                    "variant": v,
                    "what": "coalesce upstream bytes ÷ size",
                    "proxy": max(ratios),
                    "nginx": None,
                    "ratio": None,
                }
            )
            self.res.variant_rows.append(
                {
                    "variant": v,
                    "what": "coalesce wall ÷ solo",
                    "proxy": w,
                    "nginx": s,
                    "ratio": paired(wall, solo),
                }
            )

    # -- (6) peak RSS during a cold huge download ----------------------------------------

    def rss(self) -> None:
        assert self.up is not None
        assert self.ds is not None
        f = self.ds.huge
        path = f"/packages/{f.rest}"
        for v in self.variants:
            p = self._cold_proxy(v, "huge")
            try:
                with RssMonitor(p.pids) as mon:
                    r = fetch(p.url + path, timeout=600)
                if r.status != 200 or r.size != f.size or r.sha256 != f.sha256:
                    raise RuntimeError(f"{v}: huge download failed: {r.status} {r.size} {r.error}")
            finally:
                p.stop()
            self.res.details[f"rss_huge_{v}"] = {
                "peak_mib": mon.peak_mib,
                "idle_mib": mon.start_mib,
                "seconds": r.seconds,
                "mbps": f.size / MB / r.seconds,
            }
            if v == "default":
                self.res.add(
                    "6 peak RSS",
                    f"peak RSS, cold {f.size / MB:.0f} MB download (MiB)",
                    mon.peak_mib,
                    None,
                    "MiB",
                    "<= 100",
                    note=f"idle {mon.start_mib:.0f} MiB; "
                    f"{f.size / MB / r.seconds:.0f} MB/s uncapped",
                )
            self.res.variant_rows.append(
                {
                    "variant": v,
                    "what": "peak RSS cold huge MiB",
                    "proxy": mon.peak_mib,
                    "nginx": None,
                    "ratio": None,
                }
            )

    # -- run -----------------------------------------------------------------------------

    def run(self) -> int:
        phases = self.args.phases
        t0 = time.perf_counter()
        try:
            self.setup()
            if "cold" in phases:
                with phase("(2) cold installs", log):
                    self.cold()
            self.prime_and_baseline()
            for v in self.variants[1:]:
                self.main_proxy(v)
            steps = [
                ("warm", "(1) warm installs", self.warm),
                ("throughput", "(3) large-file throughput (+ RSS at 32 clients)", self.throughput),
                ("pages", "(4) big project page", self.pages),
                ("coalesce", "(5) 16 concurrent cold misses", self.coalesce),
                ("rss", "(6) peak RSS during a cold huge download", self.rss),
            ]
            for key, title, fn in steps:
                if key in phases:
                    with phase(title, log):
                        fn()
        finally:
            self.teardown()
        self.res.details["total_seconds"] = round(time.perf_counter() - t0, 1)
        failures = self.res.details.get("failures", [])
        self.res.add(
            "-",
            "failed client runs through the proxy (see details.failures)",
            len(failures),
            None,
            "",
            "== 0",
        )  # type: ignore[arg-type]
        return 0


def _upstream_summary(lines: list[LogLine], ds: Dataset) -> dict[str, int]:
    files = [
        ln
        for ln in lines
        if ln.host == "files" and ln.method == "GET" and not ln.uri.endswith(".metadata")
    ]
    per_uri = Counter(ln.uri for ln in files)
    wanted = {f"/packages/{d.rest}" for d in ds.install}
    return {
        "requests": len(lines),
        "head": sum(1 for ln in lines if ln.method == "HEAD"),
        "root_list": sum(
            1 for ln in lines if ln.host == "index" and ln.uri.split("?")[0] == "/simple/"
        ),
        "page_gets": sum(1 for ln in lines if ln.host == "index" and ln.method == "GET"),
        "metadata_gets": sum(1 for ln in lines if ln.uri.endswith(".metadata")),
        "file_gets": len(files),
        "files_fetched_twice": sum(1 for c in per_uri.values() if c > 1),
        "files_missing": len(wanted - set(per_uri)),
        "connections": len({(ln.host, ln.connection) for ln in lines}),
        "file_bytes": sum(ln.body_bytes for ln in files),
    }


# -- report ------------------------------------------------------------------------------


def _fmt(x: float | None, unit: str = "") -> str:
    if x is None:
        return "—"
    if unit == "×":
        return f"{x:.2f}"
    if isinstance(x, int) or (abs(x) >= 100 and unit not in ("s",)):
        return f"{x:,.0f}"
    if abs(x) >= 10:
        return f"{x:.1f}"
    return f"{x:.3g}" if unit != "s" else f"{x:.2f}"


def table(res: Results) -> str:
    head = ["#", "measurement", "proxy", "baseline", "ratio", "target", "met?"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in res.rows:
        base = (
            "—"
            if r.baseline is None
            else f"{_fmt(r.baseline, r.unit)} ({r.baseline_name})"
            if r.baseline_name
            else _fmt(r.baseline, r.unit)
        )
        ratio = "—" if r.ratio is None else f"{r.ratio:.2f}"
        met = "—" if r.met is None else ("yes" if r.met else "**NO**")
        meas = r.measurement + (f" — {r.note}" if r.note else "")
        lines.append(
            f"| {r.section.split()[0]} | {meas} | {_fmt(r.proxy, r.unit)} | {base} "
            f"| {ratio} | {r.target or '—'} | {met} |"
        )
    return "\n".join(lines)


def variant_table(res: Results, variants: list[str]) -> str:
    whats: list[str] = []
    for vr in res.variant_rows:
        if vr["what"] not in whats:
            whats.append(str(vr["what"]))
    lines = ["| measurement | " + " | ".join(variants) + " |", "|---|" + "---|" * len(variants)]
    for w in whats:
        cells = []
        for v in variants:
            vr = next((x for x in res.variant_rows if x["variant"] == v and x["what"] == w), None)
            if vr is None:
                cells.append("—")
                continue
            val = _fmt(vr["proxy"])  # type: ignore[arg-type]
            if vr["ratio"] is not None:
                val += f" ({vr['ratio']:.2f}×)"
            cells.append(val)
        lines.append(f"| {w} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def versions() -> dict[str, str]:
    def v(dist: str) -> str:
        try:
            return metadata.version(dist)
        except metadata.PackageNotFoundError:
            return "-"

    rev = "?"
    with contextlib.suppress(Exception):
        rev = subprocess.run(
            ["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(REPO), "status", "--porcelain", "--", "cacheproxy"],
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
        if dirty:
            rev += " (+ uncommitted changes in cacheproxy/)"
    return {
        "python": sys.version.split()[0],
        "aiohttp": v("aiohttp"),
        "uvloop": v("uvloop"),
        "nginx": nginx_version(),
        "pip": v("pip"),
        "uv": tool_version([uv_binary(), "--version"]).removeprefix("uv "),
        "wrk": wrk_version(),
        "cacheproxy": f"{v('cacheproxy')} @ {rev}",
    }


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument(
        "--quick", action="store_true", help="small smoke run (< 60 s); figures not meaningful"
    )
    p.add_argument("--reps", type=int, help="repeats of each load test (default 3; quick 1)")
    p.add_argument(
        "--install-reps", type=int, help="repeats of each warm install (default 5; quick 1)"
    )
    p.add_argument(
        "--cold-reps", type=int, help="repeats of each cold pip install (default 3, uv 5; quick 1)"
    )
    p.add_argument(
        "--coalesce-reps", type=int, help="repeats of the coalescing test (default 3; quick 1)"
    )
    p.add_argument("--duration", type=float, help="seconds per wrk run (default 4; quick 1)")
    p.add_argument("--page-conns", type=int, default=16, help="connections for the page test (16)")
    p.add_argument(
        "--cap",
        default="40m",
        help="upstream file host's per-connection rate (nginx limit_rate; 40m = 40 MB/s)",
    )
    p.add_argument(
        "--upstream-delay-ms",
        type=float,
        default=10.0,
        help="fixed delay before every upstream response (10)",
    )
    p.add_argument(
        "--huge-mb", type=int, help="size of the cold-download RSS file (default 500; quick 32)"
    )
    p.add_argument(
        "--shape",
        choices=["real", "pad"],
        default="real",
        help="wheel contents: real (many deflated members, Python source) "
        "or pad (one incompressible member)",
    )
    p.add_argument(
        "--variants",
        default="",
        help="also measure: uvloop, workers2, uvloop+workers2 (comma-separated)",
    )
    p.add_argument("--nginx-workers", default="auto", help="baseline nginx worker_processes (auto)")
    p.add_argument("--phases", default=",".join(PHASES), help=f"subset of {','.join(PHASES)}")
    p.add_argument(
        "--workdir",
        default=None,
        help="parent of the run's temp dir: data, nginx, proxy caches (default: system temp)",
    )
    p.add_argument(
        "--client-tmp",
        default="/dev/shm" if os.access("/dev/shm", os.W_OK) else None,
        help="where pip/uv unpack and keep temporaries (default /dev/shm)",
    )
    p.add_argument("--keep", action="store_true", help="keep the temp dir")
    p.add_argument(
        "--out",
        type=Path,
        default=None,
        help="results JSON (default bench/results/run-<time>.json)",
    )
    a = p.parse_args(argv)
    q = a.quick
    a.reps = a.reps or (1 if q else 3)
    a.install_reps = a.install_reps or (1 if q else 5)
    a.cold_reps = a.cold_reps or (1 if q else 3)
    a.coalesce_reps = a.coalesce_reps or (1 if q else 3)
    a.duration = a.duration or (1.0 if q else 4.0)
    a.huge_mb = a.huge_mb or (32 if q else 500)
    a.variants = [v.strip() for v in a.variants.split(",") if v.strip()]
    for v in a.variants:
        if v not in VARIANTS:
            p.error(f"unknown variant {v!r}; choose from {', '.join(VARIANTS)}")
    a.phases = {x.strip() for x in a.phases.split(",") if x.strip()}
    if unknown := a.phases - set(PHASES):
        p.error(f"unknown phases: {', '.join(sorted(unknown))}")
    return a


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    missing = [n for n, ok in (("nginx", have_nginx()), ("wrk", have_wrk())) if not ok]
    if missing:
        print(
            f"bench: needs {' and '.join(missing)}: "
            "apt-get install -y nginx-light libnginx-mod-http-echo wrk",
            file=sys.stderr,
        )
        return 2
    meta = {
        "command": " ".join(
            [
                Path(sys.executable).name,
                "bench/run.py",
                *(argv if argv is not None else sys.argv[1:]),
            ]
        ),
        "started": time.strftime("%Y-%m-%d %H:%M:%S %z"),
        "versions": versions(),
        "machine": machine(),
        "settings": {
            k: (sorted(v) if isinstance(v, set) else str(v) if isinstance(v, Path) else v)
            for k, v in vars(args).items()
        },
    }
    log(f"cacheproxy bench: {meta['command']}")
    bench = Bench(args)
    bench.run()
    res = bench.res
    meta["versions"]["cacheproxy"] += f", sources {getattr(bench, 'source_digest', '?')}"
    meta["machine"]["loadavg_at_end"] = " ".join(f"{x:.2f}" for x in os.getloadavg())
    out_table = table(res)
    variants = bench.variants
    text = [
        f"command: {meta['command']}",
        "versions: " + ", ".join(f"{k} {v}" for k, v in meta["versions"].items()),
        "machine: " + ", ".join(f"{k} {v}" for k, v in meta["machine"].items()),
        f"total: {res.details.get('total_seconds')} s"
        + ("  (QUICK: smoke run, figures not meaningful)" if args.quick else ""),
        "",
        out_table,
    ]
    if len(variants) > 1:
        text += ["", "variants (ratio to nginx in the same run):", "", variant_table(res, variants)]
    report = "\n".join(text)
    print(report)
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    path = args.out or RESULTS_DIR / f"run-{stamp}{'-quick' if args.quick else ''}.json"
    payload = {
        "meta": meta,
        "rows": [vars(r) for r in res.rows],
        "variants": res.variant_rows,
        "details": res.details,
    }
    path.write_text(json.dumps(payload, indent=2, default=str))
    path.with_suffix(".md").write_text(report + "\n")
    log(f"results: {path} (+ .md)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
