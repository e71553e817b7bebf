"""Dockerfile lines that install through the proxy: pure renderers over package templates.

Everything here is a pure function of its arguments (after devpi's
``genconfig``): the CLI (``cli/dockerfile.py``) decides how the build reaches the proxy
(``engine.py`` asks the engine) and where the text goes; ``rewrite.py`` reuses
the settings and mounts below so a rewritten Dockerfile and a generated snippet agree.

The rules these lines follow:

* the index URL and tool settings are given to the one RUN step that installs (inline
  variables), never ``ENV``: ``ENV`` would stay in the image;
* one stable alias (``pypi-cache``) on every machine, so the RUN text, and so the layer
  cache, is the same everywhere; the per-machine part is a ``docker build`` flag;
* no ``# syntax=`` line: the built-in frontend of Docker 20.10+ has ``RUN --mount`` when
  BuildKit is on, and the line pulls an image, which breaks air-gapped builds.
"""

import enum
import shlex
from dataclasses import dataclass
from importlib import resources
from string import Template

from yarl import URL

from cacheproxy.errors import ConfigError
from cacheproxy.settings import DEFAULT_PORT
from cacheproxy.urls import is_loopback_host

DEFAULT_ALIAS = "pypi-cache"
# Docker's default bridge (docker0) gateway: used when the engine cannot be asked.
DEFAULT_GATEWAY = "172.17.0.1"
LOOPBACK = "127.0.0.1"


class Tool(enum.StrEnum):
    PIP = "pip"
    UV = "uv"
    POETRY = "poetry"
    PDM = "pdm"


class Reach(enum.StrEnum):
    """How a RUN step reaches the proxy on the build host."""

    # --add-host ALIAS:<bridge gateway IP>: works with every Linux engine and driver
    GATEWAY_IP = "gateway-ip"
    # --add-host ALIAS:host-gateway: right for Docker Desktop; broken in some docker build
    # releases (moby#44525, docker/cli#4025, docker/cli#4817: engine.py)
    HOST_GATEWAY = "host-gateway"
    # --network=host and 127.0.0.1: the proxy may stay on loopback
    HOST_NETWORK = "host-network"
    # a proxy URL the build resolves by itself (a team server): no flags
    URL = "url"


@dataclass(frozen=True, slots=True, kw_only=True)
class Target:
    """Where the RUN step finds the proxy, and the ``docker build`` flags that make it so."""

    reach: Reach
    base_url: str  # scheme://host:port[/prefix], no trailing slash
    alias: str | None = None
    gateway: str | None = None  # the IP behind the alias (GATEWAY_IP)
    gateway_note: str = ""  # where that IP came from, for the comment

    @property
    def index_url(self) -> str:
        return f"{self.base_url}/simple/"

    @property
    def host(self) -> str:
        return URL(self.base_url).host or ""

    @property
    def plain_http(self) -> bool:
        return URL(self.base_url).scheme == "http"


def make_target(
    reach: Reach,
    *,
    alias: str = DEFAULT_ALIAS,
    port: int = DEFAULT_PORT,
    gateway: str | None = None,
    gateway_note: str = "",
    proxy_url: str | None = None,
) -> Target:
    """The :class:`Target` for a reachability mode.

    Raises:
        ConfigError: a malformed proxy URL, alias or port.
    """
    if not 0 < port < 65536:
        raise ConfigError(f"port must be between 1 and 65535, not {port}")
    if reach is Reach.URL:
        if proxy_url is None:
            raise ConfigError("a proxy URL is needed")
        base = normalise_proxy_url(proxy_url)
        # 127.0.0.1 in a RUN step is the build container itself, unless the
        # build shares the host's network.
        loopback = is_loopback_host(URL(base).host or "")
        return Target(reach=Reach.HOST_NETWORK if loopback else reach, base_url=base)
    if reach is Reach.HOST_NETWORK:
        return Target(reach=reach, base_url=f"http://{LOOPBACK}:{port}")
    if not _is_hostname(alias):
        raise ConfigError(
            f"host alias must be a plain host name like {DEFAULT_ALIAS!r}, not {alias!r}"
        )
    ip = (gateway or DEFAULT_GATEWAY) if reach is Reach.GATEWAY_IP else None
    return Target(
        reach=reach,
        base_url=f"http://{alias}:{port}",
        alias=alias,
        gateway=ip,
        gateway_note=gateway_note,
    )


