"""The status page for people at ``/``: one self-contained HTML document from the stats dict.

The page is rendered here, on the server, from what ``collect_stats`` returns (the same dict
``/-/stats`` serves as JSON). It loads nothing: CSS and the chart (SVG) are inline, fonts
are the system's, there is no script. So it works with no network beyond the proxy itself,
behind any reverse proxy and under any Content-Security-Policy, and it reloads itself every
30 s with a meta refresh.

Every value is read through a tolerant accessor: a missing key, a ``None`` or a wrong type
shows as "—" or an empty state, never as an exception, because a status page that fails is
worst exactly when something else is already wrong. Every string is HTML-escaped: project
names and error messages come from upstream URLs and pages and are untrusted.
"""

import html
import math
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote, urlsplit

from cacheproxy import units
from cacheproxy.figures.index_stats import indexes_section
from cacheproxy.urls import is_loopback_host

REFRESH_SECONDS = 30
BUCKET_SECONDS = 300  # the width of one history bucket (collect_stats counts in 5 minutes)
# A chart of a few minutes of history would stretch three bars over the whole width: the
# window is at least an hour, so a young proxy's bars stand at the right, the hour before
# its start empty.
MIN_WINDOW_BUCKETS = 12
NO_VALUE = "—"


def render_status_page(stats: Mapping[str, Any], *, now: float | None = None) -> bytes:
    """The whole page as UTF-8 HTML. ``now`` (seconds since the epoch) is for tests."""
    now = time.time() if now is None else now
    version = _text(_get(stats, "version"))
    body = "\n".join(
        [
            _header(stats, now),
            _key_figures(stats),
            indexes_section(_get(stats, "indexes")),
            _history_section(_get(stats, "history")),
            _top_projects_section(_get(stats, "top_projects")),
            _errors_section(_get(stats, "recent_errors")),
            _gate_section(_get(stats, "gate")),
            _hosted_section(_get(stats, "hosted")),
            _usage_section(_get(stats, "index_url")),
        ]
    )
    title = f"cacheproxy {version}" if version else "cacheproxy"
    # The empty data: icon keeps browsers from asking for /favicon.ico (a 404 in the log)
    # every time the page reloads itself.
    page = f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta http-equiv="refresh" content="{REFRESH_SECONDS}">
