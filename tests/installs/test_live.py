"""The one test against the real upstream: pip installs two small projects through the proxy.

Marked ``live``; it skips with the reason when the upstream pip is configured with (else
pip's default index) cannot be reached.
"""

import os
import sys
from pathlib import Path

import aiohttp
import pytest
from clients import installed, run
from pytest_aiohttp import AiohttpServer
from yarl import URL

from cacheproxy.settings import Settings, normalise_index_url, pip_index_url
from cacheproxy.web.app import create_app

pytestmark = [pytest.mark.live, pytest.mark.clients]


async def reachable(url: URL) -> str | None:
    """None when ``url`` answers; otherwise why not."""
    try:
        async with (
            aiohttp.ClientSession(trust_env=True) as session,
            session.get(url / "six" / "", timeout=aiohttp.ClientTimeout(total=10)) as resp,
        ):
            return None if resp.status == 200 else f"HTTP {resp.status}"
    except (aiohttp.ClientError, TimeoutError) as e:
        return f"{type(e).__name__}: {e}"


async def test_pip_installs_from_the_real_index(
    aiohttp_server: AiohttpServer, tmp_path: Path
) -> None:
    upstream = normalise_index_url(pip_index_url(os.environ))
    if (why := await reachable(upstream)) is not None:
        pytest.skip(f"upstream index unreachable ({why})")
    settings = Settings(cache_dir=tmp_path / "cache", upstream=upstream)
    server = await aiohttp_server(create_app(settings))
    index = str(server.make_url("/simple/"))
    cmd = [
        sys.executable, "-m", "pip", "install", "--no-cache-dir", "--index-url", index,
        "--target", str(tmp_path / "t"), "six==1.16.0", "idna==3.10",
    ]  # fmt: skip
    out = await run(cmd, tmp_path)
    assert installed(tmp_path / "t") == {"six", "idna"}, out
    stored = [p for p in (tmp_path / "cache" / "files").rglob("*") if p.is_file()]
    # The two wheels, plus the METADATA of each that the index gives no PEP 658 file for,
    # read from the wheel by the proxy (proxy/metadata.py) and fetched by pip.
    wheels = [p for p in stored if p.read_bytes()[:2] == b"PK"]
    assert len(wheels) == 2
    assert all(p.read_bytes().startswith(b"Metadata-Version") for p in stored if p not in wheels)
