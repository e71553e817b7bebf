"""Configuring several indexes: --index, --route, --config (TOML), and their precedence
(cacheproxy/indexes.py). Every test passes its own environment."""

import os
from pathlib import Path

import pytest
from yarl import URL

from cacheproxy.cli.exitcodes import USAGE
from cacheproxy.cli.main import main
from cacheproxy.errors import ConfigError
from cacheproxy.indexes import Route, route_for
from cacheproxy.settings import Settings, build_settings

PUBLIC = "https://mirror.example/simple/"
TORCH = "https://wheels.example/whl/cu121"
ACME = "https://pkgs.acme.example/simple/"

TEAM_TOML = f"""
[[index]]
name = "pypi"
url = "{PUBLIC}"

[[index]]
name = "pytorch"
url = "{TORCH}"
forbidden_is_missing = true
index_ttl = 3600
page_timeout = 60

[[index]]
name = "acme"
url = "{ACME}"
username = "ci"
password_env = "ACME_TOKEN"

[routes]
"torch" = "pytorch"
"nvidia-*" = "pytorch"
"Acme_*" = "acme"
"""


def env(tmp_path: Path, **extra: str) -> dict[str, str]:
    return {"HOME": str(tmp_path), "PIP_CONFIG_FILE": os.devnull, **extra}


def settings(tmp_path: Path, flags: dict[str, object], **environ: str) -> Settings:
    return build_settings({"cache_dir": str(tmp_path / "c"), **flags}, env(tmp_path, **environ))


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "cacheproxy.toml"
    path.write_text(text)
    return path


def test_the_team_config_file(tmp_path: Path) -> None:
    path = write(tmp_path, TEAM_TOML)
    s = settings(tmp_path, {"config": str(path)}, ACME_TOKEN="tok-123")
    assert [i.name for i in s.indexes] == ["pypi", "pytorch", "acme"]
    assert s.upstream == URL(PUBLIC)
    torch = s.indexes[1]
    assert torch.url == URL(TORCH + "/")
    assert (torch.forbidden_is_missing, torch.index_ttl, torch.page_timeout) == (True, 3600, 60)
    acme = s.indexes[2]
    assert (acme.url.user, acme.url.password) == ("ci", "tok-123")
    assert "tok-123" not in repr(s)
    assert "tok-123" not in acme.shown
    assert s.routes == (
        Route("torch", "pytorch"),
        Route("nvidia-*", "pytorch"),
        Route("acme-*", "acme"),  # normalized like the names it matches
    )
    names = {p: route_for(p, s.routes, "pypi") for p in ("torch", "nvidia-cublas-cu12", "acme-x")}
    assert names == {"torch": "pytorch", "nvidia-cublas-cu12": "pytorch", "acme-x": "acme"}
    assert route_for("torchvision", s.routes, "pypi") == "pypi"
    # Also through the environment variable.
    again = settings(tmp_path, {}, CACHEPROXY_CONFIG=str(path), ACME_TOKEN="tok-123")
    assert again.indexes == s.indexes


def test_flags_win_over_the_file(tmp_path: Path) -> None:
    path = write(tmp_path, TEAM_TOML)
    s = settings(
        tmp_path,
        {
            "config": str(path),
            "index": ["pytorch=https://other.example/whl/", "extra=https://x.example/simple/"],
            "route": ["acme-secret=extra"],
        },
        ACME_TOKEN="t",
    )
    torch = next(i for i in s.indexes if i.name == "pytorch")
    assert torch.url == URL("https://other.example/whl/")
    assert torch.forbidden_is_missing  # the file's settings stay
    assert [i.name for i in s.indexes] == ["pypi", "pytorch", "acme", "extra"]
    assert route_for("acme-secret", s.routes, "pypi") == "extra"  # the flag's route first
    # --upstream is the default index "pypi", wherever the file put it.
    up = settings(
        tmp_path, {"config": str(path), "upstream": "https://u.example/s/"}, ACME_TOKEN="t"
    )
    assert up.indexes[0].name == "pypi"
    assert up.upstream == URL("https://u.example/s/")


def test_flags_alone(tmp_path: Path) -> None:
    s = settings(
        tmp_path,
        {"index": [f"pypi={PUBLIC}", f"pytorch={TORCH}"], "route": ["torch=pytorch"]},
    )
    assert [i.name for i in s.indexes] == ["pypi", "pytorch"]
    assert s.upstream == URL(PUBLIC)
    # --upstream with --index: "pypi" is the default, the others follow.
    both = settings(tmp_path, {"upstream": PUBLIC, "index": [f"pytorch={TORCH}"]})
    assert [i.name for i in both.indexes] == ["pypi", "pytorch"]


def test_default_index_without_url_is_the_environment_or_pips(tmp_path: Path) -> None:
    path = write(tmp_path, f'[[index]]\nname = "pypi"\n\n[[index]]\nname = "t"\nurl = "{TORCH}"\n')
    s = settings(tmp_path, {"config": str(path)}, CACHEPROXY_UPSTREAM=PUBLIC)
    assert s.upstream == URL(PUBLIC)
    assert s.indexes[1].name == "t"


