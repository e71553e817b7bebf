"""Reaching upstream through HTTP_PROXY / NO_PROXY (upstream.EnvProxies), and no ~/.netrc.

The forward proxy here is a real aiohttp server on loopback that relays absolute-form
requests to the fake upstream and logs what it was asked.
"""

import base64
import json
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from conftest import ProxyFactory
from fakeindex import FakeIndex
from pytest_aiohttp import AiohttpServer
from resolvers import FakeResolver

from cacheproxy.proxy import addresses

JSON = "application/vnd.pypi.simple.v1+json"
_PROXY_VARS = ("HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "ALL_PROXY", "REQUEST_METHOD")


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in _PROXY_VARS:
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.lower(), raising=False)


class ForwardProxy:
    def __init__(self) -> None:
        self.seen: list[tuple[str, str | None]] = []  # (target URL, Proxy-Authorization)
        self.address = ""  # host:port, once started

    async def relay(self, request: web.Request) -> web.Response:
        target = f"http://{request.headers['Host']}{request.rel_url}"
        self.seen.append((target, request.headers.get("Proxy-Authorization")))
        headers = {k: v for k, v in request.headers.items() if k.lower() != "proxy-authorization"}
        async with (
            aiohttp.ClientSession(auto_decompress=False) as s,
            s.get(target, headers=headers, allow_redirects=False) as up,
        ):
            body = await up.read()
            keep = ("Content-Type", "ETag", "Content-Encoding", "Location", "Content-Range")
            out = {k: up.headers[k] for k in keep if k in up.headers}
            return web.Response(status=up.status, body=body, headers=out)

    async def start(self, aiohttp_server: AiohttpServer) -> str:
        app = web.Application()
        app.router.add_route("GET", "/{tail:.*}", self.relay)
        server = await aiohttp_server(app)
        return f"127.0.0.1:{server.port}"


async def page_and_file(client: TestClient[web.Request, web.Application], fake: FakeIndex) -> None:
    f = fake.files("beta")[0]
    page = await client.get("/simple/beta/", headers={"Accept": JSON})
    assert page.status == 200
    assert f.filename in {x["filename"] for x in json.loads(await page.read())["files"]}
    resp = await client.get(f.url_path)
    assert await resp.read() == f.data


@pytest.fixture
async def forward(aiohttp_server: AiohttpServer) -> ForwardProxy:
    proxy = ForwardProxy()
    proxy.address = await proxy.start(aiohttp_server)
    return proxy


async def test_upstream_is_reached_through_http_proxy_with_its_credentials(
    make_proxy: ProxyFactory,
    fake: FakeIndex,
    forward: ForwardProxy,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("HTTP_PROXY", f"http://build:s3cret@{forward.address}")
    proxy = await make_proxy()
    await page_and_file(proxy, fake)
    targets = [t for t, _auth in forward.seen]
    assert any(t.endswith("/simple/beta/") for t in targets)
    assert any("/packages/" in t for t in targets)  # the file host too
    expected = "Basic " + base64.b64encode(b"build:s3cret").decode()
    assert {auth for _t, auth in forward.seen} == {expected}
    # The proxy's credentials go to the proxy only, never on to upstream.
    assert all("proxy-authorization" not in r.headers for r in fake.requests)


async def test_no_proxy_hosts_are_reached_directly(
    make_proxy: ProxyFactory,
    fake: FakeIndex,
    forward: ForwardProxy,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("HTTP_PROXY", f"http://{forward.address}")
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    proxy = await make_proxy()
    await page_and_file(proxy, fake)
    assert forward.seen == []
    assert fake.page_gets("beta")


async def test_netrc_credentials_are_never_sent_upstream(
    make_proxy: ProxyFactory, fake: FakeIndex, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Credentials go to the index host only when they are in the upstream URL (README).
    netrc = tmp_path / "netrc"
    netrc.write_text("machine 127.0.0.1 login someone password leaked\n")
    netrc.chmod(0o600)
    monkeypatch.setenv("NETRC", str(netrc))
    proxy = await make_proxy()
    await page_and_file(proxy, fake)
    assert fake.requests
    assert all("authorization" not in r.headers for r in fake.requests)


async def test_a_proxy_on_an_internal_name_is_trusted(
    make_proxy: ProxyFactory,
    fake: FakeIndex,
    forward: ForwardProxy,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The operator's proxy usually lives on an internal address: the address policy
    # (proxy/addresses.py) trusts it as it trusts the index host.
    resolver = FakeResolver({"proxy.test": "127.0.0.1"})
    monkeypatch.setattr(addresses, "system_resolver", lambda: resolver)
    monkeypatch.setenv("HTTP_PROXY", f"http://proxy.test:{forward.address.rpartition(':')[2]}")
    proxy = await make_proxy()
    await page_and_file(proxy, fake)
    assert "proxy.test" in resolver.asked
    assert any("/packages/" in t for t, _auth in forward.seen)
