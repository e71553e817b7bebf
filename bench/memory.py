"""Peak memory of ``cacheproxy serve`` with index pages of real size (issue #16, part 2).

    python bench/memory.py                      # 3 repeats, 1 worker (the default), ~30 s
    python bench/memory.py --workers 2          # the same with --workers 2
    python bench/memory.py --stages             # in-process: memory of each step of one miss

The fake index's small pages never showed it: real pages are large. This builds, locally
and deterministically (no network), the pages of a 39-project install set shaped like the
real ones: a numpy-like project (4,415 files: 130 releases of CPython/platform wheels and
sdists; 2.33 MB of PEP 691 JSON, more than the 1.9 MB the issue measured for numpy), a
botocore-like one (5,200 files: 2,600 releases of a pure wheel and an sdist; 2.47 MB), and
37 ordinary projects (8 to 1,500 files). Every file entry carries what the real index
sends: sha256, size, upload-time, requires-python, core-metadata and
data-dist-info-metadata (PEP 714) with a hash on recent files, provenance (PEP 740) on the
newest, a few yanked with a reason; each page has api-version 1.4, versions (PEP 700),
project-status (PEP 792) and _last-serial.

An in-process upstream (aiohttp, on loopback) serves them as JSON or HTML (chosen from
Accept), gzipped when asked, with ETags. The proxy runs as a real process
(``python -m cacheproxy serve``, empty cache). Then, against it:

* cold-uv: every page at once as uv asks (PEP 691 JSON, gzip);
* cold-rest: the three other representations (HTML gzip, JSON and HTML identity);
* warm: three rounds of all four representations of every page, 16 clients at once.

For every serving process it prints idle RSS, the peak of each phase (VmHWM, reset with
``/proc/PID/clear_refs`` before the phase, and the larger of that and a 20 ms sampler),
and RSS two seconds after the phase. With ``--workers 2``, the supervisor is reported too,
and two totals: summed RSS (pages the forked processes share count once per process) and
summed PSS (each shared page split among its sharers: what the group really holds).
"""

from __future__ import annotations

import argparse
import asyncio
import gzip
import hashlib
import html
import json
import random
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from common import REPO, _pss_kib, _status_kib, fetch, free_port
from proxy import Proxy

JSON_TYPE = "application/vnd.pypi.simple.v1+json"
HTML_TYPE = "application/vnd.pypi.simple.v1+html"
# What uv sends (and pip, with text/html;q=0.01 too): JSON first.
CLIENT_ACCEPT = {
    "json": f"{JSON_TYPE}, {HTML_TYPE};q=0.2, text/html;q=0.01",
    "html": f"{HTML_TYPE}, text/html;q=0.01",
}
REPRESENTATIONS = [("json", True), ("html", True), ("json", False), ("html", False)]
WARM_ROUNDS = 3
CLIENTS = 16

# 37 ordinary projects of the set: how many files each page lists.
ORDINARY_FILES = [
    1500, 1200, 900, 800, 700, 600, 520, 450, 400, 360, 320, 280, 250, 220, 200, 180, 160,
    140, 120, 110, 100, 90, 80, 70, 60, 52, 45, 40, 35, 30, 26, 22, 18, 15, 12, 10, 8,
]  # fmt: skip
NUMPY_FILES = 4415
BOTOCORE_RELEASES = 2600  # x (wheel + sdist) = 5,200 files

_PYS = ["cp39", "cp310", "cp311", "cp312", "cp313", "cp313t"]
_PLATS = [
    "macosx_10_13_x86_64",
    "macosx_11_0_arm64",
    "macosx_14_0_arm64",
    "macosx_14_0_x86_64",
    "manylinux_2_17_aarch64.manylinux2014_aarch64",
    "manylinux_2_17_x86_64.manylinux2014_x86_64",
    "musllinux_1_2_aarch64",
    "musllinux_1_2_x86_64",
    "win32",
    "win_amd64",
    "win_arm64",
]


# --------------------------------------------------------------------------- pages


