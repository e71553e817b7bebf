"""Rendering the model as PEP 691 JSON and PEP 503 HTML (PEP 700 fields), and round-trips."""

import json
from collections.abc import Callable
from dataclasses import replace
from html import escape
from typing import Any
from urllib.parse import quote

import pytest
from hypothesis import given
from hypothesis import strategies as st
from packaging.utils import canonicalize_name
from pep691 import PEP691_FILE_KEYS
from yarl import URL

from cacheproxy.simple.models import CoreMetadata, DistFile, ProjectList, ProjectPage
from cacheproxy.simple.parse import JSON_TYPE, parse_project_page
from cacheproxy.simple.render import (
    _html_anchor,
    _html_meta,
    _json_file,
    json_api_version,
    render_html,
    render_json,
    render_list_html,
    render_list_json,
)

NAME = canonicalize_name("demo")
PAGE_URL = URL("https://proxy.example/simple/demo/")
FILES = "https://files.example/packages"
SHA_A = "5a" * 32
SHA_B = "b7" * 32
SHA_META = "c3" * 32
REASON = "Yanked due to conflicts with CVE-2024-35195 mitigation "  # trailing space: 0.8


def upstream_link(f: DistFile) -> str:
    return f.url


def proxy_link(f: DistFile) -> str:
    # What the proxy does: relative to /simple/<project>/, so any Host or path prefix works.
    return "../../packages/ab/cd/" + quote(f.filename, safe="")


def parse(body: bytes, content_type: str) -> ProjectPage:
    return parse_project_page(body, content_type, PAGE_URL, NAME)


WHEEL = DistFile(
    filename="demo-1.0+local-py3-none-any.whl",
    url=f"{FILES}/ab/cd/demo-1.0%2Blocal-py3-none-any.whl",
    hashes={"sha256": SHA_A},
    requires_python="<4,>=3.8",
    yanked=REASON,
    core_metadata={"sha256": SHA_META},
    size=1234,
    upload_time="2024-05-20T15:25:43.123456Z",
    gpg_sig=False,
    extra={"x-future": [1, {"k": None}]},
)
SDIST = DistFile(
    filename="demo-1.0.tar.gz",
    url=f"{FILES}/ef/01/demo-1.0.tar.gz",
    hashes={"md5": "0f" * 16, "sha256": SHA_B},
    yanked=True,
    core_metadata=True,
    size=99,
)
PAGE = ProjectPage(
    name=NAME,
    files=(WHEEL, SDIST),
    api_version="1.1",
    versions=("1.0",),
    meta={"_last-serial": 42},
    extra={"alternate-locations": ["https://alt.example/simple/demo/"]},
)


# ---- JSON -------------------------------------------------------------------------------


def test_render_json_whole_payload() -> None:
    body = render_json(PAGE, proxy_link)
    assert json.loads(body) == {
        "meta": {"api-version": "1.1", "_last-serial": 42},
        "name": "demo",
        "versions": ["1.0"],
        "files": [
            {
                "filename": "demo-1.0+local-py3-none-any.whl",
                "url": "../../packages/ab/cd/demo-1.0%2Blocal-py3-none-any.whl",
                "hashes": {"sha256": SHA_A},
                "requires-python": "<4,>=3.8",
                "yanked": REASON,
                "core-metadata": {"sha256": SHA_META},
                "data-dist-info-metadata": {"sha256": SHA_META},
                "size": 1234,
                "upload-time": "2024-05-20T15:25:43.123456Z",
                "gpg-sig": False,
                "x-future": [1, {"k": None}],
            },
            {
                "filename": "demo-1.0.tar.gz",
                "url": "../../packages/ab/cd/demo-1.0.tar.gz",
                "hashes": {"md5": "0f" * 16, "sha256": SHA_B},
                "requires-python": None,
                "yanked": True,
                "core-metadata": True,
                "data-dist-info-metadata": True,
                "size": 99,
            },
        ],
        "alternate-locations": ["https://alt.example/simple/demo/"],
    }
    # Compact, and UTF-8 rather than \u escapes.
    assert b": " not in body
    assert b", " not in body.replace(REASON.encode(), b"")


