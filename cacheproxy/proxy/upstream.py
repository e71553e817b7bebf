"""The upstream client: index pages and file streams over two aiohttp ClientSessions.

Pages and PEP 658 metadata go over the session the app makes (:func:`make_session`);
distribution files over a second one with its own connection pool, so pages and metadata
never queue behind big downloads, and at most ``max_downloads`` big bodies stream at once.
Both resolve through :class:`~cacheproxy.proxy.addresses.PolicyResolver`, and redirects are
followed here hop by hop, so every address connected to passes the address policy and
credentials go to the index's own origin only.

Every aiohttp failure is mapped to an :mod:`cacheproxy.errors` type with a one-line,
credential-free reason, so callers decide "stale, 502 or 504" without knowing aiohttp.
"""

import asyncio
import base64
import email.utils
import itertools
import logging
import random
import time
import urllib.request
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

import aiohttp
from yarl import URL

from cacheproxy import __version__
from cacheproxy.errors import UpstreamError, UpstreamStatusError, UpstreamUnavailable
from cacheproxy.figures.metrics import Metrics
from cacheproxy.proxy import addresses
from cacheproxy.proxy.addresses import HostPolicy, PolicyResolver
from cacheproxy.settings import Settings
from cacheproxy.simple.negotiate import MediaType
from cacheproxy.urls import redact_url

logger = logging.getLogger(__name__)

# uv's Accept header: JSON first (PEP 691/700: it carries size, upload-time and yanked
# without HTML-escaping problems), HTML from simpler indexes.
PAGE_ACCEPT = (
    f"{MediaType.JSON_V1.content_type}, {MediaType.HTML_V1.content_type};q=0.2, "
    f"{MediaType.HTML.content_type};q=0.01"
)
# A project page bigger than this is not an index page (protects memory from garbage).
MAX_PAGE_BYTES = 256 * 1024 * 1024
# Statuses a second try can fix (pip's own retry list has the same spirit).
RETRYABLE_STATUSES = frozenset({429, 500, 502, 503, 504})
_FIRST_BACKOFF = 0.25
# Never wait longer than this between attempts, whatever Retry-After says: a client waits.
MAX_RETRY_WAIT = 5.0

# aiohttp's own default; each hop is checked against the address policy.
MAX_REDIRECTS = 10
REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
# A file body at most this long needs no download slot: small wheels and sdists must not
# wait behind big downloads. Bigger (or of unknown length), it waits for one of the
# ``max_downloads`` slots at most DOWNLOAD_SLOT_WAIT seconds, then fails with a 503.
SMALL_FILE_BYTES = 1024 * 1024
DOWNLOAD_SLOT_WAIT = 30.0
# Connections the file pool may open beyond max_downloads: small files and downloads
# waiting for a slot (they hold their connection while they wait).
SPARE_FILE_CONNECTIONS = 32

T = TypeVar("T")


class DownloadsBusy(UpstreamError):
    """Every download slot stayed taken for DOWNLOAD_SLOT_WAIT seconds."""

    status = 503


@dataclass(frozen=True, slots=True)
class PageResponse:
    status: int  # 200, 304 or 404
    url: URL  # final URL after redirects: relative links resolve against it
    body: bytes = b""
    content_type: str | None = None
    etag: str | None = None
    last_modified: str | None = None
    serial: str | None = None


def file_url_allowed(url: str, index_url: URL, internal_hosts: tuple[str, ...] = ()) -> bool:
    """Whether a file link on an upstream page may be listed (no SSRF through pages).

    Links must be http(s). The index's own host name and ``internal_hosts`` are trusted; an
    IP literal (in any spelling) or localhost name elsewhere must be public. A DNS name
    passes here and is judged by the addresses it resolves to when it is fetched
    (:mod:`cacheproxy.proxy.addresses`).
    """
    return HostPolicy.build(index_url, internal_hosts).allows_link(url)


