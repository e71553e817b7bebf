"""HTTP Range and If-Range for distribution files (RFC 9110 §14 and §13.1.5).

Only single ranges are served: ``bytes=a-b``, ``a-`` (pip resume) and ``-n`` (poetry's
lazy wheel). A syntactically invalid or multi-range header is ignored and the whole file is
sent with 200, which RFC 9110 §14.2 allows and every client handles.
"""

from dataclasses import dataclass


class RangeNotSatisfiable(ValueError):
    """The range lies outside the file (416, ``Content-Range: bytes */size``)."""


@dataclass(frozen=True, slots=True)
class ByteRange:
    start: int
    end: int  # inclusive

    @property
    def length(self) -> int:
        return self.end - self.start + 1

    def content_range(self, size: int) -> str:
        return f"bytes {self.start}-{self.end}/{size}"


# Longer positions are ignored (RFC 9110 §14.2: a server MAY ignore Range): 100 digits is far
# beyond any file, and below the int() limit on digits (PYTHONINTMAXSTRDIGITS, at least 640).
_MAX_DIGITS = 100


def _digits_or_empty(text: str) -> bool:
    # RFC 9110 §14.1.1: positions are 1*DIGIT, and DIGIT is ASCII (RFC 5234). str.isdigit()
    # alone also accepts "²" (which int() rejects) and Arabic-Indic digits (which int() reads).
    return text == "" or (text.isascii() and text.isdigit() and len(text) <= _MAX_DIGITS)


def parse_range(header: str | None, size: int) -> ByteRange | None:
    """The requested range of a ``size``-byte file, or None to send the whole file.

    Raises:
        RangeNotSatisfiable: a valid single range that no byte of the file satisfies.
    """
    if not header:
        return None
    unit, sep, spec = header.strip().partition("=")
    if not sep or unit.strip().lower() != "bytes" or "," in spec:
        return None
    first, dash, last = spec.strip().partition("-")
    first, last = first.strip(), last.strip()
    if not dash or not _digits_or_empty(first) or not _digits_or_empty(last):
        return None
    if first == "":
        if last == "":
            return None
        suffix = int(last)
        if suffix == 0 or size == 0:
            raise RangeNotSatisfiable(header)
        return ByteRange(max(0, size - suffix), size - 1)
    start = int(first)
    if last and int(last) < start:
        return None  # invalid (RFC 9110 §14.1.1): ignore the header
    if start >= size:
        # Also for "bytes=N-": its end defaults to size - 1, which must not make it look
        # unsatisfiable (RFC 9110 §14.1.2: "bytes=999999999-" is a 416, not a 200).
        raise RangeNotSatisfiable(header)
    end = int(last) if last else size - 1
    return ByteRange(start, min(end, size - 1))


def if_range_matches(if_range: str | None, etag: str) -> bool:
    """True when the Range may be honoured: no If-Range, or it names our (strong) ETag.

    A date in If-Range is treated as a mismatch: our files are identified by content,
    and a mismatch only costs a full 200 (pip then restarts cleanly; RFC 9110 §13.1.5).
    """
    if if_range is None:
        return True
    return if_range.strip() == etag
