"""Requirements without hashes, resolved for each target by pip's own resolver.

pip is always there next to the interpreter cacheproxy runs on; nothing else is needed.
For each target it runs ``pip install --dry-run --report - --ignore-installed`` against the
proxy with the target's ``--python-version``/``--platform`` tags, and its JSON report
(https://pip.pypa.io/en/stable/reference/installation-report/) names the pinned versions,
which are then read like a lock (files chosen per target by ``plan.py``).

pip evaluates environment markers for the machine it runs on whatever ``--platform``
says (pypa/pip#11664; Pex works around it the same way, pex-tool/pex#1366), so a
Windows-only dependency would be missed when warming for Windows from Linux. The child
pip is therefore started through a two-line bootstrap that gives pip's marker evaluation
the target's environment (``targets.py``) instead of this machine's.

With ``--platform``/``--python-version`` pip insists on wheels (``--only-binary=:all:``):
a package published only as an sdist cannot be resolved for another machine this way
(pypa/pip#13442). pip then names it, and that is the failure line; a lock file avoids it.
"""

import asyncio
import json
import logging
import os
import re
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from tempfile import TemporaryDirectory
from typing import Any

import aiohttp
from aiohttp import web
from packaging.utils import canonicalize_name
from packaging.version import InvalidVersion, Version
from yarl import URL

from cacheproxy.warm.fetch import CHUNK, is_loopback
from cacheproxy.warm.lockfiles import Kind, LockInput, Note, Package, Unresolved
from cacheproxy.warm.targets import Target

logger = logging.getLogger(__name__)

# Runs in the child: pip's vendored packaging looks default_environment() up at every
# Marker.evaluate() (pip/_vendor/packaging/markers.py), so replacing it there is enough.
_BOOTSTRAP = """\
import json, sys
try:
    from pip._vendor.packaging import markers
    from pip._internal.cli.main import main
except ImportError as e:
    sys.exit(f"ERROR: pip is not usable in this Python ({e}); install it, or pass a lock file")
target = json.loads(sys.argv[1])
host = markers.default_environment
markers.default_environment = lambda: {**host(), **target}
sys.exit(main(sys.argv[2:]))
"""


def isolated_env(index_url: URL) -> dict[str, str]:
    """This environment without pip configuration, so only the proxy is asked."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_")}
    env.update(PIP_CONFIG_FILE=os.devnull, PYTHONNOUSERSITE="1")
    if is_loopback(index_url.host):
        # An HTTP(S)_PROXY for the outside world must not be asked for a loopback proxy.
        for name in ("NO_PROXY", "no_proxy"):
            env[name] = ",".join(filter(None, [env.get(name, ""), str(index_url.host)]))
    return env


def pip_command(
    requirements: Path, constraints: Path | None, target: Target, index_url: URL
) -> list[str]:
    """The child's command line: pip resolving ``requirements`` for ``target``."""
    cmd = [
        sys.executable, "-c", _BOOTSTRAP, json.dumps(dict(target.env)),
        "install", "--dry-run", "--ignore-installed", "--report", "-", "--quiet",
        "--isolated", "--no-input", "--disable-pip-version-check", "--no-color",
        # Through the proxy for every page and metadata file (which warms those too),
        # not from pip's own HTTP cache.
        "--no-cache-dir", "--index-url", str(index_url), "-r", str(requirements),
    ]  # fmt: skip
    if target.pip_args:
        cmd += ["--only-binary=:all:", *target.pip_args]
    if constraints is not None:
        cmd += ["-c", str(constraints)]
    return cmd


def one_line(stderr: str, limit: int = 400) -> str:
    """pip's error output as one line: its ERROR lines, else everything, shortened."""
    lines = [ln.strip() for ln in stderr.splitlines() if ln.strip()]
    lines = [ln for ln in lines if ln.startswith("ERROR:")] or lines
    text = " ".join(re.sub(r"^ERROR:\s*", "", ln) for ln in lines) or "no message"
    return text if len(text) <= limit else text[: limit - 1] + "…"


