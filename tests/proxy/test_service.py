"""The Proxy facade's life cycle: what it starts, it has finished or stopped on close."""

import asyncio
import logging
from pathlib import Path

import pytest
from conftest import make_settings
from fakeindex import FakeIndex
from packaging.utils import canonicalize_name

from cacheproxy.figures.metrics import Metrics
from cacheproxy.proxy.service import Proxy
from cacheproxy.store.local import Storage


async def test_close_waits_for_the_start_up_check(
    fake: FakeIndex, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # The check runs in a thread, which cannot be cancelled: a proxy closed at once used
    # to return while it still ran, then it logged (and read the record store) after
    # close, into a closed log stream in the test runs.
    cache = tmp_path / "cache"
    storage = Storage.open_sync(cache)
    for n in range(200):  # enough stored files that the check takes a moment
        path = storage.blob_path(f"{n:064x}")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"x" * 100)
    storage.close_sync()
    caplog.set_level(logging.INFO, logger="cacheproxy.store.repair")
    metrics = Metrics.for_cache(cache)
    proxy = await Proxy.open(make_settings(cache, fake.index_url), metrics)
    await proxy.close()
    metrics.close()
    assert "consistency check" in caplog.text


async def test_close_lets_a_metadata_commit_under_way_land_before_the_store_closes(
    fake: FakeIndex, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Metadata read from a wheel is answered from memory while it is stored
    # (proxy/metadata.py); closing must wait for that write, not close the store under it.
    cache = tmp_path / "cache"
    metrics = Metrics.for_cache(cache)
    proxy = await Proxy.open(make_settings(cache, fake.index_url), metrics)
    release = asyncio.Event()
    commit = proxy.storage.store_extracted

    async def held(wheel_sha256: str, data: bytes | None) -> str:
        await release.wait()  # a slow disk
        return await commit(wheel_sha256, data)

    monkeypatch.setattr(proxy.storage, "store_extracted", held)
    wheel = next(f for f in fake.files("nometa") if f.filename.endswith(".whl"))
    await proxy.pages.project(canonicalize_name("nometa"))  # starts the read ahead of its metadata
    extractor = proxy.extractor
    assert extractor is not None
    for _ in range(500):  # read, now being stored
        if extractor.fresh(wheel.sha256) is not None:
            break
        await asyncio.sleep(0.01)
    found = extractor.fresh(wheel.sha256)
    assert found is not None
    assert found.data is not None
    closing = asyncio.create_task(proxy.close())
    await asyncio.sleep(0.05)
    assert not closing.done()
    release.set()
    await closing
    metrics.close()
    assert proxy.storage.blob_path(found.sha256).read_bytes() == found.data
