"""Pre-fork workers: N processes accept on one listening socket and share one cache dir.

Why pre-fork rather than SO_REUSEPORT binds: the parent binds once, so "port in use" is
one clear error at start, and it can clean the cache directory and check it *before* any
worker runs (a worker cleaning it would delete its siblings' downloads). Cross-process
single-flight is the workers' business (downloads.py, filelock.py); the parent only starts
them, forwards SIGTERM/SIGINT, and replaces a worker that dies.
"""

import contextlib
import logging
import os
import signal
import socket
import time
from collections import deque
from collections.abc import Callable
from types import FrameType

from cacheproxy.repair import log_repair
from cacheproxy.settings import Settings
from cacheproxy.storage import Storage

logger = logging.getLogger(__name__)

EXIT_RUNTIME = 1
# More deaths than this per worker within a minute means something is wrong for good.
_MAX_RESTARTS_PER_MINUTE = 5


def bind(host: str, port: int) -> socket.socket:
    """The listening socket all workers share.

    Raises:
        OSError: the address is in use or cannot be bound.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
        sock.listen(1024)
    except OSError:
        sock.close()
        raise
    sock.set_inheritable(True)
    return sock


def prepare_cache(settings: Settings) -> None:
    """Clean temporaries and check consistency once, before any worker starts.

    Raises:
        ConfigError: the cache directory is not usable.
    """
    storage = Storage.open_sync(settings.cache_dir, clean=True)
    try:
        log_repair(storage)
    finally:
        storage.close_sync()


def run_workers(settings: Settings, sock: socket.socket, serve_one: Callable[[], None]) -> int:
    """Fork ``settings.workers`` processes running ``serve_one`` and supervise them."""
    children: dict[int, int] = {}
    stopping = False
    deaths: deque[float] = deque()

    def spawn(index: int) -> None:
        pid = os.fork()
        if pid == 0:  # the worker
            code = 0
            try:
                signal.signal(signal.SIGINT, signal.SIG_DFL)
                signal.signal(signal.SIGTERM, signal.SIG_DFL)
                serve_one()
            except (SystemExit, KeyboardInterrupt):
                pass  # a second SIGTERM while shutting down (aiohttp's GracefulExit)
            except BaseException:
                logger.exception("worker %d failed", index)
                code = EXIT_RUNTIME
            finally:
                os._exit(code)
        children[pid] = index

    def stop(signum: int, _frame: FrameType | None) -> None:
        nonlocal stopping
        if stopping:
            return
        stopping = True
        for pid in list(children):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)

    for index in range(settings.workers):
        spawn(index)
    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    code = 0
    while children:
        try:
            pid, status = os.wait()
        except ChildProcessError:
            break
        if pid not in children:
            continue
        index = children.pop(pid)
        if stopping:
            continue
        exit_code = os.waitstatus_to_exitcode(status)
        now = time.monotonic()
        deaths.append(now)
        while deaths and now - deaths[0] > 60:
            deaths.popleft()
        if len(deaths) > _MAX_RESTARTS_PER_MINUTE * settings.workers:
            logger.critical("workers keep dying (last exit %s); stopping", exit_code)
            code = EXIT_RUNTIME
            stop(signal.SIGTERM, None)
            continue
        logger.error("worker %d (pid %d) exited with %s; starting another", index, pid, exit_code)
        time.sleep(0.2)
        spawn(index)
    sock.close()
    return code
