"""The proxy under test, as a real process: ``python -m cacheproxy serve ...``.

Variants (``--variants``): ``uvloop`` (through ``bench/proxy_launcher.py``, which installs
uvloop's policy first), ``workers2`` (the proxy's own ``--workers 2`` when it has one, else
the launcher's SO_REUSEPORT fork), ``uvloop+workers2``.
"""

from __future__ import annotations

import functools
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import BENCH_DIR, children, fetch, free_port, stop_process

VARIANTS = {
    "default": [],
    "uvloop": ["--uvloop"],
    "workers2": ["--workers", "2"],
    "uvloop+workers2": ["--uvloop", "--workers", "2"],
}


# Set by snapshot(): every proxy of a run imports the same copy of cacheproxy/, however
# the work tree changes while the run goes on (others commit to it).
SNAPSHOT_ENV: dict[str, str] = {}


def snapshot(dest: Path) -> str:
    """Copy ``cacheproxy/`` to ``dest`` and make every later proxy import it from there.

    Returns a short digest of the copied sources (recorded with the results)."""
    import hashlib
    import os

    src = BENCH_DIR.parent / "cacheproxy"
    shutil.copytree(src, dest / "cacheproxy", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    h = hashlib.sha256()
    for f in sorted((dest / "cacheproxy").rglob("*")):
        if f.is_file():
            h.update(f.relative_to(dest).as_posix().encode())
            h.update(f.read_bytes())
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(dest), *filter(None, [env.get("PYTHONPATH")])])
    SNAPSHOT_ENV.clear()
    SNAPSHOT_ENV.update(env)
    native_workers.cache_clear()
    return h.hexdigest()[:12]


@functools.cache
def native_workers() -> bool:
    """Whether ``cacheproxy serve`` has its own ``--workers`` (pre-fork, shared socket,
    cross-process single-flight); if not, the launcher's SO_REUSEPORT fork stands in."""
    out = subprocess.run(
        [sys.executable, "-m", "cacheproxy", "serve", "--help"],
        capture_output=True,
        text=True,
        timeout=30,
        env=SNAPSHOT_ENV or None,
    )
    return "--workers" in out.stdout


def _listeners(port: int) -> int:
    """Sockets listening on 127.0.0.1:port (one per SO_REUSEPORT worker)."""
    want = f"0100007F:{port:04X}"
    n = 0
    try:
        with open("/proc/net/tcp") as f:
            for line in f.readlines()[1:]:
                parts = line.split()
                if parts[1] == want and parts[3] == "0A":
                    n += 1
    except OSError:
        return 1
    return n


class Proxy:
    def __init__(
        self,
        upstream: str,
        work: Path,
        *,
        variant: str = "default",
        cache_dir: Path | None = None,
        index_ttl: int = 3600,
        log_path: Path | None = None,
        env: dict[str, str] | None = None,
        python_args: list[str] | None = None,
    ) -> None:
        self.variant = variant
        self.workers = 2 if "workers2" in variant else 1
        self.native = False
        self.owns_cache = cache_dir is None
        self.cache = cache_dir or Path(tempfile.mkdtemp(prefix="cache-", dir=work))
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.index_url = f"{self.url}/simple/"
        serve = ["serve", "--host", "127.0.0.1", "--port", str(self.port)]
        serve += ["--cache-dir", str(self.cache), "--upstream", upstream, "--log-level", "warning"]
        serve += ["--index-ttl", str(index_ttl)]
        launcher = list(VARIANTS[variant])
        if self.workers > 1 and native_workers():
            launcher = [a for a in launcher if a not in ("--workers", str(self.workers))]
            serve += ["--workers", str(self.workers)]
            self.native = True
        if not launcher:
            # python_args: e.g. ``-m cProfile -o FILE`` (bench/hits.py --phases profile).
            cmd = [sys.executable, *(python_args or []), "-m", "cacheproxy", *serve]
        else:
            cmd = [sys.executable, str(BENCH_DIR / "proxy_launcher.py"), *launcher, "--", *serve]
        self.cmd = cmd
        self.log_path = log_path or (work / f"proxy-{self.port}.log")
        log = open(self.log_path, "wb")
        # Not the caller's directory: ``python -m`` puts it first on sys.path, and from the
        # repository root that imported the work tree's cacheproxy/, not the snapshot.
        self.proc = subprocess.Popen(
            cmd, stdout=log, stderr=subprocess.STDOUT, env=env or SNAPSHOT_ENV or None, cwd=work
        )
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"proxy exited with {self.proc.returncode}: see {log.name}")
            r = fetch(f"{self.url}/-/health", timeout=2)
            ready = (
                len(children(self.proc.pid)) >= self.workers
                if self.native
                else _listeners(self.port) >= self.workers
            )
            if r.status == 200 and ready:
                if self.workers > 1:
                    time.sleep(0.5)  # every worker's loop is up, not just the first one's
                return
            time.sleep(0.05)
        self.stop()
        raise RuntimeError("proxy did not become healthy in 20 s")

    def pids(self) -> list[int]:
        if self.proc.poll() is not None:
            return []
        return [self.proc.pid, *children(self.proc.pid)]

    def worker_pids(self) -> list[int]:
        """The processes that serve requests (the workers, or the one process)."""
        kids = children(self.proc.pid) if self.workers > 1 else []
        return kids or [self.proc.pid]

    def stop(self, remove_cache: bool | None = None) -> None:
        stop_process(self.proc)
        if remove_cache if remove_cache is not None else self.owns_cache:
            shutil.rmtree(self.cache, ignore_errors=True)
