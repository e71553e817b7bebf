"""Parsing upstream project pages: PEP 503 HTML and PEP 691 JSON, as PyPI and others serve them."""

import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from packaging.utils import canonicalize_name
from pep691 import PEP691_FILE_KEYS
from yarl import URL

from cacheproxy.errors import IndexParseError
from cacheproxy.simple.models import DistFile, ProjectList, ProjectPage
from cacheproxy.simple.parse import (
    JSON_TYPE,
    is_json,
    parse_project_list,
    parse_project_page,
)

NAME = canonicalize_name("requests")
PAGE_URL = URL("https://mirror.example/simple/requests/")
FILES = "https://files.example/packages"
SHA_WHL = "5a" * 32
SHA_SDIST = "b7" * 32
SHA_META = "c3" * 32
REASON = "Yanked due to conflicts with CVE-2024-35195 mitigation"  # PEP 592: byte-exact


def parse(body: str | bytes, content_type: str | None, url: URL = PAGE_URL) -> ProjectPage:
    raw = body.encode() if isinstance(body, str) else body
    return parse_project_page(raw, content_type, url, NAME)


def json_page(files: list[dict[str, Any]], **top: Any) -> str:
    data: dict[str, Any] = {"meta": {"api-version": "1.1"}, "name": "requests", "files": files}
    data.update(top)
    return json.dumps(data)


def html_page(*anchors: str, head: str = "") -> str:
    links = "\n    ".join(f"{a}<br />" for a in anchors)
    return (
        "<!DOCTYPE html>\n<html>\n  <head>\n"
        f'    <meta name="pypi:repository-version" content="1.1">\n    {head}\n'
        "    <title>Links for requests</title>\n  </head>\n  <body>\n"
        f"    <h1>Links for requests</h1>\n    {links}\n  </body>\n</html>\n"
        "<!--SERIAL 26356948-->\n"
    )


def one_file(page: ProjectPage) -> DistFile:
    assert len(page.files) == 1
    return page.files[0]


# ---- realistic whole pages --------------------------------------------------------------

PYPI_JSON = json.dumps(
    {
        "meta": {"api-version": "1.4", "_last-serial": 26356948},
        "name": "requests",
        "versions": ["2.32.0", "2.32.1"],
        "alternate-locations": [],
        "project-status": {"status": "active"},
        "files": [
            {
                "filename": "requests-2.32.0-py3-none-any.whl",
                "url": f"{FILES}/24/e0/{'1' * 60}/requests-2.32.0-py3-none-any.whl",
                "hashes": {"sha256": SHA_WHL},
                "requires-python": ">=3.8",
                "size": 64928,
                "upload-time": "2024-05-20T15:25:43.123456Z",
                "yanked": REASON,
                "core-metadata": {"sha256": SHA_META},
                "data-dist-info-metadata": {"sha256": SHA_META},
                "provenance": f"{FILES}/24/e0/requests-2.32.0-py3-none-any.whl.provenance",
            },
            {
                "filename": "requests-2.32.1.tar.gz",
                "url": "../../packages/63/70/requests-2.32.1.tar.gz",
                "hashes": {"sha256": SHA_SDIST, "md5": "0f" * 16},
                "requires-python": None,
                "size": 131218,
                "upload-time": "2024-05-20T16:00:00.000000Z",
                "yanked": REASON + " ",
                "core-metadata": False,
                "data-dist-info-metadata": False,
                "gpg-sig": False,
                "x-future": {"nested": [1, "two", None]},
            },
        ],
    }
)


