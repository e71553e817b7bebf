"""``cacheproxy verify`` in a real process: each corrupt file is reported once, on stdout,
and nothing else reaches the terminal (no log record repeating it on stderr)."""

import asyncio
import sys
from pathlib import Path

from aiohttp import web
from aiohttp.test_utils import TestClient
from conftest import ProxyFactory
from fakeindex import FakeIndex

Client = TestClient[web.Request, web.Application]


async def test_verify_reports_each_bad_file_once(
    make_proxy: ProxyFactory, fake: FakeIndex, cache_dir: Path
) -> None:
    proxy = await make_proxy()
    f = next(f for f in fake.files("alpha") if f.filename.endswith(".whl"))
    assert await (await proxy.get(f.url_path)).read() == f.data
    await proxy.close()
    stored = next(p for p in (cache_dir / "files").rglob(f.sha256) if p.is_file())
    stored.write_bytes(b"bit rot")
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "cacheproxy", "verify", "--cache-dir", str(cache_dir),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out_b, err_b = await asyncio.wait_for(proc.communicate(), 60)
    out, err = out_b.decode(), err_b.decode()
    assert proc.returncode == 1
    assert (out + err).count(f.sha256) == 1, out + err
    assert f"corrupt, removed: {stored}" in out
    assert "1 corrupt and removed" in out
    assert err == ""
