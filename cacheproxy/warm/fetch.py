"""Talking to the proxy: its project pages and its files, every body checked on arrival.

Nothing is written locally: the proxy stores what passes through it. A refused connection
to the proxy itself is :class:`ProxyUnreachable` (every request would fail the same way);
anything else is one :class:`Result` for the file it concerns.
"""

import hashlib
import ipaddress
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import aiohttp
from packaging.utils import canonicalize_name
from yarl import URL

from cacheproxy.errors import IndexParseError
from cacheproxy.simple.models import DistFile
from cacheproxy.simple.parse import JSON_TYPE, parse_project_page
from cacheproxy.warm.report import Outcome, Result

CHUNK = 256 * 1024
# PEP 691 first (the proxy's own format, with sizes); PEP 503 HTML is read too.
ACCEPT_PAGES = f"{JSON_TYPE}, text/html;q=0.1"

Page = Mapping[str, DistFile]  # a project page's files by filename


class ProxyUnreachable(Exception):
    """The proxy itself cannot be connected to: every request would fail the same way."""


@dataclass(frozen=True)
class Job:
    """One file to fetch through the proxy."""

    name: str  # the filename
    url: URL
    required: Mapping[str, str]  # every one of these must match (a lock's hashes)
    allowed: frozenset[tuple[str, str]] | None  # one of these must match (requirements)
    size: int | None
    origin: str
    known_sha256: str | None  # a sha256 the input accepts: a proxy HIT with it is enough


def is_loopback(host: str | None) -> bool:
    """``localhost``, 127.0.0.0/8 or ::1: a proxy on this machine."""
    if host is None:
        return False
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def make_session(index_url: URL, jobs: int) -> aiohttp.ClientSession:
    """The client for the proxy: no total timeout (wheels can be gigabytes)."""
    return aiohttp.ClientSession(
        timeout=aiohttp.ClientTimeout(total=None, connect=30, sock_read=300),
        connector=aiohttp.TCPConnector(limit=jobs + 2),
        # A corporate HTTP(S)_PROXY is for the outside world, not for a proxy on loopback.
        trust_env=not is_loopback(index_url.host),
        raise_for_status=False,
    )


def short(hexdigest: str) -> str:
    return hexdigest[:12] + "…"


def first_line(text: str) -> str:
    return next((ln.strip() for ln in text.splitlines() if ln.strip()), "")[:300]


def unreachable(e: BaseException, what: URL) -> ProxyUnreachable:
    host = f"{what.host}:{what.port}" if what.port else str(what.host)
    why = None
    if isinstance(e, aiohttp.ClientConnectorError):
        # "Connection refused", not asyncio's "Connect call failed ('127.0.0.1', 9)".
        errno = e.os_error.errno
        why = os.strerror(errno) if errno else e.os_error.strerror
    return ProxyUnreachable(
        f"cannot reach the proxy at {host}: {why or str(e) or type(e).__name__}"
    )


async def check_reachable(session: aiohttp.ClientSession, index_url: URL) -> None:
    """Fail fast, once, when nothing answers at the proxy's address.

    Any HTTP answer will do: only a connection that cannot be made is refused here. The
    origin is asked, not the index root, which a proxy may have to fetch from upstream.

    Raises:
        ProxyUnreachable: the connection was refused, timed out, or broke off at once.
    """
    try:
        async with session.head(index_url.origin(), allow_redirects=False):
            pass
    except (aiohttp.ClientConnectionError, TimeoutError) as e:
        raise unreachable(e, index_url) from None


async def fetch_page(session: aiohttp.ClientSession, index_url: URL, name: str) -> Page | str:
    """The project page through the proxy (which stores it), or why it failed."""
    url = index_url.join(URL(f"{name}/"))
    try:
        async with session.get(url, headers={"Accept": ACCEPT_PAGES}) as resp:
            if resp.status != 200:
                return f"index page: HTTP {resp.status}: {first_line(await resp.text())}"
            body = await resp.read()
            page = parse_project_page(
                body, resp.headers.get("Content-Type"), resp.url, canonicalize_name(name)
            )
    except aiohttp.ClientConnectorError as e:
        raise unreachable(e, url) from None
    except (aiohttp.ClientError, TimeoutError) as e:
        return f"index page: {type(e).__name__}: {e}".rstrip(": ")
    except IndexParseError as e:
        return f"index page: {e}"
    return {f.filename: f for f in page.files}


def _verify(job: Job, digests: Mapping[str, str], size: int) -> str | None:
    if job.size is not None and size != job.size:
        return f"size {size} bytes, {job.origin} says {job.size}"
    for alg, expected in job.required.items():
        if digests.get(alg) != expected:
            return f"{alg} mismatch: {job.origin} says {short(expected)}, got {short(digests[alg])}"
    if job.allowed is not None and not any(digests.get(a) == h for a, h in job.allowed):
        sha = digests["sha256"]
        return f"sha256 {short(sha)} is not one of the hashes in {job.origin}"
    return None


async def _cached_by_head(
    session: aiohttp.ClientSession, job: Job, advance: Callable[[int], None]
) -> Result | str | None:
    """A HIT whose ETag is the expected sha256 proves the proxy has these bytes.

    The proxy stores files under their verified sha256 and says so in the ETag. Returns
    the result when that settles it, else the HEAD's X-Cache (or None).
    """
    async with session.head(job.url) as head:
        cache = head.headers.get("X-Cache")
        if (
            head.status == 200
            and cache == "HIT"
            and head.headers.get("ETag") == f'"{job.known_sha256}"'
        ):
            size = head.content_length
            advance(size or 0)
            return Result(Outcome.CACHED, job.name, size=size, cache="HIT")
    return cache


async def fetch_file(
    session: aiohttp.ClientSession, job: Job, advance: Callable[[int], None]
) -> Result:
    """Fetch one file through the proxy and check what arrives."""
    head_cache = None
    try:
        if job.known_sha256 is not None:
            got = await _cached_by_head(session, job, advance)
            if isinstance(got, Result):
                return got
            head_cache = got
        async with session.get(job.url) as resp:
            if resp.status != 200:
                reason = f"HTTP {resp.status}: {first_line(await resp.text(errors='replace'))}"
                return Result(Outcome.FAILED, job.name, reason=reason.rstrip(": "))
            algs = {"sha256", *job.required, *(a for a, _ in job.allowed or ())}
            hashers = {alg: hashlib.new(alg) for alg in algs}
            size = 0
            async for chunk in resp.content.iter_chunked(CHUNK):
                for h in hashers.values():
                    h.update(chunk)
                size += len(chunk)
                advance(len(chunk))
            # A HEAD for a file of unknown size (metadata) starts the proxy's download, so
            # the GET may already be a HIT: the HEAD's MISS is the truth about the cache.
            cache = "MISS" if head_cache == "MISS" else resp.headers.get("X-Cache", "")
    except aiohttp.ClientConnectorError as e:
        raise unreachable(e, job.url) from None
    except aiohttp.ClientPayloadError:
        return Result(Outcome.FAILED, job.name, reason="transfer broken off (the proxy gave up)")
    except (aiohttp.ClientError, TimeoutError) as e:
        return Result(Outcome.FAILED, job.name, reason=f"{type(e).__name__}: {e}".rstrip(": "))
    bad = _verify(job, {alg: h.hexdigest() for alg, h in hashers.items()}, size)
    if bad is not None:
        return Result(Outcome.FAILED, job.name, reason=bad, size=size)
    outcome = Outcome.CACHED if cache == "HIT" else Outcome.FETCHED
    return Result(outcome, job.name, size=size, cache=cache or "no X-Cache")
