"""Bad input and security: hostile requests get a short 4xx, never a 5xx, never a file
outside the cache, never a fetch from anywhere but upstream; credentials never leak."""

import asyncio
import logging
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from conftest import make_settings
from fakeindex import FakeIndex
from pytest_aiohttp import AiohttpClient
from yarl import URL

from cacheproxy.web.app import create_app

Client = TestClient[web.Request, web.Application]


async def raw_request(client: Client, request: bytes) -> tuple[int, bytes]:
    """Send bytes on a fresh connection; return the status and body of the answer."""
    host, port = client.server.host, client.server.port
    reader, writer = await asyncio.open_connection(host, port)
    writer.write(request)
    await writer.drain()
    data = await asyncio.wait_for(reader.read(65536), 10)
    writer.close()
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), body


@pytest.mark.parametrize(
    "path",
    [
        "/simple/" + "a" * 20_000 + "/",
        "/packages/" + "x/" * 5_000 + "f.whl",
    ],
)
async def test_overlong_urls_are_4xx(proxy: Client, fake: FakeIndex, path: str) -> None:
    status, _body = await raw_request(
        proxy, f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode()
    )
    assert 400 <= status < 500
    assert fake.requests == []


async def test_overlong_header_is_4xx(proxy: Client, fake: FakeIndex) -> None:
    status, _ = await raw_request(
        proxy,
        b"GET /simple/alpha/ HTTP/1.1\r\nHost: x\r\nX-Big: "
        + b"y" * 20_000
        + b"\r\nConnection: close\r\n\r\n",
    )
    assert 400 <= status < 500
    assert fake.requests == []


async def test_absolute_form_request_is_not_an_open_proxy(proxy: Client, fake: FakeIndex) -> None:
    target = fake.files_url + "/packages/whatever"
    status, _ = await raw_request(
        proxy, f"GET {target} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode()
    )
    assert status in (400, 404)
    assert fake.requests == []


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "PATCH", "PROPFIND"])
async def test_unknown_methods_are_405(proxy: Client, method: str) -> None:
    resp = await proxy.request(method, "/simple/alpha/")
    assert resp.status == 405
    assert len(await resp.read()) < 200


@pytest.mark.parametrize(
    "headers",
    [
        {"Range": "bytes=abc"},
        {"Range": "bytes=5-1"},
        {"Range": "chars=0-1"},
        {"Range": "bytes=0-1,5-6"},
        {"Range": "bytes=" + "9" * 5000 + "-"},
        {"If-Range": "garbage", "Range": "bytes=0-1"},
        {"If-None-Match": '"unterminated'},
        {"If-None-Match": "W/"},
        {"If-Modified-Since": "yesterday"},
        {"Accept": ";;;q=nonsense,,,"},
        {"Accept-Encoding": "gzip;q=x"},
    ],
)
async def test_bad_conditional_and_range_headers_never_5xx(
    proxy: Client, fake: FakeIndex, headers: dict[str, str]
) -> None:
    f = next(f for f in fake.files("beta"))
    page = await proxy.get("/simple/beta/", headers=headers)
    assert page.status < 500
    for _ in range(2):  # a miss, then a hit
        resp = await proxy.get(f.url_path, headers=headers)
        assert resp.status in (200, 206, 304, 406, 416)
        if resp.status == 200:
            assert await resp.read() == f.data
        else:
            await resp.read()


async def test_credentials_never_leak(
    aiohttp_client: AiohttpClient,
    fake: FakeIndex,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    upstream = URL(fake.index_url).with_user("deploy").with_password("s3cr3t-t0ken")
    proxy = await aiohttp_client(create_app(make_settings(tmp_path / "c", str(upstream))))
    page = await proxy.get("/simple/alpha/")
    assert page.status == 200
    assert b"s3cr3t" not in await page.read()
    # The credentials did go to upstream, as HTTP basic auth on the index host only.
    assert fake.page_gets("alpha")[0].headers["authorization"].startswith("Basic ")
    await fake.stop()
    failed = await proxy.get("/simple/beta/")
    assert failed.status == 502
    text = await failed.text()
    assert "s3cr3t" not in text
    assert "127.0.0.1" in text  # the reason still says where it failed
    assert not any("s3cr3t" in r.getMessage() for r in caplog.records)


async def test_credentials_go_to_the_index_origin_only(
    aiohttp_client: AiohttpClient, fake: FakeIndex, tmp_path: Path
) -> None:
    # The fake's file host is another port of the same host name (127.0.0.1): a different
    # origin (RFC 6454), so it must not get the index's credentials.
    upstream = URL(fake.index_url).with_user("deploy").with_password("s3cr3t-t0ken")
    proxy = await aiohttp_client(create_app(make_settings(tmp_path / "c", str(upstream))))
    f = fake.files("alpha")[0]
    page = await proxy.get("/simple/alpha/")
    assert page.status == 200
    for path in (f.url_path, f.url_path + ".metadata"):
        resp = await proxy.get(path)
        assert resp.status == 200
        await resp.read()
    assert fake.page_gets("alpha")[0].headers["authorization"].startswith("Basic ")
    files = [r for r in fake.requests if r.host == "files"]
    assert len(files) == 2
    assert all("authorization" not in r.headers for r in files)


@pytest.mark.parametrize(
    "query",
    ["x=%0d%0aSet-Cookie:%20a=b", "x=%0aLocation:%20http://127.0.0.9/", "a=%00%7f&b=%E2%82%AC"],
)
@pytest.mark.parametrize("path", ["/simple/Foo/", "/simple/foo"])
async def test_redirect_keeps_the_query_encoded(
    proxy: Client, fake: FakeIndex, path: str, query: str, caplog: pytest.LogCaptureFixture
) -> None:
    # A decoded query put CR/LF into Location: aiohttp refused the header, so the client got
    # no status line and the log a traceback per request.
    reader, writer = await asyncio.open_connection(proxy.server.host, proxy.server.port)
    writer.write(f"GET {path}?{query} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
    data = await asyncio.wait_for(reader.read(65536), 10)
    writer.close()
    head = data.partition(b"\r\n\r\n")[0].split(b"\r\n")
    assert head[0].startswith(b"HTTP/1.1 301 "), data[:500]
    locations = [h for h in head if h.lower().startswith(b"location:")]
    assert locations == [b"Location: " + (b"../foo/" if path.endswith("/") else b"foo/") + b"?"
                         + query.encode()]  # fmt: skip
    assert not any(h.lower().startswith(b"set-cookie") for h in head)
    assert "Traceback" not in caplog.text
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert fake.requests == []