def packages_from_report(report: Mapping[str, Any], origin: str) -> list[Package]:
    """The pinned distributions of a pip installation report (its ``install`` list).

    The files come from the proxy's index page, like a requirements file's pins: the
    best wheel for the target (plus the sdist with ``--sdists``), whose hashes the proxy
    checks against that page.

    Raises:
        KeyError, TypeError, InvalidVersion: not an installation report.
    """
    packages = []
    for item in report["install"]:
        metadata = item["metadata"]
        if item.get("is_direct"):
            continue  # a URL or path requirement: not on an index (pip's report, v1)
        packages.append(
            Package(
                name=canonicalize_name(str(metadata["name"])),
                version=Version(str(metadata["version"])),
                artifacts=None,
                allowed=None,
                origin=origin,
            )
        )
    return packages


def _resolved(unresolved: Unresolved, target: Target, packages: list[Package]) -> LockInput:
    def select(env: Mapping[str, str]) -> tuple[list[Package], list[Note]]:
        return packages, []  # resolved for this one target: every pin applies

    return LockInput(path=unresolved.path, kind=Kind.REQUIREMENTS, requires_python=None,
                     selector=select)  # fmt: skip


async def resolve(unresolved: Unresolved, target: Target, index_url: URL) -> LockInput | Note:
    """Resolve ``unresolved`` for ``target`` with pip, through the proxy at ``index_url``."""
    name = unresolved.path.name
    with TemporaryDirectory(prefix="cacheproxy-warm-") as tmp:
        requirements = Path(tmp) / "requirements.in"
        requirements.write_text("".join(f"{r}\n" for r in unresolved.requirements))
        constraints = None
        if unresolved.constraints:
            constraints = Path(tmp) / "constraints.txt"
            constraints.write_text("".join(f"{c}\n" for c in unresolved.constraints))
        cmd = pip_command(requirements, constraints, target, index_url)
        logger.debug("resolving %s for %s with pip", name, target.label)
        try:
            proc = await asyncio.create_subprocess_exec(
                *cmd,
                env=isolated_env(index_url),
                cwd=tmp,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
            )
        except OSError as e:
            return Note(name, f"cannot run pip ({sys.executable}): {e.strerror or e}")
        out, err = await proc.communicate()
    if proc.returncode != 0:
        why = one_line(err.decode(errors="replace"))
        return Note(name, f"pip could not resolve it for {target.label}: {why}")
    try:
        packages = packages_from_report(json.loads(out), f"{name}, resolved by pip")
    except (ValueError, KeyError, TypeError, InvalidVersion) as e:
        return Note(name, f"pip's report for {target.label} is unreadable: {e}")
    return _resolved(unresolved, target, packages)


# Hop-by-hop and framing headers: each side of the tap sets its own.
_NOT_FORWARDED = {
    "host", "connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade",
    "proxy-authorization", "proxy-authenticate", "content-length",
}  # fmt: skip


class ResolutionTap:
    """A loopback pass-through in front of the proxy, for the resolver, that notes misses.

    Resolving reads metadata, and on an index without PEP 658 metadata the resolver reads
    it from the wheels themselves, which makes the proxy download those wheels. Warm's own
    request for them is then a HIT, and the summary would call a file this run brought in
    "already cached". The tap sees the proxy's ``X-Cache`` on the resolver's requests, so
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
        try:
            return await self._forward(request)
        except (aiohttp.ClientError, TimeoutError) as e:
            # The resolver sees a 502 and says so in its one line; never a traceback here.
            reason = f"cacheproxy warm: the proxy did not answer: {type(e).__name__}"
            return web.Response(status=502, text=reason + "\n")

    async def _forward(self, request: web.Request) -> web.StreamResponse:
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


async def resolve_all(
    items: Sequence[Unresolved],
    targets: Sequence[Target],
    index_url: URL,
    session: aiohttp.ClientSession,
    limit: asyncio.Semaphore,
) -> tuple[list[tuple[LockInput, Target]], list[Note], set[str]]:
    """Every unresolved input for every target: the locks, the failures, and the files
    the proxy downloaded while the resolver read them (:class:`ResolutionTap`)."""
    if not items:
        return [], [], set()
    pairs = [(item, t) for item in items for t in targets]

    async def one(item: Unresolved, target: Target, url: URL) -> LockInput | Note:
        async with limit:
            return await resolve(item, target, url)

    async with ResolutionTap(index_url, session) as tap:
        got = await asyncio.gather(*(one(item, t, tap.index_url) for item, t in pairs))
    locks, failed = [], []
    for (_, target), result in zip(pairs, got, strict=True):
        if isinstance(result, Note):
            failed.append(result)
        else:
            locks.append((result, target))
    return locks, failed, tap.misses