@dataclass
class Entry:
    filename: str
    path: str  # under /packages/ on the upstream
    sha256: str
    size: int
    upload_time: str
    requires_python: str | None
    metadata_sha256: str | None
    provenance: bool
    yanked: bool | str


@dataclass
class Project:
    name: str
    versions: list[str]
    files: list[Entry]
    bodies: dict[str, bytes] = field(default_factory=dict)  # json, html, json.gz, html.gz
    etag: str = ""


def _hex(rng: random.Random, n: int = 64) -> str:
    return f"{rng.getrandbits(n * 4):0{n}x}"


def _entry(rng: random.Random, filename: str, release: int, releases: int, rp: str | None) -> Entry:
    blob = _hex(rng, 64)
    recent = release > releases * 0.8
    yanked: bool | str = False
    if rng.random() < 0.004:
        yanked = rng.choice([True, "broken wheels on some platforms, use the next release"])
    year = 2010 + release * 15 // max(releases, 1)
    return Entry(
        filename=filename,
        path=f"{blob[:2]}/{blob[2:4]}/{blob[4:]}/{filename}",
        sha256=_hex(rng),
        size=rng.randrange(20_000, 40_000_000),
        upload_time=(
            f"{year}-{rng.randrange(1, 13):02d}-{rng.randrange(1, 29):02d}T"
            f"{rng.randrange(24):02d}:{rng.randrange(60):02d}:{rng.randrange(60):02d}."
            f"{rng.randrange(10**6):06d}Z"
        ),
        requires_python=rp,
        metadata_sha256=_hex(rng) if recent else None,
        provenance=release > releases * 0.97,
        yanked=yanked,
    )


def numpy_like(rng: random.Random, n_files: int = NUMPY_FILES) -> Project:
    """Releases of CPython wheels on every platform, newest with the most tags, and sdists."""
    files: list[Entry] = []
    versions: list[str] = []
    releases = 130
    for r in range(releases):
        version = f"{1 + r // 60}.{(r // 6) % 10 + r // 60 * 10}.{r % 6}"
        versions.append(version)
        rp = None if r < 40 else f">={_PYS[min(r * 4 // releases, 3)][2]}.{9 + r * 4 // releases}"
        files.append(_entry(rng, f"numpy-{version}.tar.gz", r, releases, rp))
        for py in _PYS[: 3 + r % 4]:
            for plat in _PLATS:
                name = f"numpy-{version}-{py}-{py}-{plat}.whl"
                files.append(_entry(rng, name, r, releases, rp))
    return Project("numpy", versions, files[-n_files:])


def botocore_like(rng: random.Random, releases: int = BOTOCORE_RELEASES) -> Project:
    files: list[Entry] = []
    versions: list[str] = []
    for r in range(releases):
        version = f"1.{r // 100}.{r % 100}"
        versions.append(version)
        rp = None if r < releases // 2 else ">= 3.8"
        files.append(_entry(rng, f"botocore-{version}-py3-none-any.whl", r, releases, rp))
        files.append(_entry(rng, f"botocore-{version}.tar.gz", r, releases, rp))
    return Project("botocore", versions, files)


