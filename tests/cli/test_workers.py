"""Many processes on one cache directory: one upstream download per file across all of
them, followers stream the owner's download, and a dead owner is noticed.

flock locks exclude other open file descriptions even in one process, so two apps on one
cache directory in this test process behave like two workers; the last test runs real
worker processes.
"""

import asyncio
import contextlib
import hashlib
import os
import re
import signal
import socket
import sys
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from conftest import ProxyFactory, temporaries
from distbuild import build_wheel
from fakeindex import V1_JSON, FakeFile, FakeIndex
from processes import free_port, wait_healthy

from cacheproxy.store.filelock import FileLock
from cacheproxy.web.keys import proxy_key

Client = TestClient[web.Request, web.Application]


def big(fake: FakeIndex) -> FakeFile:
    return next(f for f in fake.files("big") if f.filename.endswith(".whl"))


async def two_workers(make_proxy: ProxyFactory) -> tuple[Client, Client]:
    # workers=2: neither cleans the directory at start, as real workers do not.
    return await make_proxy(workers=2), await make_proxy(workers=2)


async def test_one_download_across_workers(
    make_proxy: ProxyFactory, fake: FakeIndex, cache_dir: Path
) -> None:
    a, b = await two_workers(make_proxy)
    f = big(fake)
    fake.chunk_delay(0.01)

    async def get(client: Client) -> bytes:
        resp = await client.get(f.url_path)
        assert resp.status == 200
        return await resp.read()

    bodies = await asyncio.gather(*(get(c) for c in (a, b, a, b, a, b)))
    assert all(body == f.data for body in bodies)
    assert len(fake.file_gets(f.filename)) == 1
    assert temporaries(cache_dir) == []
    assert list((cache_dir / "tmp" / "locks").iterdir()) == []  # released and removed


async def test_follower_sees_owner_failure(
    make_proxy: ProxyFactory, fake: FakeIndex, cache_dir: Path
) -> None:
    a, b = await two_workers(make_proxy)
    f = big(fake)
    await (await a.get("/simple/big/")).read()
    await (await b.get("/simple/big/")).read()
    fake.chunk_delay(0.01)
    fake.corrupt_files(times=1)
    owner = await a.get(f.url_path)
    await owner.content.read(1024)  # the owner is under way; now the follower joins
    follower = await b.get(f.url_path)
    for resp in (owner, follower):
        with pytest.raises(aiohttp.ClientPayloadError):
            await resp.read()
    assert not any(p.is_file() for p in (cache_dir / "files").rglob("*"))
    fake.reset_faults()
    again = await b.get(f.url_path)  # the next request starts a fresh download
    assert await again.read() == f.data


async def test_follower_notices_a_dead_owner(
    make_proxy: ProxyFactory, fake: FakeIndex, cache_dir: Path
) -> None:
    proxy = await make_proxy(workers=2)
    f = big(fake)
    await (await proxy.get("/simple/big/")).read()
    store = proxy.app[proxy_key].storage
    final = store.blob_path(f.sha256)
    # Another "worker" takes the lock and writes part of the file, then dies (its lock
    # goes with it; its temporary stays, as after kill -9).
    lock = FileLock(store.lock_path(final))
    assert lock.try_acquire()
    store.temp_path(final).write_bytes(f.data[:100_000])
    resp = await proxy.get(f.url_path)
    assert resp.status == 200
    assert int(resp.headers["Content-Length"]) == f.size
    got = await resp.content.read(100_000)
    assert got == f.data[:100_000]  # streamed what the owner had written
    lock.release(remove=False)  # the owner is gone
    with pytest.raises(aiohttp.ClientPayloadError):
        await resp.read()
    assert fake.file_gets(f.filename) == []
    os.unlink(store.temp_path(final))  # what the next start-up's cleaning would do
    again = await proxy.get(f.url_path)
    assert await again.read() == f.data


async def serve_workers(
    workers: int, port: int, cache: Path, fake: FakeIndex, *extra: str
) -> asyncio.subprocess.Process:
    """``cacheproxy serve --workers N`` as a real process; its log (with pids) on stderr."""
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "cacheproxy", "serve", "--workers", str(workers),
        "--port", str(port), "--cache-dir", str(cache), "--upstream", fake.index_url, *extra,
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip


async def test_workers_never_serve_bytes_the_index_contradicts(
    fake: FakeIndex, tmp_path: Path
) -> None:
    # A private index re-uploads different bytes at the same URL. One worker refreshes
    # the page (200, new sha256); the other's revalidation then gets a 304, so it never
    # renders the page itself: its in-memory file records must not outlive the page record
    # they came from, or it serves the old bytes as a HIT under a page that lists the new
    # sha256 (pip's hash check fails).
    wheel = build_wheel(tmp_path / "v1", "mutable", "1.0")
    fake.add_file("mutable", wheel)
    f = fake.files("mutable")[0]
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    ttl = 1.0
    proc = await serve_workers(2, port, tmp_path / "cache", fake, "--index-ttl", str(ttl))
    try:
        # One connection per request, so the kernel spreads them over both workers.
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as s:

            async def page_and_file() -> tuple[str, str, str]:
                async with s.get(f"{base}/simple/mutable/", headers={"Accept": V1_JSON}) as r:
                    listed = (await r.json(content_type=None))["files"][0]["hashes"]["sha256"]
                async with s.get(f"{base}{f.url_path}") as resp:
                    assert resp.status == 200
                    got = hashlib.sha256(await resp.read()).hexdigest()
                    return listed, got, resp.headers["X-Cache"]

            await wait_healthy(s, base)
            for _ in range(12):  # both workers learn the page and serve the file
                assert (await page_and_file())[:2] == (f.sha256, f.sha256)
            new = fake.replace_file(
                "mutable", f.filename, build_wheel(tmp_path / "v2", "mutable", "1.0", pad_bytes=99)
                .read_bytes(),
            )  # fmt: skip
            await asyncio.sleep(ttl + 0.2)  # the page is due; every memo has run out
            seen = [await page_and_file() for _ in range(16)]
        assert all(listed == new.sha256 for listed, _got, _cache in seen), seen
        assert all(got == listed for listed, got, _cache in seen), seen
        assert len(fake.file_gets(f.filename)) == 2  # once per content, across both workers
    finally:
        proc.terminate()
        _out, err = await asyncio.wait_for(proc.communicate(), 30)
    served_by = set(re.findall(r"\[(\d+)\] INFO aiohttp.access: ", err.decode()))
    assert len(served_by) == 2, err.decode()[-3000:]


