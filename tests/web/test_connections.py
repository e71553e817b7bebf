"""File descriptors: ``cacheproxy serve`` raises its soft limit, caps client connections
below it, and stays reachable (health answers, the log stays small) while more idle
connections are held open than it has descriptors."""

import asyncio
import contextlib
import errno
import logging
import os
import resource
import socket
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from processes import free_port, wait_healthy

from cacheproxy.cli.limits import connection_cap
from cacheproxy.web.connections import (
    KEEPALIVE_TIMEOUT,
    CappedSockSite,
    install_exception_handler,
)

DEAD_UPSTREAM = "http://127.0.0.1:9/simple/"  # only /-/health is asked for


def nofile(soft: int, hard: int) -> Callable[[], None]:
    def set_limit() -> None:  # in the child, before it runs Python
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))

    return set_limit


@contextlib.asynccontextmanager
async def serve_limited(
    tmp_path: Path, soft: int, hard: int, *extra: str
) -> AsyncIterator[tuple[asyncio.subprocess.Process, int, Path]]:
    """``cacheproxy serve`` started with RLIMIT_NOFILE (soft, hard); its log in a file."""
    port = free_port()
    log = tmp_path / "serve.log"
    with log.open("wb") as err:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "cacheproxy", "serve", "--port", str(port),
            "--cache-dir", str(tmp_path / "cache"), "--upstream", DEAD_UPSTREAM, *extra,
            stdout=asyncio.subprocess.DEVNULL, stderr=err, preexec_fn=nofile(soft, hard),
        )  # fmt: skip
    try:
        async with aiohttp.ClientSession() as session:
            await wait_healthy(session, f"http://127.0.0.1:{port}")
        yield proc, port, log
    finally:
        if proc.returncode is None:
            proc.terminate()
        await asyncio.wait_for(proc.wait(), 30)


def limits_of(pid: int) -> tuple[int, int]:
    for line in Path(f"/proc/{pid}/limits").read_text().splitlines():
        if line.startswith("Max open files"):
            soft, hard = line.split()[3:5]
            return int(soft), int(hard)
    raise AssertionError("no open files limit")


async def test_soft_limit_is_raised_to_the_hard_limit(tmp_path: Path) -> None:
    if not sys.platform.startswith("linux"):
        pytest.skip("reads /proc/<pid>/limits")
    async with serve_limited(tmp_path, 256, 1024) as (proc, _port, _log):
        assert limits_of(proc.pid) == (1024, 1024)


async def test_raise_nofile_limit_in_a_fresh_process() -> None:
    code = (
        "import resource; from cacheproxy.cli.limits import raise_nofile_limit;"
        "print(raise_nofile_limit(), *resource.getrlimit(resource.RLIMIT_NOFILE))"
    )
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", code, stdout=asyncio.subprocess.PIPE, preexec_fn=nofile(128, 512)
    )
    out, _ = await asyncio.wait_for(proc.communicate(), 30)
    assert out.split() == [b"512", b"512", b"512"]


def test_connection_cap_leaves_room_below_the_limit() -> None:
    for limit in (64, 256, 1024, 4096, 65536):
        cap = connection_cap(limit)
        assert 8 <= cap < limit // 2 + 1
    assert connection_cap(1024) >= 256


async def health_seconds(port: int, deadline: float) -> float:
    """One ``GET /-/health`` on a fresh connection: seconds it took."""
    loop = asyncio.get_running_loop()
    start = loop.time()
    async with (
        aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=deadline)) as session,
        session.get(f"http://127.0.0.1:{port}/-/health") as resp,
    ):
        assert resp.status == 200
        assert await resp.text() == "ok\n"
    return loop.time() - start