def test_pypi_json_page() -> None:
    assert parse(PYPI_JSON, JSON_TYPE) == ProjectPage(
        name=NAME,
        files=(
            DistFile(
                filename="requests-2.32.0-py3-none-any.whl",
                url=f"{FILES}/24/e0/{'1' * 60}/requests-2.32.0-py3-none-any.whl",
                hashes={"sha256": SHA_WHL},
                requires_python=">=3.8",
                yanked=REASON,
                core_metadata={"sha256": SHA_META},
                size=64928,
                upload_time="2024-05-20T15:25:43.123456Z",
                provenance=f"{FILES}/24/e0/requests-2.32.0-py3-none-any.whl.provenance",
            ),
            DistFile(
                filename="requests-2.32.1.tar.gz",
                # Relative URLs resolve against the page URL.
                url="https://mirror.example/packages/63/70/requests-2.32.1.tar.gz",
                hashes={"sha256": SHA_SDIST, "md5": "0f" * 16},
                yanked=REASON + " ",
                size=131218,
                upload_time="2024-05-20T16:00:00.000000Z",
                gpg_sig=False,
                extra={"x-future": {"nested": [1, "two", None]}},
            ),
        ),
        api_version="1.4",
        versions=("2.32.0", "2.32.1"),
        meta={"_last-serial": 26356948},
        extra={"alternate-locations": [], "project-status": {"status": "active"}},
    )


PYPI_HTML = html_page(
    f'<a href="{FILES}/24/e0/requests-2.32.0-py3-none-any.whl#sha256={SHA_WHL}" '
    f'data-requires-python="&gt;=3.8" data-yanked="{REASON}" '
    f'data-dist-info-metadata="sha256={SHA_META}" data-core-metadata="sha256={SHA_META}" '
    f'data-provenance="{FILES}/24/e0/requests-2.32.0-py3-none-any.whl.provenance">'
    "requests-2.32.0-py3-none-any.whl</a>",
    f'<a href="../../packages/63/70/requests-2.32.1.tar.gz#sha256={SHA_SDIST}" '
    f'data-requires-python="&lt;4,&gt;=3.8" data-yanked="{REASON} ">requests-2.32.1.tar.gz</a>',
    f'<a href="{FILES}/aa/bb/requests-2.31.0+local-py3-none-any.whl#sha256={SHA_WHL}">'
    "display text is not the filename</a>",
    head='<meta name="pypi:project-status" content="archived">\n'
    '    <meta name="pypi:project-status-reason" content="moved &amp; merged">\n'
    '    <meta name="pypi:tracks" content="https://other.example/simple/requests/">\n'
    '    <meta name="pypi:alternate-locations" content="https://a.example/simple/requests/">\n'
    '    <meta name="pypi:alternate-locations" content="https://b.example/simple/requests/">',
)


def test_pypi_html_page() -> None:
    assert parse(PYPI_HTML, "text/html; charset=utf-8") == ProjectPage(
        name=NAME,
        files=(
            DistFile(
                filename="requests-2.32.0-py3-none-any.whl",
                url=f"{FILES}/24/e0/requests-2.32.0-py3-none-any.whl",
                hashes={"sha256": SHA_WHL},
                requires_python=">=3.8",
                yanked=REASON,
                core_metadata={"sha256": SHA_META},
                provenance=f"{FILES}/24/e0/requests-2.32.0-py3-none-any.whl.provenance",
            ),
            DistFile(
                filename="requests-2.32.1.tar.gz",
                url="https://mirror.example/packages/63/70/requests-2.32.1.tar.gz",
                hashes={"sha256": SHA_SDIST},
                requires_python="<4,>=3.8",
                yanked=REASON + " ",
            ),
            DistFile(
                filename="requests-2.31.0+local-py3-none-any.whl",
                url=f"{FILES}/aa/bb/requests-2.31.0+local-py3-none-any.whl",
                hashes={"sha256": SHA_WHL},
            ),
        ),
        api_version="1.1",
        extra={
            "project-status": {"status": "archived", "reason": "moved & merged"},
            "tracks": ["https://other.example/simple/requests/"],
            "alternate-locations": [
                "https://a.example/simple/requests/",
                "https://b.example/simple/requests/",
            ],
        },
    )


