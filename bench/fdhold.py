"""Hold many idle connections open against ``cacheproxy serve`` under a low descriptor limit,
and measure whether ``/-/health`` still answers and how much the proxy logs meanwhile.

One command, loopback only, bounded in time and count::

    python bench/fdhold.py                          # 1,100 held, soft 1024 / hard 4096
    python bench/fdhold.py --hard 1024              # the hard limit too: the cap must act
    python bench/fdhold.py --conns 1100 --hold 20 --probes 8 --workers 2

The proxy runs as a real process (``python -m cacheproxy serve``) with RLIMIT_NOFILE set
in the child before it starts, and an upstream nobody listens on (only ``/-/health`` is
asked for). Half the held connections send nothing, half send an unfinished request line
(slow headers). Each probe is a fresh connection with a 10 s deadline.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import resource
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import free_port, wait_port

PROBE_TIMEOUT = 10.0


def probe(port: int) -> float | None:
    """Seconds for one ``GET /-/health`` on a fresh connection; None when it failed."""
    start = time.monotonic()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=PROBE_TIMEOUT)
    try:
        conn.request("GET", "/-/health")
        resp = conn.getresponse()
        ok = resp.status == 200 and resp.read() == b"ok\n"
    except OSError:
        return None
    finally:
        conn.close()
    return time.monotonic() - start if ok else None


def hold(port: int, count: int) -> tuple[list[socket.socket], int]:
    """Open ``count`` connections (bounded: 2 s per connect); the open ones and failures."""
    socks: list[socket.socket] = []
    failed = 0
    for i in range(count):
        s = socket.socket()
        s.settimeout(2.0)
        try:
            s.connect(("127.0.0.1", port))
            if i % 2:
                s.sendall(b"GET /-/health HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        except OSError:
            s.close()
            failed += 1
            continue
        socks.append(s)
    return socks, failed


def closed_by_peer(s: socket.socket) -> bool:
    """Whether the proxy closed this held connection (EOF or reset waiting)."""
    s.setblocking(False)
    try:
        return s.recv(1, socket.MSG_PEEK) == b""
    except BlockingIOError:
        return False
    except OSError:
        return True


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--conns", type=int, default=1100, help="connections held (max 20000)")
    parser.add_argument("--soft", type=int, default=1024, help="the proxy's soft NOFILE limit")
    parser.add_argument("--hard", type=int, default=4096, help="the proxy's hard NOFILE limit")
    parser.add_argument("--hold", type=float, default=10.0, help="seconds to hold (max 120)")
    parser.add_argument("--probes", type=int, default=5, help="health probes during the hold")
    parser.add_argument("--workers", type=int, default=1)
    args = parser.parse_args()
    conns, hold_s = min(args.conns, 20000), min(args.hold, 120.0)
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, conns + 256), hard))  # ours

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (args.soft, args.hard))

    port = free_port()
    with tempfile.TemporaryDirectory(prefix="fdhold-") as tmp:
        log_path = Path(tmp) / "proxy.log"
        with log_path.open("wb") as log:
            proc = subprocess.Popen(
                [sys.executable, "-m", "cacheproxy", "serve", "--port", str(port),
                 "--cache-dir", f"{tmp}/cache", "--upstream", "http://127.0.0.1:9/simple/",
                 "--workers", str(args.workers)],
                stdout=subprocess.DEVNULL, stderr=log, preexec_fn=limit,
            )  # fmt: skip
        socks: list[socket.socket] = []
        try:
            wait_port(port, 30, proc)
            before = probe(port)
            size0 = log_path.stat().st_size
            started = time.monotonic()
            socks, failed = hold(port, conns)
            opened = time.monotonic() - started
            latencies: list[float | None] = []
            for _ in range(args.probes):
                time.sleep(hold_s / args.probes)
                latencies.append(probe(port))
            grown = log_path.stat().st_size - size0
            shed = sum(closed_by_peer(s) for s in socks)
            lines = log_path.read_bytes()[size0:].count(b"\n")
        finally:
            for s in socks:
                s.close()
            proc.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(30)
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)
        good = [x for x in latencies if x is not None]
        print(
            f"nofile soft={args.soft} hard={args.hard} workers={args.workers}: "
            f"held {len(socks)}/{conns} (connect failures {failed}, {opened:.1f} s to open, "
            f"{shed} closed by the proxy by the end); "
            f"health before {fmt(before)}; during: {len(good)}/{len(latencies)} answered, "
            f"median {fmt(statistics.median(good) if good else None)}, "
            f"max {fmt(max(good) if good else None)}; "
            f"log +{grown} bytes, +{lines} lines"
        )
        print(log_path.read_text(errors="replace")[size0:][-1500:], end="")
    return 0 if len(good) == len(latencies) else 1


def fmt(seconds: float | None) -> str:
    return "failed" if seconds is None else f"{seconds * 1000:.1f} ms"


if __name__ == "__main__":
    sys.exit(main())
