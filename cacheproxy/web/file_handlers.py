"""HTTP handlers for distribution files and their PEP 658 metadata.

A hit is a record lookup, an open and a sendfile. A miss joins (or starts) the one
download of the file and streams from its growing temporary; see downloads.py.
"""

import asyncio
import contextlib
import logging
import os
from collections.abc import AsyncGenerator
from typing import IO

from aiohttp import web

from cacheproxy.errors import (
    HeldBack,
    IndexParseError,
    NotFound,
    StorageFailed,
    UpstreamError,
    UpstreamStatusError,
)
from cacheproxy.proxy.downloads import Download, Span, read_span
from cacheproxy.proxy.files import Resolved
from cacheproxy.simple.layout import METADATA_SUFFIX, PREFIX, BadPath, file_key
from cacheproxy.web.index_counts import count_index
from cacheproxy.web.keys import metrics_key, proxy_key, settings_key
from cacheproxy.web.ranges import ByteRange, RangeNotSatisfiable, if_range_matches, parse_range
from cacheproxy.web.responses import send_stored, text_error, upstream_error

logger = logging.getLogger(__name__)

# Files never change at a given URL on a PyPI-style index (PyPI refuses to reuse a
# filename): cacheable for a year and immutable (RFC 8246).
FILE_CACHE_CONTROL = "max-age=31536000, immutable, public"
# A Range starting this far beyond what the running download has written goes upstream.
FORWARD_RANGE_AHEAD = 1024 * 1024


def _file_headers(resolved: Resolved, etag: str | None, cache: str) -> dict[str, str]:
    headers = {
        "Content-Type": "application/octet-stream",  # never a Content-Encoding (5.1)
        "Accept-Ranges": "bytes",
        "Cache-Control": FILE_CACHE_CONTROL,
        "X-Cache": cache,
    }
    if etag:
        headers["ETag"] = etag
    return headers


def _file_etag(resolved: Resolved, size: int) -> str:
    # A stable, strong validator per content for pip's resume (--resume-retries sends
    # If-Range with it; RFC 9110 §13.1.5).
    sha = resolved.spec.sha256
    return f'"{sha}"' if sha else f'"{size:x}-{resolved.spec.final.name[:16]}"'


async def package_file(request: web.Request) -> web.StreamResponse:
    try:
        key = file_key(_file_rest(request.raw_path))
    except BadPath as e:
        return text_error(400, str(e))
    response = await _package_file(request, key)
    if (index := request.app[proxy_key].indexes.for_file(key)) is not None:
        route = "metadata" if key.endswith(METADATA_SUFFIX) else "file"
        count_index(request, index.name, route, response)
    return response


def _file_rest(raw_path: str) -> str:
    """The raw path under ``/packages/`` (or ``/index/<name>/packages/``, the same file)."""
    path = raw_path.split("?", 1)[0]
    if path.startswith("/index/"):
        path = "/" + path.split("/", 3)[3]
    return path[len(PREFIX) :]


async def _package_file(request: web.Request, key: str) -> web.StreamResponse:
    files = request.app[proxy_key].files
    try:
        resolved = await files.resolve(key)
    except NotFound as e:
        return text_error(404, str(e))
    except HeldBack as e:
        return text_error(403, str(e))
    except (UpstreamError, IndexParseError) as e:
        return upstream_error(e)
    if resolved.data is not None:
        # Metadata read from its wheel a moment ago, not yet on disk. A HIT, as when it is:
        # the page's wheel is what the proxy fetches and caches; this is read from it.
        etag = _file_etag(resolved, len(resolved.data))
        headers = _file_headers(resolved, None, "HIT")
        return send_stored(request, resolved.data, etag, headers, len(resolved.data))
    # A download can end between "not in the store" and "join it": look again (bounded).
    for _ in range(3):
        try:
            fobj = await files.open_stored(resolved)
        except FileNotFoundError:
            try:
                return await _serve_miss(request, resolved)
            except FileNotFoundError:
                continue
        return _serve_hit(request, resolved, fobj)
    return text_error(503, f"{resolved.filename} changed state while opening; retry")


def _serve_hit(request: web.Request, resolved: Resolved, fobj: IO[bytes]) -> web.StreamResponse:
    size = os.fstat(fobj.fileno()).st_size
    etag = _file_etag(resolved, size)
    resp = send_stored(request, fobj, etag, _file_headers(resolved, None, "HIT"), size)
    if request.method != "HEAD" and resp.status in (200, 206):
        # Bytes this replica's disk served (metrics.py "tier_bytes"); copies from the
        # shared store are counted as "store" by the download that makes them.
        request.app[metrics_key].add("tier_bytes", "local", value=resp.content_length or 0)
    return resp


