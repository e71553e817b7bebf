"""What a page miss keeps in memory (pages.py; figures in bench/memory.py).

* Large pages are parsed and rendered one at a time per process, in a thread, and the C
  heap is trimmed after each.
* A miss does not fill the store's in-memory body cache: a body enters it on its first
  hit, so the representations nobody asks for take no memory.
"""

import asyncio
import gzip
import threading
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

import cacheproxy.proxy.pages as pages_module
from cacheproxy.proxy.pages import Rendered
from cacheproxy.web.keys import proxy_key

JSON = "application/vnd.pypi.simple.v1+json"
Client = TestClient[web.Request, web.Application]


class Overlap:
    """Wraps render_project: counts the renders running at once. Each render waits (up to
    a second) for a second one to start, so two renders that may overlap do."""

    def __init__(self) -> None:
        self._real = pages_module.render_project
        self._lock = threading.Lock()
        self._two = threading.Event()
        self.running = 0
        self.most = 0
        self.calls = 0

    def __call__(self, *args: Any, **kwargs: Any) -> Rendered:
        with self._lock:
            self.calls += 1
            self.running += 1
            self.most = max(self.most, self.running)
            if self.running >= 2:
                self._two.set()
        try:
            self._two.wait(timeout=1.0)
            return self._real(*args, **kwargs)
        finally:
            with self._lock:
                self.running -= 1


@pytest.fixture
def every_page_large(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every page takes the large-page path (the fake index's pages are small)."""
    monkeypatch.setattr(pages_module, "_THREAD_RENDER_BYTES", 0)


@pytest.mark.usefixtures("every_page_large")
async def test_large_pages_render_one_at_a_time(
    proxy: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    overlap = Overlap()
    monkeypatch.setattr(pages_module, "render_project", overlap)
    first, second = await asyncio.gather(
        proxy.get("/simple/alpha/", headers={"Accept": JSON}),
        proxy.get("/simple/beta/", headers={"Accept": JSON}),
    )
    assert (first.status, second.status) == (200, 200)
    assert first.headers["X-Cache"] == second.headers["X-Cache"] == "MISS"
    assert overlap.calls == 2
    assert overlap.most == 1


@pytest.mark.usefixtures("every_page_large")
async def test_the_heap_is_trimmed_after_a_large_render(proxy: Client) -> None:
    trims: list[str] = []
    pages = proxy.app[proxy_key].pages
    pages._trim_heap = lambda: trims.append(threading.current_thread().name)
    resp = await proxy.get("/simple/alpha/", headers={"Accept": JSON})
    assert resp.status == 200
    assert len(trims) == 1
    # In the render thread: a trim takes milliseconds, never on the event loop's thread.
    assert trims[0] != threading.main_thread().name


async def test_a_small_page_is_rendered_on_the_loop_without_a_trim(proxy: Client) -> None:
    trims: list[str] = []
    proxy.app[proxy_key].pages._trim_heap = lambda: trims.append("trim")
    resp = await proxy.get("/simple/alpha/", headers={"Accept": JSON})
    assert resp.status == 200
    assert trims == []


async def test_a_miss_leaves_the_body_cache_to_hits(proxy: Client) -> None:
    storage = proxy.app[proxy_key].storage
    pages = proxy.app[proxy_key].pages
    headers = {"Accept": JSON, "Accept-Encoding": "gzip"}
    miss = await proxy.get("/simple/alpha/", headers=headers, auto_decompress=False)
    assert miss.headers["X-Cache"] == "MISS"
    body = await miss.read()
    await pages.flush()
    # Four representations were rendered and written; none of them is held in memory.
    assert len(storage.bodies) == 0

    hit = await proxy.get("/simple/alpha/", headers=headers, auto_decompress=False)
    assert hit.headers["X-Cache"] == "HIT"
    assert await hit.read() == body
    # The one asked for is now in memory, for the hits after it; the others are not.
    assert len(storage.bodies) == 1
    assert storage.bodies.bytes == len(body)
    assert gzip.decompress(body).startswith(b"{")
