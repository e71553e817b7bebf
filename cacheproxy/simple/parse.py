"""Parse upstream simple-API pages (PEP 503 HTML, PEP 691 JSON) into the model.

Robust against the indexes found in the wild (proxpi issues #62, #75 and #91 list them):
a missing or wrong Content-Type is sniffed, ``<base href>`` is honoured, relative links are
resolved against the URL the page was finally served from. Nothing is invented: a value we
cannot understand is dropped, never guessed.
"""

import hashlib
import json
from collections.abc import Iterator, Mapping
from html.parser import HTMLParser
from typing import Any
from urllib.parse import unquote

from packaging.utils import NormalizedName
from yarl import URL

from cacheproxy.errors import IndexParseError
from cacheproxy.simple.models import CoreMetadata, DistFile, ProjectList, ProjectPage
from cacheproxy.simple.negotiate import MediaType

JSON_TYPE = MediaType.JSON_V1.content_type
# Keys of a PEP 691 file entry that we model (or drop) rather than pass through.
_FILE_KEYS = {
    "filename",
    "url",
    "hashes",
    "requires-python",
    "yanked",
    "core-metadata",
    "data-dist-info-metadata",
    "dist-info-metadata",
    "size",
    "upload-time",
    "gpg-sig",
    "provenance",  # PEP 740: rewritten to the proxy, like the file's own URL
}
_PAGE_KEYS = {"meta", "name", "files", "versions"}


def is_json(body: bytes, content_type: str | None) -> bool:
    """Decide the format from the Content-Type, sniffing when it is missing or generic."""
    ctype = (content_type or "").split(";")[0].strip().lower()
    if ctype.endswith("+json") or ctype == "application/json":
        return True
    if "html" in ctype:
        return False
    return body.lstrip()[:1] == b"{"


def _decode(body: bytes) -> str:
    # PEP 503 pages are UTF-8; a stray byte must not make the whole page unusable.
    return body.decode("utf-8", errors="replace")


def _check_api_version(version: object) -> str:
    text = str(version) if version is not None else "1.0"
    major = text.split(".")[0]
    if major != "1":
        # PEP 629: clients MUST fail on an unknown major version; so must we.
        raise IndexParseError(f"unsupported simple API version {text!r}")
    return text


def _core_metadata_json(value: object) -> CoreMetadata:
    if isinstance(value, bool):
        return value
    if isinstance(value, dict) and all(
        isinstance(k, str) and isinstance(v, str) for k, v in value.items()
    ):
        # An empty mapping still says "metadata exists", only without a hash: that is True,
        # so both renderings agree on whether it is advertised.
        return dict(value) or True
    return False


def _yanked(value: object) -> bool | str:
    # PEP 592 / 691: a bool, or the reason. pip treats "" as yanked without a reason.
    if isinstance(value, str):
        return value or True
    return value is True


def _file_from_json(raw: object, base: URL) -> DistFile | None:
    if not isinstance(raw, dict):
        return None
    filename, url = raw.get("filename"), raw.get("url")
    if not isinstance(filename, str) or not isinstance(url, str) or not filename:
        return None
    hashes = raw.get("hashes")
    if not isinstance(hashes, dict):
        hashes = {}
    hashes = {k: v for k, v in hashes.items() if isinstance(k, str) and isinstance(v, str)}
    # PEP 714: prefer the new name; fall back to the old one(s).
    metadata = _core_metadata_json(
        raw.get("core-metadata", raw.get("data-dist-info-metadata", raw.get("dist-info-metadata")))
    )
    try:
        absolute = str(base.join(URL(url, encoded=True)))
    except ValueError:  # e.g. "http://[::1": a link we cannot follow is dropped, like in HTML
        return None
    provenance = _absolute(raw.get("provenance"), base)
    rp = raw.get("requires-python")
    size = raw.get("size")
    upload_time = raw.get("upload-time")
    gpg = raw.get("gpg-sig")
    return DistFile(
        filename=filename,
        url=absolute,
        hashes=hashes,
        requires_python=rp if isinstance(rp, str) else None,
        yanked=_yanked(raw.get("yanked", False)),
        core_metadata=metadata,
        size=size if isinstance(size, int) and not isinstance(size, bool) and size >= 0 else None,
        upload_time=upload_time if isinstance(upload_time, str) else None,
        gpg_sig=gpg if isinstance(gpg, bool) else None,
        provenance=provenance,
        extra={k: v for k, v in raw.items() if k not in _FILE_KEYS},
    )


