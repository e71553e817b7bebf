"""Upstream faults: what the client gets, and that the cache holds nothing unverified after.

One test per row of the fault table in the README ("Faults and what clients see"). Every
test ends with ``assert_cache_verified``: each stored file hashes to its name and no
temporary is left behind.
"""

import asyncio
import errno
import hashlib
import json
import time
from pathlib import Path

import pytest
from aiohttp import ClientResponse, web
from aiohttp.test_utils import TestClient
from conftest import ProxyFactory, make_settings, temporaries
from distbuild import build_wheel
from fakeindex import FakeFile, FakeIndex
from packaging.utils import canonicalize_name
from pytest_aiohttp import AiohttpClient
from yarl import URL

from cacheproxy.proxy import upstream as upstream_mod
from cacheproxy.proxy.pages import render_project
from cacheproxy.proxy.upstream import file_url_allowed, retry_after_seconds
from cacheproxy.simple.models import DistFile, ProjectPage
from cacheproxy.web.app import create_app
from cacheproxy.web.keys import proxy_key

JSON = "application/vnd.pypi.simple.v1+json"
Client = TestClient[web.Request, web.Application]


async def assert_cache_verified(cache_dir: Path) -> None:
    for _ in range(100):  # background downloads finish (or clean up) on their own
        left = temporaries(cache_dir)
        if not left:
            break
        await asyncio.sleep(0.02)
    assert left == []
    for path in (cache_dir / "files").rglob("*"):
        if path.is_file() and "sha256" in path.parts:
            assert hashlib.sha256(path.read_bytes()).hexdigest() == path.name


def stored(cache_dir: Path) -> list[Path]:
    return [p for p in (cache_dir / "files").rglob("*") if p.is_file()]


def wheel(fake: FakeIndex, project: str) -> FakeFile:
    return next(f for f in fake.files(project) if f.filename.endswith(".whl"))


async def warm_page(proxy: Client, project: str) -> bytes:
    resp = await proxy.get(f"/simple/{project}/", headers={"Accept": JSON})
    assert resp.status == 200
    return await resp.read()


# -- index pages ---------------------------------------------------------------------------


async def test_5xx_is_retried(make_proxy: ProxyFactory, fake: FakeIndex, cache_dir: Path) -> None:
    proxy = await make_proxy(retries=2)
    fake.fail_pages(503, times=1)
    resp = await proxy.get("/simple/alpha/")
    assert resp.status == 200
    assert resp.headers["X-Cache"] == "MISS"
    assert len(fake.page_gets("alpha")) == 2
    await assert_cache_verified(cache_dir)


async def test_429_retry_after_is_honoured(make_proxy: ProxyFactory, fake: FakeIndex) -> None:
    proxy = await make_proxy(retries=1)
    waits: list[float] = []

    async def sleep(seconds: float) -> None:  # the backoff's clock: recorded, not waited
        waits.append(seconds)

    proxy.app[proxy_key].upstream.sleep = sleep
    fake.fail_pages(429, times=1, headers={"Retry-After": "1"})
    resp = await proxy.get("/simple/alpha/")
    assert resp.status == 200
    (wait,) = waits
    assert 1.0 <= wait <= 1.2  # waited as told (plus jitter), not hammered
    assert len(fake.page_gets("alpha")) == 2


async def test_429_with_long_retry_after_fails_fast(
    make_proxy: ProxyFactory, fake: FakeIndex
) -> None:
    proxy = await make_proxy(retries=2, index_ttl=0)
    fake.fail_pages(429, headers={"Retry-After": "3600"})
    resp = await proxy.get("/simple/alpha/")
    assert resp.status == 502
    assert "429" in await resp.text()
    assert len(fake.page_gets("alpha")) == 1  # no point retrying inside an hour's ban
    fake.reset_faults()
    good = await warm_page(proxy, "alpha")
    fake.fail_pages(429, headers={"Retry-After": "3600"})
    stale = await proxy.get("/simple/alpha/", headers={"Accept": JSON})
    assert stale.headers["X-Cache"] == "STALE"
    assert await stale.read() == good


