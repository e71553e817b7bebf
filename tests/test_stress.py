"""A bounded stress test: 200 concurrent clients mixing hits and misses for a few seconds,
against real worker-like concurrency on one proxy. Zero errors, every body verified.
(Throughput and memory are measured by bench/stress.py, not asserted here.)"""

from pathlib import Path

import pytest
from aiohttp.test_utils import TestServer
from distbuild import build_wheel
from fakeindex import FakeIndex
from loadmix import mixed_load


@pytest.fixture(scope="module")
def many_wheels(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    out = tmp_path_factory.mktemp("many")
    return [build_wheel(out, f"load{i:02d}", "1.0", pad_bytes=(i % 5) * 200_000) for i in range(40)]


async def test_200_clients_mixing_hits_and_misses(
    fake: FakeIndex, proxy_server: TestServer, many_wheels: list[Path]
) -> None:
    files = [fake.add_file(p.name.split("-")[0], p) for p in many_wheels]
    fake.chunk_delay(0.002)  # misses take a while, so clients pile onto running downloads
    base = str(proxy_server.make_url("")).rstrip("/")
    result = await mixed_load(base, files, clients=200, seconds=3.0)
    assert result.errors == [], result.errors[:10]
    assert result.requests > 400  # it really ran
    assert result.cache["MISS"] > 0
    assert result.cache["HIT"] > 0
    # One upstream download per file, however many clients asked at once.
    for f in files:
        assert len([r for r in fake.file_gets(f.filename) if "range" not in r.headers]) <= 1
