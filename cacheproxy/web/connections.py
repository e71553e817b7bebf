"""Client connections: how many the server holds, and what happens when descriptors run out.

Every client connection is a file descriptor, and so is every cache file being sent, every
download's temporary and lock, every upstream socket and SQLite handle. When a thousand
idle connections took all of them (the soft RLIMIT_NOFILE is often 1024), asyncio's own
accept loop failed on every try, logged a traceback for each (tens of MB a minute) and
nobody else, health checks included, got in until the idle ones left.

So we accept connections ourselves (:class:`CappedSockSite`), at most ``max_connections``
at once, a cap below the descriptor limit (:func:`cacheproxy.cli.limits.connection_cap`).
At the cap we stop accepting (new connections wait in the kernel's listen queue: back
pressure, not errors), close the connections idle longest (a client may close an idle
connection at any time, RFC 9112 section 9.6; nginx reuses its idle keep-alive connections
the same way when worker_connections run out), and accept again once below the cap.
Running out of descriptors anyway (EMFILE/ENFILE) pauses accepting briefly. Each of these
is one warning line at most every :data:`LOG_EVERY` seconds, never a traceback.
"""

import asyncio
import contextlib
import errno
import functools
import logging
import resource
import socket
import ssl
import time
from typing import Any

from aiohttp import web
from aiohttp.abc import AbstractAccessLogger
from yarl import URL

logger = logging.getLogger(__name__)

# Seconds an idle keep-alive connection, or one still sending its request headers, is kept
# (aiohttp's one timer covers both: web_protocol.RequestHandler._process_keepalive). pip
# and uv send a resolve's requests back to back and reconnect transparently; a connection
# nobody uses for 15 s is cheaper to reopen than to hold (run_app's default is 75 s).
KEEPALIVE_TIMEOUT = 15.0
# Seconds between two warnings about the same condition.
LOG_EVERY = 30.0
# Errors from accept(2) that mean "no descriptor or memory for one more socket".
OUT_OF_DESCRIPTORS = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})
# Seconds to stop accepting after such an error (asyncio's ACCEPT_RETRY_DELAY is 1 s).
_ACCEPT_RETRY = 0.25
# Seconds between checks for room while paused at the cap.
_RECHECK = 0.05
# Connections accepted per wake-up at most, so one burst cannot starve the loop.
_ACCEPT_BATCH = 64


class RateLimitedWarning:
    """One warning line per :data:`LOG_EVERY` seconds for a repeating condition, with the
    number of times it happened since the last line."""

    def __init__(self, every: float = LOG_EVERY) -> None:
        self._every = every
        self._last = -float("inf")
        self._suppressed = 0

    def warn(self, msg: str, *args: object) -> None:
        now = time.monotonic()
        if now - self._last < self._every:
            self._suppressed += 1
            return
        since = f" ({self._suppressed} more since the last such line)" if self._suppressed else ""
        logger.warning(msg + "%s", *args, since)
        self._last = now
        self._suppressed = 0


def is_out_of_descriptors(exc: BaseException | None) -> bool:
    return isinstance(exc, OSError) and exc.errno in OUT_OF_DESCRIPTORS


def _idle_since(handler: web.RequestHandler) -> float | None:
    """When an idle connection's keep-alive timer ends (sooner: idle longer); None if busy.

    Idle is aiohttp's own test in RequestHandler._process_keepalive: the handler waits for
    a request's headers. Private attributes, read defensively: if a later aiohttp renames
    them nothing is shed, and the cap and the keep-alive timeout still hold.
    """
    waiter = getattr(handler, "_waiter", None)
    if not isinstance(waiter, asyncio.Future) or waiter.done():
        return None
    close_time = getattr(handler, "_next_keepalive_close_time", 0.0)
    return float(close_time) if isinstance(close_time, (int, float)) else 0.0