def _files_from_json(raw_files: list[Any], base: URL) -> Iterator[DistFile]:
    """The usable entries of ``raw_files``, which is emptied on the way.

    Each decoded entry (its dicts are larger than the DistFile made from it) is let go as
    soon as it is converted, so a page of thousands of files does not hold both forms at
    once (bench/memory.py).
    """
    for i, raw in enumerate(raw_files):
        raw_files[i] = None
        f = _file_from_json(raw, base)
        del raw
        if f is not None:
            yield f
    raw_files.clear()


def _absolute(link: object, base: URL) -> str | None:
    """A link as an absolute URL (None when absent or unusable)."""
    if not isinstance(link, str) or not link.strip():
        return None
    try:
        return str(base.join(URL(link.strip(), encoded=True)).with_fragment(None))
    except ValueError:
        return None


def _load_json(body: bytes) -> dict[str, Any]:
    try:
        data = json.loads(body)
    except (ValueError, RecursionError) as e:  # RecursionError: deeply nested arrays/objects
        raise IndexParseError(f"invalid JSON index page: {e}") from None
    if not isinstance(data, dict):
        raise IndexParseError("JSON index page is not an object")
    return data


def _parse_json_page(body: bytes, base: URL, name: NormalizedName) -> ProjectPage:
    data = _load_json(body)
    meta = data.get("meta") if isinstance(data.get("meta"), dict) else {}
    assert isinstance(meta, dict)
    version = _check_api_version(meta.get("api-version"))
    raw_files = data.get("files")
    if not isinstance(raw_files, list):
        raise IndexParseError("JSON index page has no files list")
    files = tuple(_files_from_json(raw_files, base))
    versions = data.get("versions")
    return ProjectPage(
        name=name,
        files=files,
        api_version=version,
        versions=tuple(str(v) for v in versions) if isinstance(versions, list) else None,
        meta={k: v for k, v in meta.items() if k != "api-version"},
        extra={k: v for k, v in data.items() if k not in _PAGE_KEYS},
    )


