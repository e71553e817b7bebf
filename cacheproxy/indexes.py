"""Several upstream indexes and the routes that say which one each project comes from.

Installing from more than one index with pip's ``--extra-index-url`` merges every index's
files for a name, which is how dependency-confusion attacks work (the torchtriton package,
December 2022). Here each project comes from exactly one index: the first route whose glob
matches its normalized name (PEP 503) picks it, and every other project comes from the
default index, the first one configured. Nothing falls through to another index.

Where the values come from, highest first: ``--index NAME=URL`` / ``--route PATTERN=NAME``
(and ``--upstream URL``, which names the default index ``pypi``), then the TOML file of
``--config`` / ``CACHEPROXY_CONFIG`` (per-index settings and credentials live there), then
``CACHEPROXY_UPSTREAM``, then pip's configured index. A base module: it imports no package
of ours, so settings.py can hold what it builds.
"""

import fnmatch
import re
import tomllib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from yarl import URL

from cacheproxy.errors import ConfigError
from cacheproxy.units import parse_duration
from cacheproxy.urls import redact_url

DEFAULT_INDEX_NAME = "pypi"  # what --upstream (and a setup with no --index) calls its index
# Index names appear in URLs (/index/NAME/simple/), page keys and metric labels: keep them
# short and plain. "-" cannot start one, so "/packages/-/NAME/" never clashes with a name.
_NAME_RE = re.compile(r"^[a-z0-9](?:[a-z0-9_-]{0,30}[a-z0-9])?$")
# What a route's glob may contain besides a normalized name: fnmatch's own syntax.
_PATTERN_RE = re.compile(r"^[a-z0-9*?\[\]!-]+$")
_INDEX_KEYS = frozenset(
    {
        "name",
        "url",
        "index_ttl",
        "connect_timeout",
        "read_timeout",
        "page_timeout",
        "forbidden_is_missing",
        "min_age",
        "username",
        "username_env",
        "password",
        "password_env",
    }
)
_TIMEOUTS = ("connect_timeout", "read_timeout", "page_timeout")


@dataclass(frozen=True, slots=True, kw_only=True)
class IndexConfig:
    """One upstream index and its own settings (None: the global setting)."""

    name: str
    # With any credentials in its userinfo, sent to this URL's origin only: never printed
    # (use :attr:`shown`), so not in the repr either.
    url: URL = field(repr=False)
    index_ttl: float | None = None
    connect_timeout: float | None = None
    read_timeout: float | None = None
    page_timeout: float | None = None
    # PyTorch's index answers 403, not 404, for a project it does not have.
    forbidden_is_missing: bool = False
    # This index's release-age gate (simple/gate.py), instead of the global --min-age:
    # e.g. 0 for a private index whose releases the team made itself.
    min_age: float | None = None

    @property
    def shown(self) -> str:
        return redact_url(self.url)


@dataclass(frozen=True, slots=True)
class Route:
    """``pattern`` (a glob over the normalized project name) → index ``index``."""

    pattern: str
    index: str

    def matches(self, project: str) -> bool:
        return fnmatch.fnmatchcase(project, self.pattern)


def route_for(project: str, routes: Sequence[Route], default: str) -> str:
    """The index a normalized project name comes from: the first matching route's, else
    ``default``."""
    for route in routes:
        if route.matches(project):
            return route.index
    return default


def check_name(raw: str, what: str = "index name") -> str:
    name = raw.strip()
    if not _NAME_RE.match(name):
        raise ConfigError(
            f"{what} must be 1-32 lower-case letters, digits, '-' or '_', not {raw[:40]!r}"
        )
    return name


def index_url(raw: str, name: str) -> URL:
    """Parse an index URL and make sure it ends in ``/`` (pages are relative to it)."""
    raw = raw.strip()
    try:
        url = URL(raw)
        ok = url.scheme in ("http", "https") and bool(url.host)
        if ok:
            # raw_path, encoded: keep the index's percent-encoding as written.
            path = url.raw_path if url.raw_path.endswith("/") else url.raw_path + "/"
            return url.with_path(path, encoded=True).with_fragment(None)
    except ValueError:  # yarl checks the port only when the URL is rebuilt
        pass
    raise ConfigError(f"index {name}: not an http(s) URL of a simple index: {redact_url(raw)!r}")


def normalise_pattern(raw: str) -> str:
    """A route's glob, spelt as the names it is matched against (PEP 503 normalized)."""
    pattern = re.sub(r"[-_.]+", "-", raw.strip().lower())
    if not pattern or not _PATTERN_RE.match(pattern):
        raise ConfigError(f"route pattern must be a glob over project names, not {raw[:60]!r}")
    return pattern


