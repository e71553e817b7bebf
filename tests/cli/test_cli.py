"""The command line: exit codes, one-line errors, the start-up log line, a real process."""

import asyncio
import contextlib
import errno
import fcntl
import json
import os
import socket
import sys
from pathlib import Path

import aiohttp
import pytest
from conftest import temporaries
from fakeindex import FakeIndex
from processes import free_port
from warm_inputs import poetry_lock_text, warm_cli

from cacheproxy.cli import instance
from cacheproxy.cli.exitcodes import USAGE as EXIT_USAGE
from cacheproxy.cli.main import main
from cacheproxy.errors import ConfigError


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["serve", "--port", "eighty"], "--port must be an integer"),
        (["serve", "--port", "70000"], "--port must be between"),
        (["serve", "--upstream", "ftp://example.invalid/simple/"], "--upstream must be an http(s)"),
        (
            ["serve", "--index-ttl", "-1", "--upstream", "http://u.invalid/simple/"],
            "--index-ttl must",
        ),
        (["serve", "--bogus"], "unrecognized arguments"),
    ],
)
def test_invalid_settings_exit_2_with_one_line(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(argv) == EXIT_USAGE
    err = capsys.readouterr().err
    assert message in err
    assert "Traceback" not in err
    assert err.strip().count("\n") == 0  # one line


def test_invalid_environment_variable(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("CACHEPROXY_OFFLINE", "maybe")
    assert main(["serve", "--upstream", "http://u.invalid/simple/"]) == EXIT_USAGE
    assert "CACHEPROXY_OFFLINE=maybe: must be true or false" in capsys.readouterr().err


def test_no_command_prints_help(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == EXIT_USAGE
    assert "serve" in capsys.readouterr().err


async def start(args: list[str]) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "cacheproxy", "serve", *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip


async def wait_up(port: int) -> None:
    """Until the proxy on ``port`` answers /-/health (its app has started)."""
    async with aiohttp.ClientSession() as session:
        for _ in range(200):
            with contextlib.suppress(aiohttp.ClientConnectionError):
                async with session.get(f"http://127.0.0.1:{port}/-/health") as resp:
                    if resp.status == 200:
                        return
            await asyncio.sleep(0.05)
    raise AssertionError("proxy did not come up")


async def test_serve_process_logs_and_answers(fake: FakeIndex, tmp_path: Path) -> None:
    port = free_port()
    proc = await start(
        ["--port", str(port), "--cache-dir", str(tmp_path / "c"), "--upstream", fake.index_url]
    )
    try:
        assert proc.stderr is not None
        line = (await asyncio.wait_for(proc.stderr.readline(), 20)).decode()
        assert f"listening on http://127.0.0.1:{port}/simple/" in line
        assert f"proxying {fake.index_url}" in line
        assert str(tmp_path / "c") in line
        async with aiohttp.ClientSession() as session:
            for _ in range(100):
                try:
                    async with session.get(f"http://127.0.0.1:{port}/-/health") as resp:
                        assert resp.status == 200
                        break
                except aiohttp.ClientConnectionError:
                    await asyncio.sleep(0.05)
            async with session.get(f"http://127.0.0.1:{port}/simple/alpha/") as resp:
                assert resp.status == 200
                assert resp.headers["X-Cache"] == "MISS"
    finally:
        proc.terminate()
        await asyncio.wait_for(proc.wait(), 20)
    assert fake.page_gets("alpha")


async def test_unusable_cache_dir_is_a_clear_error(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    proc = await start(
        ["--port", str(free_port()), "--cache-dir", str(blocker / "cache"),
         "--upstream", "http://127.0.0.1:9/simple/"]
    )  # fmt: skip
    _out, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == EXIT_USAGE
    text = err.decode()
    assert "cache dir" in text
    assert "not usable" in text
    assert "Traceback" not in text


@pytest.mark.parametrize("workers", ["1", "2"])
@pytest.mark.parametrize("reuse_port", [False, True], ids=["plain", "reuseport"])
async def test_port_in_use_is_a_clear_error(tmp_path: Path, workers: str, reuse_port: bool) -> None:
    # reuseport: the holder is another multi-worker proxy, whose SO_REUSEPORT sockets would
    # let ours share the port silently if we bound with SO_REUSEPORT straight away.
    with socket.socket() as s:
        if reuse_port:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        proc = await start(
            ["--port", str(port), "--cache-dir", str(tmp_path / "c"), "--workers", workers,
             "--upstream", "http://127.0.0.1:9/simple/"]
        )  # fmt: skip
        _out, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 1
    assert "cannot listen" in err.decode()
    assert "Traceback" not in err.decode()


async def test_read_only_cache_dir_is_a_clear_error(tmp_path: Path) -> None:
    """A really read-only file system (root ignores permission bits, so mount one)."""
    mnt = tmp_path / "ro"
    mnt.mkdir()
    mount = await asyncio.create_subprocess_exec(
        "mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(mnt),
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    if await mount.wait() != 0:
        pytest.skip("cannot mount a read-only tmpfs here (needs root and mount rights)")
    try:
        proc = await start(
            ["--port", str(free_port()), "--cache-dir", str(mnt / "cache"),
             "--upstream", "http://127.0.0.1:9/simple/"]
        )  # fmt: skip
        _out, err = await asyncio.wait_for(proc.communicate(), 30)
    finally:
        umount = await asyncio.create_subprocess_exec("umount", str(mnt))
        await umount.wait()
    assert proc.returncode == EXIT_USAGE
    text = err.decode()
    assert "Read-only file system" in text
    assert "listening" not in text  # it never claimed to be serving
    assert "Traceback" not in text


@pytest.mark.parametrize("second", ["same-port-2-workers", "other-port-1-worker"])
async def test_second_instance_on_a_cache_dir_fails_before_touching_it(
    fake: FakeIndex, tmp_path: Path, second: str
) -> None:
    # It used to clean tmp/ (the first one's downloads in progress and their lock files)
    # and only then fail to bind the port, or, on another port, serve beside it.
    cache, port = tmp_path / "c", free_port()
    common = ["--cache-dir", str(cache), "--upstream", fake.index_url]
    first = await start(["--port", str(port), "--workers", "2", *common])
    try:
        await wait_up(port)
        download = cache / "tmp" / "a-download-in-progress"
        download.write_bytes(b"half a wheel")
        lock = cache / "tmp" / "locks" / "a-download.lock"
        lock.write_bytes(b"")
        args = (
            ["--port", str(port), "--workers", "2"]
            if second == "same-port-2-workers"
            else ["--port", str(free_port()), "--workers", "1"]
        )
        proc = await start([*args, *common])
        _out, err = await asyncio.wait_for(proc.communicate(), 30)
        assert proc.returncode == 1
        text = err.decode()
        assert text.count("\n") == 1, text
        assert f"cache dir {cache} is in use by another cacheproxy serve (pid {first.pid})" in text
        assert download.read_bytes() == b"half a wheel"
        assert lock.exists()
    finally:
        first.terminate()
        await asyncio.wait_for(first.wait(), 30)
    assert first.returncode == 0
    again = await start(["--port", str(port), *common])  # the lock went with the first
    try:
        assert again.stderr is not None
        line = (await asyncio.wait_for(again.stderr.readline(), 20)).decode()
        assert "listening on" in line
    finally:
        again.terminate()
        await asyncio.wait_for(again.wait(), 20)


@pytest.mark.parametrize("fmt", ["text", "json"])
async def test_access_log_counts_the_body_bytes_sent(
    fake: FakeIndex, tmp_path: Path, fmt: str
) -> None:
    # Hits and followed downloads go out by sendfile, which aiohttp's body_length does not
    # count: the log said a few hundred bytes (the headers) for a whole wheel.
    big = next(f for f in fake.files("big") if f.filename.endswith(".whl"))
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    proc = await start(
        ["--port", str(port), "--cache-dir", str(tmp_path / "c"), "--upstream", fake.index_url,
         "--log-format", fmt]
    )  # fmt: skip
    try:
        await wait_up(port)
        async with aiohttp.ClientSession(auto_decompress=False) as session:
            async with session.get(f"{base}/simple/big/") as resp:
                page = await resp.read()
                etag = resp.headers["ETag"]
            async with session.get(f"{base}/simple/big/", headers={"If-None-Match": etag}) as r:
                assert r.status == 304
            for cache in ("MISS", "HIT"):
                async with session.get(f"{base}{big.url_path}") as resp:
                    assert resp.headers["X-Cache"] == cache
                    assert await resp.read() == big.data
            async with session.head(f"{base}{big.url_path}") as resp:
                assert resp.status == 200
    finally:
        proc.terminate()
        _out, err = await asyncio.wait_for(proc.communicate(), 30)
    sent = [access_bytes(line, fmt) for line in err.decode().splitlines() if "/big" in line]
    sent = [x for x in sent if x is not None]
    assert sent == [len(page), 0, big.size, big.size, 0], err.decode()[-3000:]


def access_bytes(line: str, fmt: str) -> int | None:
    """The byte count of an access log line; None for other lines."""
    if fmt == "json":
        doc = json.loads(line)
        return int(doc["bytes"]) if "bytes" in doc else None
    if "aiohttp.access" not in line:
        return None
    return int(line.split('" ', 1)[1].split()[1])  # after the request line: status, bytes


def test_a_cache_dir_without_locks_is_a_config_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Not "cannot listen on ..." (serve's catch-all for OSError): name the directory.
    def no_locks(_fd: int, _op: int) -> None:
        raise OSError(errno.ENOLCK, os.strerror(errno.ENOLCK))

    monkeypatch.setattr(fcntl, "flock", no_locks)
    with pytest.raises(ConfigError, match=r"cache dir .* cannot be locked: No locks available"):
        instance.hold_instance_lock(tmp_path / "c")


async def test_warm_fills_a_cache_dir_a_serve_holds(fake: FakeIndex, tmp_path: Path) -> None:
    # warm shares the directory (Settings.shared_dir): no instance lock, no cleaning.
    cache, port = tmp_path / "c", free_port()
    proc = await start(
        ["--port", str(port), "--cache-dir", str(cache), "--upstream", fake.index_url]
    )
    try:
        assert proc.stderr is not None
        assert "listening on" in (await asyncio.wait_for(proc.stderr.readline(), 20)).decode()
        await wait_up(port)  # it cleaned tmp/ by now
        download = cache / "tmp" / "a-download-in-progress"
        download.write_bytes(b"half a wheel")
        lock = tmp_path / "poetry.lock"
        lock.write_text(poetry_lock_text(fake, ["alpha"]))
        args = [str(lock), "--cache-dir", str(cache), "--upstream", fake.index_url, "--no-metadata"]
        code, out, err = await warm_cli(tmp_path, *args)
        assert (code, err) == (0, ""), out
        assert out.splitlines()[-1].startswith("warm: 1 fetched (")
        assert download.read_bytes() == b"half a wheel"
    finally:
        proc.terminate()
        await asyncio.wait_for(proc.wait(), 20)


async def test_a_serve_started_during_a_warm_leaves_its_downloads_alone(
    fake: FakeIndex, tmp_path: Path
) -> None:
    # serve empties tmp/ at start-up; a warm running on the directory keeps its downloads
    # in progress there. warm holds tmp.lock shared for its run, so serve skips the
    # cleaning (store/local.py share_tmp) instead of deleting them.
    cache, port = tmp_path / "c", free_port()
    wheel = next(f for f in fake.files("alpha") if f.filename.endswith(".whl"))
    release = fake.hold_files({f.filename for f in fake.files("alpha")})
    lock = tmp_path / "poetry.lock"
    lock.write_text(poetry_lock_text(fake, ["alpha"]))
    args = [str(lock), "--cache-dir", str(cache), "--upstream", fake.index_url, "--no-metadata"]
    warming = asyncio.create_task(warm_cli(tmp_path, *args))
    for _ in range(400):  # until warm's download is under way, its temporary in tmp/
        if fake.file_gets(wheel.filename) and temporaries(cache):
            break
        await asyncio.sleep(0.05)
    in_flight = temporaries(cache)
    assert in_flight, "warm's download did not start"
    proc = await start(
        ["--port", str(port), "--cache-dir", str(cache), "--upstream", fake.index_url]
    )
    try:
        await wait_up(port)  # past its start-up cleaning of tmp/
        assert temporaries(cache) == in_flight
        release.set()
        code, out, err = await warming
        assert (code, err) == (0, ""), out
        assert out.splitlines()[-1].startswith("warm: 1 fetched (")
    finally:
        release.set()
        proc.terminate()
        _out, serve_err = await asyncio.wait_for(proc.communicate(), 20)
    assert "not cleaning" in serve_err.decode()
    assert "Traceback" not in serve_err.decode()
