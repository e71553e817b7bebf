"""Replicas sharing one cache on a real S3-compatible store (SeaweedFS on loopback).

Each replica is the real proxy app with its own empty cache directory (its local tier) and
the same bucket prefix; the fake index's request log proves what reached upstream.
"""

import asyncio
import contextlib
import hashlib
import logging
import os
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from conftest import Dists, make_settings
from distbuild import build_wheel
from fakeindex import FakeIndex
from processes import free_port
from pytest_aiohttp import AiohttpClient
from seaweed import SeaweedFS, aws_environment
from yarl import URL

from cacheproxy.errors import SharedStoreError
from cacheproxy.store.leases import LeaseState
from cacheproxy.store.objectstore import PART_SIZE, ObjectStore
from cacheproxy.store.records import PageRecord
from cacheproxy.store.shared import (
    MAX_PAGE_WAIT,
    MAX_UPLOADS,
    RETRY_AFTER,
    SharedStore,
    file_object,
    record_object,
)
from cacheproxy.urls import Location
from cacheproxy.web.app import create_app
from cacheproxy.web.keys import proxy_key

Client = TestClient[web.Request, web.Application]
Replica = Callable[..., Awaitable[Client]]


@pytest.fixture
def replica(
    aiohttp_client: AiohttpClient, fake: FakeIndex, tmp_path: Path, location: Location
) -> Replica:
    """A new replica with an empty local tier on every call."""

    async def start(**overrides: Any) -> Client:
        local = tmp_path / f"replica-{uuid.uuid4().hex[:8]}"
        values: dict[str, Any] = {"storage": location, **overrides}
        settings = make_settings(local, fake.index_url, **values)
        return await aiohttp_client(create_app(settings))

    return start


async def shared_now(client: Client) -> None:
    """Wait until the replica's writes to the store have landed."""
    proxy = client.app[proxy_key]
    storage = proxy.storage
    await proxy.indexes.flush()  # pages answered from memory reach the local tier first
    for _ in range(200):
        pending = [
            *storage._publishing.values(),  # type: ignore[attr-defined]
            *storage._tasks,  # type: ignore[attr-defined]
            *proxy.downloads._tasks,
        ]
        if not pending:
            return
        await asyncio.wait(pending, timeout=5)
    raise AssertionError("the replica's writes to the store did not finish")


JSON = {"Accept": "application/vnd.pypi.simple.v1+json"}


async def file_link(client: Client, project: str, filename: str) -> str:
    """The proxy URL (path) of ``filename`` on ``project``'s page."""
    resp = await client.get(f"/simple/{project}/", headers=JSON)
    assert resp.status == 200
    for f in (await resp.json())["files"]:
        if f["filename"] == filename:
            url = URL(f"/simple/{project}/").join(URL(f["url"]))
            return url.path
    raise AssertionError(f"{filename} not on the page")


async def test_a_new_replica_serves_pages_and_files_from_the_store_without_upstream(
    replica: Replica, fake: FakeIndex, dists: Dists, objects: ObjectStore
) -> None:
    first = await replica()
    html = await (await first.get("/simple/alpha/")).text()
    link = await file_link(first, "alpha", dists.alpha.name)
    wheel = await first.get(link)
    assert wheel.status == 200
    assert wheel.headers["X-Cache"] == "MISS"
    body = await wheel.read()
    assert body == dists.alpha.read_bytes()
    await shared_now(first)
    assert await objects.head(file_object(hashlib.sha256(body).hexdigest())) is not None
    assert await objects.head(record_object(first.app[proxy_key].pages.key("alpha")))

    fake.down()
    fake.clear_log()
    second = await replica()  # an empty disk: a new pod
    page = await second.get("/simple/alpha/")
    assert page.status == 200
    assert page.headers["X-Cache"] == "HIT"
    assert await page.text() == html
    wheel = await second.get(link)
    assert wheel.status == 200
    assert wheel.headers["X-Cache"] == "HIT"  # from the store: upstream was not asked
    assert await wheel.read() == body
    assert fake.requests == []


