"""Static checks of deploy/: each file parses, and the port, alias, addresses, user and cache
directory agree with each other and with the snippet generator's defaults, so they cannot
drift apart (house style 4.1). Building and running the image is tests/e2e's job."""

import re
from pathlib import Path
from typing import Any

import pytest

from cacheproxy.docker.snippets import (
    DEFAULT_ALIAS,
    DEFAULT_GATEWAY,
    Reach,
    Step,
    make_target,
    render_snippet,
)
from cacheproxy.docker.syntax import escape_char, logical_text, split_instructions
from cacheproxy.settings import DEFAULT_PORT

DEPLOY = Path(__file__).resolve().parents[1] / "deploy"
CACHE_DIR = "/var/cache/cacheproxy"


def _yaml() -> Any:
    return pytest.importorskip("yaml", reason="PyYAML reads compose and Kubernetes files")


def _instructions() -> list[tuple[str, str]]:
    lines = (DEPLOY / "Dockerfile").read_text().splitlines(keepends=True)
    esc = escape_char(lines)
    return [
        (i.keyword, logical_text(lines, i.start, i.header_end, esc)[0].split(None, 1)[1])
        for i in split_instructions(lines, esc)
    ]


def _final_stage() -> list[tuple[str, str]]:
    instructions = _instructions()
    last_from = max(n for n, (k, _) in enumerate(instructions) if k == "FROM")
    return instructions[last_from:]


def _env(stage: list[tuple[str, str]]) -> dict[str, str]:
    text = " ".join(v for k, v in stage if k == "ENV")
    return dict(re.findall(r"([A-Z_]+)=(\S+)", text))


def test_dockerfile_base_is_an_arg_and_there_is_no_syntax_line() -> None:
    text = (DEPLOY / "Dockerfile").read_text()
    assert not re.match(r"#\s*syntax\s*=", text, re.I)  # standards 9.2: air-gapped builds
    instructions = _instructions()
    assert instructions[0] == ("ARG", "BASE=python:3.12-slim")
    assert [v for k, v in instructions if k == "FROM"] == ["${BASE} AS build", "${BASE}"]


def test_dockerfile_runtime_stage() -> None:
    stage = _final_stage()
    env = _env(stage)
    assert env["CACHEPROXY_HOST"] == "0.0.0.0"
    assert env["CACHEPROXY_PORT"] == str(DEFAULT_PORT)
    assert env["CACHEPROXY_CACHE_DIR"] == CACHE_DIR
    assert not {"PIP_INDEX_URL", "PIP_TRUSTED_HOST"} & set(env)  # build args stay build args
    assert ("VOLUME", CACHE_DIR) in stage
    assert ("EXPOSE", str(DEFAULT_PORT)) in stage
    user = [v for k, v in stage if k == "USER"]
    assert user
    assert user[-1].split(":")[0].isdigit()
    assert user[-1].split(":")[0] != "0"
    health = [v for k, v in stage if k == "HEALTHCHECK"]
    assert len(health) == 1
    assert "/-/health" in health[0]
    assert "CACHEPROXY_PORT" in health[0]
    assert ("ENTRYPOINT", '["cacheproxy"]') in stage
    assert ("CMD", '["serve"]') in stage


def test_dockerignore_sends_only_the_sources() -> None:
    ignore = (DEPLOY / "Dockerfile.dockerignore").read_text().splitlines()
    copied = {v.split()[0] for k, v in _instructions() if k == "COPY" and "--from" not in v}
    assert "*" in ignore
    for pattern in ("!pyproject.toml", "!README.md", "!cacheproxy/"):
        assert pattern in ignore
    assert copied == {"pyproject.toml", "cacheproxy"}


def test_compose() -> None:
    compose = _yaml().safe_load((DEPLOY / "compose.yaml").read_text())
    service = compose["services"][DEFAULT_ALIAS]  # the name builds know it by
    assert service["build"]["dockerfile"] == "deploy/Dockerfile"
    assert (DEPLOY / service["build"]["context"] / service["build"]["dockerfile"]).is_file()
    (port,) = service["ports"]
    address, published, container = re.fullmatch(
        r"\$\{CACHEPROXY_PUBLISH:-([\d.]+)\}:(\d+):(\d+)", port
    ).groups()  # type: ignore[union-attr]
    # Published on the bridge gateway, where the snippet's --add-host points, not the LAN.
    assert address == DEFAULT_GATEWAY
    assert int(published) == int(container) == DEFAULT_PORT
    (volume,) = service["volumes"]
    name, target = volume.split(":")
    assert target == CACHE_DIR
    assert name in compose["volumes"]


