"""Render the model as PEP 691 JSON and PEP 503 HTML.

Pure functions: the caller passes ``link_for(file)``, the (relative) URL each file gets on
the proxy, so rendering knows nothing about URL layout. Rendering happens once per upstream
change (at miss time); hits send the stored bytes.
"""

import json
from collections.abc import Callable
from html import escape
from typing import Any

from cacheproxy.simple.layout import PROVENANCE_SUFFIX
from cacheproxy.simple.models import DistFile, ProjectList, ProjectPage

LinkFor = Callable[[DistFile], str]

# Order of preference for the one hash an HTML link can carry (PEP 503: one fragment).
_HASH_PREFERENCE = ("sha256", "sha512", "sha384", "sha224", "sha1", "md5")
# The top-level keys render_json writes itself.
_PAGE_JSON_KEYS = frozenset({"meta", "name", "versions", "files"})


def json_api_version(page: ProjectPage) -> str:
    """The api-version our JSON may claim: PEP 700 (1.1+) requires versions and sizes."""
    if page.api_version == "1.0":
        return "1.0"
    if page.versions is None or any(f.size is None for f in page.files):
        return "1.0"
    return page.api_version


def _json_file(f: DistFile, link: str) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "filename": f.filename,
        "url": link,
        "hashes": dict(f.hashes),
        "requires-python": f.requires_python,
        "yanked": f.yanked,
    }
    metadata = dict(f.core_metadata) if not isinstance(f.core_metadata, bool) else f.core_metadata
    # PEP 714: the new key, plus the old one for clients that predate the rename (as PyPI does).
    entry["core-metadata"] = metadata
    entry["data-dist-info-metadata"] = metadata
    if f.size is not None:
        entry["size"] = f.size
    if f.upload_time is not None:
        entry["upload-time"] = f.upload_time
    if f.gpg_sig is not None:
        entry["gpg-sig"] = f.gpg_sig
    if f.provenance is not None:
        entry["provenance"] = link + PROVENANCE_SUFFIX  # PEP 740, through the proxy too
    entry.update(f.extra)
    return entry


def _json_utf8(text: str) -> bytes:
    # UTF-8 rather than \u escapes keeps pages small. A lone surrogate (json.loads makes one
    # from an upstream "\ud800" escape) has no UTF-8 form: backslashreplace writes it back as
    # that same JSON escape, so the value still round-trips exactly.
    return text.encode("utf-8", "backslashreplace")


def _json_bytes(data: object) -> bytes:
    return _json_utf8(json.dumps(data, ensure_ascii=False, separators=(",", ":")))


def _html_bytes(text: str) -> bytes:
    # HTML cannot carry a lone surrogate at all; a character reference turns it into U+FFFD
    # for the client's parser instead of failing the whole page.
    return text.encode("utf-8", "xmlcharrefreplace")


def render_json(page: ProjectPage, link_for: LinkFor) -> bytes:
    version = json_api_version(page)
    head: dict[str, Any] = {"meta": {"api-version": version, **page.meta}, "name": page.name}
    if version != "1.0" and page.versions is not None:
        head["versions"] = list(page.versions)
    if _PAGE_JSON_KEYS.intersection(page.extra):
        # An extra key that would replace one of ours: build it whole (never from parse.py,
        # which keeps these keys out of extra).
        data = {**head, "files": [_json_file(f, link_for(f)) for f in page.files]}
        data.update(page.extra)
        return _json_bytes(data)
    # Entry by entry: a page of thousands of files never exists as one list of dicts plus
    # one str plus the bytes (three copies of a 2 MB page; bench/memory.py). Joining the
    # entries' encodings gives the same bytes as encoding the whole document.
    encode = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode
    opening = _json_utf8(encode(head))[:-1] + b',"files":['
    closing = b"]," + _json_utf8(encode(page.extra))[1:] if page.extra else b"]}"
    return _joined(
        opening, [_json_utf8(encode(_json_file(f, link_for(f)))) for f in page.files], b",", closing
    )


def _joined(opening: bytes, items: list[bytes], sep: bytes, closing: bytes) -> bytes:
    """``opening + sep.join(items) + closing``, copying the items once, not twice."""
    if not items:
        return opening + closing
    items[0] = opening + items[0]
    items[-1] += closing
    return sep.join(items)


