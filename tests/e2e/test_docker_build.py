"""End to end with a real Docker engine: builds through a running ``cacheproxy serve`` survive
``docker builder prune -af`` without a single upstream request.

Needs a reachable engine with BuildKit and a local base image with python3 + venv in
``CACHEPROXY_E2E_IMAGE`` (``tests/e2e/make-base-image.sh`` builds one without a registry);
skips with the reason otherwise. ``CACHEPROXY_E2E_DOCKER`` picks the docker CLI (default
``docker``: it must be able to run BuildKit builds, i.e. be 20.10+ or have buildx).
The deploy/Dockerfile tests also need ``CACHEPROXY_E2E_WHEELHOUSE``
(``tests/e2e/make-wheelhouse.sh``); the replicas one also starts SeaweedFS (the test extra's
``weed``) on loopback and runs its containers on the host's network.

Traffic stays on this machine: the fake upstream listens on loopback (only the proxy talks
to it), the proxy on the Docker bridge gateway, which is where build steps reach the host.
"""

import asyncio
import contextlib
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest
from aiohttp.test_utils import TestServer
from aiohttp.web import Application
from distbuild import build_wheel
from fakeindex import FakeIndex, LoggedRequest
from packaging.utils import parse_wheel_filename
from seaweed import EngineUnavailable, running

from cacheproxy.docker import engine as docker_env
from cacheproxy.docker.snippets import (
    Reach,
    Step,
    Target,
    Tool,
    build_flags,
    make_target,
    render_snippet,
)

pytestmark = [pytest.mark.docker, pytest.mark.timeout(900)]

DOCKER = os.environ.get("CACHEPROXY_E2E_DOCKER", "docker")
IMAGE = os.environ.get("CACHEPROXY_E2E_IMAGE", "")
REPO = Path(__file__).resolve().parents[2]


def docker(
    *argv: str, check: bool = True, timeout: float = 600
) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "DOCKER_BUILDKIT": "1"}  # Docker 20.10 needs it for RUN --mount
    proc = subprocess.run(
        [DOCKER, *argv], capture_output=True, text=True, timeout=timeout, env=env, check=False
    )
    if check and proc.returncode != 0:
        pytest.fail(
            f"docker {' '.join(argv)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}"
        )
    return proc


def _call(argv: Sequence[str], timeout: float) -> str | None:
    try:
        proc = subprocess.run([DOCKER, *argv], capture_output=True, text=True, timeout=timeout)
    except (OSError, subprocess.SubprocessError):
        return None
    return proc.stdout if proc.returncode == 0 else None


@pytest.fixture(scope="module")
def engine() -> docker_env.Engine:
    found = docker_env.probe_engine(_call)
    if not found.reachable:
        pytest.skip(f"no Docker engine reachable ({DOCKER} info failed)")
    if not IMAGE:
        pytest.skip(
            "set CACHEPROXY_E2E_IMAGE to a local image with python3 and venv "
            "(tests/e2e/make-base-image.sh builds one)"
        )
    if _call(["image", "inspect", IMAGE], 10) is None:
        pytest.skip(f"image {IMAGE!r} not found (tests/e2e/make-base-image.sh builds it)")
    print(f"\nDocker engine {found.version}; bridge gateway {found.gateway} ({found.note})")
    return found


@pytest.fixture(scope="module")
def gateway(engine: docker_env.Engine) -> str:
    if engine.gateway is None:
        pytest.skip("the engine reports no bridge gateway")
    return engine.gateway


class Upstream:
    """A FakeIndex on loopback, served from its own event loop in a thread."""

    def __init__(self, fake: FakeIndex, host: str = "127.0.0.1") -> None:
        self.fake = fake
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

        async def server(app: Application) -> TestServer:
            s = TestServer(app, host=host)
            await s.start_server()
            return s

        asyncio.run_coroutine_threadsafe(fake.start(server), self.loop).result(30)

    def requests(self) -> list[LoggedRequest]:
        return list(self.fake.requests)

    def close(self) -> None:
        asyncio.run_coroutine_threadsafe(self.fake.stop(), self.loop).result(30)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


@dataclass
class Proxy:
    url: str
    port: int
    log: Path
    upstream: Upstream


