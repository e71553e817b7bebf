"""The one frozen settings object, and where its values come from.

Precedence: command-line flags over ``CACHEPROXY_*`` environment variables over defaults.
Library code never reads the environment: the CLI builds a :class:`Settings` once and passes
it down. Everything is validated here so a bad value is one clear line at start-up.
"""

import configparser
import math
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from yarl import URL

from cacheproxy import indexes as multi
from cacheproxy.errors import ConfigError
from cacheproxy.indexes import DEFAULT_INDEX_NAME, IndexConfig, Route
from cacheproxy.units import BadTimestamp, parse_duration, parse_size, parse_timestamp
from cacheproxy.urls import Location, is_loopback_host, redact_url

DEFAULT_HOST = "127.0.0.1"
# 8503, after PEP 503: no common service uses it (unlike 3141 devpi, 3142 apt-cacher, 5000).
DEFAULT_PORT = 8503
DEFAULT_INDEX_TTL = 600.0  # PyPI's own max-age for project pages (Cache-Control: max-age=600)
DEFAULT_MAX_UPLOAD = 100 * 1024 * 1024  # PyPI's default per-file upload limit
# A hosted index's name is one URL segment (/index/NAME/); "simple" would read oddly.
_HOSTED_NAME_RE = re.compile(r"^[a-z0-9](?:[a-z0-9._-]{0,62}[a-z0-9])?$")