# ---- URLs -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("href", "url"),
    [
        pytest.param(
            "../../packages/ab/x-0.1%2Babc-py3-none-any.whl",
            "https://mirror.example/packages/ab/x-0.1%2Babc-py3-none-any.whl",
            id="dotdot-keeps-encoding",
        ),
        pytest.param("/p/x-1.0.tar.gz", "https://mirror.example/p/x-1.0.tar.gz", id="abs-path"),
        pytest.param(
            "x-1.0.tar.gz", "https://mirror.example/simple/requests/x-1.0.tar.gz", id="sibling"
        ),
        pytest.param(
            "//cdn.example/x-1.0.tar.gz", "https://cdn.example/x-1.0.tar.gz", id="scheme-rel"
        ),
        pytest.param(
            "http://cdn.example/x-1.0.tar.gz", "http://cdn.example/x-1.0.tar.gz", id="absolute"
        ),
    ],
)
def test_relative_urls_resolve_against_the_page_url(href: str, url: str) -> None:
    from_json = one_file(parse(json_page([{"filename": "x", "url": href, "hashes": {}}]), None))
    assert from_json.url == url
    assert one_file(parse(html_page(f'<a href="{href}">x</a>'), "text/html")).url == url


def test_base_href_is_honoured() -> None:
    body = html_page(
        '<a href="x-1.0.tar.gz">x</a>',
        '<a href="../y-1.0.tar.gz">y</a>',
        head='<base href="https://cdn.example/root/sub/"><base href="https://ignored.example/">',
    )
    assert [f.url for f in parse(body, "text/html").files] == [
        "https://cdn.example/root/sub/x-1.0.tar.gz",
        "https://cdn.example/root/y-1.0.tar.gz",
    ]


def test_relative_base_href_resolves_against_the_page_url() -> None:
    body = html_page('<a href="x-1.0.tar.gz">x</a>', head='<base href="../../files/">')
    assert one_file(parse(body, "text/html")).url == "https://mirror.example/files/x-1.0.tar.gz"


@pytest.mark.parametrize("base", ["http://[::1", "http://cdn.example:99999/"])
def test_unparseable_base_href_is_ignored(base: str) -> None:
    # HTML standard: a base URL that fails to parse falls back to the document's URL.
    body = html_page('<a href="x-1.0.tar.gz">x</a>', head=f'<base href="{base}">')
    assert one_file(parse(body, "text/html")).url == str(PAGE_URL) + "x-1.0.tar.gz"


def test_final_page_url_is_the_base() -> None:
    # After a redirect the page is parsed against where it was finally served from.
    page = parse(
        json_page([{"filename": "x", "url": "x-1.0.tar.gz", "hashes": {}}]),
        None,
        URL("https://other.example/simple/requests/"),
    )
    assert one_file(page).url == "https://other.example/simple/requests/x-1.0.tar.gz"


def test_unparseable_urls_drop_only_that_file() -> None:
    good = {"filename": "ok-1.0.tar.gz", "url": "ok-1.0.tar.gz", "hashes": {}}
    bad = [
        {"filename": "bad-1.0.tar.gz", "url": "http://[::1/bad-1.0.tar.gz", "hashes": {}},
        {"filename": "bad-1.0.tar.gz", "url": "http://h:99999/bad-1.0.tar.gz", "hashes": {}},
    ]
    assert [f.filename for f in parse(json_page([*bad, good]), JSON_TYPE).files] == [
        "ok-1.0.tar.gz"
    ]
    body = html_page(
        '<a href="http://[::1/bad-1.0.tar.gz">b</a>',
        '<a href="http://h:99999/bad-1.0.tar.gz">b</a>',
        '<a href="ok-1.0.tar.gz">o</a>',
    )
    assert [f.filename for f in parse(body, "text/html").files] == ["ok-1.0.tar.gz"]


def test_html_filename_comes_from_the_url_and_is_unquoted() -> None:
    body = html_page(f'<a href="../../p/x-0.1%2Babc-py3-none-any.whl?x=1#sha256={SHA_WHL}">t</a>')
    f = one_file(parse(body, "text/html"))
    assert f.filename == "x-0.1+abc-py3-none-any.whl"
    assert f.url == "https://mirror.example/p/x-0.1%2Babc-py3-none-any.whl?x=1"
    assert f.hashes == {"sha256": SHA_WHL}


