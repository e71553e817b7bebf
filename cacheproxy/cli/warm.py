"""``cacheproxy warm``: pre-fill the cache from lock and requirements files.

``cli/main.py`` mounts this with :func:`add_parser`; :func:`run` returns the exit code: 0 when
nothing failed, 1 when something did (or the proxy cannot be reached), 2 for invalid
usage or an unreadable input. The engine is ``cacheproxy/warm/``; here are the flags, the
in-process proxy for ``--cache-dir``, and the output: a rich progress bar on a terminal,
one plain line per file otherwise, then one summary line.

Why rich for the bar (and not tqdm): it ships its own type information, so mypy strict
checks our use of it without stubs, and its live display redraws safely while failure
lines are printed above it from many concurrent downloads.
"""

import argparse
import asyncio
import contextlib
import dataclasses
import logging
import os
import socket
import sys
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any, NoReturn, TextIO

from aiohttp import web
from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)
from yarl import URL

from cacheproxy.cli import exitcodes
from cacheproxy.errors import ConfigError
from cacheproxy.settings import build_settings
from cacheproxy.store.local import share_tmp
from cacheproxy.urls import redact_url
from cacheproxy.warm.engine import DEFAULT_JOBS, Options, warm
from cacheproxy.warm.fetch import ProxyUnreachable, make_session
from cacheproxy.warm.lockfiles import Kind, LockFileError, LockInput, Unresolved, load
from cacheproxy.warm.report import Outcome, Reporter, Result, Summary, result_line, summary_line
from cacheproxy.warm.targets import PLATFORM_HELP, Target, make_targets
from cacheproxy.web.app import create_app