def _attr(name: str, value: str) -> str:
    return f' {name}="{escape(value, quote=True)}"'


def _metadata_attr(f: DistFile) -> str:
    if f.core_metadata is True:
        return "true"
    assert not isinstance(f.core_metadata, bool)
    # One hash fits the attribute: the strongest one offered, as for the file link.
    algo = next((a for a in _HASH_PREFERENCE if a in f.core_metadata), None)
    if algo is None:
        algo = next(iter(f.core_metadata))
    return f"{algo}={f.core_metadata[algo]}"


def _html_anchor(f: DistFile, link: str) -> str:
    href = link
    for algo in _HASH_PREFERENCE:
        if digest := f.hashes.get(algo):
            href = f"{link}#{algo}={digest}"
            break
    parts = [_attr("href", href)]
    if f.requires_python is not None:
        # Escaped, so ">=3.8" becomes "&gt;=3.8" as on PyPI (PEP 503: HTML-encoded).
        parts.append(_attr("data-requires-python", f.requires_python))
    if f.yanked is not False:
        parts.append(_attr("data-yanked", "" if f.yanked is True else str(f.yanked)))
    if f.core_metadata is not False and (f.core_metadata is True or f.core_metadata):
        value = _metadata_attr(f)
        # PEP 714: both spellings, same value.
        parts.append(_attr("data-dist-info-metadata", value))
        parts.append(_attr("data-core-metadata", value))
    if f.gpg_sig is not None:
        parts.append(_attr("data-gpg-sig", "true" if f.gpg_sig else "false"))
    if f.provenance is not None:
        parts.append(_attr("data-provenance", link + PROVENANCE_SUFFIX))  # PEP 740
    return f"<a{''.join(parts)}>{escape(f.filename)}</a><br />"


def _html_meta(page: ProjectPage) -> list[str]:
    lines = [f'<meta name="pypi:repository-version" content="{escape(page.api_version)}">']
    for key in ("tracks", "alternate-locations"):  # PEP 708
        values = page.extra.get(key)
        if isinstance(values, list):
            lines += [f'<meta name="pypi:{key}"{_attr("content", str(v))}>' for v in values]
    status = page.extra.get("project-status")  # PEP 792
    if isinstance(status, dict) and isinstance(status.get("status"), str):
        lines.append(f'<meta name="pypi:project-status"{_attr("content", status["status"])}>')
        if isinstance(status.get("reason"), str):
            reason = _attr("content", status["reason"])
            lines.append(f'<meta name="pypi:project-status-reason"{reason}>')
    return lines


def render_html(page: ProjectPage, link_for: LinkFor) -> bytes:
    title = escape(page.name)
    head = "\n    ".join([*_html_meta(page), f"<title>Links for {title}</title>"])
    # Anchor by anchor, as bytes, joined once: no whole-page str besides the bytes (see
    # render_json). Encoding the pieces gives the same bytes as encoding the whole text.
    opening = f"<!DOCTYPE html>\n<html>\n  <head>\n    {head}\n  </head>\n  <body>\n    "
    anchors = [_html_bytes(_html_anchor(f, link_for(f))) for f in page.files]
    heading = _html_bytes(f"{opening}<h1>Links for {title}</h1>\n    ")
    return _joined(heading, anchors, b"\n    ", b"\n  </body>\n</html>\n")


def render_list_json(projects: ProjectList, link_for: Callable[[str], str]) -> bytes:
    del link_for  # PEP 691's project list carries names only
    data = {
        "meta": {"api-version": "1.0"},
        "projects": [{"name": n} for n in projects.names],
    }
    return _json_bytes(data)


def render_list_html(projects: ProjectList, link_for: Callable[[str], str]) -> bytes:
    anchors = "\n    ".join(
        f"<a{_attr('href', link_for(n))}>{escape(n)}</a><br />" for n in projects.names
    )
    return _html_bytes(
        '<!DOCTYPE html>\n<html>\n  <head>\n    <meta name="pypi:repository-version" '
        'content="1.0">\n    <title>Simple index</title>\n  </head>\n  <body>\n    '
        f"{anchors}\n  </body>\n</html>\n"
    )
