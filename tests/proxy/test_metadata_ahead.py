"""Metadata read from wheels ahead of the resolver and served before it is on disk
(proxy/metadata.py: ``prefetch_candidates``, ``Extractor.prefetch``, ``Extractor.fresh``).

A resolver asks for a page, then at once for the ``.metadata`` of the release it picked;
each answer is on its critical path. The proxy starts that read when the page comes, and
answers from memory while the read bytes are committed (an fsync).
"""

import asyncio
import hashlib
import logging
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from conftest import ProxyFactory
from distbuild import build_wheel, wheel_metadata
from fakeindex import FakeFile, FakeIndex

from cacheproxy.proxy.metadata import PREFETCH_AT_ONCE, PREFETCH_WHEELS, prefetch_candidates
from cacheproxy.proxy.service import Proxy
from cacheproxy.store.records import FileRecord
from cacheproxy.web.keys import proxy_key

Client = TestClient[web.Request, web.Application]
JSON = "application/vnd.pypi.simple.v1+json"
SHA = "ab" * 32


def record(*, extracted: bool = True, known: str | None = None) -> FileRecord:
    return FileRecord(url="u", sha256=SHA, size=1, metadata=True, extracted=extracted or None,
                      metadata_sha256=known)  # fmt: skip


def keys(*filenames: str) -> dict[str, FileRecord]:
    return {f"00/{name}": record() for name in filenames}


# ---- which wheels, pure ---------------------------------------------------------------------


def test_the_newest_final_release_is_read_ahead() -> None:
    files = keys("a-1.0-py3-none-any.whl", "a-2.0-py3-none-any.whl", "a-2.0.tar.gz",
                 "a-3.0rc1-py3-none-any.whl")  # fmt: skip
    assert prefetch_candidates(files, ()) == ["00/a-2.0-py3-none-any.whl"]


def test_pre_releases_only_when_there_is_nothing_else() -> None:
    files = keys("a-1.0b1-py3-none-any.whl", "a-1.0rc1-py3-none-any.whl")
    assert prefetch_candidates(files, ()) == ["00/a-1.0rc1-py3-none-any.whl"]


def test_a_release_the_gate_holds_is_not_read_ahead() -> None:
    files = keys("a-1.0-py3-none-any.whl", "a-2.0-py3-none-any.whl")
    assert prefetch_candidates(files, {"a-2.0-py3-none-any.whl"}) == ["00/a-1.0-py3-none-any.whl"]


def test_metadata_read_before_or_given_by_the_index_is_not_read_again() -> None:
    files = keys("a-1.0-py3-none-any.whl")
    files["00/a-2.0-py3-none-any.whl"] = record(known="cd" * 32)  # read before
    assert prefetch_candidates(files, ()) == []  # the newest has it: no older one instead
    files["00/a-3.0-py3-none-any.whl"] = record(extracted=False)  # the index's own
    assert prefetch_candidates(files, ()) == []


def test_a_platform_matrix_is_read_ahead_for_its_pure_python_wheels_only() -> None:
    few = keys("a-1.0-cp312-cp312-manylinux_2_17_x86_64.whl", "a-1.0-cp312-cp312-win_amd64.whl")
    assert sorted(prefetch_candidates(few, ())) == sorted(few)
    platforms = [f"cp3{i}-cp3{i}-manylinux_2_17_x86_64" for i in range(PREFETCH_WHEELS + 1)]
    many = keys(*(f"a-1.0-{tags}.whl" for tags in platforms))
    assert prefetch_candidates(many, ()) == []
    many.update(keys("a-1.0-py3-none-any.whl"))
    assert prefetch_candidates(many, ()) == ["00/a-1.0-py3-none-any.whl"]


def test_nothing_to_read_ahead_in_sdists_or_odd_names() -> None:
    assert prefetch_candidates(keys("a-1.0.tar.gz", "not-a-wheel.whl"), ()) == []


# ---- through the proxy ----------------------------------------------------------------------


