"""Small page bodies kept in memory, so hot pages go out without a sendfile per request.

A body is named by the sha256 of its bytes (storage.name_bodies), so an entry can never be
stale: a refreshed page has new names. Sending a few hundred kilobytes from memory costs
less than ``loop.sendfile``'s per-call set-up (measured in bench/ceiling.py: 1.5x the
requests/s for a 423 kB body). Bounded by bytes; least recently used goes first.
"""

from collections import OrderedDict

# Bodies above this go out by sendfile: memory would buy little for them.
MAX_ITEM = 1024 * 1024
DEFAULT_BUDGET = 16 * 1024 * 1024


class BodyCache:
    def __init__(self, budget: int = DEFAULT_BUDGET, max_item: int = MAX_ITEM) -> None:
        self._budget = budget
        self._max_item = min(max_item, budget)
        self._items: OrderedDict[str, bytes] = OrderedDict()
        self._bytes = 0

    def fits(self, size: int) -> bool:
        return size <= self._max_item

    def get(self, name: str) -> bytes | None:
        data = self._items.get(name)
        if data is not None:
            self._items.move_to_end(name)
        return data

    def put(self, name: str, data: bytes) -> None:
        if not self.fits(len(data)) or name in self._items:
            return
        self._items[name] = data
        self._bytes += len(data)
        while self._bytes > self._budget:
            _old, dropped = self._items.popitem(last=False)
            self._bytes -= len(dropped)

    def drop(self, name: str) -> None:
        data = self._items.pop(name, None)
        if data is not None:
            self._bytes -= len(data)

    def __len__(self) -> int:
        return len(self._items)

    @property
    def bytes(self) -> int:
        return self._bytes