# ---- format detection -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "content_type", "expected"),
    [
        pytest.param(b"{}", JSON_TYPE, True, id="v1-json"),
        pytest.param(b"{}", "application/vnd.pypi.simple.v1+json; charset=utf-8", True),
        pytest.param(b"<html>", "application/json", True, id="plain-json-type-wins"),
        pytest.param(b"{}", "text/html", False, id="html-type-wins"),
        pytest.param(b"{}", "application/vnd.pypi.simple.v1+html", False, id="v1-html"),
        pytest.param(b'  \n{"meta": {}}', None, True, id="sniff-json"),
        pytest.param(b"<!DOCTYPE html>", None, False, id="sniff-html"),
        pytest.param(b"{}", "application/octet-stream", True, id="generic-type-sniffed"),
        pytest.param(b"{}", "text/plain", True, id="text-plain-sniffed"),
        pytest.param(b"", None, False, id="empty"),
    ],
)
def test_is_json(body: bytes, content_type: str | None, expected: bool) -> None:
    assert is_json(body, content_type) is expected


def test_missing_content_type_is_sniffed() -> None:
    url = f"{FILES}/x-1.0.tar.gz"
    from_json = parse(json_page([{"filename": "x-1.0.tar.gz", "url": url, "hashes": {}}]), None)
    from_html = parse(html_page(f'<a href="{url}">x-1.0.tar.gz</a>'), None)
    assert from_json.files == from_html.files == (DistFile(filename="x-1.0.tar.gz", url=url),)
    assert from_json.api_version == from_html.api_version == "1.1"


# ---- attributes -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("attr", "expected"),
    [
        pytest.param("", None, id="absent"),
        pytest.param('data-requires-python="&gt;=3.8"', ">=3.8", id="escaped"),
        pytest.param('data-requires-python=">=3.8"', ">=3.8", id="unescaped"),
        pytest.param('data-requires-python="&lt;4,&gt;=3.8,!=3.9.*"', "<4,>=3.8,!=3.9.*", id="lt"),
        pytest.param('data-requires-python="&#62;=3.8"', ">=3.8", id="numeric-ref"),
        pytest.param('data-requires-python=""', None, id="empty"),
    ],
)
def test_html_requires_python(attr: str, expected: str | None) -> None:
    body = html_page(f'<a href="x-1.0.tar.gz" {attr}>x</a>')
    assert one_file(parse(body, "text/html")).requires_python == expected


@pytest.mark.parametrize(
    ("attr", "expected"),
    [
        pytest.param("", False, id="absent"),
        pytest.param("data-yanked", True, id="no-value"),
        pytest.param('data-yanked=""', True, id="empty"),
        pytest.param(f'data-yanked="{REASON} "', REASON + " ", id="trailing-space"),
        pytest.param('data-yanked="  padded\tboth  "', "  padded\tboth  ", id="whitespace"),
        pytest.param(
            'data-yanked="broke &lt;it&gt; &amp; &quot;more&quot;"', 'broke <it> & "more"'
        ),
        pytest.param("DATA-YANKED='single quotes'", "single quotes", id="case-and-quotes"),
    ],
)
def test_html_yanked(attr: str, expected: bool | str) -> None:
    body = html_page(f'<a href="x-1.0.tar.gz" {attr}>x</a>')
    assert one_file(parse(body, "text/html")).yanked == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        pytest.param(False, False, id="false"),
        pytest.param(True, True, id="true"),
        pytest.param("", True, id="empty-reason"),  # pip: yanked without a reason
        pytest.param(REASON + " ", REASON + " ", id="trailing-space"),
        pytest.param(None, False, id="null"),
        pytest.param(1, False, id="number"),
    ],
)
def test_json_yanked(value: object, expected: bool | str) -> None:
    entry = {"filename": "x", "url": "x", "hashes": {}, "yanked": value}
    assert one_file(parse(json_page([entry]), JSON_TYPE)).yanked == expected


