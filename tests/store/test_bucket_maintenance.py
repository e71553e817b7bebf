"""``verify``, ``prune`` and ``stats`` on the bucket replicas share (store/bucket_maintenance.py
and cli/maintenance.py), against a real SeaweedFS on loopback.

The bucket is filled by a real replica (the proxy app with ``storage`` set) fetching from the
fake index, so the objects are the ones production writes; the commands run in-process on the
functions and end to end as ``python -m cacheproxy`` with only the AWS_* variables pointing at
SeaweedFS.
"""

import asyncio
import hashlib
import json
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from conftest import make_settings
from fakeindex import FakeFile, FakeIndex
from processes import free_port
from pytest_aiohttp import AiohttpClient
from seaweed import SeaweedFS, isolated_environment

from cacheproxy.store import bucket_maintenance
from cacheproxy.store.bucket_maintenance import (
    BucketVerifyReport,
    bucket_stats,
    prune_bucket,
    verify_bucket,
)
from cacheproxy.store.leases import Leases
from cacheproxy.store.objectstore import ObjectStore
from cacheproxy.store.shared import BODIES, FILES, RECORDS, file_object
from cacheproxy.urls import Location
from cacheproxy.web.app import create_app
from cacheproxy.web.keys import proxy_key

Client = TestClient[web.Request, web.Application]


def wheel(fake: FakeIndex, project: str) -> FakeFile:
    return next(f for f in fake.files(project) if f.filename.endswith(".whl"))


async def fill(
    aiohttp_client: AiohttpClient, fake: FakeIndex, location: Location, tmp_path: Path
) -> list[FakeFile]:
    """A replica fetches the alpha and beta wheels (and their pages): into the bucket."""
    settings = make_settings(tmp_path / "replica", fake.index_url, storage=location)
    client = await aiohttp_client(create_app(settings))
    wheels = [wheel(fake, "alpha"), wheel(fake, "beta")]
    for f in wheels:
        resp = await client.get(f.url_path)
        assert await resp.read() == f.data
    storage = client.app[proxy_key].storage
    for _ in range(200):  # the replica's writes to the store land in the background
        pending = [*storage._publishing.values(), *storage._tasks]  # type: ignore[attr-defined]
        if not pending:
            break
        await asyncio.wait(pending, timeout=5)
    await client.close()
    return wheels


async def names(objects: ObjectStore, prefix: str) -> list[str]:
    return [info.name async for info in objects.list_objects(prefix)]


# -- verify ------------------------------------------------------------------------------


async def test_verify_removes_corrupt_objects_and_keeps_good_ones(
    aiohttp_client: AiohttpClient,
    fake: FakeIndex,
    location: Location,
    objects: ObjectStore,
    tmp_path: Path,
) -> None:
    alpha, beta = await fill(aiohttp_client, fake, location, tmp_path)
    bodies = await names(objects, f"{BODIES}/")
    records = await names(objects, f"{RECORDS}/")
    assert bodies
    assert records
    await objects.put(file_object(alpha.sha256), b"bit rot")
    await objects.put(bodies[0], b"<html>bit rot")
    await objects.put(records[0], b"{not json")
    misnamed = f"{FILES}/zz/{beta.sha256}"  # right bytes, but no reader looks there
    await objects.put(misnamed, beta.data)

    report = await verify_bucket(objects)

    rot = hashlib.sha256(b"bit rot").hexdigest()
    assert sorted(report.bad) == sorted(
        [
            f"{location}/{file_object(alpha.sha256)} (sha256 {rot})",
            f"{location}/{bodies[0]} (sha256 {hashlib.sha256(b'<html>bit rot').hexdigest()})",
            f"{location}/{records[0]} (not a page record)",
            f"{location}/{misnamed} (not named by its sha256)",
        ]
    )
    assert await objects.head(file_object(alpha.sha256)) is None
    assert await objects.head(bodies[0]) is None
    assert await objects.head(records[0]) is None
    assert await objects.head(misnamed) is None
    kept = await objects.get(file_object(beta.sha256))
    assert kept is not None
    assert kept.data == beta.data
    assert report.checked == 2  # alpha (bad) and beta; the misnamed one is never read
    assert report.checked_bytes == len(b"bit rot") + beta.size
    assert report.pages_checked >= len(bodies) + len(records)
    assert "4 corrupt and removed" in report.line()
    again = await verify_bucket(objects)
    assert again.bad == []
    assert again.checked == 1