async def _serve_miss(request: web.Request, resolved: Resolved) -> web.StreamResponse:
    if request.app[settings_key].offline:
        # A 404, as for a page offline mode does not have: pip and uv stop at once on it
        # (uv retried a 504 for seconds), and the body and X-Cache-Reason say why.
        reason = (
            f"offline mode: {resolved.filename} is not cached "
            "(the proxy runs with --offline and asks upstream nothing)"
        )
        return text_error(404, reason, {"X-Cache": "MISS", "X-Cache-Reason": reason[:200]})
    spec = resolved.spec
    if request.method == "HEAD" and spec.size is not None:
        # Answer from the index's size (PEP 700); no download just for a HEAD.
        headers = _file_headers(resolved, _file_etag(resolved, spec.size), "MISS")
        headers["Content-Length"] = str(spec.size)
        return web.Response(status=200, headers=headers)
    downloads = request.app[proxy_key].downloads
    try:
        download, reader, _new = await downloads.join(spec)
    except FileNotFoundError:
        raise  # stored a moment ago: the caller opens it
    except OSError as e:  # no room even for a temporary (ENOSPC): relay, store nothing
        logger.error("cannot start storing %s (%s); relaying from upstream", spec.filename, e)
        return await _relay(request, resolved, None, 0, None)
    forwarded = await _maybe_forward_range(request, resolved, download)
    if forwarded is not None:
        os.close(reader)
        return forwarded
    try:
        await asyncio.shield(download.started)
    except UpstreamStatusError as e:
        os.close(reader)
        if e.upstream_status in (404, 410):
            return text_error(404, f"{resolved.filename}: upstream has no such file")
        return upstream_error(e)
    except UpstreamError as e:
        os.close(reader)
        return upstream_error(e)
    except Exception as e:  # an integrity failure before the first byte
        os.close(reader)
        return text_error(502, str(e))
    size = download.size
    range_header = request.headers.get("Range")
    if range_header and size is not None and request.method != "HEAD":
        try:
            byte_range = parse_range(range_header, size)
        except RangeNotSatisfiable:
            os.close(reader)
            headers = _file_headers(resolved, None, "MISS")
            headers["Content-Range"] = f"bytes */{size}"
            return text_error(416, f"range not satisfiable for a {size}-byte file", headers)
        if byte_range is not None and if_range_matches(
            request.headers.get("If-Range"), _file_etag(resolved, size)
        ):
            return await _stream(request, resolved, download, reader, byte_range)
    return await _stream(request, resolved, download, reader, None)


async def _maybe_forward_range(
    request: web.Request, resolved: Resolved, download: Download
) -> web.StreamResponse | None:
    """Forward a Range far ahead of the running download to upstream (RFC 9110 §14.2).

    uv reads a wheel's zip directory (its last bytes) before deciding to download it; on a
    cold multi-GB wheel, waiting for our download to get there would stall resolution.
    The full download keeps running in the background and is verified as usual; the
    client verifies the whole file it installs. None: not applicable, or upstream cannot.
    """
    size = resolved.spec.size
    if size is None or request.method == "HEAD" or "Range" not in request.headers:
        return None
    try:
        byte_range = parse_range(request.headers["Range"], size)
    except RangeNotSatisfiable:
        return None
    if byte_range is None or byte_range.start < download.written + FORWARD_RANGE_AHEAD:
        return None
    if not if_range_matches(request.headers.get("If-Range"), _file_etag(resolved, size)):
        return None
    wanted = byte_range.content_range(size)
    headers = _file_headers(resolved, _file_etag(resolved, size), "MISS")
    headers["Content-Range"] = wanted
    resp = web.StreamResponse(status=206, headers=headers)
    resp.content_length = byte_range.length
    downloads = request.app[proxy_key].downloads
    try:
        async with downloads.upstream_range(
            resolved.spec, byte_range.start, byte_range.end, wanted
        ) as chunks:
            if chunks is None:
                return None  # upstream ignores ranges: follow our own download instead
            await resp.prepare(request)
            sent = 0
            async for chunk in chunks:
                sent += len(chunk)
                await resp.write(chunk)
            if sent != byte_range.length:
                raise ConnectionResetError("short range from upstream")
            await resp.write_eof()
            return resp
    except UpstreamError:
        return None
    except Exception as e:  # after prepare(): break the transfer off, never "complete"
        if not resp.prepared:
            return None
        logger.info("aborting forwarded range of %s: %s", resolved.filename, e)
        _break_off(request, resp)
        return resp


