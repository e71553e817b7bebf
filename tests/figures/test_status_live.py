"""The status page of the real app after real traffic: plain HTTP, and headless Chromium
with a screenshot (skips without /usr/bin/chromium)."""

import json
from pathlib import Path

import aiohttp
import pytest
from aiohttp.test_utils import TestServer
from browser import needs_chromium, run_chromium
from clients import pip_cmd, run
from fakeindex import FakeIndex

pytestmark = pytest.mark.clients


async def real_traffic(proxy_server: TestServer, tmp_path: Path) -> str:
    index = str(proxy_server.make_url("/simple/"))
    for n in range(2):  # cold, then warm: misses, then hits
        await run(pip_cmd(index, tmp_path / f"t{n}", "alpha", "gamma"), tmp_path)
    return str(proxy_server.make_url("/"))


async def test_status_page_over_http(
    proxy_server: TestServer, fake: FakeIndex, tmp_path: Path
) -> None:
    url = await real_traffic(proxy_server, tmp_path)
    async with aiohttp.ClientSession() as s:
        async with s.get(url) as resp:
            assert resp.status == 200
            assert resp.headers["Content-Type"] == "text/html; charset=utf-8"
            page = await resp.text()
        async with s.get(url + "-/stats") as resp:
            stats = json.loads(await resp.read())
    assert stats["requests"]["hits"] >= 3  # the warm run's files were hits
    assert stats["requests"]["misses"] >= 3
    assert f"{stats['hit_ratio'] * 100:.1f}%" in page
    assert "alpha" in page  # a top project
    assert "<svg" in page


@needs_chromium
async def test_status_page_in_a_browser(
    proxy_server: TestServer, fake: FakeIndex, tmp_path: Path
) -> None:
    url = await real_traffic(proxy_server, tmp_path)
    shot = tmp_path / "status.png"
    await run_chromium(tmp_path, f"--screenshot={shot}", "--window-size=1280,1000", url)
    assert shot.stat().st_size > 20_000
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    dom = await run_chromium(tmp_path, "--dump-dom", url)
    assert "Hit ratio" in dom or "hit ratio" in dom.lower()
    assert "alpha" in dom
    assert dom.count("<rect") >= 1
