"""The snippet renderer: golden output for every tool x reachability mode, and the rules
each snippet must keep, checked on the text itself.

Regenerate the golden files after an intended change with
``CACHEPROXY_UPDATE_GOLDEN=1 pytest tests/docker/test_snippets.py`` and review the diff.
"""

import asyncio
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from aiohttp.test_utils import TestServer
from conftest import client_env
from fakeindex import FakeIndex

from cacheproxy.docker.rewrite import rewrite
from cacheproxy.docker.snippets import (
    DEFAULT_GATEWAY,
    Identity,
    Reach,
    Step,
    Target,
    Tool,
    build_flags,
    cache_mount,
    make_target,
    normalise_proxy_url,
    render_snippet,
)
from cacheproxy.docker.syntax import escape_char, logical_text, split_instructions
from cacheproxy.errors import ConfigError

GOLDEN = Path(__file__).parent / "dockerfiles" / "snippets"
UPDATE = bool(os.environ.get("CACHEPROXY_UPDATE_GOLDEN"))

TARGETS = {
    "gateway-ip": make_target(
        Reach.GATEWAY_IP, gateway="172.17.0.1", gateway_note="from the local Docker engine"
    ),
    "host-gateway": make_target(Reach.HOST_GATEWAY),
    "host-network": make_target(Reach.HOST_NETWORK),
    "url": make_target(Reach.URL, proxy_url="https://pypi-cache.example.com/simple/"),
}
CASES = [(tool, mode) for tool in Tool for mode in TARGETS]


def _golden(name: str, text: str) -> None:
    path = GOLDEN / name
    if UPDATE:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    assert path.exists(), f"no golden file {path}: run with CACHEPROXY_UPDATE_GOLDEN=1"
    assert text == path.read_text()


@pytest.mark.parametrize(("tool", "mode"), CASES)
def test_golden(tool: Tool, mode: str) -> None:
    _golden(f"{tool}-{mode}.Dockerfile", render_snippet(Step(tool=tool), TARGETS[mode]))


def test_golden_non_root_packages() -> None:
    ident = Identity(uid=1000, gid=1000, home="/home/app")
    step = Step(tool=Tool.PIP, packages=("requests==2.32.3", "rich"), ident=ident)
    _golden("pip-uid1000-packages.Dockerfile", render_snippet(step, TARGETS["gateway-ip"]))


@pytest.mark.parametrize(("tool", "mode"), CASES)
def test_snippet_parses_and_keeps_the_rules(tool: Tool, mode: str) -> None:
    text = render_snippet(Step(tool=tool), TARGETS[mode])
    lines = text.splitlines(keepends=True)
    instructions = split_instructions(lines, escape_char(lines))
    assert [i.keyword for i in instructions] == ["COPY", "RUN"]
    run = "".join(lines[instructions[1].start : instructions[1].end])
    assert run.startswith("RUN --mount=type=cache,")
    # No syntax line (it pulls an image: air-gapped builds fail); nothing through ENV (it
    # would stay in the image).
    assert "# syntax" not in text
    assert not any(line.startswith(("ENV", "ARG")) for line in lines)
    assert TARGETS[mode].index_url in run


@pytest.mark.parametrize(("tool", "mode"), CASES)
def test_snippet_parses_in_buildkit(tool: Tool, mode: str) -> None:
    dockerfile = pytest.importorskip(
        "dockerfile", reason="BuildKit's parser: pip install dockerfile"
    )
    text = "FROM scratch\n" + render_snippet(Step(tool=tool), TARGETS[mode])
    commands = dockerfile.parse_string(text)
    assert [c.cmd.upper() for c in commands] == ["FROM", "COPY", "RUN"]
    assert any(f.startswith("--mount=type=cache,id=cacheproxy-") for f in commands[2].flags)


@pytest.mark.parametrize("tool", [Tool.PIP, Tool.UV])
@pytest.mark.parametrize("mode", list(TARGETS))
def test_rewrite_finds_nothing_to_add_to_a_snippet(tool: Tool, mode: str) -> None:
    # The two generators agree: a generated step already is what a rewrite makes.
    text = render_snippet(Step(tool=tool), TARGETS[mode])
    assert rewrite(text, TARGETS[mode]).text == text