<meta name="color-scheme" content="light dark">
<link rel="icon" href="data:,">
<title>{_e(title)} · status</title>
<style>{_CSS}</style>
</head>
<body>
<main>
{body}
</main>
</body>
</html>
"""
    return page.encode("utf-8")


# --- reading the dict -------------------------------------------------------------------


def _get(stats: Any, *path: str) -> Any:
    value: Any = stats
    for key in path:
        if not isinstance(value, Mapping):
            return None
        value = value.get(key)
    return value


def _number(value: Any) -> float | None:
    # bool is an int to Python, but a True where a count belongs is a bug, not a 1.
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


def _count(value: Any) -> int:
    number = _number(value)
    return max(0, int(number)) if number is not None else 0


def _text(value: Any) -> str:
    return "" if value is None else str(value)


def _mappings(value: Any) -> list[Mapping[str, Any]]:
    if not isinstance(value, Iterable) or isinstance(value, str | bytes | Mapping):
        return []
    return [item for item in value if isinstance(item, Mapping)]


def _e(value: Any) -> str:
    return html.escape(_text(value), quote=True)


# --- formatting -------------------------------------------------------------------------


def format_bytes(value: float | None) -> str:
    """Decimal units (units.py), or the placeholder when there is no figure."""
    return NO_VALUE if value is None else units.format_bytes(value)


def format_duration(seconds: float | None) -> str:
    """Two units at most, rounded down: ``42 s``, ``12 min 5 s``, ``3 h 12 min``, ``2 d 3 h``."""
    if seconds is None or seconds < 0:
        return NO_VALUE
    if seconds == 0:
        return "0 s"
    if seconds < 10:
        return f"{seconds:.1f} s"
    whole = int(seconds)
    days, rest = divmod(whole, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days} d {hours} h"
    if hours:
        return f"{hours} h {minutes} min"
    if minutes:
        return f"{minutes} min {secs} s"
    return f"{secs} s"


def format_percent(ratio: float | None) -> str:
    return NO_VALUE if ratio is None else f"{ratio * 100:.1f}%"


def format_count(value: int) -> str:
    return f"{value:,}"


def _compact(value: float) -> str:
    """Axis labels: ``40``, ``1.5k``, ``2M``."""
    for threshold, suffix in ((1e6, "M"), (1e3, "k")):
        if value >= threshold:
            return f"{value / threshold:.1f}".removesuffix(".0") + suffix
    return f"{value:g}"


def _utc(timestamp: Any, fmt: str) -> str | None:
    number = _number(timestamp)
    if number is None:
        return None
    try:
        return datetime.fromtimestamp(number, UTC).strftime(fmt)
    except (OverflowError, OSError, ValueError):
        return None


def format_iso(timestamp: Any) -> str:
    return _utc(timestamp, "%Y-%m-%dT%H:%M:%SZ") or NO_VALUE


def format_clock(timestamp: Any) -> str:
    return _utc(timestamp, "%H:%M") or NO_VALUE


def _plural(n: int, word: str, plural: str | None = None) -> str:
    return f"{format_count(n)} {word if n == 1 else plural or word + 's'}"


# --- header and key figures -------------------------------------------------------------


def _header(stats: Mapping[str, Any], now: float) -> str:
    version = _text(_get(stats, "version"))
    upstream = _text(_get(stats, "upstream"))
    cache_dir = _text(_get(stats, "cache_dir"))
    workers = _number(_get(stats, "workers"))
    uptime = format_duration(_number(_get(stats, "uptime_seconds")))
    offline = _get(stats, "offline") is True
    upstream_html = f'<code class="wrap">{_e(upstream or NO_VALUE)}</code>'
    if offline:  # configured, but not in use: say so where people look for it
        upstream_html = f'<strong class="offline">offline</strong>, not contacted ({upstream_html})'
    facts = [
        ("Upstream", upstream_html),
        ("Up", uptime),
        ("Workers", format_count(int(workers)) if workers is not None else NO_VALUE),
        ("Cache", f'<code class="wrap">{_e(cache_dir or NO_VALUE)}</code>'),
    ]
    facts_html = "".join(f"<div><dt>{dt}</dt><dd>{dd}</dd></div>" for dt, dd in facts)
    version_html = f'<span class="version">{_e(version)}</span>' if version else ""
    banner = (
        '<p class="banner" role="status"><strong>Offline mode.</strong> Upstream is not'
        " contacted: only what is cached is served; anything else gets a 404 saying so.</p>"
        if offline
        else ""
    )
    return f"""<header>