@dataclass(frozen=True, slots=True, kw_only=True)
class Settings:
    """Everything `cacheproxy serve` needs, validated."""

    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT
    cache_dir: Path
    upstream: URL
    index_ttl: float = DEFAULT_INDEX_TTL
    offline: bool = False
    # A 404 from upstream is remembered this long: new projects must appear quickly.
    negative_ttl: float = 60.0
    # When the proxy itself needs a fresher page (a file its copy does not list, see
    # proxy/files.py), it asks upstream again only if its copy is older than this.
    revalidate_floor: float = 30.0
    # A client's "Cache-Control: max-age=0"/"no-cache" (pip sends it on every page request)
    # makes the proxy revalidate a page older than this; None: the index TTL alone decides,
    # as in nginx, devpi and proxpi, so a warm build makes no upstream request at all.
    client_revalidate_after: float | None = None
    # After upstream failed for a page, serve the stale copy without retrying for this long.
    failure_backoff: float = 30.0
    connect_timeout: float = 10.0
    # Files: only connect/read timeouts, never a total one (CUDA wheels are gigabytes; 7.5).
    read_timeout: float = 60.0
    # Index pages: a total bound, because a client is waiting on it.
    page_timeout: float = 30.0
    # Extra attempts for idempotent upstream requests that failed in a way worth retrying
    # (connect errors, 429, 5xx, a connection reset mid-file); 0 disables retries.
    retries: int = 2
    # Processes serving one port (pre-forked) and sharing the cache directory.
    workers: int = 1
    # Another process may be using the cache directory (a running proxy, when `cacheproxy
    # warm` fills it directly): do not clean temporaries or repair at start.
    shared_dir: bool = False
    # Bytes the stored files may take (None: no limit); least recently used go first.
    max_size: int | None = None
    # Bearer token for /-/admin/...; None turns those endpoints off. Environment only
    # (CACHEPROXY_ADMIN_TOKEN): a command-line flag would show in `ps`.
    admin_token: str | None = field(default=None, repr=False)
    log_level: str = "info"
    log_format: str = "text"  # or "json": one object a line
    # The release-age gate (simple/gate.py): files uploaded less than min_age seconds ago,
    # or after exclude_newer (an epoch), are not handed out; unknown upload times are held
    # unless min_age_unknown is "allow". Exemptions: NAME, NAME==VERSION or a name glob.
    min_age: float | None = None
    exclude_newer: float | None = None
    min_age_exempt: tuple[str, ...] = ()
    min_age_unknown: str = "deny"
    # PEP 658 metadata for every wheel: where the index advertises none, the proxy reads
    # METADATA from the wheel (stored, or by HTTP ranges) and advertises it (metadata.py).
    synthesize_metadata: bool = True
    # File hosts trusted wherever they resolve, besides the index's own host name: a team
    # index whose files live on another private host (see proxy/addresses.py).
    internal_hosts: tuple[str, ...] = ()
    # File downloads running at once (upstream.py): a flood of cold requests for big files
    # gets a 503 after a bounded wait instead of pulling unbounded data.
    max_downloads: int = 64
    # Hosted indexes (proxy/hosted.py), by name, in --hosted order; and per index the
    # users who may upload to it (an index missing here: every user in the users file).
    hosted: tuple[str, ...] = ()
    uploaders: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    users_file: Path | None = None  # htpasswd with bcrypt hashes (proxy/users.py)
    auth_reads: bool = False  # reads need a user too (not /-/health)
    max_upload_size: int = DEFAULT_MAX_UPLOAD
    tls_cert: Path | None = None
    tls_key: Path | None = None
    # Several upstream indexes, the default first (its URL is ``upstream``), and the routes
    # that pick one per project (indexes.py). Empty: ``upstream`` alone, named "pypi".
    indexes: tuple[IndexConfig, ...] = ()
    routes: tuple[Route, ...] = ()
    # Replicas sharing one cache (store/tiered.py): ``s3://BUCKET[/PREFIX]`` on an
    # S3-compatible store, with cache_dir as this replica's local tier. None: local disk.
    storage: Location | None = None
    # Who this replica is in the store's leases (host name and process id by default).
    replica_id: str | None = None
    # A replica downloading a file for all renews its lease every third of this; a dead
    # one's lease is taken over this long (plus 2 s of allowed clock skew) after.
    lease_ttl: float = 10.0

    def __post_init__(self) -> None:
        if not 0 < self.port < 65536:
            raise ConfigError(f"port must be between 1 and 65535, not {self.port}")
        if self.upstream.scheme not in ("http", "https") or not self.upstream.host:
            raise ConfigError(
                "upstream must be an http(s) URL of a simple index, "
                f"not {redact_url(self.upstream)!r}"
            )
        if not 1 <= self.lease_ttl <= 600:
            raise ConfigError(f"lease_ttl must be between 1 and 600 seconds, not {self.lease_ttl}")
        for name in ("index_ttl", "negative_ttl", "revalidate_floor", "failure_backoff"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name} must not be negative")
        if self.client_revalidate_after is not None and self.client_revalidate_after < 0:
            raise ConfigError("client_revalidate_after must not be negative")
        if not 1 <= self.workers <= 64:
            raise ConfigError(f"workers must be between 1 and 64, not {self.workers}")
        if not 0 <= self.retries <= 10:
            raise ConfigError(f"retries must be between 0 and 10, not {self.retries}")
        for name in ("connect_timeout", "read_timeout", "page_timeout"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"{name} must be positive")
        if self.min_age_unknown not in ("allow", "deny"):
            raise ConfigError(
                f"min-age-unknown must be allow or deny, not {self.min_age_unknown!r}"
            )
        if self.min_age is not None and self.min_age < 0:
            raise ConfigError("min-age must not be negative")
        if self.log_format not in ("text", "json"):
            raise ConfigError(f"log format must be text or json, not {self.log_format!r}")
        if not 1 <= self.max_downloads <= 10_000:
            raise ConfigError(
                f"max-downloads must be between 1 and 10000, not {self.max_downloads}"
            )
        if self.indexes and self.indexes[0].url != self.upstream:
            raise ConfigError("upstream must be the URL of the first (default) index")
        self._check_team()

    def _check_team(self) -> None:
        for name in self.hosted:
            if not _HOSTED_NAME_RE.match(name):
                raise ConfigError(
                    f"hosted index name must be lower-case letters, digits, '.', '_' or '-', "
                    f"not {name!r}"
                )
        if len(set(self.hosted)) != len(self.hosted):
            raise ConfigError("a hosted index is named twice")
        if self.auth_reads and self.users_file is None:
            raise ConfigError("--auth-reads needs --users FILE")
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ConfigError("--tls-cert and --tls-key go together")
        if self.max_upload_size <= 0:
            raise ConfigError("max-upload-size must be positive")
        # /index/NAME/ is one URL space for hosted and upstream indexes (web/hosted_handlers.py).
        if clash := set(self.hosted) & {i.name for i in self.index_configs}:
            raise ConfigError(f"{sorted(clash)[0]!r} names both a hosted and an upstream index")

    @property
    def index_configs(self) -> tuple[IndexConfig, ...]:
        """The indexes, the default first (``upstream`` alone when none are configured)."""
        return self.indexes or (IndexConfig(name=DEFAULT_INDEX_NAME, url=self.upstream),)

    @property
    def upstream_redacted(self) -> str:
        return redact_url(self.upstream)


