"""Replicas as real `cacheproxy serve --storage s3://...` processes on one SeaweedFS bucket:
one upstream download per file across all of them, and a replica killed mid-download.
"""

import asyncio
import contextlib
import hashlib
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from distbuild import build_wheel
from fakeindex import FakeFile, FakeIndex
from processes import free_port, wait_healthy
from seaweed import SeaweedFS, isolated_environment

from cacheproxy.store.objectstore import ObjectStore
from cacheproxy.store.shared import file_object
from cacheproxy.urls import Location

LEASE_TTL = 2.0


@contextlib.asynccontextmanager
async def replicas(
    count: int,
    tmp_path: Path,
    fake: FakeIndex,
    seaweedfs: SeaweedFS,
    location: Location,
    *extra: str,
    first_workers: int = 1,
) -> AsyncIterator[list[tuple[str, asyncio.subprocess.Process]]]:
    """``count`` replicas (each with an empty local tier), as (base URL, process); the
    first runs ``first_workers`` worker processes."""
    env = isolated_environment(tmp_path, seaweedfs.environment())
    started = []
    try:
        for n in range(count):
            port = free_port()
            log = (tmp_path / f"replica-{n}.log").open("wb")
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "cacheproxy", "serve", "--port", str(port),
                "--cache-dir", str(tmp_path / f"replica-{n}"), "--upstream", fake.index_url,
                "--storage", str(location), "--workers", str(first_workers if n == 0 else 1),
                *extra,
                env={**env, "CACHEPROXY_LEASE_TTL": str(LEASE_TTL),
                     "CACHEPROXY_REPLICA_ID": f"replica-{n}"},
                stdout=asyncio.subprocess.DEVNULL, stderr=log,
            )  # fmt: skip
            log.close()
            started.append((f"http://127.0.0.1:{port}", proc))
        async with aiohttp.ClientSession() as session:
            for base, _proc in started:
                await wait_healthy(session, base)
        yield started
    finally:
        for _base, proc in started:
            if proc.returncode is None:
                proc.terminate()
        for _base, proc in started:
            await asyncio.wait_for(proc.wait(), 30)


@pytest.fixture
def large(fake: FakeIndex, tmp_path: Path) -> FakeFile:
    wheel = build_wheel(tmp_path / "dists", "large", "1.0", pad_bytes=8 * 1024 * 1024)
    return fake.add_file("large", wheel)


async def landed(objects: ObjectStore, name: str) -> None:
    """Wait for a file a replica puts in the store after serving it (its last step)."""
    for _ in range(100):
        if await objects.head(name) is not None:
            await asyncio.sleep(0.2)  # its lease is released just after
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"{name} never reached the store")


async def fetch(session: aiohttp.ClientSession, url: str) -> str:
    async with session.get(url) as resp:
        assert resp.status == 200, await resp.text()
        return hashlib.sha256(await resp.read()).hexdigest()


async def test_sixteen_clients_on_three_replicas_cause_one_upstream_download(
    tmp_path: Path,
    fake: FakeIndex,
    seaweedfs: SeaweedFS,
    location: Location,
    objects: ObjectStore,
    large: FakeFile,
) -> None:
    async with (
        # Workers and replicas together: flock elects a worker, the lease a replica.
        replicas(3, tmp_path, fake, seaweedfs, location, first_workers=2) as running,
        aiohttp.ClientSession() as session,
    ):
        for base, _proc in running:
            async with session.get(f"{base}/simple/large/") as resp:
                assert resp.status == 200
        fake.clear_log()
        fake.chunk_delay(0.005)  # 8 MB in 128 chunks: a download that takes a while
        urls = [f"{running[n % 3][0]}{large.url_path}" for n in range(16)]
        digests = await asyncio.gather(*(fetch(session, url) for url in urls))
        assert digests == [large.sha256] * 16
        assert len(fake.file_gets(large.filename)) == 1
        await landed(objects, file_object(large.sha256))
        assert [o async for o in objects.list_objects("leases/files/")] == []


async def test_a_replica_killed_mid_download_leaves_nothing_and_another_takes_over(
    tmp_path: Path,
    fake: FakeIndex,
    seaweedfs: SeaweedFS,
    location: Location,
    objects: ObjectStore,
    large: FakeFile,
) -> None:
    lease = f"leases/files/{large.sha256}"
    async with replicas(2, tmp_path, fake, seaweedfs, location) as running:
        (victim_url, victim), (survivor_url, _survivor) = running
        release = fake.hold_files({large.filename})
        async with aiohttp.ClientSession() as session:
            doomed = asyncio.ensure_future(session.get(f"{victim_url}{large.url_path}"))
            for _ in range(100):  # the victim has the lease and upstream's headers
                if fake.file_gets(large.filename) and await objects.head(lease):
                    break
                await asyncio.sleep(0.05)
            else:
                raise AssertionError("the first replica never started its download")
            victim.send_signal(signal.SIGKILL)
            await victim.wait()
            with contextlib.suppress(aiohttp.ClientError):
                await (await doomed).read()
            release.set()
            # Nothing partial: no file object; the dead replica's lease is still there.
            assert await objects.head(file_object(large.sha256)) is None
            assert await objects.head(lease) is not None
            loop = asyncio.get_running_loop()
            started = loop.time()
            assert await fetch(session, f"{survivor_url}{large.url_path}") == large.sha256
            waited = loop.time() - started
        # The survivor waited for the lease to expire (TTL plus the allowed skew), not longer.
        assert waited < LEASE_TTL + 2.0 + 5.0
        assert len(fake.file_gets(large.filename)) == 2  # the dead one's, and the survivor's
        await landed(objects, file_object(large.sha256))
        assert await objects.head(lease) is None  # released by the survivor once stored
