"""URLs that may carry credentials: the one place they are redacted for people to read.

Index URLs may carry a token in their userinfo; it must never reach logs, errors, pages or
metrics. Everything that shows a URL to a person goes through :func:`redact_url`.
"""

import ipaddress

from yarl import URL


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