def normalise_index_url(raw: str) -> URL:
    """Parse an index URL and make sure it ends in ``/`` (pages are relative to it)."""
    raw = raw.strip()
    try:
        url = URL(raw)
    except ValueError as e:
        raise ConfigError(f"upstream is not a valid URL: {redact_url(raw)!r}") from e
    if url.scheme not in ("http", "https") or not url.host:
        raise ConfigError(
            f"upstream must be an http(s) URL of a simple index, not {redact_url(raw)!r}"
        )
    try:
        # raw_path, encoded=True: keep upstream's percent-encoding (%2B, %2F) as written.
        # Always rebuilt, because a bare "https://host" has raw_path "/" but prints no slash.
        path = url.raw_path if url.raw_path.endswith("/") else url.raw_path + "/"
        return url.with_path(path, encoded=True).with_fragment(None)
    except ValueError as e:  # yarl checks the port only when the URL is rebuilt
        raise ConfigError(f"upstream is not a valid URL: {redact_url(raw)!r}") from e


def pip_config_files(environ: Mapping[str, str]) -> list[Path]:
    """pip's configuration files, lowest precedence first (pip's own order).

    As pip's ``configuration.py`` loads them: global (``$XDG_CONFIG_DIRS``, then ``/etc``),
    user, site, then ``PIP_CONFIG_FILE``; a later file overrides an earlier one.
    ``PIP_CONFIG_FILE=os.devnull`` loads none at all: that is also how tests shut out this
    machine's ``/etc/pip.conf``, which pip (and so this function) always reads otherwise.
    """
    explicit = environ.get("PIP_CONFIG_FILE")
    if explicit == os.devnull:
        return []
    home = Path(environ.get("HOME") or str(Path.home()))
    xdg_config = Path(environ.get("XDG_CONFIG_HOME") or str(home / ".config"))
    # platformdirs keeps the $XDG_CONFIG_DIRS order and pip loads the files in it, so the
    # *last* directory wins (not the first, as the XDG spec would have it).
    dirs = (environ.get("XDG_CONFIG_DIRS") or "/etc/xdg").split(":")
    files = [Path(d) / "pip" / "pip.conf" for d in dirs if d]
    files.append(Path("/etc/pip.conf"))
    # pip skips the user files when PIP_CONFIG_FILE names a file that exists.
    if not (explicit and Path(explicit).exists()):
        files += [home / ".pip" / "pip.conf", xdg_config / "pip" / "pip.conf"]
    if site := environ.get("VIRTUAL_ENV"):
        files.append(Path(site) / "pip.conf")
    if explicit:
        files.append(Path(explicit))
    return files


def pip_index_url(environ: Mapping[str, str]) -> str:
    """The index pip on this host uses: PIP_INDEX_URL, pip.conf's index-url, else pip's default.

    The default comes from pip itself at run time, so no registry host is written here.
    """
    if url := environ.get("PIP_INDEX_URL", "").strip():
        return url.split()[0]
    # pip merges the files (a later one overriding), then applies the sections in the order
    # [global] < [install] (cli/parser.py, _get_ordered_configuration_items): an [install]
    # value in any file beats every [global] one, and an empty value counts as unset.
    found: dict[str, str] = {}
    for path in pip_config_files(environ):
        parser = configparser.RawConfigParser()
        try:
            parser.read(path, encoding="utf-8")
        except (OSError, UnicodeDecodeError, configparser.Error):
            continue
        for section in ("global", "install"):
            if not parser.has_section(section):
                continue
            for key, value in parser.items(section):
                # pip's _normalize_name: any case, "_" for "-", an optional leading "--".
                if key.lower().replace("_", "-").removeprefix("--") == "index-url":
                    found[section] = value
    for section in ("install", "global"):
        if words := found.get(section, "").split():
            return words[0]
    try:
        from pip._internal.models.index import PyPI
    except ImportError as e:  # pragma: no cover - pip is in every venv we support
        raise ConfigError(
            "no upstream configured and pip is not importable: pass --upstream URL"
        ) from e
    return str(PyPI.simple_url)


