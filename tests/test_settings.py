"""Settings: precedence, pip's configured index, validation, redaction.

Every test passes its own ``environ``; none reads or changes ``os.environ``. pip always reads
``/etc/pip.conf`` (and so does ``pip_config_files``) unless ``PIP_CONFIG_FILE=os.devnull``,
so tests that need a machine-independent answer either set that, or only rely on files that
take precedence over ``/etc/pip.conf``.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from pip._internal.models.index import PyPI
from yarl import URL

from cacheproxy.errors import ConfigError
from cacheproxy.settings import (
    DEFAULT_HOST,
    DEFAULT_INDEX_TTL,
    DEFAULT_PORT,
    Settings,
    build_settings,
    default_cache_dir,
    normalise_index_url,
    pip_config_files,
    pip_index_url,
)
from cacheproxy.urls import Location, redact_url

MIRROR = "https://mirror.example/simple/"


def isolated(tmp_path: Path, **extra: str) -> dict[str, str]:
    """An environment that reads no pip configuration of this machine at all."""
    return {
        "HOME": str(tmp_path / "home"),
        "XDG_CONFIG_HOME": str(tmp_path / "xdg-config"),
        "XDG_CONFIG_DIRS": str(tmp_path / "xdg-dirs"),
        "XDG_CACHE_HOME": str(tmp_path / "xdg-cache"),
        "PIP_CONFIG_FILE": os.devnull,
        **extra,
    }


def unisolated(tmp_path: Path, **extra: str) -> dict[str, str]:
    """Like isolated(), but pip config files are looked up (only /etc/pip.conf is not ours)."""
    env = isolated(tmp_path, **extra)
    if "PIP_CONFIG_FILE" not in extra:
        del env["PIP_CONFIG_FILE"]
    return env


def write(path: Path, text: str) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return str(path)


# ---- defaults and precedence ------------------------------------------------------------


def test_defaults(tmp_path: Path) -> None:
    assert build_settings({}, isolated(tmp_path)) == Settings(
        host=DEFAULT_HOST,
        port=DEFAULT_PORT,
        cache_dir=tmp_path / "xdg-cache" / "cacheproxy",
        upstream=normalise_index_url(PyPI.simple_url),
        index_ttl=DEFAULT_INDEX_TTL,
        offline=False,
    )
    assert (DEFAULT_HOST, DEFAULT_PORT, DEFAULT_INDEX_TTL) == ("127.0.0.1", 8503, 600.0)


@pytest.mark.parametrize(
    ("name", "flag", "env", "attr", "from_flag", "from_env", "default"),
    [
        ("host", "0.0.0.0", "10.0.0.1", "host", "0.0.0.0", "10.0.0.1", DEFAULT_HOST),
        ("port", "9001", "9002", "port", 9001, 9002, DEFAULT_PORT),
        ("index_ttl", "5", "7.5", "index_ttl", 5.0, 7.5, DEFAULT_INDEX_TTL),
        ("offline", True, "0", "offline", True, False, False),
        (
            "upstream",
            "https://flag.example/simple",
            "https://env.example/simple",
            "upstream",
            URL("https://flag.example/simple/"),
            URL("https://env.example/simple/"),
            normalise_index_url(PyPI.simple_url),
        ),
    ],
)
def test_flag_over_env_over_default(
    tmp_path: Path,
    name: str,
    flag: object,
    env: str,
    attr: str,
    from_flag: object,
    from_env: object,
    default: object,
) -> None:
    var = f"CACHEPROXY_{name.upper()}"
    with_env = isolated(tmp_path, **{var: env})
    assert getattr(build_settings({name: flag}, with_env), attr) == from_flag
    assert getattr(build_settings({name: None}, with_env), attr) == from_env
    assert getattr(build_settings({}, with_env), attr) == from_env
    assert getattr(build_settings({}, isolated(tmp_path)), attr) == default
    # An empty variable is "not set", not an invalid value.
    assert getattr(build_settings({}, isolated(tmp_path, **{var: ""})), attr) == default


def test_cache_dir_precedence(tmp_path: Path) -> None:
    env = isolated(tmp_path, CACHEPROXY_CACHE_DIR=str(tmp_path / "env"))
    assert build_settings({"cache_dir": str(tmp_path / "flag")}, env).cache_dir == tmp_path / "flag"
    assert build_settings({}, env).cache_dir == tmp_path / "env"


def test_default_cache_dir(tmp_path: Path) -> None:
    assert default_cache_dir({"XDG_CACHE_HOME": "/x/cache", "HOME": "/h"}) == Path(
        "/x/cache/cacheproxy"
    )
    assert default_cache_dir({"HOME": "/h"}) == Path("/h/.cache/cacheproxy")
    assert default_cache_dir({"XDG_CACHE_HOME": "", "HOME": "/h"}) == Path("/h/.cache/cacheproxy")


@pytest.mark.parametrize(
    ("raw", "expected"),
    [("1", True), ("true", True), ("YES", True), (" on ", True), ("0", False), ("off", False)],
)
def test_offline_from_environment(tmp_path: Path, raw: str, expected: bool) -> None:
    assert build_settings({}, isolated(tmp_path, CACHEPROXY_OFFLINE=raw)).offline is expected


# ---- pip's configured index -------------------------------------------------------------


def test_pip_index_url_from_environment(tmp_path: Path) -> None:
    conf = write(tmp_path / "pip.conf", "[global]\nindex-url = https://conf.example/simple\n")
    env = isolated(tmp_path, PIP_INDEX_URL=" https://env.example/simple ", PIP_CONFIG_FILE=conf)
    assert pip_index_url(env) == "https://env.example/simple"
    env["PIP_INDEX_URL"] = "https://a.example/simple https://b.example/simple"
    assert pip_index_url(env) == "https://a.example/simple"
    env["PIP_INDEX_URL"] = "  "  # empty: pip ignores it, so the config file applies
    assert pip_index_url(env) == "https://conf.example/simple"


def test_pip_conf_from_pip_config_file(tmp_path: Path) -> None:
    conf = write(
        tmp_path / "custom.conf",
        "[global]\nindex-url = https://conf.example/simple\n  https://second.example/simple\n"
        "trusted-host = conf.example\n",
    )
    assert pip_index_url(isolated(tmp_path, PIP_CONFIG_FILE=conf)) == "https://conf.example/simple"


@pytest.mark.parametrize(
    "text",
    [
        "[install]\nindex-url = https://install.example/simple\n"
        "[global]\nindex-url = https://global.example/simple\n",
        "[global]\nindex-url = https://global.example/simple\n"
        "[install]\nindex-url = https://install.example/simple\n",
    ],
    ids=["install-first", "global-first"],
)
def test_install_section_overrides_global(tmp_path: Path, text: str) -> None:
    conf = write(tmp_path / "pip.conf", text)
    assert (
        pip_index_url(isolated(tmp_path, PIP_CONFIG_FILE=conf)) == "https://install.example/simple"
    )


def test_install_section_beats_global_of_a_later_file(tmp_path: Path) -> None:
    # pip applies sections after merging files: [install] anywhere beats [global] anywhere.
    write(tmp_path / "venv" / "pip.conf", "[install]\nindex-url = https://site.example/simple\n")
    conf = write(tmp_path / "env.conf", "[global]\nindex-url = https://env.example/simple\n")
    env = isolated(tmp_path, VIRTUAL_ENV=str(tmp_path / "venv"), PIP_CONFIG_FILE=conf)
    assert pip_index_url(env) == "https://site.example/simple"


def test_later_file_wins_within_a_section(tmp_path: Path) -> None:
    write(tmp_path / "venv" / "pip.conf", "[install]\nindex-url = https://site.example/simple\n")
    conf = write(tmp_path / "env.conf", "[install]\nindex-url = https://env.example/simple\n")
    env = isolated(tmp_path, VIRTUAL_ENV=str(tmp_path / "venv"), PIP_CONFIG_FILE=conf)
    assert pip_index_url(env) == "https://env.example/simple"


def test_user_config_files(tmp_path: Path) -> None:
    # [install], so that whatever this machine's /etc/pip.conf says cannot take precedence.
    env = unisolated(tmp_path)
    legacy = tmp_path / "home" / ".pip" / "pip.conf"
    write(legacy, "[install]\nindex-url = https://legacy.example/simple\n")
    assert pip_index_url(env) == "https://legacy.example/simple"
    write(
        tmp_path / "xdg-config" / "pip" / "pip.conf",
        "[install]\nindex-url = https://new.example/s\n",
    )
    assert pip_index_url(env) == "https://new.example/s"  # the new location overrides the legacy


def test_user_config_defaults_to_home_dot_config(tmp_path: Path) -> None:
    env = unisolated(tmp_path)
    del env["XDG_CONFIG_HOME"]
    write(
        tmp_path / "home" / ".config" / "pip" / "pip.conf",
        "[install]\nindex-url = https://c.example/s\n",
    )
    assert pip_index_url(env) == "https://c.example/s"


def test_existing_pip_config_file_hides_user_config(tmp_path: Path) -> None:
    write(
        tmp_path / "xdg-config" / "pip" / "pip.conf",
        "[install]\nindex-url = https://user.example/s\n",
    )
    write(tmp_path / "venv" / "pip.conf", "[install]\nindex-url = https://site.example/s\n")
    conf = write(tmp_path / "env.conf", "[global]\ntimeout = 5\n")
    env = unisolated(tmp_path, VIRTUAL_ENV=str(tmp_path / "venv"), PIP_CONFIG_FILE=conf)
    assert pip_index_url(env) == "https://site.example/s"
    # A PIP_CONFIG_FILE that does not exist does not hide them.
    env["PIP_CONFIG_FILE"] = str(tmp_path / "missing.conf")
    del env["VIRTUAL_ENV"]
    assert pip_index_url(env) == "https://user.example/s"


@pytest.mark.parametrize("key", ["index_url", "Index-URL", "--index-url"])
def test_option_names_are_normalised_like_pip(tmp_path: Path, key: str) -> None:
    conf = write(tmp_path / "pip.conf", f"[global]\n{key} = https://conf.example/simple\n")
    assert pip_index_url(isolated(tmp_path, PIP_CONFIG_FILE=conf)) == "https://conf.example/simple"


def test_empty_index_url_counts_as_unset(tmp_path: Path) -> None:
    write(tmp_path / "venv" / "pip.conf", "[install]\nindex-url = https://site.example/s\n")
    conf = write(
        tmp_path / "env.conf",
        "[global]\nindex-url = https://global.example/s\n[install]\nindex-url =\n",
    )
    env = isolated(tmp_path, VIRTUAL_ENV=str(tmp_path / "venv"), PIP_CONFIG_FILE=conf)
    # The empty [install] value overrides the site file's, then counts as unset: [global].
    assert pip_index_url(env) == "https://global.example/s"


@pytest.mark.parametrize(
    "content",
    [
        pytest.param(b"index-url = https://nosection.example/s\n", id="no-section-header"),
        pytest.param(
            b"[global]\nindex-url = https://a.example/s\nindex-url = https://b/\n", id="dup"
        ),
        pytest.param(b"[global]\nindex-url = https://latin1.example/\xe9\n", id="not-utf8"),
        pytest.param(b"\x00\xff\xfe", id="binary"),
    ],
)
def test_unreadable_config_files_are_skipped(tmp_path: Path, content: bytes) -> None:
    write(tmp_path / "venv" / "pip.conf", "[install]\nindex-url = https://site.example/s\n")
    conf = tmp_path / "env.conf"
    conf.write_bytes(content)
    env = isolated(tmp_path, VIRTUAL_ENV=str(tmp_path / "venv"), PIP_CONFIG_FILE=str(conf))
    assert pip_index_url(env) == "https://site.example/s"


def test_config_path_that_is_a_directory_is_skipped(tmp_path: Path) -> None:
    (tmp_path / "venv" / "pip.conf").mkdir(parents=True)
    conf = write(tmp_path / "env.conf", "[global]\nindex-url = https://env.example/s\n")
    env = isolated(tmp_path, VIRTUAL_ENV=str(tmp_path / "venv"), PIP_CONFIG_FILE=conf)
    assert pip_index_url(env) == "https://env.example/s"


def test_fallback_is_pips_own_default(tmp_path: Path) -> None:
    assert pip_index_url(isolated(tmp_path)) == PyPI.simple_url
    upstream = build_settings({}, isolated(tmp_path)).upstream
    assert str(upstream) == PyPI.simple_url.rstrip("/") + "/"


def test_pip_index_url_becomes_the_upstream(tmp_path: Path) -> None:
    conf = write(tmp_path / "pip.conf", "[global]\nindex-url = https://conf.example/simple\n")
    settings = build_settings({}, isolated(tmp_path, PIP_CONFIG_FILE=conf))
    assert settings.upstream == URL("https://conf.example/simple/")


# ---- which files, in which order --------------------------------------------------------


def test_pip_config_files_order(tmp_path: Path) -> None:
    env = {
        "HOME": "/h",
        "XDG_CONFIG_HOME": "/xdg",
        "XDG_CONFIG_DIRS": "/d1::/d2",
        "VIRTUAL_ENV": "/venv",
        "PIP_CONFIG_FILE": str(tmp_path / "missing.conf"),
    }
    assert pip_config_files(env) == [
        # global: $XDG_CONFIG_DIRS in order (pip lets the last one win), then /etc
        Path("/d1/pip/pip.conf"),
        Path("/d2/pip/pip.conf"),
        Path("/etc/pip.conf"),
        # user: legacy, then XDG
        Path("/h/.pip/pip.conf"),
        Path("/xdg/pip/pip.conf"),
        # site, then PIP_CONFIG_FILE
        Path("/venv/pip.conf"),
        tmp_path / "missing.conf",
    ]


def test_pip_config_files_defaults() -> None:
    assert pip_config_files({"HOME": "/h"}) == [
        Path("/etc/xdg/pip/pip.conf"),
        Path("/etc/pip.conf"),
        Path("/h/.pip/pip.conf"),
        Path("/h/.config/pip/pip.conf"),
    ]
    # Empty variables mean "unset", as platformdirs treats them.
    assert pip_config_files({"HOME": "/h", "XDG_CONFIG_HOME": "", "XDG_CONFIG_DIRS": ""}) == [
        Path("/etc/xdg/pip/pip.conf"),
        Path("/etc/pip.conf"),
        Path("/h/.pip/pip.conf"),
        Path("/h/.config/pip/pip.conf"),
    ]


def test_pip_config_files_existing_env_file_drops_user_files(tmp_path: Path) -> None:
    conf = write(tmp_path / "env.conf", "")
    assert pip_config_files({"HOME": "/h", "XDG_CONFIG_DIRS": "/d", "PIP_CONFIG_FILE": conf}) == [
        Path("/d/pip/pip.conf"),
        Path("/etc/pip.conf"),
        Path(conf),
    ]


def test_pip_config_file_devnull_reads_nothing(tmp_path: Path) -> None:
    assert pip_config_files({"HOME": "/h", "PIP_CONFIG_FILE": os.devnull}) == []


_ORACLE = """
import json, os, sys
from pip._internal.commands import create_command
out = []
for env in json.load(sys.stdin):
    os.environ.clear()
    os.environ.update(env)
    options, _ = create_command("install").parse_args([])
    out.append(options.index_url)