def _free_port(host: str) -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def _wait_healthy(url: str, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"cacheproxy serve exited {proc.returncode}:\n{log.read_text()}")
        try:
            with urllib.request.urlopen(f"{url}/-/health", timeout=2):
                return
        except OSError:
            time.sleep(0.2)
    pytest.fail(f"cacheproxy serve did not become healthy:\n{log.read_text()}")


@pytest.fixture
def proxy(gateway: str, tmp_path: Path) -> Iterator[Proxy]:
    """A fresh ``cacheproxy serve`` on the bridge gateway, over a fake upstream on loopback."""
    tmp = tmp_path / "proxy"
    tmp.mkdir()
    fake = FakeIndex()
    dists = tmp / "dists"
    dists.mkdir()
    fake.add_file("alpha", build_wheel(dists, "alpha", "1.0", requires=["beta>=1"]))
    fake.add_file("beta", build_wheel(dists, "beta", "1.0"))
    wheelhouse = os.environ.get("CACHEPROXY_E2E_WHEELHOUSE")
    for wheel in sorted(Path(wheelhouse).glob("*.whl")) if wheelhouse else []:
        fake.add_file(str(parse_wheel_filename(wheel.name)[0]), wheel)
    upstream = Upstream(fake)
    port = _free_port(gateway)
    log = tmp / "proxy.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "cacheproxy",
                "serve",
                "--host",
                gateway,
                "--port",
                str(port),
                "--cache-dir",
                str(tmp / "cache"),
                "--upstream",
                fake.index_url,
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    url = f"http://{gateway}:{port}"
    try:
        _wait_healthy(url, proc, log)
        yield Proxy(url, port, log, upstream)
    finally:
        proc.terminate()
        proc.wait(10)
        upstream.close()


def _context(tmp: Path, dockerfile: str, files: dict[str, str]) -> Path:
    tmp.mkdir(parents=True, exist_ok=True)
    (tmp / "Dockerfile").write_text(dockerfile)
    for name, text in files.items():
        (tmp / name).write_text(text)
    return tmp


def _build(context: Path, target: Target, tag: str) -> str:
    proc = docker("build", "--progress=plain", *build_flags(target), "-t", tag, str(context))
    return proc.stdout + proc.stderr


def _prune() -> None:
    # Cache mounts and layers: what `docker builder prune` removes (BuildKit's cache mounts
    # are build cache too).
    docker("builder", "prune", "-af")


def _check_second_build_hits(proxy: Proxy, before: list[LoggedRequest], output: str) -> None:
    after = proxy.upstream.requests()
    assert after[len(before) :] == [], "the second build made the proxy ask upstream"
    assert "Successfully installed" in output or "+ alpha==1.0" in output, output


@pytest.mark.parametrize("tool", [Tool.PIP, Tool.UV])
def test_build_prune_build_fetches_nothing_upstream(
    tool: Tool, proxy: Proxy, gateway: str, engine: docker_env.Engine, tmp_path: Path
) -> None:
    target = make_target(
        Reach.GATEWAY_IP, port=proxy.port, gateway=gateway, gateway_note=engine.note
    )
    snippet = render_snippet(Step(tool=tool), target)
    head = f"FROM {IMAGE}\nRUN python3 -m venv /venv\nENV PATH=/venv/bin:$PATH VIRTUAL_ENV=/venv\n"
    files = {"requirements.txt": "alpha\n"}
    if tool is Tool.UV:
        head += "COPY uv /usr/local/bin/uv\n"
    dockerfile = head + snippet + 'RUN python -c "import alpha, beta; print(alpha.__version__)"\n'
    context = _context(tmp_path / "ctx", dockerfile, files)
    if tool is Tool.UV:
        uv = shutil.which("uv", path=str(Path(sys.executable).parent)) or shutil.which("uv")
        assert uv is not None, "uv is part of the test extra"
        shutil.copy2(uv, context / "uv")
    print(f"\n--- {tool} snippet ---\n{snippet}")

    start = proxy.upstream.requests()
    first = _build(context, target, f"cacheproxy-e2e-{tool}")
    fetched = proxy.upstream.requests()[len(start) :]
    assert any(r.path.endswith(".whl") for r in fetched), first  # cold: through to upstream
    print(f"first build: upstream saw {len(fetched)} requests")

    _prune()
    before = proxy.upstream.requests()
    second = _build(context, target, f"cacheproxy-e2e-{tool}")
    _check_second_build_hits(proxy, before, second)
    print(
        "after docker builder prune -af: upstream saw 0 requests; "
        f"proxy log: {sum('HIT' in line for line in proxy.log.read_text().splitlines())} HITs"
    )


