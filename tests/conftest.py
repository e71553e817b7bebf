"""Fixtures: real small distributions, a populated fake upstream, and the real proxy."""

import contextlib
import logging
import os
import shutil
import sys
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from distbuild import build_sdist, build_wheel
from fakeindex import FakeIndex
from hypothesis import HealthCheck
from hypothesis import settings as hypothesis_settings
from pytest_aiohttp import AiohttpClient, AiohttpServer
from seaweed import EngineUnavailable, SeaweedFS, aws_environment, running
from yarl import URL

from cacheproxy.settings import Settings
from cacheproxy.store.objectstore import ObjectStore
from cacheproxy.urls import Location
from cacheproxy.web.app import create_app

# The property tests check what is generated, not how fast: on a loaded 2-core machine
# generating a large page may take over a second, which is not a failure.
hypothesis_settings.register_profile(
    "cacheproxy", suppress_health_check=[HealthCheck.too_slow], deadline=None
)
hypothesis_settings.load_profile("cacheproxy")


@dataclass(frozen=True)
class Dists:
    """Paths of the distributions every test can publish."""

    alpha: Path  # alpha 1.0, requires beta>=1
    alpha_sdist: Path
    beta1: Path
    beta2: Path  # published yanked, with a reason that ends in a space
    gamma: Path  # a local version: gamma-0.1+abc (a '+' in the filename)
    big: Path  # ~3 MB, incompressible: long enough to stream in many chunks
    nometa: Path  # published without PEP 658 metadata


@pytest.fixture(scope="session")
def dists(tmp_path_factory: pytest.TempPathFactory) -> Dists:
    out = tmp_path_factory.mktemp("dists")
    return Dists(
        alpha=build_wheel(out, "alpha", "1.0", requires=["beta>=1"], requires_python=">=3.8"),
        alpha_sdist=build_sdist(out, "alpha", "1.0"),
        beta1=build_wheel(out, "beta", "1.0"),
        beta2=build_wheel(out, "beta", "2.0"),
        gamma=build_wheel(out, "gamma", "0.1+abc"),
        big=build_wheel(out, "big", "1.0", pad_bytes=3 * 1024 * 1024),
        nometa=build_wheel(out, "nometa", "1.0"),
    )


YANK_REASON = "Yanked due to conflicts with CVE-2024-35195 mitigation "


def populate(fake: FakeIndex, dists: Dists) -> None:
    fake.add_file("alpha", dists.alpha)
    fake.add_file("alpha", dists.alpha_sdist, requires_python=">=3.8")
    fake.add_file("beta", dists.beta1)
    fake.add_file("beta", dists.beta2, yanked=YANK_REASON)
    fake.add_file("gamma", dists.gamma)
    fake.add_file("big", dists.big)
    fake.add_file("nometa", dists.nometa, metadata=False)


@pytest.fixture
async def fake(aiohttp_server: AiohttpServer, dists: Dists) -> FakeIndex:
    index = FakeIndex()
    populate(index, dists)
    await index.start(aiohttp_server)
    return index


def make_settings(cache_dir: Path, upstream: str, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "cache_dir": cache_dir,
        "upstream": URL(upstream),
        "failure_backoff": 0.0,  # tests decide when upstream is asked again
        "retries": 0,  # retry tests ask for them; the rest see each fault once
        "connect_timeout": 2.0,
        "read_timeout": 2.0,
        "page_timeout": 2.0,
    }
    values.update(overrides)
    return Settings(**values)


ProxyFactory = Callable[..., Awaitable[TestClient[web.Request, web.Application]]]


@pytest.fixture
def cache_dir(tmp_path: Path) -> Path:
    return tmp_path / "cache"


@pytest.fixture
def make_proxy(aiohttp_client: AiohttpClient, fake: FakeIndex, cache_dir: Path) -> ProxyFactory:
    """Start a proxy app (as a test client) on ``cache_dir``; call again to "restart"."""

    async def factory(**overrides: Any) -> TestClient[web.Request, web.Application]:
        settings = make_settings(cache_dir, fake.index_url, **overrides)
        return await aiohttp_client(create_app(settings))

    return factory


@pytest.fixture
async def proxy(make_proxy: ProxyFactory) -> TestClient[web.Request, web.Application]:
    return await make_proxy()


@pytest.fixture
async def proxy_server(
    aiohttp_server: AiohttpServer, fake: FakeIndex, cache_dir: Path
) -> TestServer:
    """The proxy on a real loopback port, for real pip/uv subprocesses."""
    return await aiohttp_server(create_app(make_settings(cache_dir, fake.index_url)))


def client_env(tmp: Path) -> dict[str, str]:
    """An environment that isolates pip and uv from this machine's configuration."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PIP_", "UV_"))}
    env.update(
        PIP_CONFIG_FILE=os.devnull,
        PIP_DISABLE_PIP_VERSION_CHECK="1",
        PIP_NO_INPUT="1",
        UV_NO_CONFIG="1",
        UV_CACHE_DIR=str(tmp / "uv-cache"),
        UV_PYTHON_DOWNLOADS="never",
        XDG_CACHE_HOME=str(tmp / "xdg-cache"),
        HOME=str(tmp / "home"),
    )
    return env


def uv_binary() -> str:
    found = shutil.which("uv", path=str(Path(sys.executable).parent)) or shutil.which("uv")
    if found is None:
        pytest.fail("uv is not installed: it is part of the test extra (pip install -e '.[test]')")
    return found


def temporaries(cache_dir: Path) -> list[Path]:
    """Downloads in progress (or left behind) in the cache's tmp/.

    Page bodies being written in the background (storage.PAGE_TEMP_PREFIX) are not
    downloads: one may exist for a moment after any page miss.
    """
    tmp = cache_dir / "tmp"
    if not tmp.exists():
        return []
    return [p for p in tmp.iterdir() if p.name != "locks" and not p.name.startswith("page-")]


@pytest.fixture(scope="session")
def seaweedfs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SeaweedFS]:
    """A real SeaweedFS on loopback, started once per session by the first test asking."""
    with contextlib.ExitStack() as stack:
        try:
            server = stack.enter_context(running(tmp_path_factory.mktemp("seaweedfs")))
        except EngineUnavailable as exc:
            pytest.skip(f"SeaweedFS cannot start here: {exc}")
        yield server


@pytest.fixture(autouse=True)
def _root_logging_restored() -> Iterator[None]:
    """A test that runs ``cacheproxy serve`` in-process (cli/log.configure_logging) points
    the root logger at that test's captured stderr; restore it, or later tests' threads log
    into a closed stream ("Logging error ... I/O operation on closed file")."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


@pytest.fixture
def location(seaweedfs: SeaweedFS, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Location:
    """A fresh prefix in the test bucket; the standard AWS variables point at SeaweedFS
    (and at nothing else: no profile, no files), as they would in production."""
    aws_environment(monkeypatch, tmp_path, seaweedfs.environment())
    return Location(seaweedfs.bucket, f"t/{uuid.uuid4().hex}")


@pytest.fixture
async def objects(location: Location) -> AsyncIterator[ObjectStore]:
    """The test's prefix of the bucket, to look at what replicas wrote."""
    async with ObjectStore.connect(location) as store:
        yield store
