"""Operations endpoints: /-/health, /-/ready, /-/stats and /-/metrics (Prometheus), with
figures that add up across worker processes sharing one cache directory."""

import errno
import json
import shutil
import threading
from collections.abc import Mapping
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from conftest import ProxyFactory
from fakeindex import FakeIndex
from prometheus import samples

from cacheproxy.figures.metrics import Metrics
from cacheproxy.store.counters import Key
from cacheproxy.web import handlers
from cacheproxy.web.keys import metrics_key, proxy_key

Client = TestClient[web.Request, web.Application]
JSON = "application/vnd.pypi.simple.v1+json"


async def traffic(proxy: Client, fake: FakeIndex) -> int:
    """A miss and a hit of a page and of a file; returns the file's size."""
    await proxy.app[proxy_key].start_up_checked()  # its recount races what is stored
    f = fake.files("beta")[0]
    for _ in range(2):
        assert (await proxy.get("/simple/beta/", headers={"Accept": JSON})).status == 200
        resp = await proxy.get(f.url_path)
        assert await resp.read() == f.data
    return f.size


async def test_health_and_ready(proxy: Client, cache_dir: Path) -> None:
    assert await (await proxy.get("/-/health")).text() == "ok\n"
    assert (await proxy.get("/-/ready")).status == 200
    shutil.rmtree(cache_dir / "tmp")
    (cache_dir / "tmp").write_text("not a directory any more")
    resp = await proxy.get("/-/ready")
    assert resp.status == 503
    assert "not ready" in await resp.text()
    assert (await proxy.get("/-/health")).status == 200  # liveness does no disk work


async def test_prometheus_metrics(proxy: Client, fake: FakeIndex) -> None:
    size = await traffic(proxy, fake)
    resp = await proxy.get("/-/metrics")
    assert resp.status == 200
    assert resp.headers["Content-Type"].startswith("text/plain; version=0.0.4")
    got = samples(await resp.text())
    req = "cacheproxy_requests_total"
    assert got[(req, (("cache", "MISS"), ("route", "file"), ("status", "2xx")))] == 1
    assert got[(req, (("cache", "HIT"), ("route", "file"), ("status", "2xx")))] == 1
    assert got[(req, (("cache", "MISS"), ("route", "page"), ("status", "2xx")))] == 1
    assert got[(req, (("cache", "HIT"), ("route", "page"), ("status", "2xx")))] == 1
    assert got[("cacheproxy_upstream_bytes_total", ())] == size
    assert got[("cacheproxy_cache_files", ())] == 1
    assert got[("cacheproxy_cache_size_bytes", ())] == size
    assert got[("cacheproxy_cache_pages", ())] == 1
    assert got[("cacheproxy_upstream_requests_total", (("kind", "file"), ("outcome", "ok")))] == 1
    assert got[("cacheproxy_upstream_requests_total", (("kind", "page"), ("outcome", "ok")))] == 1
    hist = "cacheproxy_upstream_request_duration_seconds_count"
    assert got[(hist, (("kind", "page"),))] == 1
    assert got[("cacheproxy_downloads_in_flight", ())] == 0
    for name in (
        "cacheproxy_response_bytes_total",
        "cacheproxy_coalesced_waiters_total",
        "cacheproxy_stale_served_total",
        "cacheproxy_evictions_total",
        "cacheproxy_upstream_download_seconds_total",
    ):
        assert any(key[0] == name for key in got), name
    # No limit is no series (Prometheus convention), not a limit of 0 bytes.
    assert not any(key[0] == "cacheproxy_cache_max_size_bytes" for key in got)
    by_source = {k[1]: v for k, v in got.items() if k[0] == "cacheproxy_response_bytes_total"}
    assert by_source[(("source", "cache"),)] >= size  # the file hit (plus a page hit)


async def test_size_limit_is_a_gauge_when_set(make_proxy: ProxyFactory) -> None:
    proxy = await make_proxy(max_size=5_000_000)
    got = samples(await (await proxy.get("/-/metrics")).text())
    assert got[("cacheproxy_cache_max_size_bytes", ())] == 5_000_000