def test_render_json_yanked_reason_is_byte_exact() -> None:
    reason = 'tab\there, "quotes", \\backslash, é, 🐍 and a trailing space '
    page = ProjectPage(name=NAME, files=(DistFile("x-1.0.tar.gz", f"{FILES}/x", yanked=reason),))
    body = render_json(page, upstream_link)
    assert json.loads(body)["files"][0]["yanked"] == reason
    assert "é, 🐍".encode() in body


@pytest.mark.parametrize(
    ("api_version", "versions", "sizes", "expected"),
    [
        pytest.param("1.1", ("1.0",), (1, 2), "1.1", id="complete"),
        pytest.param("1.4", ("1.0",), (1, 2), "1.4", id="newer-minor-kept"),
        pytest.param("1.1", None, (1, 2), "1.0", id="no-versions"),
        pytest.param("1.1", ("1.0",), (1, None), "1.0", id="a-size-missing"),
        pytest.param("1.1", None, (None, None), "1.0", id="nothing"),
        pytest.param("1.0", ("1.0",), (1, 2), "1.0", id="already-1.0"),
    ],
)
def test_json_api_version_follows_pep_700(
    api_version: str, versions: tuple[str, ...] | None, sizes: tuple[int | None, ...], expected: str
) -> None:
    files = tuple(DistFile(f"x-{i}.tar.gz", f"{FILES}/x-{i}", size=s) for i, s in enumerate(sizes))
    page = ProjectPage(name=NAME, files=files, api_version=api_version, versions=versions)
    assert json_api_version(page) == expected
    data = json.loads(render_json(page, upstream_link))
    assert data["meta"] == {"api-version": expected}
    if expected == "1.0":
        assert "versions" not in data
    else:
        assert data["versions"] == list(versions or ())


def test_render_json_without_files() -> None:
    page = ProjectPage(name=NAME, files=(), api_version="1.1", versions=())
    assert json.loads(render_json(page, upstream_link)) == {
        "meta": {"api-version": "1.1"},
        "name": "demo",
        "versions": [],
        "files": [],
    }


def test_lone_surrogate_from_json_survives_render() -> None:
    # json.loads turns the escape "\ud800" into a lone surrogate, which UTF-8 cannot encode.
    upstream = b'{"meta":{"api-version":"1.0"},"files":[{"filename":"x-1.0.tar.gz",'
    upstream += b'"url":"x-1.0.tar.gz","hashes":{},"yanked":"bad \\ud800 reason"}]}'
    page = parse(upstream, JSON_TYPE)
    assert page.files[0].yanked == "bad \ud800 reason"
    again = parse(render_json(page, upstream_link), JSON_TYPE)
    assert again.files == page.files
    html = parse(render_html(page, upstream_link), "text/html")
    assert html.files[0].yanked == "bad \ufffd reason"  # HTML cannot carry it: U+FFFD


# ---- HTML -------------------------------------------------------------------------------


def test_render_html_whole_payload() -> None:
    page = ProjectPage(
        name=NAME,
        files=(WHEEL, SDIST),
        api_version="1.1",
        extra={
            "tracks": ["https://t.example/simple/demo/"],
            "alternate-locations": ["https://a.example/?x=1&y=2"],
            "project-status": {"status": "archived", "reason": 'see "notes" & <docs>'},
        },
    )
    assert render_html(page, proxy_link).decode() == (
        "<!DOCTYPE html>\n<html>\n  <head>\n"
        '    <meta name="pypi:repository-version" content="1.1">\n'
        '    <meta name="pypi:tracks" content="https://t.example/simple/demo/">\n'
        '    <meta name="pypi:alternate-locations" content="https://a.example/?x=1&amp;y=2">\n'
        '    <meta name="pypi:project-status" content="archived">\n'
        '    <meta name="pypi:project-status-reason" '
        'content="see &quot;notes&quot; &amp; &lt;docs&gt;">\n'
        "    <title>Links for demo</title>\n  </head>\n  <body>\n"
        "    <h1>Links for demo</h1>\n"
        f'    <a href="../../packages/ab/cd/demo-1.0%2Blocal-py3-none-any.whl#sha256={SHA_A}"'
        ' data-requires-python="&lt;4,&gt;=3.8"'
        ' data-yanked="Yanked due to conflicts with CVE-2024-35195 mitigation "'
        f' data-dist-info-metadata="sha256={SHA_META}" data-core-metadata="sha256={SHA_META}"'
        ' data-gpg-sig="false">demo-1.0+local-py3-none-any.whl</a><br />\n'
        # sha256 is preferred over md5 for the one fragment a link can carry.
        f'    <a href="../../packages/ab/cd/demo-1.0.tar.gz#sha256={SHA_B}" data-yanked=""'
        ' data-dist-info-metadata="true" data-core-metadata="true">demo-1.0.tar.gz</a><br />\n'
        "  </body>\n</html>\n"
    )


