"""Distribution files through the proxy: HEAD, ranges, resume, hang-ups, single-flight and
integrity.

The contract under test: one upstream download per file, streamed to every waiting client,
verified before it enters the store; a bad transfer is always a broken transfer.
"""

import asyncio
import hashlib
import json
import os
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from conftest import ProxyFactory, temporaries
from fakeindex import FakeFile, FakeIndex

from cacheproxy.store import disk_writer
from cacheproxy.web.keys import proxy_key

JSON = "application/vnd.pypi.simple.v1+json"
Client = TestClient[web.Request, web.Application]


async def link_of(proxy: Client, project: str, filename: str) -> str:
    """The proxy path of ``filename`` as the project page links it."""
    resp = await proxy.get(f"/simple/{project}/", headers={"Accept": JSON})
    for f in json.loads(await resp.read())["files"]:
        if f["filename"] == filename:
            return str(f["url"]).removeprefix("../..")
    raise AssertionError(f"{filename} not on the page")


def the(fake: FakeIndex, project: str, suffix: str = ".whl") -> FakeFile:
    return next(f for f in fake.files(project) if f.filename.endswith(suffix))


def stored_files(cache_dir: Path) -> list[Path]:
    return [p for p in (cache_dir / "files").rglob("*") if p.is_file()]


async def test_cold_then_warm_download(proxy: Client, fake: FakeIndex, cache_dir: Path) -> None:
    f = the(fake, "big")
    link = await link_of(proxy, "big", f.filename)
    cold = await proxy.get(link)
    assert cold.status == 200
    assert cold.headers["X-Cache"] == "MISS"
    assert int(cold.headers["Content-Length"]) == f.size
    assert await cold.read() == f.data
    warm = await proxy.get(link)
    assert warm.headers["X-Cache"] == "HIT"
    assert await warm.read() == f.data
    assert warm.headers["ETag"] == f'"{f.sha256}"'
    assert warm.headers["Content-Type"] == "application/octet-stream"
    assert "Content-Encoding" not in warm.headers
    assert "immutable" in warm.headers["Cache-Control"]
    assert len(fake.file_gets(f.filename)) == 1
    assert stored_files(cache_dir) == [cache_dir / "files/sha256" / f.sha256[:2] / f.sha256]
    assert temporaries(cache_dir) == []


async def test_head_t8(proxy: Client, fake: FakeIndex) -> None:
    f = the(fake, "beta")
    link = await link_of(proxy, "beta", f.filename)
    for expected_cache in ("MISS", "HIT"):
        resp = await proxy.head(link)
        assert resp.status == 200
        assert int(resp.headers["Content-Length"]) == f.size
        assert resp.headers["Accept-Ranges"] == "bytes"
        assert resp.headers["X-Cache"] == expected_cache
        assert await resp.read() == b""
        if expected_cache == "MISS":
            # Answered from the index's size: no download just for a HEAD (5.2).
            assert fake.file_gets(f.filename) == []
            assert await (await proxy.get(link)).read() == f.data


@pytest.mark.parametrize("cached", [True, False])
@pytest.mark.parametrize(
    ("header", "status", "span"),
    [
        ("bytes=10-19", 206, (10, 19)),
        ("bytes=-22", 206, (-22, None)),
        ("bytes=100-", 206, (100, None)),
        ("bytes=999999999-", 416, None),
    ],
)
async def test_ranges_t9(
    proxy: Client,
    fake: FakeIndex,
    cached: bool,
    header: str,
    status: int,
    span: tuple[int, int | None] | None,
) -> None:
    f = the(fake, "big")
    link = await link_of(proxy, "big", f.filename)
    if cached:
        await (await proxy.get(link)).read()
    resp = await proxy.get(link, headers={"Range": header})
    assert resp.status == status
    if span is None:
        assert resp.headers["Content-Range"] == f"bytes */{f.size}"
        return
    start = span[0] if span[0] >= 0 else f.size + span[0]
    end = span[1] if span[1] is not None else f.size - 1
    assert resp.headers["Content-Range"] == f"bytes {start}-{end}/{f.size}"
    assert await resp.read() == f.data[start : end + 1]
    # One full download whatever the range; a range far ahead of a cold download is
    # forwarded upstream rather than waiting for the whole file (uv reads the zip directory
    # first).
    assert await (await proxy.get(link)).read() == f.data  # joins the background download
    full = [r for r in fake.file_gets(f.filename) if "range" not in r.headers]
    assert len(full) == 1
    forwarded = [r.headers["range"] for r in fake.file_gets(f.filename) if "range" in r.headers]
    assert forwarded == ([] if cached or start < 1024 * 1024 else [f"bytes={start}-{end}"])


