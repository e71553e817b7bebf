"""The team commands and flags: hosted indexes, users and HTTPS.

``serve`` flags: ``--hosted NAME[=USER,...]``, ``--users FILE``, ``--auth-reads``,
``--max-upload-size``, ``--tls-cert``/``--tls-key``. Commands: ``cacheproxy user add``
(writes an htpasswd line) and ``cacheproxy hosted yank|unyank|delete`` (audited in the log).
"""

import argparse
import asyncio
import getpass
import logging
import os
import signal
import ssl
import sys
from pathlib import Path
from typing import Any

from aiohttp import web

from cacheproxy.cli import exitcodes
from cacheproxy.cli.log import configure_logging
from cacheproxy.errors import ConfigError
from cacheproxy.proxy.hosted import Hosted, NoSuchFile
from cacheproxy.proxy.users import Users, write_user
from cacheproxy.settings import DEFAULT_MAX_UPLOAD, Settings, build_settings
from cacheproxy.store.hosted import HostedStore
from cacheproxy.urls import is_loopback_host

logger = logging.getLogger(__name__)

# The serve flags this module adds, as build_settings takes them.
SERVE_FLAGS = ("hosted", "users_file", "auth_reads", "max_upload_size", "tls_cert", "tls_key")


def add_serve_flags(serve: argparse.ArgumentParser) -> None:
    serve.add_argument(
        "--hosted",
        action="append",
        metavar="NAME[=USER,...]",
        help="a hosted index for your own uploads at /index/NAME/ (repeatable); =USER,... "
        "limits who may upload to it [CACHEPROXY_HOSTED, space-separated]",
    )
    serve.add_argument(
        "--users",
        dest="users_file",
        metavar="FILE",
        help="htpasswd file with bcrypt hashes: who may upload [CACHEPROXY_USERS_FILE]",
    )
    serve.add_argument(
        "--auth-reads",
        action="store_true",
        default=None,
        help="reads need a user from --users too (not /-/health) [CACHEPROXY_AUTH_READS]",
    )
    serve.add_argument(
        "--max-upload-size",
        help=f"largest file an upload may carry [CACHEPROXY_MAX_UPLOAD_SIZE, "
        f"{DEFAULT_MAX_UPLOAD // 1024 // 1024}MiB]",
    )
    serve.add_argument(
        "--tls-cert",
        metavar="PEM",
        help="serve HTTPS with this certificate chain [CACHEPROXY_TLS_CERT]",
    )
    serve.add_argument(
        "--tls-key", metavar="PEM", help="the certificate's private key [CACHEPROXY_TLS_KEY]"
    )


def check_startup(settings: Settings) -> None:
    """Load the certificate and the users file once before serving, so a bad one is one
    line and exit 2 rather than a failure inside every worker.

    Raises:
        ConfigError: either cannot be loaded.
    """
    ssl_context(settings)
    if settings.users_file is not None:
        Users.for_cache(settings.users_file, settings.cache_dir).close()


def warn_plain_passwords(settings: Settings) -> None:
    """Basic credentials over plain HTTP off loopback can be read by anyone on the path."""
    plain = settings.users_file is not None and settings.tls_cert is None
    if plain and not is_loopback_host(settings.host):
        logger.warning(
            "--users without --tls-cert on %s: passwords cross the network in the clear",
            settings.host,
        )


# -- TLS ------------------------------------------------------------------------------------


def ssl_context(settings: Settings) -> ssl.SSLContext | None:
    """The server's TLS context, or None for plain HTTP.

    Raises:
        ConfigError: the certificate or key cannot be loaded.
    """
    if settings.tls_cert is None or settings.tls_key is None:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    _load(context, settings.tls_cert, settings.tls_key)
    return context


def _load(context: ssl.SSLContext, cert: Path, key: Path) -> None:
    try:
        context.load_cert_chain(cert, key)
    except (OSError, ssl.SSLError) as e:
        raise ConfigError(f"cannot load TLS certificate {cert} / key {key}: {e}") from e


