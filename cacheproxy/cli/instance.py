"""One ``cacheproxy serve`` per cache directory: an exclusive lock held while it runs.

A second instance on the same directory used to clean tmp/ at start (deleting the first
one's downloads in progress and their lock files) and only then fail to bind the port.
The lock is taken first, before anything touches the directory. It is an ``flock`` on
the file the store names (:meth:`Storage.instance_lock_path`): the kernel releases it
when its holders die, ``kill -9`` included. Worker processes inherit the parent's open
file description, so the directory counts as in use until the last process of the
instance has exited. ``cacheproxy warm`` does not take it: it never cleans the directory
(``Settings.shared_dir``) and may run beside a proxy. It holds ``tmp.lock`` shared
instead, so a serve starting during a warm leaves tmp/ alone (store/local.py share_tmp).
"""

import fcntl
import logging
import os
from pathlib import Path

from cacheproxy.errors import ConfigError
from cacheproxy.store.local import Storage

logger = logging.getLogger(__name__)


class InstanceBusy(Exception):
    """Another ``cacheproxy serve`` holds this cache directory."""


def hold_instance_lock(cache_dir: Path) -> int:
    """Lock ``cache_dir`` for this process's lifetime; the descriptor (never closed).

    Raises:
        ConfigError: the directory or the lock file cannot be created.
        InstanceBusy: another instance holds the lock.
    """
    path = Storage.instance_lock_path(cache_dir)
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as e:
        raise ConfigError(f"cache dir {cache_dir} is not usable: {e.strerror or e}") from e
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError as e:
        holder = os.pread(fd, 32, 0).decode(errors="replace").strip()
        os.close(fd)
        who = f" (pid {holder})" if holder.isdigit() else ""
        raise InstanceBusy(
            f"cache dir {cache_dir} is in use by another cacheproxy serve{who}"
        ) from e
    except OSError as e:  # a file system without locks (ENOLCK on some NFS mounts)
        os.close(fd)
        raise ConfigError(f"cache dir {cache_dir} cannot be locked: {e.strerror or e}") from e
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return fd
