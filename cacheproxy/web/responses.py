"""Responses that send stored bytes: sendfile from an open file, or a followed download.

aiohttp's FileResponse derives its own ETag from mtime and size and applies its own
If-Range/If-None-Match rules; ours are content hashes decided by the handler, so this is
the small part of FileResponse we need (prepare headers, then ``sendfile``).

A hit's bytes go out by one ``sendfile(2)`` call made at once when the socket takes them
all (:func:`sendfile_now`; a page body, a ``.metadata``, most wheels), and only the rest
by ``loop.sendfile``, which registers the socket with the selector and waits for one loop
turn even when nothing is left to send: two epoll_ctl calls, a pause and resume of
reading and a loop turn per hit (bench/hits.py: +0.2 ms per small file over nginx).
"""

import asyncio
import logging
import os
from asyncio import constants as asyncio_constants
from typing import IO

from aiohttp import web
from aiohttp.abc import AbstractStreamWriter
from aiohttp.helpers import must_be_empty_body

from cacheproxy.errors import IndexParseError, UpstreamError, UpstreamStatusError
from cacheproxy.simple.negotiate import OFFERS, MediaType, accepts_gzip, choose_media_type
from cacheproxy.web.ranges import RangeNotSatisfiable, if_range_matches, parse_range

logger = logging.getLogger(__name__)

_FALLBACK_CHUNK = 256 * 1024
# The transports loop.sendfile itself sends from with os.sendfile: plain sockets of the
# selector loop (base_events.BaseEventLoop.sendfile reads the same attribute). TLS
# transports and other loops' say otherwise, or nothing.
_NATIVE = getattr(getattr(asyncio_constants, "_SendfileMode", None), "TRY_NATIVE", object())


def sendfile_now(transport: asyncio.BaseTransport, fd: int, offset: int, count: int) -> int:
    """Send what the socket takes at once of ``count`` bytes of ``fd`` from ``offset``, by
    one ``sendfile(2)`` call with no trip through the event loop; the bytes sent.

    0 when this transport is not one loop.sendfile would send natively from (TLS, another
    loop), still has bytes of its own queued (they go first), or the call fails: the
    caller's ``loop.sendfile`` then does it all, with its usual errors. Nothing else runs
    on the loop during the call, so nothing can write between.
    """
    if (
        getattr(transport, "_sendfile_compatible", None) is not _NATIVE
        or not isinstance(transport, asyncio.WriteTransport)
        or transport.is_closing()
        or transport.get_write_buffer_size()
    ):
        return 0
    sock = transport.get_extra_info("socket")
    if sock is None:
        return 0
    try:
        return os.sendfile(sock.fileno(), fd, offset, count)
    except OSError:  # EAGAIN, a peer gone, a file sendfile cannot read: loop.sendfile's
        return 0


