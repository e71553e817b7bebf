"""The status page at ``/``: rendered from a stats dict (no HTTP), then shown by a real
headless Chromium (a screenshot, and the DOM it built).

``PYTHONPATH=tests python tests/figures/test_status_page.py`` remakes
``docs/status-page.png`` from the same sample.
"""

import asyncio
import re
import struct
import sys
import tempfile
import time
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from browser import CHROMIUM_TIMEOUT, needs_chromium, run_chromium
from pytest_aiohttp import AiohttpServer

from cacheproxy.figures.status_page import (
    BUCKET_SECONDS,
    format_bytes,
    format_clock,
    format_duration,
    format_iso,
    format_percent,
    render_status_page,
)

END = 1764579600.0  # 2025-12-01T09:00:00Z: the start of the sample's newest bucket
NOW = END + 200

HOSTILE_NAME = '<script>alert("x")</script>'
ATTR_BREAK = "\" onmouseover='alert(1)' x=\""
JS_NAME = "javascript:alert(1)"
HOSTILE_MESSAGE = (
    "upstream answered 503 for https://index.example/simple/<img src=x onerror=alert(1)>'\"/"
)


def sample_history(n: int = 72, end: float = END) -> list[dict[str, Any]]:
    """A working day's shape: steady hits, a CI burst of misses every 45 minutes, and a short
    upstream outage served stale."""
    out = []
    for i in range(n):
        burst = i % 9 == 4
        out.append(
            {
                "time": end - (n - 1 - i) * BUCKET_SECONDS,
                "hits": 30 + (i * 7) % 23 + (25 if burst else 0),
                "misses": 2 + (i * 5) % 7 + (30 if burst else 0),
                "stale": 4 if 40 <= i <= 43 else 0,
            }
        )
    return out


def sample_stats() -> dict[str, Any]:
    projects = [
        ("numpy", 1204, 1_234_567_890),
        ("torch", 640, 21_300_000_000),
        ("pandas", 512, 4_100_000_000),
        ("requests", 498, 31_000_000),
        ("pydantic-core", 377, 780_000_000),
        ("urllib3", 351, 45_000_000),
        ("scipy", 290, 3_800_000_000),
        ("cryptography", 244, 1_100_000_000),
        ("setuptools", 230, 280_000_000),
        ("wheel", 102, 7_400_000),
    ]
    return {
        "version": "0.1.0",
        "uptime_seconds": 3 * 86400 + 4 * 3600 + 17 * 60 + 0.5,
        "upstream": "https://index.example/simple/",
        "cache_dir": "/var/cache/cacheproxy",
        "workers": 2,
        "requests": {"total": 18342, "hits": 15870, "misses": 2211, "stale": 14, "errors": 31},
        "hit_ratio": 0.877,
        "bytes": {"from_cache": 41_234_567_890, "from_upstream": 6_543_210_987},
        "time_saved_seconds": 3 * 3600 + 25 * 60 + 12.0,
        "cache": {
            "size_bytes": 12_400_000_000,
            "files": 4312,
            "pages": 918,
            "max_size_bytes": 50_000_000_000,
            "evictions": 12,
        },
        "downloads": {"in_flight": 2, "coalesced_waiters": 5},
        "top_projects": [{"name": n, "hits": h, "bytes": b} for n, h, b in projects],
        "recent_errors": [
            {
                "time": END - 100.0,
                "message": "upstream answered 503 for https://index.example/simple/numpy/",
            },
            {
                "time": END - 8700.0,
                "message": "timed out after 30 s reading https://index.example/simple/torch/",
            },
            {
                "time": END - 15000.0,
                "message": "connection reset while downloading https://files.example/packages/"
                "ab/cd/pandas-2.2.3-cp311-cp311-manylinux_2_17_x86_64.manylinux2014_x86_64.whl",
            },
        ],
        "history": sample_history(),
        "index_url": "http://127.0.0.1:8503/simple/",
    }


