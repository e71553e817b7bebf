"""Hit-path cost of the proxy's bounded in-memory caches against cachetools' equivalents.

The architecture issue asked to use cachetools for the hand-rolled bounded caches if it
measures no slower on the hit path. Run: ``python bench/caches.py`` (needs
``pip install cachetools``; nothing of it is used by cacheproxy itself).
"""

import time
import timeit
from collections import OrderedDict
from collections.abc import Callable

from cacheproxy.store.body_cache import BodyCache

ENTRIES = 1000
CALLS = 200_000


def _ns_per_call(fn: Callable[[], object]) -> float:
    return min(timeit.repeat(fn, number=CALLS, repeat=5)) / CALLS * 1e9


def main() -> None:
    try:
        import cachetools
    except ImportError:
        raise SystemExit("bench/caches.py needs cachetools: pip install cachetools") from None
    bodies = BodyCache()
    lru: cachetools.LRUCache[str, bytes] = cachetools.LRUCache(
        maxsize=16 * 1024 * 1024, getsizeof=len
    )
    for i in range(ENTRIES):
        bodies.put(str(i), b"x" * 100)
        lru[str(i)] = b"x" * 100
    # Pages' record memo: an OrderedDict of (monotonic time, record), one second long.
    memo: OrderedDict[str, tuple[float, int]] = OrderedDict(
        (str(i), (time.monotonic(), i)) for i in range(ENTRIES)
    )
    ttl: cachetools.TTLCache[str, int] = cachetools.TTLCache(maxsize=4096, ttl=1.0)
    for i in range(ENTRIES):
        ttl[str(i)] = i

    def memo_get() -> object:
        hit = memo.get("500")
        if hit is not None and time.monotonic() - hit[0] < 1.0:
            memo.move_to_end("500")
            return hit[1]
        return None

    rows = [
        ("store.body_cache.BodyCache.get", _ns_per_call(lambda: bodies.get("500"))),
        ("cachetools.LRUCache.get (getsizeof=len)", _ns_per_call(lambda: lru.get("500"))),
        ("proxy.pages record memo (OrderedDict)", _ns_per_call(memo_get)),
        ("cachetools.TTLCache.get", _ns_per_call(lambda: ttl.get("500"))),
    ]
    for name, ns in rows:
        print(f"{name:42s} {ns:7.0f} ns per hit")


if __name__ == "__main__":
    main()