def normalise_proxy_url(raw: str) -> str:
    """``http://h:8503``, ``http://h:8503/`` and ``http://h:8503/simple/`` all name one proxy.

    Raises:
        ConfigError: not an http(s) URL with a host, or it carries credentials.
    """
    url = URL(raw.strip())
    if url.scheme not in ("http", "https") or not url.host:
        raise ConfigError(f"proxy URL must be http(s)://HOST[:PORT], not {raw!r}")
    if url.user is not None or url.password is not None:
        # Anything in the RUN line is in `docker history`; use a secret mount.
        raise ConfigError("proxy URL must not carry credentials: they would be in docker history")
    if url.query_string or url.fragment:
        raise ConfigError(f"proxy URL must not have a query or fragment: {raw!r}")
    path = url.path.rstrip("/")
    path = path.removesuffix("/simple")
    return str(url.with_path(path or "/")).rstrip("/")


def _is_hostname(name: str) -> bool:
    labels = name.split(".")
    return bool(name) and all(
        0 < len(label) <= 63
        and label[0].isalnum()
        and label[-1].isalnum()
        and all(c.isalnum() or c == "-" for c in label)
        for label in labels
    )


def build_flags(target: Target) -> list[str]:
    """The ``docker build`` / ``docker buildx build`` arguments for ``target``."""
    if target.reach is Reach.GATEWAY_IP:
        return ["--add-host", f"{target.alias}:{target.gateway}"]
    if target.reach is Reach.HOST_GATEWAY:
        return ["--add-host", f"{target.alias}:host-gateway"]
    if target.reach is Reach.HOST_NETWORK:
        return ["--network=host"]
    return []


def render_build_flags(target: Target) -> str:
    """One line of shell words (maybe empty), for ``docker build $(...) .``."""
    return shlex.join(build_flags(target))


# -- who the step runs as, and the cache mount ----------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class Identity:
    """The user a RUN step runs as, as far as the cache mount must know it."""

    uid: int = 0
    gid: int | None = None  # None: the same as uid
    home: str | None = None  # None: /root for root, else /tmp (the tool is pinned to it)
    mode: str | None = None  # None: BuildKit's default 0755
    name: str | None = None  # a USER known only by name (its uid unknown): names the cache

    @property
    def root(self) -> bool:
        return self.uid == 0 and (self.gid or 0) == 0 and self.name is None

    def cache_dir(self, kind: str) -> str:
        # pip, uv and pdm all default to $HOME/.cache/<name> on Linux (XDG base directories).
        home = self.home or ("/root" if self.root else "/tmp")
        return f"{home.rstrip('/')}/.cache/{_CACHE_NAMES[kind]}"

    @property
    def pinned(self) -> bool:
        """Whether the tool must be told its cache dir: it only finds the mount by itself
        when it runs as root with HOME=/root."""
        return not self.root or self.home not in (None, "/root", "/root/")


_CACHE_NAMES = {"pip": "pip", "uv": "uv", "pdm": "pdm"}
# pip (atomic writes of each cache entry) and uv (its own locking) are safe
# with "shared"; pdm's cache is not documented as safe for concurrent processes.
DEFAULT_SHARING = {"pip": "shared", "uv": "shared", "pdm": "locked"}
SHARING_MODES = ("shared", "locked", "private")


def cache_mount(kind: str, ident: Identity, sharing: str | None = None) -> str:
    """The ``--mount=...`` value (without ``--mount=``) of ``kind``'s cache for ``ident``.

    The id names the owner: BuildKit applies ``uid``/``gid``/``mode`` only when it first
    creates a cache (the seed directory is 0755, owned by root unless told otherwise), so a
    cache first made by a root build stays unwritable for uid 1000 under the same id, and
    pip/uv then silently disable their cache.
    """
    owner = "" if ident.root else f"-{ident.name or ident.uid}"
    parts = [
        "type=cache",
        f"id=cacheproxy-{kind}{owner}",
        f"target={ident.cache_dir(kind)}",
        f"sharing={sharing or DEFAULT_SHARING[kind]}",
    ]
    if ident.uid != 0 or (ident.gid or 0) != 0:
        parts += [f"uid={ident.uid}", f"gid={ident.uid if ident.gid is None else ident.gid}"]
    if ident.mode is not None:
        parts.append(f"mode={ident.mode}")
    return ",".join(parts)


# -- the settings a tool gets for one step ----------------------------------------------------


