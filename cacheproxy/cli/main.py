"""The command line: ``cacheproxy serve``. ``main(argv) -> int`` is the only entry point."""

import argparse
import importlib.util
import logging
import os
import socket
import sys
from collections.abc import Sequence
from typing import NoReturn

from cacheproxy import __version__
from cacheproxy.cli import dockerfile as dockerfile_cli
from cacheproxy.cli import exitcodes
from cacheproxy.cli import maintenance as maintenance_cli
from cacheproxy.cli import team as team_cli
from cacheproxy.cli import warm as warm_cli
from cacheproxy.cli.instance import InstanceBusy, hold_instance_lock
from cacheproxy.cli.limits import connection_cap, raise_nofile_limit
from cacheproxy.cli.log import (
    ACCESS_LOG_FORMAT,
    JsonAccessLogger,
    TextAccessLogger,
    configure_logging,
)
from cacheproxy.cli.workers import bind, prepare_cache, run_workers
from cacheproxy.errors import ConfigError
from cacheproxy.proxy.heap import limit_arenas
from cacheproxy.settings import DEFAULT_HOST, DEFAULT_PORT, Settings, build_settings
from cacheproxy.simple.gate import Gate
from cacheproxy.store.local import Storage
from cacheproxy.web import connections
from cacheproxy.web.app import create_app