REAL_WORLD = """\
FROM {image} AS build
RUN python3 -m venv /venv
ENV PATH=/venv/bin:$PATH
WORKDIR /app
COPY requirements.txt .
RUN pip install --no-cache-dir \\
        -r requirements.txt \\
 && python -c "import alpha, beta"

FROM {image}
RUN python3 -m venv /venv && chown -R 65534:65534 /venv
ENV PATH=/venv/bin:$PATH
USER 65534
RUN ["pip", "install", "--no-cache-dir", "beta"]
COPY --from=build /venv/lib /opt/build-venv-lib
"""


def test_rewritten_dockerfile_builds_and_survives_prune(
    proxy: Proxy, gateway: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import argparse

    from cacheproxy.cli import dockerfile as dockerfile_cli
    from cacheproxy.cli.main import _Parser

    context = _context(
        tmp_path / "ctx", REAL_WORLD.format(image=IMAGE), {"requirements.txt": "alpha\n"}
    )
    parser = _Parser(prog="cacheproxy")
    dockerfile_cli.add_parser(parser.add_subparsers(parser_class=_Parser))
    args = parser.parse_args(
        [
            "dockerfile",
            "--rewrite",
            str(context / "Dockerfile"),
            "--write",
            "--reach",
            "gateway-ip",
            "--gateway-ip",
            gateway,
            "--port",
            str(proxy.port),
        ]
    )
    assert isinstance(args, argparse.Namespace)
    assert dockerfile_cli.run(args) == 0
    print(f"\n--- rewritten ---\n{(context / 'Dockerfile').read_text()}{capsys.readouterr().err}")
    target = make_target(Reach.GATEWAY_IP, port=proxy.port, gateway=gateway)
    start = proxy.upstream.requests()
    _build(context, target, "cacheproxy-e2e-rewrite")
    assert any(r.path.endswith(".whl") for r in proxy.upstream.requests()[len(start) :])
    _prune()
    before = proxy.upstream.requests()
    second = _build(context, target, "cacheproxy-e2e-rewrite")
    _check_second_build_hits(proxy, before, second)


def _health(container: str) -> str:
    proc = docker("inspect", "--format", "{{.State.Health.Status}}", container, check=False)
    return proc.stdout.strip()


def _build_deploy_image(proxy: Proxy, gateway: str) -> str:
    """deploy/Dockerfile built with no registry: its base is the local image, and its own
    dependencies (the s3 extra's too) come through the host's cacheproxy."""
    if not os.environ.get("CACHEPROXY_E2E_WHEELHOUSE"):
        pytest.skip(
            "set CACHEPROXY_E2E_WHEELHOUSE (tests/e2e/make-wheelhouse.sh DIR) to "
            "build deploy/Dockerfile without a registry"
        )
    host_proxy = make_target(Reach.GATEWAY_IP, port=proxy.port, gateway=gateway)
    docker(
        "build",
        "--progress=plain",
        "-f",
        str(REPO / "deploy" / "Dockerfile"),
        "--build-arg",
        f"BASE={IMAGE}",
        "--build-arg",
        f"PIP_INDEX_URL={host_proxy.index_url}",
        "--build-arg",
        f"PIP_TRUSTED_HOST={host_proxy.host}",
        *build_flags(host_proxy),
        "-t",
        "cacheproxy-e2e-deploy",
        str(REPO),
    )
    return "cacheproxy-e2e-deploy"


def test_deploy_image_builds_runs_healthy_and_serves_a_build(
    proxy: Proxy, gateway: str, tmp_path: Path
) -> None:
    image = _build_deploy_image(proxy, gateway)
    port = _free_port(gateway)
    name = f"cacheproxy-e2e-{port}"
    # Published on the bridge gateway only, as deploy/compose.yaml does; upstream is the
    # host's proxy, so the container's traffic stays on the bridge.
    docker(
        "run",
        "-d",
        "--rm",
        "--name",
        name,
        "-p",
        f"{gateway}:{port}:8503",
        "-e",
        f"CACHEPROXY_UPSTREAM={proxy.url}/simple/",
        "--health-interval",
        "1s",
        image,
    )
    try:
        deadline = time.monotonic() + 60
        while _health(name) != "healthy" and time.monotonic() < deadline:
            time.sleep(0.5)
        assert _health(name) == "healthy", docker("logs", name, check=False).stderr
        user = docker("exec", name, "id", "-u").stdout.strip()
        assert user == "10001"
        target = make_target(Reach.GATEWAY_IP, port=port, gateway=gateway)
        dockerfile = (
            f"FROM {IMAGE}\nRUN python3 -m venv /venv\nENV PATH=/venv/bin:$PATH\n"
            + render_snippet(Step(tool=Tool.PIP), target)
            + 'RUN python -c "import alpha, beta"\n'
        )
        context = _context(tmp_path / "ctx", dockerfile, {"requirements.txt": "alpha\n"})
        output = _build(context, target, "cacheproxy-e2e-through-deploy")
        assert "Successfully installed" in output
        print(f"\ndeploy image: healthy as uid {user}, served a build on {gateway}:{port}")
    finally:
        docker("rm", "-f", name, check=False)


def test_deploy_image_runs_as_replicas_on_one_bucket(
    proxy: Proxy, gateway: str, tmp_path: Path
) -> None:
    """Two containers of the deploy image, one bucket (SeaweedFS on loopback, so the
    containers share the host's network): what one fetched, the other serves as a HIT."""

    image = _build_deploy_image(proxy, gateway)
    (tmp_path / "seaweedfs").mkdir()
    with contextlib.ExitStack() as stack:
        try:
            store = stack.enter_context(running(tmp_path / "seaweedfs"))
        except EngineUnavailable as exc:
            pytest.skip(f"SeaweedFS cannot start here: {exc}")
        bases = []
        for n in range(2):
            port = _free_port("127.0.0.1")
            name = f"cacheproxy-e2e-replica-{n}-{port}"
            env = {
                **store.environment(),
                "CACHEPROXY_STORAGE": f"s3://{store.bucket}/e2e",
                "CACHEPROXY_HOST": "127.0.0.1",
                "CACHEPROXY_PORT": str(port),
                "CACHEPROXY_UPSTREAM": f"{proxy.url}/simple/",
                "CACHEPROXY_REPLICA_ID": name,
            }
            flags = [f"--env={k}={v}" for k, v in env.items()]
            docker("run", "-d", "--rm", "--network", "host", "--name", name, *flags, image)
            stack.callback(docker, "rm", "-f", name, check=False)
            bases.append(f"http://127.0.0.1:{port}")
        for base in bases:
            _wait_url(f"{base}/-/ready")
        page = f"{bases[0]}/simple/beta/"
        link = _fetch(page).split('href="', 1)[1].split("#", 1)[0]
        cache, first = _fetch_file(page, link)
        assert cache == "MISS"
        time.sleep(2)  # the copy reaches the bucket after it is served
        cache, second = _fetch_file(f"{bases[1]}/simple/beta/", link)
        assert (cache, second) == ("HIT", first)
        metrics = _fetch(f"{bases[1]}/-/metrics")
        assert f'cacheproxy_file_bytes_total{{tier="store"}} {float(len(first))}' in metrics
        assert 'cacheproxy_file_bytes_total{tier="upstream"} 0.0' in metrics
        print(f"\ndeploy image: 2 replicas on s3://{store.bucket}/e2e, a HIT from the bucket")


def _wait_url(url: str) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except OSError:
            time.sleep(0.3)
    pytest.fail(f"{url} did not answer 200 in 60 s")


def _fetch(url: str) -> str:
    with urllib.request.urlopen(url, timeout=30) as resp:
        return str(resp.read().decode())


def _fetch_file(page: str, link: str) -> tuple[str, bytes]:
    """X-Cache and the body of the file ``link`` on ``page`` names."""
    url = urllib.parse.urljoin(page, link)
    with urllib.request.urlopen(url, timeout=60) as resp:
        return str(resp.headers["X-Cache"]), bytes(resp.read())
