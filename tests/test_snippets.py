"""The snippet renderer: golden output for every tool x reachability mode, and the rules
each snippet must keep (standards §8-§9), checked on the text itself.

Regenerate the golden files after an intended change with
``CACHEPROXY_UPDATE_GOLDEN=1 pytest tests/test_snippets.py`` and review the diff.
"""

import os
from pathlib import Path

import pytest

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
from cacheproxy.docker.syntax import escape_char, split_instructions
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
    # standards 9.2: no syntax line (air-gapped builds); 9.6: nothing through ENV.
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
    # standards 8.1; and pip's HTTP cache (what the mount keeps) is only used for https or
    # trusted hosts, so loopback gets it too.
    assert "PIP_TRUSTED_HOST=127.0.0.1 " in render_snippet(Step(), TARGETS["host-network"])
    assert "PIP_TRUSTED_HOST=pypi-cache " in render_snippet(Step(), TARGETS["gateway-ip"])
    assert "PIP_TRUSTED_HOST=" not in render_snippet(Step(), TARGETS["url"])  # https


def test_uv_gets_copy_link_mode_and_no_trusted_host() -> None:
    text = render_snippet(Step(tool=Tool.UV), TARGETS["gateway-ip"])
    assert "UV_LINK_MODE=copy" in text  # standards 8.4
    assert "UV_DEFAULT_INDEX=http://pypi-cache:8503/simple/" in text  # standards 8.3
    assert "INSECURE" not in text  # standards 8.2: plain http needs nothing


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
