"""PyPI's JSON API (``/pypi/<project>/json``, ``/pypi/<project>/<version>/json``) through
the cache: where it is, and how a document is rewritten to point at the proxy.

pip-tools (``pip-compile --generate-hashes``) reads the hashes of every candidate file
from it and downloads any file it finds none for; Poetry reads it too. It is not a
standard: an index at ``<origin>/simple/`` (PyPI's layout) has it at ``<origin>/pypi/``,
any other upstream is taken to have none.

A document only links files the proxy serves as it describes them: each entry is checked
against the project's page (:class:`Listed`), which proxy/files.py serves every file by.
An entry the page does not show, or shows with another sha256, is dropped (one warning
line): a client would otherwise lock a digest that contradicts the bytes it is sent. So is
one the release-age gate holds back (the page's held files), silently; a release left with
no file goes from ``releases``, and ``info``/``urls`` never describe such a release
(pages.Pages._store_json_api takes the newest shown release's own document instead).

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
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urljoin

from packaging.utils import NormalizedName
from packaging.version import InvalidVersion, Version
from yarl import URL

from cacheproxy.errors import IndexParseError
from cacheproxy.simple.gate import upload_epoch
from cacheproxy.simple.layout import PREFIX, BadPath, file_key, page_link, upstream_rest
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
# How a project page's file links start (pages.render_project: layout.page_link).
_LINK_PREFIX = page_link("")
# A held file as a page record keeps it: filename, version, when it is handed out.
HeldFile = tuple[str, str | None, float | None]
# The keys of ``info`` that describe the project, not one release: all that is kept when
# the shown release's own document cannot be had (:func:`adopt_release`).
_PROJECT_INFO = ("name", "package_url", "project_url")


@dataclass(frozen=True, slots=True)
class Listed:
    """What the project page shows, which a document's entries must agree with: file key
    -> sha256 (None: listed without one), and the files the release-age gate holds back
    there, by filename."""

    files: Mapping[str, str | None]
    held: Mapping[str, HeldFile] = field(default_factory=dict)


def listed_files(page_json: bytes, held: Iterable[HeldFile] = ()) -> Listed:
    """:class:`Listed` from a project page's rendered PEP 691 body and its record's held
    files.

    Raises:
        IndexParseError: not a page the proxy rendered.
    """
    try:
        page = json.loads(page_json)
        entries = page["files"]
    except (ValueError, UnicodeDecodeError, KeyError, TypeError) as e:
        raise IndexParseError(f"project page is not a PEP 691 page: {e}") from None
    files: dict[str, str | None] = {}
    for entry in entries if isinstance(entries, list) else ():
        url = entry.get("url") if isinstance(entry, dict) else None
        if not isinstance(url, str) or not url.startswith(_LINK_PREFIX):
            continue
        try:
            key = file_key(url[len(_LINK_PREFIX) :])
        except BadPath:
            continue
        hashes = entry.get("hashes")
        sha256 = hashes.get("sha256") if isinstance(hashes, dict) else None
        files[key] = sha256 if isinstance(sha256, str) else None
    return Listed(files, {h[0]: h for h in held})


@dataclass(slots=True)
class Checked:
    """What :func:`rewrite_json_api` did to a document."""

    records: FileMap = field(default_factory=dict)
    held: dict[str, HeldFile] = field(default_factory=dict)  # dropped: the gate holds them
    contradicted: set[str] = field(default_factory=set)  # dropped: the page disagrees
    emptied: set[str] = field(default_factory=set)  # releases left with no file
    urls_emptied: bool = False  # ``urls`` had files and has none left


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


def parse_json_api(body: bytes) -> dict[str, Any]:
    """Raises: IndexParseError: not a JSON object."""
    try:
        doc = json.loads(body)
    except (ValueError, UnicodeDecodeError) as e:
        raise IndexParseError(f"JSON API document is not JSON: {e}") from None
    if not isinstance(doc, dict):
        raise IndexParseError("JSON API document is not a JSON object")
    return doc


def dump_json_api(doc: dict[str, Any]) -> bytes:
    data = json.dumps(doc, ensure_ascii=False, separators=(",", ":"))
    return data.encode("utf-8", "backslashreplace")


def rewrite_json_api(
    doc: dict[str, Any],
    base_url: str,
    allowed: Callable[[str], bool],
    place: Callable[[str], str] | None = None,
    listed: Listed | None = None,
) -> Checked:
    """Rewrite ``doc`` in place: every file URL to ``/packages/...``. Files whose URL fails
    ``allowed`` (upstream.file_url_allowed) or has an unusable path are dropped, as from
    pages; with ``listed``, so is every file the project page does not show as the document
    describes it (see the module docstring). ``place``: as for pages.render_project (which
    index's files they are). A release left with no file is removed from ``releases``.
    """
    checked = Checked()
    if isinstance(doc.get("urls"), list):
        urls = doc["urls"]
        doc["urls"] = _rewrite(urls, base_url, allowed, checked, place, listed)
        checked.urls_emptied = bool(urls) and not doc["urls"]
    releases = doc.get("releases")
    if isinstance(releases, dict):
        for version, files in list(releases.items()):
            if isinstance(files, list):
                kept = _rewrite(files, base_url, allowed, checked, place, listed)
                if files and not kept:
                    del releases[version]
                    checked.emptied.add(version)
                else:
                    releases[version] = kept
    return checked


def info_version(doc: Mapping[str, Any]) -> str | None:
    info = doc.get("info")
    version = info.get("version") if isinstance(info, dict) else None
    return version if isinstance(version, str) else None


def newest_release(doc: Mapping[str, Any]) -> str | None:
    """The release ``info`` should describe among those ``releases`` still lists with a
    file, as warehouse picks it: not every file yanked, then not a pre-release, then the
    highest version (None: there is none)."""
    releases = doc.get("releases")
    if not isinstance(releases, dict):
        return None
    candidates = [v for v, files in releases.items() if isinstance(files, list) and files]

    def rank(version: str) -> tuple[bool, bool, bool, Version]:
        files = releases[version]
        yanked = all(isinstance(f, dict) and f.get("yanked") is True for f in files)
        try:
            parsed = Version(version)
        except InvalidVersion:
            return (not yanked, False, False, Version("0"))
        return (not yanked, True, not parsed.is_prerelease, parsed)

    return max(candidates, key=rank, default=None)


def adopt_release(doc: dict[str, Any], version: str, own: Mapping[str, Any] | None) -> None:
    """Make ``doc``'s ``info`` and ``urls`` describe ``version``: from its own document
    ``own`` (``/pypi/<project>/<version>/json``, rewritten and checked like ``doc``), or,
    without one, ``info`` cut to the project's keys (_PROJECT_INFO) with ``version`` and
    ``urls`` taken from ``releases``: nothing of another release is ever described."""
    if own is not None and isinstance(own.get("info"), dict):
        doc["info"] = own["info"]
        doc["urls"] = own.get("urls", [])
        if "vulnerabilities" in own:
            doc["vulnerabilities"] = own["vulnerabilities"]
        return
    info = doc.get("info") if isinstance(doc.get("info"), dict) else {}
    assert isinstance(info, dict)
    doc["info"] = {**{k: info[k] for k in _PROJECT_INFO if k in info}, "version": version}
    releases = doc.get("releases")
    doc["urls"] = releases.get(version, []) if isinstance(releases, dict) else []
    doc.pop("vulnerabilities", None)


def _rewrite(
    files: list[Any],
    base_url: str,
    allowed: Callable[[str], bool],
    checked: Checked,
    place: Callable[[str], str] | None = None,
    listed: Listed | None = None,
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
        sha256 = sha256 if isinstance(sha256, str) and _HEX64.match(sha256) else None
        if listed is not None and not _agrees(entry, key, sha256, listed, checked):
            continue
        size = entry.get("size")
        checked.records[key] = FileRecord(
            url=url,
            sha256=sha256,
            size=size if isinstance(size, int) and not isinstance(size, bool) else None,
            metadata_sha256=None,
            metadata=False,  # the JSON API says nothing of PEP 658 metadata
            # For the release-age gate (proxy/files.py judges every file request by it).
            uploaded=upload_epoch(_text(entry.get("upload_time_iso_8601"))),
        )
        kept.append({**entry, "url": PREFIX + rest})
    return kept


def _agrees(
    entry: Mapping[str, Any], key: str, sha256: str | None, listed: Listed, checked: Checked
) -> bool:
    """Whether the page shows this entry's file with its sha256; a held or contradicted
    entry is noted in ``checked`` (and a contradicted one logged, once per file)."""
    filename = _text(entry.get("filename")) or key.rsplit("/", 1)[-1]
    if key not in listed.files and (held := listed.held.get(filename)) is not None:
        checked.held[filename] = held
        return False
    shown = listed.files.get(key)
    if shown is not None and shown == sha256:
        return True
    if key not in checked.contradicted:
        checked.contradicted.add(key)
        if key not in listed.files:
            problem = "its project page does not list it"
        elif shown is None:
            problem = "its project page gives no sha256 to check the document's against"
        else:
            problem = f"its project page lists sha256 {shown}, the document {sha256}"
        logger.warning("dropping %s from a JSON API document: %s", filename, problem)
    return False


def _text(value: object) -> str | None:
    return value if isinstance(value, str) else None


def with_origin(document: bytes, origin: str) -> bytes:
    """A stored document with absolute file URLs on the proxy at ``origin``."""
    return document.replace(_URL_MARK, f'"url":"{origin}{PREFIX}'.encode())