def ordinary(rng: random.Random, name: str, n_files: int) -> Project:
    files: list[Entry] = []
    versions: list[str] = []
    r = 0
    releases = max(1, n_files // 3)
    while len(files) < n_files:
        version = f"{r // 20}.{r % 20}.0"
        versions.append(version)
        stem = name.replace("-", "_")
        rp = ">=3.8" if r % 2 else None
        files.append(_entry(rng, f"{stem}-{version}-py3-none-any.whl", r, releases, rp))
        files.append(_entry(rng, f"{stem}-{version}.tar.gz", r, releases, rp))
        if r % 3 == 0:
            name3 = f"{stem}-{version}-cp312-cp312-manylinux_2_17_x86_64.whl"
            files.append(_entry(rng, name3, r, releases, rp))
        r += 1
    return Project(name, versions, files[:n_files])


def _json_file(e: Entry, origin: str) -> dict[str, object]:
    meta: object = {"sha256": e.metadata_sha256} if e.metadata_sha256 else False
    return {
        "core-metadata": meta,
        "data-dist-info-metadata": meta,
        "filename": e.filename,
        "hashes": {"sha256": e.sha256},
        "provenance": f"{origin}/integrity/{e.path}/provenance" if e.provenance else None,
        "requires-python": e.requires_python,
        "size": e.size,
        "upload-time": e.upload_time,
        "url": f"{origin}/packages/{e.path}",
        "yanked": e.yanked,
    }


def _html_anchor(e: Entry, origin: str) -> str:
    attrs = f' href="{origin}/packages/{e.path}#sha256={e.sha256}"'
    if e.requires_python:
        attrs += f' data-requires-python="{html.escape(e.requires_python)}"'
    if e.yanked is not False:
        attrs += f' data-yanked="{"" if e.yanked is True else html.escape(str(e.yanked))}"'
    if e.metadata_sha256:
        attrs += f' data-dist-info-metadata="sha256={e.metadata_sha256}"'
        attrs += f' data-core-metadata="sha256={e.metadata_sha256}"'
    if e.provenance:
        attrs += f' data-provenance="{origin}/integrity/{e.path}/provenance"'
    return f"    <a{attrs}>{e.filename}</a><br />"


def render(p: Project, origin: str) -> None:
    """The upstream's own bodies of ``p``, in the real index's shape (PEP 691/700/792)."""
    doc = {
        "files": [_json_file(e, origin) for e in p.files],
        "meta": {"_last-serial": 20000000 + len(p.files), "api-version": "1.4"},
        "name": p.name,
        "project-status": {"status": "active"},
        "versions": p.versions,
    }
    body_json = json.dumps(doc, separators=(",", ":")).encode()
    anchors = "\n".join(_html_anchor(e, origin) for e in p.files)
    body_html = (
        "<!DOCTYPE html>\n<html>\n  <head>\n"
        '    <meta name="pypi:repository-version" content="1.4">\n'
        '    <meta name="pypi:project-status" content="active">\n'
        f"    <title>Links for {p.name}</title>\n  </head>\n  <body>\n"
        f"    <h1>Links for {p.name}</h1>\n{anchors}\n  </body>\n</html>\n"
    ).encode()
    p.bodies = {"json": body_json, "html": body_html}
    p.bodies.update({f"{k}.gz": gzip.compress(v, 6, mtime=0) for k, v in list(p.bodies.items())})
    p.etag = '"' + hashlib.sha256(body_json).hexdigest()[:32] + '"'


def build_set(origin: str, seed: int = 16) -> dict[str, Project]:
    rng = random.Random(seed)
    projects = [numpy_like(rng), botocore_like(rng)]
    projects += [ordinary(rng, f"project-{i:02d}", n) for i, n in enumerate(ORDINARY_FILES)]
    for p in projects:
        render(p, origin)
    return {p.name: p for p in projects}


# --------------------------------------------------------------------------- upstream


class Upstream:
    """The index stand-in: ``/simple/<p>/`` by Accept and Accept-Encoding, in a thread."""

    def __init__(self, port: int, projects: dict[str, Project]) -> None:
        self.port = port
        self.projects = projects
        self.requests = 0
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        if not self._ready.wait(15):
            raise RuntimeError("upstream did not start")

    def _run(self) -> None:
        from aiohttp import web

        async def page(request: web.Request) -> web.StreamResponse:
            self.requests += 1
            p = self.projects.get(request.match_info["name"])
            if p is None:
                return web.Response(status=404, text="no such project")
            if request.headers.get("If-None-Match") == p.etag:
                return web.Response(status=304, headers={"ETag": p.etag})
            accept = request.headers.get("Accept", "")
            kind = "json" if JSON_TYPE in accept else "html"
            ctype = JSON_TYPE if kind == "json" else HTML_TYPE
            headers = {"ETag": p.etag, "Content-Type": ctype, "Vary": "Accept, Accept-Encoding"}
            if "gzip" in request.headers.get("Accept-Encoding", ""):
                headers["Content-Encoding"] = "gzip"
                return web.Response(body=p.bodies[f"{kind}.gz"], headers=headers)
            return web.Response(body=p.bodies[kind], headers=headers)

        async def start() -> None:
            app = web.Application()
            app.router.add_get("/simple/{name}/", page)
            runner = web.AppRunner(app, access_log=None)
            await runner.setup()
            await web.TCPSite(runner, "127.0.0.1", self.port).start()

        asyncio.set_event_loop(self._loop)
        self._loop.run_until_complete(start())
        self._ready.set()
        self._loop.run_forever()

    @property
    def index_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/simple/"


# --------------------------------------------------------------------------- memory


def _kib(pid: int, name: str) -> int:
    return _status_kib(pid, name)


class Peaks:
    """Per-process peak RSS over a ``with`` block: VmHWM reset at its start, and a 20 ms
    sampler of VmRSS (per process, and of their sum)."""

    def __init__(self, pids: Sequence[int]) -> None:
        self.pids = list(pids)
        self.sampled = dict.fromkeys(self.pids, 0)
        self.sum_sampled = 0
        self.pss_sampled = 0
        self.hwm: dict[int, int] = {}
        self.reset = True
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            total = 0
            for pid in self.pids:
                rss = _kib(pid, "VmRSS")
                self.sampled[pid] = max(self.sampled[pid], rss)
                total += rss
            self.sum_sampled = max(self.sum_sampled, total)
            if len(self.pids) > 1:  # forked pages shared by several count once here
                pss = sum(_pss_kib(pid) for pid in self.pids)
                self.pss_sampled = max(self.pss_sampled, pss)
            self._stop.wait(0.02)

    def __enter__(self) -> Peaks:
        for pid in self.pids:
            try:
                with open(f"/proc/{pid}/clear_refs", "w") as f:
                    f.write("5")
            except OSError:
                self.reset = False
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)
        for pid in self.pids:
            hwm = _kib(pid, "VmHWM") if self.reset else 0
            self.hwm[pid] = max(hwm, self.sampled[pid])