class _Accepter:
    """The accept loop of one listening socket, feeding aiohttp's Server."""

    def __init__(
        self,
        sock: socket.socket,
        server: web.Server,
        limit: int,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self._loop = asyncio.get_running_loop()
        self._sock = sock
        self._server = server
        self._limit = limit
        self._ssl = ssl_context  # --tls-cert (cli/team.py): the handshake runs per connection
        self._connecting: set[asyncio.Task[Any]] = set()
        self._listening = False
        self._closed = False
        self._timer: asyncio.TimerHandle | None = None
        self._full = RateLimitedWarning()
        self._exhausted = RateLimitedWarning()

    def start(self) -> None:
        self._sock.setblocking(False)
        self._listen()

    def close(self) -> None:
        self._closed = True
        self._unlisten()
        if self._timer is not None:
            self._timer.cancel()
        self._sock.close()

    def open_connections(self) -> int:
        return len(self._server.connections) + len(self._connecting)

    def _listen(self) -> None:
        if not self._listening and not self._closed:
            self._loop.add_reader(self._sock.fileno(), self._accept)
            self._listening = True

    def _unlisten(self) -> None:
        if self._listening:
            self._loop.remove_reader(self._sock.fileno())
            self._listening = False

    def _accept(self) -> None:
        room = self._limit - self.open_connections()
        for _ in range(min(room, _ACCEPT_BATCH)):
            try:
                conn, _addr = self._sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except ConnectionAbortedError:  # the client left while queued
                continue
            except OSError as e:
                self._pause_after(e)
                return
            conn.setblocking(False)
            task = self._loop.create_task(
                self._loop.connect_accepted_socket(self._server, conn, ssl=self._ssl)
            )
            self._connecting.add(task)
            task.add_done_callback(functools.partial(self._connected, conn))
        if self.open_connections() >= self._limit:
            self._at_cap()

    def _connected(self, conn: socket.socket, task: "asyncio.Task[Any]") -> None:
        self._connecting.discard(task)
        if task.cancelled() or task.exception() is not None:
            conn.close()

    def _at_cap(self) -> None:
        """Stop accepting; make room by closing the connections idle longest."""
        self._unlisten()
        shed = self._shed_idle(max(1, self._limit // 8))
        self._full.warn(
            "%d client connections open, the most this process takes with %d file"
            " descriptors (the rest is for cache files and upstream connections; raise"
            " LimitNOFILE or ulimit -n for more); new connections wait; closed %d idle",
            self.open_connections(),
            resource.getrlimit(resource.RLIMIT_NOFILE)[0],
            shed,
        )
        self._recheck(_RECHECK)

    def _pause_after(self, e: OSError) -> None:
        self._unlisten()
        shed = self._shed_idle(max(1, self._limit // 8)) if is_out_of_descriptors(e) else 0
        self._exhausted.warn(
            "cannot accept connections: %s; pausing %.2f s, closed %d idle connection(s)",
            e.strerror or e,
            _ACCEPT_RETRY,
            shed,
        )
        self._recheck(_ACCEPT_RETRY)

    def _recheck(self, delay: float) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer = self._loop.call_later(delay, self._resume)

    def _resume(self) -> None:
        self._timer = None
        if self._closed:
            return
        if self.open_connections() < self._limit:
            self._listen()
        else:
            self._at_cap()

    def _shed_idle(self, count: int) -> int:
        idle = []
        for handler in self._server.connections:
            since = _idle_since(handler)
            if since is not None:
                idle.append((since, id(handler), handler))
        idle.sort(key=lambda item: (item[0], item[1]))
        for _since, _id, handler in idle[:count]:
            handler.force_close()
        return min(count, len(idle))


class CappedSockSite(web.BaseSite):
    """aiohttp's SockSite, accepting at most ``max_connections`` connections at once."""

    def __init__(
        self,
        runner: web.BaseRunner,
        sock: socket.socket,
        *,
        max_connections: int,
        ssl_context: ssl.SSLContext | None = None,
    ):
        super().__init__(runner)
        self._sock = sock
        self._max_connections = max_connections
        self._ssl = ssl_context
        self._accepter: _Accepter | None = None
        host, port = sock.getsockname()[:2]
        scheme = "https" if ssl_context is not None else "http"
        self._name = str(URL.build(scheme=scheme, host=host, port=port))

    @property
    def name(self) -> str:
        return self._name

    @property
    def open_connections(self) -> int:
        return 0 if self._accepter is None else self._accepter.open_connections()

    async def start(self) -> None:
        await super().start()
        server = self._runner.server
        assert server is not None
        self._accepter = _Accepter(self._sock, server, self._max_connections, self._ssl)
        self._accepter.start()

    async def stop(self) -> None:
        if self._accepter is not None:
            self._accepter.close()
        await super().stop()


def install_exception_handler(loop: asyncio.AbstractEventLoop) -> None:
    """Make running out of descriptors anywhere on ``loop`` (an accept in another server,
    a transport) one rate-limited line, not a traceback each time; the rest goes to
    asyncio's default handler."""
    warning = RateLimitedWarning()

    def handle(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        exc = context.get("exception")
        if is_out_of_descriptors(exc):
            warning.warn("%s: %s", context.get("message", "event loop"), exc)
            return
        loop.default_exception_handler(context)

    loop.set_exception_handler(handle)


async def _serve(
    app: web.Application,
    sock: socket.socket,
    max_connections: int,
    runner_args: dict[str, Any],
    ssl_context: ssl.SSLContext | None = None,
) -> None:
    runner = web.AppRunner(app, handle_signals=True, **runner_args)
    await runner.setup()
    try:
        site = CappedSockSite(
            runner, sock, max_connections=max_connections, ssl_context=ssl_context
        )
        await site.start()
        await asyncio.Event().wait()  # until a signal (GracefulExit) or cancellation
    finally:
        await runner.cleanup()


def run(
    app: web.Application,
    sock: socket.socket,
    *,
    max_connections: int,
    access_log: logging.Logger,
    access_log_format: str,
    access_log_class: type[AbstractAccessLogger],
    ssl_context: ssl.SSLContext | None = None,
) -> None:
    """Serve ``app`` on ``sock`` until SIGTERM/SIGINT: aiohttp's ``web.run_app`` (same
    shutdown), with this module's accept loop and keep-alive timeout."""
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    install_exception_handler(loop)
    runner_args: dict[str, Any] = {
        "access_log": access_log,
        "access_log_format": access_log_format,
        "access_log_class": access_log_class,
        "keepalive_timeout": KEEPALIVE_TIMEOUT,
    }
    main = loop.create_task(_serve(app, sock, max_connections, runner_args, ssl_context))
    try:
        loop.run_until_complete(main)
    except (web.GracefulExit, KeyboardInterrupt):
        pass
    finally:
        if not main.done():
            main.cancel()
            with contextlib.suppress(asyncio.CancelledError, web.GracefulExit):
                loop.run_until_complete(main)
        _cancel_all(loop)
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.close()


def _cancel_all(loop: asyncio.AbstractEventLoop) -> None:
    tasks = asyncio.all_tasks(loop)
    for task in tasks:
        task.cancel()
    if tasks:
        loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))