def add_parser(subparsers: "argparse._SubParsersAction[Any]") -> None:
    """Add the ``warm`` sub-command."""
    p = subparsers.add_parser(
        "warm",
        help="pre-fill the cache from lock and requirements files",
        description="Fetch every file that the given lock or requirements files install "
        "(for each target platform and Python) through a running proxy (--proxy-url), or "
        "into a cache directory directly (--cache-dir), so later builds, or an air-gapped "
        "machine, find them cached. Inputs: requirements*.txt / *.in (with or without "
        "--hash pins), uv.lock, poetry.lock, pdm.lock, pylock.toml / pylock.*.toml.",
    )
    p.add_argument("files", nargs="*", metavar="FILE", help="lock or requirements files")
    p.add_argument(
        "-r",
        "--requirement",
        action="append",
        default=[],
        dest="requirements",
        metavar="FILE",
        help="a requirements file, as pip takes it (repeatable); read as one whatever its name",
    )
    where = p.add_argument_group("where to warm (one of)")
    where.add_argument(
        "--proxy-url",
        metavar="URL",
        help="a running proxy's index, e.g. http://127.0.0.1:8503/simple/",
    )
    where.add_argument(
        "--cache-dir",
        metavar="DIR",
        help="warm this cache directory directly, through a proxy started in this process",
    )
    where.add_argument(
        "--upstream",
        metavar="URL",
        help="with --cache-dir: the index to fetch from [CACHEPROXY_UPSTREAM, default: pip's]",
    )
    what = p.add_argument_group("what to warm")
    what.add_argument(
        "--platform",
        action="append",
        default=[],
        metavar="TAG",
        help=f"a target's wheel platform tag (repeatable), e.g. {PLATFORM_HELP}; "
        "default: this machine's",
    )
    what.add_argument(
        "--python-version",
        action="append",
        default=[],
        metavar="X.Y",
        help="a target CPython version (repeatable), e.g. 3.12; default: this interpreter's",
    )
    what.add_argument(
        "--metadata",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also fetch the PEP 658 metadata of wheels where the index has it (default on: "
        "resolvers read it before the wheel)",
    )
    what.add_argument(
        "--sdists",
        action="store_true",
        help="fetch sdists too (default: only for packages with no wheel for a target)",
    )
    p.add_argument(
        "-j",
        "--jobs",
        type=int,
        default=DEFAULT_JOBS,
        metavar="N",
        help=f"files fetched at once (default {DEFAULT_JOBS})",
    )
    p.set_defaults(func=run)


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        self.exit(exitcodes.USAGE, f"cacheproxy: error: {message}\n")


def main(argv: Sequence[str] | None = None) -> int:
    """``cacheproxy warm`` on its own (``python -m cacheproxy.cli.warm warm …``)."""
    parser = _Parser(prog="cacheproxy")
    add_parser(parser.add_subparsers(dest="command", required=True, parser_class=_Parser))
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:
        return int(e.code or 0)
    return run(args)


def _error(message: str, code: int) -> int:
    print(f"cacheproxy: error: {message}", file=sys.stderr)
    return code


def proxy_index_url(raw: str) -> URL:
    """``--proxy-url``: a proxy's index URL; a bare ``http://host:port`` means its /simple/.

    Raises:
        ConfigError: not an http(s) URL.
    """
    try:
        url = URL(raw.strip())
        valid = url.scheme in ("http", "https") and bool(url.host)
        if valid:
            _ = url.port  # yarl checks the port only when asked
    except ValueError:
        valid = False
    if not valid:
        raise ConfigError(f"--proxy-url must be an http(s) URL, not {redact_url(raw)!r}")
    path = url.raw_path
    if path in ("", "/"):
        path = "/simple/"
    return url.with_path(path if path.endswith("/") else path + "/", encoded=True).with_query(None)


def load_inputs(files: Sequence[str], requirements: Sequence[str]) -> list[LockInput | Unresolved]:
    """The positional inputs (format by name, then content), then the ``-r`` files.

    Raises:
        ConfigError: no input at all.
        LockFileError: an input cannot be read.
    """
    if not files and not requirements:
        # argparse's own words, as when FILE was mandatory.
        raise ConfigError("the following arguments are required: FILE (or -r FILE)")
    return [
        *(load(Path(f)) for f in files),
        *(load(Path(f), kind=Kind.REQUIREMENTS) for f in requirements),
    ]


def run(args: argparse.Namespace) -> int:
    """Run ``cacheproxy warm``; see the module docstring for the exit codes."""
    try:
        if (args.proxy_url is None) == (args.cache_dir is None):
            raise ConfigError(
                "give --proxy-url URL (a running proxy) or --cache-dir DIR (warm it directly)"
            )
        if args.upstream is not None and args.cache_dir is None:
            raise ConfigError("--upstream goes with --cache-dir (a running proxy has its own)")
        if not 1 <= args.jobs <= 64:
            raise ConfigError(f"--jobs must be between 1 and 64, not {args.jobs}")
        index_url = proxy_index_url(args.proxy_url) if args.proxy_url else None
        targets = make_targets(args.platform, args.python_version)
        inputs = load_inputs(args.files, args.requirements)
    except (ConfigError, LockFileError) as e:
        return _error(str(e), exitcodes.USAGE)
    reporter = make_reporter(sys.stdout)
    try:
        summary = asyncio.run(_main(args, index_url, targets, inputs, reporter))
    except ConfigError as e:  # the in-process proxy's settings or cache dir
        reporter.close()
        return _error(str(e), exitcodes.USAGE)
    except ProxyUnreachable as e:
        reporter.close()
        return _error(str(e), exitcodes.FAILED)
    except KeyboardInterrupt:
        reporter.close()
        return _error("interrupted", exitcodes.FAILED)
    reporter.close()
    reporter.line(summary_line(summary))
    return exitcodes.OK if summary.ok else exitcodes.FAILED


async def _main(
    args: argparse.Namespace,
    index_url: URL | None,
    targets: Sequence[Target],
    inputs: Sequence[LockInput | Unresolved],
    reporter: "WarmReporter",
) -> Summary:
    async with contextlib.AsyncExitStack() as stack:
        if index_url is None:
            index_url = await stack.enter_async_context(
                in_process_proxy(Path(args.cache_dir), args.upstream)
            )
            where = f"into {args.cache_dir}"
        else:
            where = f"through {redact_url(index_url)}"
        names = ", ".join(Path(f).name for f in [*args.files, *args.requirements])
        reporter.line(f"warm: {names} for {', '.join(t.label for t in targets)}, {where}")
        reporter.start()
        session = await stack.enter_async_context(make_session(index_url, args.jobs))
        options = Options(
            index_url=index_url,
            targets=targets,
            jobs=args.jobs,
            metadata=args.metadata,
            sdists=args.sdists,
        )
        return await warm(inputs, options, reporter, session)
    raise AssertionError("unreachable")  # pragma: no cover - mypy: the block returns


@contextlib.asynccontextmanager
async def in_process_proxy(cache_dir: Path, upstream: str | None) -> AsyncIterator[URL]:
    """The proxy app on an ephemeral loopback port, on ``cache_dir``: its index URL.

    Raises:
        ConfigError: invalid settings, or the cache directory is not usable.
    """
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    tmp_share_closer = contextlib.ExitStack()
    try:
        sock.bind(("127.0.0.1", 0))
        sock.listen(128)
        port = sock.getsockname()[1]
        flags = {"cache_dir": str(cache_dir), "upstream": upstream, "host": "127.0.0.1"}
        # The real port, so "upstream is this proxy itself" is checked against it.
        settings = build_settings({**flags, "port": str(port)}, os.environ)
        # A `cacheproxy serve` may be using this directory right now: do not empty tmp/ (its
        # downloads in progress and their lock files); processes share the directory
        # safely, one download per file.
        settings = dataclasses.replace(settings, shared_dir=True)
        # For the whole run: a serve starting meanwhile must not empty tmp/ under our
        # downloads (store/local.py share_tmp). Waits while one is emptying it.
        tmp_share = await asyncio.to_thread(share_tmp, settings.cache_dir)
        tmp_share_closer.callback(os.close, tmp_share)
        runner = web.AppRunner(create_app(settings), access_log=None, handle_signals=False)
        # Every failure is a line of our own; the proxy's warnings would only repeat them.
        logging.getLogger("cacheproxy").setLevel(logging.ERROR)
        await runner.setup()
    except BaseException:
        sock.close()
        tmp_share_closer.close()
        raise
    try:
        site = web.SockSite(runner, sock)
        await site.start()
        yield URL(f"http://127.0.0.1:{port}/simple/")
    finally:
        await runner.cleanup()
        sock.close()
        tmp_share_closer.close()


# -- output --------------------------------------------------------------------------------


class WarmReporter(Reporter):
    """A :class:`Reporter` that also prints header and summary lines."""

    def start(self) -> None: ...

    def line(self, text: str) -> None: ...

    def close(self) -> None: ...


class PlainReporter(WarmReporter):
    """One line per file, as each finishes: for logs and CI."""

    def __init__(self, out: TextIO) -> None:
        self._out = out

    def planned(self, files: int, total_bytes: int) -> None:
        pass

    def advance(self, nbytes: int) -> None:
        pass

    def result(self, result: Result) -> None:
        self.line(result_line(result))

    def line(self, text: str) -> None:
        print(text, file=self._out, flush=True)


class RichReporter(WarmReporter):
    """A progress bar in bytes and files; skips and failures are printed above it."""

    def __init__(self, console: Console) -> None:
        self._console = console
        self._progress = Progress(
            TextColumn("[bold]warming"),
            BarColumn(),
            DownloadColumn(),
            TransferSpeedColumn(),
            TextColumn("{task.fields[files]}"),
            TimeRemainingColumn(),
            console=console,
            transient=True,  # the summary line replaces it
        )
        self._task: TaskID | None = None
        self._files = 0
        self._done = 0
        self._planned = False
        self._completed = 0
        self._total = 0

    def start(self) -> None:
        self._progress.start()
        self._task = self._progress.add_task("warming", total=None, files="resolving…")

    def planned(self, files: int, total_bytes: int) -> None:
        self._planned, self._files, self._total = True, files, total_bytes
        self._update()

    def advance(self, nbytes: int) -> None:
        self._completed += nbytes
        # Sizes the inputs did not give are learnt only as the bytes arrive.
        self._total = max(self._total, self._completed)
        self._update()

    def result(self, result: Result) -> None:
        if self._planned:
            self._done += 1
        if result.outcome in (Outcome.SKIPPED, Outcome.FAILED):
            self._progress.console.print(result_line(result), markup=False, highlight=False)
        self._update()

    def _update(self) -> None:
        if self._task is None:
            return
        files = f"{self._done}/{self._files} files" if self._planned else "resolving…"
        total = self._total if self._planned and self._total else None
        self._progress.update(self._task, completed=self._completed, total=total, files=files)

    def line(self, text: str) -> None:
        self._console.print(text, markup=False, highlight=False)

    def close(self) -> None:
        self._progress.stop()


def make_reporter(out: TextIO) -> WarmReporter:
    """The progress bar on a terminal, plain lines otherwise."""
    if out.isatty() and os.environ.get("TERM") != "dumb":
        return RichReporter(Console(file=out))
    return PlainReporter(out)


if __name__ == "__main__":
    raise SystemExit(main())
