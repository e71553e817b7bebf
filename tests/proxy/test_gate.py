"""The release-age gate: the pure rule (simple/gate.py), then through the real proxy.

Upload times are set on the fake index; "now" is the real clock, so the new files are an
hour old and the old ones from 2024. A page that ages in is shown with an injected clock.
"""

import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer
from clients import installed, pip_cmd, run, uv_cmd
from conftest import make_settings
from distbuild import build_wheel
from fakeindex import FakeIndex
from packaging.utils import NormalizedName
from pytest_aiohttp import AiohttpServer

from cacheproxy.errors import ConfigError
from cacheproxy.simple.gate import Exempt, Gate, filter_page, judge
from cacheproxy.simple.models import DistFile, ProjectPage
from cacheproxy.units import parse_timestamp
from cacheproxy.web.app import create_app
from cacheproxy.web.keys import proxy_key

V1_JSON = "application/vnd.pypi.simple.v1+json"
DAY = 86400.0
OLD = "2024-01-01T00:00:00Z"


def _stamp(seconds_ago: float) -> str:
    return (datetime.now(UTC) - timedelta(seconds=seconds_ago)).strftime("%Y-%m-%dT%H:%M:%SZ")


# ---- the rule -----------------------------------------------------------------------------


def _file(name: str, uploaded: str | None) -> DistFile:
    return DistFile(filename=name, url=f"https://files.example/{name}", upload_time=uploaded)


def _page(*files: DistFile) -> ProjectPage:
    return ProjectPage(
        name=NormalizedName("demo"),
        files=files,
        api_version="1.1",
        versions=("1.0", "2.0", "3.0"),
    )


NOW = parse_timestamp("2026-12-01T00:00:00Z")


def test_new_files_and_their_versions_are_held() -> None:
    page = _page(
        _file("demo-1.0-py3-none-any.whl", "2026-11-01T00:00:00Z"),
        _file("demo-2.0-py3-none-any.whl", "2026-11-30T20:00:00Z"),  # 4 hours old
        _file("demo-2.0.tar.gz", "2026-11-30T20:00:00Z"),
    )
    out = filter_page(Gate(min_age=7 * DAY), page, NOW)
    assert [f.filename for f in out.page.files] == ["demo-1.0-py3-none-any.whl"]
    # 2.0 lost every file; 3.0 never had one and stays, as upstream listed it.
    assert out.page.versions == ("1.0", "3.0")
    assert {h.filename for h in out.held} == {"demo-2.0-py3-none-any.whl", "demo-2.0.tar.gz"}
    assert out.changes_at == parse_timestamp("2026-11-30T20:00:00Z") + 7 * DAY
    assert "until 2026-12-07T20:00:00Z" in out.held[0].line()


def test_unknown_upload_time_fails_closed_unless_allowed() -> None:
    page = _page(_file("demo-1.0-py3-none-any.whl", None))
    held = filter_page(Gate(min_age=DAY), page, NOW)
    assert held.page.files == ()
    assert held.changes_at is None  # nothing will age in by itself
    assert "no upload time" in held.held[0].line()
    assert filter_page(Gate(min_age=DAY, allow_unknown=True), page, NOW).page.files == page.files


def test_exclude_newer_is_a_fixed_cut_off() -> None:
    gate = Gate(exclude_newer=parse_timestamp("2026-06-01T00:00:00Z"))
    old = _file("demo-1.0-py3-none-any.whl", "2026-05-31T23:59:59Z")
    new = _file("demo-2.0-py3-none-any.whl", "2026-06-01T00:00:01Z")
    out = filter_page(gate, _page(old, new), NOW)
    assert out.page.files == (old,)
    assert out.changes_at is None  # a fixed cut-off never lets it in
    # Both rules: the earlier cut-off wins.
    both = Gate(min_age=DAY, exclude_newer=parse_timestamp("2026-11-01T00:00:00Z"))
    assert both.cutoff(NOW) == parse_timestamp("2026-11-01T00:00:00Z")


@pytest.mark.parametrize(
    ("spec", "project", "version", "exempt"),
    [
        ("urllib3==2.5.1", "urllib3", "2.5.1", True),
        ("urllib3==2.5.1", "urllib3", "2.5.2", False),
        ("URLLib3==2.5.1.0", "urllib3", "2.5.1", True),  # names and versions normalised
        ("acme-*", "acme-tools", "9.0", True),
        ("acme-*", "notacme", "9.0", False),
        ("demo", "demo", None, True),
    ],
)
def test_exemptions(spec: str, project: str, version: str | None, exempt: bool) -> None:
    assert Exempt.parse(spec).matches(project, version) is exempt


