"""PEP 658 metadata the proxy reads from wheels, measured: resolution without downloads.

An upstream that advertises no metadata (the in-process fake index of the test suite,
serving real wheels padded to realistic sizes) is resolved by ``pip install --dry-run
--report`` and ``uv pip compile``, direct and through the proxy, cold and warm. The set is
a chain (each project requires the next), so a resolver fetches one metadata at a time
and every per-request cost adds up (``--shape flat``: the first requires all the others,
which uv then fetches concurrently). Each repetition runs direct, a fresh (empty-cache)
proxy, then that proxy again warm, in rotating order; reported per run: the median wall
time, the median over repetitions of the per-repetition ratio to direct, the wheel bytes
pulled from the file host (whole downloads plus ranges) and the upstream requests by kind.

Run: ``python bench/metadata.py`` (``--wheels N --mb M --files K --latency-ms L --reps R``).
The proxy is a real ``cacheproxy serve`` process with an empty cache per repetition.
``--files`` adds that many small modules to each wheel: a real wheel's central directory
(hundreds to thousands of entries) and RECORD do not fit in a 16 KiB tail, as the
default wheels' (three members) do. ``--latency-ms`` makes every upstream response wait
first, standing in for a CDN round trip (``bench/run.py`` uses 10). Loopback only.
"""

import argparse
import asyncio
import io
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import zipfile
from collections import Counter
from pathlib import Path

from aiohttp import web

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(REPO / "bench"))

from distbuild import build_wheel  # noqa: E402
from fakeindex import FakeIndex  # noqa: E402
from proxy import Proxy as ServeProcess  # noqa: E402
from yarl import URL  # noqa: E402

from cacheproxy.settings import Settings  # noqa: E402
from cacheproxy.web.app import create_app  # noqa: E402


def pulled(fake: FakeIndex) -> int:
    """Bytes of wheels the file host sent: whole files, plus each range's length."""
    sizes = {f.url_path: f.size for p in fake._projects for f in fake.files(p)}
    total = 0
    for r in fake.requests:
        if r.host != "files" or r.method != "GET" or r.path not in sizes:
            continue
        size = sizes[r.path]
        rng = r.headers.get("range", "")
        if not rng:
            total += size
        elif rng.startswith("bytes=-"):
            total += min(size, int(rng[7:]))
        else:
            first, _, last = rng[6:].partition("-")
            total += min(size - 1, int(last) if last else size - 1) - int(first) + 1
    return total


def request_kinds(fake: FakeIndex) -> str:
    """The upstream requests of one run, by kind: pages, file HEADs, ranges, whole files."""
    kinds: Counter[str] = Counter()
    for r in fake.requests:
        if r.host == "index":
            kinds["page"] += 1
        elif r.method == "HEAD":
            kinds["head"] += 1
        else:
            kinds["range" if "range" in r.headers else "whole"] += 1
    return " ".join(f"{k} {kinds[k]}" for k in ("page", "head", "range", "whole") if kinds[k])


def with_modules(wheel: Path, count: int) -> None:
    """Rewrite ``wheel`` with ``count`` small modules first, as real wheels have many
    members before their ``.dist-info`` (written last, RECORD at the very end)."""
    with zipfile.ZipFile(wheel) as zf:
        members = [(i, zf.read(i)) for i in zf.infolist()]
    pkg = members[0][0].filename.split("/", 1)[0]
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as out:
        for n in range(count):
            body = f'"""Module {n} of {pkg}."""\n\nVALUE = {n}\n'.encode()
            out.writestr(f"{pkg}/sub{n % 13}/module_{n:05d}.py", body)
        for info, data in members:
            if info.filename.endswith("/RECORD"):
                listing = "".join(f"{i.filename},,\n" for i in out.infolist())
                data = (listing + f"{info.filename},,\n").encode() + data
            out.writestr(info, data)
    wheel.write_bytes(buf.getvalue())