def default_cache_dir(environ: Mapping[str, str]) -> Path:
    """XDG user cache dir: $XDG_CACHE_HOME/cacheproxy, else ~/.cache/cacheproxy."""
    base = environ.get("XDG_CACHE_HOME") or str(
        Path(environ.get("HOME", str(Path.home()))) / ".cache"
    )
    return Path(base) / "cacheproxy"


def parse_bool(name: str, raw: str) -> bool:
    value = raw.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off", ""):
        return False
    raise ConfigError(f"{name} must be true or false, not {raw!r}")


def parse_number(name: str, raw: str | float, *, integer: bool = False) -> float:
    try:
        value = int(raw) if integer else float(raw)
    except (TypeError, ValueError):
        kind = "an integer" if integer else "a number"
        raise ConfigError(f"{name} must be {kind}, not {raw!r}") from None
    if not math.isfinite(value):  # "nan" would pass every range check; "inf" breaks max-age
        raise ConfigError(f"{name} must be a finite number, not {raw!r}")
    return value


def parse_off_duration(name: str, raw: str) -> float | None:
    """A duration (``30s``, ``5m``, plain seconds), or ``off``/``never``: None."""
    if raw.strip().lower() in ("off", "never", "none"):
        return None
    try:
        return parse_duration(raw)
    except ConfigError:
        raise ConfigError(
            f"{name} must be a duration like 30s or 5m, or off, not {raw!r}"
        ) from None


# The start of a problem a value can have (as opposed to "upstream X is this proxy itself").
_PROBLEM = re.compile(r"^(must |is not |percentage )")


def _named(error: ConfigError, name: str, raw: object, env_var: str | None) -> ConfigError | None:
    """``error`` reworded to name where the value came from: ``--port must be an integer,
    not 'x'`` for a flag, ``CACHEPROXY_PORT=x: must be an integer`` for a variable, since
    that is what the user has to find and change. None: the error is not about ``name``."""
    message = str(error)
    for label in (name, name.replace("_", "-")):
        problem = message.removeprefix(f"{label} ")
        if problem != message and _PROBLEM.match(problem):
            break
    else:
        return None
    if env_var is None:
        return ConfigError(f"--{name.replace('_', '-')} {problem}")
    shown = redact_url(str(raw)) if name == "upstream" else str(raw)
    return ConfigError(f"{env_var}={shown}: {problem.split(', not ', 1)[0]}")


def build_settings(flags: Mapping[str, object], environ: Mapping[str, str]) -> Settings:
    """Settings from parsed CLI flags (None = not given) over CACHEPROXY_* variables.

    Raises:
        ConfigError: any value is invalid; the message names the flag or the variable it
            came from, and says why.
    """
    given: dict[str, tuple[object, str | None]] = {}  # name -> (raw, variable or None: flag)
    try:
        return _build(flags, environ, given)
    except ConfigError as e:
        for name, (raw, env_var) in given.items():
            if (named := _named(e, name, raw, env_var)) is not None:
                raise named from None
        raise


