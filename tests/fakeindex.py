"""A real in-process fake upstream index, shaped like PyPI, with a request log and fault knobs.

``FakeIndex`` owns the upstream side of every proxy test:

* the model: projects and their files, with sha256, size and PEP 658 metadata computed from
  the bytes (never hand-written), rendered as both PEP 691 JSON and PEP 503 HTML;
* two ``aiohttp`` apps, like PyPI: ``index_app`` (``/simple/``) and ``files_app`` (the file
  host, ``/packages/<2>/<2>/<60>/<filename>``), so the proxy must follow absolute URLs to
  another host:port;
* a request log (``requests``) to prove cache hits, and per-instance fault knobs
  (``fail_pages``, ``truncate_files``, ...) to prove the proxy copes with a bad upstream;
* PyPI's JSON API on the index host (``/pypi/<project>/json`` and
  ``/pypi/<project>/<version>/json``, as pip-tools and Poetry read it), computed from the
  same model; the page fault knobs apply to it too.
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import hashlib
import html
import json
import posixpath
import re
import zipfile
from collections.abc import Awaitable
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from email.parser import BytesHeaderParser
from pathlib import Path
from typing import Literal, Protocol
from urllib.parse import unquote

from aiohttp import web
from aiohttp.test_utils import TestServer
from aiohttp.typedefs import Handler, Middleware
from distbuild import wheel_metadata
from packaging.utils import canonicalize_name, parse_sdist_filename, parse_wheel_filename
from packaging.version import Version

HTML = "text/html"
V1_HTML = "application/vnd.pypi.simple.v1+html"
V1_JSON = "application/vnd.pypi.simple.v1+json"
# warehouse `_select_content_type` offers these, in this order (warehouse/api/simple.py).
OFFERS = (HTML, V1_HTML, V1_JSON)
PAGE_CACHE_CONTROL = "max-age=600, public"  # warehouse `cache_control(10 * 60)`
# PyPI's file host: ranges, immutable caching, never a Content-Encoding.
FILE_HEADERS = {
    "Content-Type": "application/octet-stream",
    "Accept-Ranges": "bytes",
    "Cache-Control": "max-age=365000000, immutable, public",
}


class ServerFactory(Protocol):
    """pytest-aiohttp's ``aiohttp_server`` fixture."""

    def __call__(self, app: web.Application) -> Awaitable[TestServer]: ...


@dataclass(frozen=True)
class FakeFile:
    project: str  # normalized name
    filename: str
    data: bytes
    sha256: str
    size: int
    url_path: str  # path on the files host
    metadata_bytes: bytes | None  # None: not advertised, .metadata answers 404
    metadata_sha256: str | None
    yanked: bool | str
    requires_python: str | None
    upload_time: str | None  # None: the index gives none (an HTML-only index, a private one)
    version: str


@dataclass(frozen=True)
class LoggedRequest:
    host: Literal["index", "files"]
    method: str
    path: str  # raw path including the query string
    headers: dict[str, str]  # names lowercased: uv sends lowercase names, pip mixed case


@dataclass
class _Project:
    name: str  # display name as first given
    files: dict[str, FakeFile]
    serial: int


@dataclass
class _Fault:
    """A fault that fires for the next ``times`` requests (``None``: until reset)."""

    value: int
    times: int | None

    def fire(self) -> bool:
        if self.times is not None:
            if self.times <= 0:
                return False
            self.times -= 1
        return True


class _NoTypeResponse(web.StreamResponse):
    """Marks a response whose Content-Type is removed after aiohttp has defaulted it."""


def negotiate(accept: str | None) -> str:
    """PyPI's choice (PEP 691; warehouse uses WebOb ``acceptable_offers``).

    The highest q wins, offer order breaks ties, and no match means ``text/html`` (never 406).
    """
    ranges: list[tuple[str, float]] = []
    for part in (accept or "").split(","):
        media, *params = (p.strip().lower() for p in part.split(";"))
        q = next((p.removeprefix("q=") for p in params if p.startswith("q=")), "1")
        # An invalid qvalue (RFC 9110 §12.4.2) counts as 0 rather than failing the request.
        valid = re.fullmatch(r"0(\.\d{0,3})?|1(\.0{0,3})?", q) is not None
        ranges.append((media, float(q) if valid else 0.0))

    def quality(offer: str) -> float:
        # The most specific matching range sets the offer's q (RFC 9110 §12.5.1).
        for candidate in (offer, offer.split("/")[0] + "/*", "*/*"):
            for media, q in ranges:
                if media == candidate:
                    return q
        return 0.0

    best = max(OFFERS, key=quality)  # max() keeps the first of equals: offer order
    return best if quality(best) > 0 else HTML