def test_render_html_escapes_attributes_and_text() -> None:
    f = DistFile(
        filename="a&b<c>-1.0.tar.gz",
        url=f"{FILES}/x",
        hashes={"sha256": SHA_A},
        requires_python='>=3.8,<"4"&',
        yanked='<script>"x" & y</script>',
    )
    page = ProjectPage(name=NAME, files=(f,))
    html = render_html(page, lambda _f: 'https://cdn.example/x?a=1&b="2"').decode()
    assert (
        '<a href="https://cdn.example/x?a=1&amp;b=&quot;2&quot;#sha256=' + SHA_A + '"'
        ' data-requires-python="&gt;=3.8,&lt;&quot;4&quot;&amp;"'
        ' data-yanked="&lt;script&gt;&quot;x&quot; &amp; y&lt;/script&gt;">'
        "a&amp;b&lt;c&gt;-1.0.tar.gz</a>"
    ) in html
    assert "<script>" not in html
    parsed = parse(html.encode(), "text/html").files[0]
    assert (parsed.requires_python, parsed.yanked) == (f.requires_python, f.yanked)


@pytest.mark.parametrize(
    ("metadata", "attrs"),
    [
        pytest.param(False, "", id="not-advertised"),
        pytest.param(True, ' data-dist-info-metadata="true" data-core-metadata="true"', id="true"),
        pytest.param(
            {"sha256": SHA_META},
            f' data-dist-info-metadata="sha256={SHA_META}" data-core-metadata="sha256={SHA_META}"',
            id="hash",
        ),
        pytest.param({}, "", id="empty-mapping"),
    ],
)
def test_render_html_emits_both_metadata_spellings(metadata: CoreMetadata, attrs: str) -> None:
    page = ProjectPage(name=NAME, files=(DistFile("x-1.0.tar.gz", "x", core_metadata=metadata),))
    assert f'<a href="x"{attrs}>x-1.0.tar.gz</a>' in render_html(page, upstream_link).decode()


def test_render_html_without_a_hash_has_no_fragment() -> None:
    page = ProjectPage(name=NAME, files=(DistFile("x-1.0.tar.gz", "x", hashes={"blake2b": "00"}),))
    assert '<a href="x">x-1.0.tar.gz</a>' in render_html(page, upstream_link).decode()


# ---- project list -----------------------------------------------------------------------


def test_render_list_json() -> None:
    names = ProjectList(names=("Django", "zope.interface"))
    assert json.loads(render_list_json(names, lambda n: f"/simple/{n}/")) == {
        "meta": {"api-version": "1.0"},
        "projects": [{"name": "Django"}, {"name": "zope.interface"}],
    }


def test_render_list_html() -> None:
    names = ProjectList(names=("Django", "a&b"))
    assert render_list_html(names, lambda n: f'{canonicalize_name(n)}/?x="{n}"').decode() == (
        "<!DOCTYPE html>\n<html>\n  <head>\n"
        '    <meta name="pypi:repository-version" content="1.0">\n'
        "    <title>Simple index</title>\n  </head>\n  <body>\n"
        '    <a href="django/?x=&quot;Django&quot;">Django</a><br />\n'
        '    <a href="a&amp;b/?x=&quot;a&amp;b&quot;">a&amp;b</a><br />\n'
        "  </body>\n</html>\n"
    )


# ---- round-trips ------------------------------------------------------------------------

