"""Steering the cache: the size limit (LRU eviction), prune, verify, stats, admin
invalidation and JSON logs."""

import asyncio
import json
import os
import sys
import time
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from conftest import ProxyFactory
from fakeindex import FakeFile, FakeIndex
from processes import free_port, wait_healthy

from cacheproxy.cli.main import main
from cacheproxy.errors import ConfigError
from cacheproxy.store.evict import PROTECT_SECONDS, evict
from cacheproxy.units import parse_duration, parse_size
from cacheproxy.web.keys import metrics_key, proxy_key

Client = TestClient[web.Request, web.Application]
JSON = "application/vnd.pypi.simple.v1+json"
OLD = time.time() - 10 * PROTECT_SECONDS


def stored(cache_dir: Path) -> dict[str, Path]:
    return {p.name: p for p in (cache_dir / "files").rglob("*") if p.is_file()}


def wheel(fake: FakeIndex, project: str) -> FakeFile:
    return next(f for f in fake.files(project) if f.filename.endswith(".whl"))


async def fetch(proxy: Client, f: FakeFile) -> None:
    resp = await proxy.get(f.url_path)
    assert await resp.read() == f.data


@pytest.mark.parametrize(
    ("text", "expected"),
    [("50GB", 50 * 10**9), ("1.5g", 1_500_000_000), ("500MiB", 500 * 2**20), ("1024", 1024)],
)
def test_parse_size(text: str, expected: int, tmp_path: Path) -> None:
    assert parse_size(text, tmp_path) == expected


def test_parse_size_percent_of_disk(tmp_path: Path) -> None:
    st = os.statvfs(tmp_path)
    assert parse_size("10%", tmp_path / "not-yet") == int(st.f_blocks * st.f_frsize * 0.1)


@pytest.mark.parametrize("text", ["", "lots", "-5GB", "0", "150%", "5 parsecs"])
def test_parse_size_rejects(text: str, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="max-size"):
        parse_size(text, tmp_path)


def test_parse_duration() -> None:
    assert parse_duration("30d") == 30 * 86400
    assert parse_duration("12h") == 43200
    assert parse_duration("90") == 90
    with pytest.raises(ConfigError):
        parse_duration("soon")


async def test_lru_eviction_keeps_recently_used(
    make_proxy: ProxyFactory, fake: FakeIndex, cache_dir: Path
) -> None:
    proxy = await make_proxy()
    a, b, c = wheel(fake, "alpha"), wheel(fake, "beta"), wheel(fake, "gamma")
    for f in (a, b, c):
        await fetch(proxy, f)
    files = stored(cache_dir)
    # a is the least recently used, then c; b was used last.
    for f, age in ((a, 3000), (c, 2000), (b, 1000)):
        os.utime(files[f.sha256], (time.time() - age, time.time() - age))
    limit = b.size + c.size + 10  # everything minus a, with room under the low water mark
    storage, metrics = proxy.app[proxy_key].storage, proxy.app[metrics_key]
    report = await asyncio.to_thread(evict, storage, metrics, max_bytes=int(limit / 0.85))
    assert report is not None
    assert report.removed == 1
    assert set(stored(cache_dir)) == {b.sha256, c.sha256}
    assert metrics.current("evictions") == 1
    # An evicted file is simply a miss again.
    fake.clear_log()
    await fetch(proxy, a)
    assert len(fake.file_gets(a.filename)) == 1


async def test_recently_used_files_are_never_evicted(
    make_proxy: ProxyFactory, fake: FakeIndex, cache_dir: Path
) -> None:
    proxy = await make_proxy()
    f = wheel(fake, "beta")
    await fetch(proxy, f)
    report = evict(proxy.app[proxy_key].storage, None, max_bytes=1)
    assert report is not None
    assert report.removed == 0
    assert report.skipped_recent == 1
    assert f.sha256 in stored(cache_dir)


async def test_a_hit_refreshes_the_lru_clock(
    make_proxy: ProxyFactory, fake: FakeIndex, cache_dir: Path
) -> None:
    proxy = await make_proxy()
    f = wheel(fake, "beta")
    await fetch(proxy, f)
    path = stored(cache_dir)[f.sha256]
    os.utime(path, (OLD, OLD))
    await fetch(proxy, f)  # a hit
    assert path.stat().st_mtime > time.time() - 60


