"""The exception hierarchy. Handlers map these to HTTP statuses; the CLI to exit codes.

CacheProxyError
├── ConfigError                 invalid settings (CLI exit code 2)
├── IndexParseError             an upstream page we cannot read (also a ValueError)
├── NotFound                    upstream says the project or file does not exist (404)
├── HeldBack                    the release-age gate holds this file back (403)
├── IntegrityError              downloaded bytes differ from the index's size or hash
├── StorageFailed               the cache cannot store a file (disk full, I/O error)
├── SharedStoreError            the object store replicas share failed or is unreachable
└── UpstreamError               upstream could not give us an answer
    ├── UpstreamUnavailable     connect/DNS failure or timeout (502, 504 for timeouts)
    ├── UpstreamStatusError     upstream answered with an unexpected status (502)
    └── OfflineMiss             offline mode and nothing cached (a page: 404, see handlers)
"""


class CacheProxyError(Exception):
    """Base of every error cacheproxy raises on purpose."""


class ConfigError(CacheProxyError):
    """A setting is missing or invalid; the message names it."""


class IndexParseError(CacheProxyError, ValueError):
    """An upstream index page could not be parsed."""


class NotFound(CacheProxyError):
    """Upstream has no such project or file."""


class HeldBack(CacheProxyError):
    """The release-age gate does not hand this file out yet; the message says until when."""


class IntegrityError(CacheProxyError):
    """A download did not match the size or sha256 the index promised."""


class StorageFailed(CacheProxyError):
    """Writing to the cache failed; the file is served from upstream without storing it."""


class SharedStoreError(CacheProxyError):
    """The object store shared by replicas failed (store/objectstore.py); one line."""

    def __init__(self, message: str, *, timeout: bool = False) -> None:
        super().__init__(message)
        self.timeout = timeout


class UpstreamError(CacheProxyError):
    """Upstream could not be asked, or did not answer usefully."""

    status = 502


class UpstreamUnavailable(UpstreamError):
    """Connecting, resolving or reading from upstream failed."""

    def __init__(self, message: str, *, timeout: bool = False) -> None:
        super().__init__(message)
        self.timeout = timeout
        self.status = 504 if timeout else 502


class UpstreamStatusError(UpstreamError):
    """Upstream answered with a status we cannot serve (5xx, 429, ...)."""

    def __init__(
        self, message: str, upstream_status: int, retry_after: float | None = None
    ) -> None:
        super().__init__(message)
        self.upstream_status = upstream_status
        self.retry_after = retry_after  # seconds, from upstream's Retry-After (429/503)


class OfflineMiss(UpstreamError):
    """Offline mode was asked for something that is not in the cache."""

    status = 504
