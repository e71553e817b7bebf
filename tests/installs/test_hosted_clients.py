"""Real publishing clients against a hosted index: twine and ``uv publish`` upload, pip
and uv install the result through ``/simple/`` next to proxied projects."""

import asyncio
import sys
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestServer
from clients import installed, pip_cmd
from conftest import client_env, make_settings, uv_binary
from distbuild import build_sdist, build_wheel
from fakeindex import FakeIndex
from hostedutil import PASSWORD, write_users
from pytest_aiohttp import AiohttpServer

from cacheproxy.web.app import create_app

pytestmark = pytest.mark.clients


async def run(cmd: list[str], tmp: Path, *, ok: bool = True) -> str:
    proc = await asyncio.create_subprocess_exec(
        *cmd,
        env=client_env(tmp),
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await asyncio.wait_for(proc.communicate(), timeout=120)
    text = out.decode(errors="replace")
    assert (proc.returncode == 0) == ok, f"{cmd[:4]} exited {proc.returncode}:\n{text}"
    return text


def twine(url: str, *files: Path, user: str = "alice", password: str = PASSWORD) -> list[str]:
    return [
        sys.executable, "-m", "twine", "upload", "--repository-url", url, "--non-interactive",
        "--disable-progress-bar", "-u", user, "-p", password, *map(str, files),
    ]  # fmt: skip


def uv_publish(url: str, *files: Path, user: str = "alice") -> list[str]:
    return [
        uv_binary(), "publish", "--publish-url", url, "--username", user,
        "--password", PASSWORD, "--trusted-publishing", "never", *map(str, files),
    ]  # fmt: skip


@pytest.fixture
async def team_server(
    aiohttp_server: AiohttpServer, fake: FakeIndex, cache_dir: Path, tmp_path: Path
) -> TestServer:
    users = write_users(tmp_path / "users", "alice", "bob")
    settings = make_settings(
        cache_dir,
        fake.index_url,
        hosted=("team", "ops"),
        uploaders={"ops": ("bob",)},
        users_file=users,
    )
    return await aiohttp_server(create_app(settings))


async def test_twine_upload_then_pip_installs_next_to_proxied(
    team_server: TestServer, fake: FakeIndex, tmp_path: Path
) -> None:
    dists = tmp_path / "dists"
    wheel = build_wheel(dists, "teampkg", "1.0", requires=["beta>=1"], requires_python=">=3.8")
    sdist = build_sdist(dists, "teampkg", "1.0")
    upload_url = str(team_server.make_url("/index/team/"))
    out = await run(twine(upload_url, wheel, sdist), tmp_path)
    assert "teampkg-1.0" in out
    # twine --skip-existing aside, the same bytes again are accepted (idempotent).
    await run(twine(upload_url, wheel), tmp_path)
    index = str(team_server.make_url("/simple/"))
    target = tmp_path / "target"
    await run(pip_cmd(index, target, "teampkg"), tmp_path)
    assert installed(target) == {"teampkg", "beta"}  # beta came through the proxy
    assert len(fake.file_gets("beta-1.0-py3-none-any.whl")) == 1
    assert [r for r in fake.requests if "teampkg" in r.path] == []


async def test_twine_refusals_are_printed(team_server: TestServer, tmp_path: Path) -> None:
    wheel = build_wheel(tmp_path / "dists", "opstool", "1.0")
    ops = str(team_server.make_url("/index/ops/"))
    out = await run(twine(ops, wheel, user="alice"), tmp_path, ok=False)
    assert "user alice may not upload to index ops" in out
    out = await run(twine(ops, wheel, user="bob", password="wrong"), tmp_path, ok=False)
    assert "wrong user name or password" in out
    await run(twine(ops, wheel, user="bob"), tmp_path)
    other = build_wheel(tmp_path / "other", "opstool", "1.0", pad_bytes=100)
    out = await run(twine(ops, other, user="bob"), tmp_path, ok=False)
    assert "File already exists" in out


async def test_uv_publish_then_uv_installs(team_server: TestServer, tmp_path: Path) -> None:
    dists = tmp_path / "dists"
    wheel = build_wheel(dists, "uvpkg", "2.0", requires=["gamma"])
    sdist = build_sdist(dists, "uvpkg", "2.0")
    publish = uv_publish(str(team_server.make_url("/index/team/")), wheel, sdist)
    await run(publish, tmp_path)
    # uv's --check-url reads the hosted index's own simple page to skip what is there.
    check = ["--check-url", str(team_server.make_url("/index/team/simple/"))]
    out = await run([*publish, *check], tmp_path)
    assert "already exists" in out.lower() or "skipping" in out.lower(), out
    target = tmp_path / "target"
    cmd: list[Any] = [
        uv_binary(), "pip", "install", "--no-cache", "--index-url",
        str(team_server.make_url("/simple/")), "--python", sys.executable,
        "--target", str(target), "uvpkg",
    ]  # fmt: skip
    await run(cmd, tmp_path)
    assert installed(target) == {"uvpkg", "gamma"}


async def test_pip_gets_the_hosted_project_not_the_public_one(
    team_server: TestServer, fake: FakeIndex, tmp_path: Path
) -> None:
    # Upstream has alpha 1.0; the team publishes its own "alpha": only that one is seen.
    wheel = build_wheel(tmp_path / "dists", "alpha", "0.5")
    await run(twine(str(team_server.make_url("/index/team/")), wheel), tmp_path)
    target = tmp_path / "target"
    await run(pip_cmd(str(team_server.make_url("/simple/")), target, "alpha"), tmp_path)
    assert installed(target) == {"alpha"}  # upstream's alpha 1.0 would pull in beta
    assert (target / "alpha" / "__init__.py").read_text().strip() == '__version__ = "0.5"'
    assert [r for r in fake.requests if "alpha" in r.path] == []


async def test_auth_reads_pip_and_uv_with_credentials_in_the_url(
    aiohttp_server: AiohttpServer, fake: FakeIndex, cache_dir: Path, tmp_path: Path
) -> None:
    users = write_users(tmp_path / "users", "alice")
    settings = make_settings(cache_dir, fake.index_url, users_file=users, auth_reads=True)
    server = await aiohttp_server(create_app(settings))
    plain = str(server.make_url("/simple/"))
    out = await run(pip_cmd(plain, tmp_path / "none", "gamma"), tmp_path, ok=False)
    assert "No matching distribution found for gamma" in out  # pip saw a 401 (non-interactive)
    with_user = plain.replace("://", f"://alice:{PASSWORD}@")
    await run(pip_cmd(with_user, tmp_path / "pip", "alpha"), tmp_path)
    assert installed(tmp_path / "pip") == {"alpha", "beta"}
    cmd = [
        uv_binary(), "pip", "install", "--no-cache", "--index-url", with_user,
        "--python", sys.executable, "--target", str(tmp_path / "uv"), "gamma",
    ]  # fmt: skip
    await run(cmd, tmp_path)
    assert installed(tmp_path / "uv") == {"gamma"}
