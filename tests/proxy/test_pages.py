"""Index pages through the proxy: negotiation, normalisation, ETags, freshness and the policy.

Every test runs the real proxy app against the real fake upstream; caching is proven by the
fake's request log, never by timing.
"""

import asyncio
import gzip
import hashlib
import json
from html.parser import HTMLParser
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from conftest import YANK_REASON, ProxyFactory
from fakeindex import FakeIndex

JSON = "application/vnd.pypi.simple.v1+json"
V1_HTML = "application/vnd.pypi.simple.v1+html"
PIP_ACCEPT = (
    "application/vnd.pypi.simple.v1+json, application/vnd.pypi.simple.v1+html; q=0.1, "
    "text/html; q=0.01"
)
UV_ACCEPT = (
    "application/vnd.pypi.simple.v1+json, application/vnd.pypi.simple.v1+html;q=0.2, "
    "text/html;q=0.01"
)
Client = TestClient[web.Request, web.Application]


class Anchors(HTMLParser):
    """An independent PEP 503 reader for assertions (not the proxy's parser)."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.anchors: list[dict[str, str | None]] = []
        self.meta: dict[str, str | None] = {}

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "a":
            self.anchors.append(dict(attrs))
        elif tag == "meta":
            d = dict(attrs)
            self.meta[str(d.get("name"))] = d.get("content")


def anchors(text: str) -> Anchors:
    parser = Anchors()
    parser.feed(text)
    return parser


async def test_json_page_for_pip_t1(proxy: Client, fake: FakeIndex) -> None:
    resp = await proxy.get("/simple/beta/", headers={"Accept": PIP_ACCEPT})
    assert resp.status == 200
    assert resp.headers["Content-Type"] == JSON
    assert resp.headers["X-Cache"] == "MISS"
    data = json.loads(await resp.read())
    assert data["meta"]["api-version"] == "1.1"
    assert data["name"] == "beta"
    assert data["versions"] == ["1.0", "2.0"]
    expected = {f.filename: f for f in fake.files("beta")}
    assert [f["filename"] for f in data["files"]] == list(expected)
    for entry in data["files"]:
        f = expected[entry["filename"]]
        assert entry["hashes"] == {"sha256": f.sha256}
        assert entry["size"] == f.size
        assert entry["upload-time"] == f.upload_time
        # PEP 714: both names, the upstream hash.
        assert entry["core-metadata"] == {"sha256": f.metadata_sha256}
        assert entry["data-dist-info-metadata"] == {"sha256": f.metadata_sha256}
        # Links point at the proxy, relative to the page, never at upstream (3.1, 3.2).
        assert entry["url"] == f"../..{f.url_path}"
        assert fake.files_url not in json.dumps(entry)
    yanked = {e["filename"]: e["yanked"] for e in data["files"]}
    assert yanked == {"beta-1.0-py3-none-any.whl": False, "beta-2.0-py3-none-any.whl": YANK_REASON}


async def test_html_page_t2(proxy: Client, fake: FakeIndex) -> None:
    resp = await proxy.get("/simple/alpha/", headers={"Accept": "text/html"})
    assert resp.status == 200
    assert resp.headers["Content-Type"] == "text/html"
    text = await resp.text()
    assert 'data-requires-python="&gt;=3.8"' in text  # escaped as on PyPI (3.3)
    page = anchors(text)
    assert page.meta["pypi:repository-version"] == "1.1"
    files = {f.filename: f for f in fake.files("alpha")}
    assert len(page.anchors) == len(files) == 2
    for a in page.anchors:
        href = a["href"] or ""
        url, _, fragment = href.partition("#")
        f = files[url.rsplit("/", 1)[-1]]
        assert fragment == f"sha256={f.sha256}"
        assert url == f"../..{f.url_path}"
        assert a["data-requires-python"] == ">=3.8"
        if f.metadata_sha256:
            assert a["data-core-metadata"] == f"sha256={f.metadata_sha256}"
            assert a["data-dist-info-metadata"] == f"sha256={f.metadata_sha256}"
        else:
            assert "data-core-metadata" not in a


async def test_no_accept_is_html_t3(proxy: Client) -> None:
    resp = await proxy.get("/simple/alpha/", skip_auto_headers=["Accept"])
    assert resp.headers["Content-Type"] == "text/html"


@pytest.mark.parametrize(
    ("accept", "expected"),
    [
        (PIP_ACCEPT, JSON),
        (UV_ACCEPT, JSON),
        ("application/vnd.pypi.simple.v1+json, */*;q=0.1", JSON),  # poetry
        (f"{JSON};q=0.1, text/html", "text/html"),
        ("*/*", "text/html"),
        (V1_HTML, V1_HTML),
        ("application/vnd.pypi.simple.latest+json", JSON),
    ],
)
async def test_negotiation_by_q_value(proxy: Client, accept: str, expected: str) -> None:
    resp = await proxy.get("/simple/alpha/", headers={"Accept": accept})
    assert resp.status == 200
    assert resp.headers["Content-Type"] == expected


async def test_format_parameter_and_406(proxy: Client) -> None:
    resp = await proxy.get(f"/simple/alpha/?format={JSON}", headers={"Accept": "text/html"})
    assert resp.headers["Content-Type"] == JSON
    resp = await proxy.get("/simple/alpha/", headers={"Accept": "application/json"})
    assert resp.status == 406
    assert "application/vnd.pypi.simple.v1+json" in await resp.text()


@pytest.mark.parametrize("path", ["/simple/Alpha/", "/simple/alpha", "/simple/ALPHA"])
async def test_non_normalised_names_redirect_t4(proxy: Client, fake: FakeIndex, path: str) -> None:
    resp = await proxy.get(path, allow_redirects=False)
    assert resp.status == 301
    resp = await proxy.get(path)
    assert resp.status == 200
    assert resp.url.path == "/simple/alpha/"
    # One cache key per project: the redirect itself never reached upstream (1.2).
    assert [r.path for r in fake.page_gets()] == ["/simple/alpha/"]


async def test_unknown_project_404_and_negative_cache_t5(proxy: Client, fake: FakeIndex) -> None:
    for _ in range(2):
        resp = await proxy.get("/simple/no-such-thing/")
        assert resp.status == 404
        assert resp.headers["Content-Type"].startswith("text/plain")
        assert "no-such-thing" in await resp.text()
    assert len(fake.page_gets("no-such-thing")) == 1  # remembered for negative_ttl


async def test_invalid_project_name_is_400(proxy: Client, fake: FakeIndex) -> None:
    resp = await proxy.get("/simple/-bad-/")
    assert resp.status == 400
    assert fake.page_gets() == []


async def test_etags_vary_and_304_t6_t7(proxy: Client) -> None:
    j = await proxy.get("/simple/alpha/", headers={"Accept": JSON})
    h = await proxy.get("/simple/alpha/", headers={"Accept": "text/html"})
    assert j.headers["ETag"] != h.headers["ETag"]
    for resp in (j, h):
        assert "Accept" in resp.headers["Vary"]
        assert resp.headers["Cache-Control"].startswith("max-age=")
    again = await proxy.get(
        "/simple/alpha/", headers={"Accept": JSON, "If-None-Match": j.headers["ETag"]}
    )
    assert again.status == 304
    assert await again.read() == b""
    assert again.headers["ETag"] == j.headers["ETag"]
    assert "Accept" in again.headers["Vary"]
    # The HTML ETag does not validate the JSON representation.
    other = await proxy.get(
        "/simple/alpha/", headers={"Accept": JSON, "If-None-Match": h.headers["ETag"]}
    )
    assert other.status == 200


async def test_gzip_on_the_way_out_t13(proxy: Client) -> None:
    plain = await proxy.get(
        "/simple/beta/", headers={"Accept": JSON, "Accept-Encoding": "identity"}
    )
    body = await plain.read()
    resp = await proxy.get(
        "/simple/beta/",
        headers={"Accept": JSON, "Accept-Encoding": "gzip, deflate"},
        auto_decompress=False,
    )
    wire = await resp.read()
    assert resp.headers["Content-Encoding"] == "gzip"
    assert int(resp.headers["Content-Length"]) == len(wire)  # the compressed length (7.1)
    assert gzip.decompress(wire) == body
    assert resp.headers["ETag"] != plain.headers["ETag"]
    assert "Accept-Encoding" in resp.headers["Vary"]


async def test_gzip_from_upstream_t13(proxy: Client, fake: FakeIndex) -> None:
    fake.gzip_pages(True)
    resp = await proxy.get("/simple/beta/", headers={"Accept": JSON, "Accept-Encoding": "identity"})
    body = await resp.read()
    assert "Content-Encoding" not in resp.headers  # never forward upstream's coding
    assert int(resp.headers["Content-Length"]) == len(body)
    assert json.loads(body)["name"] == "beta"


async def test_yanked_reason_byte_exact_both_formats_t15(proxy: Client) -> None:
    data = await (await proxy.get("/simple/beta/", headers={"Accept": JSON})).json(
        content_type=None
    )
    assert data["files"][1]["yanked"] == YANK_REASON
    html = anchors(await (await proxy.get("/simple/beta/", headers={"Accept": "text/html"})).text())
    assert html.anchors[1]["data-yanked"] == YANK_REASON
    assert "data-yanked" not in html.anchors[0]


@pytest.mark.parametrize("quirks", [set(), {"no-content-type"}, {"relative-links"}, {"base-href"}])
async def test_html_only_upstreams(proxy: Client, fake: FakeIndex, quirks: set[str]) -> None:
    """Mirrors that speak only HTML, sloppily (peers proxpi#62/#75/#91)."""
    fake.serve_only = "html"
    fake.html_quirks = quirks
    resp = await proxy.get("/simple/beta/", headers={"Accept": JSON})
    assert resp.status == 200, await resp.text()
    data = json.loads(await resp.read())
    assert data["meta"]["api-version"] == "1.0"  # no sizes/versions from HTML (PEP 700)
    by_name = {f["filename"]: f for f in data["files"]}
    for f in fake.files("beta"):
        assert by_name[f.filename]["hashes"] == {"sha256": f.sha256}
        assert by_name[f.filename]["url"] == f"../..{f.url_path}"
    assert by_name["beta-2.0-py3-none-any.whl"]["yanked"] == YANK_REASON
    # The file behind the link is reachable and verified.
    link = by_name["beta-1.0-py3-none-any.whl"]["url"].removeprefix("../..")
    got = await proxy.get(link)
    assert got.status == 200
    assert hashlib.sha256(await got.read()).hexdigest() == fake.files("beta")[0].sha256


async def test_project_list(proxy: Client, fake: FakeIndex) -> None:
    html = await proxy.get("/simple/")
    assert html.status == 200
    hrefs = {a["href"] for a in anchors(await html.text()).anchors}
    assert {"alpha/", "beta/", "gamma/", "big/", "nometa/"} <= hrefs
    resp = await proxy.get("/simple/", headers={"Accept": JSON})
    names = {p["name"] for p in json.loads(await resp.read())["projects"]}
    assert {"alpha", "beta"} <= names


async def test_ttl_then_conditional_revalidation(make_proxy: ProxyFactory, fake: FakeIndex) -> None:
    proxy = await make_proxy(index_ttl=0)
    first = await proxy.get("/simple/alpha/", headers={"Accept": JSON})
    assert first.headers["X-Cache"] == "MISS"
    second = await proxy.get("/simple/alpha/", headers={"Accept": JSON})
    assert second.headers["X-Cache"] == "HIT"  # revalidated: upstream said 304
    gets = fake.page_gets("alpha")
    assert len(gets) == 2
    assert "if-none-match" not in gets[0].headers
    assert gets[1].headers["if-none-match"]  # our stored upstream ETag
    assert await first.read() == await second.read()


async def test_upstream_change_is_picked_up(make_proxy: ProxyFactory, fake: FakeIndex) -> None:
    proxy = await make_proxy(index_ttl=0)
    before = await (await proxy.get("/simple/beta/", headers={"Accept": JSON})).read()
    fake.set_yanked("beta", "beta-1.0-py3-none-any.whl", "oops")
    resp = await proxy.get("/simple/beta/", headers={"Accept": JSON})
    assert resp.headers["X-Cache"] == "MISS"
    after = json.loads(await resp.read())
    assert after["files"][0]["yanked"] == "oops"
    assert json.loads(before)["files"][0]["yanked"] is False


async def test_fresh_page_is_not_refetched(proxy: Client, fake: FakeIndex) -> None:
    for _ in range(3):
        resp = await proxy.get("/simple/alpha/", headers={"Accept": JSON})
        assert resp.status == 200
    assert len(fake.page_gets("alpha")) == 1


async def test_client_max_age_0_is_not_a_refetch_by_default(
    make_proxy: ProxyFactory, fake: FakeIndex
) -> None:
    """pip sends max-age=0 on every page request: within the TTL it changes nothing."""
    proxy = await make_proxy(revalidate_floor=0.0)  # a copy of any age counts as "old"
    await proxy.get("/simple/alpha/")
    await proxy.get("/simple/", headers={"Cache-Control": "max-age=0"})
    for cc in ("max-age=0", "no-cache", "no-cache, max-age=0"):
        resp = await proxy.get("/simple/alpha/", headers={"Cache-Control": cc})
        assert resp.headers["X-Cache"] == "HIT"
        resp = await proxy.get("/simple/", headers={"Cache-Control": cc})
        assert resp.headers["X-Cache"] == "HIT"
    assert len(fake.page_gets("alpha")) == 1
    assert len([r for r in fake.requests if r.path == "/simple/"]) == 1


async def test_client_revalidate_after_honours_clients(
    make_proxy: ProxyFactory, fake: FakeIndex
) -> None:
    """--client-revalidate-after: a client's no-cache revalidates a page older than it."""
    proxy = await make_proxy(client_revalidate_after=30.0)
    await proxy.get("/simple/alpha/")
    resp = await proxy.get("/simple/alpha/", headers={"Cache-Control": "max-age=0"})
    assert resp.headers["X-Cache"] == "HIT"  # younger than 30 s: no stampede
    assert len(fake.page_gets("alpha")) == 1
    eager = await make_proxy(client_revalidate_after=0.0)
    await eager.get("/simple/alpha/", headers={"Cache-Control": "no-cache"})
    assert len(fake.page_gets("alpha")) == 2
    await eager.get("/simple/alpha/")  # without it: the TTL alone
    assert len(fake.page_gets("alpha")) == 2


async def test_concurrent_page_misses_share_one_fetch(proxy: Client, fake: FakeIndex) -> None:
    fake.delay_pages(0.3)
    resps = await asyncio.gather(*(proxy.get("/simple/alpha/") for _ in range(10)))
    assert {r.status for r in resps} == {200}
    assert len(fake.page_gets("alpha")) == 1


async def test_stale_when_upstream_fails_t18(make_proxy: ProxyFactory, fake: FakeIndex) -> None:
    proxy = await make_proxy(index_ttl=0)
    good = await (await proxy.get("/simple/alpha/", headers={"Accept": JSON})).read()
    fake.fail_pages(503)
    resp = await proxy.get("/simple/alpha/", headers={"Accept": JSON})
    assert resp.status == 200
    assert resp.headers["X-Cache"] == "STALE"
    assert "503" in resp.headers["X-Cache-Reason"]
    assert await resp.read() == good


async def test_stale_on_timeout(make_proxy: ProxyFactory, fake: FakeIndex) -> None:
    proxy = await make_proxy(index_ttl=0, page_timeout=0.3)
    await proxy.get("/simple/alpha/")
    fake.delay_pages(2)
    resp = await proxy.get("/simple/alpha/")
    assert resp.status == 200
    assert resp.headers["X-Cache"] == "STALE"


async def test_no_copy_upstream_error_is_502(proxy: Client, fake: FakeIndex) -> None:
    fake.fail_pages(500)
    resp = await proxy.get("/simple/alpha/")
    assert resp.status == 502
    text = await resp.text()
    assert text.count("\n") == 1
    assert "500" in text
    assert "Traceback" not in text


async def test_no_copy_timeout_is_504(make_proxy: ProxyFactory, fake: FakeIndex) -> None:
    proxy = await make_proxy(page_timeout=0.3)
    fake.delay_pages(2)
    resp = await proxy.get("/simple/alpha/")
    assert resp.status == 504
    assert "timed out" in await resp.text()


async def test_upstream_down_no_copy_is_502(make_proxy: ProxyFactory, fake: FakeIndex) -> None:
    proxy = await make_proxy()
    await fake.stop()
    resp = await proxy.get("/simple/alpha/")
    assert resp.status == 502
    assert "cannot fetch" in await resp.text()


async def test_offline_serves_cache_and_404s_the_rest(
    make_proxy: ProxyFactory, fake: FakeIndex, cache_dir: Path
) -> None:
    online = await make_proxy()
    await online.get("/simple/alpha/")
    await online.close()  # a restart in offline mode
    fake.clear_log()
    offline = await make_proxy(offline=True, index_ttl=0)
    resp = await offline.get("/simple/alpha/")
    assert resp.status == 200
    missing = await offline.get("/simple/beta/")
    # A 404, so pip and uv stop at once (uv retried a 504 for seconds), saying why.
    assert missing.status == 404
    reason = "offline mode: project 'beta' is not cached"
    assert (await missing.text()).startswith(reason)
    assert (await missing.text()).count("\n") == 1
    assert missing.headers["X-Cache-Reason"].startswith(reason)
    assert missing.headers["X-Cache"] == "MISS"
    root = await offline.get("/simple/")
    assert root.status == 404
    assert "offline mode: the project list is not cached" in await root.text()
    assert fake.requests == []


async def test_pages_survive_restart_with_upstream_down(
    make_proxy: ProxyFactory, fake: FakeIndex
) -> None:
    first = await make_proxy(index_ttl=0)
    body = await (await first.get("/simple/alpha/", headers={"Accept": JSON})).read()
    await first.close()
    await fake.stop()
    second = await make_proxy(index_ttl=0)
    resp = await second.get("/simple/alpha/", headers={"Accept": JSON})
    assert resp.status == 200
    assert resp.headers["X-Cache"] == "STALE"
    assert await resp.read() == body
