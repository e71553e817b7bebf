"""proxy/heap.py: malloc_trim and the arena cap, where the C library has them."""

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

import cacheproxy.cli.main as cli_main
from cacheproxy.proxy.heap import heap_trimmer

glibc = pytest.mark.skipif(heap_trimmer() is None, reason="not glibc: no malloc_trim/mallopt")


def _limit_arenas_in_a_fresh_process(env: dict[str, str]) -> str:
    # In its own process: the cap is process-wide, and this one's arenas exist already.
    code = "from cacheproxy.proxy.heap import limit_arenas; print(limit_arenas())"
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


@glibc
def test_arenas_are_capped_unless_the_environment_chose() -> None:
    env = {k: v for k, v in os.environ.items() if k != "MALLOC_ARENA_MAX"}
    assert _limit_arenas_in_a_fresh_process(env) == "True"
    assert _limit_arenas_in_a_fresh_process({**env, "MALLOC_ARENA_MAX": "8"}) == "False"


def test_serve_caps_arenas_before_it_serves(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    calls: list[str] = []
    monkeypatch.setattr(cli_main, "bind", lambda *_args: [socket.socket()])

    def limit() -> bool:
        calls.append("limit")
        return True

    monkeypatch.setattr(cli_main, "limit_arenas", limit)

    def run(_settings: object, sock: socket.socket, _max_connections: int) -> None:
        sock.close()
        calls.append("run")

    monkeypatch.setattr(cli_main, "_run", run)
    code = cli_main.main(
        ["serve", "--host", "127.0.0.1", "--port", "3141", "--cache-dir", str(tmp_path / "c"),
         "--upstream", "http://127.0.0.1:9/simple/"]
    )  # fmt: skip
    assert code == 0
    assert calls == ["limit", "run"]


@glibc
def test_the_trimmer_runs() -> None:
    trim = heap_trimmer()
    assert trim is not None
    assert trim() in (0, 1)  # 1: it handed memory back