def test_json_yanked_absent() -> None:
    assert one_file(parse(json_page([{"filename": "x", "url": "x"}]), JSON_TYPE)).yanked is False


@pytest.mark.parametrize(
    ("attrs", "expected"),
    [
        pytest.param("", False, id="absent"),
        pytest.param(f'data-dist-info-metadata="sha256={SHA_META}"', {"sha256": SHA_META}),
        pytest.param(f'data-core-metadata="sha256={SHA_META}"', {"sha256": SHA_META}),
        pytest.param(
            f'data-dist-info-metadata="sha256={SHA_WHL}" data-core-metadata="sha256={SHA_META}"',
            {"sha256": SHA_META},
            id="core-wins-when-first-or-second",
        ),
        pytest.param(
            f'data-core-metadata="sha256={SHA_META}" data-dist-info-metadata="sha256={SHA_WHL}"',
            {"sha256": SHA_META},
            id="core-wins-either-order",
        ),
        pytest.param('data-core-metadata="true"', True, id="true"),
        pytest.param('data-core-metadata="True"', True, id="true-case"),
        pytest.param('data-core-metadata="false"', False, id="false"),
        pytest.param('data-core-metadata="sha256="', False, id="no-digest"),
        pytest.param('data-core-metadata="bogus=1"', False, id="unknown-algorithm"),
        pytest.param('data-core-metadata="garbage"', False, id="garbage"),
        pytest.param(f'data-core-metadata=" sha256={SHA_META} "', {"sha256": SHA_META}, id="ws"),
    ],
)
def test_html_core_metadata(attrs: str, expected: object) -> None:
    body = html_page(f'<a href="x-1.0.tar.gz" {attrs}>x</a>')
    assert one_file(parse(body, "text/html")).core_metadata == expected


@pytest.mark.parametrize(
    ("keys", "expected"),
    [
        pytest.param({}, False, id="absent"),
        pytest.param({"core-metadata": {"sha256": SHA_META}}, {"sha256": SHA_META}, id="new"),
        pytest.param({"data-dist-info-metadata": {"sha256": SHA_META}}, {"sha256": SHA_META}),
        pytest.param({"dist-info-metadata": True}, True, id="pep-658-draft-spelling"),
        pytest.param(
            {"data-dist-info-metadata": {"sha256": SHA_WHL}, "core-metadata": {"sha256": SHA_META}},
            {"sha256": SHA_META},
            id="core-wins",
        ),
        pytest.param({"core-metadata": False, "data-dist-info-metadata": True}, False),
        pytest.param({"core-metadata": {"sha256": 1}}, False, id="non-string-digest"),
        pytest.param({"core-metadata": "sha256=abc"}, False, id="html-form-in-json"),
    ],
)
def test_json_core_metadata(keys: dict[str, object], expected: object) -> None:
    entry = {"filename": "x", "url": "x", "hashes": {}, **keys}
    assert one_file(parse(json_page([entry]), JSON_TYPE)).core_metadata == expected


def test_html_hash_fragment_and_gpg_sig() -> None:
    body = html_page(
        f'<a href="a-1.0.tar.gz#sha256={SHA_SDIST}" data-gpg-sig="true">a</a>',
        '<a href="b-1.0.tar.gz#md5=0f0f" data-gpg-sig="FALSE">b</a>',
        '<a href="c-1.0.tar.gz#egg=c" data-gpg-sig="maybe">c</a>',
        '<a href="d-1.0.tar.gz#sha256=">d</a>',
    )
    assert [(f.hashes, f.gpg_sig) for f in parse(body, "text/html").files] == [
        ({"sha256": SHA_SDIST}, True),
        ({"md5": "0f0f"}, False),
        ({}, None),
        ({}, None),
    ]


def test_html_anchors_without_href_are_skipped() -> None:
    body = html_page(
        '<a name="top">top</a>', '<a href="">empty</a>', '<a href="x-1.0.tar.gz">x</a>'
    )
    assert [f.filename for f in parse(body, "text/html").files] == ["x-1.0.tar.gz"]


