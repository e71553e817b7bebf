"""A cross-process, non-blocking lock on one path: the owner of a download.

``flock`` locks belong to an open file description, so they exclude other processes and
other opens in this one alike, and the kernel releases them when their holder dies
(``kill -9`` included): a crashed worker never leaves a file locked for good.
"""

import fcntl
import os
from pathlib import Path


class FileLock:
    """Exclusive lock on ``path`` (created if missing). Not reentrant."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd = -1

    def try_acquire(self) -> bool:
        """Take the lock if nobody holds it; never blocks."""
        while True:
            fd = os.open(self.path, os.O_CREAT | os.O_RDWR, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                return False
            # The previous holder may have removed the file after we opened it; a lock on
            # that orphaned inode would exclude nobody. Lock the file that is there now.
            try:
                current = os.stat(self.path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                current = False
            if current:
                self._fd = fd
                return True
            os.close(fd)

    def release(self, *, remove: bool) -> None:
        """Release; with ``remove``, delete the file first (only once the work is done for
        good, or a newcomer could lock a fresh file while another waits on this one)."""
        if self._fd < 0:
            return
        if remove:
            self.path.unlink(missing_ok=True)
        os.close(self._fd)
        self._fd = -1

    @staticmethod
    def is_held(path: Path) -> bool:
        """Whether someone holds the lock now. Briefly takes a shared lock: call it rarely
        (only when a download looks stalled), since an owner trying at that instant fails."""
        try:
            fd = os.open(path, os.O_RDONLY)
        except FileNotFoundError:
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        finally:
            os.close(fd)  # closing releases the shared lock if we got it
        return False