def client(cmd: list[str], tmp: Path) -> float:
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("PIP_", "UV_"))},
        "PIP_CONFIG_FILE": os.devnull,
        "UV_NO_CONFIG": "1",
        "UV_CACHE_DIR": str(tmp / f"uv-{time.monotonic_ns()}"),
        "PIP_DISABLE_PIP_VERSION_CHECK": "1",
    }
    started = time.monotonic()
    subprocess.run(cmd, env=env, check=True, capture_output=True, cwd=tmp)
    return time.monotonic() - started


class Proxy:
    """The proxy on loopback with a cache of its own per start: by default the real
    ``cacheproxy serve`` process, as deployed; ``--in-process``, an app on this process's
    event loop, which then also runs the fake upstream, so each miss waits for both."""

    def __init__(
        self, tmp: Path, upstream: str, in_process: bool, src: Path | None = None, name: str = ""
    ) -> None:
        self._tmp = tmp
        self._upstream = upstream
        self._in_process = in_process
        # Another checkout's cacheproxy/ (--before-src): the process imports it first.
        self._env = None if src is None else {**os.environ, "PYTHONPATH": str(src.resolve())}
        self._name = name
        self._runner: web.AppRunner | None = None
        self._process: ServeProcess | None = None
        self._starts = 0
        self.url = ""

    async def start(self) -> None:
        self._starts += 1
        cache = self._tmp / f"cache{self._name}-{self._starts}"
        if not self._in_process:
            self._process = await asyncio.to_thread(
                ServeProcess, self._upstream, self._tmp, cache_dir=cache, env=self._env
            )
            self.url = self._process.index_url
            return
        settings = Settings(cache_dir=cache, upstream=URL(self._upstream))
        self._runner = web.AppRunner(create_app(settings))
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.url = f"http://127.0.0.1:{port}/simple/"

    async def stop(self) -> None:
        if self._process is not None:
            await asyncio.to_thread(self._process.stop, False)
            self._process = None
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        shutil.rmtree(self._tmp / f"cache{self._name}-{self._starts}", ignore_errors=True)


def parse_args() -> argparse.Namespace:
    args = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    args.add_argument("--wheels", type=int, default=12, help="projects in the set (12)")
    args.add_argument("--mb", type=float, default=8.0, help="MB of each wheel (8)")
    args.add_argument(
        "--rate", type=float, default=40.0, help="file host MB/s per connection (40; 0: none)"
    )
    args.add_argument("--files", type=int, default=0, help="small modules added per wheel (0)")
    args.add_argument(
        "--latency-ms", type=float, default=0.0, help="wait before every upstream response (0)"
    )
    args.add_argument(
        "--shape",
        choices=("chain", "flat"),
        default="chain",
        help="chain: each project requires the next (one metadata at a time); flat: the "
        "first requires all the others (fetched concurrently) (chain)",
    )
    args.add_argument("--reps", type=int, default=1, help="repetitions, rotating order (1)")
    args.add_argument("--tools", default="pip,uv", help="pip, uv or both (pip,uv)")
    args.add_argument(
        "--cache-parent",
        type=Path,
        default=None,
        help="where the proxy's caches go (default: the system temp dir; /dev/shm shows "
        "what the store's fsyncs cost on the cold path)",
    )
    args.add_argument(
        "--in-process",
        action="store_true",
        help="run the proxy on this process's event loop, beside the fake upstream, "
        "instead of as a `cacheproxy serve` process",
    )
    args.add_argument(
        "--before-src",
        type=Path,
        default=None,
        help="also run the cacheproxy/ of this checkout, as 'before', in the same rotation",
    )
    return args.parse_args()


