"""Shared pieces of the benchmark: ports, client environments, processes, RSS, HTTP probes.

Everything here is bounded: every wait has a deadline, every subprocess a timeout, and a
process is only ever stopped by the pid we started it with.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent
RESULTS_DIR = BENCH_DIR / "results"
MiB = 1024 * 1024
MB = 1000 * 1000


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(
    port: int, timeout: float = 15.0, proc: subprocess.Popen[bytes] | None = None
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process {proc.args!r} exited with {proc.returncode}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.02)
    raise RuntimeError(f"nothing listening on 127.0.0.1:{port} after {timeout}s")


def client_env() -> dict[str, str]:
    """The environment for pip and uv: no machine configuration leaks in."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PIP_", "UV_"))}
    for k in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy"):
        env.pop(k, None)
    env.update(
        PIP_CONFIG_FILE=os.devnull,
        PIP_DISABLE_PIP_VERSION_CHECK="1",
        PIP_NO_INPUT="1",
        UV_NO_CONFIG="1",
        UV_PYTHON_DOWNLOADS="never",
        NO_COLOR="1",
    )
    return env


def uv_binary() -> str:
    local = Path(sys.executable).parent / "uv"
    return str(local) if local.exists() else (shutil.which("uv") or "uv")


def stop_process(proc: subprocess.Popen[bytes], timeout: float = 10.0) -> None:
    """SIGTERM the process we started (by its pid), SIGKILL after ``timeout``."""
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        proc.wait(5)


def children(pid: int) -> list[int]:
    """Direct children of ``pid`` (nginx workers, proxy worker processes)."""
    out: list[int] = []
    try:
        for task in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{task}/children") as f:
                out.extend(int(p) for p in f.read().split())
        return out
    except OSError:
        pass
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            if ppid == pid:
                out.append(int(entry))
    return out


