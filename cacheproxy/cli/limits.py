"""The process's file descriptor budget: raise the soft limit, and derive the connection cap.

The soft RLIMIT_NOFILE is often 1024 while the hard one is far higher (systemd's default
hard limit is 524288); an unprivileged process may raise its soft limit up to the hard one,
as nginx does with ``worker_rlimit_nofile``. Whatever the limit ends at, client
connections may use only part of it (see :func:`connection_cap`), so cache files, upstream
sockets and SQLite always find a descriptor.
"""

import logging
import resource

logger = logging.getLogger(__name__)

# Descriptors never given to client connections, at most: SQLite (diskcache opens one
# connection per thread, with its -wal and -shm files: store/local.py runs ~11 threads
# plus asyncio's default pool), the upstream pool (TCPConnector(limit=100) in
# proxy/upstream.py), listening sockets, logs, pipes.
_RESERVED = 256


def raise_nofile_limit() -> int:
    """Raise the soft RLIMIT_NOFILE to the hard limit; the soft limit now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    # Linux refuses RLIM_INFINITY for NOFILE (the ceiling is fs.nr_open); keep it finite.
    target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
    if target > soft:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError) as e:
            logger.debug("cannot raise the file descriptor limit to %d: %s", target, e)
    return soft


def connection_cap(nofile: int) -> int:
    """How many client connections a process with ``nofile`` descriptors takes at once.

    Half of what is left after the reserve: a connection being answered may hold a second
    descriptor (the cache file it is sent from, or a download's temporary).
    """
    reserved = min(_RESERVED, nofile // 4)
    return max(8, (nofile - reserved) // 2)
