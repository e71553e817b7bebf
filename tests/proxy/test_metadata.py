"""PEP 658 metadata for wheels whose index gives none, read from the wheel by the proxy
(proxy/metadata.py): from a stored wheel, by HTTP ranges, or after one full download.

``nometa`` (conftest.py) is published without metadata; the fake's request log shows what
the proxy asked upstream for.
"""

import hashlib
import io
import json
import random
import sys
import zipfile
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from clients import run
from conftest import ProxyFactory, make_settings
from distbuild import build_wheel, wheel_metadata
from fakeindex import FakeFile, FakeIndex
from pytest_aiohttp import AiohttpServer

from cacheproxy.proxy.metadata import (
    TAIL_BYTES,
    Unreadable,
    _end_record,
    _inflate,
    _members,
    from_stored_wheel,
    metadata_member_name,
)
from cacheproxy.web.app import create_app
from cacheproxy.web.keys import proxy_key

Client = TestClient[web.Request, web.Application]
JSON = "application/vnd.pypi.simple.v1+json"


def nometa(fake: FakeIndex) -> FakeFile:
    return next(f for f in fake.files("nometa") if f.filename.endswith(".whl"))


async def page_entry(proxy: Client, project: str, filename: str) -> dict[str, object]:
    resp = await proxy.get(f"/simple/{project}/", headers={"Accept": JSON})
    files = (await resp.json())["files"]
    entry: dict[str, object] = next(f for f in files if f["filename"] == filename)
    return entry


def whole_gets(fake: FakeIndex, filename: str) -> list[object]:
    return [r for r in fake.file_gets(filename) if r.method == "GET" and "range" not in r.headers]


def range_gets(fake: FakeIndex, filename: str) -> list[object]:
    return [r for r in fake.file_gets(filename) if "range" in r.headers]


# ---- the zip reading, pure ------------------------------------------------------------------


def _tail_read(data: bytes, name: str) -> bytes:
    """What the range path does, on bytes in memory."""
    tail = data[-TAIL_BYTES:]
    start = len(data) - len(tail)
    cd_offset, cd_size, eocd64 = _end_record(tail)
    assert eocd64 is None
    directory = data[cd_offset : cd_offset + cd_size]
    (member,) = [m for m in _members(directory) if m.name == name]
    assert start >= 0
    return _inflate(member, data[member.offset : member.offset + 30 + len(name) + 2048])


@pytest.mark.parametrize("compression", [zipfile.ZIP_DEFLATED, zipfile.ZIP_STORED])
@pytest.mark.parametrize("zip64", [False, True])
def test_members_are_read_from_the_directory(compression: int, zip64: bool) -> None:
    buf = io.BytesIO()
    metadata = b"Metadata-Version: 2.1\nName: demo\nVersion: 1.0\n" * 20
    with zipfile.ZipFile(buf, "w", compression) as zf:
        zf.writestr("demo/__init__.py", b"x" * 5000)
        with zf.open("demo-1.0.dist-info/METADATA", "w", force_zip64=zip64) as f:
            f.write(metadata)
        zf.writestr("demo-1.0.dist-info/RECORD", b"")
    data = buf.getvalue()
    assert _tail_read(data, "demo-1.0.dist-info/METADATA") == metadata


def test_a_damaged_member_fails_its_crc() -> None:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as zf:
        zf.writestr("demo-1.0.dist-info/METADATA", b"Name: demo\n")
    data = bytearray(buf.getvalue())
    data[data.index(b"Name: demo")] ^= 0x20
    with pytest.raises(Unreadable, match="CRC"):
        _tail_read(bytes(data), "demo-1.0.dist-info/METADATA")