async def test_dns_failure_is_502(tmp_path: Path, aiohttp_client: AiohttpClient) -> None:
    settings = make_settings(tmp_path / "c", "http://no-such-host.invalid/simple/")
    proxy = await aiohttp_client(create_app(settings))
    resp = await proxy.get("/simple/alpha/")
    assert resp.status == 502
    text = await resp.text()
    assert "cannot fetch" in text
    assert text.count("\n") == 1


async def test_redirect_loop_is_502(proxy: Client, fake: FakeIndex, cache_dir: Path) -> None:
    fake.redirect_loop_pages()
    resp = await proxy.get("/simple/alpha/")
    assert resp.status == 502
    assert "redirects" in await resp.text()
    await assert_cache_verified(cache_dir)


@pytest.mark.parametrize(
    ("body", "ctype"),
    [
        (b"<html><body>Please log in to the hotel wifi</body></html>", "text/html"),
        (b'{"error": "maintenance"}', "application/vnd.pypi.simple.v1+json"),
        (b"\x00\x01\x02garbage", None),
    ],
)
async def test_garbage_page_never_replaces_a_good_one(
    make_proxy: ProxyFactory, fake: FakeIndex, body: bytes, ctype: str | None
) -> None:
    proxy = await make_proxy(index_ttl=0)
    fake.garbage_pages(body, ctype)
    resp = await proxy.get("/simple/alpha/")
    assert resp.status == 502
    assert "could not be read" in await resp.text()
    fake.reset_faults()
    good = await warm_page(proxy, "alpha")
    fake.garbage_pages(body, ctype)
    stale = await proxy.get("/simple/alpha/", headers={"Accept": JSON})
    assert stale.status == 200
    assert stale.headers["X-Cache"] == "STALE"
    assert await stale.read() == good