<div class="title"><h1>cacheproxy</h1>{version_html}
<span class="updated">Updated {format_clock(now)} UTC · reloads every {REFRESH_SECONDS} s\
</span></div>
{banner}<dl class="facts">{facts_html}</dl>
</header>"""


@dataclass(frozen=True)
class _Segment:
    css_class: str
    value: float
    label: str


def _bar(segments: list[_Segment], label: str) -> str:
    """A horizontal bar of proportions; an empty track when all are zero."""
    total = sum(s.value for s in segments)
    parts = "".join(
        f'<span class="{s.css_class}" style="width:{s.value / total * 100:.2f}%"'
        f' title="{_e(s.label)}"></span>'
        for s in segments
        if total > 0 and s.value > 0
    )
    return f'<div class="bar" role="img" aria-label="{_e(label)}">{parts}</div>'


def _card(label: str, value: str, *details: str, css_class: str = "") -> str:
    klass = f"card {css_class}".strip()
    rest = "".join(details)
    return (
        f'<div class="{klass}"><div class="label">{label}</div>'
        f'<div class="value">{value}</div>{rest}</div>'
    )


def _key_figures(stats: Mapping[str, Any]) -> str:
    hits = _count(_get(stats, "requests", "hits"))
    misses = _count(_get(stats, "requests", "misses"))
    stale = _count(_get(stats, "requests", "stale"))
    errors = _count(_get(stats, "requests", "errors"))
    total = _count(_get(stats, "requests", "total"))
    ratio = _number(_get(stats, "hit_ratio"))

    ratio_card = _card(
        "Hit ratio",
        format_percent(ratio),
        _bar(
            [
                _Segment("hit", hits, f"{hits} hits"),
                _Segment("stale", stale, f"{stale} stale"),
                _Segment("miss", misses, f"{misses} misses"),
            ],
            "hits, stale and misses",
        ),
        '<div class="sub">'
        + (
            f"{_plural(hits, 'hit')} · {_plural(misses, 'miss', 'misses')}"
            f" · {format_count(stale)} stale"
            if ratio is not None
            else "no page or file requests yet"
        )
        + "</div>",
    )

    error_share = f" ({errors / total * 100:.1f}%)" if total and errors else ""
    requests_card = _card(
        "Requests",
        format_count(total),
        f'<div class="sub{" bad" if errors else ""}">{_plural(errors, "error")}{error_share}</div>',
        # The counters live in the cache directory and survive restarts: "since start"
        # would be wrong the first time the proxy is restarted (figures/metrics.py).
        '<div class="sub">pages, files and metadata, all time (kept across restarts)</div>',
    )

    from_cache = _number(_get(stats, "bytes", "from_cache"))
    from_upstream = _number(_get(stats, "bytes", "from_upstream"))
    sent = (from_cache or 0) + (from_upstream or 0)
    cache_share = f" · {from_cache / sent * 100:.0f}% from cache" if from_cache and sent else ""
    bytes_card = _card(
        "Served from cache",
        format_bytes(from_cache),
        _bar(
            [
                _Segment("hit", from_cache or 0, "from cache"),
                _Segment("miss", from_upstream or 0, "from upstream"),
            ],
            "bytes from cache and from upstream",
        ),
        f'<div class="sub">{format_bytes(from_upstream)} from upstream{cache_share}</div>',
    )

    saved_card = _card(
        "Time saved",
        format_duration(_number(_get(stats, "time_saved_seconds"))),
        '<div class="sub">estimate: bytes from cache at the upstream speed measured on'
        " misses</div>",
    )

    size = _number(_get(stats, "cache", "size_bytes"))
    limit = _number(_get(stats, "cache", "max_size_bytes"))
    if limit is not None and limit > 0:
        used = (size or 0) / limit
        # Eviction can lag behind a burst of downloads: the text says how far over the limit
        # the cache is, the bar stops at full.
        fill = min(1.0, used)
        level = " full" if used >= 0.9 else ""
        limit_html = (
            f'<div class="bar{level}" role="img" aria-label="{used * 100:.1f}% of the limit">'
            f'<span class="used" style="width:{fill * 100:.2f}%"></span></div>'
            f'<div class="sub">of {format_bytes(limit)} limit · {used * 100:.1f}% used</div>'
        )
    else:
        limit_html = '<div class="bar"></div><div class="sub">no limit</div>'
    files = _count(_get(stats, "cache", "files"))
    pages = _count(_get(stats, "cache", "pages"))
    evictions = _count(_get(stats, "cache", "evictions"))
    cache_card = _card(
        "Cache size",
        format_bytes(size),
        limit_html,
        f'<div class="sub">{_plural(files, "file")} · {_plural(pages, "page")}'
        f" · {_plural(evictions, 'eviction')}</div>",
    )

    in_flight = _count(_get(stats, "downloads", "in_flight"))
    waiters = _count(_get(stats, "downloads", "coalesced_waiters"))
    downloads_card = _card(
        "Downloads in flight",
        format_count(in_flight),
        f'<div class="sub">{_plural(waiters, "coalesced waiter")}: clients sharing a'
        " download another one started</div>",
    )
    cards = [ratio_card, requests_card, bytes_card, saved_card, cache_card, downloads_card]
    return (
        '<section aria-label="Key figures"><div class="grid">' + "".join(cards) + "</div></section>"
    )


# --- history chart ----------------------------------------------------------------------


@dataclass(frozen=True)
class _Bucket:
    time: float
    hits: int
    misses: int
    stale: int

    @property
    def total(self) -> int:
        return self.hits + self.misses + self.stale


# SVG user units; the SVG scales to the column's width (the text with it).
_W, _H = 720, 220
_LEFT, _RIGHT, _TOP, _BOTTOM = 44, 10, 10, 26


def _nice_step(raw: float) -> float:
    """The smallest 1, 2, 2.5 or 5 times a power of ten at least ``raw``: readable ticks."""
    magnitude = 10.0 ** math.floor(math.log10(raw))
    for factor in (1.0, 2.0, 2.5, 5.0):
        step = factor * magnitude
        # Counts are whole: a step of 0.5 or 2.5 would label the axis with fractions.
        if step >= raw and step == int(step):
            return step
    return 10 * magnitude


def _time_step(span: float) -> int:
    """Seconds between x-axis labels: at most about seven labels over the window."""
    for step in (900, 1800, 3600, 7200, 10800, 21600, 43200, 86400):
        if span / step <= 7:
            return step
    return math.ceil(span / 7 / 86400) * 86400


def _buckets(history: Any) -> list[_Bucket]:
    buckets = []
    for entry in _mappings(history):
        when = _number(entry.get("time"))
        if when is None:
            continue
        buckets.append(
            _Bucket(
                when,
                _count(entry.get("hits")),
                _count(entry.get("misses")),
                _count(entry.get("stale")),
            )
        )
    buckets.sort(key=lambda b: b.time)
    return buckets


def _history_chart(buckets: list[_Bucket]) -> str:
    end = buckets[-1].time + BUCKET_SECONDS
    start = min(buckets[0].time, end - MIN_WINDOW_BUCKETS * BUCKET_SECONDS)
    span = end - start
    plot_w, plot_h = _W - _LEFT - _RIGHT, _H - _TOP - _BOTTOM
    bottom = _TOP + plot_h

    peak = max(b.total for b in buckets)
    step = _nice_step(peak / 5) if peak > 0 else 1.0
    top = max(step, math.ceil(peak / step) * step)

    def x_of(t: float) -> float:
        return _LEFT + (t - start) / span * plot_w

    def y_of(v: float) -> float:
        return bottom - v / top * plot_h

    parts: list[str] = []
    # Horizontal grid lines with their count labels.
    tick = 0.0
    while tick <= top + 1e-9:
        y = y_of(tick)
        parts.append(
            f'<line class="grid" x1="{_LEFT}" x2="{_W - _RIGHT}" y1="{y:.1f}" y2="{y:.1f}"/>'
            f'<text class="ylabel" x="{_LEFT - 6}" y="{y + 4:.1f}">{_compact(tick)}</text>'
        )
        tick += step
    # Clock labels on whole quarter hours, hours, …: the times people read on a clock.
    t_step = _time_step(span)
    t = math.ceil(start / t_step) * t_step
    while t <= end:
        x = x_of(t)
        # Labels at the plot's edges hang inwards: centred, they would run into the "UTC"
        # label on the left or out of the picture on the right.
        anchor = ""
        if x < _LEFT + 20:
            anchor = ' style="text-anchor:start"'
        elif x > _W - _RIGHT - 20:
            anchor = ' style="text-anchor:end"'
        parts.append(
            f'<line class="tick" x1="{x:.1f}" x2="{x:.1f}" y1="{bottom}" y2="{bottom + 4}"/>'
            f'<text class="xlabel" x="{x:.1f}" y="{_H - 6}"{anchor}>{format_clock(t)}</text>'
        )
        t += t_step
    parts.append(f'<text class="ylabel" x="{_LEFT - 6}" y="{_H - 6}">UTC</text>')

    slot_w = BUCKET_SECONDS / span * plot_w
    bar_w = max(0.5, slot_w * 0.8)  # a gap between bars keeps neighbours apart
    for b in buckets:
        x = x_of(b.time) + (slot_w - bar_w) / 2
        label = (
            f"{format_clock(b.time)}–{format_clock(b.time + BUCKET_SECONDS)} UTC: "
            f"{_plural(b.hits, 'hit')}, {_plural(b.misses, 'miss', 'misses')}, "
            f"{b.stale} stale"
        )
        rects = []
        base = 0
        # Hits at the bottom, where the eye compares them; stale and misses on top.
        for css_class, value in (("hit", b.hits), ("stale", b.stale), ("miss", b.misses)):
            if value:
                y0, y1 = y_of(base), y_of(base + value)
                rects.append(
                    f'<rect class="{css_class}" x="{x:.1f}" y="{y1:.1f}"'
                    f' width="{bar_w:.1f}" height="{y0 - y1:.1f}"/>'
                )
                base += value
        # A full-height transparent target, so a bucket's tooltip shows even on a tiny bar.
        rects.append(
            f'<rect class="hover" x="{x:.1f}" y="{_TOP}" width="{bar_w:.1f}" height="{plot_h}"/>'
        )
        parts.append(
            f'<g class="bucket" data-time="{b.time:.0f}" data-hits="{b.hits}"'
            f' data-misses="{b.misses}" data-stale="{b.stale}"><title>{label}</title>'
            + "".join(rects)
            + "</g>"
        )
    parts.append(
        f'<line class="axis" x1="{_LEFT}" x2="{_W - _RIGHT}" y1="{bottom}" y2="{bottom}"/>'
    )
    summary = (
        f"Requests per 5 minutes from {format_clock(buckets[0].time)} to {format_clock(end)} UTC,"
        f" {len(buckets)} buckets, at most {peak} in one"
    )
    # SVG inside HTML needs no xmlns: the page then names no URL but its own relative links.
    return (
        f'<div class="chart"><svg viewBox="0 0 {_W} {_H}" role="img" aria-label="{summary}"'
        f">{''.join(parts)}</svg></div>"
    )


def _history_section(history: Any) -> str:
    buckets = _buckets(history)
    if not buckets:
        content = (
            '<p class="empty">No requests recorded yet: the chart fills in as requests come in,'
            " in 5-minute steps.</p>"
        )
        legend = ""
    else:
        content = _history_chart(buckets)
        minutes = round((buckets[-1].time + BUCKET_SECONDS - buckets[0].time) / 60)
        window = (
            f"{minutes} min" if minutes < 60 else f"{minutes / 60:.1f}".removesuffix(".0") + " h"
        )
        sums = {
            "hit": ("Hits", sum(b.hits for b in buckets)),
            "miss": ("Misses", sum(b.misses for b in buckets)),
            "stale": ("Stale", sum(b.stale for b in buckets)),
        }
        items = "".join(
            f'<li><span class="swatch {css_class}"></span>{name} {format_count(total)}</li>'
            for css_class, (name, total) in sums.items()
        )
        note = f'<li class="note">over the last {window}</li>'
        legend = f'<ul class="legend">{items}{note}</ul>'
    return (
        '<section><h2>Requests per 5 minutes <span class="muted">(UTC)</span></h2>'
        f"{content}{legend}</section>"
    )


# --- tables -----------------------------------------------------------------------------


def _top_projects_section(projects: Any) -> str:
    rows = [p for p in _mappings(projects) if _text(p.get("name"))]
    if not rows:
        return '<section><h2>Top projects</h2><p class="empty">No cache hits yet.</p></section>'
    most = max(_count(p.get("hits")) for p in rows) or 1
    body = []
    for rank, project in enumerate(rows, 1):
        name = _text(project.get("name"))
        hits = _count(project.get("hits"))
        # safe="" percent-encodes ':' and '/': a hostile name cannot become a scheme or a path.
        link = "simple/" + quote(name, safe="") + "/"
        body.append(
            f'<tr><td class="rank">{rank}</td>'
            f'<td class="name"><a href="{_e(link)}">{_e(name)}</a></td>'
            f'<td class="num"><span class="minibar" style="width:{hits / most * 60:.1f}px"></span>'
            f"{format_count(hits)}</td>"
            f'<td class="num">{format_bytes(_number(project.get("bytes")))}</td></tr>'
        )
    return (
        '<section><h2>Top projects</h2><div class="table"><table><thead><tr>'
        '<th class="rank">#</th><th>Project</th><th class="num">Hits</th>'
        '<th class="num">Served</th></tr></thead><tbody>'
        + "".join(body)
        + "</tbody></table></div></section>"
    )


def _errors_section(errors: Any) -> str:
    items = _mappings(errors)
    if not items:
        return (
            '<section><h2>Recent upstream errors</h2><p class="empty ok">'
            "None recorded (the last 20 are kept across restarts).</p></section>"
        )
    rows = []
    for item in items:
        iso = format_iso(item.get("time"))
        datetime_attr = f' datetime="{iso}"' if iso != NO_VALUE else ""
        rows.append(
            f"<li><time{datetime_attr}>{iso}</time>"
            f'<code class="wrap">{_e(item.get("message"))}</code></li>'
        )
    return (
        f'<section><h2>Recent upstream errors <span class="muted">({len(items)}, newest first)'
        f'</span></h2><ol class="errors">{"".join(rows)}</ol></section>'
    )


def _gate_section(gate: Any) -> str:
    """What the release-age gate holds back (nothing when the gate is off)."""
    if not isinstance(gate, dict):
        return ""
    rule = []
    if gate.get("min_age_seconds") is not None:
        rule.append(f"files younger than {_e(format_duration(gate['min_age_seconds']))}")
    if gate.get("exclude_newer"):
        rule.append(f"files uploaded after {_e(gate['exclude_newer'])}")
    unknown = "held" if gate.get("unknown") != "allow" else "let through"
    head = (
        f'<p class="muted">Holds back {" and ".join(rule) or "nothing"}; files without an '
        f"upload time are {unknown}.</p>"
    )
    items = _mappings(gate.get("held"))
    if not items:
        body = (
            '<p class="empty ok">Nothing held back in the pages this process has seen'
            " since it started.</p>"
        )
    else:
        rows = "".join(
            f"<tr><td>{_e(i.get('project'))}</td><td>{_e(i.get('version'))}</td>"
            f'<td><code class="wrap">{_e(i.get("filename"))}</code></td>'
            f"<td>{_e(i.get('available_from') or 'unknown upload time')}</td></tr>"
            for i in items
        )
        body = (
            "<table><thead><tr><th>project</th><th>version</th><th>file</th>"
            f"<th>available from</th></tr></thead><tbody>{rows}</tbody></table>"
        )
    return f"<section><h2>Held back by the release-age gate</h2>{head}{body}</section>"


# --- hosted indexes ---------------------------------------------------------------------


def _hosted_section(hosted: Any) -> str:
    """The hosted indexes and the names they shadow (proxy/hosted.py: a hosted project
    is served from its index only, never from upstream)."""
    if not isinstance(hosted, Mapping) or not hosted:
        return ""
    rows = []
    for name, projects in hosted.items():
        names = [p for p in projects if isinstance(p, str)] if isinstance(projects, list) else []
        shown = ", ".join(f"<code>{_e(p)}</code>" for p in names[:50]) or "none yet"
        more = f" and {len(names) - 50} more" if len(names) > 50 else ""
        rows.append(
            f"<li><code>{_e(name)}</code>: upload to <code>/index/{_e(name)}/</code>; "
            f"{_plural(len(names), 'project')}: {shown}{more}</li>"
        )
    return (
        "<section><h2>Hosted indexes</h2>"
        "<p>These projects are served from their hosted index only: the upstream projects "
        "of the same names are shadowed (never fetched, never installed).</p>"
        f"<ul>{''.join(rows)}</ul></section>"
    )


# --- how to use it ----------------------------------------------------------------------


def _usage_section(index_url: Any) -> str:
    url = _text(index_url)
    trusted = ""
    if url:
        shown = _e(url)
        parts = urlsplit(url)
        host = parts.hostname or ""
        # pip ignores a plain-http index anywhere but on loopback unless the host is trusted.
        if parts.scheme == "http" and host and not is_loopback_host(host):
            trusted = f" --trusted-host {_e(f'[{host}]' if ':' in host else host)}"
        note = ""
    else:
        shown = "http://<var>HOST</var>:<var>PORT</var>/simple/"
        note = (
            '<p class="muted">HOST:PORT is the address this page is open at'
            " (a Docker build reaches it on the bridge gateway).</p>"
        )
    return f"""<footer>