UPSTREAM_JSON = json.dumps(
    {
        "meta": {"api-version": "1.1", "_last-serial": 7},
        "name": "demo",
        "versions": ["1.0"],
        "files": [
            {
                "filename": "demo-1.0+local-py3-none-any.whl",
                "url": f"{FILES}/ab/cd/demo-1.0%2Blocal-py3-none-any.whl",
                "hashes": {"sha256": SHA_A},
                "requires-python": ">=3.8",
                "size": 1234,
                "upload-time": "2024-05-20T15:25:43.123456Z",
                "yanked": REASON,
                "core-metadata": {"sha256": SHA_META},
                "data-dist-info-metadata": {"sha256": SHA_META},
            },
            {
                "filename": "demo-1.0.tar.gz",
                "url": f"{FILES}/ef/01/demo-1.0.tar.gz",
                "hashes": {"sha256": SHA_B},
                "requires-python": None,
                "size": 99,
                "yanked": True,
                "core-metadata": True,
            },
            {
                "filename": "demo-0.9.tar.gz",
                "url": f"{FILES}/ef/02/demo-0.9.tar.gz",
                "hashes": {"sha256": SHA_A},
                "requires-python": "<3",
                "size": 98,
                "yanked": False,
                "core-metadata": False,
            },
        ],
    }
).encode()


def _html_view(f: DistFile) -> tuple[str, str | None, str | None, bool | str, CoreMetadata]:
    return (f.filename, f.sha256, f.requires_python, f.yanked, f.core_metadata)


def test_json_to_html_to_model_round_trip() -> None:
    page = parse(UPSTREAM_JSON, JSON_TYPE)
    again = parse(render_html(page, proxy_link), "text/html")
    assert [_html_view(f) for f in again.files] == [
        ("demo-1.0+local-py3-none-any.whl", SHA_A, ">=3.8", REASON, {"sha256": SHA_META}),
        ("demo-1.0.tar.gz", SHA_B, None, True, True),
        ("demo-0.9.tar.gz", SHA_A, "<3", False, False),
    ]
    assert [f.url for f in again.files] == [
        "https://proxy.example/packages/ab/cd/demo-1.0%2Blocal-py3-none-any.whl",
        "https://proxy.example/packages/ab/cd/demo-1.0.tar.gz",
        "https://proxy.example/packages/ab/cd/demo-0.9.tar.gz",
    ]
    assert again.api_version == "1.1"


def test_json_to_json_round_trip() -> None:
    page = parse(UPSTREAM_JSON, JSON_TYPE)
    assert parse(render_json(page, upstream_link), JSON_TYPE) == page


def test_html_to_html_round_trip() -> None:
    page = parse(UPSTREAM_JSON, JSON_TYPE)
    html_once = parse(render_html(page, upstream_link), "text/html")
    html_twice = parse(render_html(html_once, upstream_link), "text/html")
    assert html_twice == html_once


# ---- properties -------------------------------------------------------------------------

_hex64 = st.text(alphabet="0123456789abcdef", min_size=64, max_size=64)
_filenames = st.from_regex(
    r"[A-Za-z0-9][A-Za-z0-9_.]{0,8}-[0-9]{1,3}(\.[0-9]{1,3}){0,2}(\+[a-z0-9.]{1,6})?"
    r"(-py3-none-any\.whl|\.tar\.gz|\.zip)",
    fullmatch=True,
)
_texts = st.text(min_size=1, max_size=40)
_core_metadata: st.SearchStrategy[CoreMetadata] = st.one_of(
    st.booleans(), st.builds(lambda h: {"sha256": h}, _hex64)
)
_json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=10),
    lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=5), c, max_size=3),
    max_leaves=10,
)
_MODELLED = set(PEP691_FILE_KEYS)
_extra = st.dictionaries(
    st.text(min_size=1, max_size=10).filter(lambda k: k not in _MODELLED), _json_values, max_size=3
)


@st.composite
def _dist_files(draw: st.DrawFn) -> DistFile:
    filename = draw(_filenames)
    hashes: dict[str, str] = {"sha256": draw(_hex64)} if draw(st.booleans()) else {}
    if draw(st.booleans()):
        hashes["md5"] = draw(_hex64)[:32]
    return DistFile(
        filename=filename,
        url=f"{FILES}/{draw(_hex64)[:2]}/{quote(filename, safe='')}",
        hashes=hashes,
        requires_python=draw(st.none() | _texts),
        yanked=draw(st.booleans() | _texts),
        core_metadata=draw(_core_metadata),
        size=draw(st.none() | st.integers(min_value=0, max_value=2**53)),
        upload_time=draw(st.none() | _texts),
        gpg_sig=draw(st.none() | st.booleans()),
        extra=draw(_extra),
    )


