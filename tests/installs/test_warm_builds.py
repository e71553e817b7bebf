"""A warm build within the index TTL asks upstream for nothing, with every client.

pip sends ``Cache-Control: max-age=0`` with every page request (until pypa/pip#13955;
since then with ``--refresh-package``). The proxy's ``--index-ttl``
decides by default (as nginx, devpi and proxpi do); ``--client-revalidate-after`` brings the
client's word back. "Minutes later" is made by ageing the stored pages, not by waiting.
"""

from dataclasses import replace
from pathlib import Path

import pytest
from aiohttp import web
from clients import installed, pip_cmd, run, uv_cmd
from conftest import make_settings
from fakeindex import FakeIndex
from pytest_aiohttp import AiohttpServer

from cacheproxy.web.app import create_app
from cacheproxy.web.keys import proxy_key

pytestmark = pytest.mark.clients

WANTED = ("alpha", "gamma")  # alpha pulls in beta


async def age_pages(app: web.Application, seconds: float) -> None:
    """Make every stored page ``seconds`` older, as if the build ran that much later."""
    proxy = app[proxy_key]
    await proxy.pages.flush()
    for key, record in list(proxy.storage.page_records()):
        assert record is not None
        await proxy.storage.put_page(key, replace(record, fetched_at=record.fetched_at - seconds))
    proxy.pages.forget_all()


def page_requests(fake: FakeIndex) -> list[str]:
    return [r.path for r in fake.requests if r.host == "index" and r.path.startswith("/simple/")]


@pytest.mark.parametrize(
    ("tool", "revalidate_after", "upstream_pages"),
    [("pip", None, 0), ("uv", None, 0), ("pip", 30.0, 3)],
    ids=["pip", "uv", "pip-client-revalidate-after-30s"],
)
async def test_warm_build_within_ttl_asks_upstream_nothing(
    tool: str,
    revalidate_after: float | None,
    upstream_pages: int,
    aiohttp_server: AiohttpServer,
    fake: FakeIndex,
    cache_dir: Path,
    tmp_path: Path,
) -> None:
    settings = make_settings(
        cache_dir, fake.index_url, index_ttl=600.0, client_revalidate_after=revalidate_after
    )
    server = await aiohttp_server(create_app(settings))
    index = str(server.make_url("/simple/"))

    def make(target: Path) -> list[str]:
        if tool == "uv":
            return uv_cmd(index, target, *WANTED)
        # pip sent max-age=0 with every page request until pypa/pip#13955 (2026); since
        # then only with --refresh-package, which so stands in for older pips (those in
        # most base images).
        return pip_cmd(index, target, "--refresh-package", ":all:", *WANTED)

    await run(make(tmp_path / "cold"), tmp_path)
    assert installed(tmp_path / "cold") == {"alpha", "beta", "gamma"}
    await age_pages(server.app, 180)  # three minutes later, well within the 10-minute TTL
    fake.clear_log()
    await run(make(tmp_path / "warm"), tmp_path)
    assert installed(tmp_path / "warm") == {"alpha", "beta", "gamma"}
    assert len(page_requests(fake)) == upstream_pages, page_requests(fake)
    assert fake.file_gets() == []