async def test_replicas_fetch_a_page_from_upstream_once_per_ttl(
    replica: Replica, fake: FakeIndex
) -> None:
    first, second, third = await replica(), await replica(), await replica()
    assert (await first.get("/simple/beta/")).status == 200
    await shared_now(first)
    for other in (second, third):
        resp = await other.get("/simple/beta/")
        assert resp.status == 200
        assert resp.headers["X-Cache"] == "HIT"
    assert len(fake.page_gets("beta")) == 1


async def test_stale_everywhere_one_replica_revalidates_for_all(
    replica: Replica, fake: FakeIndex
) -> None:
    # A short TTL: every request finds the page stale, and asks upstream, unless another
    # replica is doing it right now (the page's lease) or just did.
    replicas = [await replica(index_ttl=1.5) for _ in range(3)]
    assert (await replicas[0].get("/simple/beta/")).status == 200
    await shared_now(replicas[0])
    await asyncio.sleep(1.6)  # stale everywhere
    fake.clear_log()
    fake.delay_pages(0.3)  # one revalidation is in flight while the others look
    answers = await asyncio.gather(*(r.get("/simple/beta/") for r in replicas))
    assert [a.status for a in answers] == [200, 200, 200]
    assert len(fake.page_gets("beta")) == 1


async def test_one_upstream_download_per_file_across_replicas(
    replica: Replica, fake: FakeIndex, dists: Dists, objects: ObjectStore
) -> None:
    replicas = [await replica() for _ in range(3)]
    link = await file_link(replicas[0], "big", dists.big.name)
    for r in replicas[1:]:
        await file_link(r, "big", dists.big.name)  # each replica has read the page
    fake.clear_log()
    release = fake.hold_files({dists.big.name})
    gets = [asyncio.ensure_future(r.get(link)) for r in replicas for _ in range(3)]
    await asyncio.sleep(1.0)  # every replica has asked: one holds the lease, two wait
    release.set()
    expected = dists.big.read_bytes()
    for resp in await asyncio.gather(*gets):
        assert resp.status == 200
        assert await resp.read() == expected
    assert len(fake.file_gets(dists.big.name)) == 1
    assert await objects.head(file_object(hashlib.sha256(expected).hexdigest())) is not None
    assert [o async for o in objects.list_objects("leases/files/")] == []  # all released


async def test_a_damaged_copy_in_the_store_is_never_served_and_is_replaced(
    replica: Replica, fake: FakeIndex, dists: Dists, objects: ObjectStore
) -> None:
    good = dists.beta1.read_bytes()
    name = file_object(hashlib.sha256(good).hexdigest())
    await objects.put(name, good[:-1] + bytes([good[-1] ^ 1]))  # same size, wrong bytes
    first = await replica()
    link = await file_link(first, "beta", dists.beta1.name)
    resp = await first.get(link)
    # The bytes are streamed as they are copied; the last one is held back until the hash
    # checks out, so the client gets a broken transfer, never a "complete" wrong file.
    with contextlib.suppress(aiohttp.ClientPayloadError):
        assert await resp.read() != good[:-1] + bytes([good[-1] ^ 1])
    again = await first.get(link)
    assert again.status == 200
    assert await again.read() == good
    await shared_now(first)
    stored = await objects.get(name)
    assert stored is not None
    assert stored.data == good


async def test_a_dead_replicas_lease_expires_and_another_downloads_the_file(
    replica: Replica, fake: FakeIndex, dists: Dists, objects: ObjectStore
) -> None:
    data = dists.gamma.read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    # A replica that took the lease and died: it never renews or releases.
    await hold_lease(objects, f"leases/files/{digest}", "dead-replica", 1.0)
    first = await replica()
    link = await file_link(first, "gamma", dists.gamma.name)
    started = time.monotonic()
    resp = await first.get(link)
    assert resp.status == 200
    assert await resp.read() == data
    # It waited for the dead lease (its expiry plus the allowed clock skew), not longer.
    assert 1.0 <= time.monotonic() - started < 8.0
    assert len(fake.file_gets(dists.gamma.name)) == 1
    await shared_now(first)
    assert await objects.head(file_object(digest)) is not None


