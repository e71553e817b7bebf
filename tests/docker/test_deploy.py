"""Static checks of deploy/: each file parses, and the port, alias, addresses, user and cache
directory agree with each other and with the snippet generator's defaults, so they cannot
drift apart. Building and running the image is tests/e2e's job."""

import argparse
import asyncio
import contextlib
import json
import os
import re
import shlex
import subprocess
import tomllib
from dataclasses import fields
from pathlib import Path
from typing import Any

import pytest
import seaweed
from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name
from yarl import URL

import cacheproxy
from cacheproxy.cli.main import build_parser
from cacheproxy.docker.snippets import (
    DEFAULT_ALIAS,
    DEFAULT_GATEWAY,
    Reach,
    Step,
    make_target,
    render_snippet,
)
from cacheproxy.docker.syntax import escape_char, logical_text, split_instructions
from cacheproxy.settings import DEFAULT_PORT, Settings, build_settings
from cacheproxy.units import parse_size
from cacheproxy.urls import Location
from cacheproxy.web.app import create_app

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
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
    assert not re.match(r"#\s*syntax\s*=", text, re.I)  # it pulls an image: air-gapped builds fail
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
    _check_image_tag(service["image"])
    # A size limit below the disk the volume is on (a share of it, or a size), as the default.
    size = re.fullmatch(
        r"\$\{CACHEPROXY_MAX_SIZE:-([^}]+)\}", service["environment"]["CACHEPROXY_MAX_SIZE"]
    ).group(1)  # type: ignore[union-attr]
    assert 0 < parse_size(size, Path("/")) < parse_size("100%", Path("/"))
    # The access log rotates; the sidecar cannot take all of the build host.
    assert service["logging"]["driver"] == "json-file"
    assert service["logging"]["options"].keys() >= {"max-size", "max-file"}
    limits = service["deploy"]["resources"]["limits"]
    assert limits.keys() >= {"cpus", "memory"}


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
    probes = {
        p: container[p]["httpGet"] for p in ("startupProbe", "readinessProbe", "livenessProbe")
    }
    for get in probes.values():
        assert ports.get(get["port"], get["port"]) == DEFAULT_PORT
    # Readiness is the README's readiness route (the cache takes a write); liveness and
    # start-up the one with no upstream or disk work, so a slow disk never restarts the pod.
    assert probes["readinessProbe"]["path"] == "/-/ready"
    assert probes["livenessProbe"]["path"] == probes["startupProbe"]["path"] == "/-/health"
    env = {e["name"]: e["value"] for e in container["env"]}
    assert env.keys() >= {"CACHEPROXY_MAX_SIZE"}
    assert {k: v for k, v in env.items() if k != "CACHEPROXY_MAX_SIZE"} == {
        "CACHEPROXY_HOST": "0.0.0.0",
        "CACHEPROXY_PORT": str(DEFAULT_PORT),
        "CACHEPROXY_CACHE_DIR": CACHE_DIR,
        "CACHEPROXY_WORKERS": "2",  # a team index: bench/README.md, workers
    }
    requests = container["resources"]["requests"]
    assert requests.keys() >= {"cpu", "memory"}
    assert _cpus(requests["cpu"]) == int(env["CACHEPROXY_WORKERS"])  # a core per worker
    assert "memory" in container["resources"]["limits"]
    # The size limit leaves room on the volume for pages, records and downloads in flight.
    volume_size = _k8s_quantity(
        docs["PersistentVolumeClaim"]["spec"]["resources"]["requests"]["storage"]
    )
    assert parse_size(env["CACHEPROXY_MAX_SIZE"], Path("/")) <= 0.9 * volume_size
    _check_image_tag(container["image"])
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


_K8S_UNITS = {
    "Ki": 2**10,
    "Mi": 2**20,
    "Gi": 2**30,
    "Ti": 2**40,
    "k": 10**3,
    "M": 10**6,
    "G": 10**9,
}


def _k8s_quantity(text: str) -> int:
    number, unit = re.fullmatch(r"(\d+)([A-Za-z]*)", text).groups()  # type: ignore[union-attr]
    return int(number) * _K8S_UNITS.get(unit, 1)


def _cpus(text: str) -> float:
    return int(text[:-1]) / 1000 if text.endswith("m") else float(text)