async def test_real_worker_processes_share_one_download(fake: FakeIndex, tmp_path: Path) -> None:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    f = big(fake)
    proc = await serve_workers(3, port, tmp_path / "cache", fake)
    try:
        # One connection per request, so the kernel spreads them over the workers.
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as s:
            await wait_healthy(s, base)
            for _ in range(12):  # every worker learns the page (each fetches it once)
                async with s.get(f"{base}/simple/big/") as resp:
                    assert resp.status == 200
            fake.chunk_delay(0.01)

            async def get() -> str:
                async with s.get(f"{base}{f.url_path}") as resp:
                    assert resp.status == 200
                    return hashlib.sha256(await resp.read()).hexdigest()

            digests = await asyncio.gather(*(get() for _ in range(12)))
        assert set(digests) == {f.sha256}
        assert len(fake.file_gets(f.filename)) == 1
    finally:
        proc.terminate()
        _out, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 0
    log = err.decode()
    # Several processes really served (which one accepts a given connection is up to the
    # kernel, so this looks at every request; the two-app tests above pin the file case).
    served_by = set(re.findall(r"\[(\d+)\] INFO aiohttp.access: ", log))
    assert len(served_by) >= 2, log[-3000:]


def worker_pids(parent: int) -> list[str]:
    return Path(f"/proc/{parent}/task/{parent}/children").read_text().split()


async def test_keep_alive_connections_spread_over_workers(fake: FakeIndex, tmp_path: Path) -> None:
    # Each worker has its own SO_REUSEPORT socket, so the kernel spreads a burst of
    # connections over them. With one shared socket the worker that woke first accepted
    # the whole burst (a load test's 16 keep-alive connections) and the other sat idle.
    # The workers are paused while the 16 connect, so the burst is really one.
    port = free_port()
    proc = await serve_workers(2, port, tmp_path / "cache", fake)
    try:
        async with aiohttp.ClientSession() as probe:
            await wait_healthy(probe, f"http://127.0.0.1:{port}")
        children = worker_pids(proc.pid)
        assert len(children) == 2
        for pid in children:
            os.kill(int(pid), signal.SIGSTOP)
        try:  # the kernel completes the handshakes; nobody accepts yet
            conns = [await asyncio.open_connection("127.0.0.1", port) for _ in range(16)]
        finally:
            for pid in children:
                os.kill(int(pid), signal.SIGCONT)
        for _ in range(3):  # each connection kept alive for three requests
            for _reader, writer in conns:
                writer.write(b"GET /-/health HTTP/1.1\r\nHost: proxy\r\n\r\n")
            for reader, _writer in conns:
                assert (await reader.readuntil(b"ok\n")).startswith(b"HTTP/1.1 200")
        for _reader, writer in conns:
            writer.close()
    finally:
        proc.terminate()
        _out, err = await asyncio.wait_for(proc.communicate(), 30)
    served = re.findall(r"\[(\d+)\] INFO aiohttp.access: .*GET /-/health", err.decode())
    by_pid = {pid: served.count(pid) for pid in set(served)}
    assert sum(by_pid.values()) == 48 + 1  # and the probe's
    # 16 connections hashed over 2 sockets: all on one has probability 2 / 2**16.
    assert len(by_pid) == 2, by_pid


def alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie waiting for whoever adopted it does not)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


async def test_workers_die_with_a_killed_parent(fake: FakeIndex, tmp_path: Path) -> None:
    # kill -9 of the parent used to leave the workers serving, unsupervised (PPID 1),
    # holding the port: the restart failed with "address in use".
    port = free_port()
    proc = await serve_workers(2, port, tmp_path / "cache", fake)
    children: list[int] = []
    try:
        async with aiohttp.ClientSession() as probe:
            await wait_healthy(probe, f"http://127.0.0.1:{port}")
        children = [int(pid) for pid in worker_pids(proc.pid)]
        assert len(children) == 2
        proc.kill()
        for _ in range(100):
            if not any(alive(pid) for pid in children):
                break
            await asyncio.sleep(0.1)
        assert [pid for pid in children if alive(pid)] == []
        await asyncio.wait_for(proc.wait(), 10)  # the workers held its stderr pipe too
        with socket.socket() as s:  # as the next start binds it
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind(("127.0.0.1", port))
            s.listen()
    finally:
        for pid in children:  # only if the test failed: never leave them running
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
    again = await serve_workers(2, port, tmp_path / "cache", fake)
    try:
        async with aiohttp.ClientSession() as probe:
            await wait_healthy(probe, f"http://127.0.0.1:{port}")
    finally:
        again.terminate()
        _out, err = await asyncio.wait_for(again.communicate(), 30)
    assert again.returncode == 0, err.decode()[-2000:]