async def test_verify_never_removes_a_copy_written_after_the_bad_one_was_read(
    objects: ObjectStore,
) -> None:
    good = b"a good wheel"
    name = file_object(hashlib.sha256(good).hexdigest())
    read_tag = await objects.put(name, b"bit rot")  # what verify hashed
    await objects.put(name, good)  # a replica stored a good copy since
    report = BucketVerifyReport(str(objects.location))
    await bucket_maintenance._remove(objects, name, read_tag, "sha256 ...", report)
    assert report.bad == []
    found = await objects.get(name)
    assert found is not None
    assert found.data == good


# -- prune -------------------------------------------------------------------------------


async def store_files(objects: ObjectStore, count: int, size: int) -> list[str]:
    """``count`` files of ``size`` bytes stored a second apart (S3's LastModified has a
    resolution of a second), oldest first."""
    stored = []
    for n in range(count):
        if n:
            await asyncio.sleep(1.1)
        data = bytes([n]) * size
        name = file_object(hashlib.sha256(data).hexdigest())
        await objects.put(name, data)
        stored.append(name)
    return stored


async def test_prune_removes_the_oldest_stored_files_until_under_the_size(
    objects: ObjectStore,
) -> None:
    page = f"{BODIES}/{hashlib.sha256(b'page').hexdigest()}"
    await objects.put(page, b"page")
    _oldest, middle, newest = await store_files(objects, 3, 1000)

    report = await prune_bucket(objects, max_bytes=2500)

    assert (report.files, report.bytes, report.removed, report.removed_bytes) == (3, 3000, 1, 1000)
    assert await names(objects, f"{FILES}/") == sorted([middle, newest])
    assert await objects.head(page) is not None  # pages are never pruned
    assert "removed 1 file(s)" in report.line()
    again = await prune_bucket(objects, max_bytes=2000)  # at the size: nothing to do
    assert again.removed == 0


async def test_prune_older_than_removes_files_stored_longer_ago(objects: ObjectStore) -> None:
    await store_files(objects, 3, 10)
    listed = sorted(
        [info async for info in objects.list_objects(f"{FILES}/")], key=lambda i: i.modified
    )
    now = listed[-1].modified + 100
    report = await prune_bucket(objects, max_bytes=None, older_than=100, now=now)
    assert report.removed == 2
    assert await names(objects, f"{FILES}/") == [listed[-1].name]


# -- stats -------------------------------------------------------------------------------


async def test_stats_counts_files_pages_and_leases(
    aiohttp_client: AiohttpClient,
    fake: FakeIndex,
    location: Location,
    objects: ObjectStore,
    tmp_path: Path,
) -> None:
    wheels = await fill(aiohttp_client, fake, location, tmp_path)
    live = Leases(objects, "replica-a", ttl=60)
    assert await live.acquire("files/one") is not None
    dead = Leases(objects, "replica-b", ttl=60, clock=lambda: time.time() - 3600)
    assert await dead.acquire("files/two") is not None

    stats = await bucket_stats(objects)

    assert stats.files == 2
    assert stats.size_bytes == sum(f.size for f in wheels)
    assert stats.pages == len(await names(objects, f"{RECORDS}/")) >= 2
    assert stats.page_bytes > 0
    assert (stats.leases_in_flight, stats.leases_expired) == (1, 1)
    assert stats.oldest_file is not None
    assert abs(stats.oldest_file - time.time()) < 600
    assert stats.to_dict()["leases"] == {"in_flight": 1, "expired": 1}


# -- the commands, end to end --------------------------------------------------------------


def cacheproxy(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cacheproxy", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
    )