def _pair(raw: str, what: str) -> tuple[str, str]:
    left, sep, right = raw.partition("=")
    if not sep or not left.strip() or not right.strip():
        raise ConfigError(f"{what} must look like {what.split()[-1]}, not {redact_url(raw)!r}")
    return left.strip(), right.strip()


def _number(name: str, key: str, value: object, *, positive: bool) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or value != value:
        raise ConfigError(f"index {name}: {key} must be a number, not {value!r}")
    if value < 0 or (positive and value == 0) or value == float("inf"):
        kind = "positive" if positive else "non-negative"
        raise ConfigError(f"index {name}: {key} must be a finite {kind} number")
    return float(value)


def _min_age(name: str, raw: object) -> float:
    """An index's own release-age gate: a duration (``"7d"``, ``"36h"``) or seconds; 0 is no
    cooldown on that index."""
    problem = f"index {name}: min_age must be a duration like 7d or 36h, or 0 for none"
    if isinstance(raw, bool) or not isinstance(raw, str | int | float):
        raise ConfigError(f"{problem}, not {raw!r}")
    try:
        return parse_duration(str(raw))  # no sign, no inf or nan: its pattern has none
    except ConfigError:
        raise ConfigError(f"{problem}, not {str(raw)[:40]!r}") from None


def _credential(
    name: str, entry: Mapping[str, Any], key: str, environ: Mapping[str, str]
) -> str | None:
    direct, env_name = entry.get(key), entry.get(f"{key}_env")
    if direct is not None and env_name is not None:
        raise ConfigError(f"index {name}: give {key} or {key}_env, not both")
    if env_name is not None:
        if not isinstance(env_name, str) or not env_name:
            raise ConfigError(f"index {name}: {key}_env must name an environment variable")
        value = environ.get(env_name)
        if not value:
            # The variable's name only: never its value.
            raise ConfigError(f"index {name}: environment variable {env_name} is not set")
        return value
    if direct is not None and not isinstance(direct, str):
        raise ConfigError(f"index {name}: {key} must be a string")
    return direct


def _from_entry(
    entry: Mapping[str, Any], environ: Mapping[str, str], url: URL | None
) -> IndexConfig:
    """One ``[[index]]`` table; ``url`` given when the table has none (the default)."""
    raw_name = entry.get("name")
    if not isinstance(raw_name, str):
        raise ConfigError("every [[index]] needs a name")
    name = check_name(raw_name)
    unknown = sorted(set(entry) - _INDEX_KEYS)
    if unknown:
        raise ConfigError(f"index {name}: unknown setting {unknown[0]!r}")
    raw_url = entry.get("url")
    if raw_url is not None:
        if not isinstance(raw_url, str):
            raise ConfigError(f"index {name}: url must be a string")
        url = index_url(raw_url, name)
    if url is None:
        raise ConfigError(f"index {name} has no url (only the first index may leave it out)")
    user = _credential(name, entry, "username", environ)
    password = _credential(name, entry, "password", environ)
    if password is not None or user is not None:
        url = url.with_user(user if user is not None else url.user or "")
        url = url.with_password(password)
    values: dict[str, Any] = {}
    if "index_ttl" in entry:
        values["index_ttl"] = _number(name, "index_ttl", entry["index_ttl"], positive=False)
    for key in _TIMEOUTS:
        if key in entry:
            values[key] = _number(name, key, entry[key], positive=True)
    if "min_age" in entry:
        values["min_age"] = _min_age(name, entry["min_age"])
    forbidden = entry.get("forbidden_is_missing", False)
    if not isinstance(forbidden, bool):
        raise ConfigError(f"index {name}: forbidden_is_missing must be true or false")
    return IndexConfig(name=name, url=url, forbidden_is_missing=forbidden, **values)


# Top-level keys of the file that are the hosted indexes' and users' settings (read by
# settings.team_settings, with the flags' spelling): hosted = ["team", "ops=bob,carol"].
TEAM_KEYS = ("hosted", "users_file", "auth_reads", "max_upload_size", "tls_cert", "tls_key")


def config_team(flags: Mapping[str, object], environ: Mapping[str, str]) -> dict[str, Any]:
    """The TEAM_KEYS the config file sets (none without ``--config``)."""
    config_path = flags.get("config") or environ.get("CACHEPROXY_CONFIG") or None
    if not config_path:
        return {}
    data = load_config(Path(str(config_path)).expanduser())
    return {key: data[key] for key in TEAM_KEYS if key in data}


@dataclass(frozen=True, slots=True)
class IndexSetup:
    """What :func:`resolve_indexes` decided: the indexes (default first) and the routes."""

    indexes: tuple[IndexConfig, ...]
    routes: tuple[Route, ...]