def rss_now(pids: Sequence[int]) -> dict[int, int]:
    return {pid: _kib(pid, "VmRSS") for pid in pids}


# --------------------------------------------------------------------------- clients


def get_page(proxy_url: str, name: str, kind: str, gz: bool) -> tuple[int, int, str]:
    headers = {"Accept": CLIENT_ACCEPT[kind]}
    if gz:
        headers["Accept-Encoding"] = "gzip, deflate"
    else:
        headers["Accept-Encoding"] = "identity"
    r = fetch(f"{proxy_url}/simple/{name}/", headers, timeout=120)
    if r.error or r.status != 200:
        raise RuntimeError(f"{name} {kind} gzip={gz}: status {r.status} {r.error or ''}")
    return r.status, r.size, r.headers.get("x-cache", "")


def run_all(
    pool: ThreadPoolExecutor, url: str, names: Sequence[str], reps: Sequence[tuple[str, bool]]
) -> list[str]:
    jobs = [pool.submit(get_page, url, n, k, gz) for k, gz in reps for n in names]
    return [j.result()[2] for j in jobs]


# --------------------------------------------------------------------------- one run


@dataclass
class Figures:
    pids: dict[int, str]  # pid -> role
    idle: dict[int, int]
    peaks: dict[str, dict[int, int]] = field(default_factory=dict)  # phase -> pid -> KiB
    after: dict[str, dict[int, int]] = field(default_factory=dict)
    sum_peaks: dict[str, int] = field(default_factory=dict)
    pss_peaks: dict[str, int] = field(default_factory=dict)
    pss_idle: int = 0
    pss_after: dict[str, int] = field(default_factory=dict)
    upstream_requests: int = 0
    misses: int = 0

    def record(self, phase: str, peaks: Peaks, pids: Sequence[int], settle: float) -> None:
        self.peaks[phase] = peaks.hwm
        self.sum_peaks[phase] = peaks.sum_sampled
        self.pss_peaks[phase] = peaks.pss_sampled
        time.sleep(settle)
        self.after[phase] = rss_now(pids)
        self.pss_after[phase] = sum(_pss_kib(pid) for pid in pids)