print(json.dumps(out))
"""


def test_agrees_with_pip_itself(tmp_path: Path) -> None:
    """The same environments through pip's own option parser (in a subprocess)."""
    a, b = tmp_path / "a", tmp_path / "b"
    write(a / "pip" / "pip.conf", "[global]\nindex-url = https://a.example/s\n")
    write(b / "pip" / "pip.conf", "[global]\nindex-url = https://b.example/s\n")
    write(tmp_path / "ai" / "pip" / "pip.conf", "[install]\nindex-url = https://ai.example/s\n")
    user = tmp_path / "xdg-config" / "pip" / "pip.conf"
    write(user, "[global]\nindex-url = https://user.example/s\n")
    env_global = write(tmp_path / "g.conf", "[global]\nindex-url = https://env.example/s\n")
    env_empty = write(tmp_path / "e.conf", "[global]\nindex-url =\n")
    env_other = write(tmp_path / "o.conf", "[global]\ntimeout = 5\n")
    env_under = write(tmp_path / "u.conf", "[install]\nindex_url = https://under.example/s\n")
    scenarios = [
        {"XDG_CONFIG_DIRS": f"{a}:{b}"},
        {"XDG_CONFIG_DIRS": f"{b}:{a}"},
        {"XDG_CONFIG_DIRS": f"{tmp_path / 'ai'}", "PIP_CONFIG_FILE": env_global},
        {"XDG_CONFIG_DIRS": f"{a}", "PIP_CONFIG_FILE": env_other},
        {"XDG_CONFIG_DIRS": f"{a}", "PIP_CONFIG_FILE": env_empty},
        {"XDG_CONFIG_DIRS": f"{a}", "PIP_CONFIG_FILE": env_under},
        {"XDG_CONFIG_DIRS": f"{a}", "PIP_CONFIG_FILE": str(tmp_path / "missing.conf")},
        {"XDG_CONFIG_DIRS": f"{a}", "PIP_CONFIG_FILE": os.devnull},
        {"XDG_CONFIG_DIRS": f"{a}", "PIP_INDEX_URL": "https://var.example/s"},
    ]
    environs = [
        {
            "HOME": str(tmp_path / "home"),
            "XDG_CONFIG_HOME": str(tmp_path / "xdg-config"),
            "PATH": os.defpath,
            # pip reads <sys.prefix>/pip.conf as its site file; let ours read the same one.
            "VIRTUAL_ENV": sys.prefix,
            **s,
        }
        for s in scenarios
    ]
    done = subprocess.run(
        [sys.executable, "-c", _ORACLE],
        input=json.dumps(environs),
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    pips = json.loads(done.stdout)
    assert [pip_index_url(e) for e in environs] == pips
    # And the scenarios do tell the rules apart (whatever /etc/pip.conf says on this machine,
    # which both sides read).
    assert len(set(pips)) >= 5


# ---- normalisation and validation -------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("https://mirror.example/simple", MIRROR),
        (MIRROR, MIRROR),
        ("  https://mirror.example/simple  ", MIRROR),
        ("https://mirror.example", "https://mirror.example/"),
        ("https://mirror.example/simple#frag", MIRROR),
        ("HTTPS://Mirror.Example:443/simple", MIRROR),
        ("http://mirror.example:8080/a%2Bb", "http://mirror.example:8080/a%2Bb/"),
        ("https://u:p@mirror.example/simple", "https://u:p@mirror.example/simple/"),
    ],
)
def test_normalise_index_url(raw: str, expected: str) -> None:
    assert str(normalise_index_url(raw)) == expected


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        pytest.param({"port": "abc"}, r"^--port must be an integer, not 'abc'$", id="port-text"),
        pytest.param({"port": "80.5"}, r"^--port must be an integer", id="port-float"),
        pytest.param({"port": "0"}, r"^--port must be between 1 and 65535, not 0$", id="port-0"),
        pytest.param({"port": 0}, r"^--port must be between 1 and 65535, not 0$", id="port-0-flag"),
        pytest.param({"port": "65536"}, r"^--port must be between 1 and 65535", id="port-big"),
        pytest.param({"port": "-1"}, r"^--port must be between 1 and 65535", id="port-neg"),
        pytest.param({"index_ttl": "soon"}, r"^--index-ttl must be a number, not 'soon'$"),
        pytest.param({"index_ttl": "-1"}, r"^--index-ttl must not be negative$", id="ttl-neg"),
        pytest.param({"index_ttl": "nan"}, r"^--index-ttl must be a finite number", id="ttl-nan"),
        pytest.param({"index_ttl": "inf"}, r"^--index-ttl must be a finite number", id="ttl-inf"),
        pytest.param({"offline": "maybe"}, r"^--offline must be true or false, not 'maybe'$"),
        pytest.param(
            {"upstream": "ftp://x"},
            r"^--upstream must be an http\(s\) URL of a simple index, not 'ftp://x'$",
            id="ftp",
        ),
        pytest.param({"upstream": "not a url"}, r"^--upstream must be an http\(s\) URL", id="text"),
        pytest.param(
            {"upstream": "http://"}, r"^--upstream must be an http\(s\) URL", id="no-host"
        ),
        pytest.param({"upstream": "mirror.example/simple"}, r"^--upstream must be", id="no-scheme"),
        pytest.param({"upstream": "http://h:99999/"}, r"^--upstream is not a valid URL", id="port"),
        pytest.param({"upstream": "http://h:x/"}, r"^--upstream is not a valid URL", id="port-x"),
        pytest.param({"upstream": "http://[::1"}, r"^--upstream is not a valid URL", id="ipv6"),
        pytest.param(
            {"client_revalidate_after": "soon"},
            r"^--client-revalidate-after must be a duration like 30s or 5m, or off, not 'soon'$",
            id="revalidate-text",
        ),
        pytest.param({"workers": "0"}, r"^--workers must be between 1 and 64, not 0$", id="w-0"),
        pytest.param({"max_size": "lots"}, r"^--max-size must be a size like 50GB", id="size"),
    ],
)
def test_invalid_values_name_the_setting(
    tmp_path: Path, flags: dict[str, object], message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        build_settings(flags, isolated(tmp_path))


@pytest.mark.parametrize(
    ("var", "raw", "message"),
    [
        ("CACHEPROXY_PORT", "x", "CACHEPROXY_PORT=x: must be an integer"),
        ("CACHEPROXY_PORT", "0", "CACHEPROXY_PORT=0: must be between 1 and 65535"),
        ("CACHEPROXY_OFFLINE", "sometimes", "CACHEPROXY_OFFLINE=sometimes: must be true or false"),
        ("CACHEPROXY_INDEX_TTL", "-1", "CACHEPROXY_INDEX_TTL=-1: must not be negative"),
        ("CACHEPROXY_INDEX_TTL", "soon", "CACHEPROXY_INDEX_TTL=soon: must be a number"),
        ("CACHEPROXY_WORKERS", "99", "CACHEPROXY_WORKERS=99: must be between 1 and 64"),
        ("CACHEPROXY_RETRIES", "2.5", "CACHEPROXY_RETRIES=2.5: must be an integer"),
        ("CACHEPROXY_CONNECT_TIMEOUT", "0", "CACHEPROXY_CONNECT_TIMEOUT=0: must be positive"),
        (
            "CACHEPROXY_MAX_SIZE",
            "lots",
            "CACHEPROXY_MAX_SIZE=lots: must be a size like 50GB or 10%",
        ),
        (
            "CACHEPROXY_CLIENT_REVALIDATE_AFTER",
            "soon",
            "CACHEPROXY_CLIENT_REVALIDATE_AFTER=soon: must be a duration like 30s or 5m, or off",
        ),
        (
            "CACHEPROXY_MIN_AGE",
            "soon",
            "CACHEPROXY_MIN_AGE=soon: must be a duration like 30d or 12h",
        ),
        (
            "CACHEPROXY_EXCLUDE_NEWER",
            "yesterday",
            "CACHEPROXY_EXCLUDE_NEWER=yesterday: "
            "must be an RFC 3339 time like 2026-11-30T12:00:00Z",
        ),
        (
            "CACHEPROXY_MIN_AGE_UNKNOWN",
            "maybe",
            "CACHEPROXY_MIN_AGE_UNKNOWN=maybe: must be allow or deny",
        ),
        (
            "CACHEPROXY_UPSTREAM",
            "ftp://u:s3cret@idx.example/",
            "CACHEPROXY_UPSTREAM=ftp://u:***@idx.example/: "
            "must be an http(s) URL of a simple index",
        ),
    ],
)
def test_invalid_environment_values_name_the_variable(
    tmp_path: Path, var: str, raw: str, message: str
) -> None:
    """The variable is what the user has to find and change: name it, with its value."""
    with pytest.raises(ConfigError) as info:
        build_settings({}, isolated(tmp_path, **{var: raw}))
    assert str(info.value) == message


def test_invalid_pip_index_url_names_the_upstream(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"^upstream must be an http\(s\) URL"):
        build_settings({}, isolated(tmp_path, PIP_INDEX_URL="file:///srv/simple"))


@pytest.mark.parametrize(
    ("raw", "expected"), [("30s", 30.0), ("5m", 300.0), ("0", 0.0), ("off", None), ("never", None)]
)
def test_client_revalidate_after(tmp_path: Path, raw: str, expected: float | None) -> None:
    env = isolated(tmp_path, CACHEPROXY_CLIENT_REVALIDATE_AFTER=raw)
    assert build_settings({}, env).client_revalidate_after == expected
    assert build_settings({}, isolated(tmp_path)).client_revalidate_after is None  # off
    flag = build_settings({"client_revalidate_after": raw}, isolated(tmp_path))
    assert flag.client_revalidate_after == expected


@pytest.mark.parametrize(
    ("flags", "upstream"),
    [
        pytest.param({}, "http://127.0.0.1:8503/simple/", id="default-bind"),
        pytest.param({}, "http://localhost:8503/simple/", id="localhost"),
        pytest.param({}, "http://LOCALHOST:8503/simple/", id="localhost-case"),
        pytest.param({"host": "0.0.0.0", "port": "9000"}, "http://0.0.0.0:9000/", id="host"),
        pytest.param({"port": "80"}, "http://127.0.0.1/simple/", id="implicit-port"),
        pytest.param({}, "http://[::1]:8503/simple/", id="ipv6-loopback"),
    ],
)
def test_upstream_that_is_the_proxy_itself(
    tmp_path: Path, flags: dict[str, object], upstream: str
) -> None:
    with pytest.raises(ConfigError, match=r"is this proxy itself"):
        build_settings({**flags, "upstream": upstream}, isolated(tmp_path))
    # The usual way to get there: pip is already configured to use cacheproxy.
    with pytest.raises(ConfigError, match=r"is this proxy itself"):
        build_settings(flags, isolated(tmp_path, PIP_INDEX_URL=upstream))


def test_upstream_on_another_port_is_fine(tmp_path: Path) -> None:
    settings = build_settings({"upstream": "http://127.0.0.1:3141/root/pypi/"}, isolated(tmp_path))
    assert settings.upstream == URL("http://127.0.0.1:3141/root/pypi/")


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("port", 0, r"^port must be between 1 and 65535, not 0$"),
        ("upstream", URL("ftp://x/"), r"^upstream must be an http\(s\) URL"),
        ("upstream", URL("ftp://u:secret@idx.example/"), r"^upstream must be an http\(s\) URL"),
        ("upstream", URL("/relative/"), r"^upstream must be an http\(s\) URL"),
        ("negative_ttl", -1.0, r"^negative_ttl must not be negative$"),
        ("revalidate_floor", -0.5, r"^revalidate_floor must not be negative$"),
        ("client_revalidate_after", -1.0, r"^client_revalidate_after must not be negative$"),
        ("failure_backoff", -1.0, r"^failure_backoff must not be negative$"),
        ("connect_timeout", 0.0, r"^connect_timeout must be positive$"),
        ("read_timeout", -1.0, r"^read_timeout must be positive$"),
        ("page_timeout", 0.0, r"^page_timeout must be positive$"),
    ],
)
def test_settings_validate_themselves(
    tmp_path: Path, field: str, value: object, message: str
) -> None:
    fields: dict[str, object] = {"cache_dir": tmp_path, "upstream": URL(MIRROR), field: value}
    with pytest.raises(ConfigError, match=message) as info:
        Settings(**fields)  # type: ignore[arg-type]
    assert "secret" not in str(info.value)