# -- replicas on a shared bucket: deploy/kubernetes/replicas/ and deploy/compose-s3.yaml ----

REPLICAS = DEPLOY / "kubernetes" / "replicas"
_PLACEHOLDER = re.compile(r"REPLACE|example|change-me", re.I)
# What an AWS access key id looks like: none may be committed.
_AWS_KEY = re.compile(r"\b(?:AKIA|ASIA)[A-Z0-9]{16}\b")


def _setting_variables() -> set[str]:
    """Every CACHEPROXY_* variable build_settings reads: one per Settings field."""
    return {f"CACHEPROXY_{f.name.upper()}" for f in fields(Settings)}


def _routes(tmp_path: Path) -> set[str]:
    app = create_app(Settings(cache_dir=tmp_path, upstream=URL("http://127.0.0.1:1/simple/")))
    return {r.resource.canonical for r in app.router.routes() if r.resource is not None}


def _replicas() -> dict[str, dict[str, Any]]:
    yaml = _yaml()
    docs: dict[str, dict[str, Any]] = {}
    for path in sorted(REPLICAS.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            assert doc["kind"] not in docs, f"two {doc['kind']} documents"
            docs[doc["kind"]] = doc
    return docs


def _matches(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return bool(selector) and selector.items() <= labels.items()


def _secret_refs(env: list[dict[str, Any]]) -> dict[str, tuple[str, str, bool]]:
    """Variable -> (Secret, key, optional) for the variables read from a Secret."""
    out = {}
    for e in env:
        ref = e.get("valueFrom", {}).get("secretKeyRef")
        if ref is not None:
            out[e["name"]] = (ref["name"], ref["key"], bool(ref.get("optional", False)))
    return out


def _check_pod_env(env: list[dict[str, Any]], secret: dict[str, Any]) -> dict[str, str]:
    """The variables' names are real settings or AWS_* client settings; the keys come from
    the Secret, by reference. Returns the plain values."""
    names = [e["name"] for e in env]
    assert len(names) == len(set(names))
    for name in names:
        assert name in _setting_variables() or name.startswith("AWS_"), name
    refs = _secret_refs(env)
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        assert refs[name][:2] == (secret["metadata"]["name"], name)
        assert not refs[name][2]  # a missing key must stop the pod, not run it unsigned
    for name, (_secret, key, _optional) in refs.items():
        assert key in secret["stringData"], name
    assert refs["AWS_ENDPOINT_URL_S3"][2]  # optional: AWS S3 needs none
    values = {e["name"]: e["value"] for e in env if "value" in e}
    assert not {k for k in values if "KEY" in k or "SECRET" in k}  # never inlined
    assert Location.parse(values["CACHEPROXY_STORAGE"]).bucket
    return values


def test_kubernetes_replicas(tmp_path: Path) -> None:
    docs = _replicas()
    assert set(docs) == {
        "Deployment", "PodDisruptionBudget", "Service", "CronJob", "Secret", "Kustomization"
    }  # fmt: skip
    # The example Secret is documentation: applying it would install placeholder keys.
    assert sorted(docs["Kustomization"]["resources"]) == sorted(
        p.name
        for p in REPLICAS.glob("*.yaml")
        if p.name not in ("kustomization.yaml", "secret.example.yaml")
    )
    deployment = docs["Deployment"]
    assert deployment["spec"]["replicas"] == 3
    strategy = deployment["spec"]["strategy"]
    assert strategy["type"] == "RollingUpdate"
    assert strategy["rollingUpdate"] == {"maxUnavailable": 1, "maxSurge": 1}
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert _matches(deployment["spec"]["selector"]["matchLabels"], labels)
    pdb = docs["PodDisruptionBudget"]["spec"]
    assert _matches(pdb["selector"]["matchLabels"], labels)
    assert pdb["minAvailable"] == deployment["spec"]["replicas"] - 1  # drains: one at a time
    service = docs["Service"]
    assert service["metadata"]["name"] == DEFAULT_ALIAS  # the same URL as the single pod
    assert _matches(service["spec"]["selector"], labels)
    pod = deployment["spec"]["template"]["spec"]
    (term,) = pod["affinity"]["podAntiAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"]
    assert term["podAffinityTerm"]["topologyKey"] == "kubernetes.io/hostname"
    assert _matches(term["podAffinityTerm"]["labelSelector"]["matchLabels"], labels)
    user = [v for k, v in _final_stage() if k == "USER"][-1].split(":")
    assert pod["securityContext"]["runAsUser"] == int(user[0])
    assert pod["securityContext"]["runAsNonRoot"] is True
    (container,) = pod["containers"]
    _check_image_tag(container["image"])
    assert container["args"] == ["serve"]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    (sport,) = service["spec"]["ports"]
    assert sport["port"] == DEFAULT_PORT
    assert sport["targetPort"] in ports
    routes = _routes(tmp_path)
    probes = {
        p: container[p]["httpGet"] for p in ("startupProbe", "readinessProbe", "livenessProbe")
    }
    for get in probes.values():
        assert ports.get(get["port"], get["port"]) == DEFAULT_PORT
        assert get["path"] in routes
    # Ready: the local tier takes a write and the bucket answers (store/tiered.py).
    assert probes["readinessProbe"]["path"] == "/-/ready"
    assert probes["livenessProbe"]["path"] == probes["startupProbe"]["path"] == "/-/health"
    values = _check_pod_env(container["env"], docs["Secret"])
    (replica_id,) = [e for e in container["env"] if e["name"] == "CACHEPROXY_REPLICA_ID"]
    assert replica_id["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    # The pod's environment makes the settings a replica needs.
    settings = build_settings(
        {},
        {
            **values,
            "CACHEPROXY_REPLICA_ID": "pypi-cache-7d9f-abcde",
            "CACHEPROXY_UPSTREAM": "https://index.invalid/simple/",
        },
    )
    assert settings.storage == Location.parse(values["CACHEPROXY_STORAGE"])
    assert settings.replica_id == "pypi-cache-7d9f-abcde"
    assert str(settings.cache_dir) == CACHE_DIR
    assert settings.host == "0.0.0.0"
    assert settings.port == DEFAULT_PORT
    # The local tier: an emptyDir, with room for pages and downloads beside the size limit.
    (mount,) = container["volumeMounts"]
    (volume,) = pod["volumes"]
    assert mount["mountPath"] == CACHE_DIR
    assert mount["name"] == volume["name"]
    size_limit = _k8s_quantity(volume["emptyDir"]["sizeLimit"])
    assert settings.max_size is not None
    assert settings.max_size <= 0.9 * size_limit
    resources = container["resources"]
    assert _k8s_quantity(resources["requests"]["ephemeral-storage"]) >= size_limit
    assert "memory" in resources["limits"]


def test_kubernetes_replicas_secret_is_an_example() -> None:
    secret = _replicas()["Secret"]
    text = (REPLICAS / "secret.example.yaml").read_text()
    assert not _AWS_KEY.search(text)
    for key, value in secret["stringData"].items():
        assert _PLACEHOLDER.search(value), f"{key} looks like a real value"
    for path in [*REPLICAS.glob("*"), DEPLOY / "compose-s3.yaml", DEPLOY / ".env.example"]:
        assert not _AWS_KEY.search(path.read_text()), path


def test_kubernetes_prune_cronjob() -> None:
    docs = _replicas()
    job = docs["CronJob"]["spec"]
    assert job["concurrencyPolicy"] == "Forbid"  # one walk of the bucket at a time
    pod = job["jobTemplate"]["spec"]["template"]
    # Not one of the Service's pods, nor counted by the disruption budget.
    assert not _matches(docs["Service"]["spec"]["selector"], pod["metadata"]["labels"])
    (container,) = pod["spec"]["containers"]
    _check_image_tag(container["image"])
    args = build_parser().parse_args(container["args"])
    assert args.func.__name__ == "run_prune"
    assert args.max_size is not None
    assert not args.max_size.endswith("%")  # a bucket has no disk to take a share of
    parse_size(args.max_size, Path("/"))
    values = _check_pod_env(container["env"], docs["Secret"])
    deployment = docs["Deployment"]["spec"]["template"]["spec"]["containers"][0]["env"]
    replica = {e["name"]: e for e in deployment}
    # The bucket the replicas use, with the same credentials.
    assert values["CACHEPROXY_STORAGE"] == replica["CACHEPROXY_STORAGE"]["value"]
    assert _secret_refs(container["env"]) == _secret_refs(deployment)
    assert "CACHEPROXY_MAX_SIZE" not in values  # the bucket's size is the --max-size above


def _compose_s3() -> dict[str, Any]:
    data: dict[str, Any] = _yaml().safe_load((DEPLOY / "compose-s3.yaml").read_text())
    return data


def _interpolated(value: str) -> tuple[str, str, str] | None:
    """``${NAME:-default}`` or ``${NAME:?message}``: (name, operator, rest); else None."""
    match = re.fullmatch(r"\$\{([A-Z0-9_]+)(:[-?])([^}]*)\}", value)
    return None if match is None else (match[1], match[2], match[3])


def _dotenv_example() -> dict[str, str]:
    lines = (DEPLOY / ".env.example").read_text().splitlines()
    return dict(line.split("=", 1) for line in lines if line and not line.startswith("#"))


def test_compose_s3() -> None:
    compose = _compose_s3()
    services = compose["services"]
    assert set(services) == {"seaweedfs", "create-bucket", "cacheproxy-1", "cacheproxy-2", "lb"}
    replicas = ["cacheproxy-1", "cacheproxy-2"]
    bucket_default = services["create-bucket"]["environment"]["BUCKET"]
    assert _interpolated(bucket_default) == ("CACHEPROXY_BUCKET", ":-", "pypi-cache")
    ids, tiers = set(), set()
    for name in replicas:
        service = services[name]
        assert service["build"]["dockerfile"] == "deploy/Dockerfile"
        assert (DEPLOY / service["build"]["context"] / service["build"]["dockerfile"]).is_file()
        _check_image_tag(service["image"])
        assert service["depends_on"]["create-bucket"]["condition"] == (
            "service_completed_successfully"
        )
        env = service["environment"]
        for var in env:
            assert var in _setting_variables() or var.startswith("AWS_"), var
        assert env["CACHEPROXY_STORAGE"] == f"s3://{bucket_default}"
        # The keys come from deploy/.env, the same ones SeaweedFS accepts; never literals.
        keys = {"AWS_ACCESS_KEY_ID": "S3_ACCESS_KEY", "AWS_SECRET_ACCESS_KEY": "S3_SECRET_KEY"}
        for var, source in keys.items():
            for value in (env[var], services["seaweedfs"]["environment"][source]):
                found = _interpolated(value)
                assert found is not None
                assert found[:2] == (source, ":?")
        endpoint = URL(env["AWS_ENDPOINT_URL_S3"])
        assert endpoint.host == "seaweedfs"
        assert endpoint.port == 8333
        size = _interpolated(env["CACHEPROXY_MAX_SIZE"])
        assert size is not None
        parse_size(size[2], Path("/"))
        ids.add(env["CACHEPROXY_REPLICA_ID"])
        (volume,) = service["volumes"]
        tier, target = volume.split(":")
        assert target == CACHE_DIR
        assert tier in compose["volumes"]
        tiers.add(tier)
    assert len(ids) == len(tiers) == len(replicas)  # each its own id and local tier
    # Every required variable has a placeholder in .env.example.
    example = _dotenv_example()
    text = (DEPLOY / "compose-s3.yaml").read_text()
    required = set(re.findall(r"\$\{([A-Z0-9_]+):\?", text))
    assert required == {"S3_ACCESS_KEY", "S3_SECRET_KEY"}
    assert required <= example.keys()
    assert all(_PLACEHOLDER.search(example[k]) for k in required)
    assert "deploy/.env" in (ROOT / ".gitignore").read_text().splitlines()
    # The balancer: published like compose.yaml's proxy, in front of both replicas.
    lb = services["lb"]
    (port,) = lb["ports"]
    assert port == f"${{CACHEPROXY_PUBLISH:-{DEFAULT_GATEWAY}}}:{DEFAULT_PORT}:{DEFAULT_PORT}"
    (mount,) = lb["volumes"]
    source, target, mode = mount.split(":")
    assert target == "/etc/nginx/conf.d/default.conf"
    assert mode == "ro"
    conf = (DEPLOY / source).read_text()
    servers = re.findall(r"^\s*server\s+([\w.-]+:\d+)", conf, re.M)
    assert sorted(servers) == [f"{name}:{DEFAULT_PORT}" for name in replicas]
    assert re.search(rf"^\s*listen\s+{DEFAULT_PORT};", conf, re.M)
    assert re.search(r"^\s*proxy_buffering\s+off;", conf, re.M)  # files stream through
    assert re.search(r"^\s*proxy_set_header\s+Host\s+\$http_host;", conf, re.M)


def _seaweedfs_command(config: Path) -> tuple[str, list[str]]:
    """The compose file's SeaweedFS start: the shell that writes the identity file (to
    ``config`` instead of the container's path) and the server's arguments."""
    (command,) = _compose_s3()["services"]["seaweedfs"]["command"]
    script = command.replace("$$", "$")  # compose's escape of a literal $
    write, _, start = script.partition(" && exec ")
    path = re.search(r"> (\S+)$", write)
    assert path is not None
    args = shlex.split(start)
    assert args[:2] == ["/entrypoint.sh", "server"]
    assert f"-s3.config={path[1]}" in args
    assert "-s3" in args
    return write.replace(path[1], str(config)), args


def _seaweedfs_identity(tmp_path: Path, access: str, secret: str) -> dict[str, Any]:
    config = tmp_path / "s3.json"
    write, _args = _seaweedfs_command(config)
    env = {"PATH": os.environ.get("PATH", ""), "S3_ACCESS_KEY": access, "S3_SECRET_KEY": secret}
    subprocess.run(["sh", "-c", write], env=env, check=True, timeout=30)
    (identity,) = json.loads(config.read_text())["identities"]
    assert isinstance(identity, dict)
    return identity


def test_compose_s3_seaweedfs_identity(tmp_path: Path) -> None:
    identity = _seaweedfs_identity(tmp_path, "an-access-key", "a-secret-key")
    assert identity["credentials"] == [{"accessKey": "an-access-key", "secretKey": "a-secret-key"}]
    assert set(identity["actions"]) <= {"Read", "Write", "List"}  # no Admin: least privilege


def test_compose_s3_identity_may_do_what_a_replica_does(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SeaweedFS with the compose file's identity (and an admin one that creates the
    bucket, as create-bucket does): everything the shared tier asks of the store works."""
    from cacheproxy.store.leases import Leases
    from cacheproxy.store.objectstore import ObjectStore

    access, secret = "compose-access", "compose-secret"
    replica = _seaweedfs_identity(tmp_path, access, secret)
    admin = {
        "name": "admin",
        "credentials": [{"accessKey": seaweed.ACCESS_KEY, "secretKey": seaweed.SECRET_KEY}],
        "actions": ["Admin"],
    }
    monkeypatch.setattr(
        seaweed, "_identity_config", lambda: json.dumps({"identities": [replica, admin]})
    )
    data = tmp_path / "seaweedfs"
    data.mkdir()
    with contextlib.ExitStack() as stack:
        try:
            server = stack.enter_context(seaweed.running(data))
        except seaweed.EngineUnavailable as exc:
            pytest.skip(f"SeaweedFS cannot start here: {exc}")
        env = {**server.environment(), "AWS_ACCESS_KEY_ID": access, "AWS_SECRET_ACCESS_KEY": secret}
        seaweed.aws_environment(monkeypatch, tmp_path, env)
        big = tmp_path / "big"
        big.write_bytes(os.urandom(6 * 1024 * 1024))

        async def exercise() -> None:
            async with ObjectStore.connect(Location(server.bucket, "compose")) as store:
                assert await store.put_create_only("files/a", b"a") is not None
                assert await store.put_create_only("files/a", b"a") is None
                tag = await store.put("pages/record", b"1")
                assert await store.put_if_match("pages/record", b"2", tag) is not None
                assert await store.put_file("files/big", big, part_size=5 * 1024 * 1024)
                assert [i.name async for i in store.list_objects("files/")] == [
                    "files/a", "files/big"
                ]  # fmt: skip
                found = await store.get("files/big")
                assert found is not None
                assert found.data == big.read_bytes()
                leases = Leases(store, "cacheproxy-1", ttl=10)
                lease = await leases.acquire("files/x")
                assert lease is not None
                assert await leases.release(lease)
                assert await store.delete("files/a")

        asyncio.run(exercise())


def _project() -> dict[str, Any]:
    with (DEPLOY.parent / "pyproject.toml").open("rb") as f:
        project: dict[str, Any] = tomllib.load(f)["project"]
    return project


def _project_version() -> str:
    return str(_project()["version"])


def _project_name() -> str:
    return str(_project()["name"])


def test_dockerfile_installs_the_s3_extra() -> None:
    # The replicas' manifests run --storage s3://..., which needs the s3 extra in the image.
    build = _instructions()[: max(n for n, (k, _) in enumerate(_instructions()) if k == "FROM")]
    assert ("ARG", "EXTRAS=s3") in build
    (install,) = [v for k, v in build if k == "RUN" and "pip install" in v]
    assert '".${EXTRAS:+[$EXTRAS]}"' in install
    assert "s3" in _project()["optional-dependencies"]


def _check_image_tag(image: str) -> None:
    # A moving tag runs whatever was built last under it; the project's version names a build.
    name, _, tag = image.rpartition(":")
    assert name
    assert "/" not in tag
    assert tag != "latest"
    assert tag == _project_version()


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
    # A descriptor per client, upstream connection and file being sent: 1024 is too few.
    assert unit["LimitNOFILE"] == ["65536"]


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


# -- install instructions install this project ------------------------------------------------

ROOT = DEPLOY.parent
# The index's project named `cacheproxy` is an unrelated one, and ours (cacheproxy-index) is
# not published: every instruction installs this checkout, a wheel built from it, or the
# image. A bare name may only be a third-party tool the docs install on purpose, or the
# example package installed through the proxy.
THIRD_PARTY = {"pip", "uv", "poetry", "poetry-plugin-export", "pdm", "requests", "cachetools"}
_INSTALLERS = re.compile(
    r"(?:\b(?:pip3?|pipx)|\bpython3?\s+-m\s+pip|\buv\s+pip|\buv\s+tool)\s+install\b([^`\n]*)"
)
# pip/uv/pipx options that take a value (the value is not a requirement).
_VALUE_OPTIONS = {
    "-r", "--requirement", "-c", "--constraint", "-i", "--index-url", "--extra-index-url",
    "--trusted-host", "-f", "--find-links", "-t", "--target", "--prefix", "--root",
    "--python", "-p", "--cache-dir", "-d", "--dest", "--platform", "--python-version",
    "--only-binary", "--no-binary", "--index", "--default-index", "--progress-bar",
    "--upgrade-strategy", "--link-mode", "--implementation", "--abi", "--report",
}  # fmt: skip


def _doc_files() -> list[Path]:
    docs = [ROOT / "README.md", ROOT / "bench" / "README.md"]
    docs += [p for p in (ROOT / "docs").rglob("*") if p.suffix in (".md", ".txt", ".rst")]
    docs += [p for p in DEPLOY.rglob("*") if p.is_file()]
    docs += sorted((ROOT / "cacheproxy" / "docker" / "templates").iterdir())
    return sorted(p for p in docs if p.is_file())


def installed_names(text: str) -> list[str]:
    """The bare distribution names that the install commands in ``text`` install."""
    names: list[str] = []
    for match in _INSTALLERS.finditer(text):
        line = re.split(r"&&|\|\||[;|)]", match.group(1))[0].replace("\\", " ")
        try:
            words = shlex.split(line, comments=True)
        except ValueError:
            words = line.split()
        value_next = False
        for word in words:
            if value_next or word.startswith("-"):
                value_next = not value_next and word in _VALUE_OPTIONS
                continue
            if (
                word.startswith((".", "/", "~", "$", "@"))
                or "/" in word
                or word.endswith((".whl", ".tar.gz", ".zip"))
            ):
                continue  # a path, a variable, a template placeholder
            try:
                names.append(canonicalize_name(Requirement(word).name))
            except InvalidRequirement:
                continue  # prose after a command, like "... of the pinned set"
    return names


def _commands(path: Path) -> str:
    """The text of ``path`` that is commands: in Markdown its code blocks and code spans
    (prose like "a cold pip install gave ..." is no instruction), elsewhere all of it."""
    text = path.read_text(encoding="utf-8", errors="replace")
    if path.suffix != ".md":
        return text
    blocks = re.findall(r"^```[^\n]*\n(.*?)^```", text, re.M | re.S)
    prose = re.sub(r"^```[^\n]*\n.*?^```", "", text, flags=re.M | re.S)
    return "\n".join(blocks + re.findall(r"`([^`\n]+)`", prose))


def test_install_instructions_install_this_project() -> None:
    found = {
        f"{path.relative_to(ROOT)}: {name}"
        for path in _doc_files()
        for name in installed_names(_commands(path))
        if name not in THIRD_PARTY
    }
    assert not found, "installs a distribution that is not ours to install by name"


# The name the index's unrelated project has, built here so this file is not itself a line
# that tells anyone to install it.
_NOT_OURS = "cache" + "proxy"


@pytest.mark.parametrize(
    ("text", "names"),
    [
        (f"/opt/cacheproxy/bin/pip install {_NOT_OURS}), then:", [_NOT_OURS]),
        ("pip install cacheproxy-index==0.1.0", ["cacheproxy-index"]),
        (f"RUN pipx install {_NOT_OURS} && echo", [_NOT_OURS]),
        (f"uv tool install '{_NOT_OURS}[test]'", [_NOT_OURS]),
        ("python3 -m pip install -U Cache_Proxy", ["cache-proxy"]),
        ("pip install . && .venv/bin/cacheproxy serve", []),
        ("pip install -e '.[test]'", []),
        ("pip install /path/to/checkout dist/cacheproxy_index-0.1.0-py3-none-any.whl", []),
        ("pip install --index-url http://127.0.0.1:8503/simple/ requests", ["requests"]),
        ("pip install -r requirements.txt -c c.txt --target T", []),
        ("uv pip install @args", []),
    ],
)
def test_installed_names(text: str, names: list[str]) -> None:
    assert installed_names(text) == names


def test_version_comes_from_our_distribution() -> None:
    # `cacheproxy --version`, the stats and the User-Agent read the installed distribution's
    # metadata: under its own name, not the import package's.
    assert _project_name() == cacheproxy.DISTRIBUTION
    assert cacheproxy.__version__ == _project_version()


# -- the README's limitations stay true -------------------------------------------------------

# Option and setting names that would mean a limitation was lifted: then the README's
# "Limitations" section must change with it.
_LIFTED = re.compile(r"upstreams|extra.index|allow|deny|block|redis|group|hosted_store", re.I)


def test_readme_limitations_hold(tmp_path: Path) -> None:
    readme = (ROOT / "README.md").read_text()
    section = readme.partition("\n## Limitations\n")[2].partition("\n## ")[0]
    claims = ("never merged", "legacy upload API only", "One flat list of users")
    for claim in (*claims, "own packages live on one replica", "allow/deny"):
        assert claim in section
    # One upstream, no allow/deny settings (the release-age gate's --min-age-unknown
    # allow|deny is about upload times, not a list of projects), no tokens or groups.
    assert "upstream" in {f.name for f in fields(Settings)}
    assert not [f.name for f in fields(Settings) if _LIFTED.search(f.name)]
    parser = build_parser()
    (sub,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    options = [o for a in sub.choices["serve"]._actions for o in a.option_strings]
    assert "--upstream" in options
    assert not [o for o in options if _LIFTED.search(o)]
    # Nothing but GET/HEAD outside /-/admin/ and the legacy upload endpoint; the simple API
    # and PyPI's JSON API.
    app = create_app(Settings(cache_dir=tmp_path, upstream=URL("http://127.0.0.1:1/simple/")))
    routes = [(r.method, r.resource.canonical) for r in app.router.routes() if r.resource]
    assert routes
    writes = {path for m, path in routes if m not in ("GET", "HEAD")}
    assert {p for p in writes if not p.startswith("/-/admin/")} == {"/index/{index}/"}
    assert {path for _, path in routes if path.startswith("/pypi")} == {
        "/pypi/{project}/json",
        "/pypi/{project}/{version}/json",
    }
    # Without --storage, workers coordinate with flock, which does not reach across hosts;
    # with it, hosted packages still live on the replica's own disk (nothing in hosted.py
    # knows the object store).
    assert "fcntl.flock" in (ROOT / "cacheproxy" / "store" / "filelock.py").read_text()
    hosted = (ROOT / "cacheproxy" / "store" / "hosted.py").read_text()
    assert "objectstore" not in hosted
    assert "shared" not in hosted
