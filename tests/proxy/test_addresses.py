"""The address policy (proxy/addresses.py) end to end: a file host is judged by the address
the proxy would connect to, on every redirect hop, never by the link's text alone.

Host names resolve through a fake resolver (``system_resolver`` is the hook) that maps test
names to 127.0.0.1, so a name "resolving to an internal address" needs no real DNS. The
upstream index is given as ``index.test``, so 127.0.0.1 is not the index's own host name
here and gets no trust from it.
"""

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from conftest import make_settings
from fakeindex import FakeFile, FakeIndex
from pytest_aiohttp import AiohttpClient, AiohttpServer
from resolvers import FakeResolver
from yarl import URL

from cacheproxy.cli.main import build_parser
from cacheproxy.errors import ConfigError
from cacheproxy.proxy import addresses
from cacheproxy.proxy.addresses import HostPolicy, ip_literal, is_public
from cacheproxy.settings import build_settings
from cacheproxy.web.app import create_app

JSON = "application/vnd.pypi.simple.v1+json"
Client = TestClient[web.Request, web.Application]


@pytest.fixture
def resolver(monkeypatch: pytest.MonkeyPatch) -> FakeResolver:
    fake = FakeResolver(
        {"index.test": "127.0.0.1", "files.test": "127.0.0.1", "internal.test": "127.0.0.1"}
    )
    monkeypatch.setattr(addresses, "system_resolver", lambda: fake)
    return fake


class Redirector:
    """A file host that answers every request with a redirect to ``target + path``."""

    def __init__(self) -> None:
        self.target = ""
        self.hits: list[str] = []
        self.port = 0

    async def handle(self, request: web.Request) -> web.Response:
        self.hits.append(request.path)
        raise web.HTTPFound(self.target + request.raw_path)

    async def start(self, aiohttp_server: AiohttpServer) -> None:
        app = web.Application()
        app.router.add_get("/{tail:.*}", self.handle)
        port = (await aiohttp_server(app)).port
        assert port is not None
        self.port = port


ProxyMaker = Callable[..., Any]


@pytest.fixture
def named_proxy(
    aiohttp_client: AiohttpClient, fake: FakeIndex, tmp_path: Path, resolver: FakeResolver
) -> ProxyMaker:
    """A proxy whose upstream is ``index.test`` (the fake index, by name)."""

    async def factory(**overrides: Any) -> Client:
        index = URL(fake.index_url).with_host("index.test")
        settings = make_settings(tmp_path / "cache", str(index), **overrides)
        return await aiohttp_client(create_app(settings))

    return factory


def files_port(fake: FakeIndex) -> int:
    port = URL(fake.files_url).port
    assert port is not None
    return port


def stored(tmp_path: Path) -> list[Path]:
    return [p for p in (tmp_path / "cache" / "files").rglob("*") if p.is_file()]


async def listed(proxy: Client, project: str) -> list[str]:
    page = await proxy.get(f"/simple/{project}/", headers={"Accept": JSON})
    assert page.status == 200
    return [f["filename"] for f in (await page.json(content_type=None))["files"]]


def beta(fake: FakeIndex) -> FakeFile:
    return fake.files("beta")[0]


async def test_an_allowed_file_host_name_is_fetched(
    named_proxy: ProxyMaker, fake: FakeIndex, resolver: FakeResolver
) -> None:
    # The control for the refusals below: the same loopback host, allowed by name.
    fake.files_url = f"http://files.test:{files_port(fake)}"
    proxy = await named_proxy(internal_hosts=("files.test",))
    f = beta(fake)
    assert f.filename in await listed(proxy, "beta")
    resp = await proxy.get(f.url_path)
    assert resp.status == 200
    assert await resp.read() == f.data
    assert {"index.test", "files.test"} <= set(resolver.asked)


async def test_a_name_resolving_to_loopback_is_refused(
    named_proxy: ProxyMaker, fake: FakeIndex, tmp_path: Path
) -> None:
    fake.files_url = f"http://files.test:{files_port(fake)}"
    proxy = await named_proxy()
    f = beta(fake)
    assert f.filename in await listed(proxy, "beta")  # a name: judged when connecting
    resp = await proxy.get(f.url_path)
    assert resp.status == 502
    text = await resp.text()
    assert "files.test" in text
    assert "127.0.0.1" in text
    assert "\n" not in text.strip()
    assert fake.file_gets() == []  # never connected
    assert stored(tmp_path) == []


@pytest.mark.parametrize("host", ["0x7f000001", "2130706433", "0177.0.0.1", "127.1", "[::1]"])
async def test_ip_literal_file_hosts_are_not_listed_or_fetched(
    named_proxy: ProxyMaker, fake: FakeIndex, tmp_path: Path, host: str
) -> None:
    fake.files_url = f"http://{host}:{files_port(fake)}"
    proxy = await named_proxy()
    f = beta(fake)
    assert await listed(proxy, "beta") == []
    resp = await proxy.get(f.url_path)
    assert resp.status == 404
    assert fake.file_gets() == []
    assert stored(tmp_path) == []


