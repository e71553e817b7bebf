"""A page miss is answered from memory while its write to disk runs (pages.py), and a
damaged stored body is dropped and fetched again rather than sent (handlers._send_page).

The write is held back with a threading.Event in the storage's page-writer thread, so
"answered before it is on disk" is shown by state, not by timing.
"""

import errno
import json
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from conftest import ProxyFactory
from fakeindex import FakeIndex

from cacheproxy.store.body_cache import BodyCache
from cacheproxy.store.local import Storage
from cacheproxy.web.keys import metrics_key, proxy_key

JSON = "application/vnd.pypi.simple.v1+json"
Client = TestClient[web.Request, web.Application]


class HeldWrites:
    """Makes every page write of one Storage wait until released (or fail, if told)."""

    def __init__(self, storage: Storage, error: OSError | None = None) -> None:
        self.release = threading.Event()
        self.started = threading.Event()
        self._real = storage._put_sync
        self._error = error
        storage._put_sync = self._put  # type: ignore[method-assign,assignment]

    def _put(self, *args: Any) -> None:
        self.started.set()
        if self._error is not None:
            raise self._error
        # Bounded, so a failing test cannot hang the suite's teardown.
        self.release.wait(timeout=30)
        self._real(*args)


@pytest.fixture
def held(proxy: Client) -> Iterator[HeldWrites]:
    h = HeldWrites(proxy.app[proxy_key].storage)
    yield h
    h.release.set()


def _stored_record(proxy: Client, key: str) -> object:
    return proxy.app[proxy_key].storage._index.get(("page", key))


async def test_miss_is_answered_before_the_page_is_on_disk(
    proxy: Client, fake: FakeIndex, held: HeldWrites
) -> None:
    miss = await proxy.get("/simple/alpha/", headers={"Accept": JSON})
    assert miss.status == 200
    assert miss.headers["X-Cache"] == "MISS"
    body = await miss.read()
    assert held.started.wait(timeout=5)
    assert _stored_record(proxy, "alpha") is None  # the write is still held

    hit = await proxy.get("/simple/alpha/", headers={"Accept": JSON})
    assert hit.status == 200
    assert hit.headers["X-Cache"] == "HIT"
    assert await hit.read() == body
    assert hit.headers["ETag"] == miss.headers["ETag"]
    # The file records behind the links are visible already: the wheel resolves.
    url = next(f["url"] for f in json.loads(body)["files"] if f["filename"].endswith(".whl"))
    wheel = await proxy.get(url)
    assert wheel.status == 200
    assert len(fake.page_gets("alpha")) == 1

    held.release.set()
    await proxy.app[proxy_key].pages.flush()
    assert _stored_record(proxy, "alpha") is not None
    after = await proxy.get("/simple/alpha/", headers={"Accept": JSON})
    assert await after.read() == body
    assert len(fake.page_gets("alpha")) == 1


async def test_pending_page_survives_a_clean_shutdown(
    make_proxy: ProxyFactory, fake: FakeIndex
) -> None:
    first = await make_proxy()
    held = HeldWrites(first.app[proxy_key].storage)
    body = await (await first.get("/simple/alpha/", headers={"Accept": JSON})).read()
    assert held.started.wait(timeout=5)
    # Shutdown waits for the write (Pages.close flushes), so nothing answered is lost.
    threading.Timer(0.2, held.release.set).start()
    await first.close()
    await fake.stop()
    second = await make_proxy(index_ttl=0)
    resp = await second.get("/simple/alpha/", headers={"Accept": JSON})
    assert resp.status == 200
    assert resp.headers["X-Cache"] == "STALE"  # from disk: upstream is down
    assert await resp.read() == body