def one_run(
    upstream: Upstream, names: Sequence[str], work: Path, workers: int, settle: float
) -> Figures:
    variant = "workers2" if workers == 2 else "default"
    proxy = Proxy(upstream.index_url, work, variant=variant)
    try:
        serving = proxy.worker_pids()
        roles = {pid: f"worker {i + 1}" for i, pid in enumerate(serving)}
        if workers == 1:
            roles = {proxy.proc.pid: "process"}
        else:
            roles = {proxy.proc.pid: "supervisor", **roles}
        pids = list(roles)
        time.sleep(settle)
        figures = Figures(roles, rss_now(pids))
        figures.pss_idle = sum(_pss_kib(pid) for pid in pids)
        before = upstream.requests
        caches: list[str] = []
        # cold-uv: every page at once, as uv asks (pip asks the same, one at a time).
        with ThreadPoolExecutor(max(len(names), CLIENTS)) as burst, Peaks(pids) as peaks:
            caches += run_all(burst, proxy.url, names, REPRESENTATIONS[:1])
        figures.record("cold-uv", peaks, pids, settle)
        # cold-rest: the other three representations, 16 clients at once.
        with ThreadPoolExecutor(CLIENTS) as pool, Peaks(pids) as peaks:
            caches += run_all(pool, proxy.url, names, REPRESENTATIONS[1:])
        figures.record("cold-rest", peaks, pids, settle)
        figures.misses = caches.count("MISS")
        figures.upstream_requests = upstream.requests - before
        with ThreadPoolExecutor(CLIENTS) as pool, Peaks(pids) as peaks:
            for _ in range(WARM_ROUNDS):
                run_all(pool, proxy.url, names, REPRESENTATIONS)
        figures.record("warm", peaks, pids, settle)
        return figures
    finally:
        proxy.stop()


def _mib(kib: float) -> str:
    return f"{kib / 1024:.1f}"


PHASES = ("cold-uv", "cold-rest", "warm")


def report(runs: list[Figures], log: Callable[[str], None]) -> None:
    log("")
    log("RSS in MiB; peak = VmHWM over the phase; after = VmRSS when the phase has settled")
    log("")
    head = " | ".join(f"{p} peak | after {p}" for p in PHASES)
    log(f"| run | process | idle | {head} |")
    log("|---|---|---|" + "---|---|" * len(PHASES))
    for i, f in enumerate(runs, 1):
        for pid, role in f.pids.items():
            cells = [_mib(f.idle[pid])]
            for p in PHASES:
                cells += [_mib(f.peaks[p][pid]), _mib(f.after[p][pid])]
            log(f"| {i} | {role} | " + " | ".join(cells) + " |")
        if len(f.pids) > 1:
            cells = [_mib(sum(f.idle.values()))]
            for p in PHASES:
                cells += [_mib(f.sum_peaks[p]), _mib(sum(f.after[p].values()))]
            log(f"| {i} | total RSS (sampled sum) | " + " | ".join(cells) + " |")
            cells = [_mib(f.pss_idle)]
            for p in PHASES:
                cells += [_mib(f.pss_peaks[p]), _mib(f.pss_after[p])]
            log(f"| {i} | total PSS (sampled sum) | " + " | ".join(cells) + " |")
    log("")
    for i, f in enumerate(runs, 1):
        log(f"run {i}: upstream page requests {f.upstream_requests}, cold misses {f.misses}")
    for p in PHASES:
        peaks = [max(v for q, v in f.peaks[p].items() if f.pids[q] != "supervisor") for f in runs]
        log(
            f"{p}: peak of the largest serving process, MiB: "
            + ", ".join(_mib(v) for v in peaks)
            + f" (median {_mib(statistics.median(peaks))})"
        )