async def _stream(
    request: web.Request,
    resolved: Resolved,
    download: Download,
    reader: int,
    byte_range: ByteRange | None,
) -> web.StreamResponse:
    """Stream from the growing temporary while the download runs (design: stream to all)."""
    size = download.size
    # A copy from the store replicas share asked upstream nothing: a hit for the team.
    outcome = "HIT" if download.from_store is not None else "MISS"
    headers = _file_headers(
        resolved, _file_etag(resolved, size) if size is not None else None, outcome
    )
    resp = web.StreamResponse(status=206 if byte_range else 200, headers=headers)
    if byte_range is not None and size is not None:
        resp.headers["Content-Range"] = byte_range.content_range(size)
        resp.content_length = byte_range.length
    elif size is not None:
        resp.content_length = size
    start, end = (byte_range.start, byte_range.end + 1) if byte_range else (0, None)
    spans: AsyncGenerator[Span] = download.spans(start, end)
    sent = 0
    try:
        await resp.prepare(request)
        if request.method == "HEAD":
            return resp
        sender = _SpanSender(request, resp, reader)
        async for offset, length in spans:
            await sender.send(offset, length)
            sent += length
    except StorageFailed:
        # The cache could not keep it (disk full): the client still gets its file, the
        # rest of it straight from upstream; nothing is stored.
        with contextlib.suppress(Exception):
            await spans.aclose()
        return await _relay(request, resolved, resp, start + sent, end)
    except Exception as e:
        # The download failed (or the client left). Break the connection off: with
        # Content-Length set the client sees a short body, never a "complete" bad file.
        logger.info("aborting transfer of %s: %s", resolved.filename, e)
        _break_off(request, resp)
        return resp
    finally:
        with contextlib.suppress(Exception):
            await spans.aclose()
        os.close(reader)
    await resp.write_eof()
    return resp


class _SpanSender:
    """Sends spans of a download's temporary to one client: by ``loop.sendfile`` (the
    kernel copies; no Python in the byte path, as for hits), else by pread + write
    (TLS, or an event loop without sendfile such as uvloop)."""

    def __init__(self, request: web.Request, resp: web.StreamResponse, reader: int) -> None:
        self._resp = resp
        self._reader = reader
        self._transport = request.transport
        # Not closed here: the reader fd belongs to _stream.
        self._file = os.fdopen(reader, "rb", buffering=0, closefd=False)
        # asyncio has no native sendfile for TLS and, with fallback=False, raises a plain
        # RuntimeError rather than SendfileNotAvailableError (base_events.sendfile): an
        # HTTPS miss broke off every transfer (tests/test_tls.py).
        self._sendfile = (
            self._transport is not None and self._transport.get_extra_info("sslcontext") is None
        )

    async def send(self, offset: int, length: int) -> None:
        if self._sendfile and self._transport is not None:
            try:
                await asyncio.get_running_loop().sendfile(
                    self._transport, self._file, offset, length, fallback=False
                )
                return
            except (NotImplementedError, asyncio.SendfileNotAvailableError):
                self._sendfile = False
        for data in read_span(self._reader, offset, length):
            await self._resp.write(data)


async def _relay(
    request: web.Request,
    resolved: Resolved,
    resp: web.StreamResponse | None,
    offset: int,
    end: int | None,
) -> web.StreamResponse:
    """Pipe bytes ``offset..end`` of the file from upstream to the client, storing nothing.

    ``resp`` is the response already under way (None: start a whole-file 200). Only used
    when the cache cannot store (a full disk: the client still gets its file); the client
    checks the hash of what it installs, as it does for any index.
    """
    downloads = request.app[proxy_key].downloads
    try:
        async with downloads.relay(resolved.spec, offset, end) as relay:
            if resp is None:
                resp = web.StreamResponse(status=200, headers=_file_headers(resolved, None, "MISS"))
                if relay.size is not None:
                    resp.content_length = relay.size
                await resp.prepare(request)
            async for chunk in relay.chunks:
                await resp.write(chunk)
        await resp.write_eof()
        return resp
    except Exception as e:
        if resp is None or not resp.prepared:
            if isinstance(e, UpstreamError):
                return upstream_error(e)
            return text_error(502, f"cannot relay {resolved.filename}: {e}")
        logger.info("aborting relay of %s: %s", resolved.filename, e)
        _break_off(request, resp)
        return resp


def _break_off(request: web.Request, resp: web.StreamResponse) -> None:
    """End a transfer under way without its last bytes: with Content-Length set, the
    client sees a short body, never a "complete" bad file."""
    resp.force_close()
    if request.transport is not None:
        request.transport.close()
