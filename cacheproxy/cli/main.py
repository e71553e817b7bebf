"""The command line: ``cacheproxy serve``. ``main(argv) -> int`` is the only entry point."""

import argparse
import logging
import os
import socket
import sys
from collections.abc import Sequence
from typing import Any, NoReturn

from aiohttp import web

from cacheproxy import __version__
from cacheproxy.cli import dockerfile as dockerfile_cli
from cacheproxy.cli import maintenance as maintenance_cli
from cacheproxy.cli import warm as warm_cli
from cacheproxy.cli.log import ACCESS_LOG_FORMAT, JsonAccessLogger, configure_logging
from cacheproxy.cli.workers import bind, prepare_cache, run_workers
from cacheproxy.errors import ConfigError
from cacheproxy.settings import DEFAULT_HOST, DEFAULT_PORT, Settings, build_settings
from cacheproxy.store.local import Storage
from cacheproxy.web.app import create_app

logger = logging.getLogger("cacheproxy")

EXIT_OK = 0
EXIT_RUNTIME = 1
EXIT_USAGE = 2  # invalid settings, like argparse's own usage errors


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"cacheproxy: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="cacheproxy", description="A caching proxy for the Python package index.")
    parser.add_argument("--version", action="version", version=f"cacheproxy {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    serve = sub.add_parser("serve", help="run the caching index proxy")
    serve.add_argument("--host", help=f"address to bind [CACHEPROXY_HOST, default {DEFAULT_HOST}]")
    serve.add_argument("--port", help=f"port to bind [CACHEPROXY_PORT, default {DEFAULT_PORT}]")
    serve.add_argument(
        "--cache-dir",
        help="where to store the cache [CACHEPROXY_CACHE_DIR, default ~/.cache/cacheproxy]",
    )
    serve.add_argument(
        "--upstream",
        help="simple index to proxy [CACHEPROXY_UPSTREAM, default: pip's configured index]",
    )
    serve.add_argument(
        "--index-ttl", help="seconds an index page is fresh [CACHEPROXY_INDEX_TTL, default 600]"
    )
    serve.add_argument(
        "--offline",
        action="store_true",
        default=None,
        help="never contact upstream; serve only what is cached [CACHEPROXY_OFFLINE]",
    )
    serve.add_argument(
        "--connect-timeout", help="seconds to connect upstream [CACHEPROXY_CONNECT_TIMEOUT, 10]"
    )
    serve.add_argument(
        "--read-timeout",
        help="seconds without a byte from upstream [CACHEPROXY_READ_TIMEOUT, 60]",
    )
    serve.add_argument(
        "--page-timeout",
        help="seconds for a whole index page fetch [CACHEPROXY_PAGE_TIMEOUT, 30]",
    )
    serve.add_argument(
        "--retries", help="extra attempts for failed upstream requests [CACHEPROXY_RETRIES, 2]"
    )
    serve.add_argument(
        "--max-size",
        help="size limit of stored files, e.g. 50GB or 20%% of the disk [CACHEPROXY_MAX_SIZE]",
    )
    serve.add_argument(
        "--workers",
        help="processes serving the port and sharing the cache [CACHEPROXY_WORKERS, 1]",
    )
    serve.add_argument(
        "--log-format",
        choices=["text", "json"],
        default=None,
        help="text for people, json (one object a line) for machines [CACHEPROXY_LOG_FORMAT]",
    )
    serve.add_argument(
        "--log-level", default=None, help="debug, info, warning [CACHEPROXY_LOG_LEVEL]"
    )
    dockerfile_cli.add_parser(sub)
    maintenance_cli.add_parsers(sub)
    warm_cli.add_parser(sub)
    return parser


def serve(settings: Settings, log_level: str, log_format: str = "text") -> int:
    configure_logging(log_level, with_pid=settings.workers > 1, fmt=log_format)
    try:
        if settings.workers > 1:
            prepare_cache(settings)  # clean and check once, before any worker runs
        else:
            Storage.open_sync(settings.cache_dir, clean=False).close_sync()  # usable?
        socks = bind(settings.host, settings.port, settings.workers)
    except ConfigError as e:  # an unusable cache directory
        print(f"cacheproxy: error: {e}", file=sys.stderr)
        return EXIT_USAGE
    except OSError as e:
        print(
            f"cacheproxy: error: cannot listen on {settings.host}:{settings.port}: "
            f"{e.strerror or e}",
            file=sys.stderr,
        )
        return EXIT_RUNTIME
    # Only now, with the cache usable and the port bound, is "listening" true.
    logger.info(
        "cacheproxy %s listening on http://%s:%d/simple/, proxying %s, caching in %s%s%s",
        __version__,
        settings.host if ":" not in settings.host else f"[{settings.host}]",
        socks[0].getsockname()[1],  # the kernel's pick for --port 0
        settings.upstream_redacted,
        settings.cache_dir,
        " (offline)" if settings.offline else "",
        f", {settings.workers} workers" if settings.workers > 1 else "",
    )
    if settings.workers > 1:
        return run_workers(settings, socks, lambda sock: _run(settings, sock, log_format))
    _run(settings, socks[0], log_format)
    return EXIT_OK


def _run(settings: Settings, sock: socket.socket, log_format: str) -> None:
    where: dict[str, Any] = {"sock": sock}
    if log_format == "json":
        where["access_log_class"] = JsonAccessLogger
    web.run_app(
        create_app(settings),
        print=None,
        access_log=logging.getLogger("aiohttp.access"),
        access_log_format=ACCESS_LOG_FORMAT,
        handle_signals=True,
        **where,
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # --help, --version, or a usage error already printed
        return int(e.code or 0)
    if args.command != "serve" and hasattr(args, "func"):
        return int(args.func(args))
    if args.command != "serve":
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    flags = {
        "host": args.host,
        "port": args.port,
        "cache_dir": args.cache_dir,
        "upstream": args.upstream,
        "index_ttl": args.index_ttl,
        "offline": args.offline,
        "connect_timeout": args.connect_timeout,
        "read_timeout": args.read_timeout,
        "page_timeout": args.page_timeout,
        "retries": args.retries,
        "workers": args.workers,
        "max_size": args.max_size,
    }
    try:
        settings = build_settings(flags, os.environ)
    except ConfigError as e:
        print(f"cacheproxy: error: {e}", file=sys.stderr)
        return EXIT_USAGE
    level = args.log_level or os.environ.get("CACHEPROXY_LOG_LEVEL") or "info"
    log_format = args.log_format or os.environ.get("CACHEPROXY_LOG_FORMAT") or "text"
    if log_format not in ("text", "json"):
        print(
            f"cacheproxy: error: log format must be text or json, not {log_format!r}",
            file=sys.stderr,
        )
        return EXIT_USAGE
    return serve(settings, level, log_format)