class _LinkParser(HTMLParser):
    """Collects <base href>, <meta name=… content=…> and every <a> with its text."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.base: str | None = None
        self.meta: list[tuple[str, str]] = []
        self.anchors: list[tuple[dict[str, str | None], str]] = []
        self._current: dict[str, str | None] | None = None
        self._text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attrs_d = dict(attrs)
        if tag == "base" and self.base is None and attrs_d.get("href"):
            self.base = attrs_d["href"]
        elif tag == "meta" and attrs_d.get("name") and attrs_d.get("content") is not None:
            self.meta.append((str(attrs_d["name"]), str(attrs_d["content"])))
        elif tag == "a":
            self._finish_anchor()
            self._current = attrs_d
            self._text = []

    def handle_endtag(self, tag: str) -> None:
        if tag == "a":
            self._finish_anchor()

    def handle_data(self, data: str) -> None:
        if self._current is not None:
            self._text.append(data)

    def _finish_anchor(self) -> None:
        if self._current is not None:
            self.anchors.append((self._current, "".join(self._text).strip()))
        self._current = None

    def close(self) -> None:
        super().close()
        self._finish_anchor()


def _parse_html(body: bytes) -> _LinkParser:
    parser = _LinkParser()
    try:
        parser.feed(_decode(body))
        parser.close()
    except Exception as e:  # HTMLParser is lenient; this is a last line of defence
        raise IndexParseError(f"unparseable HTML index page: {e}") from None
    return parser


def _core_metadata_html(value: str | None) -> CoreMetadata:
    if value is None:
        return False
    value = value.strip()
    if value.lower() == "true":
        return True
    algo, sep, digest = value.partition("=")
    if sep and algo in hashlib.algorithms_guaranteed and digest:
        return {algo: digest}
    return False  # "false", or something we cannot serve honestly


def _file_from_anchor(attrs: Mapping[str, str | None], base: URL) -> DistFile | None:
    href = attrs.get("href")
    if not href:
        return None
    try:
        url = base.join(URL(href.strip(), encoded=True))
        absolute = str(url.with_fragment(None))  # yarl checks some parts (the port) only here
    except ValueError:
        return None
    # pip names a link by its URL's last path segment; the anchor text is display only.
    filename = unquote(url.raw_path.rsplit("/", 1)[-1])
    if not filename:
        return None
    hashes: dict[str, str] = {}
    algo, sep, digest = url.raw_fragment.partition("=")
    if sep and algo in hashlib.algorithms_guaranteed and digest:
        hashes[algo] = digest
    yanked_raw = attrs.get("data-yanked", False)
    yanked: bool | str = False if yanked_raw is False else (yanked_raw or True)
    # PEP 714: data-core-metadata, falling back to PEP 658's data-dist-info-metadata.
    metadata_attr = attrs.get("data-core-metadata", attrs.get("data-dist-info-metadata"))
    gpg = attrs.get("data-gpg-sig")
    return DistFile(
        filename=filename,
        url=absolute,
        hashes=hashes,
        requires_python=attrs.get("data-requires-python") or None,
        yanked=yanked,
        core_metadata=_core_metadata_html(metadata_attr),
        gpg_sig={"true": True, "false": False}.get((gpg or "").lower()),
        provenance=_absolute(attrs.get("data-provenance"), base),  # PEP 740
    )


def _html_extra(meta: list[tuple[str, str]]) -> tuple[str, dict[str, Any]]:
    version = "1.0"
    extra: dict[str, Any] = {}
    for name, content in meta:
        if name == "pypi:repository-version":
            version = content.strip()
        elif name == "pypi:tracks":  # PEP 708
            extra.setdefault("tracks", []).append(content)
        elif name == "pypi:alternate-locations":  # PEP 708
            extra.setdefault("alternate-locations", []).append(content)
        elif name == "pypi:project-status":  # PEP 792
            extra.setdefault("project-status", {})["status"] = content
        elif name == "pypi:project-status-reason":
            extra.setdefault("project-status", {})["reason"] = content
    return _check_api_version(version), extra


def _base_url(page_url: URL, href: str | None) -> URL:
    """The URL relative links resolve against: ``<base href>`` joined to the page URL.

    An unparseable href is ignored, as the HTML standard says ("set the frozen base URL":
    on failure the fallback base URL, i.e. the document's own URL, is used).
    """
    if not href:
        return page_url
    try:
        base = page_url.join(URL(href.strip(), encoded=True))
        str(base)  # yarl checks some parts (the port) only when the URL is built
    except ValueError:
        return page_url
    return base


def parse_project_page(
    body: bytes, content_type: str | None, page_url: URL, name: NormalizedName
) -> ProjectPage:
    """Parse a project page served from ``page_url`` (the final URL, after redirects).

    Raises:
        IndexParseError: the page is neither valid JSON nor usable HTML.
    """
    if is_json(body, content_type):
        return _parse_json_page(body, page_url, name)
    parser = _parse_html(body)
    if not parser.anchors and not any(n == "pypi:repository-version" for n, _ in parser.meta):
        # Not one link and no PEP 629 version tag: an error or portal page served with
        # 200, not an index page. Storing it would replace a good page with an empty one.
        raise IndexParseError("upstream sent a page with no links that is not an index page")
    base = _base_url(page_url, parser.base)
    files = tuple(
        f for f in (_file_from_anchor(attrs, base) for attrs, _text in parser.anchors) if f
    )
    version, extra = _html_extra(parser.meta)
    return ProjectPage(name=name, files=files, api_version=version, extra=extra)


def parse_project_list(body: bytes, content_type: str | None) -> ProjectList:
    """Parse the root ``/simple/`` page.

    Raises:
        IndexParseError: the page is neither valid JSON nor usable HTML.
    """
    if is_json(body, content_type):
        data = _load_json(body)
        meta = data.get("meta") if isinstance(data.get("meta"), dict) else {}
        assert isinstance(meta, dict)
        version = _check_api_version(meta.get("api-version"))
        projects = data.get("projects")
        if not isinstance(projects, list):
            raise IndexParseError("JSON project list has no projects list")
        names = tuple(
            p["name"] for p in projects if isinstance(p, dict) and isinstance(p.get("name"), str)
        )
        return ProjectList(names=names, api_version=version)
    parser = _parse_html(body)
    version, _extra = _html_extra(parser.meta)
    names = tuple(text for _attrs, text in parser.anchors if text)
    return ProjectList(names=names, api_version=version)
