"""PyPI's JSON API through the proxy: cached like pages, file URLs on the proxy, and real
``pip-compile --generate-hashes`` taking every hash from it instead of downloading files."""

import asyncio
import json
import shutil
import sys
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from conftest import ProxyFactory, client_env
from fakeindex import FakeIndex
from pytest_aiohttp import AiohttpClient
from yarl import URL

from cacheproxy.errors import IndexParseError
from cacheproxy.proxy.json_api import (
    adopt_release,
    dump_json_api,
    json_api_base,
    newest_release,
    parse_json_api,
    rewrite_json_api,
    with_origin,
)
from cacheproxy.web.keys import proxy_key

Client = TestClient[web.Request, web.Application]


async def get_doc(proxy: Client, path: str) -> tuple[dict[str, Any], str]:
    resp = await proxy.get(path)
    assert resp.status == 200, await resp.text()
    assert resp.headers["Content-Type"] == "application/json"
    return json.loads(await resp.read()), resp.headers["X-Cache"]


def origin(proxy: Client) -> str:
    return str(proxy.make_url("/")).rstrip("/")


@pytest.mark.parametrize(
    ("upstream", "base"),
    [
        ("https://idx.example/simple/", "https://idx.example/pypi/"),
        ("https://u:pw@idx.example:8443/mirror/simple/", "https://idx.example:8443/mirror/pypi/"),
        ("https://idx.example/root/pypi/+simple/", None),  # devpi: no such API there
        ("https://idx.example/", None),
    ],
)
def test_json_api_base(upstream: str, base: str | None) -> None:
    found = json_api_base(URL(upstream))
    assert (str(found) if found is not None else None) == base


def test_render_rewrites_records_and_drops() -> None:
    sha = "ab" * 32
    doc = {
        "info": {"summary": 'says "url":"/packages/x" in text', "project_urls": {"url": "u"}},
        "urls": [
            {"url": "https://files.example/packages/aa/bb/a-1.0.tar.gz", "digests": {"sha256": sha},
             "size": 5, "upload_time_iso_8601": "2024-01-01T00:01:00.000000Z"},
            {"url": "http://10.0.0.1/packages/a-1.0-py3-none-any.whl"},  # not allowed
            {"url": "https://files.example/packages/../etc/passwd"},  # unusable path
            "not a file",
        ],
        "releases": {"1.0": [{"url": "../../packages/cc/a-1.0-py3-none-any.whl", "size": True}]},
    }  # fmt: skip
    parsed = parse_json_api(json.dumps(doc).encode())
    records = rewrite_json_api(
        parsed, "https://idx.example/pypi/a/json", lambda u: "10.0.0" not in u
    ).records
    body = dump_json_api(parsed)
    assert set(records) == {"aa/bb/a-1.0.tar.gz", "cc/a-1.0-py3-none-any.whl"}
    assert records["aa/bb/a-1.0.tar.gz"].sha256 == sha
    assert records["aa/bb/a-1.0.tar.gz"].size == 5
    assert records["aa/bb/a-1.0.tar.gz"].uploaded == 1704067260.0  # for the release-age gate
    assert records["cc/a-1.0-py3-none-any.whl"].url == (
        "https://idx.example/packages/cc/a-1.0-py3-none-any.whl"
    )
    assert records["cc/a-1.0-py3-none-any.whl"].size is None  # a bool is no size
    sent = json.loads(with_origin(body, "http://proxy:1"))
    assert [e["url"] for e in sent["urls"]] == ["http://proxy:1/packages/aa/bb/a-1.0.tar.gz"]
    assert sent["releases"]["1.0"][0]["url"] == "http://proxy:1/packages/cc/a-1.0-py3-none-any.whl"
    assert sent["info"] == doc["info"]  # text that looks like a file URL is left alone
    with pytest.raises(IndexParseError):
        parse_json_api(b"<html>portal</html>")
    with pytest.raises(IndexParseError):
        parse_json_api(b"[]")


