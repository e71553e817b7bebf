"""``cacheproxy warm``'s engine: from parsed inputs to files fetched through a proxy.

1. Targets (:func:`make_targets`): each (platform, Python) pair gets its compatible wheel
   tags in priority order (``packaging.tags``) and a PEP 508 marker environment.
2. Requirements without hashes are resolved per target by ``uv pip compile``; its hashed
   output is then read like any hashed requirements file (:func:`resolve_with_uv`).
3. Each input names the packages a target installs; their project pages are fetched
   through the proxy (which stores them: an air-gapped client needs pages as much as
   files), and for each package and target the one wheel an installer would pick is
   chosen (the sdist only when no wheel fits, or with ``sdists``).
4. The files (and their PEP 658 metadata) are fetched through the proxy, ``jobs`` at a
   time; every body is hashed against the input's hash, which is the user's truth.

Nothing is written locally: the proxy stores what passes through it. ``warm_cli.py`` owns
the command line, the in-process proxy for ``--cache-dir`` and the output.
"""

import asyncio
import contextlib
import hashlib
import os
import re
import shutil
import sys
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from enum import StrEnum
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import unquote

import aiohttp
from aiohttp import web
from packaging.markers import default_environment
from packaging.tags import (
    Tag,
    compatible_tags,
    cpython_tags,
    mac_platforms,
    platform_tags,
    sys_tags,
)
from packaging.utils import (
    InvalidSdistFilename,
    InvalidWheelFilename,
    NormalizedName,
    parse_sdist_filename,
    parse_wheel_filename,
)
from packaging.version import Version
from yarl import URL

from cacheproxy.errors import ConfigError
from cacheproxy.warm.lockfiles import (
    Artifact,
    LockInput,
    Note,
    Package,
    Unresolved,
    parse_requirements,
)

SIMPLE_JSON = "application/vnd.pypi.simple.v1+json"
CHUNK = 256 * 1024
DEFAULT_JOBS = 8


class Outcome(StrEnum):
    FETCHED = "fetched"  # the proxy did not have it (X-Cache MISS): it does now
    CACHED = "cached"  # the proxy already had it (X-Cache HIT)
    SKIPPED = "skipped"  # deliberately not fetched: not on an index, or maybe not needed
    FAILED = "failed"


@dataclass(frozen=True, slots=True)
class Result:
    outcome: Outcome
    name: str  # a filename, a package ("beta 1.0") or an input
    reason: str | None = None
    size: int | None = None
    cache: str | None = None  # the proxy's X-Cache for a fetched file


class Reporter(Protocol):
    """Where progress goes (warm_cli.py: a rich progress bar, or plain lines)."""

    def planned(self, files: int, total_bytes: int) -> None: ...

    def advance(self, nbytes: int) -> None: ...

    def result(self, result: Result) -> None: ...


@dataclass
class Summary:
    results: list[Result] = field(default_factory=list)

    def count(self, outcome: Outcome) -> int:
        return sum(1 for r in self.results if r.outcome is outcome)

    @property
    def fetched_bytes(self) -> int:
        return sum(r.size or 0 for r in self.results if r.outcome is Outcome.FETCHED)

    @property
    def ok(self) -> bool:
        return self.count(Outcome.FAILED) == 0


class ProxyUnreachable(Exception):
    """The proxy itself cannot be connected to: every request would fail the same way."""


