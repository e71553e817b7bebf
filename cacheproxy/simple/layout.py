"""The proxy's URL layout for files: ``/packages/<upstream path>``.

For PyPI the path under ``/packages/`` is the path on PyPI's file host, so a URL in a lock
file maps to the proxy by swapping the prefix. Files of other indexes keep their whole
upstream path. Keys are percent-decoded so ``+`` and ``%2B`` name one file (pip sends
``%2B`` for a local version's ``+``, uv a literal ``+``).
"""

from urllib.parse import unquote

from packaging.utils import (
    InvalidSdistFilename,
    InvalidWheelFilename,
    NormalizedName,
    parse_sdist_filename,
    parse_wheel_filename,
)
from packaging.version import Version
from yarl import URL

PREFIX = "/packages/"
METADATA_SUFFIX = ".metadata"  # PEP 658: <file URL>.metadata
# Where the proxy serves a file's PEP 740 provenance: beside the file, as its metadata.
PROVENANCE_SUFFIX = ".provenance"
# Files of an index other than the default live under /packages/-/<index>/<upstream path>
# (cacheproxy/indexes.py): two indexes may use the same path for different files.
INDEX_MARK = "-/"


class BadPath(ValueError):
    """A request path that can never name a file (traversal, NUL, empty segments)."""


def upstream_rest(url: str) -> str:
    """The raw (still percent-encoded) path a file gets under ``/packages/``.

    Plain string work on an absolute URL (our parser made it absolute): this runs for
    every file of every page rendered, thousands per big project.
    """
    scheme_end = url.find("://")
    path_start = url.find("/", scheme_end + 3) if scheme_end >= 0 else 0
    raw = url[path_start:] if path_start >= 0 else "/"
    for sep in ("?", "#"):
        raw = raw.split(sep, 1)[0]
    return raw[len(PREFIX) :] if raw.startswith(PREFIX) else raw.lstrip("/")


def file_key(rest: str) -> str:
    """The cache key of a file from its raw path under ``/packages/``.

    Raises:
        BadPath: the path is empty or contains ``.``/``..``/empty segments, NUL or ``\\``.
    """
    try:
        key = unquote(rest, errors="strict") if "%" in rest else rest
    except UnicodeDecodeError:
        raise BadPath(f"not a file path: {rest[:200]!r}") from None
    segments = key.split("/")
    if not key or any(s in ("", ".", "..") for s in segments) or "\x00" in key or "\\" in key:
        raise BadPath(f"not a file path: {rest[:200]!r}")
    return key


def index_rest(rest: str, index: str, default: bool) -> str:
    """Where a file of ``index`` goes under ``/packages/``: its upstream path as it is for
    the default index, else (or when that path itself starts with ``-/``, as the links of a
    cacheproxy in front of this one do) behind ``-/<index>/``, so no two indexes share one."""
    if default and not rest.startswith(INDEX_MARK):
        return rest
    return f"{INDEX_MARK}{index}/{rest}"


def index_of_key(key: str) -> str | None:
    """The index named by a file key (``-/<index>/…``); None: the default index."""
    if not key.startswith(INDEX_MARK):
        return None
    name, _sep, _rest = key[len(INDEX_MARK) :].partition("/")
    return name


def page_link(rest: str) -> str:
    """A file link relative to ``/simple/<project>/``, so any Host or prefix works (3.2)."""
    return f"../..{PREFIX}{rest}"


def metadata_url(url: str) -> str:
    """PEP 658: the metadata of a file is at its URL with ``.metadata`` appended."""
    u = URL(url, encoded=True)
    return str(u.with_path(u.raw_path + METADATA_SUFFIX, encoded=True))


def project_of(filename: str) -> NormalizedName | None:
    """The project a wheel or sdist filename belongs to, if it follows the binary and
    source distribution format specifications."""
    try:
        if filename.endswith(".whl"):
            return parse_wheel_filename(filename)[0]
        return parse_sdist_filename(filename)[0]
    except (InvalidWheelFilename, InvalidSdistFilename):
        return None


def version_of(filename: str) -> Version | None:
    """The version a wheel or sdist filename carries, if it follows the standards."""
    try:
        if filename.endswith(".whl"):
            return parse_wheel_filename(filename)[1]
        return parse_sdist_filename(filename)[1]
    except (InvalidWheelFilename, InvalidSdistFilename):
        return None