def two_releases(fake: FakeIndex, tmp_path: Path) -> tuple[FakeFile, FakeFile]:
    old = fake.add_file("ahead", build_wheel(tmp_path, "ahead", "1.0"), metadata=False)
    new = fake.add_file("ahead", build_wheel(tmp_path, "ahead", "2.0"), metadata=False)
    return old, new


def services(proxy: Client) -> Proxy:
    return proxy.app[proxy_key]


async def metadata_of(proxy: Client, f: FakeFile, **headers: str) -> tuple[int, bytes, str]:
    resp = await proxy.get(f.url_path + ".metadata", headers=headers)
    return resp.status, await resp.read(), resp.headers.get("X-Cache", "")


async def test_a_page_fetched_starts_the_read_of_its_newest_wheels_metadata(
    proxy: Client, fake: FakeIndex, tmp_path: Path
) -> None:
    old, new = two_releases(fake, tmp_path)
    assert (await proxy.get("/simple/ahead/", headers={"Accept": JSON})).status == 200
    extractor = services(proxy).extractor
    assert extractor is not None
    await extractor.settle()
    assert fake.file_gets(old.filename) == []  # an older release is left to be asked for
    assert [r.method for r in fake.file_gets(new.filename)] == ["GET"]  # one range read
    fake.clear_log()
    status, body, _cache = await metadata_of(proxy, new)
    assert (status, body) == (200, wheel_metadata(new.data))
    assert fake.requests == []
    metrics = await (await proxy.get("/-/metrics")).text()
    assert "cacheproxy_metadata_prefetched_total 1.0" in metrics
    # A page fetched again (its metadata read now) starts nothing.
    await services(proxy).invalidate("ahead")
    fake.clear_log()
    assert (await proxy.get("/simple/ahead/", headers={"Accept": JSON})).status == 200
    await extractor.settle()
    assert fake.file_gets(new.filename) == []


async def test_reading_ahead_never_downloads_a_whole_wheel(
    proxy: Client, fake: FakeIndex, tmp_path: Path, cache_dir: Path
) -> None:
    _old, new = two_releases(fake, tmp_path)
    fake.ranges = False  # every Range is answered with the whole file
    assert (await proxy.get("/simple/ahead/", headers={"Accept": JSON})).status == 200
    extractor = services(proxy).extractor
    assert extractor is not None
    await extractor.settle()
    assert all("range" in r.headers for r in fake.file_gets(new.filename))
    assert not (cache_dir / "files" / "sha256" / new.sha256[:2] / new.sha256).exists()
    # Asked for, it is downloaded once (the range is not tried again) and read.
    fake.clear_log()
    status, body, _cache = await metadata_of(proxy, new)
    assert (status, body) == (200, wheel_metadata(new.data))
    assert [("range" in r.headers) for r in fake.file_gets(new.filename)] == [False]


Commit = Callable[[str, bytes | None], Awaitable[str]]


def hold_commits(
    proxy: Client, monkeypatch: pytest.MonkeyPatch, fail: bool = False
) -> asyncio.Event:
    """Make the store's metadata commits wait for the returned event (a slow disk), then
    fail if ``fail`` (a full one)."""
    storage = services(proxy).storage
    commit: Commit = storage.store_extracted
    release = asyncio.Event()

    async def held(wheel_sha256: str, data: bytes | None) -> str:
        await release.wait()
        if fail:
            raise OSError(28, "No space left on device")
        return await commit(wheel_sha256, data)

    monkeypatch.setattr(storage, "store_extracted", held)
    return release


async def nometa_held(
    make_proxy: ProxyFactory, fake: FakeIndex, monkeypatch: pytest.MonkeyPatch, fail: bool = False
) -> tuple[Client, asyncio.Event, FakeFile]:
    """A proxy whose metadata commits wait (:func:`hold_commits`), nometa's page fetched."""
    proxy = await make_proxy()
    release = hold_commits(proxy, monkeypatch, fail)
    f = next(f for f in fake.files("nometa") if f.filename.endswith(".whl"))
    assert (await proxy.get("/simple/nometa/", headers={"Accept": JSON})).status == 200
    return proxy, release, f