async def test_with_the_store_down_a_replica_serves_its_local_tier_and_relays_misses(
    aiohttp_client: AiohttpClient,
    fake: FakeIndex,
    dists: Dists,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # An endpoint where nothing listens: every store request fails at once.
    aws_environment(
        monkeypatch,
        tmp_path,
        {
            "AWS_ACCESS_KEY_ID": "k",
            "AWS_SECRET_ACCESS_KEY": "s",
            "AWS_REGION": "us-east-1",
            "AWS_ENDPOINT_URL_S3": f"http://127.0.0.1:{free_port()}",
        },
    )
    settings = make_settings(tmp_path / "local", fake.index_url, storage=Location("down"))
    client = await aiohttp_client(create_app(settings))
    page = await client.get("/simple/alpha/")
    assert page.status == 200
    link = await file_link(client, "alpha", dists.alpha.name)
    wheel = await client.get(link)
    assert wheel.status == 200
    assert await wheel.read() == dists.alpha.read_bytes()
    ready = await client.get("/-/ready")
    assert ready.status == 503
    assert "object store" in await ready.text()
    # What the local tier holds is still served with upstream down too.
    fake.down()
    fake.clear_log()
    again = await client.get(link)
    assert again.status == 200
    assert again.headers["X-Cache"] == "HIT"
    assert await again.read() == dists.alpha.read_bytes()


async def test_metrics_say_which_tier_the_bytes_came_from(
    replica: Replica, fake: FakeIndex, dists: Dists
) -> None:
    size = dists.alpha.stat().st_size
    first = await replica()
    link = await file_link(first, "alpha", dists.alpha.name)
    assert (await (await first.get(link)).read()) == dists.alpha.read_bytes()  # upstream
    assert (await (await first.get(link)).read()) == dists.alpha.read_bytes()  # local
    await shared_now(first)
    second = await replica()
    await file_link(second, "alpha", dists.alpha.name)
    assert (await (await second.get(link)).read()) == dists.alpha.read_bytes()  # store
    tiers = [(await (await r.get("/-/stats")).json())["tiers"] for r in (first, second)]
    assert tiers[0] == {"local": size, "upstream": size, "store": 0}
    assert tiers[1] == {"store": size, "upstream": 0}  # its one request: a copy
    text = await (await second.get("/-/metrics")).text()
    assert f'cacheproxy_file_bytes_total{{tier="store"}} {float(size)}' in text


async def test_a_download_that_fails_its_check_leaves_nothing_in_the_store(
    replica: Replica,
    fake: FakeIndex,
    objects: ObjectStore,
    location: Location,
    tmp_path: Path,
) -> None:
    # Larger than one part: its parts go up while it downloads, and must never complete.
    wheel = build_wheel(tmp_path / "dists", "parted", "1.0", pad_bytes=12 * 1024 * 1024)
    published = fake.add_file("parted", wheel)
    first = await replica()
    link = await file_link(first, "parted", wheel.name)
    fake.corrupt_files(times=1)
    resp = await first.get(link)
    with contextlib.suppress(aiohttp.ClientPayloadError):
        assert await resp.read() != published.data
    await shared_now(first)
    assert await objects.head(file_object(published.sha256)) is None
    assert [o async for o in objects.list_objects("leases/files/")] == []
    uploads = await objects._client.list_multipart_uploads(
        Bucket=location.bucket, Prefix=location.key("files") + "/"
    )
    assert uploads.get("Uploads", []) == []  # aborted, not left open
    # The next request downloads it again, and that one is shared.
    again = await first.get(link)
    assert await again.read() == published.data
    await shared_now(first)
    stored = await objects.get(file_object(published.sha256))
    assert stored is not None
    assert stored.data == published.data


class Outage:
    """A TCP relay in front of the store that can be cut: a real network fault."""

    def __init__(self, target: str) -> None:
        url = URL(target)
        self._target = (url.host or "127.0.0.1", url.port or 80)
        self.port = free_port()
        self._server: asyncio.Server | None = None
        self._links: set[asyncio.StreamWriter] = set()
        self._stalled = False
        self._rejecting = False
        self.connections = 0  # accepted so far: how often replicas tried the store

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def up(self) -> None:
        self._server = await asyncio.start_server(self._relay, "127.0.0.1", self.port)

    async def down(self) -> None:
        """Refuse new connections and cut the open ones."""
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        for writer in list(self._links):
            writer.transport.abort()
            writer.close()
        await asyncio.sleep(0.1)  # the aborted sockets close in callbacks on the loop

    async def stall(self) -> None:
        """Accept connections and never answer: a store that hangs rather than fails."""
        self._stalled = True
        for writer in list(self._links):
            writer.transport.abort()
            writer.close()
        await asyncio.sleep(0.1)  # the aborted sockets close in callbacks on the loop

    def reject(self, on: bool = True) -> None:
        """Accept connections (counted) and reset each at once: a store that fails fast."""
        self._rejecting = on

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        if self._rejecting:
            writer.transport.abort()
            return
        if self._stalled:
            self._links.add(writer)
            with contextlib.suppress(ConnectionError, OSError):
                while await reader.read(65536):
                    pass
            self._links.discard(writer)
            writer.close()
            return
        up_reader, up_writer = await asyncio.open_connection(*self._target)
        self._links.update((writer, up_writer))

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            with contextlib.suppress(ConnectionError, OSError):
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            dst.close()

        try:
            await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))
        finally:
            self._links.difference_update((writer, up_writer))


