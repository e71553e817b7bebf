"""Load test: many concurrent clients mixing hits and misses against a real proxy process.

    python bench/stress.py [--clients 200] [--seconds 20] [--workers 1] [--files 60]

Starts the hermetic fake upstream (tests/fakeindex.py) in this process, the proxy as a
subprocess (``cacheproxy serve``), then ``--clients`` clients that pick random files and
request kinds (whole file, page + 304 revalidation, tail range, HEAD) for ``--seconds``.
Every body is verified. Prints requests, errors, requests/s, latency percentiles, and the
peak resident memory of the proxy (all its processes, sampled every 50 ms from /proc).
Bounded in time and count; loopback only.
"""

import argparse
import asyncio
import os
import shutil
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from distbuild import build_wheel
from fakeindex import FakeIndex
from loadmix import mixed_load


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def rss_kib(pids: list[int]) -> int:
    total = 0
    for pid in pids:
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except (FileNotFoundError, ProcessLookupError):
            continue
    return total


def tree(pid: int) -> list[int]:
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True)
    return [pid, *(int(p) for p in out.stdout.split())]


async def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--clients", type=int, default=200)
    p.add_argument("--seconds", type=float, default=20.0)
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--files", type=int, default=60)
    p.add_argument("--chunk-delay", type=float, default=0.002, help="upstream slowness")
    args = p.parse_args()
    work = Path(tempfile.mkdtemp(prefix="cacheproxy-stress-"))
    fake = FakeIndex()
    files = [
        fake.add_file(f"load{i:03d}", build_wheel(work / "dists", f"load{i:03d}", "1.0",
                                                  pad_bytes=(i % 6) * 400_000))
        for i in range(args.files)
    ]  # fmt: skip
    fake.chunk_delay(args.chunk_delay)
    await fake.start()
    port = free_port()
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "cacheproxy", "serve", "--port", str(port), "--workers",
        str(args.workers), "--cache-dir", str(work / "cache"), "--upstream", fake.index_url,
        "--log-level", "warning",
    )  # fmt: skip
    peak = 0
    try:
        for _ in range(200):
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    break
            await asyncio.sleep(0.05)
        baseline = rss_kib(tree(proc.pid))
        stop = asyncio.Event()

        async def sample() -> None:
            nonlocal peak
            while not stop.is_set():
                peak = max(peak, rss_kib(tree(proc.pid)))
                await asyncio.sleep(0.05)

        sampler = asyncio.create_task(sample())
        result = await mixed_load(
            f"http://127.0.0.1:{port}", files, clients=args.clients, seconds=args.seconds
        )
        stop.set()
        await sampler
    finally:
        proc.terminate()
        await asyncio.wait_for(proc.wait(), 30)
        await fake.stop()
        shutil.rmtree(work, ignore_errors=True)
    total_mb = sum(f.size for f in files) / 1e6
    print(f"{args.clients} clients, {args.seconds:.0f} s, {args.workers} worker(s), "
          f"{len(files)} files ({total_mb:.0f} MB), python {sys.version.split()[0]}, "
          f"{os.cpu_count()} cores")  # fmt: skip
    print(f"requests {result.requests}, errors {len(result.errors)}, "
          f"{result.requests / result.seconds:.0f} req/s")  # fmt: skip
    print(f"latency p50 {result.percentile(50) * 1000:.1f} ms, "
          f"p99 {result.percentile(99) * 1000:.1f} ms")  # fmt: skip
    print(f"by kind {dict(result.by_kind)}; file responses {dict(result.cache)}")
    print(f"proxy RSS: {baseline / 1024:.0f} MiB idle, {peak / 1024:.0f} MiB peak (all processes)")
    for e in result.errors[:10]:
        print("  error:", e)
    return 1 if result.errors else 0


if __name__ == "__main__":
    raise SystemExit(asyncio.run(main()))