@pytest.mark.parametrize("spec", ["", "==1.0", "demo=="])
def test_bad_exemptions(spec: str) -> None:
    with pytest.raises(ConfigError):
        Exempt.parse(spec)


def test_judge_ignores_exemptions_filter_applies_them() -> None:
    gate = Gate(min_age=DAY, exempt=(Exempt.parse("demo==2.0"),))
    new = _file("demo-2.0-py3-none-any.whl", "2026-11-30T23:00:00Z")
    assert judge(gate, "demo", new.filename, parse_timestamp(new.upload_time or ""), NOW)
    assert filter_page(gate, _page(new), NOW).page.files == (new,)


# ---- through the proxy --------------------------------------------------------------------


@pytest.fixture
async def gated(aiohttp_server: AiohttpServer, tmp_path: Path) -> FakeIndex:
    """``fresh`` 1.0 from 2024 and 2.0 from an hour ago; ``undated`` with no upload time."""
    out = tmp_path / "dists"
    out.mkdir()
    fake = FakeIndex()
    fake.add_file("fresh", build_wheel(out, "fresh", "1.0"), upload_time=OLD)
    fake.add_file("fresh", build_wheel(out, "fresh", "2.0"), upload_time=_stamp(3600))
    fake.add_file("undated", build_wheel(out, "undated", "1.0"), no_upload_time=True)
    await fake.start(aiohttp_server)
    return fake


async def _page_files(client: TestClient[Any, Any], project: str) -> list[str]:
    resp = await client.get(f"/simple/{project}/", headers={"Accept": V1_JSON})
    assert resp.status == 200, await resp.text()
    return [f["filename"] for f in (await resp.json())["files"]]


async def _proxy(
    aiohttp_client: Any, fake: FakeIndex, cache: Path, **gate: Any
) -> TestClient[Any, Any]:
    client: TestClient[Any, Any] = await aiohttp_client(
        create_app(make_settings(cache, fake.index_url, **gate))
    )
    return client


async def test_page_lists_old_files_and_a_direct_get_is_403(
    aiohttp_client: Any, gated: FakeIndex, tmp_path: Path
) -> None:
    proxy = await _proxy(aiohttp_client, gated, tmp_path / "c", min_age=DAY)
    assert await _page_files(proxy, "fresh") == ["fresh-1.0-py3-none-any.whl"]
    resp = await proxy.get("/simple/fresh/", headers={"Accept": V1_JSON})
    assert (await resp.json())["versions"] == ["1.0"]
    html = await (await proxy.get("/simple/fresh/", headers={"Accept": "text/html"})).text()
    assert "fresh-1.0" in html
    assert "fresh-2.0" not in html
    new = next(f for f in gated.files("fresh") if f.version == "2.0")
    for path in (new.url_path, new.url_path + ".metadata"):
        resp = await proxy.get(path)
        assert resp.status == 403
        text = await resp.text()
        assert text.count("\n") == 1
        assert "fresh-2.0-py3-none-any.whl is held back by the release-age gate until" in text
    assert not gated.file_gets(new.filename)  # never fetched


async def test_unknown_upload_time_fails_closed(
    aiohttp_client: Any, gated: FakeIndex, tmp_path: Path
) -> None:
    closed = await _proxy(aiohttp_client, gated, tmp_path / "a", min_age=DAY)
    assert await _page_files(closed, "undated") == []
    (f,) = gated.files("undated")
    resp = await closed.get(f.url_path)
    assert resp.status == 403
    assert "no upload time" in await resp.text()
    opened = await _proxy(
        aiohttp_client, gated, tmp_path / "b", min_age=DAY, min_age_unknown="allow"
    )
    assert await _page_files(opened, "undated") == [f.filename]


