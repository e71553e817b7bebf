"""Hosted indexes in process: uploads checked before anything is stored, pages with
everything a proxied page carries, shadowing of public names, users, yank and delete."""

import asyncio
import hashlib
import io
import json
import logging
import re
import zipfile
from dataclasses import dataclass
from pathlib import Path

import pytest
from aiohttp import web
from conftest import ProxyFactory, make_settings, temporaries
from distbuild import build_sdist, build_wheel, wheel_metadata
from fakeindex import FakeIndex
from hostedutil import PASSWORD, Client, basic, upload, write_users
from pytest_aiohttp import AiohttpClient

from cacheproxy.cli.main import main
from cacheproxy.errors import ConfigError
from cacheproxy.proxy import users as users_module
from cacheproxy.proxy.hosted import with_hosted
from cacheproxy.proxy.pages import PageResult, Pages
from cacheproxy.settings import build_settings
from cacheproxy.simple.models import ProjectList
from cacheproxy.store.records import Body
from cacheproxy.web.app import metrics_ctx, proxy_ctx
from cacheproxy.web.hosted_handlers import setup_hosted_routes
from cacheproxy.web.keys import settings_key
from cacheproxy.web.middlewares import serve_middleware

JSON = {"Accept": "application/vnd.pypi.simple.v1+json"}


@dataclass(frozen=True)
class TeamDists:
    wheel: Path  # teampkg 1.0, requires beta>=1, requires-python >=3.8
    sdist: Path
    newer: Path  # teampkg 1.1
    shadow: Path  # alpha 9.0: a name upstream has too
    other: Path  # teampkg 1.0 again, other bytes (same filename as wheel)


@pytest.fixture(scope="session")
def team(tmp_path_factory: pytest.TempPathFactory) -> TeamDists:
    out = tmp_path_factory.mktemp("team")
    other = build_wheel(out / "other", "teampkg", "1.0", pad_bytes=10)
    return TeamDists(
        wheel=build_wheel(out, "teampkg", "1.0", requires=["beta>=1"], requires_python=">=3.8"),
        sdist=build_sdist(out, "teampkg", "1.0"),
        newer=build_wheel(out, "teampkg", "1.1"),
        shadow=build_wheel(out, "alpha", "9.0"),
        other=other,
    )


@pytest.fixture
def users_file(tmp_path: Path) -> Path:
    return write_users(tmp_path / "users", "alice", "bob")


@pytest.fixture
async def hosted(make_proxy: ProxyFactory, users_file: Path) -> Client:
    return await make_proxy(
        hosted=("team", "ops"), uploaders={"ops": ("bob",)}, users_file=users_file
    )