def _build(
    flags: Mapping[str, object],
    environ: Mapping[str, str],
    given: dict[str, tuple[object, str | None]],
) -> Settings:
    def pick(name: str) -> object | None:
        value = flags.get(name)
        if value is not None:
            given[name] = (value, None)
            return value
        var = f"CACHEPROXY_{name.upper()}"
        env = environ.get(var)
        if env in (None, ""):
            return None
        given[name] = (env, var)
        return env

    host = str(pick("host") or DEFAULT_HOST)
    port_raw = pick("port")
    # "is not None": a given 0 must reach the range check, not silently become the default.
    port = (
        int(parse_number("port", str(port_raw), integer=True))
        if port_raw is not None
        else DEFAULT_PORT
    )
    cache_raw = pick("cache_dir")
    cache_dir = Path(str(cache_raw)).expanduser() if cache_raw else default_cache_dir(environ)
    upstream_raw = pick("upstream")
    setup = None
    if multi.wanted(flags, environ):  # --index, --route, --config (indexes.py)
        env_upstream = environ.get("CACHEPROXY_UPSTREAM", "").strip()
        setup = multi.resolve_indexes(
            flags, environ, lambda: env_upstream or pip_index_url(environ)
        )
        upstream = setup.indexes[0].url
    else:
        upstream = normalise_index_url(
            str(upstream_raw) if upstream_raw else pip_index_url(environ)
        )
    ttl_raw = pick("index_ttl")
    index_ttl = (
        parse_number("index-ttl", str(ttl_raw)) if ttl_raw is not None else DEFAULT_INDEX_TTL
    )
    offline_raw = pick("offline")
    if isinstance(offline_raw, bool):
        offline = offline_raw
    else:
        offline = parse_bool("offline", str(offline_raw)) if offline_raw is not None else False
    tuning: dict[str, Any] = {}
    revalidate_raw = pick("client_revalidate_after")
    if revalidate_raw is not None:
        tuning["client_revalidate_after"] = parse_off_duration(
            "client-revalidate-after", str(revalidate_raw)
        )
    max_raw = pick("max_size")
    if max_raw is not None:
        tuning["max_size"] = parse_size(str(max_raw), cache_dir)
    for name in ("connect_timeout", "read_timeout", "page_timeout", "retries", "workers"):
        raw = pick(name)
        if raw is not None:
            integer = name in ("retries", "workers")
            value = parse_number(name.replace("_", "-"), str(raw), integer=integer)
            tuning[name] = int(value) if integer else value
    if (upstream.host == host or is_loopback_host(upstream.host or "")) and upstream.port == port:
        raise ConfigError(
            f"upstream {redact_url(upstream)} is this proxy itself "
            "(is pip configured to use cacheproxy? pass --upstream)"
        )
    tuning.update(_network_limits(flags, environ))
    if storage_raw := pick("storage"):
        tuning["storage"] = parse_storage(str(storage_raw))
    if replica_raw := pick("replica_id"):
        tuning["replica_id"] = str(replica_raw).strip()
    if (lease_raw := pick("lease_ttl")) is not None:
        tuning["lease_ttl"] = parse_number("lease-ttl", str(lease_raw))
    config_team = multi.config_team(flags, environ)

    def pick_team(name: str) -> object | None:
        # Flags, then the config file (as for the indexes, indexes.py), then CACHEPROXY_*.
        if (value := flags.get(name)) is not None:
            return value
        return config_team[name] if name in config_team else pick(name)

    tuning.update(team_settings(pick_team, cache_dir))
    for url in [i.url for i in setup.indexes] if setup else [upstream]:
        if (url.host == host or is_loopback_host(url.host or "")) and url.port == port:
            raise ConfigError(
                f"upstream {redact_url(url)} is this proxy itself "
                "(is pip configured to use cacheproxy? pass --upstream)"
            )
    if setup is not None:
        tuning.update(indexes=setup.indexes, routes=setup.routes)
    token = environ.get("CACHEPROXY_ADMIN_TOKEN", "").strip() or None
    if token is not None and len(token) < 16:
        raise ConfigError("CACHEPROXY_ADMIN_TOKEN must be at least 16 characters")
    gate: dict[str, Any] = {}
    if (raw := pick("min_age")) is not None:
        try:
            gate["min_age"] = parse_duration(str(raw))
        except ConfigError:  # worded like the others, so it names the flag or variable
            raise ConfigError(f"min-age must be a duration like 30d or 12h, not {raw!r}") from None
    if (raw := pick("exclude_newer")) is not None:
        try:
            gate["exclude_newer"] = parse_timestamp(str(raw))
        except BadTimestamp:
            problem = "must be an RFC 3339 time like 2026-11-30T12:00:00Z"
            raise ConfigError(f"exclude-newer {problem}, not {raw!r}") from None
    if (raw := pick("min_age_unknown")) is not None:
        gate["min_age_unknown"] = str(raw).strip().lower()
    exempt = flags.get("min_age_exempt") or environ.get("CACHEPROXY_MIN_AGE_EXEMPT", "")
    specs = exempt if isinstance(exempt, list | tuple) else str(exempt).split(",")
    gate["min_age_exempt"] = tuple(str(x).strip() for x in specs if str(x).strip())
    synth_raw = pick("synthesize_metadata")
    if synth_raw is not None:
        gate["synthesize_metadata"] = (
            synth_raw
            if isinstance(synth_raw, bool)
            else parse_bool("synthesize-metadata", str(synth_raw))
        )
    return Settings(
        admin_token=token,
        **gate,
        log_level=str(pick("log_level") or "info"),
        log_format=str(pick("log_format") or "text"),
        host=host,
        port=port,
        cache_dir=cache_dir,
        upstream=upstream,
        index_ttl=index_ttl,
        offline=offline,
        **tuning,
    )