async def test_reachable_while_more_idle_connections_than_descriptors(tmp_path: Path) -> None:
    # soft = hard = 256: the limit cannot be raised, so the cap has to act. Before, the 256
    # descriptors went to idle connections, every accept() failed with EMFILE (each logged
    # with a traceback), and health timed out until the idle connections left.
    held: list[asyncio.StreamWriter] = []
    async with serve_limited(tmp_path, 256, 256) as (_proc, port, log):
        before = log.stat().st_size
        try:
            for i in range(400):
                _reader, writer = await asyncio.open_connection("127.0.0.1", port)
                if i % 2:  # slow headers: a request line, never finished
                    writer.write(b"GET /-/health HTTP/1.1\r\nHost: x\r\nX-Slow: ")
                held.append(writer)
            await asyncio.sleep(0.5)
            for _ in range(3):
                assert await health_seconds(port, deadline=5) < 5
        finally:
            for writer in held:
                writer.close()
        grown = log.read_text()[before:]
    assert "Traceback" not in grown
    lines = grown.splitlines()
    assert len(lines) <= 10, grown[:3000]
    assert sum("client connections open" in line for line in lines) == 1  # rate-limited


class FlakySocket(socket.socket):
    """A listening socket whose first ``failures`` accepts fail with EMFILE."""

    failures = 0

    def accept(self) -> tuple[socket.socket, Any]:
        if self.failures > 0:
            self.failures -= 1
            raise OSError(errno.EMFILE, os.strerror(errno.EMFILE))
        return super().accept()


async def test_out_of_descriptors_on_accept_is_one_line_then_a_retry(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def hello(request: web.BaseRequest) -> web.Response:
        return web.Response(text="hi")

    server = web.Server(hello)
    runner = web.ServerRunner(server)
    await runner.setup()
    sock = FlakySocket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    sock.failures = 5
    site = CappedSockSite(runner, sock, max_connections=8)
    await site.start()
    port = sock.getsockname()[1]
    try:
        with caplog.at_level(logging.WARNING):
            async with (
                aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=15)) as session,
                session.get(f"http://127.0.0.1:{port}/") as resp,
            ):
                assert await resp.text() == "hi"
    finally:
        await runner.cleanup()
    assert sock.failures == 0
    warnings = [r for r in caplog.records if r.name == "cacheproxy.web.connections"]
    assert len(warnings) == 1, caplog.text
    assert "cannot accept connections" in warnings[0].getMessage()
    assert warnings[0].exc_info is None


def test_loop_exception_handler_rate_limits_descriptor_errors(
    caplog: pytest.LogCaptureFixture,
) -> None:
    loop = asyncio.new_event_loop()
    try:
        install_exception_handler(loop)
        with caplog.at_level(logging.WARNING):
            for _ in range(50):
                loop.call_exception_handler(
                    {"message": "socket.accept() out of system resource",
                     "exception": OSError(errno.EMFILE, "Too many open files")}
                )  # fmt: skip
            loop.call_exception_handler({"message": "something else", "exception": ValueError()})
    finally:
        loop.close()
    lines = caplog.text.splitlines()
    assert sum("out of system resource" in line for line in lines) == 1
    assert "Traceback" not in caplog.text.split("something else")[0]
    assert "something else" in caplog.text  # anything else: asyncio's default handler


async def test_unfinished_headers_are_cut_off_after_the_keepalive_timeout(tmp_path: Path) -> None:
    # aiohttp's one timer for idle keep-alive connections and unfinished request headers
    # (web_protocol.RequestHandler._process_keepalive); run_app's default was 75 s.
    async with serve_limited(tmp_path, 1024, 1024) as (_proc, port, _log):
        loop = asyncio.get_running_loop()
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        idle_reader, idle_writer = await asyncio.open_connection("127.0.0.1", port)
        start = loop.time()
        writer.write(b"GET /-/health HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        try:
            for stream in (reader, idle_reader):
                assert await asyncio.wait_for(stream.read(), KEEPALIVE_TIMEOUT + 5) == b""
        finally:
            writer.close()
            idle_writer.close()
        assert KEEPALIVE_TIMEOUT - 1 <= loop.time() - start <= KEEPALIVE_TIMEOUT + 5
