"""The hit path's cost, by what it does rather than by timing (bench/hits.py times it):
a stored file goes out by one sendfile(2) call made at once when the socket takes it
all, with no turn of the event loop's ``loop.sendfile``; a ``.metadata`` hit reads no
record in a thread; and the bytes are the stored ones, whole, whatever the path.
"""

import asyncio
import json
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from fakeindex import FakeFile, FakeIndex

from cacheproxy.store.local import Storage
from cacheproxy.web.keys import proxy_key

JSON = "application/vnd.pypi.simple.v1+json"
Client = TestClient[web.Request, web.Application]


async def _link(proxy: Client, project: str, suffix: str = ".whl") -> str:
    resp = await proxy.get(f"/simple/{project}/", headers={"Accept": JSON})
    for f in json.loads(await resp.read())["files"]:
        if f["filename"].endswith(suffix):
            return str(f["url"]).removeprefix("../..")
    raise AssertionError(f"no {suffix} on {project}'s page")


def _the(fake: FakeIndex, project: str) -> FakeFile:
    return next(f for f in fake.files(project) if f.filename.endswith(".whl"))


def _count_loop_sendfile(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    loop = asyncio.get_running_loop()
    real = loop.sendfile
    counts: list[int] = []

    async def counted(
        transport: Any, file: Any, offset: int = 0, count: Any = None, **kw: Any
    ) -> int:
        counts.append(count)
        return await real(transport, file, offset, count, **kw)

    monkeypatch.setattr(loop, "sendfile", counted)
    return counts


async def test_a_small_hit_takes_no_loop_sendfile(
    proxy: Client, fake: FakeIndex, monkeypatch: pytest.MonkeyPatch
) -> None:
    f = _the(fake, "alpha")
    link = await _link(proxy, "alpha")
    assert await (await proxy.get(link)).read() == f.data  # the miss stores it
    # The .metadata miss too: a miss streams a growing temporary, which may take
    # loop.sendfile when the download is not done yet (it was, under load, in a full run).
    first_meta = await proxy.get(link + ".metadata")
    assert first_meta.status == 200
    await first_meta.read()
    counts = _count_loop_sendfile(monkeypatch)
    for _ in range(3):
        hit = await proxy.get(link)
        assert hit.headers["X-Cache"] == "HIT"
        assert int(hit.headers["Content-Length"]) == f.size
        assert await hit.read() == f.data
    assert counts == []  # one sendfile(2) each, at once: no selector round trip
    meta = await proxy.get(link + ".metadata")
    assert meta.status == 200
    assert meta.headers["X-Cache"] == "HIT"
    assert counts == []


async def test_a_large_hit_is_whole_and_ranges_still_apply(
    proxy: Client, fake: FakeIndex, monkeypatch: pytest.MonkeyPatch
) -> None:
    # ~3 MB: more than a loopback socket takes at once, so the rest goes by loop.sendfile
    # from where the first call stopped.
    f = _the(fake, "big")
    link = await _link(proxy, "big")
    assert await (await proxy.get(link)).read() == f.data
    counts = _count_loop_sendfile(monkeypatch)
    hit = await proxy.get(link)
    assert hit.headers["X-Cache"] == "HIT"
    assert await hit.read() == f.data
    assert all(0 < c < f.size for c in counts)  # only ever the rest
    part = await proxy.get(link, headers={"Range": "bytes=1000-2999999"})
    assert part.status == 206
    assert await part.read() == f.data[1000:3000000]


async def test_a_metadata_hit_reads_no_record_in_a_thread(
    proxy: Client, fake: FakeIndex, monkeypatch: pytest.MonkeyPatch
) -> None:
    link = await _link(proxy, "alpha")
    first = await proxy.get(link + ".metadata")
    assert first.status == 200
    body = await first.read()
    reads: list[str] = []
    real = Storage._get_file_sync

    def counted(self: Storage, key: str, project: str | None) -> Any:
        reads.append(key)
        return real(self, key, project)

    monkeypatch.setattr(Storage, "_get_file_sync", counted)
    for _ in range(3):
        hit = await proxy.get(link + ".metadata")
        assert hit.status == 200
        assert hit.headers["X-Cache"] == "HIT"
        assert await hit.read() == body
    assert reads == []


async def test_a_read_metadata_hit_asks_no_record_of_its_hash(
    proxy: Client, fake: FakeIndex, monkeypatch: pytest.MonkeyPatch
) -> None:
    """nometa's page was rendered before its metadata was read, so it advertises no hash:
    the process remembers the hash it stored, rather than asking the record store (in a
    thread) at every hit."""
    link = await _link(proxy, "nometa")
    first = await proxy.get(link + ".metadata")
    assert first.status == 200
    body = await first.read()
    services = proxy.app[proxy_key]
    assert services.extractor is not None
    await services.extractor.settle()  # its commit has landed: from here on, from disk
    asked: list[str] = []
    real = Storage.extracted_metadata

    def counted(self: Storage, wheel_sha256: str) -> str | None:
        asked.append(wheel_sha256)
        return real(self, wheel_sha256)

    monkeypatch.setattr(Storage, "extracted_metadata", counted)
    for _ in range(3):
        hit = await proxy.get(link + ".metadata")
        assert (hit.status, hit.headers["X-Cache"]) == (200, "HIT")
        assert await hit.read() == body
    assert asked == []