def parse_storage(raw: str) -> Location | None:
    """``--storage``: ``local`` (the default) or ``s3://BUCKET[/PREFIX]``."""
    text = raw.strip()
    if text in ("", "local"):
        return None
    try:
        return Location.parse(text)
    except ConfigError as e:
        _location, sep, reason = str(e).partition(": ")
        detail = f" ({reason})" if sep else ""
        raise ConfigError(
            f"storage must be local or s3://BUCKET[/PREFIX]{detail}, not {raw!r}"
        ) from None


def parse_internal_host(raw: str) -> str:
    """One ``--internal-host`` value: a host name or IP address, without scheme or port."""
    host = raw.strip().lower().rstrip(".")
    bare = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    bad = not bare or any(c in bare for c in "/@ \t?#") or (":" in bare and bare.count(":") < 2)
    if bad:
        raise ConfigError(f"internal-host must be a host name or address, not {raw!r}")
    return bare


def _network_limits(flags: Mapping[str, object], environ: Mapping[str, str]) -> dict[str, Any]:
    """internal_hosts (repeated flag, else a comma list) and max_downloads, when given."""
    out: dict[str, Any] = {}
    hosts = flags.get("internal_hosts")
    if not hosts:
        hosts = environ.get("CACHEPROXY_INTERNAL_HOSTS", "").split(",")
    if isinstance(hosts, list | tuple):
        out["internal_hosts"] = tuple(parse_internal_host(str(h)) for h in hosts if str(h).strip())
    raw = flags.get("max_downloads") or environ.get("CACHEPROXY_MAX_DOWNLOADS") or None
    if raw is not None:
        out["max_downloads"] = int(parse_number("max-downloads", str(raw), integer=True))
    return out


def parse_hosted(values: list[str] | str) -> tuple[tuple[str, ...], dict[str, tuple[str, ...]]]:
    """``--hosted NAME[=USER,USER...]`` (repeatable; the environment variable takes a
    space-separated list): the names in order, and who may upload where it is limited."""
    items = values.split() if isinstance(values, str) else values
    names: list[str] = []
    uploaders: dict[str, tuple[str, ...]] = {}
    for item in items:
        name, sep, users = item.partition("=")
        names.append(name.strip())
        if sep:
            uploaders[name.strip()] = tuple(u.strip() for u in users.split(",") if u.strip())
    return tuple(names), uploaders


def team_settings(pick: Any, cache_dir: Path) -> dict[str, Any]:
    """The hosted-index, users and TLS settings from ``pick(name)`` (flag, else env)."""
    out: dict[str, Any] = {}
    hosted_raw = pick("hosted")
    if hosted_raw:
        if not isinstance(hosted_raw, str | list | tuple):
            raise ConfigError(f'hosted must be a list like ["team", "ops=bob"], not {hosted_raw!r}')
        out["hosted"], out["uploaders"] = parse_hosted(
            [str(h) for h in hosted_raw] if not isinstance(hosted_raw, str) else hosted_raw
        )
    for name in ("users_file", "tls_cert", "tls_key"):
        raw = pick(name)
        if raw:
            out[name] = Path(str(raw)).expanduser()
    auth_raw = pick("auth_reads")
    if auth_raw is not None:
        out["auth_reads"] = (
            auth_raw if isinstance(auth_raw, bool) else parse_bool("auth-reads", str(auth_raw))
        )
    size_raw = pick("max_upload_size")
    if size_raw is not None:
        out["max_upload_size"] = parse_size(str(size_raw), cache_dir)
    return out