@pytest.fixture
async def outage(
    seaweedfs: SeaweedFS, location: Location, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[Outage]:
    """A relay between the replicas started after it and the real store, to cut."""
    relay = Outage(seaweedfs.endpoint)
    await relay.up()
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", relay.endpoint)
    yield relay
    await relay.down()


async def test_a_store_outage_and_its_end(
    replica: Replica, objects: ObjectStore, outage: Outage, fake: FakeIndex, dists: Dists
) -> None:
    # `objects` before `outage`: the test's own view of the bucket goes around the relay.
    client = await replica()
    alpha = await file_link(client, "alpha", dists.alpha.name)
    assert await (await client.get(alpha)).read() == dists.alpha.read_bytes()
    await shared_now(client)
    assert (await client.get("/-/ready")).status == 200

    await outage.down()
    beta = await file_link(client, "beta", dists.beta1.name)  # a page miss: from upstream
    resp = await client.get(beta)  # a file miss: upstream, kept locally
    assert resp.status == 200
    assert await resp.read() == dists.beta1.read_bytes()
    hit = await client.get(alpha)  # the local tier still serves
    assert hit.headers["X-Cache"] == "HIT"
    assert await hit.read() == dists.alpha.read_bytes()
    ready = await client.get("/-/ready")
    assert ready.status == 503
    assert "object store" in await ready.text()

    await outage.up()
    for _ in range(150):  # the next probe (every 5 s) finds it back
        if (await client.get("/-/ready")).status == 200:
            break
        await asyncio.sleep(0.1)
    else:
        raise AssertionError("/-/ready did not recover with the store")
    gamma = await file_link(client, "gamma", dists.gamma.name)
    assert await (await client.get(gamma)).read() == dists.gamma.read_bytes()
    await shared_now(client)
    # Only verified bytes in the store: every file object hashes to its name.
    names = [o.name async for o in objects.list_objects("files/")]
    assert file_object(hashlib.sha256(dists.gamma.read_bytes()).hexdigest()) in names
    for name in names:
        found = await objects.get(name)
        assert found is not None
        assert hashlib.sha256(found.data).hexdigest() == name.rsplit("/", 1)[1]


async def test_invalidating_a_page_drops_the_stores_copy_too(
    replica: Replica, fake: FakeIndex, objects: ObjectStore
) -> None:
    token = "replica-admin-token-123"
    first = await replica(admin_token=token, index_ttl=3600)
    assert (await first.get("/simple/alpha/")).status == 200
    await shared_now(first)
    key = first.app[proxy_key].pages.key("alpha")
    assert await objects.head(record_object(key)) is not None
    good = {"Authorization": f"Bearer {token}"}
    resp = await first.post("/-/admin/invalidate/alpha", headers=good)
    assert (await resp.json())["invalidated"] == 1
    fake.clear_log()
    again = await first.get("/simple/alpha/")
    assert again.headers["X-Cache"] == "MISS"
    assert "if-none-match" not in fake.page_gets("alpha")[0].headers  # fetched afresh


async def test_a_store_that_hangs_delays_a_request_by_seconds_not_minutes(
    replica: Replica, outage: Outage, fake: FakeIndex, dists: Dists
) -> None:
    client = await replica()
    assert (await client.get("/simple/alpha/")).status == 200
    await outage.stall()
    loop = asyncio.get_running_loop()
    started = loop.time()
    # A page this replica has not seen: the store is asked first, and does not answer.
    link = await file_link(client, "beta", dists.beta1.name)
    assert loop.time() - started < 10  # bounded by the request-path timeout (5 s)
    started = loop.time()
    resp = await client.get(link)  # the store is known down now: straight upstream
    assert await resp.read() == dists.beta1.read_bytes()
    assert loop.time() - started < 2
    ready = await client.get("/-/ready")
    assert ready.status == 503
    assert "timed out" in await ready.text()


async def test_a_new_replica_serves_a_stale_page_from_the_store_when_upstream_fails(
    replica: Replica, fake: FakeIndex
) -> None:
    first = await replica(index_ttl=0.5)
    html = await (await first.get("/simple/alpha/")).text()
    await shared_now(first)
    await asyncio.sleep(0.6)  # stale in the store too
    fake.down()
    second = await replica(index_ttl=0.5)  # an empty disk, and upstream answers 503
    page = await second.get("/simple/alpha/")
    assert page.status == 200
    assert page.headers["X-Cache"] == "STALE"
    assert await page.text() == html


async def test_a_bucket_that_does_not_exist_is_not_ready(
    aiohttp_client: AiohttpClient, fake: FakeIndex, location: Location, tmp_path: Path
) -> None:
    # A typo in --storage must show on /-/ready at once, not as "ready" until the first
    # write fails: a HEAD of a missing key cannot tell a missing bucket (both are 404).
    settings = make_settings(
        tmp_path / "local", fake.index_url, storage=Location("no-such-bucket-here", "x")
    )
    client = await aiohttp_client(create_app(settings))
    for _ in range(50):
        ready = await client.get("/-/ready")
        if ready.status == 503:
            break
        await asyncio.sleep(0.1)
    assert ready.status == 503
    assert "NoSuchBucket" in await ready.text()


async def test_a_replica_that_waits_too_long_downloads_the_file_itself_and_shares_it(
    replica: Replica, fake: FakeIndex, dists: Dists, objects: ObjectStore
) -> None:
    data = dists.gamma.read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    # Another replica holds the lease and is alive (its expiry is far off) but its file
    # never lands: a client must not wait for it past its own read timeout.
    alive = await hold_lease(objects, f"leases/files/{digest}", "slow-replica", 3600)
    first = await replica()
    first.app[proxy_key].storage.store.max_file_wait = 1.0  # type: ignore[attr-defined]
    link = await file_link(first, "gamma", dists.gamma.name)
    resp = await first.get(link)
    assert await resp.read() == data
    assert len(fake.file_gets(dists.gamma.name)) == 1
    await shared_now(first)
    assert await objects.head(file_object(digest)) is not None  # stored for everyone
    current = await objects.get(f"leases/files/{digest}")
    assert current is not None
    assert LeaseState.decode(current.data) == alive  # not ours: left alone


async def eventually(check: Callable[[], Awaitable[bool]], what: str) -> None:
    """Poll ``check`` until it holds (the probe that starts a back-fill runs every 5 s)."""
    for _ in range(300):
        if await check():
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"not within 30 s: {what}")


