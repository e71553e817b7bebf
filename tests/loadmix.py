"""A bounded mixed load on a proxy: many clients, hits and misses, pages and files.

Shared by the stress test (tests/test_stress.py, a few seconds) and the load benchmark
(bench/stress.py, longer, with memory figures). Every response is checked: status, and
for whole files the sha256 of the body against the fake upstream's.
"""

import asyncio
import hashlib
import random
import time
from collections import Counter
from dataclasses import dataclass, field

import aiohttp
from fakeindex import FakeFile

JSON = "application/vnd.pypi.simple.v1+json"


@dataclass
class LoadResult:
    requests: int = 0
    errors: list[str] = field(default_factory=list)
    by_kind: Counter[str] = field(default_factory=Counter)
    cache: Counter[str] = field(default_factory=Counter)
    latencies: list[float] = field(default_factory=list)
    seconds: float = 0.0

    def percentile(self, p: float) -> float:
        if not self.latencies:
            return 0.0
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))]


async def _one(
    session: aiohttp.ClientSession, base: str, f: FakeFile, kind: str, result: LoadResult
) -> None:
    started = time.perf_counter()
    if kind == "page":
        async with session.get(f"{base}/simple/{f.project}/", headers={"Accept": JSON}) as r:
            body = await r.read()
            ok = r.status == 200 and f.filename.encode() in body
            etag = r.headers.get("ETag")
        if ok and etag:
            async with session.get(
                f"{base}/simple/{f.project}/", headers={"Accept": JSON, "If-None-Match": etag}
            ) as r:
                await r.read()
                ok = r.status in (200, 304)
    elif kind == "range":
        async with session.get(f"{base}{f.url_path}", headers={"Range": "bytes=-100"}) as r:
            body = await r.read()
            ok = r.status == 206 and body == f.data[-100:]
    elif kind == "head":
        async with session.head(f"{base}{f.url_path}") as r:
            ok = r.status == 200 and int(r.headers.get("Content-Length", -1)) == f.size
    else:
        async with session.get(f"{base}{f.url_path}") as r:
            body = await r.read()
            ok = r.status == 200 and hashlib.sha256(body).hexdigest() == f.sha256
            result.cache[r.headers.get("X-Cache", "?")] += 1
    result.latencies.append(time.perf_counter() - started)
    result.requests += 1
    result.by_kind[kind] += 1
    if not ok:
        result.errors.append(f"{kind} {f.filename}")


async def mixed_load(
    base: str, files: list[FakeFile], *, clients: int, seconds: float, seed: int = 1
) -> LoadResult:
    """``clients`` concurrent clients for ``seconds``; each picks a random file and kind."""
    rng = random.Random(seed)
    result = LoadResult()
    kinds = ["file"] * 5 + ["page"] * 3 + ["range", "head"]
    deadline = time.monotonic() + seconds
    connector = aiohttp.TCPConnector(limit=clients)
    timeout = aiohttp.ClientTimeout(total=60)

    async def client(session: aiohttp.ClientSession) -> None:
        while time.monotonic() < deadline:
            f, kind = rng.choice(files), rng.choice(kinds)
            try:
                await _one(session, base, f, kind, result)
            except (aiohttp.ClientError, TimeoutError) as e:
                result.requests += 1
                result.errors.append(f"{kind} {f.filename}: {type(e).__name__}: {e}")

    started = time.monotonic()
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        await asyncio.gather(*(client(session) for _ in range(clients)))
    result.seconds = time.monotonic() - started
    return result