def reload_on_sighup(app: web.Application, context: ssl.SSLContext, settings: Settings) -> None:
    """Load the certificate again on SIGHUP (a renewed one), for new connections.

    Loading into the same context keeps the listening socket: no restart, no dropped
    connection. A bad new pair is logged and the old one kept.
    """
    cert, key = settings.tls_cert, settings.tls_key
    if cert is None or key is None:
        return

    def reload() -> None:
        try:
            _load(context, cert, key)
            logger.info("TLS certificate reloaded from %s", cert)
        except ConfigError as e:
            logger.error("%s; keeping the certificate loaded before", e)

    async def install(_app: web.Application) -> None:
        asyncio.get_running_loop().add_signal_handler(signal.SIGHUP, reload)

    app.on_startup.append(install)


# -- cacheproxy user add ------------------------------------------------------------------


def add_parsers(subparsers: "argparse._SubParsersAction[Any]") -> None:
    user = subparsers.add_parser("user", help="manage the users file (htpasswd, bcrypt)")
    user_sub = user.add_subparsers(dest="user_command", metavar="ACTION", required=True)
    add = user_sub.add_parser("add", help="add a user or set a user's password")
    add.add_argument("name")
    add.add_argument("--users", dest="users_file", metavar="FILE", help="[CACHEPROXY_USERS_FILE]")
    add.set_defaults(func=run_user_add)
    hosted = subparsers.add_parser("hosted", help="yank, unyank or delete an uploaded file")
    hosted_sub = hosted.add_subparsers(dest="hosted_command", metavar="ACTION", required=True)
    for action, text in (
        ("yank", "mark a file yanked (PEP 592): installers skip it unless pinned"),
        ("unyank", "take a yank back"),
        ("delete", "remove a file for good"),
    ):
        p = hosted_sub.add_parser(action, help=text)
        p.add_argument("index", metavar="NAME", help="the hosted index")
        p.add_argument("filename", metavar="FILE", help="its name, e.g. pkg-1.0-py3-none-any.whl")
        if action == "yank":
            p.add_argument("--reason", default="", help="shown by installers")
        p.add_argument("--cache-dir", help="the cache directory [CACHEPROXY_CACHE_DIR]")
        p.set_defaults(func=run_hosted, action=action)


def _read_password() -> str:
    if sys.stdin.isatty():
        first = getpass.getpass("Password: ")
        if getpass.getpass("Again: ") != first:
            raise ConfigError("the passwords differ")
        return first
    return sys.stdin.readline().rstrip("\r\n")


def run_user_add(args: argparse.Namespace) -> int:
    raw = args.users_file or os.environ.get("CACHEPROXY_USERS_FILE")
    if not raw:
        print("cacheproxy: error: say which users file: --users FILE", file=sys.stderr)
        return exitcodes.USAGE
    path = Path(raw).expanduser()
    try:
        password = _read_password()
        if not password:
            raise ConfigError("an empty password is not a password")
        new = write_user(path, args.name, password)
    except ConfigError as e:
        print(f"cacheproxy: error: {e}", file=sys.stderr)
        return exitcodes.USAGE
    except OSError as e:
        print(f"cacheproxy: error: cannot write {path}: {e.strerror or e}", file=sys.stderr)
        return exitcodes.FAILED
    print(f"{'added' if new else 'updated'} {args.name} in {path}")
    return exitcodes.OK


# -- cacheproxy hosted yank|unyank|delete --------------------------------------------------


def run_hosted(args: argparse.Namespace) -> int:
    if not logging.getLogger().handlers:  # the audit line goes to stderr
        configure_logging("info", with_pid=False, fmt="text")
    try:
        settings = build_settings({"cache_dir": args.cache_dir}, os.environ)
        if not settings.cache_dir.is_dir():
            raise ConfigError(f"no cache directory at {settings.cache_dir}")
        store = HostedStore.open_sync(settings.cache_dir)
        hosted = Hosted.load_sync(store, (args.index,), settings.max_upload_size)
    except ConfigError as e:
        print(f"cacheproxy: error: {e}", file=sys.stderr)
        return exitcodes.USAGE
    actor = f"{getpass.getuser()} (command line)"
    try:
        if args.action == "delete":
            asyncio.run(hosted.delete(args.index, args.filename, actor))
        else:
            yanked: bool | str = False if args.action == "unyank" else (args.reason or True)
            asyncio.run(hosted.set_yanked(args.index, args.filename, yanked, actor))
    except NoSuchFile:
        print(f"cacheproxy: error: index {args.index} has no file {args.filename}", file=sys.stderr)
        return exitcodes.FAILED
    finally:
        hosted.close_sync()
    return exitcodes.OK
