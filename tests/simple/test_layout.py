"""The proxy's file URL layout and cache keys: relative links, exact upstream URLs, + ≡ %2B."""

import pytest

from cacheproxy.simple.layout import (
    BadPath,
    file_key,
    metadata_url,
    page_link,
    project_of,
    upstream_rest,
)


def test_plus_and_percent_2b_are_one_key() -> None:
    # pip sends %2B, uv sends a literal + for the same href.
    pip_form = file_key("a/b/x-0.1%2Babc-py3-none-any.whl")
    uv_form = file_key("a/b/x-0.1+abc-py3-none-any.whl")
    assert pip_form == uv_form == "a/b/x-0.1+abc-py3-none-any.whl"
    assert file_key("a/b/x-0.1%2babc-py3-none-any.whl") == pip_form  # lower-case escape


@pytest.mark.parametrize(
    ("rest", "key"),
    [
        pytest.param("ab/cd/x-1.0.tar.gz", "ab/cd/x-1.0.tar.gz", id="plain"),
        pytest.param("x.whl", "x.whl", id="one-segment"),
        pytest.param("a/x%20y.whl", "a/x y.whl", id="space"),  # not form encoding: no + → space
        pytest.param("a/x+y.whl", "a/x+y.whl", id="plus-stays-plus"),
        pytest.param("a/x%252e.whl", "a/x%2e.whl", id="decoded-once"),
        pytest.param("a/caf%C3%A9.whl", "a/café.whl", id="utf-8"),
        pytest.param("a/...whl", "a/...whl", id="dots-inside-a-name"),
        pytest.param("a/x%2", "a/x%2", id="incomplete-escape-kept"),
    ],
)
def test_file_key_decodes_once(rest: str, key: str) -> None:
    assert file_key(rest) == key


@pytest.mark.parametrize(
    "rest",
    [
        pytest.param("", id="empty"),
        pytest.param("..", id="dotdot"),
        pytest.param("a/../b.whl", id="dotdot-segment"),
        pytest.param("../etc/passwd", id="dotdot-first"),
        pytest.param("a/%2e%2e/b.whl", id="encoded-dotdot"),
        pytest.param("%2E%2E/b.whl", id="encoded-dotdot-upper"),
        pytest.param("a/%2e%2E", id="encoded-dotdot-last"),
        pytest.param(".", id="dot"),
        pytest.param("a/./b.whl", id="dot-segment"),
        pytest.param("a/%2e/b.whl", id="encoded-dot"),
        pytest.param("a//b.whl", id="empty-segment"),
        pytest.param("/a/b.whl", id="leading-slash"),
        pytest.param("a/b/", id="trailing-slash"),
        pytest.param("a/%2F/b.whl", id="encoded-slash-empty-segment"),
        pytest.param("a/x%00.whl", id="nul-encoded"),
        pytest.param("a/x\x00.whl", id="nul-literal"),
        pytest.param("a\\b.whl", id="backslash"),
        pytest.param("a%5Cb.whl", id="backslash-encoded"),
        pytest.param("a/%ff.whl", id="invalid-utf8"),
        pytest.param("a/%C3%28.whl", id="invalid-utf8-sequence"),
        pytest.param("a/%C3", id="truncated-utf8"),
    ],
)
def test_file_key_rejects(rest: str) -> None:
    with pytest.raises(BadPath, match=r"^not a file path: "):
        file_key(rest)


def test_bad_path_message_is_bounded() -> None:
    with pytest.raises(BadPath) as info:
        file_key("../" + "a" * 1000)
    assert str(info.value) == f"not a file path: {('../' + 'a' * 197)!r}"


@pytest.mark.parametrize(
    ("url", "rest"),
    [
        pytest.param("https://files.example/packages/ab/cd/x.whl", "ab/cd/x.whl", id="pypi-style"),
        pytest.param("https://h/other/x.whl", "other/x.whl", id="other-index"),
        pytest.param("https://h/x.whl", "x.whl", id="root"),
        # The raw path: still percent-encoded exactly as upstream wrote it (1.7).
        pytest.param(
            "https://h/packages/ab/x-0.1%2Babc-py3-none-any.whl",
            "ab/x-0.1%2Babc-py3-none-any.whl",
            id="raw-percent-2b",
        ),
        pytest.param("https://h/packages/ab/x.whl?token=1#sha256=00", "ab/x.whl", id="no-query"),
        pytest.param("https://h/mirror/packages/ab/x.whl", "mirror/packages/ab/x.whl", id="nested"),
    ],
)
def test_upstream_rest(url: str, rest: str) -> None:
    assert upstream_rest(url) == rest


def test_page_link_is_relative_to_the_project_page() -> None:
    # From /simple/<project>/, ../../packages/… is /packages/… on whatever Host the client used.
    assert page_link("ab/cd/x-0.1%2Babc.whl") == "../../packages/ab/cd/x-0.1%2Babc.whl"


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        pytest.param(
            "https://files.example/packages/ab/cd/x-1.0-py3-none-any.whl",
            "https://files.example/packages/ab/cd/x-1.0-py3-none-any.whl.metadata",
            id="plain",
        ),
        pytest.param(
            "https://h/p/x-0.1%2Babc-py3-none-any.whl",
            "https://h/p/x-0.1%2Babc-py3-none-any.whl.metadata",
            id="keeps-encoding",
        ),
        pytest.param("https://h/p/x.whl#sha256=ab", "https://h/p/x.whl.metadata", id="fragment"),
        pytest.param(
            "http://u:p@h:8080/p/x%20y.whl",
            "http://u:p@h:8080/p/x%20y.whl.metadata",
            id="userinfo-port",
        ),
    ],
)
def test_metadata_url(url: str, expected: str) -> None:
    assert metadata_url(url) == expected


@pytest.mark.parametrize(
    ("filename", "project"),
    [
        pytest.param("Foo_Bar-1.0-py3-none-any.whl", "foo-bar", id="wheel"),
        pytest.param("zope.interface-7.0-cp311-cp311-manylinux_2_17_x86_64.whl", "zope-interface"),
        pytest.param("torch-2.3.0+cpu-cp311-cp311-linux_x86_64.whl", "torch", id="local-version"),
        pytest.param("foo-1.0-1-py3-none-any.whl", "foo", id="build-tag"),
        pytest.param("Foo.Bar-1.0.tar.gz", "foo-bar", id="sdist"),
        pytest.param("foo-1.0.zip", "foo", id="zip-sdist"),
        pytest.param("foo-1.0.tar.bz2", None, id="legacy-sdist"),
        pytest.param("foo-1.0.egg", None, id="egg"),
        pytest.param("x.whl", None, id="bad-wheel"),
        pytest.param("foo-1.0-x-py3-none-any.whl", None, id="bad-build-tag"),
        pytest.param("foo-notaversion.tar.gz", None, id="bad-version"),
        pytest.param("foo-1.0-py3-none-any.whl.metadata", None, id="metadata"),
        pytest.param("", None, id="empty"),
    ],
)
def test_project_of(filename: str, project: str | None) -> None:
    assert project_of(filename) == project