def load_config(path: Path) -> dict[str, Any]:
    """Read the TOML file; one line naming the problem when it cannot be used."""
    try:
        with path.open("rb") as f:
            return tomllib.load(f)
    except OSError as e:
        raise ConfigError(f"config file {path}: {e.strerror or e}") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"config file {path}: {e}") from None


def resolve_indexes(
    flags: Mapping[str, object],
    environ: Mapping[str, str],
    fallback_url: Callable[[], str],
) -> IndexSetup:
    """The indexes and routes from the flags (``upstream``, ``index``, ``route``,
    ``config``) over the config file over ``fallback_url()`` (CACHEPROXY_UPSTREAM or pip's
    index), asked only when the default index has no URL otherwise.

    An ``--index`` naming an index of the file replaces its URL and keeps its settings; a
    new one is added after the file's. ``--upstream URL`` is ``--index pypi=URL`` that
    also makes ``pypi`` the default. ``--route`` flags are tried before the file's routes.

    Raises:
        ConfigError: anything unusable, in one line.
    """
    config_path = flags.get("config") or environ.get("CACHEPROXY_CONFIG") or None
    data = load_config(Path(str(config_path)).expanduser()) if config_path else {}
    unknown = sorted(set(data) - {"index", "routes", *TEAM_KEYS})
    if unknown:
        keys = ", ".join(("index", "routes", *TEAM_KEYS))
        raise ConfigError(f"config file: unknown setting {unknown[0]!r} ({keys})")
    entries = data.get("index", [])
    if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
        raise ConfigError("config file: index must be an array of tables ([[index]])")
    flag_urls: dict[str, str] = {}
    for raw in _strings(flags.get("index")):
        name, url = _pair(raw, "--index NAME=URL")
        if check_name(name) in flag_urls:
            raise ConfigError(f"--index {name} is given twice")
        flag_urls[name] = url
    upstream_flag = flags.get("upstream")
    if upstream_flag:
        if DEFAULT_INDEX_NAME in flag_urls:
            raise ConfigError(f"--upstream is --index {DEFAULT_INDEX_NAME}=URL: give one of them")
        flag_urls = {DEFAULT_INDEX_NAME: str(upstream_flag), **flag_urls}
    indexes: list[IndexConfig] = []
    for position, entry in enumerate(entries):
        name = entry.get("name")
        override = flag_urls.pop(name, None) if isinstance(name, str) else None
        if override is not None:
            entry = {**entry, "url": override}
        default_url = None
        if position == 0 and entry.get("url") is None:
            default_url = index_url(fallback_url(), str(name))
        config = _from_entry(entry, environ, default_url)
        if any(i.name == config.name for i in indexes):
            raise ConfigError(f"config file: index {config.name} is defined twice")
        indexes.append(config)
    for name, url in flag_urls.items():
        indexes.append(IndexConfig(name=name, url=index_url(url, name)))
    if upstream_flag:  # --upstream's index is the default, wherever the file put it
        indexes.sort(key=lambda i: i.name != DEFAULT_INDEX_NAME)
    if not indexes:
        fallback = index_url(fallback_url(), DEFAULT_INDEX_NAME)
        indexes.append(IndexConfig(name=DEFAULT_INDEX_NAME, url=fallback))
    routes = [_route(raw) for raw in _strings(flags.get("route"))]
    table = data.get("routes", {})
    if not isinstance(table, dict):
        raise ConfigError('config file: routes must be a table of "pattern" = "index"')
    for pattern, target in table.items():
        if not isinstance(target, str):
            raise ConfigError(f"config file: route {pattern!r} must name an index")
        routes.append(Route(normalise_pattern(pattern), check_name(target)))
    known = {i.name for i in indexes}
    for route in routes:
        if route.index not in known:
            raise ConfigError(f"route {route.pattern} names no configured index: {route.index}")
    return IndexSetup(tuple(indexes), tuple(routes))


def _route(raw: str) -> Route:
    pattern, name = _pair(raw, "--route PATTERN=NAME")
    return Route(normalise_pattern(pattern), check_name(name))


def _strings(value: object) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    if isinstance(value, list | tuple):
        return [str(v) for v in value]
    raise ConfigError(f"not a list of values: {value!r}")


def wanted(flags: Mapping[str, object], environ: Mapping[str, str]) -> bool:
    """Whether indexes are configured at all (else the single ``--upstream`` setup)."""
    return bool(flags.get("index") or flags.get("route") or flags.get("config")) or bool(
        environ.get("CACHEPROXY_CONFIG", "").strip()
    )
