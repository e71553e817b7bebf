"""PEP 691 content negotiation and Accept-Encoding, by q-value (RFC 9110 §12.5).

Offers are ordered the way PyPI orders them, so ties (and ``*/*``) resolve to HTML, and a
missing Accept header means ``text/html``. Unlike PyPI we answer 406 when nothing offered is
acceptable (the spec allows either); ``?format=`` overrides Accept (PEP 691 "URL parameter").
"""

from enum import Enum
from functools import lru_cache


class MediaType(Enum):
    """A representation we serve: its Content-Type and its storage suffix."""

    HTML = ("text/html", "html")
    HTML_V1 = ("application/vnd.pypi.simple.v1+html", "html")
    JSON_V1 = ("application/vnd.pypi.simple.v1+json", "json")

    @property
    def content_type(self) -> str:
        return self.value[0]

    @property
    def kind(self) -> str:
        return self.value[1]


OFFERS = (MediaType.HTML, MediaType.HTML_V1, MediaType.JSON_V1)
# PEP 691: "latest" aliases, answered with the concrete v1 type.
_ALIASES = {
    "application/vnd.pypi.simple.latest+json": MediaType.JSON_V1,
    "application/vnd.pypi.simple.latest+html": MediaType.HTML_V1,
}


def _parse_q(params: list[str]) -> float:
    for param in params:
        key, _, value = param.partition("=")
        if key.strip().lower() == "q":
            try:
                q = float(value.strip())
            except ValueError:
                return 0.0
            return q if 0.0 <= q <= 1.0 else 0.0
    return 1.0


def _ranges(header: str) -> list[tuple[str, float]]:
    out = []
    for item in header.split(","):
        media, *params = item.split(";")
        media = media.strip().lower()
        if media:
            out.append((media, _parse_q(params)))
    return out


def _quality(offer: MediaType, ranges: list[tuple[str, float]]) -> float:
    """q of the most specific range matching ``offer`` (RFC 9110 §12.5.1), 0 if none."""
    best: tuple[int, float] | None = None
    main = offer.content_type.split("/")[0]
    for media, q in ranges:
        target = _ALIASES.get(media)
        if target is offer or media == offer.content_type:
            specificity = 3
        elif media == f"{main}/*":
            specificity = 2
        elif media == "*/*":
            specificity = 1
        else:
            continue
        if best is None or specificity > best[0]:
            best = (specificity, q)
    return best[1] if best else 0.0


# Clients send a handful of distinct headers, so each is parsed once (bounded: a hostile
# client varying them only evicts). Every page hit and 304 goes through these two.
@lru_cache(maxsize=256)
def choose_media_type(accept: str | None, format_param: str | None = None) -> MediaType | None:
    """The representation to serve, or None for 406 Not Acceptable."""
    if format_param:
        accept = format_param
    if accept is None or not accept.strip():
        return MediaType.HTML
    ranges = _ranges(accept)
    best: MediaType | None = None
    best_q = 0.0
    for offer in OFFERS:  # earlier offers win ties: HTML first, as PyPI does
        q = _quality(offer, ranges)
        if q > best_q:
            best, best_q = offer, q
    return best


@lru_cache(maxsize=256)
def accepts_gzip(accept_encoding: str | None) -> bool:
    """Whether the client takes ``gzip`` (explicitly or via ``*``) with q > 0."""
    if not accept_encoding:
        return False
    gzip_q: float | None = None
    star_q: float | None = None
    for coding, q in _ranges(accept_encoding):
        if coding in ("gzip", "x-gzip"):
            gzip_q = q
        elif coding == "*":
            star_q = q
    if gzip_q is not None:
        return gzip_q > 0
    return bool(star_q)