def retry_after_seconds(value: str | None) -> float | None:
    """Retry-After as seconds from now (RFC 9110 §10.2.3: delay-seconds or an HTTP-date)."""
    if not value:
        return None
    value = value.strip()
    if value.isascii() and value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        return None
    return max(0.0, when.timestamp() - time.time())


def _status_error(resp: aiohttp.ClientResponse, shown: str) -> UpstreamStatusError:
    return UpstreamStatusError(
        f"upstream answered {resp.status} for {shown}",
        resp.status,
        retry_after_seconds(resp.headers.get("Retry-After")),
    )


def _describe(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return text.splitlines()[0][:200]


def _basic(user: str, password: str | None) -> str:
    # RFC 7617 basic auth, built by hand: aiohttp 3.14 deprecates BasicAuth.
    return "Basic " + base64.b64encode(f"{user}:{password or ''}".encode()).decode()


class EnvProxies:
    """HTTP_PROXY / HTTPS_PROXY / NO_PROXY (any case), read once when the app starts.

    Done here rather than with aiohttp's ``trust_env``, which also looks up ~/.netrc in a
    worker thread for every request without credentials (3% of the loop in a cold uv
    install, bench/profile.py cold-uv) and would send what it finds there to any host a
    page links to. Credentials in a proxy URL become a Proxy-Authorization header.
    """

    def __init__(self) -> None:
        found = urllib.request.getproxies_environment()
        self._proxies = {k: URL(v) for k, v in found.items() if k in ("http", "https")}
        self._bypass: dict[str, bool] = {}

    def for_url(self, url: URL) -> tuple[URL | None, dict[str, str] | None]:
        """The proxy to reach ``url`` through, and the headers for it (None, None: direct)."""
        proxy = self._proxies.get(url.scheme)
        if proxy is None or url.host is None:
            return None, None
        bypass = self._bypass.get(url.host)
        if bypass is None:
            bypass = bool(urllib.request.proxy_bypass(url.host))  # NO_PROXY, as aiohttp
            self._bypass[url.host] = bypass  # a handful of hosts: the index and file hosts
        if bypass:
            return None, None
        if proxy.user is None:
            return proxy, None
        headers = {"Proxy-Authorization": _basic(proxy.user, proxy.password)}
        return proxy.with_user(None).with_password(None), headers

    def hosts(self) -> list[str]:
        """The proxies' host names: the operator's own, trusted wherever they resolve."""
        return [p.host for p in self._proxies.values() if p.host]


def host_policy(settings: Settings) -> HostPolicy:
    """The address policy for ``settings``: the index host, --internal-host and any proxy."""
    return HostPolicy.build(settings.upstream, (*settings.internal_hosts, *EnvProxies().hosts()))


def _session(settings: Settings, *, limit: int, limit_per_host: int) -> aiohttp.ClientSession:
    # No cookies, no environment (see EnvProxies); every name resolved through the policy.
    resolver = PolicyResolver(host_policy(settings), addresses.system_resolver())
    connector = aiohttp.TCPConnector(
        limit=limit, limit_per_host=limit_per_host, ttl_dns_cache=300, resolver=resolver
    )
    return aiohttp.ClientSession(
        cookie_jar=aiohttp.DummyCookieJar(),
        trust_env=False,
        connector=connector,
        headers={"User-Agent": f"cacheproxy/{__version__}"},
    )


def make_session(settings: Settings) -> aiohttp.ClientSession:
    """The app's session for index pages and metadata (files: Upstream's own session)."""
    return _session(settings, limit=100, limit_per_host=32)


class Upstream:
    """Fetches from the configured index and the file hosts its pages name."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        settings: Settings,
        metrics: Metrics,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self._session = session
        self._settings = settings
        self._metrics = metrics
        self.sleep = sleep  # the retry backoff waits here (tests pass a recording one)
        self.index_url = settings.upstream
        self._authorization: str | None = None
        if settings.upstream.user is not None:
            self._authorization = _basic(settings.upstream.user, settings.upstream.password)
        self._proxies = EnvProxies()
        self._policy = host_policy(settings)
        # No per-host limit: downloads are bounded by the slots, not by queueing.
        self._file_session = _session(
            settings, limit=settings.max_downloads + SPARE_FILE_CONNECTIONS, limit_per_host=0
        )
        self._slots = asyncio.Semaphore(settings.max_downloads)
        self._file_timeout = aiohttp.ClientTimeout(
            total=None,
            connect=DOWNLOAD_SLOT_WAIT,  # waiting for a pooled connection included
            sock_connect=settings.connect_timeout,
            sock_read=settings.read_timeout,
        )

    async def close(self) -> None:
        """Close the file session (the page session belongs to the app)."""
        await self._file_session.close()

    def may_fetch(self, url: str) -> bool:
        return self._policy.allows_link(url)

    def page_url(self, project: str | None) -> URL:
        base = self.index_url.with_user(None).with_password(None)
        return base if project is None else base / project / ""

    def _request_args(self, url: URL, headers: dict[str, str]) -> dict[str, Any]:
        """Headers (upstream auth included) and the environment's proxy for ``url``."""
        headers = self._with_auth(url, headers)
        proxy, proxy_headers = self._proxies.for_url(url)
        if proxy is not None and proxy_headers and url.scheme == "http":
            # Plain http is forwarded, not tunnelled: the proxy reads the request's own
            # headers (aiohttp sends proxy_headers only with a CONNECT).
            headers = {**headers, **proxy_headers}
        return {"headers": headers, "proxy": proxy, "proxy_headers": proxy_headers}

    def _with_auth(self, url: URL, headers: dict[str, str]) -> dict[str, str]:
        # Credentials from the upstream URL go to the upstream's own origin only (scheme,
        # host and port, RFC 6454), never to a file host its pages name, even one on
        # another port of the same host.
        if self._authorization and url.user is None and _origin(url) == _origin(self.index_url):
            return {**headers, "Authorization": self._authorization}
        return headers

    async def _get(
        self,
        session: aiohttp.ClientSession,
        url: URL,
        headers: dict[str, str],
        limits: aiohttp.ClientTimeout,
    ) -> aiohttp.ClientResponse:
        """GET ``url``, following redirects here so that every hop is checked against the
        address policy and gets its own headers (credentials for the index origin only).

        Raises:
            HostRefused: a hop the address policy refuses.
            UpstreamUnavailable: more than MAX_REDIRECTS redirects.
            aiohttp.ClientError, OSError, TimeoutError: as aiohttp raises them.
        """
        first = url
        for _ in range(MAX_REDIRECTS + 1):
            self._policy.check_url(url)
            resp = await session.get(
                url, timeout=limits, allow_redirects=False, **self._request_args(url, headers)
            )
            location = resp.headers.get("Location")
            if resp.status not in REDIRECT_STATUSES or not location:
                return resp
            resp.release()
            try:
                url = url.join(URL(location)).with_fragment(None)
            except ValueError as e:
                raise UpstreamUnavailable(f"bad redirect from {redact_url(url)}") from e
        raise UpstreamUnavailable(f"too many redirects fetching {redact_url(first)}")

    async def fetch_page(
        self, url: URL, *, etag: str | None = None, last_modified: str | None = None
    ) -> PageResponse:
        """GET an index page, conditionally when we hold a copy; retried within the
        page timeout when the failure is worth retrying.

        Raises:
            UpstreamUnavailable: connect, DNS, read failure or timeout.
            UpstreamStatusError: any status other than 200, 304, 404 and 410.
        """
        headers = {"Accept": PAGE_ACCEPT}
        if etag:
            headers["If-None-Match"] = etag
        if last_modified:
            headers["If-Modified-Since"] = last_modified

        async def once(remaining: float | None) -> PageResponse:
            started = time.monotonic()
            try:
                resp = await self._fetch_page_once(url, headers, remaining)
            except UpstreamError as e:
                self._metrics.upstream("page", "error", time.monotonic() - started)
                self._metrics.error(str(e))
                raise
            outcome = {200: "ok", 304: "not_modified"}.get(resp.status, "not_found")
            self._metrics.upstream("page", outcome, time.monotonic() - started)
            return resp

        return await self._retrying(redact_url(url), once, self._settings.page_timeout)

    async def _fetch_page_once(
        self, url: URL, headers: dict[str, str], remaining: float | None
    ) -> PageResponse:
        shown = redact_url(url)
        timeout = aiohttp.ClientTimeout(
            total=remaining or self._settings.page_timeout,
            sock_connect=self._settings.connect_timeout,
        )
        try:
            async with await self._get(self._session, url, headers, timeout) as resp:
                if resp.status == 304:
                    return PageResponse(status=304, url=resp.url)
                if resp.status in (404, 410):
                    return PageResponse(status=404, url=resp.url)
                if resp.status != 200:
                    raise _status_error(resp, shown)
                if (resp.content_length or 0) > MAX_PAGE_BYTES:
                    raise UpstreamStatusError(f"upstream page too large: {shown}", 200)
                # aiohttp has decoded any Content-Encoding; its length headers no longer
                # describe these bytes and are not copied anywhere (aiohttp decodes gzip).
                parts: list[bytes] = []
                total = 0
                async for chunk in resp.content.iter_any():
                    total += len(chunk)
                    if total > MAX_PAGE_BYTES:
                        raise UpstreamStatusError(f"upstream page too large: {shown}", 200)
                    parts.append(chunk)
                return PageResponse(
                    status=200,
                    url=resp.url,
                    body=b"".join(parts),
                    content_type=resp.headers.get("Content-Type"),
                    etag=resp.headers.get("ETag"),
                    last_modified=resp.headers.get("Last-Modified"),
                    serial=resp.headers.get("X-PyPI-Last-Serial"),
                )
        except TimeoutError as e:
            raise UpstreamUnavailable(f"timed out fetching {shown}", timeout=True) from e
        except (aiohttp.ClientError, OSError) as e:
            raise UpstreamUnavailable(f"cannot fetch {shown}: {_describe(e)}") from e

    async def _retrying(
        self,
        what: str,
        attempt: Callable[[float | None], Awaitable[T]],
        budget: float | None,
    ) -> T:
        """Run ``attempt`` (given the seconds left) with retries and exponential backoff.

        Only failures that a second try can fix are retried: connect/DNS errors and
        resets, 429 and 5xx. A Retry-After longer than we would wait, or past the budget,
        fails at once so the caller can serve stale instead of holding the client.
        """
        loop = asyncio.get_running_loop()
        deadline = None if budget is None else loop.time() + budget
        delay = _FIRST_BACKOFF
        for n in itertools.count():
            remaining = None if deadline is None else deadline - loop.time()
            try:
                return await attempt(remaining)
            except UpstreamStatusError as e:
                if e.upstream_status not in RETRYABLE_STATUSES or n >= self._settings.retries:
                    raise
                err: UpstreamError = e
                wait = e.retry_after if e.retry_after is not None else delay
            except UpstreamUnavailable as e:
                if n >= self._settings.retries or (e.timeout and deadline is not None):
                    raise  # a timeout has spent the budget already
                err, wait = e, delay
            too_late = deadline is not None and loop.time() + wait >= deadline
            if wait > MAX_RETRY_WAIT or too_late:
                raise err
            logger.info("retrying %s in %.2fs: %s", what, wait, err)
            await self.sleep(wait * (1 + random.random() * 0.2))  # jitter: no herds
            delay = min(delay * 2, MAX_RETRY_WAIT)
        raise AssertionError("unreachable")  # pragma: no cover

    @asynccontextmanager
    async def open_file(
        self, url: str, *, range_header: str | None = None
    ) -> AsyncIterator[aiohttp.ClientResponse]:
        """Stream a file: yields the 200 (or 206 for a Range) response, body unread.

        Opening is retried like a page fetch (no total budget: files may be huge).

        Raises:
            UpstreamUnavailable: connect, DNS failure or timeout before the headers.
            UpstreamStatusError: any other status (404 included: the caller maps it).
            HostRefused: the address policy refuses the host or a redirect hop (502).
            DownloadsBusy: a big body found no download slot in time (503).
        """
        target = URL(url, encoded=True)  # exactly as the index wrote it (signed URLs, %2B)
        # pip and uv fetch files with identity encoding: the bytes hashed are the file's.
        headers = {"Accept-Encoding": "identity", "Accept": "*/*"}
        if range_header:
            headers["Range"] = range_header
        ok = (200, 206) if range_header else (200,)

        async def once(_remaining: float | None) -> aiohttp.ClientResponse:
            started = time.monotonic()
            try:
                resp = await self._open_once(target, headers, ok)
            except UpstreamError as e:
                missing = isinstance(e, UpstreamStatusError) and e.upstream_status in (404, 410)
                outcome = "not_found" if missing else "error"
                self._metrics.upstream("file", outcome, time.monotonic() - started)
                if not missing:
                    self._metrics.error(str(e))
                raise
            self._metrics.upstream("file", "ok", time.monotonic() - started)
            return resp

        resp = await self._retrying(redact_url(target), once, None)
        try:
            async with self._download_slot(resp, target):
                yield resp
        finally:
            # Closes the connection when the body was not read to the end.
            resp.release()

    @asynccontextmanager
    async def _download_slot(
        self, resp: aiohttp.ClientResponse, target: URL
    ) -> AsyncIterator[None]:
        """Hold one of the ``max_downloads`` slots while a big body streams (none for a
        small one); wait for a slot at most DOWNLOAD_SLOT_WAIT seconds.

        Raises:
            DownloadsBusy: no slot came free in time.
        """
        length = self.body_length(resp)
        if _is_metadata(target) or (length is not None and length <= SMALL_FILE_BYTES):
            yield
            return
        try:
            await asyncio.wait_for(self._slots.acquire(), DOWNLOAD_SLOT_WAIT)
        except TimeoutError:
            limit = self._settings.max_downloads
            raise DownloadsBusy(
                f"{limit} downloads are running (--max-downloads); "
                f"{redact_url(target)} was not started, retry later"
            ) from None
        try:
            yield
        finally:
            self._slots.release()

    async def _open_once(
        self, target: URL, headers: dict[str, str], ok: tuple[int, ...]
    ) -> aiohttp.ClientResponse:
        shown = redact_url(target)
        # PEP 658 metadata is small and asked for while resolving: the page pool.
        session = self._session if _is_metadata(target) else self._file_session
        try:
            resp = await self._get(session, target, headers, self._file_timeout)
        except TimeoutError as e:
            raise UpstreamUnavailable(f"timed out fetching {shown}", timeout=True) from e
        except (aiohttp.ClientError, OSError) as e:
            raise UpstreamUnavailable(f"cannot fetch {shown}: {_describe(e)}") from e
        if resp.status not in ok:
            resp.release()
            raise _status_error(resp, shown)
        return resp

    @staticmethod
    def body_length(resp: aiohttp.ClientResponse) -> int | None:
        """Content-Length, when it describes the bytes we will read (not a coded length)."""
        if resp.headers.get("Content-Encoding", "identity").lower() not in ("identity", ""):
            return None
        return resp.content_length


def _origin(url: URL) -> tuple[str, str, int | None]:
    return url.scheme, (url.host or "").lower().rstrip("."), url.port


def _is_metadata(url: URL) -> bool:
    return url.raw_path.endswith(".metadata")  # PEP 658: the file's URL + ".metadata"
