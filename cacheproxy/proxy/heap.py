"""The C heap under a process that parses and renders multi-megabyte index pages.

glibc's malloc keeps what Python frees: freed chunks between live ones stay resident until
trimmed, and every thread that allocates gets an arena of its own (up to eight per core),
each keeping its own free memory. With real page sizes (bench/memory.py: a 4,415-file
numpy page, a 5,200-file botocore page) that took a process from 52 to 120 MiB after a
cold install's page burst, and it stayed there. Two remedies, both looked up with ctypes
and skipped where the C library lacks them (musl, macOS):

* ``heap_trimmer``: ``malloc_trim(0)`` after each large render (proxy/pages.py);
* ``limit_arenas``: at most two arenas (``mallopt(M_ARENA_MAX, 2)``), set by ``serve``
  before any thread starts, unless ``MALLOC_ARENA_MAX`` in the environment already chose.
"""

import ctypes
import logging
import os
from collections.abc import Callable

logger = logging.getLogger(__name__)

# glibc's <malloc.h>: the mallopt parameter for the most arenas a process may have.
M_ARENA_MAX = -8
ARENAS = 2


def _libc_function(name: str) -> Callable[..., int] | None:
    try:
        function: Callable[..., int] = getattr(ctypes.CDLL(None), name)  # this process's libc
    except (OSError, AttributeError, TypeError):
        return None
    return function


def heap_trimmer() -> Callable[[], object] | None:
    """glibc's ``malloc_trim(0)``, or None where the C library has none.

    It takes a few milliseconds on a heap of this size, so callers run it in a worker
    thread (ctypes releases the GIL for the call), never on the event loop.
    """
    trim = _libc_function("malloc_trim")
    if trim is None:
        return None
    trim.argtypes = [ctypes.c_size_t]  # type: ignore[attr-defined]
    trim.restype = ctypes.c_int  # type: ignore[attr-defined]

    def trim_heap() -> object:
        return trim(0)

    return trim_heap


def limit_arenas(arenas: int = ARENAS) -> bool:
    """Cap glibc's malloc arenas at ``arenas``; True when the cap was set.

    Left alone when ``MALLOC_ARENA_MAX`` is set (glibc has applied the operator's choice).
    Call it before threads start: arenas made before stay.
    """
    if "MALLOC_ARENA_MAX" in os.environ:
        return False
    mallopt = _libc_function("mallopt")
    if mallopt is None:
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]  # type: ignore[attr-defined]
    mallopt.restype = ctypes.c_int  # type: ignore[attr-defined]
    done = mallopt(M_ARENA_MAX, arenas) == 1  # mallopt returns 1 on success
    if not done:
        logger.debug("mallopt(M_ARENA_MAX, %d) refused", arenas)
    return done