def test_pip_trusts_the_host_for_plain_http_even_on_loopback() -> None:
    # Off loopback pip ignores an untrusted plain-http index; and pip's HTTP cache (what the
    # mount keeps) is only used for https or
    # trusted hosts, so loopback gets it too.
    assert "PIP_TRUSTED_HOST=127.0.0.1 " in render_snippet(Step(), TARGETS["host-network"])
    assert "PIP_TRUSTED_HOST=pypi-cache " in render_snippet(Step(), TARGETS["gateway-ip"])
    assert "PIP_TRUSTED_HOST=" not in render_snippet(Step(), TARGETS["url"])  # https


def test_uv_gets_copy_link_mode_and_no_trusted_host() -> None:
    text = render_snippet(Step(tool=Tool.UV), TARGETS["gateway-ip"])
    assert "UV_LINK_MODE=copy" in text  # the cache mount is another file system
    assert "UV_DEFAULT_INDEX=http://pypi-cache:8503/simple/" in text
    assert "INSECURE" not in text  # uv takes plain http as it is


def test_pdm_trusts_plain_http() -> None:
    text = render_snippet(Step(tool=Tool.PDM), TARGETS["gateway-ip"])
    assert "PDM_PYPI_URL=http://pypi-cache:8503/simple/ PDM_PYPI_VERIFY_SSL=false" in text


@pytest.mark.parametrize(
    ("ident", "expected"),
    [
        (Identity(), "type=cache,id=cacheproxy-pip,target=/root/.cache/pip,sharing=shared"),
        (
            Identity(uid=1000, home="/home/app"),
            "type=cache,id=cacheproxy-pip-1000,target=/home/app/.cache/pip,sharing=shared,"
            "uid=1000,gid=1000",
        ),
        (
            Identity(uid=1000, gid=50, mode="0700"),
            "type=cache,id=cacheproxy-pip-1000,target=/tmp/.cache/pip,sharing=shared,"
            "uid=1000,gid=50,mode=0700",
        ),
        (
            Identity(name="app", home="/home/app", mode="0777"),
            "type=cache,id=cacheproxy-pip-app,target=/home/app/.cache/pip,sharing=shared,mode=0777",
        ),
    ],
)
def test_cache_mount(ident: Identity, expected: str) -> None:
    assert cache_mount("pip", ident) == expected


def test_non_root_pins_the_cache_dir_to_the_mount() -> None:
    step = Step(tool=Tool.UV, ident=Identity(uid=1000))
    text = render_snippet(step, TARGETS["gateway-ip"])
    assert "target=/tmp/.cache/uv," in text
    assert "UV_CACHE_DIR=/tmp/.cache/uv " in text


def test_sharing_defaults_and_override() -> None:
    assert "sharing=locked" in render_snippet(Step(tool=Tool.PDM), TARGETS["url"])
    assert "sharing=shared" in render_snippet(Step(tool=Tool.UV), TARGETS["url"])
    assert "sharing=private" in render_snippet(Step(sharing="private"), TARGETS["url"])


@pytest.mark.parametrize(
    ("target", "flags"),
    [
        (TARGETS["gateway-ip"], ["--add-host", "pypi-cache:172.17.0.1"]),
        (TARGETS["host-gateway"], ["--add-host", "pypi-cache:host-gateway"]),
        (TARGETS["host-network"], ["--network=host"]),
        (TARGETS["url"], []),
        (make_target(Reach.URL, proxy_url="http://localhost:9000"), ["--network=host"]),
    ],
)
def test_build_flags(target: Target, flags: list[str]) -> None:
    assert build_flags(target) == flags