def byte_range(value: str | None, size: int) -> tuple[int, int] | None:
    """A single ``bytes=`` range (RFC 9110 §14.1.2) as inclusive (start, end).

    ``None`` means serve the whole file: servers may ignore invalid or multi-range headers.
    Raises 416 with ``Content-Range: bytes */size`` when the range is unsatisfiable.
    """
    m = re.fullmatch(r"\s*bytes=(\d*)-(\d*)\s*", value or "")
    if m is None or m[1] == m[2] == "":
        return None
    unsatisfiable = web.HTTPRequestRangeNotSatisfiable(headers={"Content-Range": f"bytes */{size}"})
    if m[1] == "":  # suffix range: the last n bytes
        if int(m[2]) == 0 or size == 0:
            raise unsatisfiable
        return max(size - int(m[2]), 0), size - 1
    start, end = int(m[1]), int(m[2]) if m[2] else size - 1
    if start >= size:
        raise unsatisfiable
    if end < start:
        return None
    return start, min(end, size - 1)


class FakeIndex:
    """A PyPI-like upstream: fill it with ``add_file``, then ``await start(aiohttp_server)``."""

    def __init__(self) -> None:
        self.requests: list[LoggedRequest] = []
        self.index_url = ""  # http://127.0.0.1:PORT/simple/ once started
        self.files_url = ""  # http://127.0.0.1:PORT (no trailing slash) once started
        self.chunk_size = 64 * 1024
        self._projects: dict[str, _Project] = {}
        self._by_path: dict[str, FakeFile] = {}
        self._serial = 0
        self._servers: list[TestServer] = []
        self._closing = asyncio.Event()  # set on shutdown: cuts delays short
        self.reset_faults()
        self.index_app = self._make_app("index")
        self.index_app.router.add_get("/simple/", self._root)
        self.index_app.router.add_get("/simple/{project}/", self._detail)
        self.index_app.router.add_get("/simple/{project}", self._detail)
        self.index_app.router.add_get("/packages/{tail:.+}", self._index_file)
        # PEP 740 provenance, on the index host as PyPI has it.
        self.index_app.router.add_get(
            "/integrity/{project}/{version}/{filename}/provenance", self._provenance
        )
        self._provenances: dict[str, bytes] = {}
        self.index_app.router.add_get("/pypi/{project}/json", self._json_api)
        self.index_app.router.add_get("/pypi/{project}/{version}/json", self._json_api)
        self.files_app = self._make_app("files")
        self.files_app.router.add_get("/packages/{tail:.+}", self._file)

    # -- builder API -----------------------------------------------------------------------

    def add_file(
        self,
        project: str,
        path: Path,
        *,
        requires_python: str | None = None,
        yanked: bool | str = False,
        metadata: bool = True,
        upload_time: str | None = None,
        no_upload_time: bool = False,
    ) -> FakeFile:
        """Publish ``path`` under ``project``.

        ``requires_python=None`` takes Requires-Python from a wheel's METADATA, as PyPI takes
        it from the upload. ``yanked=""`` counts as yanked without a reason (PEP 592).
        """
        data, filename = path.read_bytes(), path.name
        if filename.endswith(".whl"):
            version = str(parse_wheel_filename(filename)[1])
            try:
                meta: bytes | None = wheel_metadata(path)
            except (zipfile.BadZipFile, KeyError, ValueError):
                meta = None  # a broken wheel, published to test how it is handled
        else:
            version, meta = str(parse_sdist_filename(filename)[1]), None
        if requires_python is None and meta is not None:
            requires_python = BytesHeaderParser().parsebytes(meta).get("Requires-Python")
        key = canonicalize_name(project)
        proj = self._projects.setdefault(key, _Project(project, {}, 0))
        if filename in proj.files:
            raise ValueError(f"{filename} already exists: PyPI never reuses a filename")
        self._serial += 1
        # PyPI's layout: the blake2b-256 of the file, split 2/2/60.
        h = hashlib.blake2b(data, digest_size=32).hexdigest()
        stamp = datetime(2024, 1, 1, tzinfo=UTC) + timedelta(minutes=self._serial)
        f = FakeFile(
            project=key,
            filename=filename,
            data=data,
            sha256=hashlib.sha256(data).hexdigest(),
            size=len(data),
            url_path=f"/packages/{h[:2]}/{h[2:4]}/{h[4:]}/{filename}",
            metadata_bytes=meta if metadata else None,
            metadata_sha256=hashlib.sha256(meta).hexdigest() if metadata and meta else None,
            yanked=True if yanked == "" else yanked,
            requires_python=requires_python,
            upload_time=None
            if no_upload_time
            else upload_time or stamp.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
            version=version,
        )
        proj.files[filename] = f
        proj.serial = self._serial
        self._by_path[f.url_path] = f
        return f

    def set_provenance(self, f: FakeFile, document: bytes) -> str:
        """Publish a PEP 740 provenance object for ``f``; returns its upstream URL."""
        self._provenances[f.filename] = document
        return self.provenance_url(f) or ""

    def provenance_url(self, f: FakeFile) -> str | None:
        if f.filename not in self._provenances:
            return None
        origin = self.index_url.removesuffix("/simple/")
        return f"{origin}/integrity/{f.project}/{f.version}/{f.filename}/provenance"

    async def _provenance(self, request: web.Request) -> web.StreamResponse:
        data = self._provenances.get(request.match_info["filename"])
        if data is None:
            raise web.HTTPNotFound()
        return web.Response(body=data, content_type="application/json")

    def set_yanked(self, project: str, filename: str, yanked: bool | str) -> FakeFile:
        """Yank or un-yank a file (PEP 592); the project's serial and ETags change."""
        proj = self._projects[canonicalize_name(project)]
        f = replace(proj.files[filename], yanked=True if yanked == "" else yanked)
        proj.files[filename] = self._by_path[f.url_path] = f
        self._serial += 1
        proj.serial = self._serial
        return f

    def replace_file(self, project: str, filename: str, data: bytes) -> FakeFile:
        """Re-upload ``filename`` with new bytes at the same URL (private and PyTorch-style
        indexes allow it; PyPI never does); hashes, size, serial and ETags change."""
        proj = self._projects[canonicalize_name(project)]
        f = replace(
            proj.files[filename], data=data, sha256=hashlib.sha256(data).hexdigest(), size=len(data)
        )
        proj.files[filename] = self._by_path[f.url_path] = f
        self._serial += 1
        proj.serial = self._serial
        return f

    def files(self, project: str) -> list[FakeFile]:
        """The project's files in page order: warehouse sorts by (version, filename)."""
        proj = self._projects[canonicalize_name(project)]
        return sorted(proj.files.values(), key=lambda f: (Version(f.version), f.filename))

    def serial(self, project: str) -> int:
        return self._projects[canonicalize_name(project)].serial

    def file_url(self, f: FakeFile) -> str:
        """The absolute URL of ``f`` on the files host."""
        return self.files_url + f.url_path

    # -- request log -----------------------------------------------------------------------

    def clear_log(self) -> None:
        self.requests.clear()

    def file_gets(self, filename: str | None = None) -> list[LoggedRequest]:
        """GETs of ``/packages/`` files on either host (the index serves them only with the
        ``relative-links`` quirk). ``.metadata`` is excluded unless ``filename`` names it."""
        out = []
        for r in self.requests:
            path = unquote(r.path.partition("?")[0])
            if r.method != "GET" or not path.startswith("/packages/"):
                continue
            name = path.rpartition("/")[2]
            if name == filename or (filename is None and not name.endswith(".metadata")):
                out.append(r)
        return out

    def json_api_gets(self, project: str | None = None) -> list[LoggedRequest]:
        """GETs of the JSON API (``/pypi/<project>[/<version>]/json``)."""
        out = []
        for r in self.requests:
            m = re.fullmatch(r"/pypi/([^/?]+)/(?:[^/?]+/)?json", r.path.partition("?")[0])
            if r.host != "index" or r.method != "GET" or m is None:
                continue
            if project is None or canonicalize_name(unquote(m[1])) == canonicalize_name(project):
                out.append(r)
        return out

    def page_gets(self, project: str | None = None) -> list[LoggedRequest]:
        """GETs of project pages, redirected ones included; ``project`` matches normalized."""
        out = []
        for r in self.requests:
            m = re.fullmatch(r"/simple/([^/?]+)/?(\?.*)?", r.path)
            if r.host != "index" or r.method != "GET" or m is None:
                continue
            if project is None or canonicalize_name(unquote(m[1])) == canonicalize_name(project):
                out.append(r)
        return out

    # -- fault knobs -----------------------------------------------------------------------

    def reset_faults(self) -> None:
        self.serve_only: Literal["json", "html"] | None = None
        self.html_quirks: set[str] = set()
        self._fail_pages: _Fault | None = None
        self._fail_files: _Fault | None = None
        self._truncate: _Fault | None = None
        self._corrupt: _Fault | None = None
        self._page_delay = self._file_delay = self._chunk_delay = 0.0
        self._gzip = self._down = False
        self._fail_page_headers: dict[str, str] = {}
        self._fail_file_headers: dict[str, str] = {}
        self._redirect_loop = False
        self._garbage: tuple[bytes, str | None] | None = None
        self._size_delta = 0
        self._gzip_files = False
        self._hold: tuple[frozenset[str], asyncio.Event] | None = None
        # False: the file host ignores Range headers (sends the whole file, as some do).
        self.ranges = True
        # Which hash pages give for files: "md5" only (an old private index), or none at all.
        self.hashes_given: Literal["sha256", "md5", "none"] = "sha256"
        self.missing_status = 404  # PyTorch's index answers 403 for a project it lacks
        self.hashless: set[str] = set()  # filenames listed without a hash (and no size)
        # Top-level JSON keys per project (PEP 708 "tracks", "alternate-locations"), also
        # sent as <meta name="pypi:KEY"> tags in HTML.
        self.page_fields: dict[str, dict[str, list[str]]] = {}
        # filename -> the sha256 the JSON API gives where it disagrees with the pages (an
        # index whose JSON API and simple pages were synced at different times).
        self.json_api_sha256: dict[str, str] = {}

    def fail_pages(
        self, status: int, times: int | None = None, headers: dict[str, str] | None = None
    ) -> None:
        """The next ``times`` requests under ``/simple/`` get ``status`` (None: until reset),
        with ``headers`` (e.g. Retry-After)."""
        self._fail_pages = _Fault(status, times)
        self._fail_page_headers = dict(headers or {})

    def fail_files(
        self, status: int, times: int | None = None, headers: dict[str, str] | None = None
    ) -> None:
        """The next ``times`` file and ``.metadata`` requests get ``status``."""
        self._fail_files = _Fault(status, times)
        self._fail_file_headers = dict(headers or {})

    def redirect_loop_pages(self, on: bool = True) -> None:
        """Every page request is redirected to itself, forever."""
        self._redirect_loop = on

    def garbage_pages(self, body: bytes, content_type: str | None = "text/html") -> None:
        """Every page request gets a 200 with ``body`` (a captive portal, a broken mirror)."""
        self._garbage = (body, content_type)

    def misreport_sizes(self, delta: int) -> None:
        """JSON pages say every file is ``delta`` bytes longer than it is."""
        self._size_delta = delta

    def serve_files_from(self, other: FakeIndex) -> None:
        """Link this index's files (published so far) on ``other``'s file host, as
        PyTorch's index links some files on PyPI's. Call after both have started."""
        self.files_url = other.files_url
        other._by_path.update(self._by_path)

    def gzip_files(self, on: bool = True) -> None:
        """Files go out gzip-encoded, as a server that ignores Accept-Encoding would send."""
        self._gzip_files = on

    def delay_pages(self, seconds: float) -> None:
        self._page_delay = seconds

    def delay_files(self, seconds: float) -> None:
        self._file_delay = seconds

    def chunk_delay(self, seconds: float) -> None:
        """Sleep before every body chunk (pages and files): headers arrive, the body trickles."""
        self._chunk_delay = seconds

    def hold_files(self, filenames: set[str]) -> asyncio.Event:
        """GETs of these files send their headers, then wait for the returned event before
        any body byte: downloads that stay open for as long as a test needs."""
        release = asyncio.Event()
        self._hold = (frozenset(filenames), release)
        return release

    def truncate_files(self, at_bytes: int, times: int | None = None) -> None:
        """Promise the full Content-Length, send ``at_bytes`` of the body, then close."""
        self._truncate = _Fault(at_bytes, times)

    def corrupt_files(self, times: int | None = None) -> None:
        """Flip one byte in the middle of file bodies: same length, wrong sha256."""
        self._corrupt = _Fault(0, times)

    def gzip_pages(self, on: bool = True) -> None:
        self._gzip = on

    def down(self) -> None:
        """Every request on both hosts gets 503 until ``up()``; ``stop()`` really closes."""
        self._down = True

    def up(self) -> None:
        self._down = False

    # -- servers ---------------------------------------------------------------------------

    async def start(self, aiohttp_server: ServerFactory | None = None) -> None:
        """Start both apps on loopback ports, via ``aiohttp_server`` when given (it then
        closes them at teardown), otherwise on our own ``TestServer``s (call ``stop()``)."""
        servers = []
        for app in (self.index_app, self.files_app):
            server = TestServer(app) if aiohttp_server is None else await aiohttp_server(app)
            await server.start_server()  # a no-op for servers the fixture already started
            servers.append(server)
        self._servers = servers
        self.index_url = str(servers[0].make_url("/simple/"))
        self.files_url = str(servers[1].make_url("/")).rstrip("/")

    async def stop(self) -> None:
        """Really close both servers: later connections are refused. Idempotent."""
        self._closing.set()
        for server in self._servers:
            await server.close()

    # -- internals -------------------------------------------------------------------------

    def _make_app(self, host: Literal["index", "files"]) -> web.Application:
        @web.middleware
        async def log_and_gate(request: web.Request, handler: Handler) -> web.StreamResponse:
            headers = {k.lower(): v for k, v in request.headers.items()}
            self.requests.append(LoggedRequest(host, request.method, request.raw_path, headers))
            if self._down:
                return web.Response(status=503, text="upstream is down")
            return await handler(request)

        async def on_prepare(request: web.Request, resp: web.StreamResponse) -> None:
            # aiohttp defaults a missing Content-Type to octet-stream in prepare(); this hook
            # runs after that and before the headers are written.
            if isinstance(resp, _NoTypeResponse):
                resp.headers.popall("Content-Type", None)

        async def on_shutdown(app: web.Application) -> None:
            self._closing.set()

        middlewares: list[Middleware] = [log_and_gate]
        app = web.Application(middlewares=middlewares)
        app.on_response_prepare.append(on_prepare)
        app.on_shutdown.append(on_shutdown)
        return app

    async def _sleep(self, seconds: float) -> None:
        # Interruptible, so a server shutting down does not wait out a long test delay.
        if seconds > 0:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._closing.wait(), seconds)

    async def _send(
        self,
        request: web.Request,
        resp: web.StreamResponse,
        body: bytes,
        cut: int | None = None,
        hold: asyncio.Event | None = None,
    ) -> web.StreamResponse:
        """Stream ``body`` in chunks; with ``cut``, stop after that many bytes and hang up;
        with ``hold``, send the headers and wait for it (or shutdown) before the body."""
        resp.content_length = len(body)
        await resp.prepare(request)
        if request.method == "HEAD":
            return resp
        if hold is not None:  # a StreamResponse has sent its headers in prepare()
            waits = [asyncio.ensure_future(e.wait()) for e in (hold, self._closing)]
            try:
                await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for waiting in waits:
                    waiting.cancel()
        sent = body if cut is None else body[:cut]
        for i in range(0, len(sent), self.chunk_size):
            await self._sleep(self._chunk_delay)
            await resp.write(sent[i : i + self.chunk_size])
        if cut is not None and request.transport is not None:
            # close() flushes what was written, so the client gets a short body under a
            # longer Content-Length, i.e. a broken download rather than a clean EOF.
            request.transport.close()
        return resp

    async def _page_fault(self, request: web.Request) -> web.Response | None:
        await self._sleep(self._page_delay)
        if self._fail_pages is not None and self._fail_pages.fire():
            return web.Response(
                status=self._fail_pages.value, text="injected", headers=self._fail_page_headers
            )
        if self._redirect_loop:
            return web.Response(status=302, headers={"Location": request.path_qs})
        if self._garbage is not None:
            body, ctype = self._garbage
            garbage = web.Response(status=200, body=body)
            if ctype is None:
                garbage.headers["Content-Type"] = ""
            else:
                garbage.content_type = ctype
            return garbage
        return None

    async def _page(
        self, request: web.Request, html_body: str, json_body: object, serial: int
    ) -> web.StreamResponse:
        forced = {"json": V1_JSON, "html": HTML}.get(self.serve_only or "")
        ctype = forced or negotiate(request.headers.get("Accept"))
        body = json.dumps(json_body).encode() if ctype == V1_JSON else html_body.encode()
        headers = {"X-PyPI-Last-Serial": str(serial)}
        if "no-etag" not in self.html_quirks:
            # warehouse: Vary: Accept, cache_control(600), md5_etag() (warehouse/api/simple.py).
            etag = f'"{hashlib.md5(body).hexdigest()}"'
            headers.update({"ETag": etag, "Cache-Control": PAGE_CACHE_CONTROL, "Vary": "Accept"})
            tags = [
                t.strip().removeprefix("W/")
                for t in request.headers.get("If-None-Match", "").split(",")
            ]
            if etag in tags or "*" in tags:
                return web.Response(status=304, headers=headers)
        if self._gzip:
            body = gzip.compress(body, mtime=0)
            headers["Content-Encoding"] = "gzip"
        if ctype != V1_JSON and "no-content-type" in self.html_quirks:
            return await self._send(request, _NoTypeResponse(headers=headers), body)
        headers["Content-Type"] = ctype + ("; charset=utf-8" if ctype == HTML else "")
        return await self._send(request, web.StreamResponse(headers=headers), body)

    async def _root(self, request: web.Request) -> web.StreamResponse:
        if (failed := await self._page_fault(request)) is not None:
            return failed
        projects = sorted(self._projects.items())
        links = "".join(
            f'    <a href="/simple/{key}/">{html.escape(p.name)}</a><br />\n' for key, p in projects
        )
        page = _HTML_PAGE.format(head="", title="Simple index", links=links, serial=self._serial)
        doc = {
            "meta": {"api-version": "1.1", "_last-serial": self._serial},
            "projects": [{"name": p.name, "_last-serial": p.serial} for _, p in projects],
        }
        return await self._page(request, page, doc, self._serial)

    async def _detail(self, request: web.Request) -> web.StreamResponse:
        if (failed := await self._page_fault(request)) is not None:
            return failed
        key = canonicalize_name(request.match_info["project"])
        if request.path != f"/simple/{key}/":
            # warehouse simple_detail: HTTPMovedPermanently to the normalized URL (PEP 503).
            raise web.HTTPMovedPermanently(f"/simple/{key}/")
        proj = self._projects.get(key)
        if proj is None:
            if self.missing_status == 403:
                raise web.HTTPForbidden(text=f"no access to {key}")
            raise web.HTTPNotFound(text=f"no project {key}")
        files = self.files(key)
        head, anchors = "", []
        if "base-href" in self.html_quirks:
            head = f'\n    <base href="{html.escape(self.files_url)}/">'
        for f in files:
            if "base-href" in self.html_quirks:
                url = f.url_path.lstrip("/")
            elif "relative-links" in self.html_quirks:
                url = posixpath.relpath(f.url_path, request.path)
            else:
                url = self.file_url(f)
            fragment = "".join(f"#{k}={v}" for k, v in self._hashes(f).items())
            attrs = f'href="{html.escape(url + fragment)}"'
            if f.requires_python is not None:
                attrs += f' data-requires-python="{html.escape(f.requires_python)}"'
            if f.yanked is not False:
                reason = f.yanked if isinstance(f.yanked, str) else ""
                attrs += f' data-yanked="{html.escape(reason)}"'
            if f.metadata_sha256 is not None:
                # PEP 714 renamed the attribute; PyPI sends both with the same value.
                attrs += f' data-dist-info-metadata="sha256={f.metadata_sha256}"'
                attrs += f' data-core-metadata="sha256={f.metadata_sha256}"'
            if (provenance := self.provenance_url(f)) is not None:
                attrs += f' data-provenance="{html.escape(provenance)}"'
            anchors.append(f"    <a {attrs}>{html.escape(f.filename)}</a><br />\n")
        title = f"Links for {key}"
        fields = self.page_fields.get(key, {})
        for field_name, values in fields.items():
            for value in values:
                head += f'\n    <meta name="pypi:{field_name}" content="{html.escape(value)}">'
        page = _HTML_PAGE.format(head=head, title=title, links="".join(anchors), serial=proj.serial)
        doc: dict[str, object] = {
            "meta": {"api-version": "1.1", "_last-serial": proj.serial},
            "name": key,
            "versions": sorted({f.version for f in files}, key=Version),  # PEP 700
            "files": [self._json_entry(f) for f in files],
            **fields,
        }
        return await self._page(request, page, doc, proj.serial)

    def _hashes(self, f: FakeFile) -> dict[str, str]:
        if f.filename in self.hashless:
            return {}
        if self.hashes_given == "md5":
            return {"md5": hashlib.md5(f.data).hexdigest()}
        return {} if self.hashes_given == "none" else {"sha256": f.sha256}

    def _json_entry(self, f: FakeFile) -> dict[str, object]:
        entry = {
            **_json_file(f, self.file_url(f)),
            "size": f.size + self._size_delta,
            **({"provenance": p} if (p := self.provenance_url(f)) else {}),
            "hashes": self._hashes(f),
        }
        if f.filename in self.hashless:
            del entry["size"]
        return entry

    async def _json_api(self, request: web.Request) -> web.StreamResponse:
        """warehouse's legacy JSON API (``legacy/api/json``): the project's latest release
        in ``info`` and ``urls``, every release in ``releases``; one release without
        ``releases`` when a version is given. Unknown names and versions are 404s."""
        if (failed := await self._page_fault(request)) is not None:
            return failed
        key = canonicalize_name(request.match_info["project"])
        proj = self._projects.get(key)
        if proj is None:
            raise web.HTTPNotFound(text='{"message": "Not Found"}', content_type="application/json")
        files = self.files(key)
        releases: dict[str, list[dict[str, object]]] = {}
        for f in files:
            entry = _json_api_file(f, self.file_url(f))
            if f.filename in self.json_api_sha256:
                entry["digests"] = {"sha256": self.json_api_sha256[f.filename]}
            releases.setdefault(f.version, []).append(entry)
        wanted = request.match_info.get("version")
        if wanted is not None and wanted not in releases:
            raise web.HTTPNotFound(text='{"message": "Not Found"}', content_type="application/json")
        # warehouse: the latest version that is not all yanked (else the latest of all).
        unyanked = [v for v in releases if any(f.yanked is False for f in files if f.version == v)]
        version = wanted or max(unyanked or list(releases), key=Version)
        shown = [f for f in files if f.version == version]
        doc: dict[str, object] = {
            "info": {
                "name": proj.name,
                "version": version,
                "summary": f"{proj.name}, a fake project",
                "requires_python": shown[0].requires_python or "",
                "yanked": all(f.yanked is not False for f in shown),
                "yanked_reason": None,
                "project_url": f"{self.index_url.removesuffix('simple/')}project/{key}/",
            },
            "last_serial": proj.serial,
            "urls": releases[version],
            "vulnerabilities": [],
        }
        if wanted is None:
            doc["releases"] = releases
        body = json.dumps(doc).encode()
        etag = f'"{hashlib.md5(body).hexdigest()}"'
        headers = {"X-PyPI-Last-Serial": str(proj.serial), "ETag": etag}
        headers["Cache-Control"] = "max-age=900, public"  # warehouse's JSON API
        if etag in request.headers.get("If-None-Match", ""):
            return web.Response(status=304, headers=headers)
        headers["Content-Type"] = "application/json"
        return await self._send(request, web.StreamResponse(headers=headers), body)

    async def _index_file(self, request: web.Request) -> web.StreamResponse:
        # Relative links only resolve on the index host, so it serves files then too.
        if "relative-links" not in self.html_quirks:
            raise web.HTTPNotFound()
        return await self._file(request)

    async def _file(self, request: web.Request) -> web.StreamResponse:
        await self._sleep(self._file_delay)
        if self._fail_files is not None and self._fail_files.fire():
            return web.Response(
                status=self._fail_files.value, text="injected", headers=self._fail_file_headers
            )
        is_meta = request.path.endswith(".metadata")
        f = self._by_path.get(request.path.removesuffix(".metadata") if is_meta else request.path)
        data = None if f is None else f.metadata_bytes if is_meta else f.data
        if f is None or data is None:
            raise web.HTTPNotFound()
        digest = f.metadata_sha256 if is_meta else f.sha256
        headers = {**FILE_HEADERS, "ETag": f'"{digest}"'}
        if request.method == "GET" and self._corrupt is not None and self._corrupt.fire():
            mid = len(data) // 2
            data = data[:mid] + bytes([data[mid] ^ 0xFF]) + data[mid + 1 :]
        rng = None
        # If-Range (RFC 9110 §13.1.5): a stale validator means "send the whole file".
        if self.ranges and request.headers.get("If-Range", headers["ETag"]) == headers["ETag"]:
            rng = byte_range(request.headers.get("Range"), len(data))
        resp = web.StreamResponse(headers=headers)
        if rng is not None:
            resp.set_status(206)
            resp.headers["Content-Range"] = f"bytes {rng[0]}-{rng[1]}/{len(data)}"
            data = data[rng[0] : rng[1] + 1]
        cut = None
        if request.method == "GET" and self._truncate is not None and self._truncate.fire():
            cut = self._truncate.value
        if self._gzip_files and request.method == "GET":
            data = gzip.compress(data, mtime=0)
            resp.headers["Content-Encoding"] = "gzip"
        hold = None
        if self._hold is not None and request.path.rpartition("/")[2] in self._hold[0]:
            hold = self._hold[1]
        return await self._send(request, resp, data, cut, hold)