def test_newest_release_is_picked_as_warehouse_picks_it() -> None:
    def entry(yanked: bool = False) -> dict[str, Any]:
        return {"filename": "f", "yanked": yanked}

    releases: dict[str, Any] = {"1.0": [entry()], "3.0": [entry(True)], "2.0rc1": [entry()]}
    # Not every file yanked beats higher; a final release beats a pre-release.
    assert newest_release({"releases": releases}) == "1.0"
    assert newest_release({"releases": {**releases, "1.1": [entry()]}}) == "1.1"
    assert newest_release({"releases": {"2.0rc1": [entry()], "0.9": []}}) == "2.0rc1"
    assert newest_release({"releases": {}}) is None


def test_adopting_a_release_without_its_own_document_describes_nothing_else() -> None:
    """README "What clients see": without the release's own document, info keeps only the
    project's keys and that version, urls are its files, vulnerabilities go."""
    files = [{"filename": "p-1.0-py3-none-any.whl", "url": "/packages/x"}]
    doc: dict[str, Any] = {
        "info": {
            "name": "p",
            "version": "2.0",
            "summary": "2.0's summary",
            "requires_dist": ["held-dep"],
            "package_url": "u",
            "project_url": "v",
        },
        "urls": [],
        "releases": {"1.0": files},
        "vulnerabilities": [{"id": "of 2.0"}],
    }
    adopt_release(doc, "1.0", None)
    assert doc["info"] == {"name": "p", "package_url": "u", "project_url": "v", "version": "1.0"}
    assert doc["urls"] == files
    assert "vulnerabilities" not in doc
    own = {"info": {"name": "p", "version": "1.0"}, "urls": files, "vulnerabilities": []}
    adopt_release(doc, "1.0", own)
    assert doc["info"] == own["info"]
    assert doc["vulnerabilities"] == []


async def test_document_is_cached_with_urls_on_the_proxy(
    proxy: Client, fake: FakeIndex, monkeypatch: pytest.MonkeyPatch
) -> None:
    doc, cache = await get_doc(proxy, "/pypi/beta/json")
    assert cache == "MISS"
    files = {f.filename: f for f in fake.files("beta")}
    assert doc["info"]["version"] == "1.0"  # 2.0 is yanked
    assert set(doc["releases"]) == {"1.0", "2.0"}
    for entry in [*doc["urls"], *doc["releases"]["1.0"], *doc["releases"]["2.0"]]:
        f = files[entry["filename"]]
        assert entry["url"] == origin(proxy) + f.url_path
        assert entry["digests"]["sha256"] == f.sha256
    assert doc["releases"]["2.0"][0]["yanked"] is True  # everything else passes through
    resp = await proxy.get("/pypi/beta/json", headers={"Accept-Encoding": "gzip"})
    assert resp.headers["Content-Encoding"] == "gzip"
    assert json.loads(await resp.read()) == doc
    # A second request within the TTL is answered from the cache.
    again, cache = await get_doc(proxy, "/pypi/beta/json")
    assert (again, cache) == (doc, "HIT")
    # A large document is read from its file (not the in-memory body cache): same bytes.
    await proxy.app[proxy_key].pages.flush()
    monkeypatch.setattr(proxy.app[proxy_key].storage.bodies, "_max_item", 0)
    assert (await get_doc(proxy, "/pypi/beta/json")) == (doc, "HIT")
    assert len(fake.json_api_gets("beta")) == 1
    # The file resolves through the proxy. A file is served only as the project's current
    # page lists it (proxy/files.py: bytes never contradict the index), so that page is
    # fetched once to check it.
    f = files["beta-1.0-py3-none-any.whl"]
    resp = await proxy.get(URL(doc["urls"][0]["url"]).path)
    assert await resp.read() == f.data
    assert len(fake.page_gets("beta")) == 1
    assert len(fake.file_gets()) == 1