def test_gateway_defaults_when_unknown() -> None:
    target = make_target(Reach.GATEWAY_IP)
    assert target.gateway == DEFAULT_GATEWAY
    assert "not detected" in render_snippet(Step(), target)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("http://cache.example:8503", "http://cache.example:8503"),
        ("http://cache.example:8503/", "http://cache.example:8503"),
        ("http://cache.example:8503/simple/", "http://cache.example:8503"),
        ("https://cache.example/pypi/simple", "https://cache.example/pypi"),
    ],
)
def test_normalise_proxy_url(raw: str, expected: str) -> None:
    assert normalise_proxy_url(raw) == expected


@pytest.mark.parametrize(
    "raw",
    ["cache.example:8503", "ftp://cache.example/", "http://u:p@cache.example/", "http://h/?a=1"],
)
def test_bad_proxy_url(raw: str) -> None:
    with pytest.raises(ConfigError):
        normalise_proxy_url(raw)


@pytest.mark.parametrize(
    "step",
    [
        Step(tool=Tool.POETRY, requirements="requirements.txt"),
        Step(tool=Tool.PDM, packages=("x",)),
        Step(requirements="r.txt", packages=("x",)),
        Step(requirements="../outside.txt"),
        Step(requirements="/abs.txt"),
        Step(sharing="sometimes"),
    ],
)
def test_invalid_steps(step: Step) -> None:
    with pytest.raises(ConfigError):
        render_snippet(step, TARGETS["gateway-ip"])


@pytest.mark.parametrize("alias", ["", "-bad", "two words", "a_b", "x" * 64])
def test_bad_alias(alias: str) -> None:
    with pytest.raises(ConfigError):
        make_target(Reach.GATEWAY_IP, alias=alias)


# -- the poetry step against what `poetry export` writes -----------------------------------------

# What poetry-plugin-export writes after the README's `poetry source add` of a proxy on this
# machine (exporter.py: the primary source as --index-url, others as --extra-index-url, each
# plain-http one with a --trusted-host of its netloc). Port 1 on loopback refuses at once.
EXPORTED = """\
--index-url http://127.0.0.1:1/simple/
--trusted-host 127.0.0.1:1
--trusted-host localhost:1
--extra-index-url http://localhost:1/simple/

alpha==1.0 ; python_version >= "3.8"
beta==1.0 ; python_version >= "3.8"
"""


def _run_command(text: str) -> str:
    """The shell command of the snippet's RUN step, without RUN and its --mount flags."""
    lines = text.splitlines(keepends=True)
    escape = escape_char(lines)
    (run,) = [i for i in split_instructions(lines, escape) if i.keyword == "RUN"]
    logical, _ = logical_text(lines, run.start, run.header_end, escape)
    return re.sub(r"^RUN\s+(--\S+\s+)*", "", logical)


def _sed_command() -> str:
    command = _run_command(render_snippet(Step(tool=Tool.POETRY), TARGETS["gateway-ip"]))
    (sed,) = [c.strip() for c in command.split(" && ") if c.strip().startswith("sed ")]
    return sed


@pytest.mark.parametrize(
    ("line", "dropped"),
    [
        ("--index-url http://127.0.0.1:8503/simple/", True),
        ("--index-url=http://localhost:8503/simple/", True),
        ("-i http://[::1]:8503/simple/", True),
        ("--extra-index-url http://127.0.0.2/simple", True),
        ("--trusted-host 127.0.0.1:8503", True),
        ("  --trusted-host localhost", True),
        ("--extra-index-url https://private.example/simple/", False),  # the build's own
        ("--index-url https://localhost.example/simple/", False),
        ("--trusted-host private.example", False),
        ("alpha==1.0 ; python_version >= '3.8'", False),
        ("    --hash=sha256:0123", False),
    ],
)
def test_poetry_step_drops_loopback_indexes(line: str, dropped: bool, tmp_path: Path) -> None:
    requirements = tmp_path / "requirements.txt"
    requirements.write_text(f"first\n{line}\nlast\n")
    sed = _sed_command().replace("/tmp/requirements.txt", str(requirements))
    subprocess.run(["sh", "-c", sed], check=True, timeout=30)
    expected = "first\nlast\n" if dropped else f"first\n{line}\nlast\n"
    assert requirements.read_text() == expected