async def test_if_range_t10(proxy: Client, fake: FakeIndex) -> None:
    f = the(fake, "big")
    link = await link_of(proxy, "big", f.filename)
    await (await proxy.get(link)).read()
    wrong = await proxy.get(link, headers={"Range": "bytes=10-19", "If-Range": '"nope"'})
    assert wrong.status == 200
    assert await wrong.read() == f.data
    right = await proxy.get(link, headers={"Range": "bytes=10-19", "If-Range": f'"{f.sha256}"'})
    assert right.status == 206
    assert await right.read() == f.data[10:20]
    cond = await proxy.get(link, headers={"If-None-Match": f'"{f.sha256}"'})
    assert cond.status == 304


async def test_plus_and_percent_2b_are_one_file_t11(
    proxy: Client, fake: FakeIndex, cache_dir: Path
) -> None:
    f = the(fake, "gamma")
    assert "+" in f.filename
    link = await link_of(proxy, "gamma", f.filename)
    plus = await (await proxy.get(link)).read()
    encoded = await proxy.get(link.replace("+", "%2B"))
    assert await encoded.read() == plus == f.data
    assert encoded.headers["X-Cache"] == "HIT"
    assert len(fake.file_gets(f.filename)) == 1
    assert len(stored_files(cache_dir)) == 1


async def test_metadata_t12(make_proxy: ProxyFactory, fake: FakeIndex) -> None:
    proxy = await make_proxy(synthesize_metadata=False)
    f = the(fake, "alpha")
    link = await link_of(proxy, "alpha", f.filename)
    resp = await proxy.get(link + ".metadata")
    assert resp.status == 200
    body = await resp.read()
    assert hashlib.sha256(body).hexdigest() == f.metadata_sha256
    again = await proxy.get(link + ".metadata")
    assert again.headers["X-Cache"] == "HIT"
    # Not advertised upstream, and the proxy makes none: not advertised, and 404 (PEP 658).
    n = the(fake, "nometa")
    page = json.loads(await (await proxy.get("/simple/nometa/", headers={"Accept": JSON})).read())
    assert page["files"][0]["core-metadata"] is False
    nolink = await link_of(proxy, "nometa", n.filename)
    missing = await proxy.get(nolink + ".metadata")
    assert missing.status == 404
    sdist = the(fake, "alpha", ".tar.gz")
    assert (
        await proxy.get(await link_of(proxy, "alpha", sdist.filename) + ".metadata")
    ).status == 404


async def test_concurrent_misses_one_upstream_get_t16(
    proxy: Client, fake: FakeIndex, cache_dir: Path
) -> None:
    f = the(fake, "big")
    link = await link_of(proxy, "big", f.filename)
    fake.chunk_delay(0.01)  # keep the download running while the clients join

    async def fetch() -> bytes:
        resp = await proxy.get(link)
        assert resp.status == 200
        return await resp.read()

    bodies = await asyncio.gather(*(fetch() for _ in range(10)))
    assert all(b == f.data for b in bodies)
    assert len(fake.file_gets(f.filename)) == 1
    assert len(stored_files(cache_dir)) == 1


async def test_first_bytes_stream_before_download_ends(proxy: Client, fake: FakeIndex) -> None:
    f = the(fake, "big")
    link = await link_of(proxy, "big", f.filename)
    fake.chunk_delay(0.02)  # ~50 chunks: about a second in all
    resp = await proxy.get(link)
    first = await resp.content.read(1024)
    assert first == f.data[:1024]
    # The upstream transfer is still running while we already hold bytes.
    assert len(proxy.app[proxy_key].downloads) == 1
    assert len(fake.file_gets(f.filename)) == 1
    rest = await resp.read()
    assert first + rest == f.data


