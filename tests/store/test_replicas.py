"""Replicas sharing one cache on a real S3-compatible store (SeaweedFS on loopback).

Each replica is the real proxy app with its own empty cache directory (its local tier) and
the same bucket prefix; the fake index's request log proves what reached upstream.
"""

import asyncio
import hashlib
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from conftest import Dists, make_settings
from fakeindex import FakeIndex
from pytest_aiohttp import AiohttpClient
from seaweed import SeaweedFS, aws_environment
from yarl import URL

from cacheproxy.store.objectstore import ObjectStore
from cacheproxy.store.shared import file_object, record_object
from cacheproxy.urls import Location
from cacheproxy.web.app import create_app
from cacheproxy.web.keys import proxy_key

Client = TestClient[web.Request, web.Application]
Replica = Callable[..., Awaitable[Client]]


@pytest.fixture
def location(seaweedfs: SeaweedFS, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Location:
    aws_environment(monkeypatch, tmp_path, seaweedfs.environment())
    return Location(seaweedfs.bucket, f"replicas/{uuid.uuid4().hex}")


@pytest.fixture
async def objects(location: Location) -> AsyncIterator[ObjectStore]:
    async with ObjectStore.connect(location) as store:
        yield store


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
    storage = client.app[proxy_key].storage
    for _ in range(200):
        pending = [*storage._publishing.values(), *storage._tasks]  # type: ignore[attr-defined]
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