# --------------------------------------------------------------------------- stages


def stages(projects: dict[str, Project], upstream_url: str) -> None:
    """In this process, with tracemalloc: what each step of one miss of the largest pages
    allocates at its peak and keeps afterwards (Python allocations only)."""
    import tracemalloc

    from packaging.utils import canonicalize_name
    from yarl import URL

    from cacheproxy.proxy.pages import render_project
    from cacheproxy.simple.parse import parse_project_page
    from cacheproxy.store.records import name_bodies

    for name in ("numpy", "botocore"):
        body = projects[name].bodies["json"]
        url = URL(f"{upstream_url}{name}/")
        print(
            f"\n{name}: upstream JSON {len(body) / 1e6:.2f} MB, {len(projects[name].files)} files"
        )
        tracemalloc.start()
        tracemalloc.reset_peak()
        t = time.perf_counter()
        page = parse_project_page(body, JSON_TYPE, url, canonicalize_name(name))
        cur, peak = tracemalloc.get_traced_memory()
        print(
            f"  parse          peak {peak / 2**20:6.1f} MiB, kept {cur / 2**20:6.1f} MiB"
            f"  {time.perf_counter() - t:.3f} s"
        )
        tracemalloc.reset_peak()
        t = time.perf_counter()
        rendered = render_project(page, lambda u: True)
        cur, peak = tracemalloc.get_traced_memory()
        print(
            f"  render+gzip    peak {peak / 2**20:6.1f} MiB, kept {cur / 2**20:6.1f} MiB"
            f"  {time.perf_counter() - t:.3f} s"
        )
        tracemalloc.reset_peak()
        named, blobs = name_bodies(rendered.bodies)
        cur, peak = tracemalloc.get_traced_memory()
        print(f"  name bodies    peak {peak / 2**20:6.1f} MiB, kept {cur / 2**20:6.1f} MiB")
        sizes = ", ".join(f"{k} {len(v) / 1e6:.2f} MB" for k, v in rendered.bodies.items())
        print(f"  bodies: {sizes}; file records {len(rendered.files or {})}")
        del page, rendered, named, blobs
        cur, _peak = tracemalloc.get_traced_memory()
        print(f"  after release  kept {cur / 2**20:6.1f} MiB")
        tracemalloc.stop()


# --------------------------------------------------------------------------- main


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=3, help="fresh proxies, one after another")
    parser.add_argument("--workers", type=int, default=1, choices=(1, 2))
    parser.add_argument("--settle", type=float, default=2.0, help="seconds before 'after'")
    parser.add_argument("--stages", action="store_true", help="tracemalloc of one miss")
    args = parser.parse_args()

    port = free_port()
    origin = f"http://127.0.0.1:{port}"
    t = time.perf_counter()
    projects = build_set(origin)
    numpy_json = len(projects["numpy"].bodies["json"])
    boto_json = len(projects["botocore"].bodies["json"])
    total_files = sum(len(p.files) for p in projects.values())
    print(
        f"pages: {len(projects)} projects, {total_files} files; numpy-like JSON "
        f"{numpy_json / 1e6:.2f} MB ({len(projects['numpy'].files)} files), botocore-like "
        f"{boto_json / 1e6:.2f} MB ({len(projects['botocore'].files)} files); "
        f"built in {time.perf_counter() - t:.1f} s"
    )
    if args.stages:
        stages(projects, f"{origin}/simple/")
        return 0
    upstream = Upstream(port, projects)
    names = sorted(projects, key=lambda n: -len(projects[n].files))
    runs = []
    with tempfile.TemporaryDirectory(prefix="bench-memory-") as tmp:
        for i in range(args.reps):
            f = one_run(upstream, names, Path(tmp), args.workers, args.settle)
            runs.append(f)
            print(f"run {i + 1} done")
    print(f"command: python bench/memory.py --workers {args.workers} --reps {args.reps}")
    print(f"python {sys.version.split()[0]}, {REPO}")
    report(runs, print)
    return 0


if __name__ == "__main__":
    sys.exit(main())
