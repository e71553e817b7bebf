"""Offline mode is visible: the status page, /-/stats and /-/metrics say so, and a page
that is not cached is a 404 with the reason, so real clients stop at once."""

import asyncio
import json
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from aiohttp.typedefs import Handler
from clients import pip_cmd, uv_cmd
from conftest import ProxyFactory, client_env, make_settings
from fakeindex import FakeIndex
from prometheus import samples
from pytest_aiohttp import AiohttpServer

from cacheproxy.web.app import create_app


async def test_figures_say_offline(make_proxy: ProxyFactory, fake: FakeIndex) -> None:
    online = await make_proxy()
    stats = json.loads(await (await online.get("/-/stats")).read())
    assert stats["offline"] is False
    got = samples(await (await online.get("/-/metrics")).text())
    assert got[("cacheproxy_offline", ())] == 0
    assert "Offline mode" not in await (await online.get("/")).text()

    offline = await make_proxy(offline=True)
    stats = json.loads(await (await offline.get("/-/stats")).read())
    assert stats["offline"] is True
    assert stats["upstream"] == fake.index_url  # what is configured, flagged as unused
    got = samples(await (await offline.get("/-/metrics")).text())
    assert got[("cacheproxy_offline", ())] == 1
    page = await (await offline.get("/")).text()
    assert "<strong>Offline mode.</strong> Upstream is not contacted" in page
    assert '<strong class="offline">offline</strong>, not contacted' in page
    assert fake.requests == []


async def offline_server(
    aiohttp_server: AiohttpServer, fake: FakeIndex, cache_dir: Path, seen: list[str]
) -> TestServer:
    """An offline proxy on an empty cache that records the page paths clients ask for."""

    @web.middleware
    async def record(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path.startswith("/simple/"):
            seen.append(request.path)
        return await handler(request)

    app = create_app(make_settings(cache_dir, fake.index_url, offline=True))
    app.middlewares.append(record)
    return await aiohttp_server(app)


async def run_failing(cmd: list[str], tmp: Path) -> str:
    proc = await asyncio.create_subprocess_exec(
        *cmd, env=client_env(tmp), stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    out, _ = await asyncio.wait_for(proc.communicate(), timeout=120)
    assert proc.returncode != 0
    return out.decode(errors="replace")


@pytest.mark.clients
@pytest.mark.parametrize("tool", ["pip", "uv"])
async def test_clients_stop_at_once_on_an_uncached_project(
    tool: str,
    aiohttp_server: AiohttpServer,
    fake: FakeIndex,
    cache_dir: Path,
    tmp_path: Path,
) -> None:
    """uv retried the old 504 (three more requests, 11 s); a 404 is asked once."""
    seen: list[str] = []
    server = await offline_server(aiohttp_server, fake, cache_dir, seen)
    index = str(server.make_url("/simple/"))
    make = pip_cmd if tool == "pip" else uv_cmd
    out = await run_failing(make(index, tmp_path / "t", "gamma"), tmp_path)
    assert seen == ["/simple/gamma/"], out
    assert "gamma" in out
    assert fake.requests == []
    async with aiohttp.ClientSession() as s, s.get(index + "gamma/") as resp:
        assert resp.status == 404
        assert "offline mode: project 'gamma' is not cached" in await resp.text()