async def main() -> None:
    opts = parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="cacheproxy-metadata-"))
    caches = Path(tempfile.mkdtemp(prefix="cacheproxy-caches-", dir=opts.cache_parent or tmp))
    proxies: dict[str, Proxy] = {}
    fake = FakeIndex()
    try:
        names = [f"heavy{i}" for i in range(opts.wheels)]
        for i, name in enumerate(names):
            needs = [names[i + 1]] if i + 1 < len(names) else []
            if opts.shape == "flat":
                needs = names[1:] if i == 0 else []
            wheel = build_wheel(
                tmp / "dists", name, "1.0", requires=needs, pad_bytes=int(opts.mb * 1e6)
            )
            if opts.files:
                with_modules(wheel, opts.files)
            fake.add_file(name, wheel, metadata=False)
        if opts.rate:
            # A pause before each 64 KiB chunk: the per-connection rate of a real file host.
            fake.chunk_delay(fake.chunk_size / (opts.rate * 1e6))
        fake.delay_pages(opts.latency_ms / 1000)
        fake.delay_files(opts.latency_ms / 1000)
        await fake.start()
        proxy = Proxy(caches, fake.index_url, opts.in_process)
        proxies = {"proxy": proxy}
        if opts.before_src is not None:
            proxies["before"] = Proxy(caches, fake.index_url, False, opts.before_src, "-before")
        uv = shutil.which("uv") or str(Path(sys.executable).with_name("uv"))
        req = tmp / "req.in"
        req.write_text(f"{names[0]}\n")
        report = tmp / "r.json"

        def pip(index: str) -> list[str]:
            return [
                sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed",
                "--no-cache-dir", "--report", str(report), "--index-url", index, names[0],
            ]  # fmt: skip

        def uvc(index: str) -> list[str]:
            return [uv, "pip", "compile", "--no-cache", "--index-url", index, str(req)]

        total = sum(f.size for p in names for f in fake.files(p))
        print(
            f"set: {len(names)} wheels ({opts.shape}), {total / 1e6:.0f} MB, "
            f"{opts.files + 3} members each, no PEP 658 metadata upstream; file host "
            f"{opts.rate:g} MB/s per connection; {opts.latency_ms:g} ms before each "
            f"upstream response; {opts.reps} repetitions; loadavg {os.getloadavg()[0]:.2f}"
        )
        print(
            f"{'run':34s} {'wall s':>7s} {'÷ direct':>9s} {'spread':>11s} "
            f"{'pulled MB':>9s}  upstream requests"
        )
        labels = ["direct"] + [f"{n} {s}" for n in proxies for s in ("cold", "warm")]
        tools = {"pip": ("pip --dry-run --report", pip), "uv": ("uv pip compile", uvc)}
        for key in opts.tools.split(","):
            tool, make = tools[key]
            walls: dict[str, list[float]] = {label: [] for label in labels}
            seen: dict[str, tuple[int, str]] = {}
            for rep in range(opts.reps):
                # Rotate direct and the proxies so the drift of a shared machine cancels out.
                order: list[tuple[str, ...]] = [("direct",)]
                order += [(f"{n} cold", f"{n} warm") for n in proxies]
                shift = rep % len(order)
                order = order[shift:] + order[:shift]
                for p in proxies.values():
                    await p.start()
                for group in order:
                    for label in group:
                        fake.clear_log()
                        name = label.split()[0]
                        index = fake.index_url if label == "direct" else proxies[name].url
                        walls[label].append(await asyncio.to_thread(client, make(index), tmp))
                        seen[label] = (pulled(fake), request_kinds(fake))
                for p in proxies.values():
                    await p.stop()
            for label in labels:
                ratios = [w / d for w, d in zip(walls[label], walls["direct"], strict=True)]
                got, kinds = seen[label]
                spread = f"{min(ratios):.2f}-{max(ratios):.2f}"
                print(
                    f"{tool + ', ' + label:34s} {statistics.median(walls[label]):7.3f} "
                    f"{statistics.median(ratios):8.2f}x {spread:>11s} {got / 1e6:9.2f}  {kinds}"
                )
            if key == "pip":
                assert report.exists(), "pip wrote no report"
        print(f"loadavg at the end {os.getloadavg()[0]:.2f}")
    finally:
        for p in proxies.values():
            await p.stop()
        await fake.stop()
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.rmtree(caches, ignore_errors=True)


if __name__ == "__main__":
    asyncio.run(main())
