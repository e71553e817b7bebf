"""Storage on a real directory: records survive reopening, lookups find every file."""

from pathlib import Path

import pytest

from cacheproxy.errors import ConfigError
from cacheproxy.store import local as storage_mod
from cacheproxy.store.local import Storage
from cacheproxy.store.records import DamagedBody, FileRecord, PageRecord


def record(url: str) -> FileRecord:
    return FileRecord(url=url, sha256="ab" * 32, size=3, metadata_sha256=None, metadata=False)


async def test_page_bodies_records_and_strays_survive_reopen(tmp_path: Path) -> None:
    store = await Storage.open(tmp_path)
    files = {
        "aa/bb/demo-1.0-py3-none-any.whl": record(
            "https://f/packages/aa/bb/demo-1.0-py3-none-any.whl"
        ),
        "aa/bb/Demo_Setup.exe": record("https://f/packages/aa/bb/Demo_Setup.exe"),
    }
    saved = await store.put_page(
        "demo",
        PageRecord(status=200, fetched_at=1.0, upstream_etag='"u"'),
        {"json": b'{"x":1}', "json.gz": b"gz"},
        files,
        strays=["aa/bb/Demo_Setup.exe"],
    )
    assert set(saved.bodies) == {"json", "json.gz"}
    assert saved.bodies["json.gz"].etag.endswith('-gz"')
    assert store.page_body_path(saved.bodies["json"]).read_bytes() == b'{"x":1}'
    await store.close()

    again = await Storage.open(tmp_path)  # a restart: nothing in memory
    page = await again.get_page("demo")
    assert page == saved
    assert (
        await again.get_file("aa/bb/demo-1.0-py3-none-any.whl", "demo")
        == files["aa/bb/demo-1.0-py3-none-any.whl"]
    )
    # A filename that names no project is found through its pointer.
    assert await again.get_file("aa/bb/Demo_Setup.exe", None) == files["aa/bb/Demo_Setup.exe"]
    assert await again.get_file("aa/bb/other.whl", "demo") is None
    await again.close()


async def test_replaced_bodies_are_deleted(tmp_path: Path) -> None:
    store = await Storage.open(tmp_path)
    first = await store.put_page("p", PageRecord(status=200, fetched_at=1.0), {"json": b"one"})
    second = await store.put_page("p", PageRecord(status=200, fetched_at=2.0), {"json": b"two"})
    assert not store.page_body_path(first.bodies["json"]).exists()
    assert store.page_body_path(second.bodies["json"]).read_bytes() == b"two"
    await store.close()


async def test_unreadable_records_are_misses(tmp_path: Path) -> None:
    store = await Storage.open(tmp_path)
    store._index.set(("page", "p"), {"schema": 99})
    store._index.set(("files", "p"), {"k": ("too", "short")})
    assert await store.get_page("p") is None
    assert await store.get_file("k", "p") is None
    await store.close()


async def test_memory_map_cache_is_bounded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(storage_mod, "_MAP_CACHE_ENTRIES", 10)
    store = await Storage.open(tmp_path)
    for n in range(5):
        files = {f"x/p{n}-{i}.whl": record(f"https://f/x/p{n}-{i}.whl") for i in range(4)}
        await store.put_page(f"p{n}", PageRecord(status=200, fetched_at=1.0), {}, files)
    assert store._map_entries <= 10
    # Evicted from memory, still found on disk.
    assert await store.get_file("x/p0-1.whl", "p0") == record("https://f/x/p0-1.whl")
    await store.close()


async def test_unusable_directory_is_a_config_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(ConfigError, match="not usable"):
        await Storage.open(blocker / "cache")


async def test_a_garbled_body_is_rewritten_when_its_page_is_stored_again(tmp_path: Path) -> None:
    # After a power cut a body file can be the right size with the wrong bytes. Storing the
    # same page again (a refetch with identical content) must replace it, not trust it.
    store = await Storage.open(tmp_path)
    saved = await store.put_page("p", PageRecord(status=200, fetched_at=1.0), {"json": b"abc"})
    await store.close()
    path = store.page_body_path(saved.bodies["json"])
    path.write_bytes(b"\0\0\0")
    again = await Storage.open(tmp_path)  # a restart: nothing is known to be whole
    stored = await again.put_page("p", PageRecord(status=200, fetched_at=2.0), {"json": b"abc"})
    assert path.read_bytes() == b"abc"
    assert await again.read_body(stored.bodies["json"]) == b"abc"
    await again.close()


async def test_a_damaged_body_is_forgotten_so_the_next_write_replaces_it(tmp_path: Path) -> None:
    store = await Storage.open(tmp_path)
    saved = await store.put_page("p", PageRecord(status=200, fetched_at=1.0), {"json": b"abc"})
    body = saved.bodies["json"]
    store.page_body_path(body).write_bytes(b"ab")  # cut short behind our back
    with pytest.raises(DamagedBody):
        await store.read_body(body)
    store.drop_damaged_body(body)
    assert not store.page_body_path(body).exists()
    await store.put_page("p", PageRecord(status=200, fetched_at=2.0), {"json": b"abc"})
    assert await store.read_body(body) == b"abc"
    await store.close()