async def test_the_commands_on_a_store(
    aiohttp_client: AiohttpClient,
    fake: FakeIndex,
    location: Location,
    objects: ObjectStore,
    seaweedfs: SeaweedFS,
    tmp_path: Path,
) -> None:
    alpha, beta = await fill(aiohttp_client, fake, location, tmp_path)
    await objects.put(file_object(alpha.sha256), b"bit rot")
    env = isolated_environment(tmp_path, seaweedfs.environment())
    env["CACHEPROXY_CACHE_DIR"] = str(tmp_path / "no-local-tier")  # an operator's machine
    store = ["--storage", str(location)]

    verify = await asyncio.to_thread(cacheproxy, env, "verify", *store)
    assert verify.returncode == 1, verify.stderr
    bad = f"{location}/{file_object(alpha.sha256)}"
    assert f"corrupt, removed: {bad} (sha256 " in verify.stdout
    assert (verify.stdout + verify.stderr).count(alpha.sha256) == 1
    assert "no local tier at" in verify.stdout
    assert f"in {location}: 1 corrupt and removed" in verify.stdout
    assert verify.stderr == ""
    assert (await asyncio.to_thread(cacheproxy, env, "verify", *store)).returncode == 0

    # In a replica, whose cache directory is its local tier: both are checked and counted.
    env["CACHEPROXY_CACHE_DIR"] = str(tmp_path / "replica")
    both = await asyncio.to_thread(cacheproxy, env, "verify", *store)
    assert both.returncode == 0, both.stdout + both.stderr
    local_line, store_line = both.stdout.splitlines()
    assert local_line.startswith(f"verify: local tier {tmp_path / 'replica'}: verified 2 file(s)")
    assert store_line.startswith("verify: verified 1 file(s)")
    stats_both = await asyncio.to_thread(cacheproxy, env, "stats", *store, "--json")
    assert stats_both.returncode == 0, stats_both.stderr
    document = json.loads(stats_both.stdout)
    assert document["cache_dir"] == str(tmp_path / "replica")
    assert document["store"]["files"] == 1
    env["CACHEPROXY_CACHE_DIR"] = str(tmp_path / "no-local-tier")

    # CACHEPROXY_STORAGE, as a replica's environment sets it.
    env["CACHEPROXY_STORAGE"] = str(location)
    stats = await asyncio.to_thread(cacheproxy, env, "stats", "--json")
    assert stats.returncode == 0, stats.stderr
    figures = json.loads(stats.stdout)["store"]
    assert (figures["files"], figures["size_bytes"]) == (1, beta.size)
    assert figures["location"] == str(location)
    text = await asyncio.to_thread(cacheproxy, env, "stats")
    rows = dict(re.split(r"\s{2,}", line, maxsplit=1) for line in text.stdout.splitlines())
    assert rows["store"] == str(location)
    assert rows["store files"].startswith("1 (")
    assert rows["store leases"] == "0 in flight"

    # A replica's local limit (CACHEPROXY_MAX_SIZE) is not the bucket's.
    env["CACHEPROXY_MAX_SIZE"] = "1"
    kept = await asyncio.to_thread(cacheproxy, env, "prune", "--older-than", "30d")
    assert kept.returncode == 0, kept.stderr
    assert "removed 0 file(s)" in kept.stdout
    share = await asyncio.to_thread(cacheproxy, env, "prune", "--max-size", "20%")
    assert share.returncode == 2
    assert share.stdout == ""
    assert share.stderr.startswith("cacheproxy: error: --max-size 20%: ")
    assert share.stderr.count("\n") == 1
    # In a replica's pod (the environment names the bucket), --storage local prunes the
    # replica's local tier (whose just-used files it keeps) and leaves the bucket alone.
    env["CACHEPROXY_CACHE_DIR"] = str(tmp_path / "replica")
    local = await asyncio.to_thread(
        cacheproxy, env, "prune", "--storage", "local", "--max-size", "1"
    )
    assert local.returncode == 0, local.stderr
    assert "cache now 0.00 GB in 2 file(s)" in local.stdout  # the local tier's two files
    assert len(await names(objects, f"{FILES}/")) == 1
    env["CACHEPROXY_CACHE_DIR"] = str(tmp_path / "no-local-tier")
    pruned = await asyncio.to_thread(cacheproxy, env, "prune", "--max-size", "1")
    assert pruned.returncode == 0, pruned.stderr
    assert "removed 1 file(s)" in pruned.stdout
    assert await names(objects, f"{FILES}/") == []
    assert await names(objects, f"{RECORDS}/")  # pages stay


@pytest.mark.parametrize("verb", [["verify"], ["prune", "--older-than", "1d"], ["stats"]])
def test_an_unreachable_store_is_one_line_and_a_failure(verb: list[str], tmp_path: Path) -> None:
    env = isolated_environment(
        tmp_path,
        {
            "AWS_ACCESS_KEY_ID": "k",
            "AWS_SECRET_ACCESS_KEY": "s",
            "AWS_REGION": "us-east-1",
            "AWS_ENDPOINT_URL_S3": f"http://127.0.0.1:{free_port()}",  # nobody listens
            "CACHEPROXY_CACHE_DIR": str(tmp_path / "none"),
        },
    )
    done = cacheproxy(env, *verb, "--storage", "s3://bucket/prefix")
    assert done.returncode == 1
    assert done.stderr.startswith("cacheproxy: error: object store ")
    assert "cannot connect to the endpoint" in done.stderr
    assert done.stderr.count("\n") == 1
    assert "Traceback" not in done.stdout + done.stderr


def test_local_maintenance_never_imports_the_object_store_client(tmp_path: Path) -> None:
    # An install without the s3 extra has no aiobotocore: the local verbs must not need it.
    (tmp_path / "cache").mkdir()
    code = (
        "import sys; from cacheproxy.cli.main import main; "
        f"codes = [main([v, '--cache-dir', {str(tmp_path / 'cache')!r}]) for v in "
        "('verify', 'stats')]; "
        "assert codes == [0, 0], codes; "
        "assert not {'aiobotocore', 'botocore'} & set(sys.modules), 'imported'"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