@dataclass(frozen=True, slots=True)
class Setting:
    """One tool setting, as an environment variable and as the matching command-line option
    (exec-form RUN has no shell for ``VAR=value`` prefixes)."""

    env: str
    flag: str
    value: str
    # The value refers to variables (``$NAME``): double-quoted so the shell expands them.
    # Exec form has no shell: it gets the value's first word (see ``literal``).
    expand: bool = False

    def assignment(self) -> str:
        if self.expand:
            return f'{self.env}="{self.value}"'
        return f"{self.env}={shlex.quote(self.value)}"

    def literal(self) -> str:
        return self.value.split()[0] if self.expand else self.value


def pip_settings(target: Target, ident: Identity) -> list[Setting]:
    settings = [Setting("PIP_INDEX_URL", "--index-url", target.index_url)]
    if target.plain_http:
        # pip ignores a plain-http index on any host but loopback (with a warning) unless it
        # is trusted. Set it on loopback too: pip's HTTP cache (what the mount keeps) is used
        # only for https and trusted hosts (pip network/session.py: the plain "http://"
        # adapter has no cache), checked with pip 26.3.
        settings.append(Setting("PIP_TRUSTED_HOST", "--trusted-host", target.host))
    if ident.pinned:
        settings.append(Setting("PIP_CACHE_DIR", "--cache-dir", ident.cache_dir("pip")))
    return settings


def uv_settings(target: Target | None, ident: Identity) -> list[Setting]:
    """uv's settings; ``target=None`` leaves the index alone (``uv sync --locked/--frozen``)."""
    # uv takes plain http on any host, no trusted-host equivalent needed.
    settings = (
        [] if target is None else [Setting("UV_DEFAULT_INDEX", "--default-index", target.index_url)]
    )
    # The cache mount and the environment are different file systems: uv's default
    # hardlinks fail across them (it falls back to copying with a warning).
    settings.append(Setting("UV_LINK_MODE", "--link-mode", "copy"))
    if ident.pinned:
        settings.append(Setting("UV_CACHE_DIR", "--cache-dir", ident.cache_dir("uv")))
    return settings


def pdm_settings(target: Target, ident: Identity) -> list[Setting]:
    settings = [Setting("PDM_PYPI_URL", "", target.index_url)]
    if target.plain_http:
        # unearth (pdm's finder) skips a plain-http index on a non-loopback host unless it
        # is trusted; pdm trusts a source whose verify_ssl is false (pdm models/session.py).
        settings.append(Setting("PDM_PYPI_VERIFY_SSL", "", "false"))
    if ident.pinned:
        settings.append(Setting("PDM_CACHE_DIR", "", ident.cache_dir("pdm")))
    return settings


# -- the snippet -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class Step:
    """What the generated RUN step installs, and as whom."""

    tool: Tool = Tool.PIP
    requirements: str | None = None  # -r FILE, a path inside the build context
    packages: tuple[str, ...] = ()
    ident: Identity = Identity()
    sharing: str | None = None
    # An index that needs a user (cacheproxy serve --auth-reads): the BuildKit secret id
    # of a netrc file with its credentials (see secret_mount).
    secret: str | None = None


class _Template(Template):
    # "@" rather than "$": Dockerfile text is full of shell "$" that must stay as it is.
    delimiter = "@"


def _template(name: str) -> _Template:
    return _Template(
        resources.files("cacheproxy.docker").joinpath("templates", name).read_text("utf-8")
    )


CONTINUE = " \\\n    "


def render_snippet(step: Step, target: Target) -> str:
    """The lines to paste into a Dockerfile (a comment on reaching the proxy, then the step).

    Raises:
        ConfigError: options that do not fit the tool (``-r`` with poetry, a path outside
            the build context, a bad sharing mode).
    """
    if step.sharing is not None and step.sharing not in SHARING_MODES:
        raise ConfigError(
            f"sharing must be one of {', '.join(SHARING_MODES)}, not {step.sharing!r}"
        )
    if step.tool in (Tool.POETRY, Tool.PDM) and (step.requirements or step.packages):
        raise ConfigError(
            f"--tool {step.tool} installs the locked project; -r and packages are for pip and uv"
        )
    if step.requirements is not None and step.packages:
        raise ConfigError("give -r FILE or packages, not both")
    if step.requirements is not None:
        _check_context_path(step.requirements)
    values = _values(step, target)
    if step.secret is not None:
        _add_secret(values, step, target)
    return _template(f"{step.tool}.Dockerfile").substitute(values)