async def test_one_release_and_errors(proxy: Client, fake: FakeIndex) -> None:
    doc, _ = await get_doc(proxy, "/pypi/beta/2.0/json")
    assert doc["info"]["version"] == "2.0"
    assert "releases" not in doc
    assert [e["filename"] for e in doc["urls"]] == ["beta-2.0-py3-none-any.whl"]
    assert doc["urls"][0]["url"].startswith(origin(proxy) + "/packages/")
    for path in ("/pypi/nosuch/json", "/pypi/beta/9.9/json"):
        resp = await proxy.get(path)
        assert resp.status == 404
        assert (await resp.text()).count("\n") == 1
    resp = await proxy.get("/pypi/Beta/json", allow_redirects=False)
    assert resp.status == 301
    assert resp.headers["Location"] == "../beta/json"
    resp = await proxy.get("/pypi/Beta/2.0/json", allow_redirects=False)
    assert resp.headers["Location"] == "../../beta/2.0/json"
    assert (await proxy.get("/pypi/a%2Fb/json")).status in (400, 404)
    assert (await proxy.get("/pypi/beta/..%2F..%2Fx/json")).status in (400, 404)


async def test_origin_follows_the_host_the_client_used(proxy: Client, fake: FakeIndex) -> None:
    resp = await proxy.get("/pypi/gamma/json", headers={"Host": "cache.internal:3141"})
    doc = json.loads(await resp.read())
    assert doc["urls"][0]["url"].startswith("http://cache.internal:3141/packages/")
    etag = resp.headers["ETag"]
    other = await proxy.get("/pypi/gamma/json")
    assert other.headers["ETag"] != etag  # other bytes, other tag
    same = await proxy.get(
        "/pypi/gamma/json", headers={"Host": "cache.internal:3141", "If-None-Match": etag}
    )
    assert same.status == 304


async def test_stale_if_error_and_offline(
    make_proxy: ProxyFactory, fake: FakeIndex, cache_dir: Path
) -> None:
    proxy = await make_proxy(index_ttl=0)
    doc, _ = await get_doc(proxy, "/pypi/alpha/json")
    fake.fail_pages(503)
    stale, cache = await get_doc(proxy, "/pypi/alpha/json")
    assert (stale, cache) == (doc, "STALE")
    first = origin(proxy)
    await proxy.app[proxy_key].pages.flush()
    await proxy.close()
    fake.reset_faults()
    fake.clear_log()
    offline = await make_proxy(offline=True, index_ttl=0)
    again, _ = await get_doc(offline, "/pypi/alpha/json")
    assert again["urls"] == [
        {**e, "url": e["url"].replace(first, origin(offline))} for e in doc["urls"]
    ]
    missing = await offline.get("/pypi/gamma/json")
    assert missing.status == 404
    assert "offline mode" in missing.headers["X-Cache-Reason"]
    assert fake.requests == []


async def test_upstream_without_json_api_is_a_404(
    aiohttp_client: AiohttpClient, fake: FakeIndex, cache_dir: Path
) -> None:
    from conftest import make_settings

    from cacheproxy.web.app import create_app

    # An index not at <origin>/simple/: its JSON API (if any) is somewhere we cannot know.
    settings = make_settings(cache_dir, fake.index_url.replace("/simple/", "/simple/x/"))
    proxy = await aiohttp_client(create_app(settings))
    resp = await proxy.get("/pypi/alpha/json")
    assert resp.status == 404
    assert "no JSON API" in await resp.text()
    assert fake.requests == []


