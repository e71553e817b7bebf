"""The object-store facade and the leases on it, against a real SeaweedFS on loopback.

Races are real: many requests to one key in flight at once, ordered by the store alone
(never a mock: a mock would order them by our own code). SeaweedFS starts once per session,
only when a test here asks for it; each test works under its own key prefix.
"""

import asyncio
import contextlib
import hashlib
import random
import socket
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import botocore.session
import pytest
import seaweed
from seaweed import EngineUnavailable, SeaweedFS, aws_environment, running

from cacheproxy.errors import ConfigError
from cacheproxy.store.leases import Lease, Leases, LeaseState
from cacheproxy.store.objectstore import (
    MIN_PART_SIZE,
    ObjectStore,
    ObjectStoreError,
    Timeouts,
)
from cacheproxy.urls import Location

RACERS = 20
# SeaweedFS answers contended conditional writes to one key after up to a few seconds (it
# waits on a per-key lock), so each race runs a couple of rounds, not dozens.
ROUNDS = 2


@pytest.fixture
async def store(
    seaweedfs: SeaweedFS, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> AsyncIterator[ObjectStore]:
    # Endpoint, region and credentials come from the standard variables, as in production.
    aws_environment(monkeypatch, tmp_path, seaweedfs.environment())
    location = Location(seaweedfs.bucket, f"t/{uuid.uuid4().hex}")
    async with ObjectStore.connect(location) as connected:
        yield connected


class Clock:
    """Simulated wall time shared by every replica of a test."""

    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


# -- pure -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "bucket", "prefix"),
    [
        ("s3://cache", "cache", ""),
        ("s3://cache/", "cache", ""),
        ("s3://my.cache-1/team/pypi/", "my.cache-1", "team/pypi"),
        ("s3://cache//a//b", "cache", "a/b"),
    ],
)
def test_locations_parse(url: str, bucket: str, prefix: str) -> None:
    location = Location.parse(url)
    assert (location.bucket, location.prefix) == (bucket, prefix)
    assert location.key("x/y") == (f"{prefix}/x/y" if prefix else "x/y")
    assert location.name(location.key("x/y")) == "x/y"


@pytest.mark.parametrize(
    "url",
    ["cache", "s3:/cache", "http://cache/x", "s3://", "s3://Cache", "s3://ab", "s3://a/../b"],
)
def test_bad_locations_are_config_errors(url: str) -> None:
    with pytest.raises(ConfigError, match="object store location"):
        Location.parse(url)


def test_the_installed_botocore_knows_conditional_writes() -> None:
    # Older botocore rejects IfNoneMatch/IfMatch as unknown parameters before sending.
    model = botocore.session.get_session().get_service_model("s3")
    members: dict[str, set[str]] = {}
    for op in ("PutObject", "DeleteObject", "CompleteMultipartUpload"):
        shape = model.operation_model(op).input_shape
        assert shape is not None
        members[op] = set(shape.members)
    assert {"IfNoneMatch", "IfMatch"} <= members["PutObject"]
    assert "IfMatch" in members["DeleteObject"]
    assert "IfNoneMatch" in members["CompleteMultipartUpload"]


def test_lease_state_decodes_only_what_it_encodes() -> None:
    state = LeaseState("replica-a", "t0", 1.5, 3)
    assert LeaseState.decode(state.encode()) == state
    assert LeaseState.decode(b"not json") is None
    assert LeaseState.decode(b'{"holder": "x"}') is None