def backfill_done(client: Client) -> Callable[[], Awaitable[bool]]:
    """Whether a back-fill run has started and ended, with nothing left to back-fill."""
    storage = client.app[proxy_key].storage

    async def check() -> bool:
        run = storage._backfill  # type: ignore[attr-defined]
        return run is not None and run.done() and not storage.store.unshared  # type: ignore[attr-defined]

    return check


async def test_a_file_fetched_while_the_store_was_down_is_backfilled_for_every_replica(
    replica: Replica, objects: ObjectStore, outage: Outage, fake: FakeIndex, dists: Dists
) -> None:
    first = await replica()
    link = await file_link(first, "beta", dists.beta1.name)  # the page is in the store
    await shared_now(first)
    await outage.down()
    resp = await first.get(link)  # from upstream, verified, kept on this replica's disk
    assert resp.status == 200
    data = await resp.read()
    assert data == dists.beta1.read_bytes()
    await shared_now(first)
    name = file_object(hashlib.sha256(data).hexdigest())
    assert await objects.head(name) is None

    await outage.up()

    async def backfilled() -> bool:
        stats = await (await first.get("/-/stats")).json()
        return bool(stats["downloads"]["backfilled"] == 1)

    await eventually(backfilled, "the file back-filled")
    stored = await objects.get(name)
    assert stored is not None
    assert stored.data == data

    fake.down()
    fake.clear_log()
    second = await replica()  # an empty disk, and upstream answers 503
    assert (await second.get("/simple/beta/")).headers["X-Cache"] == "HIT"
    wheel = await second.get(link)
    assert wheel.status == 200
    assert wheel.headers["X-Cache"] == "HIT"  # copied from the store
    assert await wheel.read() == data
    assert fake.requests == []