async def test_stats_json_and_errors(proxy: Client, fake: FakeIndex) -> None:
    await traffic(proxy, fake)
    fake.fail_pages(503)
    assert (await proxy.get("/simple/alpha/")).status == 502
    data = json.loads(await (await proxy.get("/-/stats")).read())
    assert data["requests"]["hits"] == 2
    assert data["requests"]["misses"] == 2
    assert data["hit_ratio"] == 0.5
    assert data["cache"]["files"] == 1
    assert data["cache"]["pages"] == 1
    assert data["top_projects"][0]["name"] == "beta"
    assert "503" in data["recent_errors"][0]["message"]
    assert data["history"][-1]["hits"] == 2
    assert data["index_url"].endswith("/simple/")
    assert data["upstream"] == fake.index_url


async def test_figures_add_up_across_workers(make_proxy: ProxyFactory, fake: FakeIndex) -> None:
    a = await make_proxy(workers=2)
    b = await make_proxy(workers=2)
    await traffic(a, fake)
    # Pages are not coordinated across workers: one answered by a moments ago may still
    # be on its way to disk (pages.py), and b would fetch it too. Let it land.
    await a.app[proxy_key].pages.flush()
    await traffic(b, fake)  # b: all hits, a stored the page and the file
    a.app[metrics_key].flush()  # what a's flusher does every FLUSH_INTERVAL seconds
    data = json.loads(await (await b.get("/-/stats")).read())  # b flushes its own, reads all
    assert data["requests"]["misses"] == 2
    assert data["requests"]["hits"] == 6
    assert len(fake.file_gets()) == 1


async def test_figures_survive_a_restart(make_proxy: ProxyFactory, fake: FakeIndex) -> None:
    first = await make_proxy()
    await traffic(first, fake)
    await first.close()
    second = await make_proxy()
    data = json.loads(await (await second.get("/-/stats")).read())
    assert data["requests"]["hits"] == 2
    assert data["cache"]["files"] == 1  # recounted from the disk at start


async def test_a_bug_is_a_one_line_500_and_counted(
    proxy: Client, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    async def broken(*_args: object, **_kwargs: object) -> None:
        raise RuntimeError("a bug in the proxy")

    monkeypatch.setattr(proxy.app[proxy_key].pages, "project", broken)
    resp = await proxy.get("/simple/alpha/")
    assert resp.status == 500
    assert await resp.text() == "internal error (logged by the proxy)\n"
    assert any("a bug in the proxy" in (r.exc_text or "") for r in caplog.records)
    assert (await proxy.get("/no/such/route")).status == 404
    proxy.app[metrics_key].flush()
    counted = dict(proxy.app[metrics_key].counters())
    assert counted[("requests", "page", "5xx", "-")] == 1
    assert counted[("requests", "other", "4xx", "-")] == 1


def test_a_reader_never_sees_a_flush_half_done(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The periodic flush takes the deltas, then writes them. A reader (/-/stats, the
    # status page) that flushes meanwhile must wait for that write, not read without it.
    metrics = Metrics(tmp_path / "stats")
    metrics.add("stored")
    entered, gate = threading.Event(), threading.Event()
    real = metrics._store.add

    def slow_write(deltas: Mapping[Key, float], errors: list[tuple[float, str]]) -> None:
        entered.set()
        gate.wait(timeout=10)
        real(deltas, errors)

    monkeypatch.setattr(metrics._store, "add", slow_write)
    seen: list[float] = []

    def read() -> None:
        metrics.flush()
        seen.append(dict(metrics.counters()).get(("stored",), 0))

    periodic = threading.Thread(target=metrics.flush)
    periodic.start()
    assert entered.wait(timeout=10)
    reader = threading.Thread(target=read)
    reader.start()
    reader.join(timeout=0.3)  # before the fix it had finished here, without the count
    gate.set()
    periodic.join()
    reader.join()
    assert seen == [1]
    metrics.close()


async def test_out_of_descriptors_is_a_503_and_one_line(
    make_proxy: ProxyFactory, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    async def exhausted(*_args: object, **_kwargs: object) -> None:
        raise OSError(errno.EMFILE, "Too many open files")

    monkeypatch.setattr(handlers, "health", exhausted)  # before the routes are made
    proxy = await make_proxy()
    resp = await proxy.get("/-/health")
    assert resp.status == 503
    assert resp.headers["Retry-After"] == "1"
    assert await resp.text() == "proxy out of file descriptors; retry\n"
    logged = [r for r in caplog.records if "file descriptors" in r.getMessage()]
    assert len(logged) == 1
    assert logged[0].exc_info is None
    assert "Traceback" not in caplog.text
