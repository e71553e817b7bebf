"""URLs that may carry credentials: the one place they are redacted for people to read.

Index URLs may carry a token in their userinfo; it must never reach logs, errors, pages or
metrics. Everything that shows a URL to a person goes through :func:`redact_url`.
"""

import ipaddress
import re
from dataclasses import dataclass

from yarl import URL

from cacheproxy.errors import ConfigError


def redact_url(url: str | URL) -> str:
    """The URL with any password (and a token-like user name) replaced by ``***``.

    Upstream URLs may carry credentials; they must never reach logs, errors or pages.
    """
    try:
        u = url if isinstance(url, URL) else URL(url)
        if u.absolute:
            if u.password is not None:
                u = u.with_password("***")
            elif u.user is not None:
                u = u.with_user("***")
            return str(u)
        text = url if isinstance(url, str) else str(u)
    except ValueError:  # unparseable (bad port, bad IPv6 literal): yarl may fail at any step
        if isinstance(url, URL):
            return "<unparseable URL>"
        text = url
    # Unparseable, or not absolute (in "user:pw@host/simple" yarl takes "user" for a scheme):
    # hide everything up to the last "@", which covers any userinfo however a parser would
    # split it, at the price of sometimes hiding the host too.
    scheme, sep, rest = text.partition("://")
    if not sep:
        scheme, rest = "", text
    return f"{scheme}{sep}***@{rest.rpartition('@')[2]}" if "@" in rest else text


def is_loopback_host(host: str) -> bool:
    """Whether pip treats ``host`` as loopback, hence a plain-http index there as secure:
    ``localhost``, 127.0.0.0/8 and ::1 exactly (pip's ``SECURE_ORIGINS``; a ``*.localhost``
    name is not among them). A bracketed IPv6 literal is accepted as written in a URL.
    """
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.removeprefix("[").removesuffix("]")).is_loopback
    except ValueError:
        return False


# AWS bucket naming rules (3-63 characters, lower case, digits, dots and hyphens).
_BUCKET = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")


@dataclass(frozen=True)
class Location:
    """A bucket and a key prefix in it (no leading or trailing slash; may be empty)."""

    bucket: str
    prefix: str = ""

    @classmethod
    def parse(cls, url: str) -> "Location":
        """Read ``s3://BUCKET[/PREFIX]``; a ConfigError names what is wrong."""
        scheme, sep, rest = url.partition("://")
        if scheme != "s3" or not sep:
            raise ConfigError(f"object store location {url!r} must look like s3://BUCKET[/PREFIX]")
        bucket, _, prefix = rest.partition("/")
        if not _BUCKET.fullmatch(bucket) or ".." in bucket:
            raise ConfigError(f"object store location {url!r}: {bucket!r} is not a bucket name")
        if any(c in prefix for c in "?#\\") or any(
            part in {".", ".."} for part in prefix.split("/")
        ):
            raise ConfigError(f"object store location {url!r}: the prefix {prefix!r} is invalid")
        return cls(bucket, "/".join(part for part in prefix.split("/") if part))

    def key(self, name: str) -> str:
        """The object key of ``name``, a path relative to the prefix."""
        if not name or name.startswith("/") or name.endswith("/"):
            raise ValueError(f"invalid object name {name!r}")
        return f"{self.prefix}/{name}" if self.prefix else name

    def name(self, key: str) -> str:
        """The inverse of :meth:`key`."""
        return key[len(self.prefix) + 1 :] if self.prefix else key

    def __str__(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}" if self.prefix else f"s3://{self.bucket}"