def zero_stats() -> dict[str, Any]:
    """A proxy that has just started: every count zero, every list empty."""
    return {
        "version": "0.1.0",
        "uptime_seconds": 0.0,
        "upstream": "https://index.example/simple/",
        "cache_dir": "/tmp/c",
        "workers": 1,
        "requests": {"total": 0, "hits": 0, "misses": 0, "stale": 0, "errors": 0},
        "hit_ratio": None,
        "bytes": {"from_cache": 0, "from_upstream": 0},
        "time_saved_seconds": 0.0,
        "cache": {"size_bytes": 0, "files": 0, "pages": 0, "max_size_bytes": None, "evictions": 0},
        "downloads": {"in_flight": 0, "coalesced_waiters": 0},
        "top_projects": [],
        "recent_errors": [],
        "history": [],
    }


# --- a strict reading of the HTML -----------------------------------------------------------

VOID = {"meta", "link", "br", "hr", "img", "input", "wbr", "source", "area", "base", "col"}


@dataclass
class Node:
    tag: str
    attrs: dict[str, str]
    children: list["Node"] = field(default_factory=list)  # text is a "#text" child
    data: str = ""  # the text of a "#text" node

    def iter(self) -> Iterator["Node"]:
        yield self
        for child in self.children:
            yield from child.iter()

    def find_all(self, tag: str, css_class: str | None = None) -> list["Node"]:
        return [
            n
            for n in self.iter()
            if n.tag == tag and (css_class is None or css_class in n.attrs.get("class", "").split())
        ]

    def find(self, tag: str, css_class: str | None = None) -> "Node":
        found = self.find_all(tag, css_class)
        assert found, f"no <{tag} class={css_class}>"
        return found[0]

    def raw_text(self) -> str:
        return "".join(n.data for n in self.iter())

    def all_text(self) -> str:
        """The text a person reads, in document order, whitespace collapsed."""
        chunks: list[str] = []

        def walk(node: Node) -> None:
            if node.tag in ("style", "title"):  # CSS, and tooltips that are not on screen
                return
            chunks.append(node.data)
            for child in node.children:
                walk(child)

        walk(self)
        return " ".join(" ".join(chunks).split())