def test_provenance_is_kept_as_an_absolute_url() -> None:
    # PEP 740: the proxy rewrites it to itself, like the file URL (see test_gate.py).
    body = html_page('<a href="x-1.0.tar.gz" data-provenance="x-1.0.tar.gz.prov">x</a>')
    assert one_file(parse(body, "text/html")) == DistFile(
        filename="x-1.0.tar.gz",
        url=str(PAGE_URL) + "x-1.0.tar.gz",
        provenance=str(PAGE_URL) + "x-1.0.tar.gz.prov",
    )
    entry: dict[str, Any] = {"filename": "x-1.0.tar.gz", "url": "x-1.0.tar.gz", "provenance": None}
    assert one_file(parse(json_page([entry]), JSON_TYPE)).provenance is None


def test_json_unknown_keys_are_preserved() -> None:
    entry = {
        "filename": "x-1.0.tar.gz",
        "url": "x-1.0.tar.gz",
        "hashes": {},
        "provenance": "https://p.example/prov",
        "_private": 1,
        "x-new": [True, {"a": None}],
    }
    page = parse(
        json_page([entry], **{"x-page": {"k": "v"}, "tracks": ["https://t.example/"]}), JSON_TYPE
    )
    assert one_file(page).extra == {"_private": 1, "x-new": [True, {"a": None}]}
    assert page.extra == {"x-page": {"k": "v"}, "tracks": ["https://t.example/"]}


def test_json_file_fields_are_validated_not_guessed() -> None:
    entries: list[Any] = [
        "not an object",
        {"url": "no-filename"},
        {"filename": "no-url"},
        {"filename": "", "url": "empty-filename"},
        {"filename": 1, "url": "x"},
        {
            "filename": "x-1.0.tar.gz",
            "url": "x-1.0.tar.gz",
            "hashes": {"sha256": SHA_SDIST, "sha512": 5, "md5": None},
            "requires-python": 3.8,
            "size": True,
            "upload-time": 1716220000,
            "gpg-sig": "true",
        },
        {"filename": "y-1.0.tar.gz", "url": "y-1.0.tar.gz", "hashes": "sha256=00", "size": -1},
        {"filename": "z-1.0.tar.gz", "url": "z-1.0.tar.gz", "size": 1.5},
    ]
    assert parse(json_page(entries), JSON_TYPE).files == (
        DistFile(
            filename="x-1.0.tar.gz",
            url=str(PAGE_URL) + "x-1.0.tar.gz",
            hashes={"sha256": SHA_SDIST},
        ),
        DistFile(filename="y-1.0.tar.gz", url=str(PAGE_URL) + "y-1.0.tar.gz"),
        DistFile(filename="z-1.0.tar.gz", url=str(PAGE_URL) + "z-1.0.tar.gz"),
    )


# ---- versions ---------------------------------------------------------------------------


@pytest.mark.parametrize("version", ["2.0", "2", "0.9", "10.0", "", "one"])
def test_unsupported_api_version_is_a_parse_error(version: str) -> None:
    with pytest.raises(IndexParseError, match="unsupported simple API version"):
        parse(json.dumps({"meta": {"api-version": version}, "files": []}), JSON_TYPE)
    head = f'<meta name="pypi:repository-version" content="{version}">'
    with pytest.raises(IndexParseError, match="unsupported simple API version"):
        parse(f"<html><head>{head}</head><body></body></html>", "text/html")


@pytest.mark.parametrize(
    ("meta", "expected"),
    [
        pytest.param({"api-version": "1.0"}, "1.0"),
        pytest.param({"api-version": "1.99"}, "1.99", id="future-minor"),
        pytest.param({}, "1.0", id="missing-version"),
        pytest.param(None, "1.0", id="missing-meta"),
        pytest.param("nonsense", "1.0", id="meta-not-object"),
    ],
)
def test_json_api_version(meta: object, expected: str) -> None:
    data: dict[str, Any] = {"files": []}
    if meta is not None:
        data["meta"] = meta
    assert parse(json.dumps(data), JSON_TYPE).api_version == expected


