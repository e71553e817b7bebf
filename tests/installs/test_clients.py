"""Real clients through the real proxy: pip and uv install, cold then warm.

The warm run must make zero upstream file requests, whatever the clients' own caches do
(they are disabled here, as they are after ``docker builder prune``).
"""

from pathlib import Path

import pytest
from aiohttp.test_utils import TestServer
from clients import installed, pip_cmd, run, uv_cmd
from conftest import make_settings
from fakeindex import FakeIndex
from pytest_aiohttp import AiohttpServer

from cacheproxy.web.app import create_app

pytestmark = pytest.mark.clients


ALL = ("alpha", "gamma", "big", "nometa")  # alpha pulls in beta 1.0 (2.0 is yanked)


@pytest.mark.parametrize("tool", ["pip", "uv"])
async def test_install_cold_then_warm(
    tool: str, proxy_server: TestServer, fake: FakeIndex, tmp_path: Path
) -> None:
    index = str(proxy_server.make_url("/simple/"))
    make = pip_cmd if tool == "pip" else uv_cmd
    cold = tmp_path / "cold"
    out = await run(make(index, cold, *ALL), tmp_path)
    assert installed(cold) == {"alpha", "beta", "gamma", "big", "nometa"}
    assert "Range requests not supported" not in out
    assert (cold / "beta" / "__init__.py").read_text().strip() == '__version__ = "1.0"'
    # The yanked beta 2.0 was never chosen, so never downloaded.
    assert fake.file_gets("beta-2.0-py3-none-any.whl") == []
    whole = [r for r in fake.file_gets() if r.method == "GET" and "range" not in r.headers]
    assert len(whole) == 5  # one per wheel
    # nometa's index gives no PEP 658 metadata: the proxy read it from the wheel's zip
    # directory with a few small ranges (proxy/metadata.py), for pip and uv alike.
    ranges = [r for r in fake.file_gets() if "range" in r.headers]
    assert 1 <= len(ranges) <= 3
    assert all("nometa" in r.path for r in ranges)
    fake.clear_log()
    warm = tmp_path / "warm"
    await run(make(index, warm, *ALL), tmp_path)
    assert installed(warm) == installed(cold)
    assert fake.file_gets() == []
    assert [r for r in fake.requests if r.host == "files"] == []


async def test_pip_require_hashes(
    proxy_server: TestServer, fake: FakeIndex, tmp_path: Path
) -> None:
    """Lock files and --require-hashes see upstream's bytes exactly (the #sha256 fragment
    kept, the bytes unchanged)."""
    alpha = next(f for f in fake.files("alpha") if f.filename.endswith(".whl"))
    beta = fake.files("beta")[0]
    reqs = tmp_path / "requirements.txt"
    reqs.write_text(
        f"alpha==1.0 --hash=sha256:{alpha.sha256}\nbeta==1.0 --hash=sha256:{beta.sha256}\n"
    )
    index = str(proxy_server.make_url("/simple/"))
    out = await run(pip_cmd(index, tmp_path / "t", "--require-hashes", "-r", str(reqs)), tmp_path)
    assert "Successfully installed alpha-1.0 beta-1.0" in out


async def test_uv_without_metadata_uses_ranges(
    aiohttp_server: AiohttpServer, fake: FakeIndex, tmp_path: Path
) -> None:
    """No PEP 658 metadata (upstream has none and the proxy makes none): uv probes with
    HEAD + Range, and must not fall back to streaming."""
    settings = make_settings(tmp_path / "c", fake.index_url, synthesize_metadata=False)
    proxy_server = await aiohttp_server(create_app(settings))
    index = str(proxy_server.make_url("/simple/"))
    out = await run([*uv_cmd(index, tmp_path / "t", "nometa"), "-v"], tmp_path)
    assert "Range requests not supported" not in out
    assert len([r for r in fake.file_gets("nometa-1.0-py3-none-any.whl") if r.method == "GET"]) == 1