async def test_backfill_never_overwrites_what_another_replica_stored_meanwhile(
    replica: Replica,
    objects: ObjectStore,
    outage: Outage,
    fake: FakeIndex,
    dists: Dists,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="cacheproxy.store.tiered")
    first = await replica()
    link = await file_link(first, "beta", dists.beta1.name)
    await shared_now(first)
    await outage.down()
    data = await (await first.get(link)).read()
    assert data == dists.beta1.read_bytes()
    name = file_object(hashlib.sha256(data).hexdigest())
    # Another replica, which reaches the store, put the file there meanwhile. (Its bytes
    # differ here only so that an overwrite would show.)
    theirs = await objects.put_create_only(name, b"another replica's object")
    assert theirs is not None

    await outage.up()
    await eventually(backfill_done(first), "a back-fill run")
    found = await objects.get(name)
    assert found is not None
    assert found.info.etag == theirs
    assert found.data == b"another replica's object"
    assert "0 files put, 1 there already" in caplog.text


async def test_the_backfill_upload_itself_is_create_only(objects: ObjectStore) -> None:
    # The look before the upload can race another replica's upload: the put must not win.
    shared = SharedStore(objects, "test-replica")
    sha256 = hashlib.sha256(b"ours").hexdigest()
    assert await objects.put(file_object(sha256), b"theirs")

    async def ours() -> AsyncIterator[bytes]:
        yield b"ours"

    assert await shared.backfill_file(sha256, ours()) is False
    found = await objects.get(file_object(sha256))
    assert found is not None
    assert found.data == b"theirs"


async def test_backfill_skips_evicted_files_and_never_uploads_damaged_ones(
    replica: Replica,
    objects: ObjectStore,
    outage: Outage,
    fake: FakeIndex,
    dists: Dists,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="cacheproxy.store.tiered")
    first = await replica()
    links = [
        await file_link(first, "alpha", dists.alpha.name),
        await file_link(first, "beta", dists.beta1.name),
    ]
    await shared_now(first)
    await outage.down()
    digests = []
    for link in links:
        data = await (await first.get(link)).read()
        digests.append(hashlib.sha256(data).hexdigest())
    await shared_now(first)
    storage = first.app[proxy_key].storage
    evicted, damaged = (storage.blob_path(d) for d in digests)
    evicted.unlink()
    good = damaged.read_bytes()
    damaged.write_bytes(good[:-1] + bytes([good[-1] ^ 1]))  # same size, wrong bytes

    await outage.up()
    await eventually(backfill_done(first), "a back-fill run")
    for digest in digests:
        assert await objects.head(file_object(digest)) is None
    uploads = await objects._client.list_multipart_uploads(
        Bucket=objects.location.bucket, Prefix=objects.location.key("files") + "/"
    )
    assert uploads.get("Uploads", []) == []
    assert not damaged.exists()  # removed here too: its next request downloads it again
    assert "0 files put, 0 there already, 1 evicted here, 1 damaged here" in caplog.text