def test_html_without_repository_version_is_1_0() -> None:
    page = parse('<html><body><a href="x-1.0.tar.gz">x</a></body></html>', "text/html")
    assert page.api_version == "1.0"
    assert page.extra == {}


def test_json_versions() -> None:
    page = parse(json_page([], versions=["1.0", 2]), JSON_TYPE)
    assert page.versions == ("1.0", "2")
    assert parse(json_page([], versions="1.0"), JSON_TYPE).versions is None
    assert parse(json_page([]), JSON_TYPE).versions is None


# ---- garbage ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "content_type"),
    [
        pytest.param(b"{", JSON_TYPE, id="truncated-json"),
        pytest.param(b"[]", JSON_TYPE, id="json-array"),
        pytest.param(b'"files"', JSON_TYPE, id="json-string"),
        pytest.param(b"{}", JSON_TYPE, id="no-files"),
        pytest.param(b'{"files": {}}', JSON_TYPE, id="files-not-list"),
        pytest.param(b"\xff\xfe{}", JSON_TYPE, id="not-utf8"),
        pytest.param(b"<html>", JSON_TYPE, id="html-labelled-json"),
        pytest.param(b"[" * 100_000, JSON_TYPE, id="deeply-nested-json"),
        pytest.param(b'{"files": ' + b"[" * 100_000, None, id="deeply-nested-sniffed"),
    ],
)
def test_garbage_json_is_a_parse_error(body: bytes, content_type: str | None) -> None:
    with pytest.raises(IndexParseError):
        parse(body, content_type)


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(b"", id="empty"),
        pytest.param(b"\x00\xff\xfe garbage \x80", id="binary"),
        pytest.param(b"<a href=", id="truncated-tag"),
        pytest.param(b"<<<>>>&&&;;;", id="symbols"),
        pytest.param(b"<!-- unterminated comment", id="comment"),
        pytest.param(b"<![CDATA[x", id="cdata"),
        pytest.param(b"<a>no href</a><a href>empty</a>", id="no-href"),
    ],
)
def test_garbage_html_has_no_files(body: bytes) -> None:
    # Garbage is either refused (no links, no PEP 629 tag: not an index page at all) or
    # parsed to a page without files; never a crash, never an invented file.
    try:
        page = parse(body, "text/html")
    except IndexParseError:
        return
    assert page.files == ()


def test_page_without_links_needs_the_version_tag() -> None:
    with pytest.raises(IndexParseError, match="not an index page"):
        parse(b"<html><body><h1>Service unavailable</h1></body></html>", "text/html")
    empty = parse(
        b'<html><head><meta name="pypi:repository-version" content="1.0"></head></html>',
        "text/html",
    )
    assert empty.files == ()


# ---- project list -----------------------------------------------------------------------


def test_project_list_json() -> None:
    body = json.dumps(
        {
            "meta": {"api-version": "1.1", "_last-serial": 5},
            "projects": [
                {"name": "Django"},
                {"name": "zope.interface"},
                {"nom": "x"},
                "six",
                {"name": 1},
            ],
        }
    ).encode()
    assert parse_project_list(body, JSON_TYPE) == ProjectList(
        names=("Django", "zope.interface"), api_version="1.1"
    )


def test_project_list_html() -> None:
    body = (
        b'<!DOCTYPE html><html><head><meta name="pypi:repository-version" content="1.0">'
        b'</head><body><a href="/simple/django/">Django</a><a href="/simple/zope-interface/">'
        b' zope.interface </a><a href="/simple/empty/"></a></body></html>'
    )
    assert parse_project_list(body, "text/html") == ProjectList(names=("Django", "zope.interface"))