class TreeBuilder(HTMLParser):
    """``html.parser`` forgives everything; this fails on any unclosed or misnested tag."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.root = Node("#document", {})
        self.stack = [self.root]
        self.doctype = ""

    def handle_decl(self, decl: str) -> None:
        self.doctype = decl

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        node = Node(tag, {k: v or "" for k, v in attrs})
        self.stack[-1].children.append(node)
        if tag not in VOID:
            self.stack.append(node)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.stack[-1].children.append(Node(tag, {k: v or "" for k, v in attrs}))

    def handle_endtag(self, tag: str) -> None:
        assert tag not in VOID, f"</{tag}> closes a void element"
        assert self.stack[-1].tag == tag, f"</{tag}> closes <{self.stack[-1].tag}>"
        self.stack.pop()

    def handle_data(self, data: str) -> None:
        self.stack[-1].children.append(Node("#text", {}, data=data))


def parse(page: bytes | str) -> TreeBuilder:
    builder = TreeBuilder()
    builder.feed(page.decode("utf-8") if isinstance(page, bytes) else page)
    builder.close()
    assert [n.tag for n in builder.stack] == ["#document"], "unclosed tags at the end"
    return builder


def render(stats: dict[str, Any]) -> Node:
    return parse(render_status_page(stats, now=NOW)).root


def text_of(stats: dict[str, Any]) -> str:
    return render(stats).find("body").all_text()


# --- unit tests -------------------------------------------------------------------------------


def test_a_complete_document_that_reloads_itself() -> None:
    page = render_status_page(sample_stats(), now=NOW)
    assert page.startswith(b"<!DOCTYPE html>")
    builder = parse(page)
    assert builder.doctype.lower() == "doctype html"
    html_node = builder.root.find("html")
    assert html_node.attrs["lang"] == "en"
    metas = builder.root.find_all("meta")
    assert {"charset": "utf-8"} in [m.attrs for m in metas]
    assert {"http-equiv": "refresh", "content": "30"} in [m.attrs for m in metas]
    assert any(m.attrs.get("name") == "viewport" for m in metas)
    assert builder.root.find("title").raw_text() == "cacheproxy 0.1.0 · status"


def test_key_figures_are_formatted() -> None:
    text = text_of(sample_stats())
    for expected in [
        "cacheproxy 0.1.0",
        "Upstream https://index.example/simple/",
        "Up 3 d 4 h",
        "Workers 2",
        "/var/cache/cacheproxy",
        "Updated 09:03 UTC",
        "Hit ratio 87.7%",
        "15,870 hits · 2,211 misses · 14 stale",
        "Requests 18,342",
        "31 errors (0.2%)",
        "Served from cache 41.2 GB",
        "6.5 GB from upstream · 86% from cache",
        "Time saved 3 h 25 min",
        "at the upstream speed measured on misses",
        "Cache size 12.4 GB",
        "of 50.0 GB limit · 24.8% used",
        "4,312 files · 918 pages · 12 evictions",
        "Downloads in flight 2",
        "5 coalesced waiters",
    ]:
        assert expected in text


@pytest.mark.parametrize(
    ("value", "shown"),
    [
        (None, "—"),
        (0, "0 B"),
        (999, "999 B"),
        (1000, "1.0 kB"),
        (999_960, "1.0 MB"),  # not "1000.0 kB"
        (123_456_789, "123.5 MB"),
        (1_234_567_890, "1.2 GB"),
        (5_000_000_000, "5.0 GB"),
        (3.2e15, "3.2 PB"),
    ],
)
def test_format_bytes(value: float | None, shown: str) -> None:
    assert format_bytes(value) == shown


@pytest.mark.parametrize(
    ("seconds", "shown"),
    [
        (None, "—"),
        (-1.0, "—"),
        (0.0, "0 s"),
        (0.25, "0.2 s"),
        (42.0, "42 s"),
        (59.9, "59 s"),
        (725.0, "12 min 5 s"),
        (3600.5, "1 h 0 min"),
        (3 * 86400 + 4 * 3600 + 59 * 60, "3 d 4 h"),
    ],
)
def test_format_duration(seconds: float | None, shown: str) -> None:
    assert format_duration(seconds) == shown


def test_format_percent_and_times() -> None:
    assert format_percent(0.83) == "83.0%"
    assert format_percent(1.0) == "100.0%"
    assert format_percent(None) == "—"
    assert format_iso(1764580000.0) == "2025-12-01T09:06:40Z"
    assert format_iso(None) == format_iso("yesterday") == format_iso(1e300) == "—"
    assert format_clock(1764580000.0) == "09:06"


def test_no_external_assets() -> None:
    stats = sample_stats()
    stats["top_projects"].append({"name": JS_NAME, "hits": 1, "bytes": 1})
    stats["top_projects"].append({"name": "../../-/stats", "hits": 1, "bytes": 1})
    page = render_status_page(stats, now=NOW).decode()
    root = parse(page).root
    tags = {n.tag for n in root.iter()}
    assert not tags & {"script", "img", "iframe", "object", "embed", "video", "audio", "base"}
    assert not re.search(r"url\(|@import|@font-face", page, re.IGNORECASE)
    links = root.find_all("link")
    assert [ln.attrs for ln in links] == [{"rel": "icon", "href": "data:,"}]  # no favicon fetch
    for node in root.iter():
        for name, value in node.attrs.items():
            # The only absolute URLs on the page are text (the upstream, commands, errors).
            assert "://" not in value, (node.tag, name, value)
            if name in ("href", "src", "action", "xlink:href", "formaction", "poster"):
                assert node.tag == "link" or not re.match(r"[a-z][a-z0-9+.-]*:|/", value, re.I)
    hrefs = [a.attrs["href"] for a in root.find_all("a")]
    assert {"simple/", "-/stats", "-/health", "simple/numpy/"} <= set(hrefs)
    assert "simple/javascript%3Aalert%281%29/" in hrefs  # a name cannot become a scheme
    assert "simple/..%2F..%2F-%2Fstats/" in hrefs  # nor another path
    assert "https://index.example/simple/" in root.find("body").all_text()


def test_hostile_strings_are_escaped() -> None:
    stats = sample_stats()
    stats["version"] = ATTR_BREAK
    stats["upstream"] = HOSTILE_NAME
    stats["cache_dir"] = "</code></dd><script>x</script>"
    stats["top_projects"] = [
        {"name": HOSTILE_NAME, "hits": 3, "bytes": 10},
        {"name": ATTR_BREAK, "hits": 2, "bytes": 10},
    ]
    stats["recent_errors"] = [{"time": END, "message": HOSTILE_MESSAGE}]
    page = render_status_page(stats, now=NOW).decode()
    assert "<script" not in page.lower()
    assert "<img" not in page.lower()
    root = parse(page).root  # and it still nests properly
    assert not root.find_all("script")
    assert not root.find_all("img")
    for node in root.iter():
        assert not any(name.startswith("on") for name in node.attrs), node
    text = root.find("body").all_text()
    # Shown as they are, not dropped: people need to see what upstream said.
    for shown in (HOSTILE_NAME, ATTR_BREAK, HOSTILE_MESSAGE, "</code></dd><script>x</script>"):
        assert " ".join(shown.split()) in text
    assert root.find("title").raw_text() == f"cacheproxy {ATTR_BREAK} · status"


def test_zeros_and_empty_lists() -> None:
    root = render(zero_stats())
    text = root.find("body").all_text()
    for expected in [
        "Hit ratio —",
        "no page or file requests yet",
        "Requests 0",
        "0 errors",
        "Served from cache 0 B",
        "0 B from upstream",
        "Time saved 0 s",
        "Cache size 0 B",
        "no limit",
        "0 files · 0 pages · 0 evictions",
        "Downloads in flight 0",
        "0 coalesced waiters",
        "Up 0 s",
        "Workers 1",
        "No requests recorded yet",
        "No cache hits yet.",
        "None recorded (the last 20 are kept across restarts).",
    ]:
        assert expected in text
    assert not root.find_all("svg")
    assert not root.find_all("table")
    assert not root.find_all("span", "hit")  # empty bars: no segment at all, not a 0% one
    # With no index_url the command shows a placeholder, never a made-up host.
    pre = root.find("pre").all_text()
    assert "pip install --index-url http:// HOST : PORT /simple/ PACKAGE" in pre


@pytest.mark.parametrize("stats", [sample_stats(), zero_stats()], ids=["busy", "zero"])
def test_counters_are_not_said_to_start_with_the_process(stats: dict[str, Any]) -> None:
    """The counters live in the cache directory and survive restarts (figures/metrics.py):
    "since start" next to them was wrong after the first restart."""
    text = text_of(stats)
    assert "since start" not in text
    assert "all time (kept across restarts)" in text
    # What the release-age gate holds is this process's memory: it says so.
    gated = text_of({**stats, "gate": {"min_age_seconds": 86400, "held": []}})
    assert "since start" not in gated
    assert "this process has seen since it started" in gated


def test_offline_mode_is_shown_and_upstream_is_not_in_use() -> None:
    online = render(sample_stats())
    assert "Offline" not in online.find("body").all_text()
    assert not online.find_all("p", "banner")
    root = render({**sample_stats(), "offline": True})
    text = root.find("body").all_text()
    assert "Offline mode. Upstream is not contacted" in text
    assert "anything else gets a 404" in text
    # all_text() puts a space at every element boundary.
    assert "Upstream offline , not contacted ( https://index.example/simple/ )" in text


@pytest.mark.parametrize(
    "stats",
    [
        {},
        {"requests": None, "cache": [], "history": "nope", "top_projects": {"a": 1}},
        {
            "uptime_seconds": "long",
            "hit_ratio": float("nan"),
            "workers": True,
            "requests": {"total": -5, "hits": "1"},
            "history": [None, {"time": None}, {"time": END, "hits": 1.5}],
            "top_projects": [{"name": None}, {"name": "ok", "hits": None}],
            "recent_errors": [{"time": "?", "message": None}],
        },
    ],
)
def test_missing_keys_and_wrong_types_still_render(stats: dict[str, Any]) -> None:
    # The page is what people open when something is already wrong: it must not fail too.
    text = text_of(stats)
    assert "cacheproxy" in text
    assert "Install through this proxy" in text


def test_limit_none_and_over_the_limit() -> None:
    stats = sample_stats()
    stats["cache"]["max_size_bytes"] = None
    root = render(stats)
    assert "no limit" in root.find("body").all_text()
    assert not root.find_all("span", "used")

    stats["cache"]["size_bytes"] = 60_000_000_000  # eviction lagging behind
    stats["cache"]["max_size_bytes"] = 50_000_000_000
    root = render(stats)
    used = root.find("span", "used")
    assert used.attrs["style"] == "width:100.00%"
    bar = next(n for n in root.iter() if used in n.children)
    assert "full" in bar.attrs["class"].split()
    assert "of 50.0 GB limit · 120.0% used" in root.find("body").all_text()

    stats["cache"]["size_bytes"] = 12_500_000_000
    used = render(stats).find("span", "used")
    assert used.attrs["style"] == "width:25.00%"


@dataclass(frozen=True)
class Bar:
    x: float
    width: float
    heights: dict[str, float]  # per class: hit, miss, stale
    top: float
    data: dict[str, str]


def bars(root: Node) -> list[Bar]:
    out = []
    for group in root.find("svg").find_all("g", "bucket"):
        rects = [r for r in group.children if r.tag == "rect"]
        colored = [r for r in rects if r.attrs["class"] != "hover"]
        hover = next(r for r in rects if r.attrs["class"] == "hover")
        out.append(
            Bar(
                x=float(hover.attrs["x"]),
                width=float(hover.attrs["width"]),
                heights={r.attrs["class"]: float(r.attrs["height"]) for r in colored},
                top=min((float(r.attrs["y"]) for r in colored), default=float("inf")),
                data={k[5:]: v for k, v in group.attrs.items() if k.startswith("data-")},
            )
        )
    return out


def test_chart_has_one_bar_per_bucket_scaled_and_stacked() -> None:
    history = sample_history(72)
    root = render({**sample_stats(), "history": history})
    svg = root.find("svg")
    _, _, width, height = (float(v) for v in svg.attrs["viewbox"].split())
    got = bars(root)
    assert len(got) == 72
    for bar, bucket in zip(got, history, strict=True):
        assert bar.data["time"] == f"{bucket['time']:.0f}"
        assert (bar.data["hits"], bar.data["misses"], bar.data["stale"]) == (
            str(bucket["hits"]),
            str(bucket["misses"]),
            str(bucket["stale"]),
        )
        counts = {"hit": bucket["hits"], "miss": bucket["misses"], "stale": bucket["stale"]}
        assert set(bar.heights) == {k for k, n in counts.items() if n}  # no empty segments
    xs = [b.x for b in got]
    assert xs == sorted(xs)
    assert len(set(xs)) == 72
    assert all(b.x > 0 and b.x + b.width <= width for b in got)
    # Heights are proportional to the counts: one scale for every bar and every segment.
    scales = [
        h / bucket[{"hit": "hits", "miss": "misses", "stale": "stale"}[k]]
        for bar, bucket in zip(got, history, strict=True)
        for k, h in bar.heights.items()
    ]
    assert max(scales) - min(scales) < 0.05
    assert all(0 <= b.top < height for b in got)
    tallest = max(got, key=lambda b: sum(b.heights.values()))
    busiest = max(history, key=lambda b: b["hits"] + b["misses"] + b["stale"])
    assert tallest.data["time"] == f"{busiest['time']:.0f}"
    # Stale (the outage) is drawn only where it happened.
    assert [b.data["time"] for b in got if "stale" in b.heights] == [
        f"{h['time']:.0f}" for h in history if h["stale"]
    ]
    # A tooltip per bucket, in UTC.
    first = root.find("svg").find("g", "bucket").find("title")
    assert first.raw_text() == "03:05–03:10 UTC: 30 hits, 2 misses, 0 stale"


def test_chart_axis_legend_and_clock_labels_in_utc(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TZ", "Asia/Kolkata")  # +05:30: local time would shift every label
    time.tzset()
    try:
        root = render(sample_stats())
    finally:
        monkeypatch.undo()
        time.tzset()
    svg = root.find("svg")
    labels = [t.raw_text() for t in svg.find_all("text", "xlabel")]
    assert labels == ["04:00", "05:00", "06:00", "07:00", "08:00", "09:00"]
    assert "UTC" in [t.raw_text() for t in svg.find_all("text", "ylabel")]
    ylabels = [t.raw_text() for t in svg.find_all("text", "ylabel") if t.raw_text() != "UTC"]
    assert ylabels[0] == "0"
    peak = max(b["hits"] + b["misses"] + b["stale"] for b in sample_history())
    assert int(ylabels[-1]) >= peak > int(ylabels[-2])  # the axis ends just above the peak
    legend = root.find("ul", "legend").all_text()
    hits = sum(b["hits"] for b in sample_history())
    misses = sum(b["misses"] for b in sample_history())
    assert f"Hits {hits:,}" in legend
    assert f"Misses {misses:,}" in legend
    assert "Stale 16" in legend
    assert "over the last 6 h" in legend
    assert "Requests per 5 minutes (UTC)" in root.find("body").all_text()


def test_short_history_stands_at_the_right_of_an_hour() -> None:
    history = sample_history(3)
    root = render({**sample_stats(), "history": history})
    got = bars(root)
    assert len(got) == 3
    svg_width = float(root.find("svg").attrs["viewbox"].split()[2])
    # Three buckets of a window of at least an hour: the bars are narrow, on the right.
    assert got[0].x > svg_width * 0.7
    assert got[0].width < svg_width / 12
    assert "over the last 15 min" in root.find("ul", "legend").all_text()


def test_history_gap_keeps_time_positions() -> None:
    history = [
        {"time": END - 3600, "hits": 5, "misses": 1, "stale": 0},
        {"time": END, "hits": 1, "misses": 0, "stale": 0},
    ]
    got = bars(render({**sample_stats(), "history": history}))
    slot = got[0].width / 0.8
    assert round((got[1].x - got[0].x) / slot) == 12  # twelve 5-minute slots apart


def test_all_zero_buckets_draw_no_bars_but_keep_their_slots() -> None:
    history = [{"time": END - i * 300, "hits": 0, "misses": 0, "stale": 0} for i in range(5)]
    got = bars(render({**zero_stats(), "history": list(reversed(history))}))
    assert len(got) == 5
    assert all(b.heights == {} for b in got)


def test_top_projects_table() -> None:
    root = render(sample_stats())
    rows = root.find("table").find("tbody").find_all("tr")
    assert len(rows) == 10
    first = [td.all_text() for td in rows[0].find_all("td")]
    assert first == ["1", "numpy", "1,204", "1.2 GB"]
    assert [td.all_text() for td in rows[1].find_all("td")] == ["2", "torch", "640", "21.3 GB"]
    assert rows[0].find("a").attrs["href"] == "simple/numpy/"
    bars_px = [float(r.find("span", "minibar").attrs["style"][6:-2]) for r in rows]
    assert bars_px[0] == 60.0
    assert bars_px == sorted(bars_px, reverse=True)


def test_recent_errors_in_utc_iso_newest_first() -> None:
    root = render(sample_stats())
    items = root.find("ol", "errors").find_all("li")
    assert len(items) == 3
    times = [li.find("time") for li in items]
    assert [t.attrs["datetime"] for t in times] == [
        "2025-12-01T08:58:20Z",
        "2025-12-01T06:35:00Z",
        "2025-12-01T04:50:00Z",
    ]
    assert items[0].find("code").all_text() == (
        "upstream answered 503 for https://index.example/simple/numpy/"
    )
    assert "Recent upstream errors (3, newest first)" in root.find("body").all_text()


def test_twenty_errors_and_ten_projects_fit() -> None:
    stats = sample_stats()
    stats["recent_errors"] = [
        {"time": END - i, "message": f"upstream answered 50{i % 4} #{i}"} for i in range(20)
    ]
    root = render(stats)
    assert len(root.find("ol", "errors").find_all("li")) == 20


@pytest.mark.parametrize(
    ("index_url", "pip_line"),
    [
        (
            "http://127.0.0.1:8503/simple/",
            "pip install --index-url http://127.0.0.1:8503/simple/ PACKAGE",
        ),
        ("http://localhost:8503/simple/", "pip install --index-url http://localhost:8503/simple/"),
        (
            "http://172.17.0.1:8503/simple/",  # pip ignores plain http off loopback: trust it
            "pip install --index-url http://172.17.0.1:8503/simple/ --trusted-host 172.17.0.1",
        ),
        (
            "http://[fd00::1]:8503/simple/",
            "--index-url http://[fd00::1]:8503/simple/ --trusted-host [fd00::1] PACKAGE",
        ),
        ("http://[::1]:8503/simple/", "--index-url http://[::1]:8503/simple/ PACKAGE"),
        (
            "https://pypi-cache.team.example/simple/",
            "--index-url https://pypi-cache.team.example/simple/ PACKAGE",
        ),
    ],
)
def test_install_command_uses_the_index_url(index_url: str, pip_line: str) -> None:
    root = render({**sample_stats(), "index_url": index_url})
    pre = root.find("pre").all_text()
    assert pip_line in pre
    assert f"uv pip install --index-url {index_url} PACKAGE" in pre
    assert pre.count("--trusted-host") == (1 if "172" in index_url or "fd00" in index_url else 0)


# --- in a real browser --------------------------------------------------------------------


async def serve_page(aiohttp_server: AiohttpServer, body: bytes) -> tuple[str, list[str]]:
    """The page on a loopback server, at ``/``; every path asked for is recorded."""
    asked: list[str] = []

    async def handler(request: web.Request) -> web.Response:
        asked.append(request.path_qs)
        if request.path != "/":
            return web.Response(status=404, text="not found\n")
        return web.Response(body=body, content_type="text/html", charset="utf-8")

    app = web.Application()
    app.router.add_get("/{tail:.*}", handler)
    server = await aiohttp_server(app)
    return str(server.make_url("/")), asked


@dataclass(frozen=True)
class Png:
    width: int
    height: int
    channels: int
    rows: list[bytes]

    def colors(self, step: int = 2) -> set[bytes]:
        """The RGB values of every ``step``-th pixel of every ``step``-th row."""
        found: set[bytes] = set()
        stride = self.channels * step
        for row in self.rows[::step]:
            found.update(row[i : i + 3] for i in range(0, len(row), stride))
        return found


def decode_png(data: bytes) -> Png:
    """8-bit RGB(A), non-interlaced: what Chromium writes. Enough of PNG to read pixels."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    pos, idat, header = 8, [], None
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind, body = data[pos + 4 : pos + 8], data[pos + 8 : pos + 8 + length]
        pos += 12 + length
        if kind == b"IHDR":
            header = struct.unpack(">IIBBBBB", body)
        elif kind == b"IDAT":
            idat.append(body)
    assert header is not None
    width, height, depth, color_type, _, _, interlace = header
    assert (depth, interlace) == (8, 0), header
    assert color_type in (2, 6), header
    bpp = 3 if color_type == 2 else 4
    raw = zlib.decompress(b"".join(idat))
    stride = width * bpp
    prev = bytearray(stride)
    rows = []
    for y in range(height):
        start = y * (stride + 1)
        kind_of_filter = raw[start]
        line = bytearray(raw[start + 1 : start + 1 + stride])
        if kind_of_filter == 1:  # Sub
            for i in range(bpp, stride):
                line[i] = (line[i] + line[i - bpp]) & 255
        elif kind_of_filter == 2:  # Up
            line = bytearray((a + b) & 255 for a, b in zip(line, prev, strict=True))
        elif kind_of_filter == 3:  # Average
            for i in range(stride):
                left = line[i - bpp] if i >= bpp else 0
                line[i] = (line[i] + ((left + prev[i]) >> 1)) & 255
        elif kind_of_filter == 4:  # Paeth
            for i in range(stride):
                a = line[i - bpp] if i >= bpp else 0
                b, c = prev[i], (prev[i - bpp] if i >= bpp else 0)
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                line[i] = (line[i] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 255
        rows.append(bytes(line))
        prev = line
    return Png(width, height, bpp, rows)


def palette(page: bytes, dark: bool) -> dict[str, bytes]:
    """The page's own colours (CSS custom properties), light or dark, as RGB bytes."""
    css = page.decode()
    block = css.split("prefers-color-scheme:dark")[1] if dark else css.split(":root{", 1)[1]
    return {
        name: bytes.fromhex(value)
        for name, value in re.findall(r"--([a-z]+):#([0-9a-f]{6})", block.split("}")[0])
    }


@needs_chromium
@pytest.mark.timeout(3 * CHROMIUM_TIMEOUT)
@pytest.mark.parametrize(
    ("width", "height", "dark"),
    [(1280, 1000, False), (390, 844, False), (1280, 1000, True)],
    ids=["desktop", "phone", "dark"],
)
async def test_browser_screenshot(
    aiohttp_server: AiohttpServer, tmp_path: Path, width: int, height: int, dark: bool
) -> None:
    page = render_status_page(sample_stats(), now=NOW)
    url, asked = await serve_page(aiohttp_server, page)
    shot = tmp_path / "shot.png"
    extra = ("--force-dark-mode",) if dark else ()
    await run_chromium(
        tmp_path, *extra, f"--screenshot={shot}", f"--window-size={width},{height}", url
    )
    data = shot.read_bytes()
    assert len(data) > 20_000  # a blank or error page compresses to a few kB
    png = decode_png(data)
    assert (png.width, png.height) == (width, height)
    colors = png.colors()
    theme = palette(page, dark)
    # The page's own background, and the hit and miss colours of the bars: CSS applied.
    for name in ("bg", "hit", "miss"):
        assert theme[name] in colors, name
    assert asked == ["/"]  # nothing else was fetched, not even a favicon


@needs_chromium
@pytest.mark.timeout(2 * CHROMIUM_TIMEOUT)
async def test_browser_dom_has_the_key_figures(
    aiohttp_server: AiohttpServer, tmp_path: Path
) -> None:
    stats = sample_stats()
    stats["top_projects"][-1]["name"] = HOSTILE_NAME
    stats["recent_errors"][0]["message"] = HOSTILE_MESSAGE
    url, asked = await serve_page(aiohttp_server, render_status_page(stats, now=NOW))
    dom = await run_chromium(tmp_path, "--dump-dom", url)
    root = parse(dom).root  # Chromium's serialisation of what it built
    assert not root.find_all("script")
    assert not root.find_all("img")
    text = root.find("body").all_text()
    for expected in (
        "Hit ratio 87.7%",
        "Served from cache 41.2 GB",
        "Cache size 12.4 GB",
        "Time saved 3 h 25 min",
        "numpy",
        HOSTILE_NAME,
        " ".join(HOSTILE_MESSAGE.split()),
        "Hits 3,",  # the legend under the chart
    ):
        assert expected in text
    assert len(root.find("svg").find_all("g", "bucket")) == 72
    assert asked == ["/"]


# --- the README's screenshot -----------------------------------------------------------------


def encode_png(png: Png) -> bytes:
    def chunk(kind: bytes, body: bytes) -> bytes:
        crc = zlib.crc32(kind + body)
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", crc)

    ihdr = struct.pack(">IIBBBBB", png.width, png.height, 8, 2 if png.channels == 3 else 6, 0, 0, 0)
    raw = b"".join(b"\x00" + row for row in png.rows)
    idat = zlib.compress(raw, 9)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


async def docs_screenshot() -> bytes:
    """The sample page at 1280 wide, cut below the footer (a browser window has a height)."""
    page = render_status_page(sample_stats(), now=NOW)
    with tempfile.TemporaryDirectory() as tmp:
        html_file = Path(tmp) / "status.html"
        html_file.write_bytes(page)
        shot = Path(tmp) / "shot.png"
        await run_chromium(
            Path(tmp), f"--screenshot={shot}", "--window-size=1280,2400", html_file.as_uri()
        )
        png = decode_png(shot.read_bytes())
    assert png.channels == 3, "Chromium writes RGB"
    background = palette(page, dark=False)["bg"] * png.width
    last = max(y for y, row in enumerate(png.rows) if row != background)
    cropped = Png(png.width, min(png.height, last + 32), png.channels, png.rows[: last + 32])
    return encode_png(cropped)


if __name__ == "__main__":
    target = Path(__file__).resolve().parents[2] / "docs" / "status-page.png"
    target.parent.mkdir(exist_ok=True)
    target.write_bytes(asyncio.run(docs_screenshot()))
    print(target, file=sys.stderr)