async def test_metadata_is_served_while_its_commit_is_under_way(
    make_proxy: ProxyFactory, fake: FakeIndex, monkeypatch: pytest.MonkeyPatch
) -> None:
    proxy, release, f = await nometa_held(make_proxy, fake, monkeypatch)
    expected = wheel_metadata(f.data)
    etag = f'"{hashlib.sha256(expected).hexdigest()}"'
    # The commit cannot land: these answers come from memory.
    assert await metadata_of(proxy, f) == (200, expected, "HIT")
    fake.clear_log()
    resp = await proxy.get(f.url_path + ".metadata", headers={"Range": "bytes=0-9"})
    assert (resp.status, await resp.read()) == (206, expected[:10])
    assert resp.headers["ETag"] == etag
    assert (
        await proxy.get(f.url_path + ".metadata", headers={"If-None-Match": etag})
    ).status == 304
    assert fake.requests == []
    release.set()
    extractor = services(proxy).extractor
    assert extractor is not None
    await extractor.settle()
    assert await metadata_of(proxy, f) == (200, expected, "HIT")  # from the disk now
    assert fake.requests == []


async def test_a_commit_that_fails_is_served_and_read_again(
    make_proxy: ProxyFactory,
    fake: FakeIndex,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    proxy, release, f = await nometa_held(make_proxy, fake, monkeypatch, fail=True)
    release.set()
    with caplog.at_level(logging.WARNING, "cacheproxy.proxy.metadata"):
        status, body, _cache = await metadata_of(proxy, f)
        extractor = services(proxy).extractor
        assert extractor is not None
        await extractor.settle()
    assert (status, body) == (200, wheel_metadata(f.data))
    # Once or twice: the page's read ahead may fail its commit before the request comes.
    assert {r.getMessage() for r in caplog.records} == {
        f"cannot store the metadata read from {f.filename}: [Errno 28] No space left on device"
    }
    fake.clear_log()  # nothing was remembered: the next request reads it again
    assert (await metadata_of(proxy, f))[:2] == (200, wheel_metadata(f.data))
    assert fake.file_gets(f.filename) != []


async def test_closing_lets_a_commit_under_way_land(
    make_proxy: ProxyFactory, fake: FakeIndex, monkeypatch: pytest.MonkeyPatch
) -> None:
    proxy, release, f = await nometa_held(make_proxy, fake, monkeypatch)
    assert (await metadata_of(proxy, f))[0] == 200
    extractor = services(proxy).extractor
    assert extractor is not None
    closing = asyncio.create_task(extractor.close())  # Proxy.close, before the store's
    await asyncio.sleep(0.05)
    assert not closing.done()  # waiting for the commit, not closing the store under it
    release.set()
    await closing
    digest = hashlib.sha256(wheel_metadata(f.data)).hexdigest()
    assert services(proxy).storage.blob_path(digest).read_bytes() == wheel_metadata(f.data)


async def test_at_most_a_few_reads_ahead_at_once_the_rest_left_to_requests(
    proxy: Client, fake: FakeIndex, tmp_path: Path
) -> None:
    names = [f"many{i}" for i in range(PREFETCH_AT_ONCE + 2)]
    wheels = [fake.add_file(n, build_wheel(tmp_path, n, "1.0"), metadata=False) for n in names]
    release = fake.hold_files({w.filename for w in wheels})  # the reads stay open
    for name in names:
        assert (await proxy.get(f"/simple/{name}/", headers={"Accept": JSON})).status == 200
    metrics = await (await proxy.get("/-/metrics")).text()
    assert f"cacheproxy_metadata_prefetched_total {PREFETCH_AT_ONCE}.0" in metrics
    release.set()
    extractor = services(proxy).extractor
    assert extractor is not None
    await extractor.settle()
    read = {w.filename for w in wheels if fake.file_gets(w.filename)}
    assert read == {w.filename for w in wheels[:PREFETCH_AT_ONCE]}
