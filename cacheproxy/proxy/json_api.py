"""PyPI's JSON API (``/pypi/<project>/json``, ``/pypi/<project>/<version>/json``) through
the cache: where it is, and how a document is rewritten to point at the proxy.

pip-tools (``pip-compile --generate-hashes``) reads the hashes of every candidate file
from it and downloads any file it finds none for; Poetry reads it too. It is not a
standard: an index at ``<origin>/simple/`` (PyPI's layout) has it at ``<origin>/pypi/``,
any other upstream is taken to have none.

Each file entry's ``url`` (in ``urls`` and in every list of ``releases``) is rewritten to
the proxy, as a project page's links are (pages.render_project), and recorded so that
``/packages/...`` resolves even when the project page was never fetched. The stored
document names files by their path on the proxy (``"url":"/packages/..."``); the origin
the client used is put in front when the document is sent (:func:`with_origin`), because
pip-tools matches those URLs against the absolute links pip resolved from the project page,
and those carry whatever host and port the client reached the proxy by.
"""

import json
import logging
import re
from collections.abc import Callable
from typing import Any
from urllib.parse import urljoin

from packaging.utils import NormalizedName
from yarl import URL

from cacheproxy.errors import IndexParseError
from cacheproxy.simple.gate import upload_epoch
from cacheproxy.simple.layout import PREFIX, BadPath, file_key, upstream_rest
from cacheproxy.store.records import FileMap, FileRecord

logger = logging.getLogger(__name__)

KEY_PREFIX = "pypi/"  # page-store keys of JSON API documents; no project name has a "/"
# What a version in a URL may look like (PEP 440 and the legacy versions PyPI still has).
VERSION_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9.+!_-]{0,99}$")
_HEX64 = re.compile(r"^[0-9a-f]{64}$")
# How a rewritten file URL starts in a stored document. Quotes inside a JSON string are
# escaped, so this matches only a key ending in `url"` whose value starts with /packages/:
# the file URLs written here (any other such value would just get the origin too).
_URL_MARK = f'"url":"{PREFIX}'.encode()


def json_api_base(upstream: URL) -> URL | None:
    """Where the JSON API of the index at ``upstream`` is: ``<origin>/pypi/`` for an index
    at ``<origin>/simple/``; None for any other upstream (then there is none)."""
    path = upstream.raw_path
    if not path.endswith("/simple/"):
        return None
    base = upstream.with_user(None).with_password(None)
    return base.with_path(path.removesuffix("simple/") + "pypi/", encoded=True)


def json_api_key(name: NormalizedName, version: str | None) -> str:
    return f"{KEY_PREFIX}{name}" if version is None else f"{KEY_PREFIX}{name}/{version}"


def json_api_url(base: URL, name: NormalizedName, version: str | None) -> URL:
    url = base / name
    return (url if version is None else url / version) / "json"


def render_json_api(
    body: bytes,
    base_url: str,
    allowed: Callable[[str], bool],
    place: Callable[[str], str] | None = None,
) -> tuple[bytes, FileMap]:
    """The document with every file URL rewritten to ``/packages/...``, and the records
    of those files. Files whose URL fails ``allowed`` (upstream.file_url_allowed) or has
    an unusable path are dropped, as from pages. ``place``: as for pages.render_project
    (which index's files they are).

    Raises:
        IndexParseError: not a JSON object.
    """
    try:
        doc = json.loads(body)
    except (ValueError, UnicodeDecodeError) as e:
        raise IndexParseError(f"JSON API document is not JSON: {e}") from None
    if not isinstance(doc, dict):
        raise IndexParseError("JSON API document is not a JSON object")
    records: FileMap = {}
    if isinstance(doc.get("urls"), list):
        doc["urls"] = _rewrite(doc["urls"], base_url, allowed, records, place)
    releases = doc.get("releases")
    if isinstance(releases, dict):
        for version, files in releases.items():
            if isinstance(files, list):
                releases[version] = _rewrite(files, base_url, allowed, records, place)
    data = json.dumps(doc, ensure_ascii=False, separators=(",", ":"))
    return data.encode("utf-8", "backslashreplace"), records


def _rewrite(
    files: list[Any],
    base_url: str,
    allowed: Callable[[str], bool],
    records: FileMap,
    place: Callable[[str], str] | None = None,
) -> list[Any]:
    kept = []
    for entry in files:
        if not isinstance(entry, dict) or not isinstance(entry.get("url"), str):
            continue
        url = urljoin(base_url, entry["url"])
        if not url.startswith(("http://", "https://")) or not allowed(url):
            logger.warning("dropping %s from a JSON API document: not an allowed URL", url[:200])
            continue
        rest = upstream_rest(url)
        if place is not None:
            rest = place(rest)
        try:
            key = file_key(rest)
        except BadPath:
            logger.warning("dropping %s from a JSON API document: unusable path", url[:200])
            continue
        digests = entry.get("digests")
        sha256 = digests.get("sha256") if isinstance(digests, dict) else None
        size = entry.get("size")
        records[key] = FileRecord(
            url=url,
            sha256=sha256 if isinstance(sha256, str) and _HEX64.match(sha256) else None,
            size=size if isinstance(size, int) and not isinstance(size, bool) else None,
            metadata_sha256=None,
            metadata=False,  # the JSON API says nothing of PEP 658 metadata
            # For the release-age gate (proxy/files.py judges every file request by it).
            uploaded=upload_epoch(_text(entry.get("upload_time_iso_8601"))),
        )
        kept.append({**entry, "url": PREFIX + rest})
    return kept


def _text(value: object) -> str | None:
    return value if isinstance(value, str) else None


def with_origin(document: bytes, origin: str) -> bytes:
    """A stored document with absolute file URLs on the proxy at ``origin``."""
    return document.replace(_URL_MARK, f'"url":"{origin}{PREFIX}'.encode())