async def test_client_disconnect_mid_stream_t17(
    proxy: Client, fake: FakeIndex, cache_dir: Path
) -> None:
    f = the(fake, "big")
    link = await link_of(proxy, "big", f.filename)
    fake.chunk_delay(0.005)
    resp = await proxy.get(link)
    assert await resp.content.read(1024) == f.data[:1024]
    resp.close()  # hang up after 1 KiB
    for _ in range(200):  # the download goes on without any client
        if stored_files(cache_dir):
            break
        await asyncio.sleep(0.05)
    [stored] = stored_files(cache_dir)
    assert hashlib.sha256(stored.read_bytes()).hexdigest() == f.sha256
    assert temporaries(cache_dir) == []
    warm = await proxy.get(link)
    assert warm.headers["X-Cache"] == "HIT"
    assert await warm.read() == f.data
    assert len(fake.file_gets(f.filename)) == 1


@pytest.mark.parametrize("fault", ["corrupt", "truncate"])
async def test_bad_transfer_is_broken_and_stores_nothing(
    proxy: Client, fake: FakeIndex, cache_dir: Path, fault: str
) -> None:
    f = the(fake, "big")
    link = await link_of(proxy, "big", f.filename)
    if fault == "corrupt":
        fake.corrupt_files(times=1)
    else:
        fake.truncate_files(f.size // 2, times=1)
    resp = await proxy.get(link)
    assert resp.status == 200
    assert int(resp.headers["Content-Length"]) == f.size
    with pytest.raises(aiohttp.ClientPayloadError):
        await resp.read()  # never a "complete" file with the wrong bytes
    for _ in range(50):
        if not temporaries(cache_dir):
            break
        await asyncio.sleep(0.02)
    assert stored_files(cache_dir) == []
    assert temporaries(cache_dir) == []
    # The next request downloads again and gets the right file.
    good = await proxy.get(link)
    assert await good.read() == f.data
    assert len(fake.file_gets(f.filename)) == 2


async def test_upstream_file_errors(proxy: Client, fake: FakeIndex, cache_dir: Path) -> None:
    f = the(fake, "beta")
    link = await link_of(proxy, "beta", f.filename)
    fake.fail_files(404, times=1)
    resp = await proxy.get(link)
    assert resp.status == 404
    fake.fail_files(503, times=1)
    resp = await proxy.get(link)
    assert resp.status == 502
    assert "503" in await resp.text()
    assert stored_files(cache_dir) == []
    assert (await proxy.get(link)).status == 200


async def test_unlisted_file_is_404(proxy: Client, fake: FakeIndex) -> None:
    resp = await proxy.get("/packages/aa/bb/cc/beta-9.9-py3-none-any.whl")
    assert resp.status == 404
    assert "not listed" in await resp.text()


@pytest.mark.parametrize(
    "path",
    [
        "/packages/../../etc/passwd",
        "/packages/a/%2e%2e/%2e%2e/etc/passwd",
        "/packages/a/b%00c.whl",
        "/packages/a%5Cb.whl",
        "/packages/a//b.whl",
        "/packages/%ff%fe.whl",
    ],
)
async def test_bad_paths_are_400_or_404(proxy: Client, fake: FakeIndex, path: str) -> None:
    resp = await proxy.get(path)
    assert resp.status in (400, 404)
    assert fake.requests == []


async def test_file_without_page_record_is_recovered(
    make_proxy: ProxyFactory, fake: FakeIndex, cache_dir: Path
) -> None:
    """A lock file's URL with the prefix swapped works on a proxy that never saw the page."""
    f = the(fake, "beta")
    proxy = await make_proxy()
    resp = await proxy.get(f.url_path)
    assert resp.status == 200
    assert await resp.read() == f.data
    assert len(fake.page_gets("beta")) == 1


async def test_files_survive_restart_with_upstream_down(
    make_proxy: ProxyFactory, fake: FakeIndex, cache_dir: Path
) -> None:
    first = await make_proxy()
    f = the(fake, "alpha")
    link = await link_of(first, "alpha", f.filename)
    await (await first.get(link)).read()
    await (await first.get(link + ".metadata")).read()
    await first.close()
    await fake.stop()
    second = await make_proxy(index_ttl=0)
    page = await second.get("/simple/alpha/", headers={"Accept": JSON})
    assert page.status == 200
    resp = await second.get(link)
    assert resp.status == 200
    assert resp.headers["X-Cache"] == "HIT"
    assert await resp.read() == f.data
    assert (await second.get(link + ".metadata")).status == 200
    # Not cached and upstream down: a clear 502, not a hang or a traceback.
    other = the(fake, "alpha", ".tar.gz")
    miss = await second.get(await link_of(second, "alpha", other.filename))
    assert miss.status == 502


async def test_startup_removes_stale_temporaries_and_stays_offline(
    make_proxy: ProxyFactory, fake: FakeIndex, cache_dir: Path
) -> None:
    (cache_dir / "tmp").mkdir(parents=True)
    (cache_dir / "tmp" / "dl-leftover").write_bytes(b"partial")
    proxy = await make_proxy()
    assert (await proxy.get("/-/health")).status == 200
    assert temporaries(cache_dir) == []
    assert fake.requests == []  # no project-list prefetch, no network work at start-up


async def test_offline_file_miss_is_404_with_the_reason(
    make_proxy: ProxyFactory, fake: FakeIndex
) -> None:
    online = await make_proxy()
    f = the(fake, "beta")
    link = await link_of(online, "beta", f.filename)
    offline = await make_proxy(offline=True)
    fake.clear_log()
    resp = await offline.get(link)
    assert resp.status == 404  # clients stop at once; a 504 made uv retry for seconds
    assert resp.headers["X-Cache-Reason"].startswith(f"offline mode: {f.filename} is not cached")
    assert (await resp.text()).count("\n") == 1
    assert fake.requests == []


def test_no_partial_file_helper_is_honest(tmp_path: Path) -> None:
    # stored_files must see nested files, or the "nothing stored" checks prove nothing.
    (tmp_path / "files" / "sha256" / "ab").mkdir(parents=True)
    (tmp_path / "files" / "sha256" / "ab" / "x").write_bytes(b"1")
    assert stored_files(tmp_path) == [tmp_path / "files/sha256/ab/x"]
    os.remove(tmp_path / "files" / "sha256" / "ab" / "x")
    assert stored_files(tmp_path) == []


async def test_long_downloads_are_flushed_to_disk_as_they_go(
    proxy: Client, fake: FakeIndex, cache_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Early flushes keep the commit's fsync (which the last byte waits for) short. They
    # run in the download's writer thread, between writes.
    monkeypatch.setattr(disk_writer, "WRITEBACK_EVERY", 256 * 1024)
    flushed: list[int] = []
    real = disk_writer.flush_to_disk

    def counting(fd: int) -> None:
        flushed.append(os.fstat(fd).st_size)
        real(fd)

    monkeypatch.setattr(disk_writer, "flush_to_disk", counting)
    f = the(fake, "big")
    resp = await proxy.get(await link_of(proxy, "big", f.filename))
    assert await resp.read() == f.data
    assert len(flushed) >= f.size // (256 * 1024) - 1
    assert flushed == sorted(flushed)  # in order, as the file grew
    (blob,) = stored_files(cache_dir)
    assert hashlib.sha256(blob.read_bytes()).hexdigest() == f.sha256
    assert temporaries(cache_dir) == []


@pytest.mark.parametrize("sendfile", [True, False], ids=["sendfile", "copy"])
async def test_misses_stream_by_sendfile_or_by_copy(
    proxy: Client, fake: FakeIndex, monkeypatch: pytest.MonkeyPatch, sendfile: bool
) -> None:
    # Readers of a running download are sent its temporary's bytes by loop.sendfile;
    # where the loop or transport cannot (uvloop, TLS), by pread + write. Both whole.
    loop = asyncio.get_running_loop()
    real = loop.sendfile
    calls: list[int] = []

    async def tracked(
        transport: object,
        file: object,
        offset: int = 0,
        count: int | None = None,
        *,
        fallback: bool = True,
    ) -> int:
        calls.append(offset)
        if not sendfile:
            raise NotImplementedError
        return await real(transport, file, offset, count, fallback=fallback)  # type: ignore[arg-type]

    monkeypatch.setattr(loop, "sendfile", tracked)
    fake.chunk_delay(0.002)  # the file arrives in many pieces while clients wait
    f = the(fake, "big")
    link = await link_of(proxy, "big", f.filename)

    async def whole() -> bytes:
        resp = await proxy.get(link)
        assert resp.headers["X-Cache"] == "MISS"
        return await resp.read()

    async def tail() -> bytes:
        resp = await proxy.get(link, headers={"Range": "bytes=1000-"})
        assert resp.status == 206
        return await resp.read()

    got = await asyncio.gather(whole(), whole(), tail())
    assert list(got) == [f.data, f.data, f.data[1000:]]
    assert len(fake.file_gets(f.filename)) == 1
    assert calls  # the miss path asked for sendfile
    if sendfile:
        assert len(calls) > 3  # span after span as the file grew