@pytest.mark.parametrize(
    ("names", "chosen"),
    [
        (["demo-1.0.dist-info/METADATA", "demo/x.py"], "demo-1.0.dist-info/METADATA"),
        (
            ["demo-1.0.dist-info/METADATA", "other-2.0.dist-info/METADATA"],
            "demo-1.0.dist-info/METADATA",
        ),
    ],
)
def test_the_projects_own_dist_info(names: list[str], chosen: str) -> None:
    assert metadata_member_name(names, "demo-1.0-py3-none-any.whl") == chosen


def test_no_dist_info_is_unreadable(tmp_path: Path) -> None:
    with pytest.raises(Unreadable):
        metadata_member_name(["demo/x.py", "a/b.dist-info/METADATA"], "demo-1.0-py3-none-any.whl")
    bad = tmp_path / "demo-1.0-py3-none-any.whl"
    bad.write_bytes(b"not a zip")
    with pytest.raises(Unreadable):
        from_stored_wheel(bad, bad.name)


# ---- through the proxy ----------------------------------------------------------------------


async def test_metadata_is_advertised_and_read_by_ranges(proxy: Client, fake: FakeIndex) -> None:
    f = nometa(fake)
    fake.clear_log()
    entry = await page_entry(proxy, "nometa", f.filename)
    assert entry["core-metadata"] is True  # no hash until it has been read
    assert entry["data-dist-info-metadata"] is True
    html = await (await proxy.get("/simple/nometa/", headers={"Accept": "text/html"})).text()
    assert 'data-core-metadata="true"' in html
    # Upstream-advertised metadata keeps priority: alpha's is the index's own, with its hash.
    alpha = next(a for a in fake.files("alpha") if a.filename.endswith(".whl"))
    assert (await page_entry(proxy, "alpha", alpha.filename))["core-metadata"] == {
        "sha256": alpha.metadata_sha256
    }
    resp = await proxy.get(f.url_path + ".metadata")
    assert resp.status == 200
    body = await resp.read()
    assert body == wheel_metadata_of(f)
    assert whole_gets(fake, f.filename) == []  # the wheel itself was never downloaded
    # Read once (begun when the page came, or by this request): a few ranges.
    assert 1 <= len(range_gets(fake, f.filename)) <= 3
    fake.clear_log()
    again = await proxy.get(f.url_path + ".metadata")
    assert (again.status, await again.read()) == (200, body)
    assert fake.requests == []
    metrics = await (await proxy.get("/-/metrics")).text()
    assert 'cacheproxy_metadata_extracted_total{source="ranges"} 1.0' in metrics
    # From now on (once stored: it was answered from memory meanwhile) pages advertise its hash.
    services = proxy.app[proxy_key]
    assert services.extractor is not None
    await services.extractor.settle()
    await services.invalidate("nometa")
    entry = await page_entry(proxy, "nometa", f.filename)
    assert entry["core-metadata"] == {"sha256": hashlib.sha256(body).hexdigest()}


def wheel_of(
    out: Path,
    name: str,
    modules: int,
    *,
    dist_info_first: bool = False,
    pad: int = 0,
    comment: int = 0,
) -> Path:
    """A wheel shaped like a real one: ``modules`` small members, then its ``.dist-info``
    (METADATA, WHEEL, RECORD with a sha256 line per member, written last), as build
    backends write them; or, with ``dist_info_first``, the ``.dist-info`` first and
    ``pad`` incompressible bytes after it; ``comment``: a zip comment that long."""
    dist = f"{name}-1.0"
    members: list[tuple[str, bytes]] = [
        (f"{name}/sub{i % 13}/module_{i:05d}.py", f"VALUE = {i}\n".encode() * 3)
        for i in range(modules)
    ]
    if pad:
        members.append((f"{name}/_pad.bin", random.Random(name).randbytes(pad)))
    meta = f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n\n".encode() + b"readme " * 900
    dist_info = [
        (f"{dist}.dist-info/METADATA", meta),
        (f"{dist}.dist-info/WHEEL", b"Wheel-Version: 1.0\nTag: py3-none-any\n"),
    ]
    members = dist_info + members if dist_info_first else members + dist_info
    record = "".join(
        f"{n},sha256={hashlib.sha256(d).hexdigest()[:43]},{len(d)}\n" for n, d in members
    )
    path = out / f"{dist}-py3-none-any.whl"
    out.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for n, d in members:
            zf.writestr(n, d, zipfile.ZIP_STORED if n.endswith(".bin") else zipfile.ZIP_DEFLATED)
        zf.writestr(f"{dist}.dist-info/RECORD", record + f"{dist}.dist-info/RECORD,,\n")
        zf.comment = b"c" * comment
    return path