class SendfileResponse(web.StreamResponse):
    """Send ``count`` bytes of an open file from ``offset`` with zero copies in Python."""

    def __init__(
        self,
        fobj: IO[bytes],
        *,
        offset: int,
        count: int,
        status: int = 200,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(status=status, headers=headers)
        self._fobj = fobj
        self._offset = offset
        self._count = count
        self.content_length = count

    async def prepare(self, request: web.BaseRequest) -> AbstractStreamWriter | None:
        try:
            writer = await super().prepare(request)
            if self._count == 0 or must_be_empty_body(request.method, self.status):
                await super().write_eof()
                return writer
            transport = request.transport
            if transport is None:
                raise ConnectionResetError("connection lost")
            sent = sendfile_now(transport, self._fobj.fileno(), self._offset, self._count)
            if sent < self._count:
                offset, count = self._offset + sent, self._count - sent
                try:
                    await asyncio.get_running_loop().sendfile(transport, self._fobj, offset, count)
                except NotImplementedError:  # TLS or an exotic transport: copy in chunks
                    await self._copy(writer, offset, count)
            await super().write_eof()
            return writer
        finally:
            self._fobj.close()

    async def _copy(self, writer: AbstractStreamWriter | None, pos: int, left: int) -> None:
        assert writer is not None
        fd = self._fobj.fileno()
        while left > 0:
            chunk = os.pread(fd, min(_FALLBACK_CHUNK, left), pos)
            if not chunk:
                raise ConnectionResetError("file shrank while sending")
            await writer.write(chunk)
            pos += len(chunk)
            left -= len(chunk)


def send_stored(
    request: web.Request,
    stored: IO[bytes] | bytes,
    etag: str,
    headers: dict[str, str],
    size: int | None = None,
) -> web.StreamResponse:
    """A stored file (open in ``stored``, closed by the response, and sent by sendfile; or
    its bytes, still on their way to the disk): a 304 for its ETag, a 206 for a single
    satisfiable Range whose If-Range matches (RFC 9110 §14.2, §13.1.5), a 416 for an
    unsatisfiable one, else the whole file. ``headers`` are the file's own (they get
    ``ETag``); ``size``: the open file's, when the caller has it."""
    if size is None:
        size = len(stored) if isinstance(stored, bytes) else os.fstat(stored.fileno()).st_size
    headers["ETag"] = etag
    if etag_matches(request.headers.get("If-None-Match"), etag):
        _close(stored)
        return web.Response(status=304, headers=headers)
    try:
        byte_range = (
            parse_range(request.headers.get("Range"), size)
            if if_range_matches(request.headers.get("If-Range"), etag)
            else None
        )
    except RangeNotSatisfiable:
        _close(stored)
        headers["Content-Range"] = f"bytes */{size}"
        return text_error(416, f"range not satisfiable for a {size}-byte file", headers)
    offset, count, status = 0, size, 200
    if byte_range is not None:
        headers["Content-Range"] = byte_range.content_range(size)
        offset, count, status = byte_range.start, byte_range.length, 206
    if isinstance(stored, bytes):
        return web.Response(body=stored[offset : offset + count], status=status, headers=headers)
    return SendfileResponse(stored, offset=offset, count=count, status=status, headers=headers)


def _close(stored: IO[bytes] | bytes) -> None:
    if not isinstance(stored, bytes):
        stored.close()


def representation(request: web.Request) -> tuple[MediaType, bool] | web.Response:
    """The page representation a client asked for: its media type (PEP 691 negotiation,
    ``?format=`` first) and whether it takes gzip; or the 406 to answer instead."""
    # Form decoding turns the "+" of "…v1+json" into a space; media types have no spaces.
    # request.query builds a MultiDict: only worth it when there is a query string.
    fmt = None
    if request.query_string:
        fmt = request.query.get("format", "").replace(" ", "+") or None
    media = choose_media_type(request.headers.get("Accept"), fmt)
    if media is None:
        offered = ", ".join(m.content_type for m in OFFERS)
        return text_error(406, f"not acceptable; this index serves {offered}")
    return media, accepts_gzip(request.headers.get("Accept-Encoding"))


def text_error(status: int, message: str, headers: dict[str, str] | None = None) -> web.Response:
    """The one shape of every error: a status and a one-line plain-text reason."""
    line = message.splitlines()[0] if message else web.Response(status=status).reason
    return web.Response(status=status, text=f"{line}\n", headers=headers)


def etag_matches(header: str | None, etag: str) -> bool:
    # RFC 9110 §13.1.2: weak comparison for If-None-Match.
    if header is None:
        return False
    if header == etag:  # what revalidating clients send: the one tag they were given
        return True
    if header.strip() == "*":
        return True
    bare = etag.removeprefix("W/")
    return any(tag.strip().removeprefix("W/") == bare for tag in header.split(","))


def upstream_error(e: UpstreamError | IndexParseError) -> web.Response:
    if isinstance(e, IndexParseError):
        return text_error(502, f"upstream page could not be read: {e}", {"X-Cache": "MISS"})
    status = e.status
    # An upstream 401/403 is passed through as such: the client (with netrc or keyring
    # credentials) can act on it; a 502 would hide that the index wants a login.
    if isinstance(e, UpstreamStatusError) and e.upstream_status in (401, 403):
        status = e.upstream_status
    return text_error(status, str(e), {"X-Cache": "MISS"})