@pytest.mark.parametrize(
    "target",
    [
        "http://127.0.0.1:{port}",
        "http://[::1]:{port}",
        "http://0x7f000001:{port}",
        "http://internal.test:{port}",
    ],
)
async def test_a_redirect_to_an_internal_address_is_refused(
    named_proxy: ProxyMaker,
    fake: FakeIndex,
    aiohttp_server: AiohttpServer,
    tmp_path: Path,
    target: str,
) -> None:
    # An allowed file host redirects to the fake's real file host on loopback: followed,
    # its (correctly hashed) bytes would be stored and served to everyone.
    redirector = Redirector()
    await redirector.start(aiohttp_server)
    redirector.target = target.format(port=files_port(fake))
    fake.files_url = f"http://files.test:{redirector.port}"
    proxy = await named_proxy(internal_hosts=("files.test",))
    f = beta(fake)
    assert f.filename in await listed(proxy, "beta")
    resp = await proxy.get(f.url_path)
    assert resp.status == 502
    text = await resp.text()
    assert "refused" in text
    assert "\n" not in text.strip()
    assert redirector.hits  # the allowed host was asked ...
    assert fake.file_gets() == []  # ... the internal one never
    assert stored(tmp_path) == []


async def test_the_index_host_name_is_trusted_on_any_port(
    named_proxy: ProxyMaker, fake: FakeIndex
) -> None:
    # PyPI-like layouts (and the fake) serve files from a second port of the index host.
    fake.files_url = f"http://index.test:{files_port(fake)}"
    proxy = await named_proxy()
    f = beta(fake)
    assert f.filename in await listed(proxy, "beta")
    resp = await proxy.get(f.url_path)
    assert resp.status == 200
    assert await resp.read() == f.data


@pytest.mark.parametrize(
    ("address", "public"),
    [
        ("8.8.8.8", True),
        ("2606:4700::1", True),
        ("203.0.113.80", True),  # documentation range: a stand-in for a public host
        ("2001:db8::1", True),
        ("127.0.0.1", False),
        ("10.1.2.3", False),
        ("100.64.0.1", False),  # shared address space (RFC 6598)
        ("169.254.169.254", False),
        ("0.0.0.0", False),
        ("224.0.0.1", False),
        ("255.255.255.255", False),
        ("192.168.1.1", False),
        ("172.20.0.1", False),
        ("::", False),
        ("fd00::5", False),
        ("::7f00:1", False),  # IPv4-compatible form of loopback
        ("2001:0:4136:e378:8000:63bf:80ff:fffe", False),  # Teredo of 127.0.0.1
        ("::1", False),
        ("fe80::1%eth0", False),
        ("::ffff:127.0.0.1", False),
        ("64:ff9b::7f00:1", False),  # NAT64 of loopback
        ("2002:7f00:1::", False),  # 6to4 of loopback
    ],
)
def test_public_addresses(address: str, public: bool) -> None:
    ip = ip_literal(address)
    assert ip is not None
    assert is_public(ip) is public


def test_names_are_not_ip_literals() -> None:
    assert ip_literal("files.example") is None
    assert ip_literal("1e100.net") is None
    assert ip_literal("deadbeef") is None


def test_redirect_hops_to_other_schemes_are_refused() -> None:
    policy = HostPolicy.build(URL("https://index.example/simple/"))
    assert policy.refusal(URL("file:///etc/passwd")) is not None
    assert policy.refusal(URL("http://index.example:8080/x")) is None


def test_internal_hosts_and_max_downloads_settings() -> None:
    base = {"upstream": "https://index.example/simple/", "cache_dir": "/tmp/c"}
    flags = {**base, "internal_hosts": ["Files.Corp.", "[fd00::5]"], "max_downloads": "8"}
    settings = build_settings(flags, {})
    assert settings.internal_hosts == ("files.corp", "fd00::5")
    assert settings.max_downloads == 8
    env = {"CACHEPROXY_INTERNAL_HOSTS": "a.corp, 10.0.0.6,", "CACHEPROXY_MAX_DOWNLOADS": "3"}
    settings = build_settings(base, env)
    assert settings.internal_hosts == ("a.corp", "10.0.0.6")
    assert settings.max_downloads == 3
    assert build_settings(base, {}).max_downloads == 64


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("internal_hosts", ["http://files.corp/"]),
        ("internal_hosts", ["files.corp:8080"]),
        ("internal_hosts", ["user@files.corp"]),
        ("max_downloads", "0"),
        ("max_downloads", "many"),
    ],
)
def test_bad_network_settings_are_one_line(name: str, value: object) -> None:
    flags = {"upstream": "https://index.example/simple/", "cache_dir": "/tmp/c", name: value}
    with pytest.raises(ConfigError) as info:
        build_settings(flags, {})
    assert "\n" not in str(info.value)


def test_internal_host_flag_is_repeatable() -> None:
    args = build_parser().parse_args(
        ["serve", "--internal-host", "a.corp", "--internal-host", "b.corp", "--max-downloads", "5"]
    )
    assert args.internal_hosts == ["a.corp", "b.corp"]
    assert args.max_downloads == "5"
