"""Inputs and the command line of `cacheproxy warm`, shared by its tests and the CLI tests."""

import asyncio
import sys
from collections.abc import Sequence
from pathlib import Path

from conftest import client_env
from fakeindex import FakeIndex


def poetry_lock_text(fake: FakeIndex, projects: Sequence[str]) -> str:
    """A Poetry 2 lock: filenames and hashes only, no URLs."""
    out = []
    for name in projects:
        files = [f for f in fake.files(name) if f.version == fake.files(name)[0].version]
        entries = "".join(
            f'    {{file = "{f.filename}", hash = "sha256:{f.sha256}"}},\n' for f in files
        )
        out.append(
            f'[[package]]\nname = "{name}"\nversion = "{files[0].version}"\n'
            f'description = ""\noptional = false\npython-versions = "*"\n'
            f'groups = ["main"]\nfiles = [\n{entries}]\n\n'
        )
    out.append('[metadata]\nlock-version = "2.1"\npython-versions = "^3.8"\ncontent-hash = "0"\n')
    return "".join(out)


async def warm_cli(tmp: Path, *args: str) -> tuple[int, str, str]:
    """``cacheproxy warm`` as a user runs it: another process, stdout not a terminal."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "cacheproxy.cli.warm", "warm", *args,
        env=client_env(tmp), stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(), timeout=120)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()
