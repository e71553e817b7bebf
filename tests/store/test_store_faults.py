"""The store under faults: stale or damaged file records, a full record store, floods of
unknown names, and indexes that give no sha256.

Each test names what a client would have got before: an old or short file as a complete
``200``, a ``500`` for an unknown project, records that grow without end.
"""

import hashlib
import json
import sqlite3
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from conftest import ProxyFactory, temporaries
from distbuild import build_wheel
from fakeindex import V1_JSON, FakeFile, FakeIndex

from cacheproxy.proxy import pages as pages_module
from cacheproxy.store.evict import evict
from cacheproxy.store.local import Storage
from cacheproxy.store.verify import verify
from cacheproxy.web.keys import proxy_key

Client = TestClient[web.Request, web.Application]


def beta(fake: FakeIndex) -> FakeFile:
    return fake.files("beta")[0]


async def get_file(proxy: Client, f: FakeFile) -> tuple[bytes, str]:
    resp = await proxy.get(f.url_path)
    assert resp.status == 200, await resp.text()
    return await resp.read(), resp.headers["X-Cache"]


def reupload(fake: FakeIndex, f: FakeFile, tmp_path: Path) -> FakeFile:
    """New bytes (and size) for ``f`` at the same URL."""
    other = build_wheel(tmp_path / "v2", f.project, f.version, pad_bytes=9)
    return fake.replace_file(f.project, f.filename, other.read_bytes())


def storage(proxy: Client) -> Storage:
    return proxy.app[proxy_key].storage


def stored_files(cache_dir: Path) -> list[Path]:
    return [p for p in (cache_dir / "files").rglob("*") if p.is_file()]


# -- 1. file records follow the page record -------------------------------------------


async def test_files_only_after_the_ttl_get_the_bytes_the_index_lists_now(
    make_proxy: ProxyFactory, fake: FakeIndex, tmp_path: Path
) -> None:
    # Only files are asked for (a lock file's URLs), and the page is past its TTL: the
    # page is revalidated first, as for a page request, so new bytes at the same URL are
    # fetched rather than the old ones served as a HIT.
    proxy = await make_proxy(index_ttl=0)
    fake.add_file("mutable", build_wheel(tmp_path / "v1", "mutable", "1.0"))
    f = fake.files("mutable")[0]
    assert (await proxy.get("/simple/mutable/")).status == 200
    assert (await get_file(proxy, f))[0] == f.data
    new = reupload(fake, f, tmp_path)
    data, cache = await get_file(proxy, f)
    assert hashlib.sha256(data).hexdigest() == new.sha256
    assert cache == "MISS"
    assert len(fake.file_gets(f.filename)) == 2


# -- 2. a damaged stored file is never served as complete -----------------------------