async def test_exemption_lets_one_release_through_and_is_logged(
    aiohttp_client: Any, gated: FakeIndex, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    proxy = await _proxy(
        aiohttp_client, gated, tmp_path / "c", min_age=DAY, min_age_exempt=("fresh==2.0",)
    )
    files = await _page_files(proxy, "fresh")
    assert files == ["fresh-1.0-py3-none-any.whl", "fresh-2.0-py3-none-any.whl"]
    new = next(f for f in gated.files("fresh") if f.version == "2.0")
    resp = await proxy.get(new.url_path)
    assert resp.status == 200
    assert await resp.read() == new.data
    assert "exempted by fresh==2.0" in caplog.text


async def test_page_is_filtered_again_when_a_file_ages_in(
    aiohttp_client: Any, gated: FakeIndex, tmp_path: Path
) -> None:
    # The rule stays 1 day; the proxy's clock moves 2 days on. No upstream request: the
    # stored page is filtered again from upstream's body kept with it.
    proxy = await _proxy(aiohttp_client, gated, tmp_path / "c", min_age=DAY, index_ttl=10 * DAY)
    first = await proxy.get("/simple/fresh/", headers={"Accept": V1_JSON})
    assert [f["filename"] for f in (await first.json())["files"]] == ["fresh-1.0-py3-none-any.whl"]
    pages = proxy.app[proxy_key].pages
    files = proxy.app[proxy_key].indexes.default.files  # routing.py: per index
    await pages.flush()
    gated.clear_log()
    later = time.time() + 2 * DAY
    pages._clock = files._clock = lambda: later
    second = await proxy.get("/simple/fresh/", headers={"Accept": V1_JSON})
    assert second.headers["ETag"] != first.headers["ETag"]  # part of the page's identity
    assert [f["filename"] for f in (await second.json())["files"]] == [
        "fresh-1.0-py3-none-any.whl",
        "fresh-2.0-py3-none-any.whl",
    ]
    assert not gated.page_gets("fresh")
    new = next(f for f in gated.files("fresh") if f.version == "2.0")
    assert (await proxy.get(new.url_path)).status == 200


async def test_turning_the_gate_on_filters_pages_cached_without_it(
    aiohttp_client: Any, gated: FakeIndex, tmp_path: Path
) -> None:
    cache = tmp_path / "c"
    open_proxy = await _proxy(aiohttp_client, gated, cache, index_ttl=10 * DAY)
    assert len(await _page_files(open_proxy, "fresh")) == 2
    await open_proxy.app[proxy_key].pages.flush()
    await open_proxy.close()
    gated.clear_log()
    closed = await _proxy(aiohttp_client, gated, cache, index_ttl=10 * DAY, min_age=DAY)
    assert await _page_files(closed, "fresh") == ["fresh-1.0-py3-none-any.whl"]
    # Fetched whole (no validators): a 304 would have kept the unfiltered page.
    assert len(gated.page_gets("fresh")) == 1


async def test_json_api_shows_what_the_page_shows(
    aiohttp_client: Any, gated: FakeIndex, tmp_path: Path
) -> None:
    proxy = await _proxy(aiohttp_client, gated, tmp_path / "c", min_age=DAY, index_ttl=10 * DAY)
    resp = await proxy.get("/pypi/fresh/json")
    assert resp.status == 200, await resp.text()
    doc = await resp.json()
    # Upstream's info names 2.0, which is held: the newest shown release's own document
    # gives info and urls (one more upstream request, cached like the rest).
    assert doc["info"]["version"] == "1.0"
    assert list(doc["releases"]) == ["1.0"]
    assert [e["filename"] for e in doc["urls"]] == ["fresh-1.0-py3-none-any.whl"]
    assert [r.path for r in gated.json_api_gets("fresh")] == [
        "/pypi/fresh/json",
        "/pypi/fresh/1.0/json",
    ]
    # A held release's own document is refused as its files are: 403 and one line.
    for _ in range(2):
        held = await proxy.get("/pypi/fresh/2.0/json")
        assert held.status == 403
        text = await held.text()
        assert text.count("\n") == 1
        assert text.startswith("fresh 2.0 is held back by the release-age gate until ")
    every = await proxy.get("/pypi/undated/json")  # its one file has no upload time
    assert every.status == 403
    assert "every release of undated is held back" in await every.text()
    # Cached: asked again, upstream is not.
    await proxy.app[proxy_key].pages.flush()
    gated.clear_log()
    assert await (await proxy.get("/pypi/fresh/json")).json() == doc
    assert (await proxy.get("/pypi/fresh/2.0/json")).status == 403
    assert gated.requests == []
    # When 2.0 ages in, the stored document is checked again (no upstream request).
    pages = proxy.app[proxy_key].pages
    files = proxy.app[proxy_key].indexes.default.files
    later = time.time() + 2 * DAY
    pages._clock = files._clock = lambda: later
    aged = await (await proxy.get("/pypi/fresh/json")).json()
    assert aged["info"]["version"] == "2.0"
    assert sorted(aged["releases"]) == ["1.0", "2.0"]
    assert [e["filename"] for e in aged["urls"]] == ["fresh-2.0-py3-none-any.whl"]
    assert (await proxy.get("/pypi/fresh/2.0/json")).status == 200
    assert gated.requests == []


async def test_stats_list_what_is_held(
    aiohttp_client: Any, gated: FakeIndex, tmp_path: Path
) -> None:
    proxy = await _proxy(aiohttp_client, gated, tmp_path / "c", min_age=DAY)
    await _page_files(proxy, "fresh")
    data = await (await proxy.get("/-/stats")).json()
    assert data["gate"]["min_age_seconds"] == DAY
    (held,) = data["gate"]["held"]
    assert held["project"] == "fresh"
    assert held["version"] == "2.0"
    assert held["filename"] == "fresh-2.0-py3-none-any.whl"
    assert held["available_from"].endswith("Z")
    page = await (await proxy.get("/")).text()
    assert "Held back by the release-age gate" in page
    assert "fresh-2.0-py3-none-any.whl" in page


@pytest.mark.clients
@pytest.mark.parametrize("tool", ["pip", "uv"])
async def test_clients_get_the_older_version(
    tool: str, aiohttp_server: AiohttpServer, gated: FakeIndex, tmp_path: Path
) -> None:
    server: TestServer = await aiohttp_server(
        create_app(make_settings(tmp_path / "c", gated.index_url, min_age=DAY))
    )
    index = str(server.make_url("/simple/"))
    target = tmp_path / "target"
    cmd = (pip_cmd if tool == "pip" else uv_cmd)(index, target, "fresh")
    await run(cmd, tmp_path)
    assert installed(target) == {"fresh"}
    assert (target / "fresh-1.0.dist-info").is_dir()
    new = next(f for f in gated.files("fresh") if f.version == "2.0")
    assert not gated.file_gets(new.filename)
    # Asking for the held version by name fails, naming no file of it.
    failing = (pip_cmd if tool == "pip" else uv_cmd)(index, tmp_path / "t2", "fresh==2.0")
    with pytest.raises(AssertionError):
        await run(failing, tmp_path)
    assert sys.executable  # the clients run under this interpreter


async def test_settings_reject_a_bad_gate(tmp_path: Path) -> None:
    from cacheproxy.settings import build_settings

    env = {"PIP_CONFIG_FILE": "/dev/null", "HOME": str(tmp_path)}
    with pytest.raises(ConfigError, match="exclude-newer"):
        build_settings({"exclude_newer": "yesterday"}, env)
    with pytest.raises(ConfigError, match="min-age-unknown"):
        build_settings({"min_age_unknown": "maybe"}, env)
    s = build_settings({"min_age": "36h", "exclude_newer": "2026-06-01"}, env)
    assert s.min_age == 36 * 3600
    assert s.exclude_newer == parse_timestamp("2026-06-01T00:00:00Z")
    env["CACHEPROXY_MIN_AGE_EXEMPT"] = "urllib3==2.5.1, acme-*"
    assert build_settings({}, env).min_age_exempt == ("urllib3==2.5.1", "acme-*")


# ---- PEP 740 provenance passes through -----------------------------------------------------


async def test_provenance_is_served_through_the_proxy_and_cached(
    aiohttp_client: Any, gated: FakeIndex, tmp_path: Path
) -> None:
    old = next(f for f in gated.files("fresh") if f.version == "1.0")
    document = b'{"version": 1, "attestation_bundles": []}'
    upstream_url = gated.set_provenance(old, document)
    proxy = await _proxy(aiohttp_client, gated, tmp_path / "c")
    resp = await proxy.get("/simple/fresh/", headers={"Accept": V1_JSON})
    (entry,) = [f for f in (await resp.json())["files"] if f["filename"] == old.filename]
    assert entry["provenance"] == entry["url"] + ".provenance"  # relative, to the proxy
    html = await (await proxy.get("/simple/fresh/", headers={"Accept": "text/html"})).text()
    assert f'data-provenance="../..{old.url_path}.provenance"' in html
    assert upstream_url not in html
    path = old.url_path + ".provenance"
    for _ in range(2):
        got = await proxy.get(path)
        assert got.status == 200
        assert await got.read() == document
    provenance_gets = [r for r in gated.requests if r.path.endswith("/provenance")]
    assert len(provenance_gets) == 1  # the second came from the cache
    # A file without one: 404, as for metadata that is not advertised.
    new = next(f for f in gated.files("fresh") if f.version == "2.0")
    assert (await proxy.get(new.url_path + ".provenance")).status == 404


async def test_a_held_files_provenance_is_held_too(
    aiohttp_client: Any, gated: FakeIndex, tmp_path: Path
) -> None:
    new = next(f for f in gated.files("fresh") if f.version == "2.0")
    gated.set_provenance(new, b"{}")
    proxy = await _proxy(aiohttp_client, gated, tmp_path / "c", min_age=DAY)
    await _page_files(proxy, "fresh")
    assert (await proxy.get(new.url_path + ".provenance")).status == 403
