"""Several upstream indexes behind one proxy: each project from exactly the index its route
names, never merged, never falling through (cacheproxy/indexes.py, proxy/routing.py).

Two fake indexes: ``fake`` (the default, "pypi") and ``private`` ("acme"), which also
publishes an ``acme-lib`` of its own while ``fake`` carries an attacker's ``acme-lib 99.0``
(the dependency-confusion setup). The fakes' request logs prove who was asked for what.
"""

import asyncio
import hashlib
import re
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from conftest import Dists, make_settings
from distbuild import build_wheel
from fakeindex import FakeIndex
from pytest_aiohttp import AiohttpClient, AiohttpServer
from yarl import URL

from cacheproxy.indexes import IndexConfig, Route
from cacheproxy.simple.layout import index_of_key, index_rest
from cacheproxy.web.app import create_app
from cacheproxy.web.keys import proxy_key

Client = TestClient[web.Request, web.Application]
JSON = {"Accept": "application/vnd.pypi.simple.v1+json"}


@pytest.fixture(scope="session")
def acme_dists(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("acme")
    return {
        "ours": build_wheel(out, "acme-lib", "1.0"),
        "attacker": build_wheel(out, "acme-lib", "99.0"),
        "tool": build_wheel(out, "acme-tool", "2.0"),
        "loose": build_wheel(out, "loose", "1.0"),
    }


@pytest.fixture
async def private(aiohttp_server: AiohttpServer, acme_dists: dict[str, Path]) -> FakeIndex:
    index = FakeIndex()
    index.add_file("acme-lib", acme_dists["ours"])
    index.add_file("acme-tool", acme_dists["tool"])
    await index.start(aiohttp_server)
    return index


@pytest.fixture
def two_indexes(fake: FakeIndex, private: FakeIndex, acme_dists: dict[str, Path]) -> None:
    fake.add_file("acme-lib", acme_dists["attacker"])  # the public impostor


ProxyMaker = Callable[..., Awaitable[Client]]


@pytest.fixture
def make_routed(
    aiohttp_client: AiohttpClient,
    fake: FakeIndex,
    private: FakeIndex,
    cache_dir: Path,
    two_indexes: None,
) -> ProxyMaker:
    async def factory(
        *, acme: dict[str, Any] | None = None, acme_url: str | None = None, **overrides: Any
    ) -> Client:
        indexes = (
            IndexConfig(name="pypi", url=URL(fake.index_url)),
            IndexConfig(name="acme", url=URL(acme_url or private.index_url), **(acme or {})),
        )
        routes = (Route("acme-*", "acme"),)
        settings = make_settings(
            cache_dir, fake.index_url, indexes=indexes, routes=routes, **overrides
        )
        return await aiohttp_client(create_app(settings))

    return factory


def files_of(doc: dict[str, Any]) -> list[str]:
    return [f["filename"] for f in doc["files"]]


async def test_routed_project_comes_only_from_its_index(
    make_routed: ProxyMaker, fake: FakeIndex, private: FakeIndex
) -> None:
    proxy = await make_routed()
    resp = await proxy.get("/simple/acme-lib/", headers=JSON)
    assert resp.status == 200
    doc = await resp.json(content_type=None)
    assert files_of(doc) == ["acme_lib-1.0-py3-none-any.whl"]  # never the impostor's 99.0
    link = doc["files"][0]["url"]
    assert link.startswith("../../packages/-/acme/")
    assert fake.page_gets("acme-lib") == []  # the default index was never asked
    assert len(private.page_gets("acme-lib")) == 1
    wheel = private.files("acme-lib")[0]
    got = await proxy.get(str(URL("/simple/acme-lib/").join(URL(link))))
    assert got.status == 200
    assert await got.read() == wheel.data
    assert fake.file_gets() == []
    assert len(private.file_gets(wheel.filename)) == 1


async def test_unrouted_project_comes_only_from_the_default(
    make_routed: ProxyMaker, fake: FakeIndex, private: FakeIndex
) -> None:
    proxy = await make_routed()
    doc = await (await proxy.get("/simple/alpha/", headers=JSON)).json(content_type=None)
    assert "alpha-1.0-py3-none-any.whl" in files_of(doc)
    assert doc["files"][0]["url"].startswith("../../packages/")
    assert "/-/" not in doc["files"][0]["url"]
    assert private.requests == []
    # The default index has no "acme-tool": a project routed nowhere is not looked up
    # elsewhere either: it is the default's 404.
    assert (await proxy.get("/simple/tool-x/")).status == 404
    assert private.requests == []


async def test_both_views_serve_the_same_bytes(make_routed: ProxyMaker, private: FakeIndex) -> None:
    proxy = await make_routed()
    for accept in (JSON, {"Accept": "text/html"}):
        routed = await (await proxy.get("/simple/acme-lib/", headers=accept)).read()
        alone = await (await proxy.get("/index/acme/simple/acme-lib/", headers=accept)).read()
        assert routed == alone
        assert b"acme_lib-1.0" in routed
    assert len(private.page_gets("acme-lib")) == 1  # one record behind both views
    doc = await (await proxy.get("/simple/acme-lib/", headers=JSON)).json(content_type=None)
    link = doc["files"][0]["url"]
    wheel = private.files("acme-lib")[0]
    # The single-index view's link resolves under /index/acme/: the same file.
    via_index = await proxy.get(str(URL("/index/acme/simple/acme-lib/").join(URL(link))))
    via_routed = await proxy.get(str(URL("/simple/acme-lib/").join(URL(link))))
    assert await via_index.read() == await via_routed.read() == wheel.data
    assert len(private.file_gets(wheel.filename)) == 1
    # The default index alone: its own acme-lib (the impostor), under its own key.
    impostor = await (await proxy.get("/index/pypi/simple/acme-lib/", headers=JSON)).json(
        content_type=None
    )
    assert files_of(impostor) == ["acme_lib-99.0-py3-none-any.whl"]
    assert (await proxy.get("/index/nope/simple/acme-lib/")).status == 404
    assert (await proxy.get("/index/nope/packages/-/nope/x/a-1.0.tar.gz")).status == 404


async def test_routed_404_is_the_clients_404(
    make_routed: ProxyMaker, fake: FakeIndex, private: FakeIndex
) -> None:
    proxy = await make_routed()
    resp = await proxy.get("/simple/acme-missing/")
    assert resp.status == 404
    assert "acme" in await resp.text()
    assert fake.page_gets("acme-missing") == []


@pytest.mark.parametrize(
    ("status", "expected"), [(401, 502), (403, 502), (500, 502), (503, 502), (429, 502)]
)
async def test_routed_failures_never_fall_through(
    make_routed: ProxyMaker, fake: FakeIndex, private: FakeIndex, status: int, expected: int
) -> None:
    proxy = await make_routed()
    private.fail_pages(status)
    resp = await proxy.get("/simple/acme-lib/")
    assert resp.status == expected
    assert fake.page_gets("acme-lib") == []
    # A copy from before is served stale, still from its own index only.
    private.reset_faults()
    assert (await proxy.get("/simple/acme-lib/")).status == 200
    private.fail_pages(status)
    stale = await proxy.get("/simple/acme-lib/", headers={"Cache-Control": "max-age=0"})
    assert stale.status == 200
    assert stale.headers["X-Cache"] in ("STALE", "HIT")
    assert fake.page_gets("acme-lib") == []


async def test_routed_timeout_is_504_never_the_default(
    make_routed: ProxyMaker, fake: FakeIndex, private: FakeIndex
) -> None:
    proxy = await make_routed(acme={"page_timeout": 0.3})
    private.delay_pages(2.0)
    resp = await proxy.get("/simple/acme-lib/")
    assert resp.status == 504
    assert fake.page_gets("acme-lib") == []


async def test_forbidden_is_missing(
    make_routed: ProxyMaker, fake: FakeIndex, private: FakeIndex
) -> None:
    private.missing_status = 403  # as PyTorch's index answers
    strict = await make_routed()
    assert (await strict.get("/simple/acme-nothing/")).status == 502
    lenient = await make_routed(acme={"forbidden_is_missing": True})
    resp = await lenient.get("/simple/acme-nothing/")
    assert resp.status == 404
    assert fake.page_gets("acme-nothing") == []
    # A real 403 for a project it has is not "missing" when the setting is off only;
    # with it on, the project it has is still served.
    assert (await lenient.get("/simple/acme-lib/")).status == 200


async def test_files_on_another_host_than_the_index(
    make_routed: ProxyMaker, fake: FakeIndex, private: FakeIndex
) -> None:
    """The private index links its files on the default index's file host (PyTorch's
    links some on PyPI's); they are fetched from there, through the private index's
    route, with no credentials of the private index."""
    private.serve_files_from(fake)
    proxy = await make_routed(acme_url=str(URL(private.index_url).with_user("ci")))
    doc = await (await proxy.get("/simple/acme-lib/", headers=JSON)).json(content_type=None)
    link = doc["files"][0]["url"]
    assert link.startswith("../../packages/-/acme/")
    got = await proxy.get(str(URL("/simple/acme-lib/").join(URL(link))))
    wheel = private.files("acme-lib")[0]
    assert await got.read() == wheel.data
    assert [r.host for r in fake.file_gets(wheel.filename)] == ["files"]
    assert private.file_gets() == []


async def test_index_credentials_go_to_its_origin_only(
    make_routed: ProxyMaker, fake: FakeIndex, private: FakeIndex
) -> None:
    private.serve_files_from(fake)  # same host as the index, another port
    token = "s3cret-token-123"
    acme_url = str(URL(private.index_url).with_user("ci").with_password(token))
    proxy = await make_routed(acme_url=acme_url)
    doc = await (await proxy.get("/simple/acme-lib/", headers=JSON)).json(content_type=None)
    got = await proxy.get(str(URL("/simple/acme-lib/").join(URL(doc["files"][0]["url"]))))
    assert got.status == 200
    assert all("authorization" in r.headers for r in private.page_gets("acme-lib"))
    assert not any("authorization" in r.headers for r in fake.requests)


async def test_index_credentials_never_shown(make_routed: ProxyMaker, private: FakeIndex) -> None:
    token = "s3cret-token-123"
    acme_url = str(URL(private.index_url).with_user("ci").with_password(token))
    proxy = await make_routed(acme_url=acme_url)
    private.fail_pages(500)
    error = await proxy.get("/simple/acme-lib/")
    assert error.status == 502
    assert token not in await error.text()
    private.reset_faults()
    assert (await proxy.get("/simple/acme-lib/")).status == 200
    assert all("authorization" in r.headers for r in private.page_gets("acme-lib"))
    for path in ("/-/stats", "/-/metrics", "/", "/simple/acme-lib/", "/index/acme/simple/"):
        assert token not in await (await proxy.get(path)).text()
    assert token not in await (await proxy.get("/-/metrics")).text()
    assert token not in await (await proxy.get("/")).text()


async def test_a_hashless_file_is_pinned_by_its_first_download(
    make_routed: ProxyMaker, private: FakeIndex, cache_dir: Path
) -> None:
    wheel = private.files("acme-tool")[0]
    private.hashless.add(wheel.filename)
    proxy = await make_routed()
    doc = await (await proxy.get("/simple/acme-tool/", headers=JSON)).json(content_type=None)
    assert doc["files"][0]["hashes"] == {}
    link = str(URL("/simple/acme-tool/").join(URL(doc["files"][0]["url"])))
    first = await proxy.get(link)
    assert first.status == 200
    assert await first.read() == wheel.data
    # From then on the pages carry the pinned hash and size, in both representations.
    for _ in range(250):  # the page is marked for a new rendering in the background
        resp = await proxy.get("/simple/acme-tool/", headers=JSON)
        doc = await resp.json(content_type=None)
        if doc["files"][0]["hashes"]:
            break
        await asyncio.sleep(0.02)
    assert doc["files"][0]["hashes"] == {"sha256": wheel.sha256}
    assert doc["files"][0]["size"] == wheel.size
    html = await (await proxy.get("/simple/acme-tool/", headers={"Accept": "text/html"})).text()
    assert f"#sha256={wheel.sha256}" in html
    # The stored copy answers under its hash now: no second download.
    again = await proxy.get(link)
    assert again.headers["X-Cache"] == "HIT"
    assert await again.read() == wheel.data
    assert len(private.file_gets(wheel.filename)) == 1
    # The stored copy goes (evicted, say) and the index now sends other bytes for that
    # URL: refused like a wrong hash, nothing stored.
    for stored in (cache_dir / "files").rglob("*"):
        if stored.is_file():
            stored.unlink()
    private.corrupt_files()
    private.clear_log()
    bad = await proxy.get(link)
    if bad.status == 200:  # the transfer had started: it must break off, never complete
        with pytest.raises(Exception):  # noqa: B017, PT011 - aiohttp's payload error
            await bad.read()
    else:
        assert bad.status == 502
    assert len(private.file_gets(wheel.filename)) == 1
    assert not [p for p in (cache_dir / "files").rglob("*") if p.is_file()]
    private.reset_faults()
    good = await proxy.get(link)
    assert good.status == 200
    assert hashlib.sha256(await good.read()).hexdigest() == wheel.sha256


async def test_the_same_file_from_two_indexes_is_stored_once(
    make_routed: ProxyMaker, fake: FakeIndex, private: FakeIndex, dists: Dists, cache_dir: Path
) -> None:
    private.add_file("gamma", dists.gamma)  # byte-identical to the default's gamma
    proxy = await make_routed()
    for base in ("/simple/gamma/", "/index/acme/simple/gamma/"):
        doc = await (await proxy.get(base, headers=JSON)).json(content_type=None)
        got = await proxy.get(str(URL(base).join(URL(doc["files"][0]["url"]))))
        assert got.status == 200
        await got.read()
    stored = [p for p in (cache_dir / "files").rglob("*") if p.is_file()]
    assert len(stored) == 1
    # The second index's link resolved to the bytes already stored by their hash.
    assert len(fake.file_gets("gamma-0.1+abc-py3-none-any.whl")) == 1
    assert private.file_gets() == []


async def test_pep_708_fields_pass_through(make_routed: ProxyMaker, private: FakeIndex) -> None:
    private.page_fields["acme-lib"] = {
        "tracks": ["https://upstream.example/simple/acme-lib/"],
        "alternate-locations": ["https://mirror.example/simple/acme-lib/"],
    }
    proxy = await make_routed()
    doc = await (await proxy.get("/simple/acme-lib/", headers=JSON)).json(content_type=None)
    assert doc["tracks"] == ["https://upstream.example/simple/acme-lib/"]
    assert doc["alternate-locations"] == ["https://mirror.example/simple/acme-lib/"]
    html = await (
        await proxy.get("/index/acme/simple/acme-lib/", headers={"Accept": "text/html"})
    ).text()
    assert '<meta name="pypi:tracks" content="https://upstream.example/simple/acme-lib/">' in html


async def test_figures_say_which_index_served_what(
    make_routed: ProxyMaker, private: FakeIndex
) -> None:
    proxy = await make_routed()
    await (await proxy.get("/simple/acme-lib/")).read()
    await (await proxy.get("/simple/alpha/")).read()
    await (await proxy.get("/simple/alpha/")).read()
    metrics = await (await proxy.get("/-/metrics")).text()
    assert re.search(
        r'cacheproxy_index_requests_total\{cache="MISS",index="acme",route="page",'
        r'status="2xx"\} 1\.0',
        metrics,
    ), metrics
    assert re.search(
        r'cacheproxy_index_upstream_requests_total\{index="acme",kind="page",outcome="ok"\} 1',
        metrics,
    )
    stats = await (await proxy.get("/-/stats")).json()
    by_name = {i["name"]: i for i in stats["indexes"]}
    assert by_name["acme"]["routes"] == ["acme-*"]
    assert by_name["acme"]["requests"]["hits"] + by_name["acme"]["requests"]["misses"] == 1
    assert by_name["pypi"]["requests"]["hits"] == 1
    assert by_name["pypi"]["default"] is True
    page = await (await proxy.get("/")).text()
    assert "acme-*" in page
    # A request naming an unknown index never becomes a label.
    await proxy.get("/index/made-up/simple/x/")
    assert "made-up" not in await (await proxy.get("/-/metrics")).text()


async def test_invalidating_a_project_forgets_it_on_every_index(
    make_routed: ProxyMaker, fake: FakeIndex, private: FakeIndex
) -> None:
    token = "t" * 20
    proxy = await make_routed(admin_token=token, index_ttl=3600)
    for path in ("/simple/acme-lib/", "/index/pypi/simple/acme-lib/"):
        assert (await proxy.get(path)).status == 200
    auth = {"Authorization": f"Bearer {token}"}
    resp = await proxy.post("/-/admin/invalidate/acme-lib", headers=auth)
    assert await resp.json() == {"invalidated": 2, "project": "acme-lib"}
    fake.clear_log()
    private.clear_log()
    assert (await proxy.get("/simple/acme-lib/")).headers["X-Cache"] == "MISS"
    assert len(private.page_gets("acme-lib")) == 1
    assert fake.page_gets("acme-lib") == []


def test_file_paths_say_which_index_listed_them() -> None:
    assert index_rest("ab/cd/x-1.0.tar.gz", "pypi", default=True) == "ab/cd/x-1.0.tar.gz"
    assert index_rest("ab/x-1.0.tar.gz", "acme", default=False) == "-/acme/ab/x-1.0.tar.gz"
    # A default-index path that looks like another index's (a cacheproxy upstream's links)
    # is put under the default's own name, so it can never be taken for that index's.
    escaped = index_rest("-/acme/x-1.0.tar.gz", "pypi", default=True)
    assert escaped == "-/pypi/-/acme/x-1.0.tar.gz"
    assert index_of_key(escaped) == "pypi"
    assert index_of_key("-/acme/ab/x-1.0.tar.gz") == "acme"
    assert index_of_key("ab/cd/x-1.0.tar.gz") is None


async def test_the_routed_project_list_names_only_what_it_serves_from_the_default(
    make_routed: ProxyMaker, fake: FakeIndex, private: FakeIndex
) -> None:
    proxy = await make_routed()
    routed = await (await proxy.get("/simple/", headers=JSON)).json(content_type=None)
    names = {p["name"] for p in routed["projects"]}
    assert "alpha" in names
    assert "acme-lib" not in names  # the default lists it, but it is routed to acme
    html = await (await proxy.get("/simple/", headers={"Accept": "text/html"})).text()
    assert "acme-lib" not in html
    alone = await (await proxy.get("/index/pypi/simple/", headers=JSON)).json(content_type=None)
    assert {"alpha", "acme-lib"} <= {p["name"] for p in alone["projects"]}
    acme = await (await proxy.get("/index/acme/simple/", headers=JSON)).json(content_type=None)
    assert {p["name"] for p in acme["projects"]} == {"acme-lib", "acme-tool"}
    assert [r.path for r in private.requests] == ["/simple/"]


async def test_the_json_api_follows_the_routes(
    make_routed: ProxyMaker, fake: FakeIndex, private: FakeIndex
) -> None:
    proxy = await make_routed()
    resp = await proxy.get("/pypi/acme-lib/json")
    assert resp.status == 200
    doc = await resp.json()
    assert doc["info"]["version"] == "1.0"  # the private index's, never the impostor's 99.0
    url = doc["urls"][0]["url"]
    assert "/packages/-/acme/" in url
    got = await proxy.get(URL(url).path_qs)
    assert await got.read() == private.files("acme-lib")[0].data
    assert fake.json_api_gets("acme-lib") == []
    assert fake.page_gets("acme-lib") == []
    assert len(private.json_api_gets("acme-lib")) == 1
    # The same document the project page's link resolves to: one file, one download.
    page = await (await proxy.get("/simple/acme-lib/", headers=JSON)).json(content_type=None)
    via_page = await proxy.get(str(URL("/simple/acme-lib/").join(URL(page["files"][0]["url"]))))
    assert via_page.headers["X-Cache"] == "HIT"
    assert len(private.file_gets()) == 1
    unrouted = await (await proxy.get("/pypi/alpha/json")).json()
    assert "/-/" not in unrouted["urls"][0]["url"]
    assert private.json_api_gets("alpha") == []


async def test_download_slots_bound_the_process_not_each_index(make_routed: ProxyMaker) -> None:
    proxy = await make_routed(max_downloads=3)
    pypi, acme = proxy.app[proxy_key].indexes.all
    assert acme.upstream._slots is pypi.upstream._slots  # one --max-downloads for all


async def test_a_bare_file_path_never_leads_to_the_default_for_a_routed_project(
    make_routed: ProxyMaker, fake: FakeIndex, private: FakeIndex
) -> None:
    """A lock file's URL with its prefix swapped (``/packages/<path>``) names the default
    index's file space: for a project routed elsewhere it is a 404 that says where its
    files are, and the default index is not asked about the name."""
    proxy = await make_routed()
    impostor = fake.files("acme-lib")[0]
    for path in (impostor.url_path, impostor.url_path + ".metadata"):
        resp = await proxy.get(path)
        assert resp.status == 404
        assert "index acme" in await resp.text()
    assert fake.page_gets("acme-lib") == []
    assert fake.file_gets() == []
    # The default index alone still shows its own acme-lib, its links naming that index,
    # and they resolve (only there) to its bytes.
    base = "/index/pypi/simple/acme-lib/"
    doc = await (await proxy.get(base, headers=JSON)).json(content_type=None)
    link = doc["files"][0]["url"]
    assert link.startswith("../../packages/-/pypi/")
    got = await proxy.get(str(URL(base).join(URL(link))))
    assert await got.read() == impostor.data
    assert private.file_gets() == []


async def test_metadata_of_a_routed_wheel_is_read_from_its_index(
    make_routed: ProxyMaker, fake: FakeIndex, private: FakeIndex, tmp_path: Path
) -> None:
    """PEP 658 metadata the proxy reads from a wheel (proxy/metadata.py) comes by ranges of
    the wheel on its own index, with that index's credentials and address rules."""
    private.add_file("acme-bare", build_wheel(tmp_path, "acme-bare", "1.0"), metadata=False)
    proxy = await make_routed()
    doc = await (await proxy.get("/simple/acme-bare/", headers=JSON)).json(content_type=None)
    (entry,) = doc["files"]
    assert entry["core-metadata"] is True  # advertised, no hash until it is read
    link = str(URL("/simple/acme-bare/").join(URL(entry["url"] + ".metadata")))
    assert "/packages/-/acme/" in link
    resp = await proxy.get(link)
    assert resp.status == 200
    assert b"Name: acme-bare" in await resp.read()
    assert [r for r in private.requests if "range" in r.headers]
    assert fake.requests == []
    # Through the index's own upstream (its address policy, its figures), not the default's.
    metrics = await (await proxy.get("/-/metrics")).text()
    assert 'index="acme",kind="file",outcome="ok"' in metrics
    assert 'index="pypi",kind="file"' not in metrics


async def test_an_index_can_have_its_own_release_age_gate(
    make_routed: ProxyMaker, fake: FakeIndex, private: FakeIndex
) -> None:
    # The fake's files are from 2024: a 2000-day gate holds them all on the default index,
    # while the team's own index (min_age = 0 in its [[index]] table) hands out at once.
    proxy = await make_routed(acme={"min_age": 0.0}, min_age=2000 * 86400.0)
    public = await (await proxy.get("/simple/alpha/", headers=JSON)).json(content_type=None)
    assert files_of(public) == []
    ours = await (await proxy.get("/simple/acme-lib/", headers=JSON)).json(content_type=None)
    assert files_of(ours) == ["acme_lib-1.0-py3-none-any.whl"]
    alpha = fake.files("alpha")[0]
    assert (await proxy.get(alpha.url_path)).status == 403


@pytest.mark.parametrize(
    ("global_min_age", "acme_min_age", "held", "shown"),
    [(7 * 86400.0, 0.0, "twin", "acme-twin"), (None, 7 * 86400.0, "acme-twin", "twin")],
)
async def test_each_route_gates_a_same_age_release_by_its_own_min_age(
    make_routed: ProxyMaker,
    fake: FakeIndex,
    private: FakeIndex,
    tmp_path: Path,
    global_min_age: float | None,
    acme_min_age: float,
    held: str,
    shown: str,
) -> None:
    # The same release, an hour old, on each index: "twin" from the default, "acme-twin"
    # routed to acme. The route with a 7-day min_age holds it; the other hands it out.
    hour_ago = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() - 3600))
    out = tmp_path / "same-age"
    fake.add_file("twin", build_wheel(out, "twin", "1.0"), upload_time=hour_ago)
    private.add_file("acme-twin", build_wheel(out, "acme-twin", "1.0"), upload_time=hour_ago)
    undated = build_wheel(out, "acme-undated", "1.0")
    private.add_file("acme-undated", undated, no_upload_time=True)
    proxy = await make_routed(acme={"min_age": acme_min_age}, min_age=global_min_age)
    # min_age 0 is no cooldown there: not even a file without an upload time is held.
    page = await (await proxy.get("/simple/acme-undated/", headers=JSON)).json(content_type=None)
    assert files_of(page) == ([] if acme_min_age else [undated.name])
    by_name = {"twin": fake, "acme-twin": private}
    page = await (await proxy.get(f"/simple/{held}/", headers=JSON)).json(content_type=None)
    assert files_of(page) == []
    page = await (await proxy.get(f"/simple/{shown}/", headers=JSON)).json(content_type=None)
    assert files_of(page) == [by_name[shown].files(shown)[0].filename]
    held_file = by_name[held].files(held)[0]
    # Not on its page: its path on the proxy, as a lock file would have it.
    rest = held_file.url_path.removeprefix("/packages/")
    default = held == "twin"
    refused = await proxy.get("/packages/" + index_rest(rest, "acme", default=default))
    assert refused.status == 403
    assert f"{held_file.filename} is held back by the release-age gate until" in (
        await refused.text()
    )
    assert by_name[held].file_gets(held_file.filename) == []
    served = await proxy.get(str(URL(f"/simple/{shown}/").join(URL(page["files"][0]["url"]))))
    assert await served.read() == by_name[shown].files(shown)[0].data
    assert (await proxy.get(f"/pypi/{held}/json")).status == 403  # the JSON API alike
    assert (await proxy.get(f"/pypi/{shown}/json")).status == 200
    stats = await (await proxy.get("/-/stats")).json()
    held_names = [held_file.filename, *([undated.name] if acme_min_age else [])]
    assert [h["filename"] for h in stats["gate"]["held"]] == held_names
    assert stats["gate"]["min_age_by_index"] == {"acme": acme_min_age or None}
