"""Range and If-Range for distribution files (RFC 9110 §14 and §13.1.5)."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cacheproxy.web.ranges import ByteRange, RangeNotSatisfiable, if_range_matches, parse_range


@pytest.mark.parametrize(
    ("header", "size", "expected"),
    [
        pytest.param("bytes=10-19", 100, ByteRange(10, 19), id="closed"),
        pytest.param("bytes=-22", 100, ByteRange(78, 99), id="suffix"),
        pytest.param("bytes=100-", 200, ByteRange(100, 199), id="open"),
        pytest.param("bytes=0-", 100, ByteRange(0, 99), id="open-from-zero"),
        pytest.param("bytes=0-0", 100, ByteRange(0, 0), id="first-byte"),
        pytest.param("bytes=99-99", 100, ByteRange(99, 99), id="last-byte"),
        pytest.param("bytes=90-1000", 100, ByteRange(90, 99), id="end-clamped"),
        pytest.param("bytes=0-99999999999999999999", 100, ByteRange(0, 99), id="end-huge"),
        pytest.param("bytes=-500", 100, ByteRange(0, 99), id="suffix-larger-than-file"),
        pytest.param("bytes=-100", 100, ByteRange(0, 99), id="suffix-whole-file"),
        pytest.param("bytes=-1", 1, ByteRange(0, 0), id="suffix-one-byte-file"),
        # uv's zip central-directory read of packaging-24.2 (a suffix range).
        pytest.param("bytes=49067-65450", 65451, ByteRange(49067, 65450), id="uv-trace"),
        pytest.param(" bytes = 10 - 19 ", 100, ByteRange(10, 19), id="whitespace"),
        pytest.param("bytes=\t-22\t", 100, ByteRange(78, 99), id="tabs"),
        pytest.param("BYTES=10-19", 100, ByteRange(10, 19), id="unit-case"),
        pytest.param("bytes=0010-0019", 100, ByteRange(10, 19), id="leading-zeros"),
    ],
)
def test_satisfiable(header: str, size: int, expected: ByteRange) -> None:
    assert parse_range(header, size) == expected


@pytest.mark.parametrize(
    ("header", "size"),
    [
        pytest.param("bytes=999999999-", 100, id="start-beyond"),
        pytest.param("bytes=100-", 100, id="start-at-size"),
        pytest.param("bytes=100-200", 100, id="closed-beyond"),
        pytest.param("bytes=-0", 100, id="empty-suffix"),
        pytest.param("bytes=0-", 0, id="zero-size-open"),
        pytest.param("bytes=0-0", 0, id="zero-size-closed"),
        pytest.param("bytes=-5", 0, id="zero-size-suffix"),
    ],
)
def test_not_satisfiable(header: str, size: int) -> None:
    with pytest.raises(RangeNotSatisfiable):
        parse_range(header, size)


@pytest.mark.parametrize(
    "header",
    [
        pytest.param(None, id="missing"),
        pytest.param("", id="empty"),
        pytest.param("bytes=0-1,5-6", id="multi"),
        pytest.param("bytes=0-1, -5", id="multi-suffix"),
        pytest.param("bytes=5-3", id="end-before-start"),
        pytest.param("bytes", id="no-equals"),
        pytest.param("bytes=", id="no-spec"),
        pytest.param("bytes=-", id="dash-only"),
        pytest.param("bytes=a-b", id="letters"),
        pytest.param("bytes=1-2-3", id="two-dashes"),
        pytest.param("bytes=+1-2", id="plus-sign"),
        pytest.param("bytes=1.5-2", id="decimal"),
        pytest.param("bytes=0x10-", id="hex"),
        pytest.param("bytes=1 0-19", id="inner-space"),
        pytest.param("items=0-1", id="other-unit"),
        pytest.param("=0-1", id="no-unit"),
        pytest.param("garbage", id="garbage"),
        # Only ASCII digits are positions: "²".isdigit() is True but int() rejects it, and
        # int() reads Arabic-Indic digits.
        pytest.param("bytes=²-3", id="superscript"),
        pytest.param("bytes=0-²", id="superscript-end"),
        pytest.param("bytes=١-2", id="arabic-indic"),
        pytest.param("bytes=-١", id="arabic-indic-suffix"),
        # int() refuses more than 4300 digits; such a header is ignored, not a crash.
        pytest.param("bytes=" + "1" * 5000 + "-", id="huge-start"),
        pytest.param("bytes=-" + "9" * 5000, id="huge-suffix"),
    ],
)
def test_ignored(header: str | None) -> None:
    assert parse_range(header, 100) is None


def test_byte_range_length_and_content_range() -> None:
    r = ByteRange(49067, 65450)
    assert r.length == 16384
    assert r.content_range(65451) == "bytes 49067-65450/65451"
    assert ByteRange(0, 0).length == 1


def test_not_satisfiable_is_a_value_error_naming_the_header() -> None:
    with pytest.raises(ValueError, match=r"^bytes=999999999-$"):
        parse_range("bytes=999999999-", 10)


@pytest.mark.parametrize(
    ("if_range", "expected"),
    [
        pytest.param(None, True, id="absent"),
        pytest.param('"abc"', True, id="same"),
        pytest.param(' "abc" ', True, id="same-padded"),
        pytest.param('"abd"', False, id="other"),
        pytest.param('W/"abc"', False, id="weak-never-matches"),  # RFC 9110 §13.1.5: strong
        pytest.param("abc", False, id="unquoted"),
        pytest.param("Wed, 21 Oct 2015 07:28:00 GMT", False, id="date"),
        pytest.param("", False, id="empty"),
    ],
)
def test_if_range_matches(if_range: str | None, expected: bool) -> None:
    assert if_range_matches(if_range, '"abc"') is expected


# ---- properties -------------------------------------------------------------------------

_sizes = st.integers(min_value=0, max_value=2**63)
_position = st.one_of(
    st.integers(min_value=0, max_value=2**64).map(str),
    st.sampled_from(["", " ", "0", "00", "-", "²", "١", "+1", "1e3", "a"]),
)
# Mostly near-valid headers, so the interesting branches are reached, plus arbitrary text.
_headers = st.one_of(
    st.text(),
    st.builds(
        lambda unit, a, sep, b, tail: f"{unit}={a}{sep}{b}{tail}",
        st.sampled_from(["bytes", "BYTES", " bytes ", "byte", ""]),
        _position,
        st.sampled_from(["-", "", "--", " - "]),
        _position,
        st.sampled_from(["", ",0-1", " ", ";", ",", "\x00"]),
    ),
)


@given(size=_sizes, header=_headers)
def test_parse_range_never_raises_anything_else(size: int, header: str) -> None:
    try:
        result = parse_range(header, size)
    except RangeNotSatisfiable:
        return
    if result is not None:
        assert 0 <= result.start <= result.end < size
        assert result.length == result.end - result.start + 1


@given(size=_sizes, start=st.integers(0, 2**64), extra=st.integers(0, 2**64))
def test_closed_range_oracle(size: int, start: int, extra: int) -> None:
    end = start + extra
    if start >= size:
        with pytest.raises(RangeNotSatisfiable):
            parse_range(f"bytes={start}-{end}", size)
    else:
        assert parse_range(f"bytes={start}-{end}", size) == ByteRange(start, min(end, size - 1))
        assert parse_range(f"bytes={start}-", size) == ByteRange(start, size - 1)


@given(size=st.integers(1, 2**63), suffix=st.integers(1, 2**64))
def test_suffix_range_oracle(size: int, suffix: int) -> None:
    assert parse_range(f"bytes=-{suffix}", size) == ByteRange(max(0, size - suffix), size - 1)