@pytest.fixture
def checks(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The passwords bcrypt is asked to check, in order (the expensive step)."""
    seen: list[str] = []
    real = users_module.check_password

    def counting(hashed: bytes, password: str) -> bool:
        seen.append(password)
        return real(hashed, password)

    monkeypatch.setattr(users_module, "check_password", counting)
    return seen


def stored_files(cache_dir: Path) -> list[Path]:
    return [p for p in (cache_dir / "hosted" / "files").rglob("*") if p.is_file()]


async def test_upload_then_page_has_everything(
    hosted: Client, team: TeamDists, cache_dir: Path
) -> None:
    assert await upload(hosted, "team", team.wheel) == (200, "OK\n")
    assert (await upload(hosted, "team", team.sdist))[0] == 200
    resp = await hosted.get("/index/team/simple/teampkg/", headers=JSON)
    assert resp.status == 200
    assert resp.headers["X-Cache"] == "HOSTED"
    page = await resp.json(content_type=None)
    assert page["meta"]["api-version"] == "1.1"
    assert page["versions"] == ["1.0"]
    by_name = {f["filename"]: f for f in page["files"]}
    wheel = by_name[team.wheel.name]
    data = team.wheel.read_bytes()
    assert wheel["hashes"] == {"sha256": hashlib.sha256(data).hexdigest()}
    assert wheel["size"] == len(data)
    assert wheel["requires-python"] == ">=3.8"
    assert wheel["upload-time"].endswith("Z")
    assert wheel["yanked"] is False
    meta_sha = hashlib.sha256(wheel_metadata(team.wheel)).hexdigest()
    assert wheel["core-metadata"] == wheel["data-dist-info-metadata"] == {"sha256": meta_sha}
    assert by_name[team.sdist.name]["core-metadata"] is False
    # The file and its PEP 658 metadata, at the advertised links.
    file_resp = await hosted.get(f"/index/team/simple/teampkg/{wheel['url']}")
    assert await file_resp.read() == data
    meta = await hosted.get(f"/index/team/simple/teampkg/{wheel['url']}.metadata")
    assert await meta.read() == wheel_metadata(team.wheel)
    ranged = await hosted.get(
        f"/index/team/files/{team.wheel.name}", headers={"Range": "bytes=0-9"}
    )
    assert ranged.status == 206
    assert await ranged.read() == data[:10]
    html = await (await hosted.get("/index/team/simple/teampkg/")).text()
    assert 'data-requires-python="&gt;=3.8"' in html
    assert f'data-core-metadata="sha256={meta_sha}"' in html
    listing = await (await hosted.get("/index/team/simple/", headers=JSON)).json(content_type=None)
    assert listing["projects"] == [{"name": "teampkg"}]
    assert temporaries(cache_dir) == []


async def test_same_bytes_again_is_ok_other_bytes_refused(
    hosted: Client, team: TeamDists, cache_dir: Path
) -> None:
    assert (await upload(hosted, "team", team.wheel))[0] == 200
    status, text = await upload(hosted, "team", team.wheel)
    assert status == 200
    assert "already" in text
    status, text = await upload(hosted, "team", team.other)
    assert status == 400
    assert text.startswith("File already exists")
    assert text.count("\n") == 1
    page = await (await hosted.get("/index/team/simple/teampkg/", headers=JSON)).json(
        content_type=None
    )
    assert [f["hashes"]["sha256"] for f in page["files"]] == [
        hashlib.sha256(team.wheel.read_bytes()).hexdigest()
    ]
    # Another hosted index is another namespace.
    assert (await upload(hosted, "ops", team.other, user="bob"))[0] == 200
    assert temporaries(cache_dir) == []


def _broken_wheel(path: Path, out: Path, metadata: bytes) -> Path:
    """``path`` rebuilt with other METADATA bytes, under the same filename."""
    out.mkdir(exist_ok=True)
    target = out / path.name
    with zipfile.ZipFile(path) as src, zipfile.ZipFile(target, "w") as dst:
        for info in src.infolist():
            data = src.read(info)
            if info.filename.endswith(".dist-info/METADATA"):
                data = metadata
            dst.writestr(info, data)
    return target


@pytest.mark.parametrize(
    ("case", "status", "message"),
    [
        ("digest", 400, "sha256_digest does not match"),
        ("no-digest", 400, "sha256_digest is required"),
        ("name", 400, "does not match name"),
        ("version", 400, "does not match version"),
        ("filename", 400, "invalid distribution filename"),
        ("not-zip", 400, "not a readable zip"),
        ("metadata-name", 400, "metadata Name"),
        ("action", 400, "unsupported :action"),
        ("too-big", 413, "larger than the upload limit"),
    ],
)
async def test_refused_uploads_store_nothing(
    make_proxy: ProxyFactory,
    users_file: Path,
    team: TeamDists,
    cache_dir: Path,
    tmp_path: Path,
    case: str,
    status: int,
    message: str,
) -> None:
    client = await make_proxy(hosted=("team",), users_file=users_file, max_upload_size=4096)
    path, kw = team.wheel, {}
    if case == "digest":
        kw = {"sha256_digest": "0" * 64}
    elif case == "no-digest":
        kw = {"sha256_digest": ""}
    elif case == "name":
        kw = {"name": "otherpkg"}
    elif case == "version":
        kw = {"version": "2.0"}
    elif case == "filename":
        kw = {"filename": "teampkg.whl"}
    elif case == "not-zip":
        path = tmp_path / team.wheel.name
        path.write_bytes(b"not a zip at all")
    elif case == "metadata-name":
        path = _broken_wheel(team.wheel, tmp_path / "b", b"Name: other\nVersion: 1.0\n\n")
    elif case == "action":
        kw = {":action": "submit"}
    elif case == "too-big":
        path = build_wheel(tmp_path, "teampkg", "1.0", pad_bytes=8192)
    got_status, text = await upload(client, "team", path, **kw)
    assert got_status == status, text
    assert message in text
    assert text.count("\n") == 1
    assert stored_files(cache_dir) == []
    assert temporaries(cache_dir) == []
    assert (await client.get("/index/team/simple/teampkg/")).status == 404


async def test_hosted_project_shadows_upstream(
    hosted: Client, team: TeamDists, fake: FakeIndex
) -> None:
    assert (await upload(hosted, "team", team.shadow))[0] == 200
    resp = await hosted.get("/simple/alpha/", headers=JSON)
    assert resp.headers["X-Cache"] == "HOSTED"
    page = await resp.json(content_type=None)
    assert [f["filename"] for f in page["files"]] == [team.shadow.name]
    assert page["files"][0]["url"] == f"../../index/team/files/{team.shadow.name}"
    got = await hosted.get(f"/simple/alpha/{page['files'][0]['url']}")
    assert await got.read() == team.shadow.read_bytes()
    assert [r for r in fake.requests if "alpha" in r.path] == []  # upstream never asked
    # Projects not hosted still come from upstream.
    assert (await hosted.get("/simple/beta/")).headers["X-Cache"] == "MISS"
    stats = await (await hosted.get("/-/stats")).json()
    assert stats["hosted"] == {"team": ["alpha"], "ops": []}
    status_page = await (await hosted.get("/")).text()
    assert "shadow" in status_page
    assert "alpha" in status_page


async def root_names(client: Client) -> tuple[list[str], list[str]]:
    """The /simple/ list's names as PEP 691 JSON and as PEP 503 HTML anchors (href, text)."""
    doc = await (await client.get("/simple/", headers=JSON)).json(content_type=None)
    html = await (await client.get("/simple/", headers={"Accept": "text/html"})).text()
    anchors = re.findall(r'<a href="([^"]+)">([^<]+)</a>', html)
    assert [href for href, _text in anchors] == [f"{text}/" for _href, text in anchors]
    return [p["name"] for p in doc["projects"]], [text for _href, text in anchors]


def test_hosted_names_merge_into_a_list_in_its_order() -> None:
    listed = ProjectList(names=("Zope", "alpha", "Beta_Lib", "delta"))  # not sorted
    merged = with_hosted(listed, ["aaa", "beta-lib", "charlie", "zzz"])
    # Upstream's names keep their order and spelling; each hosted name goes before the first
    # listed name that sorts after it; beta-lib is Beta_Lib (PEP 503), listed once.
    assert merged.names == ("aaa", "charlie", "Zope", "alpha", "Beta_Lib", "delta", "zzz")
    assert with_hosted(listed, ["alpha"]) is listed


async def test_the_root_list_has_the_hosted_projects_once(
    hosted: Client, team: TeamDists, fake: FakeIndex
) -> None:
    upstream = ["alpha", "beta", "big", "gamma", "nometa"]
    assert await root_names(hosted) == (upstream, upstream)  # nothing hosted yet
    assert (await upload(hosted, "team", team.wheel))[0] == 200
    assert (await upload(hosted, "team", team.shadow))[0] == 200  # alpha: upstream has it
    carrot = build_wheel(team.wheel.parent / "carrot", "carrot", "1.0")
    assert (await upload(hosted, "ops", carrot, user="bob"))[0] == 200
    # Every name once, in the upstream list's (sorted) order, the hosted ones in their place;
    # and an upload shows at once (the list's bytes change with it, so does its ETag).
    merged = ["alpha", "beta", "big", "carrot", "gamma", "nometa", "teampkg"]
    assert await root_names(hosted) == (merged, merged)
    resp = await hosted.get("/simple/", headers=JSON)
    assert resp.headers["X-Cache"] == "HIT"  # upstream's list, from the cache
    assert resp.headers["Cache-Control"] == "max-age=0, must-revalidate"
    again = await hosted.get("/simple/", headers={**JSON, "If-None-Match": resp.headers["ETag"]})
    assert again.status == 304
    assert [r.path for r in fake.requests if r.path == "/simple/"] == ["/simple/"]  # once


async def test_a_root_list_hit_with_hosted_names_does_not_read_upstreams_list_again(
    hosted: Client, team: TeamDists, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert (await upload(hosted, "team", team.wheel))[0] == 200
    reads: list[str] = []
    real = Pages.body_bytes

    async def counted(self: Pages, key: str, result: PageResult, body: Body) -> bytes:
        reads.append(key)
        return await real(self, key, result, body)

    monkeypatch.setattr(Pages, "body_bytes", counted)
    first = await hosted.get("/simple/", headers=JSON)
    assert "teampkg" in [p["name"] for p in (await first.json(content_type=None))["projects"]]
    assert len(reads) == 1  # the merge reads upstream's stored list once
    again = await hosted.get("/simple/", headers=JSON)
    assert again.headers["X-Cache"] == "HIT"
    assert await again.read() == await first.read()
    assert len(reads) == 1  # the kept merge is sent: upstream's list is not read again


async def test_upload_needs_a_user(
    make_proxy: ProxyFactory, users_file: Path, team: TeamDists
) -> None:
    open_proxy = await make_proxy(hosted=("team",))
    status, text = await upload(open_proxy, "team", team.wheel)
    assert status == 403
    assert "no users file" in text
    client = await make_proxy(
        hosted=("team", "ops"), uploaders={"ops": ("bob",)}, users_file=users_file
    )
    resp = await client.post("/index/team/", data=b"")
    assert resp.status == 401
    assert resp.headers["WWW-Authenticate"] == 'Basic realm="cacheproxy"'
    status, text = await upload(client, "team", team.wheel, password="wrong")
    assert status == 401
    assert "wrong user name or password" in text
    status, text = await upload(client, "team", team.wheel, user="mallory")
    assert status == 401
    status, text = await upload(client, "ops", team.wheel, user="alice")
    assert status == 403
    assert text == "user alice may not upload to index ops\n"
    assert (await upload(client, "nope", team.wheel))[0] == 404
    # Reads stay open without --auth-reads.
    assert (await client.get("/simple/beta/")).status == 200


async def test_auth_reads(make_proxy: ProxyFactory, users_file: Path) -> None:
    client = await make_proxy(hosted=("team",), users_file=users_file, auth_reads=True)
    for path in ("/simple/beta/", "/", "/-/metrics", "/-/stats", "/index/team/simple/"):
        resp = await client.get(path)
        assert resp.status == 401, path
        assert resp.headers["WWW-Authenticate"] == 'Basic realm="cacheproxy"'
    assert (await client.get("/-/health")).status == 200
    assert (await client.get("/simple/beta/", headers=basic("alice"))).status == 200
    assert (await client.get("/-/metrics", headers=basic("bob"))).status == 200
    assert (await client.get("/simple/beta/", headers=basic("alice", "nope"))).status == 401


async def test_verified_credentials_are_remembered(
    make_proxy: ProxyFactory, users_file: Path, checks: list[str]
) -> None:
    client = await make_proxy(users_file=users_file, auth_reads=True)
    for _ in range(5):
        assert (await client.get("/-/stats", headers=basic("alice"))).status == 200
    assert checks == [PASSWORD]  # one bcrypt check, then remembered
    for _ in range(2):
        assert (await client.get("/-/stats", headers=basic("alice", "bad"))).status == 401
    assert checks == [PASSWORD, "bad", "bad"]  # a failure is never remembered


async def test_failed_logins_logged_and_limited(
    make_proxy: ProxyFactory, users_file: Path, caplog: pytest.LogCaptureFixture
) -> None:
    client = await make_proxy(users_file=users_file, auth_reads=True)
    caplog.set_level(logging.WARNING, logger="cacheproxy.proxy.users")
    for _ in range(users_module.MAX_FAILURES):
        resp = await client.get("/-/stats", headers=basic("alice", "guess-123"))
        assert resp.status == 401
    resp = await client.get("/-/stats", headers=basic("alice", PASSWORD))
    assert resp.status == 429  # even the right password, until the window passes
    assert int(resp.headers["Retry-After"]) > 0
    logged = [r.getMessage() for r in caplog.records]
    assert any("'alice'" in m and "127.0.0.1" in m for m in logged)
    assert not any("guess-123" in m for m in logged)


async def test_failed_logins_are_limited_across_workers(
    make_proxy: ProxyFactory, users_file: Path
) -> None:
    # Two apps on one cache directory are what `serve --workers 2` runs: a guesser whose
    # connections land on both gets MAX_FAILURES in all, not that many per worker.
    first = await make_proxy(users_file=users_file, auth_reads=True)
    second = await make_proxy(users_file=users_file, auth_reads=True)
    for attempt in range(users_module.MAX_FAILURES):
        worker = (first, second)[attempt % 2]
        resp = await worker.get("/-/stats", headers=basic("alice", f"guess-{attempt}"))
        assert resp.status == 401
    for worker in (first, second):
        resp = await worker.get("/-/stats", headers=basic("alice", PASSWORD))
        assert resp.status == 429
        assert int(resp.headers["Retry-After"]) > 0


async def test_yank_unyank_delete(
    hosted: Client, team: TeamDists, cache_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    assert (await upload(hosted, "team", team.wheel))[0] == 200
    assert (await upload(hosted, "team", team.newer))[0] == 200
    caplog.set_level(logging.INFO, logger="cacheproxy.audit")

    async def files() -> dict[str, object]:
        page = await (await hosted.get("/simple/teampkg/", headers=JSON)).json(content_type=None)
        return {f["filename"]: f["yanked"] for f in page["files"]}

    # The command line is another process's view: the proxy sees its change within
    # hosted.SNAPSHOT_SECONDS; _reload skips the wait.
    argv = ["--cache-dir", str(cache_dir)]
    yank = ["hosted", "yank", "team", team.newer.name, "--reason", "broken build", *argv]
    assert await asyncio.to_thread(main, yank) == 0
    await _reload(hosted)
    assert (await files())[team.newer.name] == "broken build"
    html = await (await hosted.get("/simple/teampkg/")).text()
    assert 'data-yanked="broken build"' in html
    assert await asyncio.to_thread(main, ["hosted", "unyank", "team", team.newer.name, *argv]) == 0
    await _reload(hosted)
    assert (await files())[team.newer.name] is False
    assert await asyncio.to_thread(main, ["hosted", "delete", "team", team.newer.name, *argv]) == 0
    await _reload(hosted)
    assert list(await files()) == [team.wheel.name]
    assert (await hosted.get(f"/index/team/files/{team.newer.name}")).status == 404
    # The name stays used: only the same bytes may come back under it (clients cache files).
    other = build_wheel(cache_dir.parent / "other-newer", "teampkg", "1.1", pad_bytes=5)
    status, text = await upload(hosted, "team", other)
    assert status == 400
    assert "already been used" in text
    assert await asyncio.to_thread(main, ["hosted", "delete", "team", team.newer.name, *argv]) == 1
    audit = [r.getMessage() for r in caplog.records if r.name == "cacheproxy.audit"]
    assert any("yanked" in m and team.newer.name in m for m in audit)
    assert any("deleted" in m and team.newer.name in m for m in audit)
    assert len(stored_files(cache_dir)) == 2  # the 1.0 wheel and its METADATA
    assert (await upload(hosted, "team", team.newer))[0] == 200  # the same bytes: back
    assert len(stored_files(cache_dir)) == 4


async def _reload(client: Client) -> None:
    from cacheproxy.web.keys import proxy_key

    await client.app[proxy_key].hosted.refresh()


def test_user_add_writes_htpasswd_bcrypt(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "users"
    monkeypatch.setattr(users_module, "BCRYPT_ROUNDS", 4)
    monkeypatch.setattr("sys.stdin", io.StringIO("pw-one\n"))
    assert main(["user", "add", "carol", "--users", str(path)]) == 0
    monkeypatch.setattr("sys.stdin", io.StringIO("pw-two\n"))
    assert main(["user", "add", "carol", "--users", str(path)]) == 0
    lines = path.read_text().splitlines()
    assert len(lines) == 1
    name, hashed = lines[0].split(":", 1)
    assert name == "carol"
    assert hashed.startswith("$2y$")
    assert users_module.check_password(hashed.encode(), "pw-two")
    assert not users_module.check_password(hashed.encode(), "pw-one")
    assert path.stat().st_mode & 0o077 == 0
    assert "pw-two" not in json.dumps(lines)


async def test_an_upload_to_one_worker_is_seen_by_the_next_request_to_another(
    make_proxy: ProxyFactory, users_file: Path, team: TeamDists, fake: FakeIndex
) -> None:
    a = await make_proxy(workers=2, hosted=("team",), users_file=users_file)
    b = await make_proxy(workers=2, hosted=("team",), users_file=users_file)
    assert (await b.get("/simple/teampkg/")).status == 404  # b has read its snapshot
    assert (await upload(a, "team", team.wheel))[0] == 200
    resp = await b.get("/simple/teampkg/")  # at once: no wait for a periodic reload
    assert resp.status == 200
    assert resp.headers["X-Cache"] == "HOSTED"


async def test_admin_route_yanks_and_deletes(
    make_proxy: ProxyFactory, users_file: Path, team: TeamDists, caplog: pytest.LogCaptureFixture
) -> None:
    token = "t" * 20
    client = await make_proxy(hosted=("team",), users_file=users_file, admin_token=token)
    assert (await upload(client, "team", team.wheel))[0] == 200
    caplog.set_level(logging.INFO, logger="cacheproxy.audit")
    path = f"/-/admin/hosted/team/yank/{team.wheel.name}?reason=bad"
    assert (await client.post(path)).status == 401
    admin = {"Authorization": f"Bearer {token}"}
    assert (await client.post(path, headers=admin)).status == 200
    html = await (await client.get("/simple/teampkg/")).text()
    assert 'data-yanked="bad"' in html
    gone = f"/-/admin/hosted/team/delete/{team.wheel.name}"
    assert (await client.post(gone, headers=admin)).status == 200
    assert (await client.post(gone, headers=admin)).status == 404
    assert (await client.get("/index/team/simple/teampkg/")).status == 404
    assert stored_files(cache_dir=client.app[settings_key].cache_dir) == []
    audit = [r.getMessage() for r in caplog.records if r.name == "cacheproxy.audit"]
    assert any("admin token from 127.0.0.1" in m and "deleted" in m for m in audit)


@pytest.mark.parametrize(
    ("flags", "environ", "hosted", "uploaders"),
    [
        ({"hosted": ["team", "ops=bob,carol"]}, {}, ("team", "ops"), {"ops": ("bob", "carol")}),
        ({}, {"CACHEPROXY_HOSTED": "team ops=bob"}, ("team", "ops"), {"ops": ("bob",)}),
    ],
)
def test_hosted_settings(
    flags: dict[str, object],
    environ: dict[str, str],
    hosted: tuple[str, ...],
    uploaders: dict[str, tuple[str, ...]],
    tmp_path: Path,
) -> None:
    base = {"cache_dir": str(tmp_path), "upstream": "http://127.0.0.1:1/simple/"}
    settings = build_settings({**base, **flags}, environ)
    assert settings.hosted == hosted
    assert settings.uploaders == uploaders


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        ({"hosted": ["Team"]}, "hosted index name"),
        ({"hosted": ["team", "team"]}, "named twice"),
        ({"auth_reads": True}, "--auth-reads needs --users"),
        ({"tls_cert": "c.pem"}, "go together"),
    ],
)
def test_bad_team_settings(flags: dict[str, object], message: str, tmp_path: Path) -> None:
    base = {"cache_dir": str(tmp_path), "upstream": "http://127.0.0.1:1/simple/"}
    with pytest.raises(ConfigError, match=message):
        build_settings({**base, **flags}, {})


async def test_an_upload_cut_off_midway_stores_nothing(
    hosted: Client, team: TeamDists, cache_dir: Path
) -> None:
    big = build_wheel(cache_dir.parent / "cut", "teampkg", "3.0", pad_bytes=2 * 1024 * 1024)
    data = big.read_bytes()
    boundary = "cutcutcut"
    head = (
        f'--{boundary}\r\nContent-Disposition: form-data; name=":action"\r\n\r\nfile_upload\r\n'
        f'--{boundary}\r\nContent-Disposition: form-data; name="content"; '
        f'filename="{big.name}"\r\nContent-Type: application/octet-stream\r\n\r\n'
    ).encode()
    auth = basic("alice")["Authorization"]
    assert hosted.server.port is not None
    reader, writer = await asyncio.open_connection("127.0.0.1", hosted.server.port)
    writer.write(
        (
            f"POST /index/team/ HTTP/1.1\r\nHost: proxy\r\nAuthorization: {auth}\r\n"
            f"Content-Type: multipart/form-data; boundary={boundary}\r\n"
            f"Content-Length: {len(head) + len(data) + 100}\r\n\r\n"
        ).encode()
        + head
        + data[: len(data) // 2]
    )
    await writer.drain()
    for _ in range(100):  # the proxy is receiving into its temporary
        if temporaries(cache_dir):
            break
        await asyncio.sleep(0.02)
    assert temporaries(cache_dir)
    writer.close()  # the client goes away mid-file
    for _ in range(100):
        if not temporaries(cache_dir):
            break
        await asyncio.sleep(0.02)
    assert temporaries(cache_dir) == []
    assert stored_files(cache_dir) == []
    del reader


async def test_two_workers_racing_one_filename_store_one(
    make_proxy: ProxyFactory, users_file: Path, team: TeamDists, cache_dir: Path
) -> None:
    a = await make_proxy(workers=2, hosted=("team",), users_file=users_file)
    b = await make_proxy(workers=2, hosted=("team",), users_file=users_file)
    results = await asyncio.gather(upload(a, "team", team.wheel), upload(b, "team", team.other))
    assert sorted(status for status, _ in results) == [200, 400]
    page = await (await b.get("/index/team/simple/teampkg/", headers=JSON)).json(content_type=None)
    winner = team.wheel if results[0][0] == 200 else team.other
    assert [f["hashes"]["sha256"] for f in page["files"]] == [
        hashlib.sha256(winner.read_bytes()).hexdigest()
    ]
    assert temporaries(cache_dir) == []


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--users", "{tmp}/missing"], "cannot read users file"),
        (["--users", "{tmp}/bad"], "not name:<bcrypt hash>"),
        (["--tls-cert", "{tmp}/bad", "--tls-key", "{tmp}/bad"], "cannot load TLS certificate"),
    ],
)
def test_serve_refuses_a_bad_users_file_or_certificate(
    extra: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "bad").write_text("alice:plaintext\n")
    argv = ["serve", "--cache-dir", str(tmp_path / "cache"), "--port", "1"]
    argv += ["--upstream", "http://127.0.0.1:9/simple/"]
    argv += [a.format(tmp=tmp_path) for a in extra]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err
    assert err.count("\n") == 1


async def test_a_burst_with_new_credentials_costs_one_bcrypt_check(
    make_proxy: ProxyFactory, users_file: Path, checks: list[str]
) -> None:
    client = await make_proxy(users_file=users_file, auth_reads=True)
    statuses = await asyncio.gather(
        *(client.get("/-/stats", headers=basic("alice")) for _ in range(20))
    )
    assert {r.status for r in statuses} == {200}
    assert checks == [PASSWORD]


async def test_json_api_of_a_hosted_name_is_not_upstreams(
    hosted: Client, team: TeamDists, fake: FakeIndex
) -> None:
    assert (await hosted.get("/pypi/alpha/json")).status == 200  # upstream's, before
    assert (await upload(hosted, "team", team.shadow))[0] == 200
    fake.clear_log()
    for path in ("/pypi/alpha/json", "/pypi/alpha/9.0/json"):
        resp = await hosted.get(path)
        assert resp.status == 404
        assert "hosted index team" in await resp.text()
    assert fake.requests == []


async def test_the_first_hosted_index_with_the_project_serves_it(
    hosted: Client, team: TeamDists
) -> None:
    # --hosted team --hosted ops: a project on both comes from team, as listed first.
    assert (await upload(hosted, "ops", team.newer, user="bob"))[0] == 200
    page = await (await hosted.get("/simple/teampkg/", headers=JSON)).json(content_type=None)
    assert [f["url"] for f in page["files"]] == [f"../../index/ops/files/{team.newer.name}"]
    assert (await upload(hosted, "team", team.wheel))[0] == 200
    page = await (await hosted.get("/simple/teampkg/", headers=JSON)).json(content_type=None)
    assert [f["url"] for f in page["files"]] == [f"../../index/team/files/{team.wheel.name}"]


async def test_index_views_hook_sends_a_name_that_is_not_hosted_on(
    aiohttp_client: AiohttpClient, fake: FakeIndex, cache_dir: Path, users_file: Path
) -> None:
    """setup_hosted_routes(app, index_views): the hook several upstream indexes plug into."""

    async def upstream_view(request: web.Request) -> web.StreamResponse:
        return web.Response(text=f"upstream {request.match_info['index']}\n")

    settings = make_settings(cache_dir, fake.index_url, hosted=("team",), users_file=users_file)
    app = web.Application(middlewares=[serve_middleware])
    app[settings_key] = settings
    app.cleanup_ctx.extend([metrics_ctx, proxy_ctx])
    setup_hosted_routes(app, {"/index/{index}/simple/": upstream_view})
    client = await aiohttp_client(app)
    assert await (await client.get("/index/mirror/simple/")).text() == "upstream mirror\n"
    assert (await client.get("/index/team/simple/")).headers["X-Cache"] == "HOSTED"


async def test_hosted_files_are_not_held_by_the_release_age_gate(
    make_proxy: ProxyFactory, users_file: Path, team: TeamDists
) -> None:
    # The team's own uploads are minutes old by definition: a cooldown meant for public
    # releases does not hold them (simple/gate.py is applied to upstream pages only).
    proxy = await make_proxy(hosted=("team",), users_file=users_file, min_age=2000 * 86400.0)
    assert (await upload(proxy, "team", team.wheel))[0] == 200
    page = await (await proxy.get("/simple/teampkg/", headers=JSON)).json(content_type=None)
    assert [f["filename"] for f in page["files"]] == [team.wheel.name]
    link = f"/simple/teampkg/{page['files'][0]['url']}"
    assert (await proxy.get(link)).status == 200
    # An upstream project under the same gate is held: the fake index's files are from 2024.
    upstream = await (await proxy.get("/simple/gamma/", headers=JSON)).json(content_type=None)
    assert upstream["files"] == []


async def test_hosted_page_names_are_checked_like_every_page(hosted: Client) -> None:
    # One rule for names on every page route (web/names.py): what cannot be a project is a
    # 400, another spelling a 301 that keeps the query percent-encoded.
    bad = await hosted.get("/index/team/simple/no%20such!name/", allow_redirects=False)
    assert bad.status == 400
    moved = await hosted.get(
        "/index/team/simple/TeamPkg/?x=%0d%0aSet-Cookie:%20a", allow_redirects=False
    )
    assert moved.status == 301
    assert moved.headers["Location"].lower() == "../teampkg/?x=%0d%0aset-cookie:%20a"
