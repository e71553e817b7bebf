"""Pages fetched ahead of a resolver: the requirements of metadata the proxy read
(proxy/lookahead.py, proxy/metadata.py ``requirements_of``)."""

import asyncio
import contextvars
from pathlib import Path

from aiohttp import web
from aiohttp.test_utils import TestClient
from conftest import ProxyFactory
from distbuild import build_wheel
from fakeindex import FakeIndex
from hostedutil import upload, write_users
from packaging.utils import NormalizedName, canonicalize_name

from cacheproxy.proxy import lookahead
from cacheproxy.proxy.lookahead import AT_ONCE, MAX_DEPTH, Lookahead
from cacheproxy.proxy.metadata import requirements_of
from cacheproxy.web.keys import proxy_key

Client = TestClient[web.Request, web.Application]
JSON = "application/vnd.pypi.simple.v1+json"


def test_only_requirements_every_environment_needs() -> None:
    metadata = (
        b"Metadata-Version: 2.1\nName: a\nVersion: 1.0\n"
        b"Requires-Dist: Plain_Name>=1\n"
        b"Requires-Dist: with-extras[fast] (>=2)\n"
        b'Requires-Dist: windows-only; sys_platform == "win32"\n'
        b'Requires-Dist: for-an-extra; extra == "dev"\n'
        b"Requires-Dist: direct @ https://example.invalid/direct-1.0.tar.gz\n"
        b"Requires-Dist: !!! not a requirement\n"
        b"Requires-Dist: plain-name\n"
    )
    assert requirements_of(metadata) == ["plain-name", "with-extras"]
    assert requirements_of(b"\xff\xfe not metadata") == []


def names(*raw: str) -> list[NormalizedName]:
    return [canonicalize_name(n) for n in raw]


async def test_a_few_at_a_time_each_once_and_no_deeper_than_max_depth() -> None:
    release = asyncio.Event()
    fetched: list[tuple[str, int]] = []

    async def fetch(name: NormalizedName) -> None:
        fetched.append((name, lookahead._depth.get()))
        await release.wait()

    ahead = Lookahead(fetch)
    ahead.requires(names(*(f"p{i}" for i in range(AT_ONCE + 3))))
    await asyncio.sleep(0)
    assert [n for n, _d in fetched] == names(*(f"p{i}" for i in range(AT_ONCE)))
    assert {d for _n, d in fetched} == {1}  # one level past the request that read them
    release.set()
    await ahead.settle()
    ahead.requires(names("p0", "p1"))  # fetched ahead a moment ago: not again
    await ahead.settle()
    assert len(fetched) == AT_ONCE
    # From a task already MAX_DEPTH levels ahead, nothing more.
    deep = contextvars.copy_context()
    deep.run(lookahead._depth.set, MAX_DEPTH)
    deep.run(ahead.requires, names("q"))
    await ahead.settle()
    assert "q" not in {n for n, _d in fetched}
    await ahead.close()
    ahead.requires(names("r"))
    assert not ahead.busy


def chain(fake: FakeIndex, tmp_path: Path, length: int, **extra: list[str]) -> list[str]:
    """Projects c0 -> c1 -> ... (each requires the next), no PEP 658 metadata upstream."""
    projects = [f"c{i}" for i in range(length)]
    for i, name in enumerate(projects):
        requires = [projects[i + 1]] if i + 1 < length else []
        requires += extra.get(name, [])
        wheel = build_wheel(tmp_path / "dists", name, "1.0", requires=requires)
        fake.add_file(name, wheel, metadata=False)
    return projects


def pages_fetched(fake: FakeIndex) -> list[str]:
    return [r.path.strip("/").rsplit("/", 1)[-1] for r in fake.requests if r.host == "index"]


async def test_a_chain_is_fetched_ahead_of_the_resolver_up_to_max_depth(
    proxy: Client, fake: FakeIndex, tmp_path: Path
) -> None:
    projects = chain(fake, tmp_path, MAX_DEPTH + 3)
    fake.clear_log()
    assert (await proxy.get("/simple/c0/", headers={"Accept": JSON})).status == 200
    await proxy.app[proxy_key].settle_reads_ahead()
    ahead = projects[: MAX_DEPTH + 1]  # c0 asked for, then MAX_DEPTH levels of requirements
    assert pages_fetched(fake) == ahead
    wheels = {f.filename for p in ahead for f in fake.files(p)}
    assert {r.path.rsplit("/", 1)[-1] for r in fake.requests if r.host == "files"} == wheels
    # The resolver's next steps are answered from the cache.
    fake.clear_log()
    for name in ahead[1:]:
        page = await (await proxy.get(f"/simple/{name}/", headers={"Accept": JSON})).json()
        resp = await proxy.get(page["files"][0]["url"] + ".metadata")
        assert resp.status == 200
    await proxy.app[proxy_key].settle_reads_ahead()
    assert fake.requests == []  # hits: they start nothing more
    # A request past the edge starts again from there.
    assert (await proxy.get(f"/simple/{projects[-2]}/", headers={"Accept": JSON})).status == 200
    await proxy.app[proxy_key].settle_reads_ahead()
    assert pages_fetched(fake) == projects[-2:]


async def test_requirements_under_a_marker_are_left_to_the_client(
    proxy: Client, fake: FakeIndex, tmp_path: Path
) -> None:
    chain(fake, tmp_path, 1, c0=['winonly; sys_platform == "win32"', "c1[speed]"])
    fake.add_file("winonly", build_wheel(tmp_path / "w", "winonly", "1.0"), metadata=False)
    fake.add_file("c1", build_wheel(tmp_path / "w", "c1", "1.0"), metadata=False)
    fake.clear_log()
    assert (await proxy.get("/simple/c0/", headers={"Accept": JSON})).status == 200
    await proxy.app[proxy_key].settle_reads_ahead()
    assert pages_fetched(fake) == ["c0", "c1"]


async def test_a_hosted_requirement_is_never_asked_of_an_upstream_index(
    make_proxy: ProxyFactory, fake: FakeIndex, tmp_path: Path
) -> None:
    users = write_users(tmp_path / "users", "alice")
    proxy = await make_proxy(hosted=("team",), users_file=users)
    private = build_wheel(tmp_path / "private", "team-secret", "1.0")
    assert (await upload(proxy, "team", private))[0] == 200
    chain(fake, tmp_path, 2, c1=["team-secret"])
    fake.clear_log()
    assert (await proxy.get("/simple/c0/", headers={"Accept": JSON})).status == 200
    await proxy.app[proxy_key].settle_reads_ahead()
    assert pages_fetched(fake) == ["c0", "c1"]  # and never team-secret


async def test_offline_nothing_is_fetched_ahead(make_proxy: ProxyFactory) -> None:
    proxy = await make_proxy(offline=True)
    assert proxy.app[proxy_key].lookahead is None