@pytest.mark.parametrize("page", ["json", "html"])  # HTML gives no size: the recorded one
async def test_a_truncated_stored_file_is_fetched_again(
    proxy: Client, fake: FakeIndex, cache_dir: Path, page: Any
) -> None:
    fake.serve_only = page
    f = beta(fake)
    assert (await get_file(proxy, f)) == (f.data, "MISS")
    [blob] = stored_files(cache_dir)
    with blob.open("r+b") as fh:  # the disk lost its tail
        fh.truncate(f.size // 2)
    data, cache = await get_file(proxy, f)
    assert (data, cache) == (f.data, "MISS")
    assert len(fake.file_gets(f.filename)) == 2
    assert blob.read_bytes() == f.data  # stored again, whole
    assert (await get_file(proxy, f)) == (f.data, "HIT")


async def test_size_records_go_with_their_evicted_files(proxy: Client, fake: FakeIndex) -> None:
    f = beta(fake)
    await get_file(proxy, f)
    store = storage(proxy)
    assert store.recorded_size(f.sha256) == f.size
    report = evict(store, None, max_bytes=1, protect=0)
    assert report is not None
    assert report.removed == 1
    assert store.recorded_size(f.sha256) is None


# -- 4. a record store that cannot write ----------------------------------------------


async def test_full_record_store_keeps_404_and_fails_ready(
    proxy: Client, fake: FakeIndex, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert (await proxy.get("/-/ready")).status == 200
    index = storage(proxy)._index

    def full(*args: object, **kwargs: object) -> None:
        raise sqlite3.OperationalError("database or disk is full")

    monkeypatch.setattr(index, "set", full)
    for _ in range(2):
        resp = await proxy.get("/simple/no-such-project/")
        assert resp.status == 404, await resp.text()
    assert len(fake.page_gets("no-such-project")) == 2  # not remembered: asked again
    ready = await proxy.get("/-/ready")
    assert ready.status == 503
    assert "database or disk is full" in await ready.text()
    monkeypatch.undo()
    assert (await proxy.get("/-/ready")).status == 200


# -- 5. floods of unknown names are bounded -------------------------------------------


async def test_negative_records_are_bounded_and_expire(
    make_proxy: ProxyFactory, fake: FakeIndex
) -> None:
    proxy = await make_proxy(negative_ttl=120.0)
    store = storage(proxy)
    store.max_negative = 5
    for i in range(12):
        assert (await proxy.get(f"/simple/nope-{i}/")).status == 404
    kept = {key for key, rec in store.page_records() if rec is not None and rec.status == 404}
    assert kept == {f"nope-{i}" for i in range(7, 12)}  # the newest five
    _value, expire_time = store._index.get(("page", "nope-11"), expire_time=True)
    record = await store.get_page("nope-11")
    assert record is not None
    assert expire_time == pytest.approx(record.fetched_at + 120.0, abs=5)
    # A name found since is not the negative record queued for it: it stays.
    assert (await proxy.get("/simple/beta/")).status == 200
    await proxy.app[proxy_key].pages.flush()  # pages are written in the background
    assert (await store.get_page("beta")) is not None


async def test_recent_upstream_failures_are_bounded(
    proxy: Client, fake: FakeIndex, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(pages_module, "FAILED_ENTRIES", 3, raising=False)
    fake.fail_pages(503)
    for i in range(8):
        assert (await proxy.get(f"/simple/gone-{i}/")).status == 502
    failed = proxy.app[proxy_key].pages._failed_at
    assert list(failed) == ["gone-5", "gone-6", "gone-7"]


# -- 6. indexes that give no sha256 ---------------------------------------------------


async def test_md5_only_file_is_verified_while_downloading(
    proxy: Client, fake: FakeIndex, cache_dir: Path
) -> None:
    fake.hashes_given = "md5"
    f = beta(fake)
    fake.corrupt_files(times=1)  # same length, wrong bytes: only a hash can tell
    resp = await proxy.get(f.url_path)
    assert resp.status == 200
    with pytest.raises(aiohttp.ClientPayloadError):
        await resp.read()  # a broken transfer, never a complete bad file
    assert stored_files(cache_dir) == []
    assert temporaries(cache_dir) == []
    assert (await get_file(proxy, f)) == (f.data, "MISS")
    assert (await get_file(proxy, f)) == (f.data, "HIT")


async def test_verify_covers_files_with_an_md5_only(
    proxy: Client, fake: FakeIndex, cache_dir: Path
) -> None:
    fake.hashes_given = "md5"
    f = beta(fake)
    await get_file(proxy, f)
    await proxy.app[proxy_key].pages.flush()  # its record is written in the background
    [blob] = stored_files(cache_dir)
    assert blob.parent.parent.name == "url"
    report = verify(storage(proxy))
    assert (report.checked, report.bad) == (1, [])
    data = bytearray(blob.read_bytes())
    data[len(data) // 2] ^= 0xFF  # bit rot: same size
    blob.write_bytes(bytes(data))
    report = verify(storage(proxy))
    assert report.bad == [str(blob)]
    assert not blob.exists()
    assert (await get_file(proxy, f)) == (f.data, "MISS")


async def test_file_without_hash_is_not_served_at_its_old_size(
    make_proxy: ProxyFactory, fake: FakeIndex, tmp_path: Path
) -> None:
    # No hash at all, and the index's size changes (a re-upload): the stored file is
    # checked against the size its record gives, so the new one is fetched.
    proxy = await make_proxy(index_ttl=0)
    fake.hashes_given = "none"
    fake.add_file("mutable", build_wheel(tmp_path / "v1", "mutable", "1.0"))
    f = fake.files("mutable")[0]
    page = json.loads(
        await (await proxy.get("/simple/mutable/", headers={"Accept": V1_JSON})).read()
    )
    assert page["files"][0]["hashes"] == {}
    assert (await get_file(proxy, f)) == (f.data, "MISS")
    new = reupload(fake, f, tmp_path)
    assert new.size != f.size
    assert (await get_file(proxy, f)) == (new.data, "MISS")
    assert (await get_file(proxy, f)) == (new.data, "HIT")