async def test_size_limit_is_enforced_while_serving(
    make_proxy: ProxyFactory, fake: FakeIndex, cache_dir: Path
) -> None:
    big = wheel(fake, "big")
    proxy = await make_proxy(max_size=big.size // 2)
    small = [wheel(fake, p) for p in ("alpha", "beta", "gamma")]
    for f in small:
        await fetch(proxy, f)
    for path in stored(cache_dir).values():
        os.utime(path, (OLD, OLD))  # long unused
    await fetch(proxy, big)  # stored, over the limit: the evictor wakes up
    for _ in range(100):
        if len(stored(cache_dir)) == 1:
            break
        await asyncio.sleep(0.05)
    assert set(stored(cache_dir)) == {big.sha256}  # the new one is protected, the rest went


async def test_prune_verify_and_stats_commands(
    make_proxy: ProxyFactory,
    fake: FakeIndex,
    cache_dir: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    proxy = await make_proxy()
    a, b = wheel(fake, "alpha"), wheel(fake, "beta")
    await fetch(proxy, a)
    await fetch(proxy, b)
    await fetch(proxy, b)
    await proxy.close()
    files = stored(cache_dir)
    files[a.sha256].write_bytes(b"bit rot")  # corrupted on disk
    assert main(["verify", "--cache-dir", str(cache_dir)]) == 1
    out = capsys.readouterr().out
    assert "1 corrupt and removed" in out
    assert a.sha256 in out
    assert set(stored(cache_dir)) == {b.sha256}
    assert main(["verify", "--cache-dir", str(cache_dir)]) == 0
    assert main(["stats", "--cache-dir", str(cache_dir)]) == 0
    out = capsys.readouterr().out
    assert "hit ratio" in out
    assert "33.3%" in out  # 1 hit of 3 answers (the pages were fetched internally)
    assert main(["stats", "--cache-dir", str(cache_dir), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["requests"]["hits"] >= 1
    os.utime(stored(cache_dir)[b.sha256], (OLD, OLD))
    assert main(["prune", "--cache-dir", str(cache_dir), "--older-than", "30m"]) == 0
    assert "removed 1 file(s)" in capsys.readouterr().out
    assert stored(cache_dir) == {}
    assert main(["prune", "--cache-dir", str(cache_dir)]) == 2
    assert "needs --max-size or --older-than" in capsys.readouterr().err
    assert main(["stats", "--cache-dir", str(cache_dir / "nope")]) == 2


async def test_admin_endpoints(make_proxy: ProxyFactory, fake: FakeIndex) -> None:
    off = await make_proxy()
    assert (await off.post("/-/admin/invalidate")).status == 404
    token = "s3cret-admin-token-123"
    proxy = await make_proxy(admin_token=token, index_ttl=3600)
    await proxy.get("/simple/alpha/")
    await proxy.get("/simple/beta/")
    assert (await proxy.post("/-/admin/invalidate/alpha")).status == 401
    bad = {"Authorization": "Bearer wrong"}
    assert (await proxy.post("/-/admin/invalidate/alpha", headers=bad)).status == 401
    good = {"Authorization": f"Bearer {token}"}
    resp = await proxy.post("/-/admin/invalidate/Alpha", headers=good)
    assert await resp.json() == {"invalidated": 1, "project": "alpha"}
    fake.clear_log()
    again = await proxy.get("/simple/alpha/")
    assert again.headers["X-Cache"] == "MISS"
    assert "if-none-match" not in fake.page_gets("alpha")[0].headers  # fetched afresh
    resp = await proxy.post("/-/admin/invalidate", headers=good)
    assert (await resp.json())["invalidated"] == 2
    assert (await proxy.get("/-/admin/invalidate")).status == 405  # POST only


def test_admin_token_must_be_long(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CACHEPROXY_ADMIN_TOKEN", "short")
    assert main(["serve", "--upstream", "http://u.invalid/simple/"]) == 2


async def test_json_logs(fake: FakeIndex, tmp_path: Path) -> None:
    port = free_port()
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "cacheproxy", "serve", "--log-format", "json", "--port",
        str(port), "--cache-dir", str(tmp_path / "c"), "--upstream", fake.index_url,
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        async with aiohttp.ClientSession() as s:
            await wait_healthy(s, f"http://127.0.0.1:{port}")
            async with s.get(f"http://127.0.0.1:{port}/simple/alpha/") as resp:
                assert resp.status == 200
    finally:
        proc.terminate()
        _out, err = await asyncio.wait_for(proc.communicate(), 30)
    lines = [json.loads(line) for line in err.decode().splitlines() if line.strip()]
    assert lines[0]["message"].startswith("cacheproxy ")
    access = [x for x in lines if x.get("path") == "/simple/alpha/"]
    assert access[0]["status"] == 200
    assert access[0]["cache"] == "MISS"
    assert access[0]["method"] == "GET"
    assert isinstance(access[0]["seconds"], float)