def _json_file(f: FakeFile, url: str) -> dict[str, object]:
    # PEP 691 file entry, plus size and upload-time (PEP 700) and the PEP 714 rename.
    meta = {"sha256": f.metadata_sha256} if f.metadata_sha256 else False
    entry: dict[str, object] = {
        "filename": f.filename,
        "url": url,
        "hashes": {"sha256": f.sha256},
        "requires-python": f.requires_python,
        "size": f.size,
        "upload-time": f.upload_time,
        "yanked": f.yanked,
        "core-metadata": meta,
        "data-dist-info-metadata": meta,
    }
    if f.upload_time is None:
        del entry["upload-time"]
    return entry


def _json_api_file(f: FakeFile, url: str) -> dict[str, object]:
    # One file of warehouse's legacy JSON API (legacy/api/json.py _json_data), from the bytes.
    wheel = f.filename.endswith(".whl")
    return {
        "comment_text": "",
        "digests": {
            "blake2b_256": hashlib.blake2b(f.data, digest_size=32).hexdigest(),
            "md5": hashlib.md5(f.data).hexdigest(),
            "sha256": f.sha256,
        },
        "downloads": -1,
        "filename": f.filename,
        "has_sig": False,
        "md5_digest": hashlib.md5(f.data).hexdigest(),
        "packagetype": "bdist_wheel" if wheel else "sdist",
        "python_version": "py3" if wheel else "source",
        "requires_python": f.requires_python,
        "size": f.size,
        "upload_time": f.upload_time[:19] if f.upload_time else None,
        "upload_time_iso_8601": f.upload_time,
        "url": url,
        "yanked": f.yanked is not False,
        "yanked_reason": f.yanked if isinstance(f.yanked, str) else None,
    }


# Shaped like warehouse's templates/api/simple/detail.html, including the serial trailer.
_HTML_PAGE = """<!DOCTYPE html>
<html>
  <head>
    <meta name="pypi:repository-version" content="1.1">{head}
    <title>{title}</title>
  </head>
  <body>
    <h1>{title}</h1>
{links}  </body>
</html>
<!--SERIAL {serial}-->
"""
