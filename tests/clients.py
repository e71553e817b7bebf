"""Running real pip and uv against the proxy, without blocking the loop that serves it."""

import asyncio
import sys
from pathlib import Path

from conftest import client_env, uv_binary


async def run(cmd: list[str], tmp: Path, cwd: Path | None = None) -> str:
    """Run a client without blocking the loop that serves the proxy and the fake."""
    proc = await asyncio.create_subprocess_exec(
        *cmd,
        env=client_env(tmp),
        cwd=cwd,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await asyncio.wait_for(proc.communicate(), timeout=120)
    text = out.decode(errors="replace")
    assert proc.returncode == 0, f"{cmd[:4]} failed:\n{text}"
    return text


def pip_cmd(index: str, target: Path, *reqs: str) -> list[str]:
    return [
        sys.executable, "-m", "pip", "install", "--no-cache-dir", "--index-url", index,
        "--target", str(target), *reqs,
    ]  # fmt: skip


def uv_cmd(index: str, target: Path, *reqs: str) -> list[str]:
    return [
        uv_binary(), "pip", "install", "--no-cache", "--index-url", index,
        "--python", sys.executable, "--target", str(target), *reqs,
    ]  # fmt: skip


def installed(target: Path) -> set[str]:
    return {p.name.split("-")[0].lower() for p in target.glob("*.dist-info")}