def range_bytes(fake: FakeIndex, f: FakeFile) -> int:
    """Bytes the ranges asked for ``f`` span (``bytes=-N`` or ``bytes=A-B``)."""
    total = 0
    for r in range_gets(fake, f.filename):
        spec = r.headers["range"].removeprefix("bytes=")  # type: ignore[attr-defined]
        first, _, last = spec.partition("-")
        total += min(int(last), f.size) if not first else int(last) - int(first) + 1
    return total


def directory_size(f: FakeFile) -> int:
    with zipfile.ZipFile(io.BytesIO(f.data)) as zf:
        return f.size - zf.start_dir - 22 - len(zf.comment)


@pytest.mark.parametrize(
    ("modules", "dist_info_first", "pad", "comment", "ranges"),
    [
        # The small directory of most wheels: one read of the tail holds all.
        (3, False, 0, 0, 1),
        # A directory of 30 kB, METADATA 13 kB before it (pip's own wheel: 34 and 21): one read.
        (400, False, 0, 0, 1),
        # 147 kB: the tail, then the rest of the directory with RECORD and METADATA before it.
        (2000, False, 0, 0, 2),
        # .dist-info first, 3 MB before the directory: the member alone, never the gap.
        (50, True, 3_000_000, 0, 2),
        # A 64 KiB zip comment (wheels have none): the longest tail, then the directory.
        (3, False, 0, 65535, 3),
    ],
)
async def test_a_metadata_miss_takes_few_upstream_reads(
    make_proxy: ProxyFactory,
    fake: FakeIndex,
    tmp_path: Path,
    modules: int,
    dist_info_first: bool,
    pad: int,
    comment: int,
    ranges: int,
) -> None:
    """Every upstream round trip of a .metadata miss is on the resolver's critical path
    (uv resolves one dependency level at a time): the fewest reads, and no more bytes
    than the reads need."""
    wheel = wheel_of(
        tmp_path, "shaped", modules, dist_info_first=dist_info_first, pad=pad, comment=comment
    )
    f = fake.add_file("shaped", wheel, metadata=False)
    proxy = await make_proxy()
    fake.clear_log()
    await page_entry(proxy, "shaped", f.filename)  # starts the read (or the request does)
    resp = await proxy.get(f.url_path + ".metadata")
    assert (resp.status, await resp.read()) == (200, wheel_metadata_of(f))
    assert whole_gets(fake, f.filename) == []
    assert [r.method for r in fake.file_gets(f.filename)] == ["GET"] * ranges  # no HEAD
    assert len(range_gets(fake, f.filename)) == ranges
    # The tail(s), plus at most about two directories' worth (RECORD, METADATA before it).
    assert range_bytes(fake, f) <= 2 * TAIL_BYTES + 2 * directory_size(f) + 20_000


async def test_a_stored_wheel_is_read_without_asking_upstream(
    proxy: Client, fake: FakeIndex, tmp_path: Path
) -> None:
    f = nometa(fake)
    # A newer release: the page's read-ahead goes to it, not to the wheel asked for here.
    fake.add_file("nometa", build_wheel(tmp_path, "nometa", "2.0"), metadata=False)
    await page_entry(proxy, "nometa", f.filename)
    assert await (await proxy.get(f.url_path)).read() == f.data
    fake.clear_log()
    resp = await proxy.get(f.url_path + ".metadata")
    assert await resp.read() == wheel_metadata_of(f)
    assert fake.file_gets(f.filename) == []
    metrics = await (await proxy.get("/-/metrics")).text()
    assert 'cacheproxy_metadata_extracted_total{source="stored_wheel"} 1.0' in metrics


