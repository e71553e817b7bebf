"""``cacheproxy dockerfile``: print Dockerfile lines that install through the proxy, or
rewrite a Dockerfile's pip/uv steps (``--rewrite``).

``cli.py`` mounts this with :func:`add_parser`; :func:`run` returns the exit code. Text
comes from the pure renderers in ``snippets.py`` and ``dockerfile_rewrite.py`` and goes to
a writer (stdout, or files in ``--out DIR``). The Docker engine is asked
only when the gateway IP is needed (``docker_env.py``); the prober rides on the parsed
arguments so tests can swap it.
"""

import argparse
import difflib
import os
import re
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cacheproxy.cli import exitcodes
from cacheproxy.docker import engine as docker_env
from cacheproxy.docker.rewrite import DockerfileError, Options, rewrite
from cacheproxy.docker.snippets import (
    DEFAULT_ALIAS,
    SHARING_MODES,
    Identity,
    Reach,
    Step,
    Target,
    Tool,
    make_target,
    render_build_flags,
    render_snippet,
)
from cacheproxy.errors import ConfigError
from cacheproxy.settings import DEFAULT_PORT

Writer = Callable[[str, str], None]  # (file name, text)


def add_parser(subparsers: "argparse._SubParsersAction[Any]") -> None:
    """Add the ``dockerfile`` sub-command."""
    p = subparsers.add_parser(
        "dockerfile",
        help="print Dockerfile lines that install through the proxy, or rewrite a Dockerfile",
        description="Print the lines to paste into a Dockerfile so that pip/uv/poetry/pdm "
        "install through the proxy with a BuildKit cache mount, and the docker build flags "
        "that let the build reach it; or rewrite an existing Dockerfile (--rewrite).",
    )
    p.add_argument("packages", nargs="*", metavar="PACKAGE", help="install these (pip, uv)")
    p.add_argument("--tool", choices=[t.value for t in Tool], help="pip (default), uv, poetry, pdm")
    p.add_argument(
        "-r",
        "--requirement",
        dest="requirements",
        metavar="FILE",
        help="install from this requirements file (default requirements.txt)",
    )
    reach = p.add_argument_group("how the build reaches the proxy")
    reach.add_argument(
        "--proxy-url", metavar="URL", help="a proxy the build reaches by itself, e.g. a team server"
    )
    reach.add_argument(
        "--host-alias",
        default=DEFAULT_ALIAS,
        metavar="NAME",
        help=f"the proxy's name inside the build (default {DEFAULT_ALIAS})",
    )
    reach.add_argument(
        "--port", type=int, default=DEFAULT_PORT, help=f"the proxy's port (default {DEFAULT_PORT})"
    )
    reach.add_argument(
        "--reach",
        default="auto",
        choices=["auto", Reach.GATEWAY_IP, Reach.HOST_GATEWAY, Reach.HOST_NETWORK],
        help="auto (default): the bridge gateway IP from the local engine "
        "(host-gateway on Docker Desktop)",
    )
    reach.add_argument(
        "--gateway-ip",
        metavar="IP",
        help="the gateway IP to map the alias to (implies --reach gateway-ip)",
    )
    reach.add_argument(
        "--auth-secret",
        metavar="ID",
        help="the proxy needs a user (--auth-reads): read a netrc file from the BuildKit "
        "secret ID (docker build --secret id=ID,src=FILE); never in the image or its history",
    )
    user = p.add_argument_group("builds that run as a non-root USER")
    user.add_argument("--uid", type=int, help="the user's uid: owns the cache mount")
    user.add_argument("--gid", type=int, help="its gid (default: the uid)")
    user.add_argument("--home", metavar="DIR", help="its home: the cache goes in DIR/.cache")
    user.add_argument("--mode", help="the cache mount's mode, e.g. 0777 (BuildKit's default 0755)")
    user.add_argument(
        "--sharing",
        choices=SHARING_MODES,
        help="cache mount sharing (default: shared for pip/uv, locked for pdm)",
    )
    out = p.add_argument_group("output")
    out.add_argument(
        "--print-build-flags",
        action="store_true",
        help="print only the docker build flags, for $(...)",
    )
    out.add_argument("--out", metavar="DIR", help="write TOOL.Dockerfile and build-flags into DIR")
    out.add_argument(
        "--rewrite",
        metavar="PATH",
        help="rewrite this Dockerfile's pip/uv steps; prints a unified diff",
    )
    out.add_argument("--write", action="store_true", help="with --rewrite: change the file")
    p.set_defaults(func=run, probe_engine=docker_env.probe_engine)


def run(args: argparse.Namespace) -> int:
    """Run ``cacheproxy dockerfile``; 0 ok, 2 invalid usage or input (one line on stderr)."""
    try:
        _check(args)
        target = _target(args)
        if args.rewrite is not None:
            return _rewrite(args, target)
        if args.print_build_flags:
            print(render_build_flags(target))
            return exitcodes.OK
        step = Step(
            tool=Tool(args.tool or Tool.PIP),
            requirements=args.requirements,
            packages=tuple(args.packages),
            ident=_identity(args),
            sharing=args.sharing,
            secret=args.auth_secret,
        )
        text = render_snippet(step, target)
        writer = _dir_writer(Path(args.out)) if args.out else _stdout_writer
        writer(f"{step.tool}.Dockerfile", text)
        if args.out:
            writer("build-flags", render_build_flags(target) + "\n")
        return exitcodes.OK
    except (ConfigError, DockerfileError) as e:
        return _error(str(e))
    except OSError as e:
        return _error(f"{e.filename or ''}: {e.strerror or e}".lstrip(": "), exitcodes.FAILED)