# ---- redaction --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("https://user:s3cret@idx.example/simple/", "https://user:***@idx.example/simple/"),
        (
            "https://__token__:pypi-AgEIcHlwaS5vcmc@idx.example/",
            "https://__token__:***@idx.example/",
        ),
        ("https://ghp_abcdef123456@idx.example/simple/", "https://***@idx.example/simple/"),
        ("https://user:@idx.example/", "https://user:***@idx.example/"),
        ("https://idx.example/simple/", "https://idx.example/simple/"),
        (URL("https://u:pw@idx.example:8443/s/"), "https://u:***@idx.example:8443/s/"),
        # Unparseable: everything up to the last "@" is hidden.
        ("https://u:pw@idx.example:99999/", "https://***@idx.example:99999/"),
        ("https://u:p@w@[::1/x", "https://***@[::1/x"),
        ("u:pw@[::1", "***@[::1"),
        ("user:pw@idx.example/simple", "***@idx.example/simple"),  # no scheme: not absolute
        ("not a url", "not a url"),
        ("http://[::1", "http://[::1"),
    ],
)
def test_redact_url(url: str | URL, shown: str) -> None:
    assert redact_url(url) == shown


def test_secrets_never_reach_settings_errors_or_names(tmp_path: Path) -> None:
    settings = build_settings({"upstream": "https://u:s3cret@idx.example/s"}, isolated(tmp_path))
    assert settings.upstream.password == "s3cret"  # still used for requests
    assert settings.upstream_redacted == "https://u:***@idx.example/s/"
    for bad in [
        "ftp://u:s3cret@idx.example/",
        "https://u:s3cret@idx.example:99999/",
        "u:s3cret@idx.example/simple",
    ]:
        with pytest.raises(ConfigError) as info:
            build_settings({"upstream": bad}, isolated(tmp_path))
        assert "s3cret" not in str(info.value)
    with pytest.raises(ConfigError) as info:
        build_settings({"upstream": "http://u:s3cret@127.0.0.1:8503/"}, isolated(tmp_path))
    assert "s3cret" not in str(info.value)