def _k8s() -> dict[str, dict[str, Any]]:
    yaml = _yaml()
    docs: dict[str, dict[str, Any]] = {}
    for path in sorted((DEPLOY / "kubernetes").glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            docs[doc["kind"]] = doc
    return docs


def test_kubernetes() -> None:
    docs = _k8s()
    assert set(docs) == {"Deployment", "Service", "PersistentVolumeClaim", "Kustomization"}
    assert sorted(docs["Kustomization"]["resources"]) == sorted(
        p.name for p in (DEPLOY / "kubernetes").glob("*.yaml") if p.name != "kustomization.yaml"
    )
    pod = docs["Deployment"]["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    for probe in ("readinessProbe", "livenessProbe"):
        get = container[probe]["httpGet"]
        assert get["path"] == "/-/health"
        assert ports.get(get["port"], get["port"]) == DEFAULT_PORT
    env = {e["name"]: e["value"] for e in container["env"]}
    assert env == {
        "CACHEPROXY_HOST": "0.0.0.0",
        "CACHEPROXY_PORT": str(DEFAULT_PORT),
        "CACHEPROXY_CACHE_DIR": CACHE_DIR,
        "CACHEPROXY_WORKERS": "2",  # a team index: bench/README.md, workers
    }
    assert container["resources"]["requests"].keys() >= {"cpu", "memory"}
    (mount,) = container["volumeMounts"]
    (volume,) = pod["volumes"]
    assert mount["mountPath"] == CACHE_DIR
    assert mount["name"] == volume["name"]
    assert (
        volume["persistentVolumeClaim"]["claimName"]
        == docs["PersistentVolumeClaim"]["metadata"]["name"]
    )
    assert docs["Deployment"]["spec"]["replicas"] == 1  # one writer on a ReadWriteOnce volume
    user = [v for k, v in _final_stage() if k == "USER"][-1].split(":")
    assert pod["securityContext"]["runAsUser"] == int(user[0])
    assert pod["securityContext"]["runAsNonRoot"] is True
    service = docs["Service"]
    assert service["metadata"]["name"] == DEFAULT_ALIAS
    (sport,) = service["spec"]["ports"]
    assert sport["port"] == DEFAULT_PORT
    assert sport["targetPort"] in ports


def _unit() -> dict[str, list[str]]:
    entries: dict[str, list[str]] = {}
    for line in (DEPLOY / "systemd" / "cacheproxy.service").read_text().splitlines():
        if "=" in line and not line.startswith(("#", ";", "[")):
            key, _, value = line.partition("=")
            entries.setdefault(key.strip(), []).append(value.strip())
    return entries


def test_systemd_unit() -> None:
    unit = _unit()
    (exec_start,) = unit["ExecStart"]
    assert exec_start.endswith("cacheproxy serve")
    assert exec_start.startswith("/")
    env = dict(e.split("=", 1) for e in unit["Environment"])
    assert env["CACHEPROXY_PORT"] == str(DEFAULT_PORT)
    assert env["CACHEPROXY_HOST"] == DEFAULT_GATEWAY
    # CacheDirectory=cacheproxy is /var/cache/cacheproxy, owned by the DynamicUser.
    assert unit["CacheDirectory"] == ["cacheproxy"]
    assert env["CACHEPROXY_CACHE_DIR"] == CACHE_DIR
    assert "docker.service" in unit["After"][0]


def test_snippet_defaults_match_deploy() -> None:
    # What `cacheproxy dockerfile` tells users to start is what deploy/ starts.
    text = render_snippet(Step(), make_target(Reach.GATEWAY_IP))
    env = dict(e.split("=", 1) for e in _unit()["Environment"])
    assert (
        f"cacheproxy serve --host {env['CACHEPROXY_HOST']} --port {env['CACHEPROXY_PORT']}" in text
    )
    assert "deploy/compose.yaml" in text
    assert f"http://{DEFAULT_ALIAS}:{DEFAULT_PORT}/simple/" in text
    assert _env(_final_stage())["CACHEPROXY_PORT"] == str(DEFAULT_PORT)