# -- targets -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Target:
    """One machine to warm for: its wheel tags in priority order and its marker values."""

    label: str
    tags: tuple[Tag, ...]
    env: Mapping[str, str]
    python: Version  # for requires-python checks
    uv_args: tuple[str, ...] = ()  # how uv pip compile resolves for it
    uv_env: Mapping[str, str] = field(default_factory=dict)
    _rank: dict[Tag, int] = field(default_factory=dict, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        self._rank.update((tag, n) for n, tag in reversed(list(enumerate(self.tags))))

    def rank(self, filename: str) -> int | None:
        """The wheel's priority here (lower is better), None if it cannot be installed."""
        try:
            tags = parse_wheel_filename(filename)[3]
        except InvalidWheelFilename:
            return None
        ranks = [self._rank[t] for t in tags if t in self._rank]
        return min(ranks) if ranks else None


_PY_VERSION = re.compile(r"3\.(\d{1,2})(?:\.(\d{1,3}))?")
_MANYLINUX_LEGACY = {"manylinux1": (2, 5), "manylinux2010": (2, 12), "manylinux2014": (2, 17)}
_UV_MANYLINUX = (17, 28, *range(31, 41))  # the glibc minors uv's --python-platform knows
_WINDOWS = {  # wheel tag -> (platform_machine, uv's target)
    "win_amd64": ("AMD64", "x86_64-pc-windows-msvc"),
    "win32": ("x86", "i686-pc-windows-msvc"),
    "win_arm64": ("ARM64", "aarch64-pc-windows-msvc"),
}
PLATFORM_HELP = "manylinux_2_17_x86_64, musllinux_1_2_aarch64, win_amd64, macosx_11_0_arm64"


@dataclass(frozen=True)
class _Platform:
    platforms: tuple[str, ...]  # wheel platform tags a machine of this kind accepts, best first
    env: Mapping[str, str]
    uv_platform: str
    uv_env: Mapping[str, str] = field(default_factory=dict)


def _manylinux(minor: int, arch: str) -> list[str]:
    # As packaging's _manylinux: every older glibc too, with the legacy aliases; the oldest
    # manylinux is 2.5 on x86 and 2.17 elsewhere.
    low = 5 if arch in ("x86_64", "i686") else 17
    out = []
    for m in range(minor, low - 1, -1):
        out.append(f"manylinux_2_{m}_{arch}")
        legacy = {17: "manylinux2014", 12: "manylinux2010", 5: "manylinux1"}.get(m)
        if legacy and (m == 17 or arch in ("x86_64", "i686")):
            out.append(f"{legacy}_{arch}")
    return out


def _linux_env(arch: str) -> dict[str, str]:
    return {"sys_platform": "linux", "os_name": "posix", "platform_system": "Linux",
            "platform_machine": arch}  # fmt: skip


def parse_platform(tag: str) -> _Platform:
    """A wheel platform tag as given to ``--platform``.

    uv's ``--python-platform`` knows fewer platforms than wheel tags can name; where it has
    none, the nearest is taken. That only steers which versions uv picks; which file fits
    is decided here, from the exact tags.

    Raises:
        ConfigError: not a platform tag we know how to describe.
    """
    tag = tag.strip().lower().replace("-", "_").replace(".", "_")
    for legacy, (major, minor) in _MANYLINUX_LEGACY.items():
        if tag.startswith(legacy + "_"):
            tag = f"manylinux_{major}_{minor}_{tag[len(legacy) + 1 :]}"
    if m := re.fullmatch(r"manylinux_2_(\d+)_(\w+)", tag):
        minor, arch = int(m[1]), m[2]
        uv_minor = max((v for v in _UV_MANYLINUX if v <= minor), default=17)
        uv = f"{arch}-manylinux_2_{uv_minor}" if arch in ("x86_64", "aarch64") else "linux"
        return _Platform(tuple(_manylinux(minor, arch)), _linux_env(arch), uv)
    if m := re.fullmatch(r"musllinux_1_(\d+)_(\w+)", tag):
        minor, arch = int(m[1]), m[2]
        uv = f"{arch}-unknown-linux-musl" if arch in ("x86_64", "aarch64") else "linux"
        plats = tuple(f"musllinux_1_{n}_{arch}" for n in range(minor, -1, -1))
        return _Platform(plats, _linux_env(arch), uv)
    if m := re.fullmatch(r"linux_(\w+)", tag):
        arch = m[1]
        uv = f"{arch}-unknown-linux-gnu" if arch in ("x86_64", "aarch64") else "linux"
        return _Platform((tag,), _linux_env(arch), uv)
    if tag in _WINDOWS:
        machine, uv = _WINDOWS[tag]
        env = {"sys_platform": "win32", "os_name": "nt", "platform_system": "Windows",
               "platform_machine": machine}  # fmt: skip
        return _Platform((tag,), env, uv)
    if m := re.fullmatch(r"macosx_(\d+)_(\d+)_(\w+)", tag):
        major, minor, arch = int(m[1]), int(m[2]), m[3]
        if arch not in ("arm64", "x86_64", "universal2"):
            raise ConfigError(f"--platform {tag}: macOS arch must be arm64, x86_64 or universal2")
        machine = "x86_64" if arch == "x86_64" else "arm64"
        env = {"sys_platform": "darwin", "os_name": "posix", "platform_system": "Darwin",
               "platform_machine": machine}  # fmt: skip
        plats = (tag, *(p for p in mac_platforms((major, minor), machine) if p != tag))
        uv = "x86_64-apple-darwin" if machine == "x86_64" else "aarch64-apple-darwin"
        # uv reads the minimum macOS version for its target from this variable.
        return _Platform(plats, env, uv, {"MACOSX_DEPLOYMENT_TARGET": f"{major}.{minor}"})
    raise ConfigError(f"--platform {tag!r} is not a wheel platform tag such as {PLATFORM_HELP}")


def parse_python_version(raw: str) -> tuple[int, int, int]:
    """``3.11`` or ``3.11.4`` (CPython 3 only); a missing patch is 0, as uv assumes.

    Raises:
        ConfigError: anything else.
    """
    m = _PY_VERSION.fullmatch(raw.strip())
    if m is None:
        raise ConfigError(f"--python-version must look like 3.11 or 3.11.4, not {raw!r}")
    return 3, int(m[1]), int(m[2] or 0)


def _host_env() -> dict[str, str]:
    return {k: str(v) for k, v in default_environment().items()}


def _python_env(version: tuple[int, int, int]) -> dict[str, str]:
    full = ".".join(map(str, version))
    return {
        "implementation_name": "cpython",
        "platform_python_implementation": "CPython",
        "implementation_version": full,
        "python_version": f"{version[0]}.{version[1]}",
        "python_full_version": full,
    }


def _tags(version: tuple[int, int, int], platforms: Sequence[str]) -> tuple[Tag, ...]:
    short = version[:2]
    interpreter = f"cp{short[0]}{short[1]}"
    return (
        *cpython_tags(python_version=short, platforms=platforms),
        *compatible_tags(python_version=short, interpreter=interpreter, platforms=platforms),
    )


def make_targets(platforms: Sequence[str], pythons: Sequence[str]) -> list[Target]:
    """Every (platform, Python) pair; an axis not given is this machine's.

    Raises:
        ConfigError: a platform or version cannot be understood.
    """
    here = sys.version_info
    if not platforms and not pythons:
        env = _host_env()
        return [Target("this machine", tuple(sys_tags()), env, Version(env["python_full_version"]))]
    versions = [parse_python_version(p) for p in pythons] or [(here[0], here[1], here[2])]
    parsed = [parse_platform(p) for p in dict.fromkeys(platforms)]
    targets = []
    for version in dict.fromkeys(versions):
        py = f"{version[0]}.{version[1]}" + (f".{version[2]}" if version[2] else "")
        uv_python = ("--python-version", ".".join(map(str, version)))
        cp = f"cp{version[0]}{version[1]}"
        if not parsed:  # another Python on this machine's platform
            env = {**_host_env(), **_python_env(version)}
            label = f"{cp} on this machine"
            tags = _tags(version, list(platform_tags()))
            targets.append(Target(label, tags, env, Version(py), uv_python))
            continue
        for plat in parsed:
            env = {**_python_env(version), **plat.env, "platform_release": "",
                   "platform_version": ""}  # fmt: skip
            targets.append(
                Target(
                    label=f"{cp}-{plat.platforms[0]}",
                    tags=_tags(version, plat.platforms),
                    env=env,
                    python=Version(py),
                    uv_args=(*uv_python, "--python-platform", plat.uv_platform),
                    uv_env=plat.uv_env,
                )
            )
    return targets


# -- resolving requirements without hashes -------------------------------------------------


def find_uv() -> str | None:
    """uv next to this interpreter (the venv cacheproxy is in), else on PATH."""
    return shutil.which("uv", path=str(Path(sys.executable).parent)) or shutil.which("uv")


def isolated_env(index_url: URL, extra: Mapping[str, str]) -> dict[str, str]:
    """This environment without pip/uv configuration, so only the proxy is asked."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PIP_", "UV_"))}
    env.update(UV_NO_CONFIG="1", PIP_CONFIG_FILE=os.devnull, UV_PYTHON_DOWNLOADS="never")
    if index_url.host in ("127.0.0.1", "localhost", "::1"):
        # An HTTP(S)_PROXY for the outside world must not be asked for a loopback proxy.
        for name in ("NO_PROXY", "no_proxy"):
            env[name] = ",".join(filter(None, [env.get(name, ""), index_url.host]))
    env.update(extra)
    return env


def _one_line(stderr: str, limit: int = 400) -> str:
    lines = [ln.strip() for ln in stderr.splitlines() if ln.strip()]
    lines = [ln for ln in lines if not ln.startswith("warning:")] or lines
    text = re.sub(r"^error:\s*", "", " ".join(lines)) or "no message"
    return text if len(text) <= limit else text[: limit - 1] + "…"


async def resolve_with_uv(
    unresolved: Unresolved, target: Target, index_url: URL, uv: str
) -> LockInput | Note:
    """Resolve for ``target`` with ``uv pip compile``: pinned, hashed requirements.

    Why uv and not ``pip download --platform``: pip evaluates environment markers for the
    machine it runs on, whatever ``--platform``/``--python-version`` say (pypa/pip#11664),
    so a Windows-only dependency would be missed when warming for Windows from Linux. uv's
    ``--python-platform`` resolves for the target. Its output lists every file hash of
    each pinned version; which file fits the target is then chosen from the exact tags.
    ``--no-cache`` sends uv through the proxy for every page and metadata file (which
    warms those too) instead of answering from uv's own cache.
    """
    with tempfile.TemporaryDirectory(prefix="cacheproxy-warm-") as tmp:
        requirements = Path(tmp) / "requirements.in"
        requirements.write_text("".join(f"{r}\n" for r in unresolved.requirements))
        cmd = [
            uv, "pip", "compile", str(requirements), "--default-index", str(index_url),
            "--python", sys.executable, "--generate-hashes", "--no-header", "--no-annotate",
            "--quiet", "--no-cache", *target.uv_args,
        ]  # fmt: skip
        if unresolved.constraints:
            constraints = Path(tmp) / "constraints.txt"
            constraints.write_text("".join(f"{c}\n" for c in unresolved.constraints))
            cmd += ["--constraint", str(constraints)]
        try:
            proc = await asyncio.create_subprocess_exec(
                *cmd,
                env=isolated_env(index_url, target.uv_env),
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
            )
        except OSError as e:
            return Note(unresolved.path.name, f"cannot run uv ({uv}): {e.strerror or e}")
        out, err = await proc.communicate()
    if proc.returncode != 0:
        reason = (
            f"uv could not resolve it for {target.label}: {_one_line(err.decode(errors='replace'))}"
        )
        return Note(unresolved.path.name, reason)
    resolved = parse_requirements(
        unresolved.path, out.decode(errors="replace"), require_hashes=False
    )
    assert isinstance(resolved, LockInput)  # require_hashes=False always gives pins
    return resolved


# Hop-by-hop and framing headers: each side of the tap sets its own.
_NOT_FORWARDED = {
    "host", "connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade",
    "proxy-authorization", "proxy-authenticate", "content-length",
}  # fmt: skip


class ResolutionTap:
    """A loopback pass-through in front of the proxy, for the resolver, that notes misses.

    Resolving reads metadata, and on an index without PEP 658 metadata uv reads it from the
    wheels themselves (range requests), which makes the proxy download those wheels. Warm's
    own request for them is then a HIT, and the summary would call a file this run brought
    in "already cached". The tap sees the proxy's ``X-Cache`` on the resolver's requests, so
    such files are counted as fetched. Bytes are relayed verbatim (no decoding).
    """

    def __init__(self, target: URL, session: aiohttp.ClientSession) -> None:
        self._origin = target.origin()
        self._path = target.raw_path
        self._session = session
        self.misses: set[str] = set()  # decoded paths of files the proxy did not have
        self._runner: web.AppRunner | None = None
        self.index_url = target

    async def __aenter__(self) -> "ResolutionTap":
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._relay)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = self._runner.addresses[0][1]
        self.index_url = URL(f"http://127.0.0.1:{port}").with_path(self._path, encoded=True)
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _relay(self, request: web.Request) -> web.StreamResponse:
        url = self._origin.join(URL(request.raw_path, encoded=True))
        headers = {k: v for k, v in request.headers.items() if k.lower() not in _NOT_FORWARDED}
        async with self._session.request(
            request.method, url, headers=headers, allow_redirects=False, auto_decompress=False
        ) as up:
            if up.headers.get("X-Cache") == "MISS" and "/packages/" in request.path:
                self.misses.add(request.path)
            out = {k: v for k, v in up.headers.items() if k.lower() not in _NOT_FORWARDED}
            resp = web.StreamResponse(status=up.status, headers=out)
            if up.content_length is not None:
                resp.content_length = up.content_length
            await resp.prepare(request)
            if request.method != "HEAD":
                async for chunk in up.content.iter_chunked(CHUNK):
                    await resp.write(chunk)
            await resp.write_eof()
            return resp


# -- project pages -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PageFile:
    filename: str
    url: URL  # absolute, on the proxy
    sha256: str | None
    size: int | None
    metadata: bool  # PEP 658/714 metadata advertised
    metadata_sha256: str | None


@dataclass(frozen=True, slots=True)
class Page:
    files: Mapping[str, PageFile]


def parse_page(doc: Any, page_url: URL) -> Page:
    """A PEP 691 project page; links are resolved against the page's own URL."""
    files: dict[str, PageFile] = {}
    for f in doc["files"]:
        meta = f.get("core-metadata", f.get("data-dist-info-metadata", False))
        size = f.get("size")
        files[f["filename"]] = PageFile(
            filename=f["filename"],
            url=page_url.join(URL(f["url"], encoded=True)),
            sha256=(f.get("hashes") or {}).get("sha256"),
            size=size if isinstance(size, int) else None,
            metadata=bool(meta) or meta == {},  # an empty mapping still means "advertised"
            metadata_sha256=meta.get("sha256") if isinstance(meta, dict) else None,
        )
    return Page(files)


def _first_line(text: str) -> str:
    return next((ln.strip() for ln in text.splitlines() if ln.strip()), "")[:300]


def _unreachable(e: aiohttp.ClientConnectorError, what: URL) -> ProxyUnreachable:
    host = f"{what.host}:{what.port}" if what.port else str(what.host)
    return ProxyUnreachable(f"cannot reach the proxy at {host}: {e.os_error.strerror or e}")


async def fetch_page(session: aiohttp.ClientSession, index_url: URL, name: str) -> Page | str:
    """The project page through the proxy (which stores it), or why it failed."""
    url = index_url.join(URL(f"{name}/"))
    try:
        async with session.get(url, headers={"Accept": SIMPLE_JSON}) as resp:
            if resp.status != 200:
                return f"index page: HTTP {resp.status}: {_first_line(await resp.text())}"
            doc = await resp.json(content_type=None)
            return parse_page(doc, resp.url)
    except aiohttp.ClientConnectorError as e:
        raise _unreachable(e, url) from None
    except (aiohttp.ClientError, TimeoutError) as e:
        return f"index page: {type(e).__name__}: {e}".rstrip(": ")
    except (ValueError, KeyError, TypeError) as e:
        return f"index page is not PEP 691 JSON: {e}"


# -- choosing files ------------------------------------------------------------------------


@dataclass
class Job:
    """One file to fetch through the proxy."""

    name: str  # the filename
    url: URL
    required: Mapping[str, str]  # every one of these must match (a lock's hashes)
    allowed: frozenset[tuple[str, str]] | None  # one of these must match (requirements)
    size: int | None
    origin: str
    known_sha256: str | None  # a sha256 the input accepts: a proxy HIT with it is enough


def _version_of(filename: str) -> Version | None:
    try:
        if filename.endswith(".whl"):
            return parse_wheel_filename(filename)[1]
        return parse_sdist_filename(filename)[1]
    except (InvalidWheelFilename, InvalidSdistFilename):
        return None


def _candidates(package: Package, page: Page | None) -> list[Artifact]:
    if package.artifacts is not None:
        return list(package.artifacts)
    if page is None:
        return []
    found = []
    for f in page.files.values():
        if _version_of(f.filename) != package.version:
            continue
        allowed = package.allowed
        # Filter by sha256 only when the input lists sha256 hashes: one that pins sha512
        # alone keeps every file of the version, and the download is checked instead.
        by_sha256 = allowed is not None and any(alg == "sha256" for alg, _ in allowed)
        if by_sha256 and f.sha256 and ("sha256", f.sha256.lower()) not in (allowed or ()):
            continue
        hashes = {"sha256": f.sha256.lower()} if f.sha256 else {}
        found.append(Artifact(f.filename, str(f.url), hashes, f.size))
    return found


def choose(
    package: Package, target: Target, candidates: Sequence[Artifact], sdists: bool
) -> list[Artifact]:
    """The files an installer on ``target`` would download: its best wheel, else the sdist.

    With ``sdists`` the sdist comes too (a build that insists on building from source).
    """
    ranked = [
        (r, a) for a in candidates if a.is_wheel and (r := target.rank(a.filename)) is not None
    ]
    chosen = [min(ranked, key=lambda ra: ra[0])[1]] if ranked else []
    if not chosen or sdists:
        chosen += [a for a in candidates if not a.is_wheel and _version_of(a.filename)][:1]
    return chosen


def _short(hexdigest: str) -> str:
    return hexdigest[:12] + "…"


def _job_for(
    artifact: Artifact, package: Package, page: Page | None, page_error: str | None, index_url: URL
) -> Job | Note:
    listed = page.files.get(artifact.filename) if page is not None else None
    lock_sha = artifact.hashes.get("sha256")
    if listed is not None and listed.sha256 and lock_sha and listed.sha256.lower() != lock_sha:
        # Cheaper and clearer than downloading it to find out.
        return Note(
            artifact.filename,
            f"the index lists sha256 {_short(listed.sha256)}, {package.origin} says "
            f"{_short(lock_sha)}",
        )
    if listed is not None:
        url = listed.url
    elif artifact.url and (path := URL(artifact.url, encoded=True).raw_path).startswith(
        "/packages/"
    ):
        # Not on the page we got (or no page): a PyPI-shaped URL maps to the proxy by its
        # path, and the proxy finds the project from the filename.
        url = index_url.join(URL("../packages/" + path[len("/packages/") :], encoded=True))
    else:
        why = page_error or "not listed on the proxy's index page"
        return Note(artifact.filename, why)
    allowed = package.allowed if package.artifacts is None else None
    known = lock_sha
    listed_sha = listed.sha256.lower() if listed is not None and listed.sha256 else None
    if known is None and allowed is not None and ("sha256", listed_sha) in allowed:
        known = listed_sha
    return Job(
        name=artifact.filename,
        url=url,
        required=dict(artifact.hashes) if package.artifacts is not None else {},
        allowed=allowed,
        size=artifact.size if artifact.size is not None else listed.size if listed else None,
        origin=package.origin,
        known_sha256=known,
    )


# -- fetching ------------------------------------------------------------------------------


def _verify(job: Job, digests: Mapping[str, str], size: int) -> str | None:
    if job.size is not None and size != job.size:
        return f"size {size} bytes, {job.origin} says {job.size}"
    for alg, expected in job.required.items():
        if digests.get(alg) != expected:
            return (
                f"{alg} mismatch: {job.origin} says {_short(expected)}, got {_short(digests[alg])}"
            )
    if job.allowed is not None and not any(digests.get(a) == h for a, h in job.allowed):
        sha = digests["sha256"]
        return f"sha256 {_short(sha)} is not one of the hashes in {job.origin}"
    return None


async def fetch_file(
    session: aiohttp.ClientSession, job: Job, advance: Callable[[int], None]
) -> Result:
    """Fetch one file through the proxy and check what arrives."""
    head_cache = None
    try:
        if job.known_sha256 is not None:
            # The proxy stores files under their verified sha256 and says so in the ETag: a
            # HIT with the expected one proves it has these bytes, without moving them.
            async with session.head(job.url) as head:
                head_cache = head.headers.get("X-Cache")
                if (
                    head.status == 200
                    and head_cache == "HIT"
                    and head.headers.get("ETag") == f'"{job.known_sha256}"'
                ):
                    size = head.content_length
                    advance(size or 0)
                    return Result(Outcome.CACHED, job.name, size=size, cache="HIT")
        async with session.get(job.url) as resp:
            if resp.status != 200:
                reason = f"HTTP {resp.status}: {_first_line(await resp.text(errors='replace'))}"
                return Result(Outcome.FAILED, job.name, reason=reason.rstrip(": "))
            algs = {"sha256", *job.required, *(a for a, _ in job.allowed or ())}
            hashers = {alg: hashlib.new(alg) for alg in algs}
            size = 0
            async for chunk in resp.content.iter_chunked(CHUNK):
                for h in hashers.values():
                    h.update(chunk)
                size += len(chunk)
                advance(len(chunk))
            # A HEAD for a file of unknown size (metadata) starts the proxy's download, so
            # the GET may already be a HIT: the HEAD's MISS is the truth about the cache.
            cache = "MISS" if head_cache == "MISS" else resp.headers.get("X-Cache", "")
    except aiohttp.ClientConnectorError as e:
        raise _unreachable(e, job.url) from None
    except aiohttp.ClientPayloadError:
        return Result(Outcome.FAILED, job.name, reason="transfer broken off (the proxy gave up)")
    except (aiohttp.ClientError, TimeoutError) as e:
        return Result(Outcome.FAILED, job.name, reason=f"{type(e).__name__}: {e}".rstrip(": "))
    bad = _verify(job, {alg: h.hexdigest() for alg, h in hashers.items()}, size)
    if bad is not None:
        return Result(Outcome.FAILED, job.name, reason=bad, size=size)
    outcome = Outcome.CACHED if cache == "HIT" else Outcome.FETCHED
    return Result(outcome, job.name, size=size, cache=cache or "no X-Cache")


def _add_job(jobs: dict[str, list[Job]], job: Job) -> None:
    """One fetch per file, with every input's conditions on it.

    A filename is never reused on an index, so two inputs naming it mean one file; if their
    hashes disagree, both jobs stay, and the one that is wrong fails with its own origin.
    """
    same = jobs.setdefault(job.name, [])
    for i, other in enumerate(same):
        if any(other.required.get(alg, h) != h for alg, h in job.required.items()):
            continue
        if other.allowed is None or job.allowed is None:
            allowed = other.allowed if job.allowed is None else job.allowed
        else:
            allowed = other.allowed & job.allowed
        same[i] = replace(
            other,
            required={**other.required, **job.required},
            allowed=allowed,
            size=other.size if other.size is not None else job.size,
            known_sha256=other.known_sha256 or job.known_sha256,
        )
        return
    same.append(job)


@dataclass(frozen=True)
class Options:
    index_url: URL  # the proxy's /simple/
    targets: Sequence[Target]
    jobs: int = DEFAULT_JOBS
    metadata: bool = True
    sdists: bool = False
    uv: str | None = None  # None: find_uv()


async def _bounded(sem: asyncio.Semaphore, coro: Any) -> Any:
    async with sem:
        return await coro


async def warm(
    inputs: Sequence[LockInput | Unresolved],
    options: Options,
    reporter: Reporter,
    session: aiohttp.ClientSession,
) -> Summary:
    """Warm the proxy at ``options.index_url`` with every file the inputs need.

    Raises:
        ProxyUnreachable: the proxy refused or could not be connected to.
    """
    summary = Summary()

    def report(result: Result) -> None:
        summary.results.append(result)
        reporter.result(result)

    sem = asyncio.Semaphore(options.jobs)
    index_url = options.index_url
    plan: list[tuple[LockInput, Sequence[Target]]] = []
    skipped: dict[Note, None] = {}  # ordered set: the same skip from two targets is one
    failed: list[Note] = []
    uv = options.uv or find_uv()
    resolutions = []
    for item in inputs:
        skipped.update(dict.fromkeys(item.skipped))
        if isinstance(item, LockInput):
            failed += item.failed
            plan.append((item, options.targets))
        elif uv is None:
            failed.append(
                Note(
                    item.path.name,
                    "requirements without --hash are resolved with uv, which is not installed "
                    "(pip install uv), or pass a lock file",
                )
            )
        else:
            resolutions += [(item, t) for t in options.targets]
    resolved_misses: set[str] = set()
    if resolutions and uv is not None:
        async with ResolutionTap(index_url, session) as tap:
            resolved = await asyncio.gather(
                *(
                    _bounded(sem, resolve_with_uv(item, t, tap.index_url, uv))
                    for item, t in resolutions
                )
            )
        resolved_misses = tap.misses
        for (_, target), got in zip(resolutions, resolved, strict=True):
            if isinstance(got, Note):
                failed.append(got)
            else:
                plan.append((got, [target]))

    # Which packages each target needs, by input.
    wanted: list[tuple[Package, Target]] = []
    for lock, targets in plan:
        for target in targets:
            if lock.requires_python is not None and not lock.requires_python.contains(
                target.python, prereleases=True
            ):
                failed.append(
                    Note(
                        lock.path.name,
                        f"requires Python {lock.requires_python}, not {target.python} "
                        f"({target.label}); pass --python-version",
                    )
                )
                continue
            packages, notes = lock.select(target.env)
            skipped.update(dict.fromkeys(notes))
            wanted += [(p, target) for p in packages]

    projects: list[NormalizedName] = list(dict.fromkeys(p.name for p, _ in wanted))
    pages = await asyncio.gather(
        *(_bounded(sem, fetch_page(session, index_url, name)) for name in projects)
    )
    page_of: dict[str, Page | str] = dict(zip(projects, pages, strict=True))
    for name, got in page_of.items():
        if isinstance(got, str):
            failed.append(Note(f"{name} (index page)", got.removeprefix("index page: ")))

    jobs: dict[str, list[Job]] = {}
    meta_jobs: dict[str, Job] = {}
    for package, target in wanted:
        got = page_of[package.name]
        page, page_error = (got, None) if isinstance(got, Page) else (None, got)
        candidates = _candidates(package, page)
        chosen = choose(package, target, candidates, options.sdists)
        if not chosen:
            if page_error is not None and package.artifacts is None:
                continue  # only the page could say which files there are: reported above
            if candidates:
                reason = f"no wheel for {target.label} and no sdist"
            elif package.artifacts is None:
                what = "with these hashes " if package.allowed else ""
                reason = f"the index has no file of this version {what}"
            else:
                reason = "the lock lists no files"
            reason = f"{reason.rstrip()} ({package.origin})"
            note = Note(package.label, reason)
            if package.markers_known:
                failed.append(note)
            else:  # without markers we cannot tell "not available" from "not needed"
                skipped[Note(package.label, reason + "; the lock records no markers")] = None
            continue
        for artifact in chosen:
            job = _job_for(artifact, package, page, page_error, index_url)
            if isinstance(job, Note):
                failed.append(job)
                continue
            _add_job(jobs, job)
            listed = page.files.get(artifact.filename) if page is not None else None
            if options.metadata and artifact.is_wheel and listed is not None and listed.metadata:
                meta_name = artifact.filename + ".metadata"
                meta_jobs[meta_name] = Job(
                    name=meta_name,
                    url=listed.url.with_path(listed.url.raw_path + ".metadata", encoded=True),
                    required={"sha256": listed.metadata_sha256} if listed.metadata_sha256 else {},
                    allowed=None,
                    size=None,
                    origin="the index page",
                    known_sha256=listed.metadata_sha256,
                )

    for note in skipped:
        report(Result(Outcome.SKIPPED, note.name, reason=note.reason))
    for note in dict.fromkeys(failed):
        report(Result(Outcome.FAILED, note.name, reason=note.reason))
    todo = [*(j for same in jobs.values() for j in same), *meta_jobs.values()]
    reporter.planned(len(todo), sum(j.size or 0 for j in todo))

    async def one(job: Job) -> None:
        async with sem:
            result = await fetch_file(session, job, reporter.advance)
        if result.outcome is Outcome.CACHED and unquote(job.url.raw_path) in resolved_misses:
            # Not in the cache before this run: resolving brought it in (ResolutionTap).
            result = replace(result, outcome=Outcome.FETCHED, cache="MISS, while resolving")
        report(result)

    tasks = [asyncio.create_task(one(job)) for job in todo]
    try:
        await asyncio.gather(*tasks)
    finally:
        for task in tasks:
            task.cancel()
        # Let the others finish cancelling (return_exceptions: their errors are moot now).
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.gather(*tasks, return_exceptions=True)
    return summary


def make_session(index_url: URL, jobs: int) -> aiohttp.ClientSession:
    """The client for the proxy: no total timeout (wheels can be gigabytes)."""
    loopback = index_url.host in ("127.0.0.1", "localhost", "::1")
    return aiohttp.ClientSession(
        timeout=aiohttp.ClientTimeout(total=None, connect=30, sock_read=300),
        connector=aiohttp.TCPConnector(limit=jobs + 2),
        # A corporate HTTP(S)_PROXY is for the outside world, not for a proxy on loopback.
        trust_env=not loopback,
        raise_for_status=False,
    )
