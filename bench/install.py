"""Cold and warm installs of a package set: through cacheproxy versus straight from upstream.

    python bench/install.py [--rounds 3] [--tool pip|uv|both] [PACKAGE ...]

Uses the upstream that pip on this machine is configured with (else pip's default index),
so it needs network access to it. Every figure is a median over the rounds, and every ratio
is against the direct install measured in the same run (the machine is shared and noisy).
Each round installs into a fresh target with the client's own cache disabled, so only the
proxy can make the second run faster:

- direct: ``pip install --no-cache-dir --target T --index-url <upstream> PKGS``
- cold:   the same through a proxy with an empty cache directory
- warm:   the same again through that proxy (its cache now full)
"""

import argparse
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# Ten pure-Python wheels (no compiler, no sdists), pinned so runs compare.
DEFAULT_SET = [
    "requests==2.32.3",
    "urllib3==2.2.3",
    "idna==3.10",
    "certifi==2024.8.30",
    "charset-normalizer==3.4.0",
    "six==1.16.0",
    "packaging==24.2",
    "attrs==24.2.0",
    "click==8.1.7",
    "python-dateutil==2.9.0.post0",
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def upstream_index() -> str:
    from cacheproxy.settings import pip_index_url

    return pip_index_url(os.environ)


def client_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PIP_", "UV_"))}
    env.update(PIP_CONFIG_FILE=os.devnull, PIP_DISABLE_PIP_VERSION_CHECK="1", UV_NO_CONFIG="1")
    return env


def install(tool: str, index: str, packages: list[str]) -> float:
    target = tempfile.mkdtemp(prefix="bench-target-")
    if tool == "pip":
        cmd = [sys.executable, "-m", "pip", "install", "-q", "--no-cache-dir", "--no-deps"]
    else:
        uv = shutil.which("uv") or str(Path(sys.executable).parent / "uv")
        cmd = [uv, "pip", "install", "-q", "--no-cache", "--no-deps", "--python", sys.executable]
    cmd += ["--target", target, "--index-url", index, *packages]
    start = time.perf_counter()
    subprocess.run(cmd, check=True, env=client_env(), stdout=subprocess.DEVNULL)
    elapsed = time.perf_counter() - start
    shutil.rmtree(target, ignore_errors=True)
    return elapsed


class Proxy:
    def __init__(self, upstream: str) -> None:
        self.cache = tempfile.mkdtemp(prefix="bench-cache-")
        self.port = free_port()
        cmd = [sys.executable, "-m", "cacheproxy", "serve", "--port", str(self.port)]
        cmd += ["--cache-dir", self.cache, "--upstream", upstream, "--log-level", "warning"]
        self.proc = subprocess.Popen(cmd)
        self.url = f"http://127.0.0.1:{self.port}/simple/"
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", self.port)) == 0:
                    return
            time.sleep(0.05)
        raise RuntimeError("proxy did not start")

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)
        shutil.rmtree(self.cache, ignore_errors=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--tool", choices=["pip", "uv", "both"], default="both")
    parser.add_argument("packages", nargs="*", default=DEFAULT_SET)
    args = parser.parse_args()
    upstream = upstream_index()
    tools = ["pip", "uv"] if args.tool == "both" else [args.tool]
    print(f"{len(args.packages)} packages, {args.rounds} rounds, python {sys.version.split()[0]}")
    for tool in tools:
        direct, cold, warm = [], [], []
        for _ in range(args.rounds):
            direct.append(install(tool, upstream, args.packages))
            proxy = Proxy(upstream)
            try:
                cold.append(install(tool, proxy.url, args.packages))
                warm.append(install(tool, proxy.url, args.packages))
            finally:
                proxy.stop()
        d = statistics.median(direct)
        c = statistics.median(cold)
        w = statistics.median(warm)
        print(f"\n{tool}: median seconds (ratio to direct)")
        print(f"  direct from upstream  {d:7.3f}  1.00")
        print(f"  proxy, cold cache     {c:7.3f}  {c / d:.2f}")
        print(f"  proxy, warm cache     {w:7.3f}  {w / d:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