def _error(message: str, code: int = exitcodes.USAGE) -> int:
    print(f"cacheproxy: error: {message}", file=sys.stderr)
    return code


def _check(args: argparse.Namespace) -> None:
    if args.proxy_url is not None and (args.reach != "auto" or args.gateway_ip is not None):
        raise ConfigError("--proxy-url names the proxy itself: drop --reach/--gateway-ip")
    if args.gateway_ip is not None and args.reach not in ("auto", Reach.GATEWAY_IP):
        raise ConfigError(f"--gateway-ip goes with --reach gateway-ip, not --reach {args.reach}")
    if args.auth_secret is not None and args.rewrite is not None:
        raise ConfigError("--auth-secret goes with generated lines, not --rewrite")
    if args.write and args.rewrite is None:
        raise ConfigError("--write goes with --rewrite PATH")
    if args.rewrite is not None and (args.packages or args.requirements or args.tool or args.out):
        raise ConfigError(
            "--rewrite takes the install commands from the Dockerfile: drop --tool/-r/PACKAGE/--out"
        )
    if args.mode is not None and not re.fullmatch(r"0?[0-7]{3}", args.mode):
        raise ConfigError(f"--mode must be octal like 0755, not {args.mode!r}")
    for name in ("uid", "gid"):
        if (getattr(args, name) or 0) < 0:
            raise ConfigError(f"--{name} must not be negative")


def _identity(args: argparse.Namespace) -> Identity:
    return Identity(uid=args.uid or 0, gid=args.gid, home=args.home, mode=args.mode)


def _target(args: argparse.Namespace) -> Target:
    if args.proxy_url is not None:
        return make_target(Reach.URL, proxy_url=args.proxy_url, port=args.port)
    # An IP given is the one to use: it implies --reach gateway-ip (no engine probe).
    reach = Reach.GATEWAY_IP if args.gateway_ip is not None else args.reach
    gateway, note = args.gateway_ip, "given with --gateway-ip"
    if reach == "auto" or (reach == Reach.GATEWAY_IP and gateway is None):
        engine: docker_env.Engine = args.probe_engine()
        if engine.rootless:
            print(
                "cacheproxy: warning: rootless Docker: the bridge gateway is inside "
                "rootlesskit's namespace; give --proxy-url with an address of this host",
                file=sys.stderr,
            )
        if reach == "auto":
            # Resolve the IP ourselves (host-gateway broke in some docker build releases);
            # host-gateway only where the gateway
            # IP is not the host (Docker Desktop's VM).
            reach = Reach.HOST_GATEWAY if engine.desktop else Reach.GATEWAY_IP
        gateway, note = engine.gateway, engine.note
    if gateway is not None and not _ipv4(gateway):
        raise ConfigError(f"--gateway-ip must be an IPv4 address, not {gateway!r}")
    return make_target(
        Reach(reach), alias=args.host_alias, port=args.port, gateway=gateway, gateway_note=note
    )


def _ipv4(text: str) -> bool:
    parts = text.split(".")
    return len(parts) == 4 and all(p.isdigit() and int(p) < 256 for p in parts)


def _rewrite(args: argparse.Namespace, target: Target) -> int:
    path = Path(args.rewrite)
    try:
        data = path.read_bytes()
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not UTF-8 text") from None
    except OSError as e:
        raise ConfigError(f"{path}: {e.strerror or e}") from None
    options = Options(uid=args.uid, gid=args.gid, home=args.home, sharing=args.sharing)
    result = rewrite(text, target, options)
    for note in result.notes:
        print(f"cacheproxy: note: {path}:{note.line}: {note.message}", file=sys.stderr)
    if result.text == text:
        print(f"cacheproxy: {path}: nothing to change", file=sys.stderr)
        return exitcodes.OK
    if args.write:
        _write_atomically(path, result.text)
        print(f"cacheproxy: rewrote {path} ({result.changed} RUN steps)", file=sys.stderr)
    else:
        sys.stdout.writelines(
            difflib.unified_diff(
                text.splitlines(keepends=True),
                result.text.splitlines(keepends=True),
                f"a/{path}",
                f"b/{path}",
            )
        )
    flags = render_build_flags(target)
    print(
        f"cacheproxy: build with: DOCKER_BUILDKIT=1 docker build{' ' + flags if flags else ''} .",
        file=sys.stderr,
    )
    return exitcodes.OK


def _write_atomically(path: Path, text: str) -> None:
    # Write-then-rename: an interrupted run leaves the old Dockerfile, never half of one.
    mode = path.stat().st_mode & 0o7777
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as f:
            f.write(text)
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def _stdout_writer(name: str, text: str) -> None:
    sys.stdout.write(text)


def _dir_writer(directory: Path) -> Writer:
    def write(name: str, text: str) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        (directory / name).write_text(text, encoding="utf-8")
        print(f"cacheproxy: wrote {directory / name}", file=sys.stderr)

    return write
