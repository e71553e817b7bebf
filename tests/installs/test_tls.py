"""HTTPS: ``cacheproxy serve --tls-cert --tls-key`` (with --workers too), a real pip
install and twine upload over it with a CA made at test time, and a certificate reload
on SIGHUP."""

import asyncio
import signal
import ssl
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
import trustme
from clients import installed, pip_cmd
from conftest import client_env
from distbuild import build_wheel
from fakeindex import FakeIndex
from hostedutil import PASSWORD, write_users
from processes import free_port

pytestmark = pytest.mark.clients


def issue(ca: trustme.CA, directory: Path, name: str) -> tuple[Path, Path]:
    """A server certificate for the loopback names, and its key, as PEM files."""
    cert = ca.issue_cert("127.0.0.1", "localhost")
    directory.mkdir(parents=True, exist_ok=True)
    cert_path, key_path = directory / f"{name}.pem", directory / f"{name}.key"
    cert.cert_chain_pems[0].write_to_path(str(cert_path))
    for extra in cert.cert_chain_pems[1:]:
        extra.write_to_path(str(cert_path), append=True)
    cert.private_key_pem.write_to_path(str(key_path))
    return cert_path, key_path


def client_context(ca: trustme.CA) -> ssl.SSLContext:
    context = ssl.create_default_context()
    ca.configure_trust(context)
    return context


async def wait_https(base: str, context: ssl.SSLContext) -> None:
    async with aiohttp.ClientSession() as s:
        for _ in range(200):
            try:
                async with s.get(f"{base}/-/health", ssl=context) as resp:
                    if resp.status == 200:
                        return
            except aiohttp.ClientConnectionError:
                pass
            await asyncio.sleep(0.05)
    raise AssertionError("proxy did not come up over HTTPS")


@pytest.fixture
async def https_proxy(
    fake: FakeIndex, tmp_path: Path
) -> AsyncIterator[tuple[str, trustme.CA, Path, asyncio.subprocess.Process]]:
    ca = trustme.CA()
    cert, key = issue(ca, tmp_path / "tls", "server")
    ca_file = tmp_path / "tls" / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    users = write_users(tmp_path / "users", "alice")
    port = free_port()
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "cacheproxy", "serve", "--workers", "2", "--port", str(port),
        "--cache-dir", str(tmp_path / "cache"), "--upstream", fake.index_url,
        "--tls-cert", str(cert), "--tls-key", str(key), "--hosted", "team",
        "--users", str(users),
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    base = f"https://127.0.0.1:{port}"
    try:
        await wait_https(base, client_context(ca))
        yield base, ca, ca_file, proc
    finally:
        if proc.returncode is None:
            proc.terminate()
        _out, err = await asyncio.wait_for(proc.communicate(), 30)
        assert proc.returncode == 0, err.decode()[-2000:]
        assert "Traceback" not in err.decode()


async def client(cmd: list[str], tmp: Path) -> str:
    env = client_env(tmp)
    # requests lets these beat a session's own CA (twine --cert): requests issue #3829.
    for name in ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE"):
        env.pop(name, None)
    proc = await asyncio.create_subprocess_exec(
        *cmd, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    out, _ = await asyncio.wait_for(proc.communicate(), timeout=120)
    assert proc.returncode == 0, out.decode(errors="replace")
    return out.decode(errors="replace")


async def test_pip_install_and_twine_upload_over_https(
    https_proxy: tuple[str, trustme.CA, Path, asyncio.subprocess.Process],
    tmp_path: Path,
) -> None:
    base, _ca, ca_file, _proc = https_proxy
    wheel = build_wheel(tmp_path / "dists", "securepkg", "1.0", requires=["beta"])
    await client(
        [
            sys.executable, "-m", "twine", "upload", "--repository-url", f"{base}/index/team/",
            "--cert", str(ca_file), "--non-interactive", "--disable-progress-bar",
            "-u", "alice", "-p", PASSWORD, str(wheel),
        ],
        tmp_path,
    )  # fmt: skip
    target = tmp_path / "target"
    cmd = pip_cmd(f"{base}/simple/", target, "alpha", "securepkg")
    out = await client([*cmd, "--cert", str(ca_file)], tmp_path)
    assert installed(target) == {"alpha", "beta", "securepkg"}
    assert "WARNING" not in out  # every miss streamed whole over TLS, no resumed download


async def test_sighup_reloads_the_certificate(
    https_proxy: tuple[str, trustme.CA, Path, asyncio.subprocess.Process],
    tmp_path: Path,
) -> None:
    base, old_ca, _ca_file, proc = https_proxy
    new_ca = trustme.CA()
    # The renewed pair is written over the files the proxy was started with.
    issue(new_ca, tmp_path / "tls", "server")
    proc.send_signal(signal.SIGHUP)
    new = client_context(new_ca)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as s:
        for _ in range(100):  # both workers, whichever the kernel picks
            try:
                async with s.get(f"{base}/-/health", ssl=new) as resp:
                    assert resp.status == 200
                    break
            except aiohttp.ClientConnectorCertificateError:
                await asyncio.sleep(0.05)
        else:
            raise AssertionError("the new certificate was never served")
        for _ in range(8):
            async with s.get(f"{base}/-/health", ssl=new) as resp:
                assert resp.status == 200
        with pytest.raises(aiohttp.ClientConnectorCertificateError):
            await s.get(f"{base}/-/health", ssl=client_context(old_ca))
    assert proc.returncode is None  # SIGHUP did not stop it