logger = logging.getLogger("cacheproxy")


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        self.exit(exitcodes.USAGE, f"cacheproxy: error: {message}\n")


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
        "--index",
        action="append",
        metavar="NAME=URL",
        help="an upstream index, repeatable; the first is the default "
        "(credentials go in the --config file or its environment variables: ps shows flags)",
    )
    serve.add_argument(
        "--route",
        action="append",
        metavar="PATTERN=NAME",
        help="projects matching the glob come from index NAME only; repeatable, first match wins",
    )
    serve.add_argument(
        "--config",
        help="TOML file with the indexes, their settings and the routes [CACHEPROXY_CONFIG]",
    )
    serve.add_argument(
        "--index-ttl", help="seconds an index page is fresh [CACHEPROXY_INDEX_TTL, default 600]"
    )
    serve.add_argument(
        "--client-revalidate-after",
        metavar="DURATION",
        help="revalidate a page older than this when a client sends max-age=0 or no-cache "
        "(e.g. 30s); default off: --index-ttl alone decides [CACHEPROXY_CLIENT_REVALIDATE_AFTER]",
    )
    serve.add_argument(
        "--offline",
        action="store_true",
        default=None,
        help="never contact upstream; serve only what is cached [CACHEPROXY_OFFLINE]",
    )
    serve.add_argument(
        "--synthesize-metadata",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="serve PEP 658 metadata for wheels whose index gives none, read from the wheel "
        "[CACHEPROXY_SYNTHESIZE_METADATA, default on]",
    )
    serve.add_argument(
        "--min-age",
        help="hold back files uploaded less than this long ago, e.g. 7d or 36h "
        "[CACHEPROXY_MIN_AGE]",
    )
    serve.add_argument(
        "--exclude-newer",
        help="hold back files uploaded after this RFC 3339 time [CACHEPROXY_EXCLUDE_NEWER]",
    )
    serve.add_argument(
        "--min-age-exempt",
        action="append",
        metavar="SPEC",
        help="let NAME, NAME==VERSION or a name glob through the age gate; repeatable "
        "[CACHEPROXY_MIN_AGE_EXEMPT, comma-separated]",
    )
    serve.add_argument(
        "--min-age-unknown",
        choices=["allow", "deny"],
        default=None,
        help="files whose upload time is unknown: deny (the default) or allow "
        "[CACHEPROXY_MIN_AGE_UNKNOWN]",
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
        "--storage",
        help="local, or s3://BUCKET[/PREFIX]: a cache shared by replicas on S3-compatible "
        "storage (credentials, region and endpoint from the AWS_* variables; --cache-dir "
        "is then this replica's local tier) [CACHEPROXY_STORAGE, local]",
    )
    serve.add_argument(
        "--workers",
        help="processes serving the port and sharing the cache [CACHEPROXY_WORKERS, 1]",
    )
    serve.add_argument(
        "--internal-host",
        action="append",
        dest="internal_hosts",
        metavar="HOST",
        help="a file host trusted even on a private address; repeatable "
        "[CACHEPROXY_INTERNAL_HOSTS, comma-separated]",
    )
    serve.add_argument(
        "--max-downloads",
        help="file downloads from upstream at once [CACHEPROXY_MAX_DOWNLOADS, 64]",
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
    team_cli.add_serve_flags(serve)
    dockerfile_cli.add_parser(sub)
    team_cli.add_parsers(sub)
    maintenance_cli.add_parsers(sub)
    warm_cli.add_parser(sub)
    return parser


def serve(settings: Settings) -> int:
    configure_logging(settings.log_level, with_pid=settings.workers > 1, fmt=settings.log_format)
    limit_arenas()  # before any thread or worker starts (proxy/heap.py says why)
    max_connections = connection_cap(raise_nofile_limit())  # before the workers fork
    try:
        # First: a second instance must not clean tmp/ under the running one.
        hold_instance_lock(settings.cache_dir)
        if settings.workers > 1:
            prepare_cache(settings)  # clean and check once, before any worker runs
        else:
            Storage.open_sync(settings.cache_dir, clean=False).close_sync()  # usable?
        team_cli.check_startup(settings)  # a bad certificate or users file: here, once
        if settings.storage is not None and importlib.util.find_spec("aiobotocore") is None:
            raise ConfigError(
                "--storage s3://... needs the s3 extra: install this checkout with "
                "pip install '.[s3]'"
            )
        socks = bind(settings.host, settings.port, settings.workers)
    except ConfigError as e:  # an unusable cache directory, certificate or users file
        print(f"cacheproxy: error: {e}", file=sys.stderr)
        return exitcodes.USAGE
    except InstanceBusy as e:
        print(f"cacheproxy: error: {e}", file=sys.stderr)
        return exitcodes.FAILED
    except OSError as e:
        print(
            f"cacheproxy: error: cannot listen on {settings.host}:{settings.port}: "
            f"{e.strerror or e}",
            file=sys.stderr,
        )
        return exitcodes.FAILED
    # Only now, with the cache usable and the port bound, is "listening" true.
    logger.info(
        "cacheproxy %s listening on %s://%s:%d/simple/, proxying %s, caching in %s%s%s",
        __version__,
        "https" if settings.tls_cert else "http",
        settings.host if ":" not in settings.host else f"[{settings.host}]",
        socks[0].getsockname()[1],  # the kernel's pick for --port 0
        settings.upstream_redacted,
        settings.cache_dir,
        " (offline)" if settings.offline else "",
        f", {settings.workers} workers" if settings.workers > 1 else "",
    )
    for index in settings.indexes:  # several indexes: say which serves what
        routes = [r.pattern for r in settings.routes if r.index == index.name]
        logger.info(
            "index %s: %s, for %s",
            index.name,
            index.shown,
            ", ".join(routes)
            if routes
            else "every project no route names"
            if index is settings.indexes[0]
            else "no project (no route names it)",
        )
    team_cli.warn_plain_passwords(settings)
    if settings.workers > 1:
        return run_workers(settings, socks, lambda sock: _run(settings, sock, max_connections))
    _run(settings, socks[0], max_connections)
    return exitcodes.OK


def _run(settings: Settings, sock: socket.socket, max_connections: int) -> None:
    app = create_app(settings)
    context = team_cli.ssl_context(settings)
    if context is not None:
        team_cli.reload_on_sighup(app, context, settings)
    connections.run(
        app,
        sock,
        max_connections=max_connections,
        ssl_context=context,
        access_log=logging.getLogger("aiohttp.access"),
        access_log_format=ACCESS_LOG_FORMAT,
        access_log_class=JsonAccessLogger if settings.log_format == "json" else TextAccessLogger,
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
        return exitcodes.USAGE
    try:
        settings = build_settings(serve_flags(args), os.environ)
        Gate.from_settings(settings)  # an unusable exemption is a usage error, now
    except ConfigError as e:
        print(f"cacheproxy: error: {e}", file=sys.stderr)
        return exitcodes.USAGE
    return serve(settings)


def serve_flags(args: argparse.Namespace) -> dict[str, object]:
    """The ``serve`` flags as :func:`build_settings` takes them (None: not given)."""
    names = (
        "synthesize_metadata",
        "min_age",
        "exclude_newer",
        "min_age_exempt",
        "min_age_unknown",
        "host",
        "port",
        "cache_dir",
        "upstream",
        "index_ttl",
        "client_revalidate_after",
        "offline",
        "connect_timeout",
        "read_timeout",
        "page_timeout",
        "retries",
        "workers",
        "max_size",
        "storage",
        "log_level",
        "log_format",
        "internal_hosts",
        "max_downloads",
        "index",
        "route",
        "config",
        *team_cli.SERVE_FLAGS,
    )
    return {name: getattr(args, name) for name in names}