_file_lists = st.lists(_dist_files(), max_size=6).map(tuple)


@given(files=_file_lists, versions=st.none() | st.lists(_texts, max_size=3).map(tuple))
def test_render_json_then_parse_is_identity(
    files: tuple[DistFile, ...], versions: tuple[str, ...] | None
) -> None:
    page = ProjectPage(name=NAME, files=files, api_version="1.1", versions=versions)
    again = parse(render_json(page, upstream_link), JSON_TYPE)
    assert again.files == files
    complete = versions is not None and all(f.size is not None for f in files)
    assert again.api_version == ("1.1" if complete else "1.0")
    assert again.versions == (versions if complete else None)


@given(files=_file_lists)
def test_render_html_then_parse_keeps_every_html_attribute(files: tuple[DistFile, ...]) -> None:
    page = ProjectPage(name=NAME, files=files)
    again = parse(render_html(page, proxy_link), "text/html")
    assert [_html_view(f) for f in again.files] == [_html_view(f) for f in files]
    # HTML carries one hash (sha256 preferred) and no size/upload-time/extra: nothing invented.
    for before, after in zip(files, again.files, strict=True):
        sha = before.hashes.get("sha256") or before.hashes.get("md5")
        algo = "sha256" if "sha256" in before.hashes else "md5"
        assert after.hashes == ({algo: sha} if sha else {})
        assert (after.size, after.upload_time, after.extra) == (None, None, {})
        assert after.gpg_sig == before.gpg_sig


@given(files=_file_lists)
def test_json_and_html_agree(files: tuple[DistFile, ...]) -> None:
    page = ProjectPage(name=NAME, files=files, api_version="1.1")
    from_json = parse(render_json(page, proxy_link), JSON_TYPE)
    from_html = parse(render_html(page, proxy_link), "text/html")
    assert [(f.url, *_html_view(f)) for f in from_json.files] == [
        (f.url, *_html_view(f)) for f in from_html.files
    ]


def _json_file_of(body: bytes, index: int) -> dict[str, Any]:
    files = json.loads(body)["files"]
    assert isinstance(files, list)
    entry = files[index]
    assert isinstance(entry, dict)
    return entry


@given(f=_dist_files())
def test_render_json_keeps_both_metadata_keys_equal(f: DistFile) -> None:
    entry = _json_file_of(render_json(ProjectPage(name=NAME, files=(f,)), upstream_link), 0)
    assert entry["core-metadata"] == entry["data-dist-info-metadata"]
    assert entry["core-metadata"] == (
        f.core_metadata if isinstance(f.core_metadata, bool) else dict(f.core_metadata)
    )
    assert "provenance" not in entry


def test_provenance_is_served_beside_the_file_in_both_formats() -> None:
    f = DistFile(filename="x-1.0.tar.gz", url=f"{FILES}/x-1.0.tar.gz", provenance="https://p/x")
    page = ProjectPage(name=NAME, files=(f,))
    entry = _json_file_of(render_json(page, lambda _f: "../../packages/x-1.0.tar.gz"), 0)
    assert entry["provenance"] == "../../packages/x-1.0.tar.gz.provenance"
    html = render_html(page, lambda _f: "../../packages/x-1.0.tar.gz").decode()
    assert 'data-provenance="../../packages/x-1.0.tar.gz.provenance"' in html


def test_empty_metadata_mapping_is_advertised_in_both_formats() -> None:
    body = json.dumps(
        {
            "meta": {"api-version": "1.0"},
            "name": "p",
            "files": [{"filename": "p-1.whl", "url": "p-1.whl", "hashes": {}, "core-metadata": {}}],
        }
    ).encode()
    page = parse_project_page(body, JSON_TYPE, URL("https://h/simple/p/"), canonicalize_name("p"))
    assert page.files[0].core_metadata is True
    html = render_html(page, lambda f: f.filename).decode()
    assert 'data-core-metadata="true"' in html
    assert json.loads(render_json(page, lambda f: f.filename))["files"][0]["core-metadata"] is True


