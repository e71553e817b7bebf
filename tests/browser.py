"""Headless Chromium for the status page's browser tests (they skip without it)."""

import asyncio
import os
import signal
import time
from contextlib import suppress
from pathlib import Path

import pytest

CHROMIUM = Path("/usr/bin/chromium")


needs_chromium = pytest.mark.skipif(
    not CHROMIUM.exists(),
    reason="headless Chromium is not installed (/usr/bin/chromium: apt-get install chromium)",
)


CHROMIUM_TIMEOUT = 60.0


CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",  # as root, and in containers without user namespaces
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    # Without these Chromium phones home at start-up; this network refuses it.
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
    "--force-device-scale-factor=1",
    # Nothing but loopback resolves: a stray external reference fails to load, it never
    # leaves the machine.
    "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
)


async def run_chromium(tmp_path: Path, *args: str) -> str:
    """Run headless Chromium to completion (``CHROMIUM_TIMEOUT`` at most); its stdout."""
    profile = tmp_path / f"profile-{time.monotonic_ns()}"
    proc = await asyncio.create_subprocess_exec(
        str(CHROMIUM),
        *CHROMIUM_FLAGS,
        f"--user-data-dir={profile}",
        *args,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        # Its own process group: the renderer and zygote helpers go with it on a timeout.
        start_new_session=True,
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(), CHROMIUM_TIMEOUT)
    except TimeoutError:
        pytest.fail(f"chromium did not finish within {CHROMIUM_TIMEOUT:.0f} s: {args}")
    finally:
        with suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        await proc.wait()
    assert proc.returncode == 0, err.decode(errors="replace")[-2000:]
    return out.decode()