async def test_an_entry_whose_digest_the_page_contradicts_is_dropped(
    make_proxy: ProxyFactory, fake: FakeIndex, caplog: pytest.LogCaptureFixture
) -> None:
    """The proxy serves a file as its page lists it (proxy/files.py): a document entry with
    another sha256 would have a client lock a digest the bytes it gets contradict."""
    # revalidate_floor 0: the page, just fetched, may still be asked again (the default
    # 30 s floor spares upstream a page younger than that).
    proxy = await make_proxy(revalidate_floor=0)
    wheel = next(f for f in fake.files("beta") if f.version == "1.0")
    fake.json_api_sha256[wheel.filename] = "0" * 64
    fake.clear_log()
    doc, _ = await get_doc(proxy, "/pypi/beta/json")
    # The page may predate the document: it was asked again once before the entry went.
    pages = [r for r in fake.requests if r.host == "index" and r.path == "/simple/beta/"]
    assert len(pages) == 2
    # 1.0 (upstream's info) has no file left: info and urls are 2.0's own document's.
    assert sorted(doc["releases"]) == ["2.0"]
    assert doc["info"]["version"] == "2.0"
    assert [e["filename"] for e in doc["urls"]] == ["beta-2.0-py3-none-any.whl"]
    page = {f.filename: f.sha256 for f in fake.files("beta")}
    for entry in [*doc["urls"], *doc["releases"]["2.0"]]:
        assert entry["digests"]["sha256"] == page[entry["filename"]]
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert warnings == [
        f"dropping {wheel.filename} from a JSON API document: its project page lists sha256 "
        f"{wheel.sha256}, the document {'0' * 64}"
    ]
    one, _ = await get_doc(proxy, "/pypi/beta/1.0/json")
    assert one["urls"] == []
    # The file itself is still served, as the page lists it.
    resp = await proxy.get(wheel.url_path)
    assert await resp.read() == wheel.data


@pytest.mark.clients
async def test_pip_compile_generate_hashes_downloads_nothing(
    proxy_server: TestServer, fake: FakeIndex, tmp_path: Path
) -> None:
    """pip-tools reads every candidate's hash from the JSON API; with a 404 it downloaded
    each file to hash it."""
    compile_ = shutil.which("pip-compile", path=str(Path(sys.executable).parent))
    if compile_ is None:
        pytest.fail("pip-tools is not installed: it is part of the test extra")
    (tmp_path / "requirements.in").write_text("alpha\n")
    index = str(proxy_server.make_url("/simple/"))
    proc = await asyncio.create_subprocess_exec(
        compile_, "--generate-hashes", "--no-header", "--no-emit-index-url", "--quiet",
        "--index-url", index, "--cache-dir", str(tmp_path / "pip-tools-cache"),
        "--output-file", str(tmp_path / "requirements.txt"), str(tmp_path / "requirements.in"),
        env=client_env(tmp_path), cwd=tmp_path,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    out, _ = await asyncio.wait_for(proc.communicate(), 120)
    assert proc.returncode == 0, out.decode(errors="replace")
    locked = (tmp_path / "requirements.txt").read_text()
    assert "alpha==1.0" in locked
    assert "beta==1.0" in locked  # 2.0 is yanked
    for f in [*fake.files("alpha"), fake.files("beta")[0]]:  # the wheel and sdist of alpha
        assert f"--hash=sha256:{f.sha256}" in locked, locked
    assert fake.file_gets() == []  # metadata came from .metadata, hashes from the JSON API
    assert len(fake.json_api_gets("alpha")) == 1
    assert len(fake.json_api_gets("beta")) == 1


async def test_invalidating_a_project_drops_its_json_api_documents(
    make_proxy: ProxyFactory, fake: FakeIndex
) -> None:
    proxy = await make_proxy(admin_token="t" * 16)
    for path in ("/pypi/beta/json", "/pypi/beta/1.0/json", "/pypi/alpha/json"):
        await get_doc(proxy, path)
    await proxy.app[proxy_key].pages.flush()
    token = {"Authorization": "Bearer " + "t" * 16}
    assert (await proxy.post("/-/admin/invalidate/beta", headers=token)).status == 200
    assert (await get_doc(proxy, "/pypi/beta/json"))[1] == "MISS"
    assert (await get_doc(proxy, "/pypi/beta/1.0/json"))[1] == "MISS"
    assert (await get_doc(proxy, "/pypi/alpha/json"))[1] == "HIT"  # another project's stays
