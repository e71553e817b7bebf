"""``cacheproxy dockerfile --auth-secret ID``: for a proxy that needs a user, the install
step reads a netrc file from a BuildKit secret mount (never in a layer or the history).

Golden files as in test_snippets.py (``CACHEPROXY_UPDATE_GOLDEN=1`` regenerates them). The
mechanism the lines rely on, NETRC naming the mounted file, is checked with real pip and uv
against a proxy with ``--auth-reads``.
"""

import asyncio
import os
import sys
from pathlib import Path

import pytest
from aiohttp.test_utils import TestServer
from clients import installed
from conftest import client_env, make_settings, uv_binary
from fakeindex import FakeIndex
from hostedutil import PASSWORD, write_users
from pytest_aiohttp import AiohttpServer

from cacheproxy.cli.main import main
from cacheproxy.docker.snippets import Identity, Reach, Step, Tool, make_target, render_snippet
from cacheproxy.docker.syntax import escape_char, split_instructions
from cacheproxy.errors import ConfigError
from cacheproxy.web.app import create_app

SECRET = "cacheproxy-netrc"
# The golden files live beside test_snippets.py's, regenerated the same way.
GOLDEN = Path(__file__).parent / "dockerfiles" / "snippets"
UPDATE = bool(os.environ.get("CACHEPROXY_UPDATE_GOLDEN"))
TARGETS = {
    "gateway-ip": make_target(
        Reach.GATEWAY_IP, gateway="172.17.0.1", gateway_note="from the local Docker engine"
    ),
    "url": make_target(Reach.URL, proxy_url="https://pypi-cache.example.com/simple/"),
}


def _golden(name: str, text: str) -> None:
    path = GOLDEN / name
    if UPDATE:
        path.write_text(text)
    assert path.exists(), f"no golden file {path}: run with CACHEPROXY_UPDATE_GOLDEN=1"
    assert text == path.read_text()


@pytest.mark.parametrize("tool", [Tool.PIP, Tool.UV, Tool.POETRY])
def test_golden_with_secret(tool: Tool) -> None:
    step = Step(tool=tool, secret=SECRET)
    _golden(f"{tool}-url-secret.Dockerfile", render_snippet(step, TARGETS["url"]))


def test_golden_non_root_secret_is_readable_by_the_user() -> None:
    step = Step(tool=Tool.UV, secret=SECRET, ident=Identity(uid=1000, home="/home/app"))
    text = render_snippet(step, TARGETS["gateway-ip"])
    _golden("uv-uid1000-secret.Dockerfile", text)
    assert f"--mount=type=secret,id={SECRET},required=true,uid=1000,gid=1000" in text


@pytest.mark.parametrize("tool", [Tool.PIP, Tool.UV, Tool.POETRY])
def test_secret_lines_keep_the_rules(tool: Tool) -> None:
    text = render_snippet(Step(tool=tool, secret=SECRET), TARGETS["url"])
    lines = text.splitlines(keepends=True)
    instructions = split_instructions(lines, escape_char(lines))
    run = "".join(lines[instructions[-1].start : instructions[-1].end])
    assert f"--mount=type=secret,id={SECRET},required=true" in run
    assert f"NETRC=/run/secrets/{SECRET}" in run
    assert "PASSWORD" not in run  # only the comment shows the netrc format
    assert not any(line.startswith(("ENV", "ARG")) for line in lines)


def test_secret_parses_in_buildkit() -> None:
    dockerfile = pytest.importorskip("dockerfile", reason="BuildKit's parser")
    text = "FROM scratch\n" + render_snippet(Step(secret=SECRET), TARGETS["url"])
    run = dockerfile.parse_string(text)[-1]
    assert f"--mount=type=secret,id={SECRET},required=true" in run.flags


def test_secret_refusals(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(ConfigError, match="pdm does not read netrc"):
        render_snippet(Step(tool=Tool.PDM, secret=SECRET), TARGETS["url"])
    with pytest.raises(ConfigError, match="secret id"):
        render_snippet(Step(secret="a b"), TARGETS["url"])
    argv = ["dockerfile", "--proxy-url", "https://idx.example.com", "--auth-secret", "x y"]
    assert main(argv) == 2
    assert capsys.readouterr().err.count("\n") == 1


@pytest.fixture
async def locked_proxy(
    aiohttp_server: AiohttpServer, fake: FakeIndex, cache_dir: Path, tmp_path: Path
) -> TestServer:
    users = write_users(tmp_path / "users", "builder")
    settings = make_settings(cache_dir, fake.index_url, users_file=users, auth_reads=True)
    return await aiohttp_server(create_app(settings))


@pytest.mark.clients
@pytest.mark.parametrize("tool", ["pip", "uv"])
async def test_netrc_named_by_NETRC_logs_the_step_in(
    tool: str, locked_proxy: TestServer, tmp_path: Path
) -> None:
    """What the generated RUN step does, outside Docker: NETRC names the mounted file."""
    netrc = tmp_path / "secret"
    netrc.write_text(f"machine 127.0.0.1 login builder password {PASSWORD}\n")
    netrc.chmod(0o600)
    index = str(locked_proxy.make_url("/simple/"))
    target = tmp_path / "target"
    if tool == "pip":
        cmd = [sys.executable, "-m", "pip", "install", "--no-cache-dir", "--target", str(target)]
        env_index = {"PIP_INDEX_URL": index}
    else:
        cmd = [uv_binary(), "pip", "install", "--no-cache", "--python", sys.executable]
        cmd += ["--target", str(target)]
        env_index = {"UV_DEFAULT_INDEX": index}
    for with_secret in (False, True):
        env = {**client_env(tmp_path), **env_index}
        if with_secret:
            env["NETRC"] = str(netrc)
        proc = await asyncio.create_subprocess_exec(
            *cmd, "alpha", env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
        )
        out, _ = await asyncio.wait_for(proc.communicate(), 120)
        assert (proc.returncode == 0) == with_secret, out.decode(errors="replace")
    assert installed(target) == {"alpha", "beta"}
