"""Tests of the test doubles: ``distbuild`` writes valid distributions and ``FakeIndex`` serves
them like PyPI, knobs included, so a later failure is the proxy's and not the fake's.

The ``clients`` tests install straight from the fake with real pip and uv.
"""

from __future__ import annotations

import asyncio
import base64
import csv
import gzip
import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
import time
import zipfile
from collections.abc import AsyncIterator, Sequence
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from distbuild import build_sdist, build_wheel, wheel_metadata
from fakeindex import V1_HTML, V1_JSON, FakeIndex, byte_range, negotiate
from packaging.utils import parse_sdist_filename, parse_wheel_filename
from pytest_aiohttp import AiohttpServer
from yarl import URL

# The Accept headers pip 26.3 and uv 0.13.9 send (seen in the request log).
PIP_ACCEPT = f"{V1_JSON}, {V1_HTML}; q=0.1, text/html; q=0.01"
UV_ACCEPT = f"{V1_JSON}, {V1_HTML};q=0.2, text/html;q=0.01"


class Anchors(HTMLParser):
    """Collects ``<a>`` attributes and ``<base href>`` (proxpi's IndexParser, simplified)."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.anchors: list[dict[str, str | None]] = []
        self.base: str | None = None
        self.feed(text)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "a":
            self.anchors.append(dict(attrs))
        elif tag == "base":
            self.base = dict(attrs)["href"]


@pytest.fixture(scope="session")
def dists(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("dists")
    return {
        "alpha": build_wheel(d, "alpha", "1.0", requires=["beta>=1"], requires_python=">=3.8"),
        "alpha_sdist": build_sdist(d, "alpha", "1.0", requires=["beta>=1"]),
        "beta1": build_wheel(d, "beta", "1.0"),
        "beta2": build_wheel(d, "beta", "2.0"),  # yanked: clients must skip it
        "beta3": build_wheel(d, "beta", "3.0", requires_python=">=4"),  # no client may pick it
        "big": build_wheel(d, "Foo_Bar", "0.1+abc", pad_bytes=300_000),
    }


def add_chain(fake: FakeIndex, dists: dict[str, Path], *, metadata: bool = True) -> None:
    """alpha requires beta>=1; of beta only 1.0 is installable (2.0 yanked, 3.0 needs py4)."""
    fake.add_file("alpha", dists["alpha"], metadata=metadata)
    fake.add_file("alpha", dists["alpha_sdist"])
    fake.add_file("beta", dists["beta1"], metadata=metadata)
    fake.add_file("beta", dists["beta2"], yanked="broken <build> ", metadata=metadata)
    fake.add_file("beta", dists["beta3"], metadata=metadata)


@pytest.fixture
async def fake(aiohttp_server: AiohttpServer, dists: dict[str, Path]) -> FakeIndex:
    fake = FakeIndex()
    add_chain(fake, dists)
    fake.add_file("Foo_Bar", dists["big"], metadata=False)
    await fake.start(aiohttp_server)
    return fake


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


async def get_json(session: aiohttp.ClientSession, url: str) -> Any:
    async with session.get(url, headers={"Accept": V1_JSON}) as r:
        assert r.status == 200
        return await r.json(content_type=V1_JSON)


async def get_html(session: aiohttp.ClientSession, url: str) -> str:
    async with session.get(url, headers={"Accept": "text/html"}) as r:
        assert r.status == 200
        return await r.text()


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# -- distbuild -------------------------------------------------------------------------------


def test_wheel_is_valid(tmp_path: Path) -> None:
    path = build_wheel(tmp_path, "alpha", "1.0", requires=["beta>=1"], requires_python=">=3.8")
    assert path.name == "alpha-1.0-py3-none-any.whl"
    assert str(parse_wheel_filename(path.name)[1]) == "1.0"
    with zipfile.ZipFile(path) as zf:
        assert zf.testzip() is None
        names = zf.namelist()
        assert names[-1] == "alpha-1.0.dist-info/RECORD"
        rows = list(csv.reader(io.StringIO(zf.read(names[-1]).decode())))
        assert sorted(r[0] for r in rows) == sorted(names)
        for member, digest, size in rows:
            if member == names[-1]:
                assert (digest, size) == ("", "")
                continue
            data = zf.read(member)
            raw = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=")
            assert (digest, size) == ("sha256=" + raw.decode(), str(len(data)))
        assert zf.read("alpha/__init__.py") == b'__version__ = "1.0"\n'
        wheel = zf.read("alpha-1.0.dist-info/WHEEL").decode()
        assert "Wheel-Version: 1.0\n" in wheel
        assert "Root-Is-Purelib: true\n" in wheel
        assert "Tag: py3-none-any\n" in wheel
        metadata = zf.read("alpha-1.0.dist-info/METADATA")
    assert metadata == wheel_metadata(path)
    assert metadata.startswith(b"Metadata-Version: 2.1\nName: alpha\nVersion: 1.0\n")
    assert b"Requires-Dist: beta>=1\n" in metadata
    assert b"Requires-Python: >=3.8\n" in metadata


def test_wheel_escaping_local_version_and_tags(tmp_path: Path) -> None:
    path = build_wheel(tmp_path, "Foo.Bar-baz", "0.1+abc", tag="py2.py3-none-any")
    assert path.name == "Foo_Bar_baz-0.1+abc-py2.py3-none-any.whl"
    name, version, _, tags = parse_wheel_filename(path.name)
    assert (name, str(version), len(tags)) == ("foo-bar-baz", "0.1+abc", 2)
    with zipfile.ZipFile(path) as zf:
        assert zf.read("foo_bar_baz/__init__.py") == b'__version__ = "0.1+abc"\n'
        wheel = zf.read("Foo_Bar_baz-0.1+abc.dist-info/WHEEL").decode()
    assert "Tag: py2-none-any\nTag: py3-none-any\n" in wheel


def test_wheel_padding_is_stored_and_builds_are_deterministic(tmp_path: Path) -> None:
    a = build_wheel(tmp_path / "a", "big", "1.0", pad_bytes=3_000_000)
    b = build_wheel(tmp_path / "b", "big", "1.0", pad_bytes=3_000_000)
    assert a.read_bytes() == b.read_bytes()
    assert 3_000_000 < a.stat().st_size < 3_010_000  # incompressible, not deflated
    with zipfile.ZipFile(a) as zf:
        info = zf.getinfo("big/_pad.bin")
        assert (info.compress_type, info.file_size) == (zipfile.ZIP_STORED, 3_000_000)


def test_wheel_imports(tmp_path: Path) -> None:
    # zipimport is enough for a pure wheel; the clients tests prove a real install.
    path = build_wheel(tmp_path, "Some-Thing", "2.5")
    code = "import some_thing; print(some_thing.__version__)"
    out = _run_sync([sys.executable, "-c", code], {**os.environ, "PYTHONPATH": str(path)})
    assert out.strip() == "2.5"


def test_sdist(tmp_path: Path) -> None:
    path = build_sdist(tmp_path, "Foo.Bar", "1.0", requires=["beta"], requires_python=">=3.9")
    assert path.name == "foo_bar-1.0.tar.gz"
    assert str(parse_sdist_filename(path.name)[1]) == "1.0"
    again = build_sdist(
        tmp_path / "2", "Foo.Bar", "1.0", requires=["beta"], requires_python=">=3.9"
    )
    assert path.read_bytes() == again.read_bytes()
    with tarfile.open(path) as tf:
        names = tf.getnames()
        pkg_info = tf.extractfile("foo_bar-1.0/PKG-INFO")
        pyproject = tf.extractfile("foo_bar-1.0/pyproject.toml")
        assert pkg_info is not None
        assert pyproject is not None
        assert b"Name: Foo.Bar\nVersion: 1.0\nRequires-Dist: beta\n" in pkg_info.read()
        assert b'dependencies = ["beta"]' in pyproject.read()
    assert "foo_bar-1.0/foo_bar/__init__.py" in names


def test_wheel_metadata_rejects_non_wheels(tmp_path: Path) -> None:
    path = tmp_path / "x-1.0-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("x/__init__.py", "")
    with pytest.raises(ValueError, match="expected one"):
        wheel_metadata(path)


# -- pure helpers ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("accept", "expected"),
    [
        (None, "text/html"),
        ("", "text/html"),
        ("*/*", "text/html"),
        ("text/html", "text/html"),
        (V1_HTML, V1_HTML),
        (V1_JSON, V1_JSON),
        (PIP_ACCEPT, V1_JSON),
        (UV_ACCEPT, V1_JSON),
        ("text/html;q=0.5, application/*;q=0.9", V1_HTML),  # tie: offer order wins
        ("application/json", "text/html"),  # no match: PyPI falls back, never 406
        (f"{V1_JSON};q=0, */*;q=0.1", "text/html"),
        (f"{V1_JSON};q=0.5, {V1_HTML};q=0.6", V1_HTML),
        (f"text/html;q=0.1, {V1_JSON};q=bogus", "text/html"),
    ],
)
def test_negotiate(accept: str | None, expected: str) -> None:
    assert negotiate(accept) == expected


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (None, None),
        ("bytes=0-99", (0, 99)),
        ("bytes=100-", (100, 999)),
        ("bytes=-100", (900, 999)),
        ("bytes=-5000", (0, 999)),
        ("bytes=990-5000", (990, 999)),
        ("bytes=5-1", None),  # invalid: ignored, full body
        ("bytes=0-1,5-6", None),  # multiple ranges: we may send the whole file
        ("items=0-1", None),
    ],
)
def test_byte_range(header: str | None, expected: tuple[int, int] | None) -> None:
    assert byte_range(header, 1000) == expected


@pytest.mark.parametrize("header", ["bytes=1000-", "bytes=-0", "bytes=5000-6000"])
def test_byte_range_unsatisfiable(header: str) -> None:
    with pytest.raises(web.HTTPRequestRangeNotSatisfiable) as info:
        byte_range(header, 1000)
    assert info.value.headers["Content-Range"] == "bytes */1000"


# -- pages -----------------------------------------------------------------------------------


async def test_json_page_is_computed_from_bytes(
    fake: FakeIndex, session: aiohttp.ClientSession, dists: dict[str, Path]
) -> None:
    async with session.get(fake.index_url + "beta/", headers={"Accept": PIP_ACCEPT}) as r:
        assert r.status == 200
        assert r.headers["Content-Type"] == V1_JSON
        body = await r.read()
        assert r.headers["ETag"] == f'"{hashlib.md5(body).hexdigest()}"'
        assert r.headers["Vary"] == "Accept"
        assert r.headers["Cache-Control"] == "max-age=600, public"
        assert r.headers["X-PyPI-Last-Serial"] == str(fake.serial("beta")) == "5"
        doc = await r.json(content_type=V1_JSON)
    files_host = URL(fake.files_url)
    assert files_host.port != URL(fake.index_url).port
    expected = []
    for key, yanked, rp in [
        ("beta1", False, None),
        ("beta2", "broken <build> ", None),
        ("beta3", False, ">=4"),
    ]:
        data = dists[key].read_bytes()
        meta = {"sha256": sha256(wheel_metadata(dists[key]))}
        f = next(f for f in fake.files("beta") if f.filename == dists[key].name)
        assert URL(fake.file_url(f)).origin() == files_host.origin()
        expected.append(
            {
                "filename": dists[key].name,
                "url": fake.file_url(f),
                "hashes": {"sha256": sha256(data)},
                "requires-python": rp,
                "size": len(data),
                "upload-time": f.upload_time,
                "yanked": yanked,
                "core-metadata": meta,
                "data-dist-info-metadata": meta,
            }
        )
    assert doc == {
        "meta": {"api-version": "1.1", "_last-serial": 5},
        "name": "beta",
        "versions": ["1.0", "2.0", "3.0"],
        "files": expected,
    }
    h = hashlib.blake2b(dists["beta1"].read_bytes(), digest_size=32).hexdigest()
    layout = f"/packages/{h[:2]}/{h[2:4]}/{h[4:]}/beta-1.0-py3-none-any.whl"  # like PyPI
    assert expected[0]["url"] == fake.files_url + layout


async def test_html_page_is_computed_from_bytes(
    fake: FakeIndex, session: aiohttp.ClientSession, dists: dict[str, Path]
) -> None:
    async with session.get(fake.index_url + "beta/") as r:  # no Accept: text/html
        assert r.headers["Content-Type"] == "text/html; charset=utf-8"
        text = await r.text()
    assert '<meta name="pypi:repository-version" content="1.1">' in text
    assert text.endswith("<!--SERIAL 5-->\n")
    assert 'data-requires-python="&gt;=4"' in text
    assert 'data-yanked="broken &lt;build&gt; "' in text  # byte-exact, trailing space kept
    anchors = Anchors(text).anchors
    for a, key in zip(anchors, ["beta1", "beta2", "beta3"], strict=True):
        url, _, fragment = (a["href"] or "").partition("#")
        assert fragment == "sha256=" + sha256(dists[key].read_bytes())
        async with session.get(url) as r:
            assert sha256(await r.read()) == fragment.removeprefix("sha256=")
        meta = "sha256=" + sha256(wheel_metadata(dists[key]))
        assert a["data-core-metadata"] == a["data-dist-info-metadata"] == meta
    assert [a.get("data-yanked") for a in anchors] == [None, "broken <build> ", None]
    assert [a.get("data-requires-python") for a in anchors] == [None, None, ">=4"]


async def test_v1_html_and_sdist_without_metadata(
    fake: FakeIndex, session: aiohttp.ClientSession
) -> None:
    async with session.get(fake.index_url + "alpha/", headers={"Accept": V1_HTML}) as r:
        assert r.headers["Content-Type"] == V1_HTML
        anchors = Anchors(await r.text()).anchors
    # wheel sorts before sdist by filename at equal version (warehouse order)
    names = [URL(a["href"] or "").name for a in anchors]
    assert names == ["alpha-1.0-py3-none-any.whl", "alpha-1.0.tar.gz"]
    assert anchors[0]["data-requires-python"] == ">=3.8"  # taken from the wheel's METADATA
    assert "data-core-metadata" not in anchors[1]
    assert "data-requires-python" not in anchors[1]


async def test_root_listing(fake: FakeIndex, session: aiohttp.ClientSession) -> None:
    doc = await get_json(session, fake.index_url)
    assert doc == {
        "meta": {"api-version": "1.1", "_last-serial": 6},
        "projects": [
            {"name": "alpha", "_last-serial": 2},
            {"name": "beta", "_last-serial": 5},
            {"name": "Foo_Bar", "_last-serial": 6},
        ],
    }
    anchors = Anchors(await get_html(session, fake.index_url)).anchors
    assert [a["href"] for a in anchors] == ["/simple/alpha/", "/simple/beta/", "/simple/foo-bar/"]


@pytest.mark.parametrize("path", ["Foo_Bar/", "FOO.bar/", "foo-bar"])
async def test_non_normalized_names_redirect(
    fake: FakeIndex, session: aiohttp.ClientSession, path: str
) -> None:
    async with session.get(fake.index_url + path, allow_redirects=False) as r:
        assert r.status == 301
        assert r.headers["Location"] == "/simple/foo-bar/"
    async with session.get(fake.index_url + path) as r:
        assert (r.status, r.url.path) == (200, "/simple/foo-bar/")
    assert len(fake.page_gets("foo-bar")) == 3


async def test_unknown_project_404(fake: FakeIndex, session: aiohttp.ClientSession) -> None:
    async with session.get(fake.index_url + "nope/") as r:
        assert r.status == 404


@pytest.mark.parametrize("accept", ["text/html", V1_HTML, V1_JSON])
async def test_etag_and_304(fake: FakeIndex, session: aiohttp.ClientSession, accept: str) -> None:
    url = fake.index_url + "beta/"
    async with session.get(url, headers={"Accept": accept}) as r:
        etag = r.headers["ETag"]
        assert etag.startswith('"')
        assert len(etag) == 34
    headers = {"Accept": accept, "If-None-Match": etag}
    async with session.get(url, headers=headers) as r:
        assert r.status == 304
        assert await r.read() == b""
        assert r.headers["ETag"] == etag
        assert r.headers["Vary"] == "Accept"
        assert r.headers["Cache-Control"] == "max-age=600, public"
    async with session.get(url, headers={**headers, "If-None-Match": '"other"'}) as r:
        assert r.status == 200
    other = V1_JSON if accept != V1_JSON else "text/html"
    async with session.get(url, headers={"Accept": other, "If-None-Match": etag}) as r:
        assert r.status == 200  # each representation has its own ETag


async def test_changes_bump_serial_and_etag(
    fake: FakeIndex, session: aiohttp.ClientSession, dists: dict[str, Path]
) -> None:
    url = fake.index_url + "beta/"
    async with session.get(url) as r:
        etag, serial = r.headers["ETag"], int(r.headers["X-PyPI-Last-Serial"])
    fake.set_yanked("beta", dists["beta1"].name, "oops")
    async with session.get(url, headers={"If-None-Match": etag}) as r:
        assert r.status == 200
        # Like PyPI, a project's serial is the global journal id of its last change.
        assert int(r.headers["X-PyPI-Last-Serial"]) == fake.serial("beta") == 7 > serial
        assert 'data-yanked="oops"' in await r.text()
    fake.set_yanked("beta", dists["beta1"].name, False)
    doc = await get_json(session, url)
    assert [f["yanked"] for f in doc["files"]] == [False, "broken <build> ", False]
    with pytest.raises(ValueError, match="never reuses"):
        fake.add_file("beta", dists["beta1"])


# -- files -----------------------------------------------------------------------------------


async def test_file_download_headers_and_head(
    fake: FakeIndex, session: aiohttp.ClientSession, dists: dict[str, Path]
) -> None:
    (big,) = fake.files("foo-bar")
    assert big.filename == "Foo_Bar-0.1+abc-py3-none-any.whl"
    assert "+" in big.url_path
    async with session.get(fake.file_url(big)) as r:
        assert r.status == 200
        assert r.headers["Content-Type"] == "application/octet-stream"
        assert r.headers["Accept-Ranges"] == "bytes"
        assert "Content-Encoding" not in r.headers
        assert int(r.headers["Content-Length"]) == big.size == dists["big"].stat().st_size
        assert await r.read() == dists["big"].read_bytes()
    async with session.head(fake.file_url(big)) as r:
        assert (r.status, r.headers["Content-Length"]) == (200, str(big.size))
        assert r.headers["Accept-Ranges"] == "bytes"
        assert await r.read() == b""
    quoted = fake.file_url(big).replace("+", "%2B")  # clients may percent-encode the '+'
    async with session.get(URL(quoted, encoded=True)) as r:
        assert r.status == 200
    async with session.get(fake.files_url + "/packages/aa/bb/cc/missing.whl") as r:
        assert r.status == 404


@pytest.mark.parametrize(
    ("header", "start", "end"),
    [("bytes=0-99", 0, 99), ("bytes=1000-", 1000, None), ("bytes=-100", -100, None)],
)
async def test_range_206(
    fake: FakeIndex, session: aiohttp.ClientSession, header: str, start: int, end: int | None
) -> None:
    (big,) = fake.files("foo-bar")
    async with session.get(fake.file_url(big), headers={"Range": header}) as r:
        assert r.status == 206
        body = await r.read()
    expected = big.data[start : None if end is None else end + 1]
    assert body == expected
    first = start % big.size
    assert r.headers["Content-Range"] == f"bytes {first}-{first + len(expected) - 1}/{big.size}"
    assert r.headers["Content-Length"] == str(len(expected))


async def test_range_416_and_if_range(fake: FakeIndex, session: aiohttp.ClientSession) -> None:
    (big,) = fake.files("foo-bar")
    url = fake.file_url(big)
    async with session.get(url, headers={"Range": f"bytes={big.size}-"}) as r:
        assert r.status == 416
        assert r.headers["Content-Range"] == f"bytes */{big.size}"
    async with session.get(url, headers={"Range": "bytes=10-", "If-Range": '"stale"'}) as r:
        assert r.status == 200
        assert len(await r.read()) == big.size
    async with session.get(url, headers={"Range": "bytes=10-", "If-Range": f'"{big.sha256}"'}) as r:
        assert r.status == 206
        assert len(await r.read()) == big.size - 10


async def test_metadata_files(
    fake: FakeIndex, session: aiohttp.ClientSession, dists: dict[str, Path]
) -> None:
    doc = await get_json(session, fake.index_url + "alpha/")
    wheel, sdist = doc["files"]
    async with session.get(wheel["url"] + ".metadata") as r:
        assert r.status == 200
        body = await r.read()
    assert body == wheel_metadata(dists["alpha"])
    assert sha256(body) == wheel["core-metadata"]["sha256"]
    async with session.get(sdist["url"] + ".metadata") as r:
        assert r.status == 404  # not advertised, not served
    # metadata=False: neither advertised (JSON, HTML) nor served
    (big,) = (await get_json(session, fake.index_url + "foo-bar/"))["files"]
    assert big["core-metadata"] is False is big["data-dist-info-metadata"]
    (anchor,) = Anchors(await get_html(session, fake.index_url + "foo-bar/")).anchors
    assert "data-core-metadata" not in anchor
    assert "data-dist-info-metadata" not in anchor
    async with session.get(big["url"] + ".metadata") as r:
        assert r.status == 404


async def test_request_log(fake: FakeIndex, session: aiohttp.ClientSession) -> None:
    (b1, *_) = fake.files("beta")
    await get_json(session, fake.index_url + "beta/")
    async with session.get(fake.file_url(b1) + ".metadata", headers={"X-Test": "1"}):
        pass
    async with session.get(fake.file_url(b1) + "?q=1"):
        pass
    async with session.head(fake.file_url(b1)):
        pass
    assert [(r.host, r.method) for r in fake.requests] == [
        ("index", "GET"),
        ("files", "GET"),
        ("files", "GET"),
        ("files", "HEAD"),
    ]
    assert fake.requests[1].headers["x-test"] == "1"  # names are lowercased
    assert fake.requests[0].headers["accept"] == V1_JSON
    assert [r.path for r in fake.file_gets()] == [b1.url_path + "?q=1"]
    assert fake.file_gets(b1.filename) == fake.file_gets()
    metadata_gets = fake.file_gets(b1.filename + ".metadata")
    assert [r.path for r in metadata_gets] == [b1.url_path + ".metadata"]
    assert len(fake.page_gets()) == len(fake.page_gets("Beta")) == 1
    assert fake.page_gets("alpha") == []
    fake.clear_log()
    assert fake.requests == []


# -- fault knobs -----------------------------------------------------------------------------


async def test_serve_only(fake: FakeIndex, session: aiohttp.ClientSession) -> None:
    fake.serve_only = "json"
    async with session.get(fake.index_url + "beta/", headers={"Accept": "text/html"}) as r:
        assert r.headers["Content-Type"] == V1_JSON
    fake.serve_only = "html"
    async with session.get(fake.index_url + "beta/", headers={"Accept": V1_JSON}) as r:
        assert r.headers["Content-Type"] == "text/html; charset=utf-8"
        assert "<!--SERIAL" in await r.text()


async def test_quirk_no_content_type(fake: FakeIndex, session: aiohttp.ClientSession) -> None:
    fake.html_quirks.add("no-content-type")
    async with session.get(fake.index_url + "beta/") as r:
        assert "Content-Type" not in r.headers
        assert "<a href" in await r.text()
    async with session.get(fake.index_url + "beta/", headers={"Accept": V1_JSON}) as r:
        assert r.headers["Content-Type"] == V1_JSON


@pytest.mark.parametrize("quirk", ["relative-links", "base-href"])
async def test_quirk_relative_hrefs(
    fake: FakeIndex, session: aiohttp.ClientSession, dists: dict[str, Path], quirk: str
) -> None:
    (b1, *_) = fake.files("beta")
    page = URL(fake.index_url + "beta/")
    async with session.get(page.with_path(b1.url_path)) as r:
        assert r.status == 404  # the index host serves no files without the quirk
    fake.html_quirks.add(quirk)
    parsed = Anchors(await get_html(session, str(page)))
    href = parsed.anchors[0]["href"] or ""
    assert not href.startswith(("http:", "/"))
    base = URL(parsed.base) if parsed.base is not None else page
    assert (parsed.base is None) == (quirk == "relative-links")
    url = base.join(URL(href.partition("#")[0]))
    host = "index" if quirk == "relative-links" else "files"
    assert url.port == URL(fake.index_url if host == "index" else fake.files_url).port
    async with session.get(url) as r:
        assert await r.read() == dists["beta1"].read_bytes()
    assert fake.file_gets(b1.filename)[-1].host == host


async def test_quirk_no_etag(fake: FakeIndex, session: aiohttp.ClientSession) -> None:
    fake.html_quirks.add("no-etag")
    headers = {"If-None-Match": "*"}
    async with session.get(fake.index_url + "beta/", headers=headers) as r:
        assert r.status == 200
        assert not {"ETag", "Cache-Control", "Vary"} & set(r.headers)
        assert r.headers["X-PyPI-Last-Serial"] == "5"


async def test_fail_pages_and_files(fake: FakeIndex, session: aiohttp.ClientSession) -> None:
    url = fake.index_url + "beta/"
    fake.fail_pages(503, times=2)
    statuses = []
    for _ in range(3):
        async with session.get(url) as r:
            statuses.append(r.status)
    assert statuses == [503, 503, 200]
    fake.fail_pages(500)
    for _ in range(3):
        async with session.get(url) as r:
            assert r.status == 500
    (b1, *_) = fake.files("beta")
    fake.fail_files(404, times=1)
    async with session.get(fake.file_url(b1)) as r:
        assert r.status == 404
    async with session.get(fake.file_url(b1)) as r:
        assert r.status == 200
    fake.reset_faults()
    async with session.get(url) as r:
        assert r.status == 200


async def test_page_and_file_faults_keep_their_own_headers(
    fake: FakeIndex, session: aiohttp.ClientSession
) -> None:
    (b1, *_) = fake.files("beta")
    fake.fail_pages(429, headers={"Retry-After": "7"})
    fake.fail_files(503, headers={"X-File-Fault": "1"})
    async with session.get(fake.index_url + "beta/") as r:
        assert (r.status, r.headers.get("Retry-After")) == (429, "7")
        assert "X-File-Fault" not in r.headers
    async with session.get(fake.file_url(b1)) as r:
        assert (r.status, r.headers.get("X-File-Fault")) == (503, "1")
        assert "Retry-After" not in r.headers


@pytest.mark.parametrize("which", ["pages", "files"])
async def test_delays_trigger_client_timeouts(
    fake: FakeIndex, session: aiohttp.ClientSession, which: str
) -> None:
    (b1, *_) = fake.files("beta")
    url = fake.index_url + "beta/" if which == "pages" else fake.file_url(b1)
    (fake.delay_pages if which == "pages" else fake.delay_files)(30)
    started = time.monotonic()
    with pytest.raises(asyncio.TimeoutError):
        await session.get(url, timeout=aiohttp.ClientTimeout(total=0.2))
    fake.delay_pages(0)
    fake.delay_files(0)
    async with session.get(url) as r:
        assert r.status == 200
    # The handler still sleeping must not hold shutdown for 30 s: stop() interrupts it.
    await fake.stop()
    assert time.monotonic() - started < 5


async def test_chunk_delay_trickles_body(fake: FakeIndex, session: aiohttp.ClientSession) -> None:
    (big,) = fake.files("foo-bar")
    fake.chunk_size = 100_000
    fake.chunk_delay(0.05)
    started = time.monotonic()
    async with session.get(fake.file_url(big)) as r:
        assert await r.read() == big.data
    assert time.monotonic() - started >= 0.2  # 4 chunks, a sleep before each
    fake.chunk_delay(30)  # stop() at teardown cuts this short
    async with session.get(fake.file_url(big), timeout=aiohttp.ClientTimeout(sock_read=0.5)) as r:
        assert r.status == 200  # headers come promptly; reading the body times out
        with pytest.raises(aiohttp.SocketTimeoutError):
            await r.read()


async def test_truncate_files(fake: FakeIndex, session: aiohttp.ClientSession) -> None:
    (big,) = fake.files("foo-bar")
    fake.truncate_files(1000, times=1)
    async with session.get(fake.file_url(big)) as r:
        assert r.headers["Content-Length"] == str(big.size)
        with pytest.raises(aiohttp.ClientPayloadError):
            await r.read()
    async with session.get(fake.file_url(big)) as r:
        assert await r.read() == big.data  # times=1: the retry succeeds
    fake.truncate_files(10)
    async with session.get(fake.file_url(big), headers={"Range": "bytes=100-199"}) as r:
        assert r.status == 206
        assert await r.content.readexactly(10) == big.data[100:110]
        with pytest.raises(aiohttp.ClientPayloadError):
            await r.content.read()


async def test_corrupt_files(fake: FakeIndex, session: aiohttp.ClientSession) -> None:
    (big,) = fake.files("foo-bar")
    fake.corrupt_files()
    async with session.get(fake.file_url(big)) as r:
        body = await r.read()
    assert len(body) == big.size
    assert sha256(body) != big.sha256
    assert sum(a != b for a, b in zip(body, big.data, strict=True)) == 1


async def test_gzip_pages(fake: FakeIndex, dists: dict[str, Path]) -> None:
    fake.gzip_pages()
    async with (
        aiohttp.ClientSession(auto_decompress=False) as raw,
        raw.get(fake.index_url + "beta/", headers={"Accept": V1_JSON}) as r,
    ):
        assert r.headers["Content-Encoding"] == "gzip"
        compressed = await r.read()
        assert r.headers["Content-Length"] == str(len(compressed))
    assert compressed[:2] == b"\x1f\x8b"
    async with aiohttp.ClientSession() as decoding:
        doc = await get_json(decoding, fake.index_url + "beta/")
    assert doc["name"] == "beta"
    assert gzip.decompress(compressed) == json.dumps(doc).encode()
    (b1, *_) = fake.files("beta")
    async with aiohttp.ClientSession(auto_decompress=False) as raw, raw.get(fake.file_url(b1)) as r:
        assert "Content-Encoding" not in r.headers  # files are never encoded
        assert await r.read() == dists["beta1"].read_bytes()


async def test_down_up_and_stop(fake: FakeIndex, session: aiohttp.ClientSession) -> None:
    (b1, *_) = fake.files("beta")
    fake.down()
    for url in (fake.index_url + "beta/", fake.file_url(b1)):
        async with session.get(url) as r:
            assert r.status == 503
    fake.up()
    async with session.get(fake.file_url(b1)) as r:
        assert r.status == 200
    await fake.stop()
    with pytest.raises(aiohttp.ClientConnectorError):
        async with session.get(fake.index_url + "beta/"):
            pass


async def test_start_without_fixture(dists: dict[str, Path]) -> None:
    fake = FakeIndex()
    fake.add_file("beta", dists["beta1"])
    await fake.start()
    try:
        async with aiohttp.ClientSession() as s:
            assert (await get_json(s, fake.index_url + "beta/"))["name"] == "beta"
    finally:
        await fake.stop()
        await fake.stop()  # idempotent


# -- real clients ----------------------------------------------------------------------------


def _client_env() -> dict[str, str]:
    # Isolate from this machine's pip/uv configuration and indexes.
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PIP_", "UV_"))}
    env.update(
        PIP_CONFIG_FILE=os.devnull,
        PIP_DISABLE_PIP_VERSION_CHECK="1",
        UV_NO_CONFIG="1",
        UV_PYTHON_DOWNLOADS="never",
    )
    return env


async def _run(argv: Sequence[str], env: dict[str, str]) -> str:
    # Never block the loop: the fake index is served from this same loop.
    proc = await asyncio.create_subprocess_exec(
        *argv, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    out, _ = await asyncio.wait_for(proc.communicate(), 100)
    assert proc.returncode == 0, out.decode()
    return out.decode()


def _run_sync(argv: Sequence[str], env: dict[str, str]) -> str:
    return subprocess.run(argv, env=env, check=True, capture_output=True, text=True).stdout


async def _check_installed(fake: FakeIndex, target: Path, dists: dict[str, Path]) -> None:
    code = "import alpha, beta; print(alpha.__version__, beta.__version__)"
    env = {**_client_env(), "PYTHONPATH": str(target)}
    assert (await _run([sys.executable, "-c", code], env)).strip() == "1.0 1.0"
    # Yanked 2.0 and Requires-Python >=4 3.0 were never fetched; the others in full once each.
    assert fake.file_gets(dists["beta2"].name) == fake.file_gets(dists["beta3"].name) == []
    for key in ("alpha", "beta1"):
        full = [r for r in fake.file_gets(dists[key].name) if "range" not in r.headers]
        assert len(full) == 1, fake.requests
    assert fake.page_gets("alpha")
    assert fake.page_gets("beta")


# json: PyPI as pip and uv see it; html: the HTML renderer; mirror: a plain HTML mirror with
# relative links, no ETag and no PEP 658 metadata (uv then probes wheels with HEAD + Range).
CLIENT_VARIANTS = ["json", "html", "mirror"]


async def _client_fake(
    variant: str, aiohttp_server: AiohttpServer, dists: dict[str, Path]
) -> FakeIndex:
    fake = FakeIndex()
    add_chain(fake, dists, metadata=variant != "mirror")
    await fake.start(aiohttp_server)
    if variant != "json":
        fake.serve_only = "html"
    if variant == "mirror":
        fake.html_quirks |= {"relative-links", "no-etag"}
    return fake


@pytest.mark.clients
@pytest.mark.parametrize("variant", CLIENT_VARIANTS)
async def test_pip_installs_from_fake(
    aiohttp_server: AiohttpServer, tmp_path: Path, dists: dict[str, Path], variant: str
) -> None:
    fake = await _client_fake(variant, aiohttp_server, dists)
    argv = [sys.executable, "-m", "pip", "install", "--no-cache-dir", "--index-url"]
    argv += [fake.index_url, "--target", str(tmp_path / "t"), "alpha"]
    await _run(argv, _client_env())
    await _check_installed(fake, tmp_path / "t", dists)
    # pip reads PEP 658 metadata when advertised, else downloads the wheel
    assert bool(fake.file_gets(dists["alpha"].name + ".metadata")) == (variant != "mirror")


@pytest.mark.clients
@pytest.mark.parametrize("variant", CLIENT_VARIANTS)
async def test_uv_installs_from_fake(
    aiohttp_server: AiohttpServer, tmp_path: Path, dists: dict[str, Path], variant: str
) -> None:
    fake = await _client_fake(variant, aiohttp_server, dists)
    uv = shutil.which("uv") or str(Path(sys.executable).parent / "uv")
    argv = [uv, "pip", "install", "--no-cache", "--python", sys.executable]
    argv += ["--index-url", fake.index_url, "--target", str(tmp_path / "t"), "alpha"]
    await _run(argv, _client_env())
    await _check_installed(fake, tmp_path / "t", dists)
    alpha = dists["alpha"].name
    assert bool(fake.file_gets(alpha + ".metadata")) == (variant != "mirror")
    if variant == "mirror":
        methods = [(r.method, "range" in r.headers) for r in fake.requests if alpha in r.path]
        assert methods == [("HEAD", False), ("GET", True), ("GET", False)]
        assert {r.host for r in fake.file_gets()} == {"index"}  # relative links: same host


async def test_json_api_is_computed_from_bytes(
    fake: FakeIndex, session: aiohttp.ClientSession, dists: dict[str, Path]
) -> None:
    base = fake.index_url.removesuffix("simple/") + "pypi/"
    async with session.get(base + "Beta/json") as r:  # any spelling, like warehouse
        assert r.status == 200
        assert r.headers["X-PyPI-Last-Serial"] == str(fake.serial("beta"))
        doc = await r.json()
    assert doc["info"]["version"] == "3.0"  # the latest not yanked (requires-python aside)
    assert sorted(doc["releases"]) == ["1.0", "2.0", "3.0"]
    for key, version in [("beta1", "1.0"), ("beta2", "2.0"), ("beta3", "3.0")]:
        data = dists[key].read_bytes()
        [entry] = doc["releases"][version]
        assert entry["filename"] == dists[key].name
        assert entry["digests"]["sha256"] == sha256(data)
        assert entry["digests"]["md5"] == hashlib.md5(data).hexdigest()
        assert entry["size"] == len(data)
        assert entry["packagetype"] == "bdist_wheel"
        async with session.get(entry["url"]) as f:
            assert await f.read() == data
    assert doc["releases"]["2.0"][0]["yanked_reason"] == "broken <build> "
    async with session.get(base + "alpha/1.0/json") as r:
        one = await r.json()
    assert "releases" not in one
    assert {e["packagetype"] for e in one["urls"]} == {"bdist_wheel", "sdist"}
    for path in ("nosuch/json", "beta/9/json"):
        async with session.get(base + path) as r:
            assert r.status == 404
    assert len(fake.json_api_gets("beta")) == 2