def _values(step: Step, target: Target) -> dict[str, str]:
    ident = step.ident
    return {
        "reach": _render_reach(target),
        "pip_mount": cache_mount("pip", ident, step.sharing),
        "uv_mount": cache_mount("uv", ident, step.sharing),
        "pdm_mount": cache_mount("pdm", ident, step.sharing),
        "pip_env": " ".join(s.assignment() for s in pip_settings(target, ident)),
        "uv_env": " ".join(s.assignment() for s in uv_settings(target, ident)),
        "pdm_env": " ".join(s.assignment() for s in pdm_settings(target, ident)),
        "uv_sync_env": " ".join(s.assignment() for s in uv_settings(None, ident)),
        "copy": _copy_line(step),
        "args": _install_args(step),
        "index_url": target.index_url,
    }


# -- an index that needs a user: a secret mount -------------------------------------------

# A BuildKit secret id: what `docker build --secret id=...` accepts.
_SECRET_ID_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-")


def secret_mount(secret_id: str, ident: Identity) -> str:
    """The ``--mount=...`` value of the netrc secret: under /run/secrets/, only for this
    step, never in a layer or in ``docker history`` (BuildKit secret mounts). Owned by the
    step's user, since the default (root, 0400) is unreadable to any other uid."""
    parts = ["type=secret", f"id={secret_id}", "required=true"]
    if not ident.root:
        parts += [f"uid={ident.uid}", f"gid={ident.uid if ident.gid is None else ident.gid}"]
    return ",".join(parts)


def _add_secret(values: dict[str, str], step: Step, target: Target) -> None:
    """Give the install step the credentials of ``step.secret`` (a netrc file).

    pip and poetry's export (requests: utils.get_netrc_auth) and uv read the file named by
    NETRC; the variable holds a path, not a secret, so it may be in the RUN text.

    Raises:
        ConfigError: a bad id, or a tool that does not read netrc.
    """
    secret_id = step.secret or ""
    if not secret_id or not set(secret_id) <= _SECRET_ID_CHARS:
        raise ConfigError(f"a secret id is letters, digits, '.', '_' or '-', not {secret_id!r}")
    if step.tool is Tool.PDM:
        raise ConfigError("--auth-secret works with pip, uv and poetry (pdm does not read netrc)")
    netrc = f"NETRC=/run/secrets/{secret_id}"
    mount = secret_mount(secret_id, step.ident)
    for kind in ("pip", "uv"):
        values[f"{kind}_mount"] += f" --mount={mount}"
        values[f"{kind}_env"] = f"{netrc} {values[f'{kind}_env']}"
    host = target.host
    values["reach"] += (
        f"# The index needs a user: the credentials come from the BuildKit secret {secret_id!r},\n"
        f"# a netrc file, mounted for this step only (never in a layer or `docker history`):\n"
        f"#   ~/.cacheproxy-netrc (chmod 600): machine {host} login USER password PASSWORD\n"
        f"#   docker build --secret id={secret_id},src=$HOME/.cacheproxy-netrc ...\n"
    )


def _check_context_path(path: str) -> None:
    parts = path.replace("\\", "/").split("/")
    if path.startswith(("/", "~")) or ".." in parts or not path.strip():
        raise ConfigError(f"-r must name a file inside the build context, not {path!r}")


def _copy_line(step: Step) -> str:
    if step.packages:
        return ""
    req = step.requirements or "requirements.txt"
    return f"COPY {_copy_word(req)} ./{_copy_word(req)}\n"


def _copy_word(path: str) -> str:
    # COPY takes JSON form for names with spaces; keep the plain form for the usual case.
    return path if all(c not in path for c in " \t\"'\\$") else shlex.quote(path)


def _install_args(step: Step) -> str:
    if step.packages:
        return " ".join(shlex.quote(p) for p in step.packages)
    return f"-r {shlex.quote(step.requirements or 'requirements.txt')}"


def _render_reach(target: Target) -> str:
    flags = render_build_flags(target)
    values = {
        "alias": target.alias or "",
        "gateway": target.gateway or "",
        "gateway_note": target.gateway_note or "not detected: Docker's default bridge gateway",
        "flags": flags,
        "build_flags": f" {flags}" if flags else "",
        "index_url": target.index_url,
        "host": target.host,
        "port": str(URL(target.base_url).port or ""),
    }
    return _template(f"reach-{target.reach}.txt").substitute(values)