def test_single_upstream_setups_are_unchanged(tmp_path: Path) -> None:
    s = settings(tmp_path, {"upstream": PUBLIC})
    assert s.indexes == ()
    assert s.routes == ()
    assert [i.name for i in s.index_configs] == ["pypi"]


@pytest.mark.parametrize(
    ("flags", "toml", "message"),
    [
        ({"index": ["bad name=https://x.example/"]}, None, "index name must be"),
        ({"index": ["x=ftp://x.example/"]}, None, "index x: not an http(s) URL"),
        ({"index": ["nourl"]}, None, "--index NAME=URL"),
        ({"index": ["a=https://a.example/", "a=https://b.example/"]}, None, "given twice"),
        ({"index": ["a=https://a.example/"], "route": ["x*=b"]}, None, "names no configured"),
        ({"index": ["a=https://a.example/"], "route": ["x/y=a"]}, None, "route pattern"),
        ({}, '[[index]]\nname = "a"\nurl = "https://a.example/"\ncolour = 1\n', "unknown"),
        ({}, '[[index]]\nname = "a"\nurl = "https://a.example/"\npage_timeout = 0\n', "positive"),
        ({}, '[[index]]\nname = "a"\nurl = "https://a.example/"\npassword_env = "NOPE"\n', "NOPE"),
        ({}, "[[index]\n", "config file"),
        ({}, '[[index]]\nname = "a"\n[[index]]\nname = "b"\n', "index b has no url"),
        ({}, "port = 1\n", "unknown setting 'port'"),
    ],
)
def test_invalid_index_settings(
    tmp_path: Path, flags: dict[str, object], toml: str | None, message: str
) -> None:
    if toml is not None:
        flags = {**flags, "config": str(write(tmp_path, toml))}
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        settings(tmp_path, {"upstream": None, **flags}, CACHEPROXY_UPSTREAM=PUBLIC)


def test_cli_errors_are_one_line_and_never_show_credentials(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PIP_CONFIG_FILE", os.devnull)
    argv = ["serve", "--index", "pypi=https://ci:hunter2-secret@x.example/s/", "--route", "a*=b"]
    assert main(argv) == USAGE
    err = capsys.readouterr().err
    assert "names no configured index" in err
    assert err.strip().count("\n") == 0
    assert "hunter2" not in err
    bad = ["serve", "--index", "pypi=ftp://ci:hunter2-secret@x.example/s/"]
    assert main(bad) == USAGE
    assert "hunter2" not in capsys.readouterr().err
    missing = ["serve", "--config", str(tmp_path / "nope.toml")]
    assert main(missing) == USAGE
    assert "nope.toml" in capsys.readouterr().err


def test_the_readme_team_setup_parses(tmp_path: Path) -> None:
    readme = (Path(__file__).parent.parent / "README.md").read_text()
    section = readme.partition("### Team setup")[2]
    toml = section.partition("```toml\n")[2].partition("```")[0]
    path = write(tmp_path, toml)
    s = settings(
        tmp_path, {"config": str(path)}, ACME_INDEX_TOKEN="tok", CACHEPROXY_UPSTREAM=PUBLIC
    )
    assert [i.name for i in s.indexes] == ["pypi", "pytorch", "acme"]
    assert s.upstream == URL(PUBLIC)
    assert route_for("nvidia-cudnn-cu12", s.routes, "pypi") == "pytorch"
    assert route_for("acme-billing", s.routes, "pypi") == "acme"
    assert route_for("requests", s.routes, "pypi") == "pypi"


def test_an_index_sets_its_own_min_age(tmp_path: Path) -> None:
    config = tmp_path / "c.toml"
    config.write_text(
        '[[index]]\nname = "pypi"\nurl = "https://a.example/simple/"\n'
        '[[index]]\nname = "acme"\nurl = "https://b.example/simple/"\nmin_age = "0d"\n'
    )
    env = {"PIP_CONFIG_FILE": os.devnull, "HOME": str(tmp_path)}
    settings = build_settings({"config": str(config)}, env)
    assert [i.min_age for i in settings.index_configs] == [None, 0.0]
    config.write_text(
        '[[index]]\nname = "pypi"\nurl = "https://a.example/simple/"\nmin_age = "soon"\n'
    )
    for bad in ('"soon"', '"-1d"', "-5", "true", "nan", '"7 days"'):
        config.write_text(
            f'[[index]]\nname = "pypi"\nurl = "https://a.example/simple/"\nmin_age = {bad}\n'
        )
        with pytest.raises(ConfigError) as caught:
            build_settings({"config": str(config)}, env)
        message = str(caught.value)
        assert message.startswith("index pypi: min_age must be a duration like 7d or 36h"), bad
        assert "\n" not in message