def test_html_metadata_attribute_prefers_sha256() -> None:
    f = DistFile(
        filename="p-1.whl", url="https://h/p-1.whl", core_metadata={"md5": "aa", "sha256": "bb"}
    )
    page = ProjectPage(name=canonicalize_name("p"), files=(f,))
    html = render_html(page, lambda _f: "x").decode()
    assert 'data-core-metadata="sha256=bb"' in html
    assert 'data-dist-info-metadata="sha256=bb"' in html


# ---- rendered piece by piece, the same bytes as the whole document ----------------------
# render_json and render_html encode one file entry at a time, so a page of thousands of
# files never exists as a list of dicts, a str and the bytes at once (bench/memory.py).
# These are the whole-document renderings they replaced: the bytes must not change.


def _whole_json(page: ProjectPage, link_for: Callable[[DistFile], str]) -> bytes:
    version = json_api_version(page)
    data: dict[str, Any] = {"meta": {"api-version": version, **page.meta}, "name": page.name}
    if version != "1.0" and page.versions is not None:
        data["versions"] = list(page.versions)
    data["files"] = [_json_file(f, link_for(f)) for f in page.files]
    data.update(page.extra)
    text = json.dumps(data, ensure_ascii=False, separators=(",", ":"))
    return text.encode("utf-8", "backslashreplace")


def _whole_html(page: ProjectPage, link_for: Callable[[DistFile], str]) -> bytes:
    title = escape(page.name)
    head = "\n    ".join([*_html_meta(page), f"<title>Links for {title}</title>"])
    anchors = "\n    ".join(_html_anchor(f, link_for(f)) for f in page.files)
    return (
        "<!DOCTYPE html>\n<html>\n  <head>\n    "
        f"{head}\n  </head>\n  <body>\n    <h1>Links for {title}</h1>\n    {anchors}\n"
        "  </body>\n</html>\n"
    ).encode("utf-8", "xmlcharrefreplace")


# Any code point, lone surrogates included (json.loads makes them from "\ud800" escapes;
# st.text never draws them).
_any_texts = st.lists(
    st.characters() | st.sampled_from(["\ud800", "\udfff", "\ud83d", "<", "&", '"']),
    max_size=12,
).map("".join)
_page_extras = st.dictionaries(
    st.sampled_from(["tracks", "alternate-locations", "project-status", "x-new"]) | _any_texts,
    _json_values | st.lists(_any_texts, max_size=2),
    max_size=3,
)


@given(
    files=st.lists(_dist_files(), max_size=4).map(tuple),
    versions=st.none() | st.lists(_any_texts, max_size=2).map(tuple),
    version=st.sampled_from(["1.0", "1.1", "1.4"]),
    meta=st.dictionaries(_any_texts, _json_values, max_size=2),
    extra=_page_extras,
    names=st.lists(_any_texts, min_size=4, max_size=4),
)
def test_pieces_render_the_bytes_of_the_whole_document(
    files: tuple[DistFile, ...],
    versions: tuple[str, ...] | None,
    version: str,
    meta: dict[str, Any],
    extra: dict[str, Any],
    names: list[str],
) -> None:
    # Lone surrogates and other odd text in every place a string goes into the page.
    files = tuple(
        replace(f, filename=f.filename + n, requires_python=n or None)
        for f, n in zip(files, names, strict=False)
    )
    page = ProjectPage(NAME, files, version, versions, {**meta, "api-version": "x"}, extra)

    def link_for(f: DistFile) -> str:
        return "../../packages/ab/cd/" + f.filename + names[-1]

    assert render_json(page, link_for) == _whole_json(page, link_for)
    assert render_html(page, link_for) == _whole_html(page, link_for)


@pytest.mark.parametrize("key", ["meta", "name", "versions", "files"])
def test_an_extra_key_that_collides_renders_as_the_whole_document(key: str) -> None:
    page = replace(PAGE, extra={key: ["from extra"], "x-other": 1})
    assert render_json(page, upstream_link) == _whole_json(page, upstream_link)
    empty = replace(PAGE, files=(), extra={})
    assert render_json(empty, upstream_link) == _whole_json(empty, upstream_link)
    assert render_html(empty, upstream_link) == _whole_html(empty, upstream_link)