def test_no_engine_is_a_reason_to_skip(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(seaweed, "weed_binary", lambda: None)
    with pytest.raises(EngineUnavailable, match="no weed binary"), running(tmp_path):
        pass


# -- the facade on a real store ---------------------------------------------------------


async def test_objects_round_trip(store: ObjectStore, tmp_path: Path) -> None:
    assert await store.head("a/b") is None
    assert await store.get("a/b") is None
    etag = await store.put("a/b", b"hello")
    info = await store.head("a/b")
    assert info is not None
    assert (info.name, info.etag, info.size) == ("a/b", etag, 5)
    got = await store.get("a/b")
    assert got is not None
    assert got.data == b"hello"
    assert got.info.etag == etag
    dest = tmp_path / "out"
    assert await store.get_to_file("a/b", dest) is not None
    assert dest.read_bytes() == b"hello"
    assert await store.get_to_file("missing", tmp_path / "none") is None
    assert not (tmp_path / "none").exists()
    assert await store.delete("a/b")
    assert await store.head("a/b") is None
    assert await store.delete("a/b")  # unconditional delete of nothing succeeds, as in S3


async def test_listing_pages_through_a_prefix(store: ObjectStore) -> None:
    for name in ["p/1", "p/2", "p/3", "p/4", "p/5", "q/1"]:
        await store.put(name, name.encode())
    listed = [info.name async for info in store.list_objects("p/", page_size=2)]
    assert listed == ["p/1", "p/2", "p/3", "p/4", "p/5"]
    everything = [info.name async for info in store.list_objects()]
    assert everything == ["p/1", "p/2", "p/3", "p/4", "p/5", "q/1"]


async def test_create_only_never_overwrites(store: ObjectStore) -> None:
    assert await store.put_create_only("k", b"first") is not None
    assert await store.put_create_only("k", b"second") is None
    got = await store.get("k")
    assert got is not None
    assert got.data == b"first"


async def test_create_only_race_has_exactly_one_winner(store: ObjectStore) -> None:
    for round_ in range(ROUNDS):
        key = f"race/{round_}"
        bodies = [f"writer {i}".encode() for i in range(RACERS)]
        results = await asyncio.gather(*(store.put_create_only(key, b) for b in bodies))
        winners = [i for i, etag in enumerate(results) if etag is not None]
        assert len(winners) == 1, results
        got = await store.get(key)
        assert got is not None
        assert got.data == bodies[winners[0]]
        assert got.info.etag == results[winners[0]]


async def test_compare_and_swap_race_has_exactly_one_winner(store: ObjectStore) -> None:
    etag = await store.put("cas", b"v0")
    for round_ in range(ROUNDS):
        bodies = [f"round {round_} writer {i}".encode() for i in range(RACERS)]
        results = await asyncio.gather(*(store.put_if_match("cas", b, etag) for b in bodies))
        winners = [i for i, new in enumerate(results) if new is not None]
        assert len(winners) == 1, results
        got = await store.get("cas")
        assert got is not None
        assert got.data == bodies[winners[0]]
        new_etag = results[winners[0]]
        assert new_etag is not None
        etag = new_etag
    assert await store.put_if_match("cas", b"stale", '"0123456789abcdef0123456789abcdef"') is None
    assert await store.put_if_match("gone", b"x", etag) is None


async def test_conditional_delete_removes_only_the_version_it_names(store: ObjectStore) -> None:
    old = await store.put("d", b"old")
    new = await store.put("d", b"new")
    assert old != new
    assert not await store.delete("d", etag=old)
    assert await store.head("d") is not None
    assert await store.delete("d", etag=new)
    assert await store.head("d") is None
    assert not await store.delete("d", etag=new)


def big_file(path: Path, size: int) -> bytes:
    data = random.Random(size).randbytes(size)
    path.write_bytes(data)
    return data


async def test_a_multipart_upload_is_whole_and_create_only(
    store: ObjectStore, tmp_path: Path
) -> None:
    data = big_file(tmp_path / "big", 2 * MIN_PART_SIZE + 12345)
    etag = await store.put_file("big", tmp_path / "big", part_size=MIN_PART_SIZE)
    assert etag is not None
    assert etag.strip('"').endswith("-3")  # three parts, per S3's multipart ETag
    info = await store.get_to_file("big", tmp_path / "back")
    assert info is not None
    assert info.size == len(data)
    assert (tmp_path / "back").read_bytes() == data
    (tmp_path / "other").write_bytes(data[::-1])
    assert await store.put_file("big", tmp_path / "other", part_size=MIN_PART_SIZE) is None
    assert await store.put_file("small", tmp_path / "other", part_size=len(data)) is not None
    assert await store.put_file("small", tmp_path / "big", part_size=len(data)) is None
    got = await store.get("big")
    assert got is not None
    assert hashlib.sha256(got.data).digest() == hashlib.sha256(data).digest()
    assert await pending_uploads(store) == []


async def test_concurrent_multipart_uploads_of_one_key_leave_one_whole_object(
    store: ObjectStore, tmp_path: Path
) -> None:
    # SeaweedFS 4.48 checks If-None-Match on CompleteMultipartUpload against what exists when
    # the request arrives, not atomically: two racing completes can both succeed (about one
    # round in five here), the later replacing the earlier. What must hold on any engine is
    # that the object is always one upload, whole, never a mix. Exclusivity for large files
    # comes from the download lease (store/leases.py), and file keys are content-addressed.
    sources = []
    for i in range(4):
        sources.append(tmp_path / f"src{i}")
        big_file(sources[-1], MIN_PART_SIZE + 1000 + i)
    for round_ in range(ROUNDS):
        name = f"one-{round_}"
        results = await asyncio.gather(
            *(store.put_file(name, src, part_size=MIN_PART_SIZE) for src in sources)
        )
        winners = [i for i, etag in enumerate(results) if etag is not None]
        assert winners, results
        got = await store.get(name)
        assert got is not None
        assert got.data in {sources[i].read_bytes() for i in winners}
        assert got.info.etag in {results[i] for i in winners}
    assert await pending_uploads(store) == []


async def pending_uploads(store: ObjectStore) -> list[str]:
    """Keys of multipart uploads still open under the store's prefix, asked of the server."""
    client: Any = store._client
    answer = await client.list_multipart_uploads(
        Bucket=store.location.bucket, Prefix=store.location.prefix + "/"
    )
    return [str(upload["Key"]) for upload in answer.get("Uploads", [])]


async def test_a_failed_multipart_upload_leaves_nothing(
    store: ObjectStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    big_file(tmp_path / "big", 3 * MIN_PART_SIZE)
    client: Any = store._client
    real_upload_part = client.upload_part
    calls = 0

    async def second_part_fails(**kwargs: Any) -> Any:
        nonlocal calls
        calls += 1
        if calls == 2:
            raise ConnectionResetError("the network went away")
        return await real_upload_part(**kwargs)

    monkeypatch.setattr(client, "upload_part", second_part_fails)
    with pytest.raises(
        ObjectStoreError, match=r"^object store upload .*/big: ConnectionResetError"
    ):
        await store.put_file("big", tmp_path / "big", part_size=MIN_PART_SIZE)
    assert calls == 2
    assert await store.head("big") is None
    assert await pending_uploads(store) == []


async def test_a_cancelled_multipart_upload_leaves_nothing(
    store: ObjectStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    big_file(tmp_path / "big", 3 * MIN_PART_SIZE)
    client: Any = store._client
    real_upload_part = client.upload_part
    first_part_in = asyncio.Event()

    async def stalls_after_the_first(**kwargs: Any) -> Any:
        if first_part_in.is_set():
            await asyncio.sleep(3600)
        answer = await real_upload_part(**kwargs)
        first_part_in.set()
        return answer

    monkeypatch.setattr(client, "upload_part", stalls_after_the_first)
    upload = asyncio.create_task(store.put_file("big", tmp_path / "big", part_size=MIN_PART_SIZE))
    await first_part_in.wait()
    upload.cancel()
    with pytest.raises(asyncio.CancelledError):
        await upload
    assert await store.head("big") is None
    assert await pending_uploads(store) == []


# -- failures: one line, bounded time, no secrets ----------------------------------------


async def test_a_closed_port_fails_fast_with_one_line(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    secret = "s3cr3t-never-shown"
    aws_environment(
        monkeypatch,
        tmp_path,
        {
            "AWS_ACCESS_KEY_ID": "AKIDEXAMPLE",
            "AWS_SECRET_ACCESS_KEY": secret,
            "AWS_REGION": "us-east-1",
            "AWS_ENDPOINT_URL_S3": f"http://127.0.0.1:{closed_port()}",
        },
    )
    timeouts = Timeouts(connect=1.0, read=1.0, call=5.0, attempts=2)
    async with ObjectStore.connect(Location("bucket", "p"), timeouts=timeouts) as store:
        started = time.monotonic()
        with pytest.raises(ObjectStoreError) as caught:
            await store.put_create_only("k", b"x")
        elapsed = time.monotonic() - started
    message = str(caught.value)
    assert message == "object store create p/k: cannot connect to the endpoint"
    assert not caught.value.timeout
    assert secret not in message
    assert "AKIDEXAMPLE" not in message
    assert elapsed < 5.0


async def test_a_silent_server_times_out_within_the_bound(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    accepted: list[asyncio.StreamWriter] = []

    async def swallow(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.append(writer)
        with contextlib.suppress(ConnectionError):
            await reader.read(-1)  # never answers; returns when the client gives up

    server = await asyncio.start_server(swallow, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    aws_environment(
        monkeypatch,
        tmp_path,
        {
            "AWS_ACCESS_KEY_ID": "AKIDEXAMPLE",
            "AWS_SECRET_ACCESS_KEY": "secret",
            "AWS_REGION": "us-east-1",
            "AWS_ENDPOINT_URL_S3": f"http://127.0.0.1:{port}",
        },
    )
    timeouts = Timeouts(connect=1.0, read=0.5, call=1.5, attempts=5)
    try:
        async with ObjectStore.connect(Location("bucket"), timeouts=timeouts) as store:
            started = time.monotonic()
            with pytest.raises(ObjectStoreError) as caught:
                await store.head("k")
            elapsed = time.monotonic() - started
    finally:
        server.close()
        for writer in accepted:  # Python 3.11's server.close() leaves accepted ones open
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()
        await server.wait_closed()
    assert str(caught.value) == "object store head k: timed out"
    assert caught.value.timeout
    assert elapsed < timeouts.call + 0.5


async def test_no_credentials_is_one_line_naming_where_they_are_looked_for(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    aws_environment(
        monkeypatch, tmp_path, {"AWS_ENDPOINT_URL_S3": f"http://127.0.0.1:{closed_port()}"}
    )
    async with ObjectStore.connect(Location("bucket")) as store:
        with pytest.raises(ObjectStoreError) as caught:
            await store.get("k")
    assert str(caught.value) == (
        "object store get k: no usable credentials in the AWS environment variables or files"
    )


@pytest.mark.parametrize(
    ("env", "region"),
    [
        ({"AWS_REGION": "eu-west-3"}, "eu-west-3"),
        ({"AWS_DEFAULT_REGION": "eu-west-2"}, "eu-west-2"),
        ({"AWS_DEFAULT_REGION": "eu-west-2", "AWS_REGION": "eu-west-3"}, "eu-west-2"),
        ({}, "us-east-1"),
    ],
)
async def test_the_region_comes_from_the_environment(
    env: dict[str, str], region: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    aws_environment(monkeypatch, tmp_path, {"AWS_ENDPOINT_URL_S3": "http://127.0.0.1:9", **env})
    async with ObjectStore.connect(Location("bucket")) as store:
        client: Any = store._client
        assert client.meta.region_name == region


async def test_a_wrong_secret_is_named_by_its_code_only(
    seaweedfs: SeaweedFS, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    wrong = "not-the-secret-" + uuid.uuid4().hex
    env = {**seaweedfs.environment(), "AWS_SECRET_ACCESS_KEY": wrong}
    aws_environment(monkeypatch, tmp_path, env)
    async with ObjectStore.connect(Location(seaweedfs.bucket, "x")) as store:
        with pytest.raises(ObjectStoreError) as caught:
            await store.put("k", b"x")
    assert str(caught.value) == "object store put x/k: SignatureDoesNotMatch (HTTP 403)"
    assert wrong not in str(caught.value)


# -- leases ------------------------------------------------------------------------------


def replicas(store: ObjectStore, clock: Clock, count: int, ttl: float = 30.0) -> list[Leases]:
    return [Leases(store, f"replica-{i}", ttl=ttl, clock=clock, max_skew=1.0) for i in range(count)]


async def test_a_lease_is_acquired_renewed_expired_and_taken_over(store: ObjectStore) -> None:
    clock = Clock()
    a, b = replicas(store, clock, 2)
    lease = await a.acquire("demo.whl")
    assert lease is not None
    assert await b.acquire("demo.whl") is None
    clock.advance(20)
    renewed = await a.renew(lease)
    assert renewed is not None
    assert renewed.expires_at == clock() + 30
    clock.advance(1)
    assert await a.renew(lease) is None  # a stale tag: only the latest write renews
    clock.advance(29)  # expired, but within the skew allowance
    assert await b.acquire("demo.whl") is None
    clock.advance(1)
    taken = await b.acquire("demo.whl")
    assert taken is not None
    current = await b.current("demo.whl")
    assert current is not None
    assert current.holder == "replica-1"
    assert await a.renew(renewed) is None  # the old holder learns it lost the lease
    assert not await a.release(renewed)  # ... and cannot remove the new holder's lease
    assert await b.release(taken)
    assert await a.current("demo.whl") is None
    again = await a.acquire("demo.whl")
    assert again is not None


async def test_an_unreadable_lease_object_can_be_taken_over(store: ObjectStore) -> None:
    await store.put("leases/x", b"garbage")
    (a,) = replicas(store, Clock(), 1)
    assert await a.acquire("x") is not None


async def test_a_lease_write_whose_answer_was_lost_is_recognised(store: ObjectStore) -> None:
    # A retried create that lands after its first attempt did: the store answers 412, but
    # the lease there is ours, so acquire and renew must still say so.
    clock = Clock()
    (a,) = replicas(store, clock, 1)
    real_create = store.put_create_only
    real_swap = store.put_if_match

    async def create_then_lose_the_answer(name: str, data: bytes) -> str | None:
        await real_create(name, data)
        return await real_create(name, data)

    async def swap_then_lose_the_answer(name: str, data: bytes, etag: str) -> str | None:
        await real_swap(name, data, etag)
        return await real_swap(name, data, etag)

    store.put_create_only = create_then_lose_the_answer  # type: ignore[method-assign]
    store.put_if_match = swap_then_lose_the_answer  # type: ignore[method-assign]
    lease = await a.acquire("lost")
    assert lease is not None
    clock.advance(5)
    renewed = await a.renew(lease)
    assert renewed is not None
    assert await a.release(renewed)


async def test_contenders_for_an_expired_lease_have_exactly_one_winner(
    store: ObjectStore,
) -> None:
    clock = Clock()
    old, *contenders = replicas(store, clock, RACERS // 2 + 1)
    for round_ in range(ROUNDS):
        name = f"expired-{round_}"
        assert await old.acquire(name) is not None
        clock.advance(60)
        results = await asyncio.gather(*(c.acquire(name) for c in contenders))
        winners = [lease for lease in results if lease is not None]
        assert len(winners) == 1, [lease is not None for lease in results]
        current = await old.current(name)
        assert current == winners[0].state


async def test_a_simulated_team_never_has_two_holders(store: ObjectStore) -> None:
    # Four replicas, one lease, a seeded schedule: each step every replica acts at once
    # (holders renew, stall or release; the rest try to acquire), then time moves on.
    rng = random.Random(20261205)
    clock = Clock()
    team = replicas(store, clock, 4, ttl=10.0)
    held: list[Lease | None] = [None] * len(team)
    acquisitions = takeovers = 0

    async def act(i: int) -> None:
        nonlocal acquisitions, takeovers
        leases, lease = team[i], held[i]
        if lease is not None and leases.valid(lease):
            roll = rng.random()
            if roll < 0.6:
                held[i] = await leases.renew(lease)
            elif roll < 0.75 and await leases.release(lease):
                held[i] = None
            return  # otherwise stalled: the lease runs out unless renewed later
        before = await leases.current("file")
        held[i] = await leases.acquire("file")
        if held[i] is not None:
            acquisitions += 1
            takeovers += before is not None

    for _ in range(40):
        await asyncio.gather(*(act(i) for i in range(len(team))))
        holders = [i for i, lease in enumerate(held) if lease and team[i].valid(lease)]
        assert len(holders) <= 1, holders
        stored = await team[0].current("file")
        if holders:
            lease = held[holders[0]]
            assert lease is not None
            assert stored == lease.state
        clock.advance(rng.choice([1.0, 2.0, 4.0, 12.0]))
    assert acquisitions >= 5
    assert takeovers >= 2