async def test_at_most_max_uploads_go_to_the_store_at_once(
    objects: ObjectStore, location: Location
) -> None:
    shared = SharedStore(objects, "test-replica")
    count = MAX_UPLOADS + 1
    started: list[int] = []
    release = [asyncio.Event() for _ in range(count)]

    async def download(i: int) -> AsyncIterator[bytes]:
        started.append(i)
        yield os.urandom(PART_SIZE + 1)  # more than a part: a multipart upload is open
        await release[i].wait()  # the rest of the download has not arrived yet

    async def open_uploads() -> int:
        listed = await objects._client.list_multipart_uploads(
            Bucket=location.bucket, Prefix=location.key("files") + "/"
        )
        return len(listed.get("Uploads", []))

    names = [hashlib.sha256(f"file {i}".encode()).hexdigest() for i in range(count)]
    uploads = [
        asyncio.create_task(shared.publish_file(names[i], download(i))) for i in range(count)
    ]

    async def limit_reached() -> bool:
        return await open_uploads() >= MAX_UPLOADS

    await eventually(limit_reached, f"{MAX_UPLOADS} uploads open")
    assert await open_uploads() == MAX_UPLOADS
    assert len(started) == MAX_UPLOADS  # the other one waits, not reading its bytes yet
    waiting = (set(range(count)) - set(started)).pop()
    release[started[0]].set()  # one upload completes: the waiting one starts
    await uploads[started[0]]

    async def next_started() -> bool:
        return waiting in started

    await eventually(next_started, "the waiting upload started")
    assert await open_uploads() <= MAX_UPLOADS
    for event in release:
        event.set()
    await asyncio.gather(*uploads)
    assert await open_uploads() == 0
    for name in names:
        assert await objects.head(file_object(name)) is not None


async def test_a_replica_that_waited_in_vain_for_a_page_does_not_wait_again(
    replica: Replica, fake: FakeIndex, objects: ObjectStore
) -> None:
    client = await replica()
    key = client.app[proxy_key].pages.key("beta")
    # Another replica holds the page's lease (alive) but never writes the page.
    lease = f"leases/pages/{hashlib.sha256(key.encode()).hexdigest()}"
    await hold_lease(objects, lease, "slow-replica", 3600)
    fake.fail_pages(503)  # and upstream fails: nothing is stored to end the wait
    loop = asyncio.get_running_loop()
    started = loop.time()
    first = await client.get("/simple/beta/")
    assert first.status >= 500
    assert loop.time() - started >= MAX_PAGE_WAIT - 0.5  # it waited for the other replica
    started = loop.time()
    second = await client.get("/simple/beta/")
    assert second.status >= 500
    assert loop.time() - started < MAX_PAGE_WAIT - 1  # straight upstream, no second wait
    assert len(fake.page_gets("beta")) == 2  # each asked upstream


async def test_after_a_store_failure_requests_skip_the_store_for_a_while(
    replica: Replica, outage: Outage, fake: FakeIndex, dists: Dists
) -> None:
    client = await replica()
    probe = client.app[proxy_key].storage._probe  # type: ignore[attr-defined]
    probe.cancel()  # only requests reach the store in this test
    outage.reject()
    loop = asyncio.get_running_loop()
    before = loop.time()
    assert (await client.get("/simple/alpha/")).status == 200  # the store fails: upstream
    failed = loop.time()
    tried = outage.connections
    assert tried > 0
    link = await file_link(client, "beta", dists.beta1.name)  # a page miss
    assert await (await client.get(link)).read() == dists.beta1.read_bytes()  # a file miss
    assert loop.time() - before < RETRY_AFTER  # still in the window (checked, not assumed)
    assert outage.connections == tried  # neither asked the store
    assert len(fake.page_gets("beta")) == 1
    assert len(fake.file_gets(dists.beta1.name)) == 1
    await asyncio.sleep(failed + RETRY_AFTER + 0.2 - loop.time())  # past the window
    assert (await client.get("/simple/gamma/")).status == 200
    assert outage.connections > tried  # the store was tried again