async def test_a_failed_page_write_is_served_then_fetched_again(
    proxy: Client, fake: FakeIndex
) -> None:
    storage = proxy.app[proxy_key].storage
    HeldWrites(storage, error=OSError(errno.ENOSPC, "No space left on device"))
    first = await proxy.get("/simple/alpha/", headers={"Accept": JSON})
    assert first.status == 200
    body = await first.read()
    await proxy.app[proxy_key].pages.flush()
    assert _stored_record(proxy, "alpha") is None
    # Read from the shared store after a flush: the app's periodic flush (every
    # metrics.FLUSH_INTERVAL) may already have moved the error out of the process's buffer.
    metrics = proxy.app[metrics_key]
    metrics.flush()
    errors = [message for _t, message in metrics.recent_errors()]
    assert any("cannot store page alpha" in m and "No space" in m for m in errors)
    assert metrics.current("cache_pages") == 0  # counted, then taken back

    again = await proxy.get("/simple/alpha/", headers={"Accept": JSON})
    assert again.status == 200
    assert await again.read() == body
    assert len(fake.page_gets("alpha")) == 2  # not kept, so asked again


@pytest.mark.parametrize("path", ["memory", "sendfile"])
async def test_a_damaged_body_is_dropped_and_fetched_again(
    proxy: Client, fake: FakeIndex, path: str
) -> None:
    storage = proxy.app[proxy_key].storage
    plain = {"Accept": JSON, "Accept-Encoding": "identity"}  # so the "json" body is sent
    good = await (await proxy.get("/simple/alpha/", headers=plain)).read()
    await proxy.app[proxy_key].pages.flush()
    record = await storage.get_page("alpha")
    assert record is not None
    body_file = storage.page_body_path(record.bodies["json"])
    body_file.write_bytes(good[: len(good) // 2])  # as a crash could leave it
    # Nothing in memory: the hit must read the file (into memory, or by sendfile).
    storage.bodies = BodyCache(max_item=len(good) if path == "memory" else 0)
    proxy.app[proxy_key].pages.forget_all()

    resp = await proxy.get("/simple/alpha/", headers=plain)
    assert resp.status == 200
    assert await resp.read() == good
    assert len(fake.page_gets("alpha")) == 2
    await proxy.app[proxy_key].pages.flush()
    assert body_file.read_bytes() == good


def test_body_cache_is_bounded_by_bytes_and_evicts_least_recently_used() -> None:
    cache = BodyCache(budget=10, max_item=4)
    cache.put("a", b"aaaa")
    cache.put("b", b"bbbb")
    assert cache.get("a") == b"aaaa"  # a is now the most recently used
    cache.put("c", b"cccc")  # 12 bytes > 10: b goes
    assert cache.get("b") is None
    assert cache.get("a") == b"aaaa"
    assert cache.get("c") == b"cccc"
    assert (cache.bytes, len(cache)) == (8, 2)
    cache.put("big", b"12345")  # above max_item: never kept
    assert cache.get("big") is None
    assert not cache.fits(5)


@pytest.mark.parametrize("path", ["memory", "sendfile"])
async def test_a_body_damaged_before_a_restart_is_caught_by_its_hash(
    make_proxy: ProxyFactory, fake: FakeIndex, path: str
) -> None:
    # Page bodies are written without fsync: after a power cut one could hold anything,
    # even at the right size. Each is hashed before its first use in a process.
    plain = {"Accept": JSON, "Accept-Encoding": "identity"}
    first = await make_proxy()
    good = await (await first.get("/simple/alpha/", headers=plain)).read()
    storage = first.app[proxy_key].storage
    await first.app[proxy_key].pages.flush()
    record = await storage.get_page("alpha")
    assert record is not None
    body_file = storage.page_body_path(record.bodies["json"])
    await first.close()
    body_file.write_bytes(b"\0" * len(good))  # the right size, the wrong bytes
    second = await make_proxy()
    second.app[proxy_key].storage.bodies = BodyCache(max_item=len(good) if path == "memory" else 0)
    resp = await second.get("/simple/alpha/", headers=plain)
    assert resp.status == 200
    assert await resp.read() == good
    assert len(fake.page_gets("alpha")) == 2
