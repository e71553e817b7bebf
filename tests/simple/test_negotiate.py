"""PEP 691 content negotiation (with its ?format= parameter) and Accept-Encoding."""

import pytest

from cacheproxy.simple.negotiate import MediaType, accepts_gzip, choose_media_type

HTML = MediaType.HTML
HTML_V1 = MediaType.HTML_V1
JSON_V1 = MediaType.JSON_V1

# The exact Accept headers pip, uv, poetry and pdm send (from their sources).
PIP = (
    "application/vnd.pypi.simple.v1+json, application/vnd.pypi.simple.v1+html; q=0.1, "
    "text/html; q=0.01"
)
UV = (
    "application/vnd.pypi.simple.v1+json, application/vnd.pypi.simple.v1+html;q=0.2, "
    "text/html;q=0.01"
)
POETRY = "application/vnd.pypi.simple.v1+json, */*;q=0.1"
PDM = (
    "application/vnd.pypi.simple.v1+json, application/vnd.pypi.simple.v1+html; q=0.1, "
    "text/html; q=0.01"
)


@pytest.mark.parametrize(
    ("accept", "expected"),
    [
        pytest.param(None, HTML, id="missing"),
        pytest.param("", HTML, id="empty"),
        pytest.param("   ", HTML, id="blank"),
        pytest.param(PIP, JSON_V1, id="pip"),
        pytest.param(UV, JSON_V1, id="uv"),
        pytest.param(POETRY, JSON_V1, id="poetry"),
        pytest.param(PDM, JSON_V1, id="pdm"),
        pytest.param("application/vnd.pypi.simple.v1+json;q=0.1, text/html", HTML, id="q-order"),
        pytest.param("text/html", HTML, id="text-html"),
        pytest.param("*/*", HTML, id="star-star"),
        pytest.param("application/vnd.pypi.simple.v1+html", HTML_V1, id="v1-html"),
        pytest.param("application/vnd.pypi.simple.v1+json", JSON_V1, id="v1-json"),
        pytest.param("APPLICATION/VND.PYPI.SIMPLE.V1+JSON", JSON_V1, id="case-insensitive"),
        pytest.param("application/json", None, id="plain-json-406"),
        pytest.param("image/png, application/json", None, id="nothing-offered-406"),
        pytest.param("application/vnd.pypi.simple.latest+json", JSON_V1, id="latest-json"),
        pytest.param("application/vnd.pypi.simple.latest+html", HTML_V1, id="latest-html"),
        # q=0 means "not acceptable" (RFC 9110 §12.4.2).
        pytest.param("application/vnd.pypi.simple.v1+json;q=0", None, id="q0-only"),
        pytest.param("application/vnd.pypi.simple.v1+json;q=0, text/html", HTML, id="q0-json"),
        pytest.param("text/html;q=0, */*", HTML_V1, id="q0-html-star"),
        pytest.param("*/*;q=0", None, id="q0-star"),
        # A malformed or out-of-range q makes that range unacceptable, not preferred.
        pytest.param(
            "application/vnd.pypi.simple.v1+json;q=abc, text/html;q=0.5", HTML, id="q-abc"
        ),
        pytest.param("application/vnd.pypi.simple.v1+json;q=2, text/html;q=0.5", HTML, id="q-2"),
        pytest.param("application/vnd.pypi.simple.v1+json;q=-1, text/html;q=0.5", HTML, id="q-neg"),
        pytest.param(
            "application/vnd.pypi.simple.v1+json;q=nan, text/html;q=0.5", HTML, id="q-nan"
        ),
        pytest.param("application/vnd.pypi.simple.v1+json;q=, text/html;q=0.5", HTML, id="q-empty"),
        # The most specific range decides (RFC 9110 §12.5.1), not the first or the largest q.
        pytest.param("*/*;q=0.1, application/vnd.pypi.simple.v1+json", JSON_V1, id="specific"),
        pytest.param("application/*;q=0.5, text/html;q=0.4", HTML_V1, id="subtype-star"),
        pytest.param(
            "text/*;q=0.9, application/vnd.pypi.simple.v1+json;q=0.8", HTML, id="text-star"
        ),
        # Equal q: earlier offer wins, i.e. HTML, as PyPI does.
        pytest.param(
            "application/vnd.pypi.simple.v1+json;q=0.5, text/html;q=0.5", HTML, id="tie-html"
        ),
        pytest.param(
            "application/vnd.pypi.simple.v1+json;q=0.5, application/vnd.pypi.simple.v1+html;q=0.5",
            HTML_V1,
            id="tie-v1-html",
        ),
        pytest.param(
            " application/vnd.pypi.simple.v1+json ; q=0.9 ,text/html ; q=0.8", JSON_V1, id="spaces"
        ),
        pytest.param(",,", None, id="only-commas"),
        pytest.param(";q=1", None, id="param-without-type"),
    ],
)
def test_choose_media_type(accept: str | None, expected: MediaType | None) -> None:
    assert choose_media_type(accept) is expected


@pytest.mark.parametrize(
    ("accept", "format_param", "expected"),
    [
        pytest.param("text/html", "application/vnd.pypi.simple.v1+json", JSON_V1, id="to-json"),
        pytest.param(PIP, "text/html", HTML, id="to-html"),
        pytest.param(PIP, "application/vnd.pypi.simple.latest+json", JSON_V1, id="latest"),
        pytest.param(PIP, "application/json", None, id="unknown-406"),
        pytest.param(None, "application/vnd.pypi.simple.v1+html", HTML_V1, id="no-accept"),
        pytest.param(PIP, "", JSON_V1, id="empty-format-ignored"),
        pytest.param(PIP, None, JSON_V1, id="no-format"),
    ],
)
def test_format_param_overrides_accept(
    accept: str | None, format_param: str | None, expected: MediaType | None
) -> None:
    assert choose_media_type(accept, format_param) is expected


def test_media_type_content_types_and_kinds() -> None:
    assert [(m.content_type, m.kind) for m in MediaType] == [
        ("text/html", "html"),
        ("application/vnd.pypi.simple.v1+html", "html"),
        ("application/vnd.pypi.simple.v1+json", "json"),
    ]


@pytest.mark.parametrize(
    ("accept_encoding", "expected"),
    [
        pytest.param("gzip, deflate", True, id="pip"),
        pytest.param("gzip, deflate, zstd", True, id="uv"),
        pytest.param("zstd,gzip,deflate", True, id="uv-metadata"),
        pytest.param("identity", False, id="identity"),
        pytest.param("gzip;q=0", False, id="gzip-q0"),
        pytest.param("gzip;q=0, *", False, id="gzip-q0-beats-star"),
        pytest.param("*", True, id="star"),
        pytest.param("*;q=0", False, id="star-q0"),
        pytest.param("deflate, br", False, id="other-codings"),
        pytest.param("x-gzip", True, id="x-gzip"),
        pytest.param("GZIP", True, id="case-insensitive"),
        pytest.param("gzip;q=0.001", True, id="low-q"),
        pytest.param("", False, id="empty"),
        pytest.param(None, False, id="missing"),
    ],
)
def test_accepts_gzip(accept_encoding: str | None, expected: bool) -> None:
    assert accepts_gzip(accept_encoding) is expected