async def test_upstream_without_ranges_downloads_the_wheel_once(
    proxy: Client, fake: FakeIndex
) -> None:
    f = nometa(fake)
    fake.ranges = False
    await page_entry(proxy, "nometa", f.filename)
    resp = await proxy.get(f.url_path + ".metadata")
    assert await resp.read() == wheel_metadata_of(f)
    # The range answered with the whole file (not read), then one download, kept.
    assert len([r for r in fake.file_gets(f.filename) if r.method == "GET"]) == 2
    fake.clear_log()
    assert await (await proxy.get(f.url_path)).read() == f.data
    assert fake.file_gets(f.filename) == []


async def test_an_unreadable_wheel_is_no_longer_advertised(
    make_proxy: ProxyFactory, fake: FakeIndex, tmp_path: Path
) -> None:
    bad = tmp_path / "broken-1.0-py3-none-any.whl"
    bad.write_bytes(b"PK\x03\x04 this is not really a zip " * 100)
    fake.add_file("broken", bad, metadata=False)
    proxy = await make_proxy()
    entry = await page_entry(proxy, "broken", bad.name)
    assert entry["core-metadata"] is True
    path = next(fb for fb in fake.files("broken")).url_path
    resp = await proxy.get(path + ".metadata")
    assert resp.status == 404
    assert (await resp.text()).count("\n") == 1
    await proxy.app[proxy_key].invalidate("broken")
    assert (await page_entry(proxy, "broken", bad.name))["core-metadata"] is False


async def test_off_by_setting(make_proxy: ProxyFactory, fake: FakeIndex) -> None:
    proxy = await make_proxy(synthesize_metadata=False)
    f = nometa(fake)
    assert (await page_entry(proxy, "nometa", f.filename))["core-metadata"] is False
    assert (await proxy.get(f.url_path + ".metadata")).status == 404


@pytest.mark.clients
async def test_pip_resolves_without_downloading_wheels(
    aiohttp_server: AiohttpServer, fake: FakeIndex, tmp_path: Path
) -> None:
    """``pip install --dry-run --report``: pip reads the proxy's metadata, not the wheel."""
    out = tmp_path / "dists"
    big = fake.add_file(
        "heavy", build_wheel(out, "heavy", "1.0", pad_bytes=2_000_000), metadata=False
    )
    server = await aiohttp_server(create_app(make_settings(tmp_path / "c", fake.index_url)))
    report = tmp_path / "report.json"
    cmd = [
        sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed",
        "--no-cache-dir", "--index-url", str(server.make_url("/simple/")),
        "--report", str(report), "heavy", "nometa",
    ]  # fmt: skip
    await run(cmd, tmp_path)
    names = {i["metadata"]["name"] for i in json.loads(report.read_text())["install"]}
    assert names == {"heavy", "nometa"}
    # Neither wheel was downloaded whole: a few ranges of each, a few kB in all.
    assert whole_gets(fake, big.filename) == []
    assert whole_gets(fake, nometa(fake).filename) == []
    assert range_gets(fake, big.filename)


def wheel_metadata_of(f: FakeFile) -> bytes:
    with zipfile.ZipFile(io.BytesIO(f.data)) as zf:
        (name,) = [n for n in zf.namelist() if n.endswith(".dist-info/METADATA")]
        return zf.read(name)


def test_helper_agrees_with_distbuild(tmp_path: Path) -> None:
    wheel = build_wheel(tmp_path, "demo", "1.0")
    assert from_stored_wheel(wheel, wheel.name) == wheel_metadata(wheel)