async def test_a_page_record_in_the_store_never_goes_back_in_time(objects: ObjectStore) -> None:
    # Two replicas' write-backs of one page, landing in the wrong order: the store keeps
    # the later fetch (README "Consistency model").
    shared = SharedStore(objects, "test-replica")
    later, earlier = PageRecord(200, fetched_at=200.0), PageRecord(200, fetched_at=100.0)
    assert await shared.write_record("beta", later, None) == "written"
    assert await shared.write_record("beta", earlier, None) == "newer"
    found = await shared.read_record("beta")
    assert found is not None
    assert found.record.fetched_at == 200.0


async def test_a_page_fetched_while_the_store_was_down_reaches_it_at_its_revalidation(
    replica: Replica, outage: Outage, fake: FakeIndex
) -> None:
    client = await replica(index_ttl=1.5)
    await outage.down()
    assert (await client.get("/simple/beta/")).status == 200  # kept locally only
    await shared_now(client)
    await outage.up()
    for _ in range(150):  # the next probe (every 5 s) finds the store back
        if (await client.get("/-/ready")).status == 200:
            break
        await asyncio.sleep(0.1)
    else:
        raise AssertionError("/-/ready did not recover with the store")
    await asyncio.sleep(1.6)  # stale: the next request revalidates (304, no bodies)
    fake.clear_log()
    assert (await client.get("/simple/beta/")).status == 200
    [revalidation] = fake.page_gets("beta")
    assert "if-none-match" in revalidation.headers  # answered 304: no bodies come back
    await shared_now(client)
    # The store now has the whole page: a new replica answers it without upstream.
    fake.clear_log()
    other = await replica(index_ttl=60)
    resp = await other.get("/simple/beta/")
    assert resp.status == 200
    assert resp.headers["X-Cache"] == "HIT"
    assert fake.page_gets("beta") == []


async def test_a_store_copy_cut_short_is_not_removed_when_upstream_cannot_resume(
    replica: Replica, fake: FakeIndex, dists: Dists, objects: ObjectStore
) -> None:
    # The store fails part way through a good copy and upstream cannot resume it: the
    # download fails, but nothing says the store's object is damaged, so it stays.
    good = dists.beta1.read_bytes()
    name = file_object(hashlib.sha256(good).hexdigest())
    first = await replica()
    link = await file_link(first, "beta", dists.beta1.name)
    assert await (await first.get(link)).read() == good
    await shared_now(first)
    second = await replica()
    shared = second.app[proxy_key].storage.shared
    assert isinstance(shared, SharedStore)

    @contextlib.asynccontextmanager
    async def cut_short(sha256: str) -> AsyncIterator[tuple[int, AsyncIterator[bytes]]]:
        async def chunks() -> AsyncIterator[bytes]:
            yield good[: len(good) // 2]
            raise SharedStoreError("connection reset (a test's fault)")

        yield len(good), chunks()

    shared.open_file = cut_short  # type: ignore[method-assign]
    fake.ranges = False
    resp = await second.get(link)
    with contextlib.suppress(aiohttp.ClientPayloadError):
        assert await resp.read() != good
    await shared_now(second)
    assert await objects.head(name) is not None


async def hold_lease(objects: ObjectStore, name: str, holder: str, seconds: float) -> LeaseState:
    """Another replica's lease ``name``, expiring in ``seconds``: it never renews it."""
    lease = LeaseState(holder, "token", time.time() + seconds, 0)
    assert await objects.put_create_only(name, lease.encode())
    return lease