# ---- shared storage (replicas) ---------------------------------------------------------


def test_storage_is_local_by_default_or_an_s3_location(tmp_path: Path) -> None:
    assert build_settings({}, isolated(tmp_path)).storage is None
    assert build_settings({"storage": "local"}, isolated(tmp_path)).storage is None
    env = isolated(tmp_path, CACHEPROXY_STORAGE="s3://team-cache/pypi/")
    assert build_settings({}, env).storage == Location("team-cache", "pypi")
    flag = build_settings({"storage": "s3://other"}, env).storage
    assert flag == Location("other", "")


@pytest.mark.parametrize(
    ("raw", "problem"),
    [
        ("/srv/cache", "must be local or s3://BUCKET[/PREFIX]"),
        ("s3://Bad_Bucket", "is not a bucket name"),
        ("s3://bucket/../x", "the prefix '../x' is invalid"),
    ],
)
def test_a_bad_storage_names_its_source(tmp_path: Path, raw: str, problem: str) -> None:
    with pytest.raises(ConfigError, match="CACHEPROXY_STORAGE") as env_error:
        build_settings({}, isolated(tmp_path, CACHEPROXY_STORAGE=raw))
    assert problem in str(env_error.value)
    with pytest.raises(ConfigError, match="--storage"):
        build_settings({"storage": raw}, isolated(tmp_path))


def test_lease_ttl_and_replica_id(tmp_path: Path) -> None:
    env = isolated(tmp_path, CACHEPROXY_LEASE_TTL="30", CACHEPROXY_REPLICA_ID=" pod-a ")
    settings = build_settings({}, env)
    assert (settings.lease_ttl, settings.replica_id) == (30.0, "pod-a")
    with pytest.raises(ConfigError, match=r"CACHEPROXY_LEASE_TTL=0\.5: must be between 1 and 600"):
        build_settings({}, isolated(tmp_path, CACHEPROXY_LEASE_TTL="0.5"))


def test_serve_with_storage_needs_the_s3_extra(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import importlib.util

    from cacheproxy.cli.main import main

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: None if name == "aiobotocore" else real(name, *a),
    )
    code = main(
        [
            "serve", "--storage", "s3://team-cache", "--cache-dir", str(tmp_path / "c"),
            "--upstream", "http://127.0.0.1:9/simple/", "--port", "1",
        ]
    )  # fmt: skip
    assert code == 2
    err = capsys.readouterr().err
    assert "needs the s3 extra" in err
    assert "Traceback" not in err