async def test_huge_page_is_refused(
    proxy: Client, fake: FakeIndex, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(upstream_mod, "MAX_PAGE_BYTES", 1000)
    resp = await proxy.get("/simple/alpha/")
    assert resp.status == 502
    assert "too large" in await resp.text()


async def test_slow_page_trickle_within_timeout(make_proxy: ProxyFactory, fake: FakeIndex) -> None:
    proxy = await make_proxy(page_timeout=5.0)
    fake.chunk_size = 64
    fake.chunk_delay(0.01)
    resp = await proxy.get("/simple/beta/", headers={"Accept": JSON})
    assert resp.status == 200
    assert json.loads(await resp.read())["name"] == "beta"


# -- files ---------------------------------------------------------------------------------


async def link(proxy: Client, f: FakeFile) -> str:
    page = json.loads(await warm_page(proxy, f.project))
    entry = next(e for e in page["files"] if e["filename"] == f.filename)
    return str(entry["url"]).removeprefix("../..")


async def test_file_5xx_retried_then_served(
    make_proxy: ProxyFactory, fake: FakeIndex, cache_dir: Path
) -> None:
    proxy = await make_proxy(retries=2)
    f = wheel(fake, "beta")
    path = await link(proxy, f)
    fake.fail_files(500, times=2)
    resp = await proxy.get(path)
    assert resp.status == 200
    assert await resp.read() == f.data
    await assert_cache_verified(cache_dir)
    assert len(stored(cache_dir)) == 1


async def test_file_connect_refused_is_502(proxy: Client, fake: FakeIndex, cache_dir: Path) -> None:
    f = wheel(fake, "beta")
    path = await link(proxy, f)
    await fake.stop()
    resp = await proxy.get(path)
    assert resp.status == 502
    assert "cannot fetch" in await resp.text()
    await assert_cache_verified(cache_dir)
    assert stored(cache_dir) == []


async def test_file_read_timeout_is_504(
    make_proxy: ProxyFactory, fake: FakeIndex, cache_dir: Path
) -> None:
    proxy = await make_proxy(read_timeout=0.3)
    f = wheel(fake, "beta")
    path = await link(proxy, f)
    fake.delay_files(2)
    resp = await proxy.get(path)
    assert resp.status == 504
    assert "timed out" in await resp.text()
    await assert_cache_verified(cache_dir)
    assert stored(cache_dir) == []


async def test_slow_file_trickle_is_streamed_whole(
    proxy: Client, fake: FakeIndex, cache_dir: Path
) -> None:
    f = wheel(fake, "big")
    path = await link(proxy, f)
    fake.chunk_delay(0.01)  # slow, but each chunk well within the read timeout
    resp = await proxy.get(path)
    assert await resp.read() == f.data
    await assert_cache_verified(cache_dir)


async def test_reset_mid_body_is_resumed_with_a_range(
    make_proxy: ProxyFactory, fake: FakeIndex, cache_dir: Path
) -> None:
    proxy = await make_proxy(retries=2)
    f = wheel(fake, "big")
    path = await link(proxy, f)
    fake.truncate_files(f.size // 3, times=1)
    resp = await proxy.get(path)
    assert resp.status == 200
    assert await resp.read() == f.data  # the client never noticed
    gets = fake.file_gets(f.filename)
    assert len(gets) == 2
    assert "range" not in gets[0].headers
    assert gets[1].headers["range"].startswith("bytes=")
    assert int(gets[1].headers["range"][6:-1]) > 0  # resumed where the first one stopped
    await assert_cache_verified(cache_dir)
    assert len(stored(cache_dir)) == 1


@pytest.mark.parametrize("delta", [10, -10])
async def test_length_disagreeing_with_index_is_refused(
    proxy: Client, fake: FakeIndex, cache_dir: Path, delta: int
) -> None:
    fake.misreport_sizes(delta)
    f = wheel(fake, "beta")
    path = await link(proxy, f)
    resp = await proxy.get(path)
    assert resp.status == 502
    assert "index size" in await resp.text()
    await assert_cache_verified(cache_dir)
    assert stored(cache_dir) == []


async def test_gzip_encoded_file_is_decoded_and_verified(
    proxy: Client, fake: FakeIndex, cache_dir: Path
) -> None:
    f = wheel(fake, "beta")
    path = await link(proxy, f)
    fake.gzip_files()
    resp = await proxy.get(path, auto_decompress=False)
    body = await resp.read()
    assert "Content-Encoding" not in resp.headers  # never forwarded: the bytes are decoded
    assert int(resp.headers["Content-Length"]) == f.size == len(body)
    assert body == f.data
    await assert_cache_verified(cache_dir)
    assert len(stored(cache_dir)) == 1


# -- where files may come from (no SSRF through upstream pages) ---------------------------


@pytest.mark.parametrize(
    ("url", "upstream", "allowed"),
    [
        ("https://files.example/packages/a/b/x.whl", "https://index.example/simple/", True),
        ("http://127.0.0.1:9/x.whl", "https://index.example/simple/", False),
        ("http://localhost/x.whl", "https://index.example/simple/", False),
        ("http://10.1.2.3/x.whl", "https://index.example/simple/", False),
        ("http://[::1]/x.whl", "https://index.example/simple/", False),
        ("http://169.254.169.254/latest/meta-data", "https://index.example/simple/", False),
        ("http://169.254.169.254/latest/meta-data", "http://10.0.0.5/simple/", False),
        # Another private host is not the index's own: it must be allowed by name.
        ("http://10.0.0.6/files/x.whl", "http://10.0.0.5/simple/", False),
        ("http://127.0.0.1:8080/x.whl", "http://127.0.0.1:8081/simple/", True),
        ("file:///etc/passwd", "https://index.example/simple/", False),
        ("ftp://files.example/x.whl", "https://index.example/simple/", False),
        # Legacy IPv4 spellings that resolvers accept: hex, decimal, octal, short.
        ("http://0x7f000001:9/x.whl", "https://index.example/simple/", False),
        ("http://2130706433/x.whl", "https://index.example/simple/", False),
        ("http://0177.0.0.1/x.whl", "https://index.example/simple/", False),
        ("http://127.1/x.whl", "https://index.example/simple/", False),
        ("http://[::ffff:127.0.0.1]/x.whl", "https://index.example/simple/", False),
        ("http://LOCALHOST./x.whl", "https://index.example/simple/", False),
    ],
)
def test_file_hosts_allowed(url: str, upstream: str, allowed: bool) -> None:
    assert file_url_allowed(url, URL(upstream)) is allowed


def test_allowed_hosts_are_trusted_wherever_they_are() -> None:
    index = URL("http://10.0.0.5/simple/")
    assert file_url_allowed("http://10.0.0.6/files/x.whl", index, ("10.0.0.6",))
    assert file_url_allowed("http://files.corp/x.whl", index, ("FILES.corp.",))
    assert not file_url_allowed("http://10.0.0.7/files/x.whl", index, ("10.0.0.6",))


def test_disallowed_files_are_not_advertised() -> None:
    good = DistFile(filename="p-1.whl", url="https://files.example/packages/a/p-1.whl")
    evil = DistFile(filename="p-2.whl", url="http://169.254.169.254/p-2.whl")
    page = ProjectPage(name=canonicalize_name("p"), files=(good, evil))
    rendered = render_project(page, lambda u: file_url_allowed(u, URL("https://i.example/")))
    assert rendered.files is not None
    assert list(rendered.files) == ["a/p-1.whl"]
    assert b"169.254" not in rendered.bodies["json"]
    assert b"p-2.whl" not in rendered.bodies["html"]


@pytest.mark.parametrize(
    ("value", "expected"),
    [("3", 3.0), (" 10 ", 10.0), ("", None), (None, None), ("soon", None), ("-1", None)],
)
def test_retry_after_parsing(value: str | None, expected: float | None) -> None:
    assert retry_after_seconds(value) == expected


def test_retry_after_http_date() -> None:
    from email.utils import formatdate

    seconds = retry_after_seconds(formatdate(time.time() + 30, usegmt=True))
    assert seconds is not None
    assert 25 <= seconds <= 31


# -- the cache's own disk ------------------------------------------------------------------


def disk_full(*_args: object) -> None:
    raise OSError(errno.ENOSPC, "No space left on device")


@pytest.mark.parametrize("where", ["first-write", "mid-file", "temporary"])
async def test_disk_full_still_serves_the_file_and_stores_nothing(
    proxy: Client,
    fake: FakeIndex,
    cache_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    where: str,
) -> None:
    store = proxy.app[proxy_key].storage
    f = wheel(fake, "big")
    path = await link(proxy, f)
    if where == "temporary":
        monkeypatch.setattr(store, "new_temp", disk_full)
    else:
        writes = 0
        real = store.write_chunk

        def flaky(fd: int, data: bytes) -> None:
            nonlocal writes
            writes += 1
            if where == "first-write" or writes > 3:
                disk_full()
            real(fd, data)

        monkeypatch.setattr(store, "write_chunk", flaky)
    resp = await proxy.get(path)
    assert resp.status == 200
    assert await resp.read() == f.data  # the client still gets its whole file
    assert stored(cache_dir) == []
    await assert_cache_verified(cache_dir)
    assert any("No space left" in r.getMessage() for r in caplog.records)
    monkeypatch.undo()  # space again: the proxy kept running and now stores it
    again = await proxy.get(path)
    assert await again.read() == f.data
    assert len(stored(cache_dir)) == 1


# -- slow downloads and everything else ----------------------------------------------------

OLD_PER_HOST_LIMIT = 32  # connections per host the one shared pool used to allow


@pytest.fixture
def slow_wheels(fake: FakeIndex, tmp_path: Path) -> list[FakeFile]:
    """32 more projects on the fake's file host, one small wheel each."""
    out = tmp_path / "slow"
    out.mkdir()
    return [
        fake.add_file(f"slow{i}", build_wheel(out, f"slow{i}", "1.0"))
        for i in range(OLD_PER_HOST_LIMIT)
    ]


async def start_held(
    proxy: Client, fake: FakeIndex, held: list[FakeFile]
) -> tuple[asyncio.Event, list[ClientResponse]]:
    """Start downloads of ``held`` that upstream keeps open after their headers."""
    paths = [await link(proxy, f) for f in held]
    release = fake.hold_files({f.filename for f in held})
    # Each answer comes with the headers, while its body is still held upstream.
    running = await asyncio.gather(*(proxy.get(p) for p in paths))
    assert [r.status for r in running] == [200] * len(held)
    return release, running


async def test_slow_downloads_do_not_hold_up_pages_metadata_or_small_files(
    make_proxy: ProxyFactory,
    fake: FakeIndex,
    cache_dir: Path,
    slow_wheels: list[FakeFile],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(upstream_mod, "SMALL_FILE_BYTES", 0)  # these wheels count as big
    # A read timeout must not end the held downloads (and free their connections) first.
    proxy = await make_proxy(read_timeout=60.0)
    release, running = await start_held(proxy, fake, slow_wheels)
    alpha, beta = wheel(fake, "alpha"), wheel(fake, "beta")
    alpha_path, beta_path = await link(proxy, alpha), await link(proxy, beta)
    monkeypatch.setattr(upstream_mod, "SMALL_FILE_BYTES", 1024 * 1024)
    # The wait_for only turns a hang (the old shared pool) into a failure.
    page = await asyncio.wait_for(proxy.get("/simple/gamma/"), 10)
    assert page.status == 200
    meta = await asyncio.wait_for(proxy.get(alpha_path + ".metadata"), 10)
    assert await meta.read() == alpha.metadata_bytes
    small = await asyncio.wait_for(proxy.get(beta_path), 10)
    assert await small.read() == beta.data
    # ... all answered while every slow download was still held open upstream.
    assert not release.is_set()
    assert len(proxy.app[proxy_key].downloads) == len(slow_wheels)
    assert not any(r.content.at_eof() for r in running)
    release.set()
    for resp, f in zip(running, slow_wheels, strict=True):
        assert await resp.read() == f.data
    await assert_cache_verified(cache_dir)


async def test_downloads_beyond_the_limit_get_503_and_store_nothing(
    make_proxy: ProxyFactory,
    fake: FakeIndex,
    cache_dir: Path,
    slow_wheels: list[FakeFile],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(upstream_mod, "SMALL_FILE_BYTES", 0)
    monkeypatch.setattr(upstream_mod, "DOWNLOAD_SLOT_WAIT", 0.5)
    proxy = await make_proxy(max_downloads=2)
    held, extra = slow_wheels[:2], slow_wheels[2]
    extra_path = await link(proxy, extra)
    release, running = await start_held(proxy, fake, held)
    for resp in running:
        resp.close()  # clients that hang up after the headers: the downloads go on
    busy = await proxy.get(extra_path)
    assert busy.status == 503
    text = await busy.text()
    assert "--max-downloads" in text
    assert "\n" not in text.strip()
    assert not release.is_set()
    release.set()
    for f in held:  # the two held downloads finish and are stored
        resp = await proxy.get(await link(proxy, f))
        assert await resp.read() == f.data
    again = await proxy.get(extra_path)
    assert await again.read() == extra.data
    await assert_cache_verified(cache_dir)
    assert len(stored(cache_dir)) == 3