@pytest.mark.clients
async def test_poetry_step_installs_an_export_with_loopback_indexes_through_the_proxy(
    proxy_server: TestServer, fake: FakeIndex, tmp_path: Path
) -> None:
    # The RUN step as generated, run by a real shell and a real pip; only python3 (the venv
    # with poetry) is a stand-in that "exports" what poetry writes, and the step's /tmp is
    # this test's directory. Without the sed, pip asks 127.0.0.1:1 and finds nothing.
    target = make_target(Reach.URL, proxy_url=str(proxy_server.make_url("/")))
    command = _run_command(render_snippet(Step(tool=Tool.POETRY), target))
    work, stubs, site = tmp_path / "work", tmp_path / "bin", tmp_path / "site"
    work.mkdir()
    stubs.mkdir()
    (tmp_path / "exported.txt").write_text(EXPORTED)
    _stub(
        stubs / "python3",
        f'mkdir -p "$3/bin"\nprintf "#!/bin/sh\\n" > "$3/bin/pip"\n'
        f'printf "#!/bin/sh\\ncp {tmp_path}/exported.txt \\"\\$5\\"\\n" > "$3/bin/poetry"\n'
        f'chmod +x "$3/bin/pip" "$3/bin/poetry"',
    )
    _stub(
        stubs / "pip",
        f'cp "$3" {tmp_path}/seen.txt\nexec {sys.executable} -m pip "$@" --target {site} --no-deps',
    )
    env = client_env(tmp_path) | {"PATH": f"{stubs}:{os.environ['PATH']}"}
    proc = await asyncio.create_subprocess_exec(
        "sh", "-c", command.replace("/tmp/", f"{work}/"), env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    out, _ = await asyncio.wait_for(proc.communicate(), timeout=120)
    assert proc.returncode == 0, out.decode(errors="replace")
    seen = (tmp_path / "seen.txt").read_text()
    assert "index-url" not in seen
    assert "trusted-host" not in seen
    assert "alpha==1.0" in seen
    assert {p.name.split("-")[0] for p in site.glob("*.dist-info")} == {"alpha", "beta"}
    assert len(fake.file_gets("alpha-1.0-py3-none-any.whl")) == 1  # through the proxy
    assert not list(work.iterdir())  # the export and the throw-away venv are gone


def _stub(path: Path, body: str) -> None:
    path.write_text(f"#!/bin/sh\n{body}\n")
    path.chmod(0o755)


@pytest.mark.clients
async def test_pip_warns_and_skips_an_untrusted_plain_http_index(
    proxy_server: TestServer, tmp_path: Path
) -> None:
    # Why the snippets set PIP_TRUSTED_HOST, and what the README says happens without it:
    # pip trusts plain http only on localhost, 127.0.0.0/8 and ::1 by address. The
    # IPv4-mapped form of 127.0.0.1 is still this machine's loopback, but not in that list.
    port = proxy_server.port
    index = f"http://[::ffff:127.0.0.1]:{port}/simple/"
    cmd = [sys.executable, "-m", "pip", "install", "--no-deps", "--target", str(tmp_path / "t")]
    untrusted = await _pip([*cmd, "--index-url", index, "alpha"], client_env(tmp_path))
    assert untrusted[0] != 0
    assert (
        "WARNING: The repository located at ::ffff:127.0.0.1 is not a trusted or secure host "
        "and is being ignored." in untrusted[1]
    )
    assert "No matching distribution found for alpha" in untrusted[1]
    env = client_env(tmp_path) | {"PIP_TRUSTED_HOST": f"[::ffff:127.0.0.1]:{port}"}
    trusted = await _pip([*cmd, "--index-url", index, "alpha"], env)
    assert trusted[0] == 0, trusted[1]
    assert "not a trusted or secure host" not in trusted[1]


async def _pip(cmd: list[str], env: dict[str, str]) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        *cmd, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    out, _ = await asyncio.wait_for(proc.communicate(), timeout=120)
    return proc.returncode or 0, out.decode(errors="replace")
