"""Pre-fork workers: N processes, one listening socket each, sharing one cache dir.

The parent binds every socket before any worker runs, so "port in use" is one clear error
at start, and it cleans the cache directory and checks it *before* any worker runs (a
worker cleaning it would delete its siblings' downloads). Each worker gets its own
SO_REUSEPORT socket on the port: the kernel spreads connections across them evenly. With
one shared socket, the worker that woke first accepted a whole burst of connections (all
16 of a load test's keep-alive connections, say) and the other sat idle. Cross-process
single-flight is the workers' business (downloads.py, filelock.py); the parent only starts
them, forwards SIGTERM/SIGINT, and replaces a worker that dies (its socket, kept open
by the parent, holds new connections for the replacement). Workers die with the parent,
even a parent killed with SIGKILL (:func:`die_with_parent`).
"""

import contextlib
import ctypes
import logging
import os
import signal
import socket
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from types import FrameType

from cacheproxy.cli import exitcodes
from cacheproxy.settings import Settings
from cacheproxy.store.local import Storage
from cacheproxy.store.repair import log_repair

logger = logging.getLogger(__name__)

# More deaths than this per worker within a minute means something is wrong for good.
_MAX_RESTARTS_PER_MINUTE = 5
# <linux/prctl.h>
_PR_SET_PDEATHSIG = 1


def _listener(host: str, port: int, *, reuse_port: bool) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if reuse_port:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    try:
        sock.bind((host, port))
        sock.listen(1024)
    except OSError:
        sock.close()
        raise
    sock.set_inheritable(True)
    return sock


def bind(host: str, port: int, count: int = 1) -> list[socket.socket]:
    """``count`` listening sockets on one port: one per worker.

    Raises:
        OSError: the address is in use or cannot be bound.
    """
    first = _listener(host, port, reuse_port=False)
    if count == 1:
        return [first]
    # Bound without SO_REUSEPORT first, so a listener already there (another cacheproxy
    # of the same user included, which SO_REUSEPORT would silently share the port with)
    # is refused; then the workers' sockets take the port (the kernel's pick, for 0).
    port = first.getsockname()[1]
    first.close()
    socks: list[socket.socket] = []
    try:
        for _ in range(count):
            socks.append(_listener(host, port, reuse_port=True))
    except OSError:
        for sock in socks:
            sock.close()
        raise
    return socks


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


def die_with_parent(parent: int) -> None:
    """Have this worker get SIGTERM when ``parent`` dies, even by ``kill -9``.

    Otherwise the workers keep serving, unsupervised (their PPID is 1), and hold the port
    and the cache directory's instance lock, so a restart fails with "address in use".
    Linux: prctl(PR_SET_PDEATHSIG) (prctl(2)), then a check that the parent did not die
    before it was set. Elsewhere: a thread that polls the parent pid.
    """
    if _set_pdeathsig(signal.SIGTERM):
        if os.getppid() != parent:  # died between fork() and prctl(): nobody will signal
            os.kill(os.getpid(), signal.SIGTERM)
        return
    threading.Thread(
        target=_watch_parent, args=(parent,), name="cacheproxy-parent-watch", daemon=True
    ).start()


def _set_pdeathsig(sig: int) -> bool:
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return int(libc.prctl(_PR_SET_PDEATHSIG, int(sig), 0, 0, 0)) == 0
    except (OSError, AttributeError):
        return False


def _watch_parent(parent: int) -> None:
    while os.getppid() == parent:
        time.sleep(1.0)
    os.kill(os.getpid(), signal.SIGTERM)


def _forward(signum: int, children: dict[int, int]) -> None:
    """Pass a signal on to every worker (SIGHUP: reload the TLS certificate)."""
    for pid in list(children):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signum)


def run_workers(
    settings: Settings,
    socks: list[socket.socket],
    serve_one: Callable[[socket.socket], None],
) -> int:
    """Fork one process per socket running ``serve_one`` on it, and supervise them."""
    children: dict[int, int] = {}
    stopping = False
    deaths: deque[float] = deque()

    parent = os.getpid()

    def spawn(index: int) -> None:
        pid = os.fork()
        if pid == 0:  # the worker
            code = 0
            try:
                signal.signal(signal.SIGINT, signal.SIG_DFL)
                signal.signal(signal.SIGTERM, signal.SIG_DFL)  # not the parent's stop()
                die_with_parent(parent)
                # Until the worker's app takes it (TLS reload, cli/team.py): not fatal.
                signal.signal(signal.SIGHUP, signal.SIG_IGN)
                for i, other in enumerate(socks):
                    if i != index:
                        other.close()  # a worker keeps its own socket only
                serve_one(socks[index])
            except (SystemExit, KeyboardInterrupt):
                pass  # a second SIGTERM while shutting down (aiohttp's GracefulExit)
            except BaseException:
                logger.exception("worker %d failed", index)
                code = exitcodes.FAILED
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

    for index in range(len(socks)):
        spawn(index)
    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGHUP, lambda _s, _f: _forward(signal.SIGHUP, children))
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
            code = exitcodes.FAILED
            stop(signal.SIGTERM, None)
            continue
        logger.error("worker %d (pid %d) exited with %s; starting another", index, pid, exit_code)
        time.sleep(0.2)
        spawn(index)
    for sock in socks:
        sock.close()
    return code