<h2>Install through this proxy</h2>
<pre><code>pip install --index-url {shown}{trusted} <var>PACKAGE</var>
uv pip install --index-url {shown} <var>PACKAGE</var></code></pre>
{note}<p class="links"><a href="simple/">Browse the index</a> · \
<a href="-/stats">Stats as JSON</a> · <a href="-/health">Health</a> · \
Docker builds: <code>cacheproxy dockerfile</code></p>
</footer>"""


_CSS = """
:root{--bg:#f5f6f8;--card:#fff;--fg:#1b1f24;--muted:#57606a;--line:#d9dee3;--accent:#0a58ca;
--hit:#2f9e44;--miss:#1971c2;--stale:#e67700;--bad:#c92a2a;--track:#e7eaee;--used:#495057;
--code:#eef1f4}
@media (prefers-color-scheme:dark){:root{--bg:#0f1115;--card:#171a20;--fg:#e6e8eb;
--muted:#9ba3ad;--line:#2a3038;--accent:#74b3ff;--hit:#51cf66;--miss:#4dabf7;--stale:#ffa94d;
--bad:#ff8787;--track:#2a3038;--used:#adb5bd;--code:#1f242b}}
*{box-sizing:border-box}
html{-webkit-text-size-adjust:100%}
body{margin:0;background:var(--bg);color:var(--fg);
font:15px/1.5 system-ui,-apple-system,"Segoe UI",Roboto,"Helvetica Neue",Arial,
"Liberation Sans","DejaVu Sans",sans-serif}
main{max-width:1000px;margin:0 auto;padding:24px 20px 40px}
a{color:var(--accent)}
code,pre{font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,"Liberation Mono",
"DejaVu Sans Mono",monospace;font-size:13px}
.wrap{overflow-wrap:anywhere;word-break:break-word}
.muted{color:var(--muted);font-weight:400}
header{margin-bottom:20px}
.title{display:flex;flex-wrap:wrap;align-items:baseline;gap:6px 12px}
h1{font-size:26px;margin:0;letter-spacing:-.01em}
.version{font-size:13px;font-weight:600;color:var(--muted);border:1px solid var(--line);
border-radius:999px;padding:1px 9px;background:var(--card)}
.updated{margin-left:auto;color:var(--muted);font-size:13px}
.banner{margin:12px 0 0;padding:10px 14px;border-radius:10px;border:1px solid var(--stale);
background:var(--card)}
.banner strong,.offline{color:var(--stale)}
.facts{display:flex;flex-wrap:wrap;gap:6px 28px;margin:10px 0 0;font-size:14px}
.facts div{min-width:0;max-width:100%}
.facts dt{display:inline;color:var(--muted);margin-right:6px}
.facts dd{display:inline;margin:0}
.grid{display:grid;grid-template-columns:repeat(auto-fill,minmax(min(100%,290px),1fr));gap:14px}
.card{background:var(--card);border:1px solid var(--line);border-radius:10px;padding:14px 16px}
.label{font-size:12px;font-weight:600;color:var(--muted);text-transform:uppercase;
letter-spacing:.05em}
.value{font-size:30px;font-weight:650;line-height:1.25;font-variant-numeric:tabular-nums}
.sub{color:var(--muted);font-size:13.5px;margin-top:2px}
.sub.bad{color:var(--bad);font-weight:600}
.bar{display:flex;height:8px;margin:8px 0 6px;border-radius:4px;overflow:hidden;
background:var(--track)}
.bar span{display:block;height:100%}
.bar .used{background:var(--used)}
.bar.full .used{background:var(--stale)}
.hit{background:var(--hit);fill:var(--hit)}
.miss{background:var(--miss);fill:var(--miss)}
.stale{background:var(--stale);fill:var(--stale)}
section,footer{margin-top:28px}
h2{font-size:17px;margin:0 0 10px}
.empty{color:var(--muted);background:var(--card);border:1px dashed var(--line);
border-radius:10px;padding:14px 16px;margin:0}
/* On a phone the chart scrolls sideways; rtl makes it open at its right end, the latest
buckets, and the svg sets the direction back for its text. */
.chart{background:var(--card);border:1px solid var(--line);border-radius:10px;padding:10px 8px 4px;
overflow-x:auto;direction:rtl}
.chart svg{display:block;width:100%;min-width:520px;height:auto;direction:ltr}
.chart text{fill:var(--muted);font-size:12px;font-family:inherit}
.chart .ylabel{text-anchor:end}
.chart .xlabel{text-anchor:middle}
.chart .grid{stroke:var(--line);stroke-width:1}
.chart .axis,.chart .tick{stroke:var(--muted);stroke-width:1}
.chart .hover{fill:transparent}
.chart .bucket:hover .hover{fill:var(--fg);fill-opacity:.06}
.legend{display:flex;flex-wrap:wrap;gap:4px 18px;list-style:none;padding:0;margin:8px 2px 0;
font-size:13.5px;font-variant-numeric:tabular-nums}
.legend .note{color:var(--muted)}
.swatch{display:inline-block;width:11px;height:11px;border-radius:2px;margin-right:6px;
vertical-align:-1px}
.table{background:var(--card);border:1px solid var(--line);border-radius:10px;overflow:hidden}
table{width:100%;border-collapse:collapse}
th,td{padding:7px 12px;text-align:left;border-bottom:1px solid var(--line)}
tbody tr:last-child td{border-bottom:0}
th{font-size:12px;font-weight:600;color:var(--muted);text-transform:uppercase;letter-spacing:.05em}
td.name{overflow-wrap:anywhere;word-break:break-word}
.num{text-align:right;white-space:nowrap;font-variant-numeric:tabular-nums}
.rank{width:2.5em;color:var(--muted);font-variant-numeric:tabular-nums}
.minibar{display:inline-block;height:8px;border-radius:2px;background:var(--hit);opacity:.55;
margin-right:8px}
.errors{list-style:none;margin:0;padding:0;background:var(--card);border:1px solid var(--line);
border-radius:10px}
.errors li{display:flex;flex-wrap:wrap;gap:2px 14px;padding:8px 14px;
border-bottom:1px solid var(--line)}
.errors li:last-child{border-bottom:0}
.errors time{color:var(--bad);font-size:13px;font-variant-numeric:tabular-nums;white-space:nowrap}
.errors code{flex:1 1 420px;min-width:0}
footer{border-top:1px solid var(--line);padding-top:18px}
pre{background:var(--code);border-radius:8px;padding:10px 14px;overflow-x:auto;margin:0 0 8px}
var{font-style:italic;color:var(--accent)}
.links{font-size:14px;color:var(--muted)}
@media (max-width:560px){main{padding:16px 12px 32px}th,td{padding:6px 8px}.minibar{display:none}
.value{font-size:26px}.updated{margin-left:0}}
"""
