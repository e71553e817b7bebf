"""Which upstream hosts and addresses the proxy may connect to: no SSRF through index pages.

The rule: the index's own host name (any port: PyPI-like layouts and the tests' fake index
serve files from a second port or host) and the hosts the operator names (``--internal-host``)
are trusted wherever they resolve. Any other host is judged by the addresses it resolves
to, as the connector is about to use them (:class:`PolicyResolver`), so a DNS name pointing
at loopback is refused however it is spelt. IP-literal hosts never reach a resolver in
aiohttp, so :meth:`HostPolicy.check_url` judges them, after normalising the legacy numeric
forms (``0x7f000001``, ``2130706433``, ``0177.0.0.1``, ``127.1``) that ``inet_aton`` and
``getaddrinfo`` accept. Upstream checks every redirect hop with it (upstream.py follows
redirects itself).

Through an ``HTTP_PROXY`` the proxy resolves target names, not us: names are then left to
it (the operator's egress policy); IP literals and localhost names are still refused.
"""

import ipaddress
import logging
import socket
from collections.abc import Iterable
from dataclasses import dataclass

from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import DefaultResolver
from yarl import URL

from cacheproxy.errors import UpstreamError

logger = logging.getLogger(__name__)

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
# RFC 6052 well-known NAT64 prefix: the last 32 bits are an IPv4 address reached through it.
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
# Where a connection would reach this host or a network behind it, rather than the public
# Internet: the IANA special-purpose registries (RFC 6890) minus the ranges that only
# stand for public hosts (documentation, RFC 5737 / RFC 3849), which test networks use as
# stand-ins for public servers.
_INTERNAL = tuple(
    ipaddress.ip_network(n)
    for n in (
        "0.0.0.0/8",  # "this network" (RFC 791); 0.0.0.0 reaches this host
        "10.0.0.0/8",  # RFC 1918
        "100.64.0.0/10",  # shared address space, carrier and VPN internal (RFC 6598)
        "127.0.0.0/8",  # loopback
        "169.254.0.0/16",  # link-local: cloud metadata services
        "172.16.0.0/12",  # RFC 1918
        "192.0.0.0/24",  # IETF protocol assignments (RFC 6890)
        "192.168.0.0/16",  # RFC 1918
        "198.18.0.0/15",  # benchmarking (RFC 2544), used for internal networks
        "224.0.0.0/4",  # multicast
        "240.0.0.0/4",  # reserved, and the limited broadcast address
        "::/96",  # unspecified, loopback and deprecated IPv4-compatible addresses
        "100::/64",  # discard-only (RFC 6666)
        "fc00::/7",  # unique local (RFC 4193)
        "fe80::/10",  # link-local
        "fec0::/10",  # site-local (deprecated, RFC 3879)
        "ff00::/8",  # multicast
    )
)
_LEGACY_IPV4_CHARS = frozenset("0123456789abcdefx.")


class HostRefused(UpstreamError):
    """A host or address the address policy does not allow (a 502 naming it)."""


def host_key(host: str) -> str:
    """A URL host as compared here: lower case, no brackets, no trailing dot."""
    return host.strip().strip("[]").lower().rstrip(".")


def ip_literal(host: str) -> IPAddress | None:
    """The address a host written as an IP literal stands for, in any form a resolver
    accepts (dotted quad, IPv6, or a legacy hex/octal/decimal/short IPv4); None: a name."""
    name = host_key(host)
    try:
        return ipaddress.ip_address(name.partition("%")[0])  # no IPv6 zone id
    except ValueError:
        pass
    if name and set(name) <= _LEGACY_IPV4_CHARS and name[0].isdigit():
        try:
            return ipaddress.IPv4Address(socket.inet_aton(name))
        except OSError:
            return None
    return None


def is_public(ip: IPAddress) -> bool:
    """Not an address of this host or of a private network (see _INTERNAL), judged also by
    any IPv4 address embedded in an IPv6 one (mapped, 6to4, Teredo, NAT64), which a
    connection would really reach."""
    if any(ip.version == net.version and ip in net for net in _INTERNAL):
        return False
    if isinstance(ip, ipaddress.IPv6Address):
        embedded = ip.ipv4_mapped or ip.sixtofour
        if embedded is None and ip.teredo is not None:
            embedded = ip.teredo[1]
        if embedded is None and ip in _NAT64:
            embedded = ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
        if embedded is not None:
            return is_public(embedded)
    return True


def _is_localhost_name(name: str) -> bool:
    return name == "localhost" or name.endswith(".localhost")  # RFC 6761 §6.3


@dataclass(frozen=True, slots=True)
class HostPolicy:
    """The trusted host names (compared by :func:`host_key`); everything else must be public."""

    trusted: frozenset[str]

    @classmethod
    def build(cls, index_url: URL, internal_hosts: Iterable[str] = ()) -> "HostPolicy":
        names = {host_key(index_url.host or "")} | {host_key(h) for h in internal_hosts}
        return cls(frozenset(n for n in names if n))

    def trusts(self, host: str) -> bool:
        return host_key(host) in self.trusted

    def refusal(self, url: URL) -> str | None:
        """Why ``url`` may not be fetched judging by its text alone; None: it may be tried
        (a name not trusted is then judged by its addresses in :class:`PolicyResolver`)."""
        if url.scheme not in ("http", "https") or not url.host:
            return "only http(s) URLs with a host are fetched"
        if self.trusts(url.host):
            return None
        name = host_key(url.host)
        ip = ip_literal(name)
        if ip is not None and not is_public(ip):
            return f"{url.host} is not a public address"
        if ip is None and _is_localhost_name(name):
            return f"{url.host} is not a public host"
        return None

    def allows_link(self, url: str) -> bool:
        """Whether a file link on an upstream page may be listed (see :meth:`refusal`)."""
        try:
            target = URL(url, encoded=True)
        except ValueError:
            return False
        return self.refusal(target) is None

    def check_url(self, url: URL) -> None:
        """Raises HostRefused for a URL the policy refuses by its text (every hop)."""
        if (reason := self.refusal(url)) is not None:
            raise HostRefused(f"refused to fetch from {url.host or url.scheme}: {reason}")


class PolicyResolver(AbstractResolver):
    """Resolves through ``inner`` and keeps only public addresses for hosts not trusted:
    the connector connects to nothing else. A host left with no address is refused."""

    def __init__(self, policy: HostPolicy, inner: AbstractResolver) -> None:
        self._policy = policy
        self._inner = inner

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        found = await self._inner.resolve(host, port, family)
        if self._policy.trusts(host):
            return found
        kept = [r for r in found if _public_result(r)]
        if not kept and found:
            addresses = ", ".join(sorted({r["host"] for r in found}))
            logger.warning("refused %s: it resolves to %s, not a public address", host, addresses)
            raise HostRefused(
                f"refused to fetch from {host}: it resolves to {addresses}, not a public "
                "address (name an internal file host with --internal-host)"
            )
        return kept

    async def close(self) -> None:
        await self._inner.close()


def _public_result(result: ResolveResult) -> bool:
    ip = ip_literal(result["host"])
    return ip is not None and is_public(ip)


def system_resolver() -> AbstractResolver:
    """The resolver PolicyResolver wraps in the app (tests put a fake one here)."""
    return DefaultResolver()
