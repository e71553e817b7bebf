"""Hosted indexes beside several upstream indexes: one /index/NAME/ space, a hosted project
shadows a routed one too, and the config file carries the hosted settings."""

import re
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from conftest import make_settings
from distbuild import build_wheel
from fakeindex import FakeIndex
from hostedutil import upload, write_users
from pytest_aiohttp import AiohttpClient
from yarl import URL

from cacheproxy.errors import ConfigError
from cacheproxy.indexes import IndexConfig, Route
from cacheproxy.settings import build_settings
from cacheproxy.web.app import create_app

Client = TestClient[web.Request, web.Application]
JSON = {"Accept": "application/vnd.pypi.simple.v1+json"}


@pytest.fixture
async def routed_and_hosted(
    aiohttp_client: AiohttpClient, fake: FakeIndex, cache_dir: Path, tmp_path: Path
) -> Client:
    # "mirror" is a second upstream index (the same fake, another name) that gets alpha.
    indexes = (
        IndexConfig(name="pypi", url=URL(fake.index_url)),
        IndexConfig(name="mirror", url=URL(fake.index_url)),
    )
    settings = make_settings(
        cache_dir,
        fake.index_url,
        indexes=indexes,
        routes=(Route("alpha", "mirror"),),
        hosted=("team",),
        users_file=write_users(tmp_path / "users", "alice"),
    )
    return await aiohttp_client(create_app(settings))


async def test_one_index_space_for_hosted_and_upstream(
    routed_and_hosted: Client, tmp_path: Path
) -> None:
    wheel = build_wheel(tmp_path / "d", "teampkg", "1.0")
    assert (await upload(routed_and_hosted, "team", wheel))[0] == 200
    hosted = await routed_and_hosted.get("/index/team/simple/", headers=JSON)
    assert hosted.headers["X-Cache"] == "HOSTED"
    assert (await hosted.json(content_type=None))["projects"] == [{"name": "teampkg"}]
    upstream = await routed_and_hosted.get("/index/mirror/simple/beta/", headers=JSON)
    assert upstream.status == 200
    assert upstream.headers["X-Cache"] in ("MISS", "HIT")
    missing = await routed_and_hosted.get("/index/nope/simple/")
    assert missing.status == 404
    assert (await upload(routed_and_hosted, "mirror", wheel))[0] == 404  # not hosted


async def test_a_hosted_project_shadows_a_routed_one(
    routed_and_hosted: Client, fake: FakeIndex, tmp_path: Path
) -> None:
    wheel = build_wheel(tmp_path / "d", "alpha", "0.1")
    assert (await upload(routed_and_hosted, "team", wheel))[0] == 200
    fake.clear_log()
    resp = await routed_and_hosted.get("/simple/alpha/", headers=JSON)
    assert resp.headers["X-Cache"] == "HOSTED"
    assert [f["filename"] for f in (await resp.json(content_type=None))["files"]] == [wheel.name]
    assert fake.requests == []  # neither the route's index nor the default was asked


async def test_the_routed_root_list_has_the_hosted_projects_once(
    routed_and_hosted: Client, tmp_path: Path
) -> None:
    # alpha is routed to "mirror", so the routed list leaves it out, until the team hosts
    # an alpha of its own: /simple/alpha/ serves that one (shadowing), so the list names it.
    for name in ("teampkg", "alpha", "beta"):  # beta: the default index lists it too
        wheel = build_wheel(tmp_path / name, name, "0.1")
        assert (await upload(routed_and_hosted, "team", wheel))[0] == 200
    expected = ["alpha", "beta", "big", "gamma", "nometa", "teampkg"]
    doc = await (await routed_and_hosted.get("/simple/", headers=JSON)).json(content_type=None)
    assert [p["name"] for p in doc["projects"]] == expected
    html = await (await routed_and_hosted.get("/simple/", headers={"Accept": "text/html"})).text()
    assert re.findall(r'<a href="([^"]+)/">\1</a>', html) == expected
    # Each index's own list is unchanged: the hosted names are the routed view's only.
    alone = await routed_and_hosted.get("/index/mirror/simple/", headers=JSON)
    assert "teampkg" not in {p["name"] for p in (await alone.json(content_type=None))["projects"]}


def test_a_name_is_hosted_or_upstream_not_both(tmp_path: Path) -> None:
    flags = {
        "cache_dir": str(tmp_path),
        "index": ["pypi=http://127.0.0.1:1/simple/", "team=http://127.0.0.1:2/simple/"],
        "hosted": ["team"],
    }
    with pytest.raises(ConfigError, match="names both a hosted and an upstream index"):
        build_settings(flags, {})


def test_hosted_settings_from_the_config_file(tmp_path: Path) -> None:
    config = tmp_path / "cacheproxy.toml"
    # Top-level keys must come before the first table in TOML.
    config.write_text(
        'hosted = ["team", "ops=bob,carol"]\nusers_file = "/srv/users"\nauth_reads = true\n'
        'max_upload_size = "200MiB"\n\n[[index]]\nname = "pypi"\n'
        'url = "http://127.0.0.1:1/simple/"\n'
    )
    settings = build_settings({"cache_dir": str(tmp_path), "config": str(config)}, {})
    assert settings.hosted == ("team", "ops")
    assert settings.uploaders == {"ops": ("bob", "carol")}
    assert settings.users_file == Path("/srv/users")
    assert settings.auth_reads is True
    assert settings.max_upload_size == 200 * 1024 * 1024
    flags = {"cache_dir": str(tmp_path), "config": str(config), "hosted": ["other"]}
    assert build_settings(flags, {}).hosted == ("other",)  # a flag wins