def _status_kib(pid: int, field_name: str) -> int:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(field_name + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def _pss_kib(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Pss:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


class RssMonitor:
    """Peak resident memory of a set of processes over a ``with`` block.

    One process: its peak RSS. The high-water mark is reset at the start
    (``/proc/PID/clear_refs`` = 5), so VmHWM afterwards is the peak of this block only;
    VmRSS is also sampled every 20 ms; ``peak_mib`` is the larger.

    Several processes (nginx's master and workers, the proxy's supervisor and workers):
    the peak of their summed PSS, sampled every 20 ms. Summing RSS would count the pages
    that forked processes share once per process; PSS splits each shared page among its
    sharers, so the sum is the memory the group really holds.
    """

    def __init__(self, pids: Callable[[], Sequence[int]], interval: float = 0.02) -> None:
        self._pids = pids
        self._interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self.sampled_kib = 0
        self.hwm_kib = 0
        self.start_kib = 0
        self.hwm_reset = True
        self.pss_kib = 0
        self.processes = 0

    def _run(self) -> None:
        while not self._stop.is_set():
            pids = self._pids()
            self.processes = max(self.processes, len(pids))
            total = sum(_status_kib(p, "VmRSS") for p in pids)
            self.sampled_kib = max(self.sampled_kib, total)
            if len(pids) > 1:
                self.pss_kib = max(self.pss_kib, sum(_pss_kib(p) for p in pids))
            self._stop.wait(self._interval)

    def __enter__(self) -> RssMonitor:
        for pid in self._pids():
            try:
                with open(f"/proc/{pid}/clear_refs", "w") as f:
                    f.write("5")
            except OSError:
                self.hwm_reset = False
        self.start_kib = sum(_status_kib(p, "VmRSS") for p in self._pids())
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)
        self.hwm_kib = sum(_status_kib(p, "VmHWM") for p in self._pids())

    @property
    def peak_mib(self) -> float:
        if self.processes > 1:
            return self.pss_kib / 1024
        hwm = self.hwm_kib if self.hwm_reset else 0
        return max(self.sampled_kib, hwm) / 1024

    @property
    def rss_sum_mib(self) -> float:
        return self.sampled_kib / 1024

    @property
    def start_mib(self) -> float:
        return self.start_kib / 1024


@dataclass
class Fetched:
    status: int
    size: int
    sha256: str
    headers: dict[str, str]
    started: float
    first_byte: float
    ended: float
    error: str | None = None

    @property
    def seconds(self) -> float:
        return self.ended - self.started


def fetch(
    url: str,
    headers: dict[str, str] | None = None,
    *,
    hash_body: bool = True,
    timeout: float = 120.0,
    method: str = "GET",
) -> Fetched:
    """One HTTP/1.1 GET on its own connection, the body read to the end and hashed."""
    u = urllib.parse.urlsplit(url)
    path = u.path + (f"?{u.query}" if u.query else "")
    started = time.perf_counter()
    conn = http.client.HTTPConnection(u.hostname or "127.0.0.1", u.port or 80, timeout=timeout)
    digest = hashlib.sha256()
    size = 0
    first = 0.0
    try:
        conn.request(method, path, headers=headers or {})
        resp = conn.getresponse()
        hdrs = {k.lower(): v for k, v in resp.getheaders()}
        deadline = started + timeout
        while True:
            chunk = resp.read1(1 << 20) if method != "HEAD" else b""
            if not chunk:
                break
            if not first:
                first = time.perf_counter()
            size += len(chunk)
            if hash_body:
                digest.update(chunk)
            if time.perf_counter() > deadline:
                raise TimeoutError(f"{url}: body not read within {timeout}s")
        return Fetched(
            resp.status,
            size,
            digest.hexdigest(),
            hdrs,
            started,
            first or time.perf_counter(),
            time.perf_counter(),
        )
    except (OSError, http.client.HTTPException) as e:
        now = time.perf_counter()
        return Fetched(0, size, "", {}, started, first or now, now, f"{type(e).__name__}: {e}")
    finally:
        conn.close()


def fetch_body(
    url: str, headers: dict[str, str] | None = None, timeout: float = 30.0
) -> tuple[int, dict[str, str], bytes]:
    u = urllib.parse.urlsplit(url)
    conn = http.client.HTTPConnection(u.hostname or "127.0.0.1", u.port or 80, timeout=timeout)
    try:
        conn.request("GET", u.path + (f"?{u.query}" if u.query else ""), headers=headers or {})
        resp = conn.getresponse()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
    finally:
        conn.close()


def fetch_many(url: str, n: int, timeout: float = 180.0) -> tuple[list[Fetched], float]:
    """``n`` clients GET ``url`` at the same moment; returns their results and the wall time
    from the first request to the last byte of the last client."""
    results: list[Fetched | None] = [None] * n
    barrier = threading.Barrier(n)

    def one(i: int) -> None:
        with contextlib.suppress(threading.BrokenBarrierError):
            barrier.wait(timeout=30)
        results[i] = fetch(url, timeout=timeout)

    threads = [threading.Thread(target=one, args=(i,), daemon=True) for i in range(n)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + timeout + 40
    for t in threads:
        t.join(max(0.0, deadline - time.monotonic()))
    done = [r for r in results if r is not None]
    if not done:
        return [], float("nan")
    wall = max(r.ended for r in done) - min(r.started for r in done)
    return done, wall


def tool_version(cmd: Sequence[str]) -> str:
    try:
        out = subprocess.run(list(cmd), capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return "?"
    text = (out.stdout + out.stderr).strip().splitlines()
    return text[0].strip() if text else "?"


def machine() -> dict[str, str]:
    model = "?"
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    mem = "?"
    with contextlib.suppress(OSError), open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemTotal:"):
                mem = f"{int(line.split()[1]) // 1024} MiB"
                break
    return {
        "nproc": str(os.cpu_count()),
        "cpu": model,
        "memory": mem,
        "kernel": os.uname().release,
        "loadavg_at_start": " ".join(f"{x:.2f}" for x in os.getloadavg()),
    }


@dataclass
class Timer:
    label: str
    started: float = field(default_factory=time.perf_counter)

    def elapsed(self) -> float:
        return time.perf_counter() - self.started


@contextlib.contextmanager
def phase(name: str, log: Callable[[str], None]) -> Iterator[None]:
    t = time.perf_counter()
    log(f"== {name}")
    try:
        yield
    finally:
        log(f"   ({name}: {time.perf_counter() - t:.1f}s)")
