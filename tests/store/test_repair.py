"""Crashes and restarts: the start-up check repairs what a crash can leave behind, and a
process killed with SIGKILL mid-download never leads to a partial file being served."""

import asyncio
import hashlib
import os
import signal
import sys
import time
from pathlib import Path

import aiohttp
import pytest
from conftest import temporaries
from fakeindex import FakeIndex
from processes import free_port, wait_healthy

from cacheproxy.figures.metrics import Metrics
from cacheproxy.store import repair as repair_module
from cacheproxy.store.local import Storage
from cacheproxy.store.records import FileRecord, PageRecord
from cacheproxy.store.repair import GRACE_SECONDS, RepairReport, log_repair, repair

OLD = time.time() - 10 * GRACE_SECONDS


def age(path: Path) -> Path:
    os.utime(path, (OLD, OLD))
    return path


def put_blob(store: Storage, data: bytes) -> Path:
    path = store.blob_path(hashlib.sha256(data).hexdigest())
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return age(path)


async def test_repair_counts_and_fixes_each_kind_of_damage(tmp_path: Path) -> None:
    store = await Storage.open(tmp_path)
    good, damaged = b"good wheel bytes", b"will be cut short"
    files = {
        "a/good-1.0-py3-none-any.whl": FileRecord(
            "https://f/a/good-1.0-py3-none-any.whl", hashlib.sha256(good).hexdigest(), len(good)
        ),
        "a/good-2.0-py3-none-any.whl": FileRecord(
            "https://f/a/good-2.0-py3-none-any.whl",
            hashlib.sha256(damaged).hexdigest(),
            len(damaged),
        ),
    }
    await store.put_page("good", PageRecord(status=200, fetched_at=1.0), {"json": b"{}"}, files)
    lost = await store.put_page("lost", PageRecord(status=200, fetched_at=1.0), {"json": b"[]"})
    store.page_body_path(lost.bodies["json"]).unlink()  # a record whose body is gone
    short = await store.put_page("short", PageRecord(status=200, fetched_at=1.0), {"json": b"{1}"})
    store.page_body_path(short.bodies["json"]).write_bytes(b"{")  # cut short by a crash
    orphan_body = store.root / "pages" / ("f" * 64)
    orphan_body.write_bytes(b"written just before a crash")
    age(orphan_body)
    good_blob = put_blob(store, good)
    damaged_blob = put_blob(store, damaged)
    damaged_blob.write_bytes(damaged[:5])  # the disk lost its tail
    age(damaged_blob)
    unlisted = put_blob(store, b"a file no page lists any more")
    url_orphan = store.unhashed_blob_path("x/y/lost-1.0.tar.gz")  # no hash: unverifiable
    url_orphan.parent.mkdir(parents=True)
    url_orphan.write_bytes(b"an unhashed file no page lists any more")
    age(url_orphan)
    fresh = store.blob_path("ab" * 32)
    fresh.parent.mkdir(parents=True, exist_ok=True)
    fresh.write_bytes(b"being committed by another worker right now")
    junk = store.root / "files" / "sha256" / "zz" / "not-a-hash"
    junk.parent.mkdir(parents=True)
    junk.write_bytes(b"?")

    report = repair(store)

    assert (report.pages, report.dropped_pages) == (3, 2)
    assert report.orphan_bodies == 1
    assert report.orphan_files == 1  # only the files/url/ one
    assert report.unlisted_files == 2  # content-addressed: valid by construction, kept
    assert report.damaged_files == 2  # the short file and the junk
    assert report.changed == 6
    assert await store.get_page("lost") is None  # refetched on next use
    assert await store.get_page("short") is None
    assert await store.get_page("good") is not None
    assert good_blob.exists()
    assert fresh.exists()
    assert unlisted.exists()  # a later page fetch links it again
    for gone in (orphan_body, damaged_blob, url_orphan, junk):
        assert not gone.exists()
    again = repair(store)
    assert again.changed == 0  # idempotent
    assert "dropped pages 0" in again.line()
    await store.close()


async def start(args: list[str]) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "cacheproxy", "serve", "--log-level", "info", *args,
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip


async def test_sigkill_mid_download_then_restart(fake: FakeIndex, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    big = next(f for f in fake.files("big") if f.filename.endswith(".whl"))
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    args = ["--port", str(port), "--cache-dir", str(cache), "--upstream", fake.index_url]
    fake.chunk_delay(0.05)  # ~2.5 s for the whole file: time to kill it half way
    proc = await start(args)
    async with aiohttp.ClientSession() as session:
        await wait_healthy(session, base)
        url = f"{base}{big.url_path}"
        async with session.get(url) as resp:
            assert resp.status == 200
            await resp.content.readexactly(256 * 1024)
            partial = [p for p in (cache / "tmp").iterdir() if p.stat().st_size > 0]
            assert partial, "the download should be in progress"
            proc.send_signal(signal.SIGKILL)
            await proc.wait()
    assert not any(p.is_file() for p in (cache / "files").rglob("*"))
    fake.chunk_delay(0)
    proc = await start(args)
    try:
        async with aiohttp.ClientSession() as session:
            await wait_healthy(session, base)
            assert temporaries(cache) == []
            async with session.get(f"{base}{big.url_path}") as resp:
                assert resp.headers["X-Cache"] == "MISS"
                body = await resp.read()
        assert hashlib.sha256(body).hexdigest() == big.sha256
    finally:
        proc.terminate()
        _out, err = await proc.communicate()
    log = err.decode()
    assert "removed 1 stale temporary file" in log
    assert "consistency check:" in log


async def test_corrupt_record_store_is_moved_aside_and_files_kept(
    fake: FakeIndex, tmp_path: Path
) -> None:
    # A damaged SQLite file stopped every start with a traceback, and deleting index/ made
    # the next start delete every stored file as an orphan. Now: one log line, the store
    # is started empty, the files stay, and a page fetched again links them again.
    cache = tmp_path / "cache"
    f = fake.files("beta")[0]
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    args = ["--port", str(port), "--cache-dir", str(cache), "--upstream", fake.index_url]
    proc = await start(args)
    try:
        async with aiohttp.ClientSession() as session:
            await wait_healthy(session, base)
            async with session.get(f"{base}{f.url_path}") as resp:
                assert (resp.status, resp.headers["X-Cache"]) == (200, "MISS")
                await resp.read()
    finally:
        proc.terminate()
        await proc.communicate()
    stored = [p for p in (cache / "files").rglob("*") if p.is_file()]
    age(stored[0])  # older than the start-up check's grace period
    with (cache / "index" / "cache.db").open("r+b") as db:
        db.write(b"this is not a database " * 400)
    fake.clear_log()
    proc = await start(args)
    try:
        async with aiohttp.ClientSession() as session:
            await wait_healthy(session, base)
            async with session.get(f"{base}/simple/beta/") as resp:
                assert resp.status == 200
            async with session.get(f"{base}{f.url_path}") as resp:
                assert (resp.status, resp.headers["X-Cache"]) == (200, "HIT")
                assert await resp.read() == f.data
    finally:
        proc.terminate()
        _out, err = await proc.communicate()
    damaged = one_damage_line(proc.returncode, err, "record store")
    assert "moved to index.broken-" in damaged
    assert [p.name for p in cache.glob("index.broken-*")] != []
    assert [p for p in (cache / "files").rglob("*") if p.is_file()] == stored
    assert len(fake.page_gets("beta")) == 1  # the page was fetched again
    assert fake.file_gets(f.filename) == []  # the file was not


async def test_damaged_statistics_store_is_moved_aside_and_the_proxy_serves(
    fake: FakeIndex, tmp_path: Path
) -> None:
    # A damaged stats/ database stopped every start with a traceback (figures/metrics.py
    # opens it in each worker). Counts are figures, not data: it is moved aside like the
    # record store (store/local.py open_moving_damage_aside), in one line for all workers.
    cache = tmp_path / "cache"
    metrics = Metrics(cache / "stats")
    metrics.add("cache_pages", value=3)
    metrics.close()
    with (cache / "stats" / "cache.db").open("r+b") as db:
        db.write(bytes(range(256)) * 16)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    args = ["--port", str(port), "--cache-dir", str(cache), "--upstream", fake.index_url]
    proc = await start([*args, "--workers", "2"])
    try:
        async with aiohttp.ClientSession() as session:
            await wait_healthy(session, base)
            async with session.get(f"{base}/simple/beta/") as resp:
                assert resp.status == 200
    finally:
        proc.terminate()
        _out, err = await proc.communicate()
    damaged = one_damage_line(proc.returncode, err, "statistics store")
    assert "WARNING" in damaged
    assert "moved to stats.broken-" in damaged
    assert [p.name for p in cache.glob("stats.broken-*")] != []
    fresh = Metrics(cache / "stats")
    assert fresh.current("cache_pages") == 1  # beta, counted from empty (not from 3)
    fresh.close()


async def test_figures_stored_during_the_scan_are_kept(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The start-up scan runs while the proxy serves: a page stored meanwhile is counted
    # as it happens and must not be wiped out by the scan's figure.
    store = await Storage.open(tmp_path / "cache")
    await store.put_page("old", PageRecord(status=200, fetched_at=1.0), {"json": b"{}"})
    metrics = Metrics(tmp_path / "cache" / "stats")
    real = repair_module.repair

    def serving_meanwhile(storage: Storage) -> RepairReport:
        report = real(storage)
        metrics.add("cache_pages")  # a page answered (and counted) during the scan
        return report

    monkeypatch.setattr(repair_module, "repair", serving_meanwhile)
    log_repair(store, metrics)
    assert metrics.current("cache_pages") == 2
    metrics.close()
    await store.close()


def one_damage_line(returncode: int | None, stderr: bytes, what: str) -> str:
    """The one log line of a serve that moved a damaged ``what`` aside and ran on."""
    log = stderr.decode()
    assert returncode == 0, log
    assert "Traceback" not in log
    damaged = [line for line in log.splitlines() if what in line]
    assert len(damaged) == 1, log
    return damaged[0]
