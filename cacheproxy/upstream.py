"""The upstream client: index pages and file streams over one aiohttp ClientSession.

Every aiohttp failure is mapped to an :mod:`cacheproxy.errors` type with a one-line,
credential-free reason, so callers decide "stale, 502 or 504" without knowing aiohttp.
"""

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

import aiohttp
from yarl import URL

from cacheproxy import __version__
from cacheproxy.errors import UpstreamStatusError, UpstreamUnavailable
from cacheproxy.settings import Settings, redact_url

logger = logging.getLogger(__name__)

# uv's Accept header: JSON first (standards 2.5: it carries size, upload-time and yanked
# without HTML-escaping problems), HTML from simpler indexes.
PAGE_ACCEPT = (
    "application/vnd.pypi.simple.v1+json, application/vnd.pypi.simple.v1+html;q=0.2, "
    "text/html;q=0.01"
)
# A project page bigger than this is not an index page (protects memory from garbage).
MAX_PAGE_BYTES = 256 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class PageResponse:
    status: int  # 200, 304 or 404
    url: URL  # final URL after redirects: relative links resolve against it
    body: bytes = b""
    content_type: str | None = None
    etag: str | None = None
    last_modified: str | None = None
    serial: str | None = None


def _describe(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return text.splitlines()[0][:200]


def make_session(settings: Settings) -> aiohttp.ClientSession:
    """The app's one ClientSession: no cookies, proxies from HTTP(S)_PROXY/NO_PROXY."""
    return aiohttp.ClientSession(
        cookie_jar=aiohttp.DummyCookieJar(),
        trust_env=True,  # honour HTTP_PROXY / HTTPS_PROXY / NO_PROXY
        connector=aiohttp.TCPConnector(limit=100, limit_per_host=32, ttl_dns_cache=300),
        headers={"User-Agent": f"cacheproxy/{__version__}"},
    )


class Upstream:
    """Fetches from the configured index and the file hosts its pages name."""

    def __init__(self, session: aiohttp.ClientSession, settings: Settings) -> None:
        self._session = session
        self._settings = settings
        self.index_url = settings.upstream
        self._auth = (
            aiohttp.BasicAuth(settings.upstream.user or "", settings.upstream.password or "")
            if settings.upstream.user
            else None
        )
        self._page_timeout = aiohttp.ClientTimeout(
            total=settings.page_timeout, sock_connect=settings.connect_timeout
        )
        self._file_timeout = aiohttp.ClientTimeout(
            total=None, sock_connect=settings.connect_timeout, sock_read=settings.read_timeout
        )

    def page_url(self, project: str | None) -> URL:
        base = self.index_url.with_user(None).with_password(None)
        return base if project is None else base / project / ""

    def _auth_for(self, url: URL) -> aiohttp.BasicAuth | None:
        # Credentials from the upstream URL go to the upstream's own host only.
        if self._auth and url.host == self.index_url.host and url.user is None:
            return self._auth
        return None

    async def fetch_page(
        self, url: URL, *, etag: str | None = None, last_modified: str | None = None
    ) -> PageResponse:
        """GET an index page, conditionally when we hold a copy.

        Raises:
            UpstreamUnavailable: connect, DNS, read failure or timeout.
            UpstreamStatusError: any status other than 200, 304, 404 and 410.
        """
        headers = {"Accept": PAGE_ACCEPT}
        if etag:
            headers["If-None-Match"] = etag
        if last_modified:
            headers["If-Modified-Since"] = last_modified
        shown = redact_url(url)
        try:
            async with self._session.get(
                url, headers=headers, timeout=self._page_timeout, auth=self._auth_for(url)
            ) as resp:
                if resp.status == 304:
                    return PageResponse(status=304, url=resp.url)
                if resp.status in (404, 410):
                    return PageResponse(status=404, url=resp.url)
                if resp.status != 200:
                    raise UpstreamStatusError(
                        f"upstream answered {resp.status} for {shown}", resp.status
                    )
                if (resp.content_length or 0) > MAX_PAGE_BYTES:
                    raise UpstreamStatusError(f"upstream page too large: {shown}", 200)
                # aiohttp has decoded any Content-Encoding; its length headers no longer
                # describe these bytes and are not copied anywhere (standards 7.1).
                parts: list[bytes] = []
                total = 0
                async for chunk in resp.content.iter_any():
                    total += len(chunk)
                    if total > MAX_PAGE_BYTES:
                        raise UpstreamStatusError(f"upstream page too large: {shown}", 200)
                    parts.append(chunk)
                body = b"".join(parts)
                return PageResponse(
                    status=200,
                    url=resp.url,
                    body=body,
                    content_type=resp.headers.get("Content-Type"),
                    etag=resp.headers.get("ETag"),
                    last_modified=resp.headers.get("Last-Modified"),
                    serial=resp.headers.get("X-PyPI-Last-Serial"),
                )
        except TimeoutError as e:
            raise UpstreamUnavailable(f"timed out fetching {shown}", timeout=True) from e
        except aiohttp.TooManyRedirects as e:
            raise UpstreamUnavailable(f"too many redirects fetching {shown}") from e
        except (aiohttp.ClientError, OSError) as e:
            raise UpstreamUnavailable(f"cannot fetch {shown}: {_describe(e)}") from e

    @asynccontextmanager
    async def open_file(
        self, url: str, *, range_header: str | None = None
    ) -> AsyncIterator[aiohttp.ClientResponse]:
        """Stream a file: yields the 200 (or 206 for a Range) response, body unread.

        Raises:
            UpstreamUnavailable: connect, DNS failure or timeout before the headers.
            UpstreamStatusError: any other status (404 included: the caller maps it).
        """
        target = URL(url, encoded=True)  # exactly as the index wrote it (standards 1.7)
        # pip and uv fetch files with identity encoding (standards 5.1, 7.2).
        headers = {"Accept-Encoding": "identity", "Accept": "*/*"}
        if range_header:
            headers["Range"] = range_header
        shown = redact_url(target)
        try:
            resp = await self._session.get(
                target, headers=headers, timeout=self._file_timeout, auth=self._auth_for(target)
            )
        except TimeoutError as e:
            raise UpstreamUnavailable(f"timed out fetching {shown}", timeout=True) from e
        except aiohttp.TooManyRedirects as e:
            raise UpstreamUnavailable(f"too many redirects fetching {shown}") from e
        except (aiohttp.ClientError, OSError) as e:
            raise UpstreamUnavailable(f"cannot fetch {shown}: {_describe(e)}") from e
        try:
            ok = (200, 206) if range_header else (200,)
            if resp.status not in ok:
                raise UpstreamStatusError(
                    f"upstream answered {resp.status} for {shown}", resp.status
                )
            yield resp
        finally:
            # Closes the connection when the body was not read to the end.
            resp.release()

    @staticmethod
    def body_length(resp: aiohttp.ClientResponse) -> int | None:
        """Content-Length, when it describes the bytes we will read (not a coded length)."""
        if resp.headers.get("Content-Encoding", "identity").lower() not in ("identity", ""):
            return None
        return resp.content_length
