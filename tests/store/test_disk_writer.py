"""The download writer thread (disk_writer.py): order, hash, progress only after the bytes
are in the file, back-pressure, failures, and one close of the descriptor."""

import asyncio
import errno
import hashlib
import os
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from cacheproxy.store import disk_writer
from cacheproxy.store.disk_writer import DiskWriter, write_all


@pytest.fixture
def pool() -> Iterator[ThreadPoolExecutor]:
    with ThreadPoolExecutor(2) as p:
        yield p


def chunks(n: int, size: int = 4096) -> list[bytes]:
    return [bytes([i % 251]) * size for i in range(n)]


async def test_writes_in_order_hashes_and_reports_only_written_bytes(
    tmp_path: Path, pool: ThreadPoolExecutor
) -> None:
    path = tmp_path / "f"
    fd = os.open(path, os.O_CREAT | os.O_WRONLY)
    seen: list[tuple[int, int]] = []

    def progress() -> None:
        # Whatever the writer reports is in the file already.
        seen.append((writer.done, path.stat().st_size))

    writer = DiskWriter(fd, pool, progress)
    data = chunks(300)
    for c in data:
        writer.put(c)
    await writer.finish()
    writer.close()
    await writer.closed.wait()
    whole = b"".join(data)
    assert path.read_bytes() == whole
    assert writer.digest.hexdigest() == hashlib.sha256(whole).hexdigest()
    assert writer.done == writer.queued == len(whole)
    assert seen
    assert all(done <= size for done, size in seen)


async def test_a_failed_write_stops_the_file_and_is_raised(
    tmp_path: Path, pool: ThreadPoolExecutor
) -> None:
    path = tmp_path / "f"
    fd = os.open(path, os.O_CREAT | os.O_WRONLY)
    calls = 0

    def disk_fills(fd: int, data: bytes) -> None:
        nonlocal calls
        calls += 1
        if calls == 3:
            raise OSError(errno.ENOSPC, "No space left on device")
        write_all(fd, data)

    writer = DiskWriter(fd, pool, lambda: None, disk_fills)
    for c in chunks(10):
        writer.put(c)
    with pytest.raises(OSError, match="No space"):
        await writer.finish()
    writer.close()
    await writer.closed.wait()
    assert path.stat().st_size == 2 * 4096  # nothing written after the failure
    assert calls == 3


async def test_back_pressure_until_the_disk_catches_up(
    tmp_path: Path, pool: ThreadPoolExecutor, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(disk_writer, "MAX_BACKLOG", 16 * 1024)
    fd = os.open(tmp_path / "f", os.O_CREAT | os.O_WRONLY)
    disk = threading.Event()

    def slow_disk(fd: int, data: bytes) -> None:
        disk.wait(timeout=30)
        write_all(fd, data)

    writer = DiskWriter(fd, pool, lambda: None, slow_disk)
    for c in chunks(8):  # 32 kB queued, 16 kB allowed
        writer.put(c)
    room = asyncio.ensure_future(writer.wait_for_room())
    for _ in range(20):
        await asyncio.sleep(0)
    assert not room.done()  # the download stops reading upstream
    disk.set()
    await asyncio.wait_for(room, 10)
    await writer.finish()
    writer.close()
    await writer.closed.wait()


async def test_the_descriptor_is_closed_once(
    tmp_path: Path, pool: ThreadPoolExecutor, monkeypatch: pytest.MonkeyPatch
) -> None:
    fd = os.open(tmp_path / "f", os.O_CREAT | os.O_WRONLY)
    closed: list[int] = []
    real_close = os.close

    def counting_close(n: int) -> None:
        closed.append(n)
        real_close(n)

    monkeypatch.setattr(os, "close", counting_close)
    writer = DiskWriter(fd, pool, lambda: None)
    writer.put(b"x")
    writer.close()
    writer.close()  # the failure path closes again: must not close a reused number
    await writer.closed.wait()
    await asyncio.sleep(0.05)  # room for a second close to happen, if it were queued
    assert closed.count(fd) == 1  # (os.close is patched process-wide: count ours only)