@pytest.mark.parametrize(
    ("body", "content_type"),
    [
        pytest.param(b"{}", JSON_TYPE, id="no-projects"),
        pytest.param(b'{"meta": {"api-version": "2.0"}, "projects": []}', JSON_TYPE, id="v2"),
        pytest.param(b"nope", JSON_TYPE, id="not-json"),
        pytest.param(b'<meta name="pypi:repository-version" content="3.0">', "text/html"),
    ],
)
def test_project_list_errors(body: bytes, content_type: str) -> None:
    with pytest.raises(IndexParseError):
        parse_project_list(body, content_type)


# ---- properties -------------------------------------------------------------------------

_content_types = st.sampled_from(
    [None, JSON_TYPE, "application/json", "text/html", "application/vnd.pypi.simple.v1+html"]
)
_json_scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20)
)
_json = st.recursive(
    _json_scalars,
    lambda children: (
        st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=10), children, max_size=5)
    ),
    max_leaves=25,
)
_file_keys = st.sampled_from([*PEP691_FILE_KEYS, "x-other"])
_urlish = st.text(max_size=30) | st.sampled_from(
    [
        "x.whl",
        "http://[::1",
        "http://h:99999/x",
        "//",
        "#",
        "?#",
        "http://xn--/x",
        "\\\\x",
        "a\x00b",
    ]
)
_file_entries = st.dictionaries(_file_keys, _json | _urlish, max_size=12)
_page_like = st.fixed_dictionaries(
    {
        "meta": st.dictionaries(
            st.sampled_from(["api-version", "_last-serial"]),
            st.sampled_from(["1.0", "1.1", "2.0", "1"]) | _json,
        ),
        "files": st.lists(_file_entries, max_size=4) | _json,
    },
    optional={"versions": _json, "name": _json, "tracks": _json},
)


def _parses_or_rejects(body: bytes, content_type: str | None) -> None:
    try:
        page = parse_project_page(body, content_type, PAGE_URL, NAME)
    except IndexParseError:
        return
    assert page.name == NAME
    assert all(f.filename and f.url for f in page.files)


@given(body=st.binary(), content_type=_content_types)
def test_arbitrary_bytes_never_raise_anything_else(body: bytes, content_type: str | None) -> None:
    _parses_or_rejects(body, content_type)


@given(body=st.text(), content_type=_content_types)
def test_arbitrary_text_never_raises_anything_else(body: str, content_type: str | None) -> None:
    _parses_or_rejects(body.encode("utf-8", "surrogatepass"), content_type)


@given(data=_json | _page_like, content_type=_content_types)
def test_arbitrary_json_never_raises_anything_else(data: object, content_type: str | None) -> None:
    _parses_or_rejects(json.dumps(data).encode(), content_type)


_attr_names = st.sampled_from(
    [
        "href",
        "data-requires-python",
        "data-yanked",
        "data-core-metadata",
        "data-dist-info-metadata",
        "data-gpg-sig",
        "data-provenance",
    ]
)
_anchor = st.builds(
    lambda attrs: (
        "<a"
        + "".join(f' {k}="{v}"' if v is not None else f" {k}" for k, v in attrs.items())
        + ">x</a>"
    ),
    st.dictionaries(_attr_names, st.none() | _urlish.map(lambda s: s.replace('"', "&quot;"))),
)
_html_doc = st.builds(
    lambda base, meta, anchors: (
        (f'<base href="{base}">' if base is not None else "")
        + "".join(f'<meta name="{n}" content="{c}">' for n, c in meta)
        + "".join(anchors)
    ),
    st.none() | _urlish.map(lambda s: s.replace('"', "")),
    st.lists(
        st.tuples(
            st.sampled_from(
                ["pypi:repository-version", "pypi:tracks", "pypi:project-status", "other"]
            ),
            st.sampled_from(["1.0", "1.1", "2.0"])
            | st.text(max_size=5).map(lambda s: s.replace('"', "")),
        ),
        max_size=3,
    ),
    st.lists(_anchor, max_size=5),
)


@given(body=_html_doc)
def test_arbitrary_html_never_raises_anything_else(body: str) -> None:
    _parses_or_rejects(body.encode("utf-8", "surrogatepass"), "text/html")
