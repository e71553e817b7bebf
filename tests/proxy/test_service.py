"""The Proxy facade's life cycle: what it starts, it has finished or stopped on close."""

import logging
from pathlib import Path

import pytest
from conftest import make_settings
from fakeindex import FakeIndex

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
