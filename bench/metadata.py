"""PEP 658 metadata the proxy reads from wheels, measured: resolution without downloads.

An upstream that advertises no metadata (the in-process fake index of the test suite,
serving real wheels padded to realistic sizes) is resolved by ``pip install --dry-run
--report`` and ``uv pip compile``, direct and through the proxy, cold and warm, in one
run. Reported: the wheel bytes each run pulled from the file host (whole downloads plus
ranges) and the wall time, as ratios to direct in the same run.

Run: ``python bench/metadata.py`` (``--wheels N --mb M`` for the set's shape). Loopback only.
"""

import argparse
import asyncio
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from aiohttp import web

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from distbuild import build_wheel  # noqa: E402
from fakeindex import FakeIndex  # noqa: E402
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


async def main() -> None:
    args = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    args.add_argument("--wheels", type=int, default=12, help="projects in the set (12)")
    args.add_argument("--mb", type=float, default=8.0, help="MB of each wheel (8)")
    args.add_argument(
        "--rate", type=float, default=40.0, help="file host MB/s per connection (40; 0: none)"
    )
    opts = args.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="cacheproxy-metadata-"))
    try:
        fake = FakeIndex()
        names = [f"heavy{i}" for i in range(opts.wheels)]
        for i, name in enumerate(names):
            needs = [names[i + 1]] if i + 1 < len(names) else []
            wheel = build_wheel(
                tmp / "dists", name, "1.0", requires=needs, pad_bytes=int(opts.mb * 1e6)
            )
            fake.add_file(name, wheel, metadata=False)
        if opts.rate:
            # A pause before each 64 KiB chunk: the per-connection rate of a real file host.
            fake.chunk_delay(fake.chunk_size / (opts.rate * 1e6))
        await fake.start()
        settings = Settings(cache_dir=tmp / "cache", upstream=URL(fake.index_url))
        runner = web.AppRunner(create_app(settings))
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        proxy = f"http://127.0.0.1:{port}/simple/"
        uv = shutil.which("uv") or str(Path(sys.executable).with_name("uv"))

        def pip(index: str) -> list[str]:
            return [
                sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed",
                "--no-cache-dir", "--report", str(tmp / "r.json"), "--index-url", index,
                names[0],
            ]  # fmt: skip

        def uvc(index: str) -> list[str]:
            req = tmp / "req.in"
            req.write_text(f"{names[0]}\n")
            return [uv, "pip", "compile", "--no-cache", "--index-url", index, str(req)]

        total = sum(f.size for p in names for f in fake.files(p))
        print(
            f"set: {len(names)} wheels, {total / 1e6:.0f} MB, no PEP 658 metadata upstream, "
            f"file host {opts.rate:g} MB/s per connection"
        )
        print(f"{'run':34s} {'wall s':>8s} {'pulled MB':>10s} {'÷ direct':>9s}")
        for tool, make in (("pip --dry-run --report", pip), ("uv pip compile", uvc)):
            rows = []
            for label, index in (
                ("direct", fake.index_url),
                ("proxy cold", proxy),
                ("proxy warm", proxy),
            ):
                fake.clear_log()
                wall = await asyncio.to_thread(client, make(index), tmp)
                rows.append((label, wall, pulled(fake)))
            base = rows[0]
            for label, wall, got in rows:
                print(
                    f"{tool + ', ' + label:34s} {wall:8.2f} {got / 1e6:10.2f} "
                    f"{wall / base[1]:8.2f}x  bytes {got / max(base[2], 1):.3f}"
                )
            # The next tool starts cold again.
            await runner.cleanup()
            shutil.rmtree(tmp / "cache")
            runner = web.AppRunner(create_app(settings))
            await runner.setup()
            site = web.TCPSite(runner, "127.0.0.1", port)
            await site.start()
        report = json.loads((tmp / "r.json").read_text()) if (tmp / "r.json").exists() else {}
        assert len(report.get("install", [])) == len(names)
        await runner.cleanup()
        await fake.stop()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    asyncio.run(main())
