"""Real pip and uv through one routed index URL, and a two-tier chain of real processes.

The routed project comes from the second fake index only (the first carries an impostor of
the same name at a higher version: the dependency-confusion setup); the fakes' request logs
prove the first index was never asked for it. The chain is a build-host sidecar in front of
a team index, both real ``cacheproxy serve`` processes, which must keep serving when the
team index goes down.
"""

import asyncio
import hashlib
import os
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from aiohttp.test_utils import TestServer
from clients import installed, pip_cmd, run, uv_cmd
from conftest import make_settings
from distbuild import build_wheel
from fakeindex import FakeIndex
from processes import free_port, wait_healthy
from pytest_aiohttp import AiohttpServer
from yarl import URL

from cacheproxy.indexes import IndexConfig, Route
from cacheproxy.web.app import create_app


@pytest.fixture(scope="session")
def acme_wheels(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("acme-clients")
    return {
        "ours": build_wheel(out, "acme-lib", "1.0", requires=["beta>=1"]),
        "impostor": build_wheel(out, "acme-lib", "99.0"),
    }


@pytest.fixture
async def private(aiohttp_server: AiohttpServer, acme_wheels: dict[str, Path]) -> FakeIndex:
    index = FakeIndex()
    index.add_file("acme-lib", acme_wheels["ours"])
    await index.start(aiohttp_server)
    return index


@pytest.fixture
async def routed_server(
    aiohttp_server: AiohttpServer,
    fake: FakeIndex,
    private: FakeIndex,
    acme_wheels: dict[str, Path],
    cache_dir: Path,
) -> TestServer:
    fake.add_file("acme-lib", acme_wheels["impostor"])
    indexes = (
        IndexConfig(name="pypi", url=URL(fake.index_url)),
        IndexConfig(name="acme", url=URL(private.index_url)),
    )
    settings = make_settings(
        cache_dir, fake.index_url, indexes=indexes, routes=(Route("acme-*", "acme"),)
    )
    return await aiohttp_server(create_app(settings))


@pytest.mark.clients
@pytest.mark.parametrize("tool", ["pip", "uv"])
async def test_clients_install_a_routed_project_beside_unrouted_ones(
    tool: str, routed_server: TestServer, fake: FakeIndex, private: FakeIndex, tmp_path: Path
) -> None:
    index = str(routed_server.make_url("/simple/"))
    make = pip_cmd if tool == "pip" else uv_cmd
    target = tmp_path / "t"
    await run(make(index, target, "acme-lib", "alpha"), tmp_path)
    assert installed(target) == {"acme_lib", "alpha", "beta"}
    assert (target / "acme_lib" / "__init__.py").read_text().strip() == '__version__ = "1.0"'
    # The default index was never asked for the routed name, page or file ...
    assert fake.page_gets("acme-lib") == []
    assert [r for r in fake.file_gets() if "acme" in r.path] == []
    # ... and the routed index only for it.
    assert {r.path for r in private.page_gets()} == {"/simple/acme-lib/"}
    assert [r.path.rsplit("/", 1)[-1] for r in private.file_gets()] == [
        "acme_lib-1.0-py3-none-any.whl"
    ]


async def serve(*args: str, env: dict[str, str] | None = None) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "cacheproxy", "serve", *args,
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
        env=None if env is None else {**os.environ, **env},
    )  # fmt: skip


async def stop(proc: asyncio.subprocess.Process) -> str:
    if proc.returncode is None:
        proc.terminate()
    _out, err = await asyncio.wait_for(proc.communicate(), 30)
    return err.decode(errors="replace")


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


def stored(cache: Path) -> list[Path]:
    return [p for p in (cache / "files").rglob("*") if p.is_file()]


@pytest.mark.clients
async def test_two_tiers_survive_the_team_index_going_down(
    fake: FakeIndex,
    private: FakeIndex,
    acme_wheels: dict[str, Path],
    session: aiohttp.ClientSession,
    tmp_path: Path,
) -> None:
    """fake + private ← team index (routes) ← build-host sidecar ← pip."""
    fake.add_file("acme-lib", acme_wheels["impostor"])
    team_port, side_port = free_port(), free_port()
    team_url = f"http://127.0.0.1:{team_port}"
    side_url = f"http://127.0.0.1:{side_port}"
    # The private index's credentials from the config file and the environment: never in
    # the command line (ps), the log, pages or errors.
    secret = "team-token-5f1e2d"
    config = tmp_path / "team.toml"
    config.write_text(
        f'[[index]]\nname = "pypi"\nurl = "{fake.index_url}"\n\n'
        f'[[index]]\nname = "acme"\nurl = "{private.index_url}"\n'
        'username = "ci"\npassword_env = "ACME_TOKEN"\n\n'
        '[routes]\n"acme-*" = "acme"\n'
    )
    team_args = ["--port", str(team_port), "--cache-dir", str(tmp_path / "team")]
    team = await serve(*team_args, "--config", str(config), env={"ACME_TOKEN": secret})
    # The sidecar revalidates every page (TTL 0), so the outage below is really met.
    side = await serve(
        "--port", str(side_port), "--cache-dir", str(tmp_path / "side"),
        "--upstream", f"{team_url}/simple/", "--index-ttl", "0",
    )  # fmt: skip
    try:
        await wait_healthy(session, team_url)
        await wait_healthy(session, side_url)
        json_accept = {"Accept": "application/vnd.pypi.simple.v1+json"}
        # The team index's hashes and attributes reach the sidecar's clients unchanged.
        async with session.get(f"{side_url}/simple/acme-lib/", headers=json_accept) as resp:
            assert resp.status == 200
            doc = await resp.json(content_type=None)
        ours = private.files("acme-lib")[0]
        (entry,) = doc["files"]
        assert entry["hashes"] == {"sha256": ours.sha256}
        assert entry["core-metadata"] == {"sha256": ours.metadata_sha256}
        assert entry["size"] == ours.size
        assert entry["upload-time"] == ours.upload_time
        target = tmp_path / "cold"
        await run(pip_cmd(f"{side_url}/simple/", target, "acme-lib", "alpha"), tmp_path)
        assert installed(target) == {"acme_lib", "alpha", "beta"}
        # Each tier stored each file once; upstream was asked once per file.
        assert len(private.file_gets(ours.filename)) == 1
        assert fake.page_gets("acme-lib") == []
        for cache in (tmp_path / "team", tmp_path / "side"):
            names = {p.name for p in stored(cache)}
            assert ours.sha256 in names
            assert len(stored(cache)) == len(names)
        assert all("authorization" in r.headers for r in private.page_gets("acme-lib"))
        assert not any("authorization" in r.headers for r in fake.requests)
        # The team index goes down: the sidecar keeps serving what it has.
        team_log = await stop(team)
        assert "index acme: " in team_log
        assert secret not in team_log
        fake.clear_log()
        private.clear_log()
        warm = tmp_path / "warm"
        await run(pip_cmd(f"{side_url}/simple/", warm, "acme-lib", "alpha"), tmp_path)
        assert installed(warm) == installed(target)
        async with session.get(f"{side_url}/simple/acme-lib/") as resp:
            assert resp.status == 200
            assert resp.headers["X-Cache"] == "STALE"
        link = str(URL(f"{side_url}/simple/acme-lib/").join(URL(entry["url"])))
        async with session.get(link) as resp:
            assert resp.status == 200
            assert hashlib.sha256(await resp.read()).hexdigest() == ours.sha256
        assert fake.requests == []
        assert private.requests == []
    finally:
        for proc in (side, team):
            log = await stop(proc)
            assert "Traceback" not in log, log[-3000:]
