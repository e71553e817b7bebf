"""Project pages fetched ahead of a resolver: the dependencies of metadata the proxy read.

A resolver walks the dependency graph one level at a time: a page, the metadata of the
release it picks, then the pages of that release's requirements, each request waiting
for the one before (uv and pip alike on a chain). When the proxy reads a wheel's
``METADATA`` itself (proxy/metadata.py), it knows the next step before the resolver asks:
it fetches those pages now, and a fetched page starts the read of its newest release's
metadata (metadata.py ``prefetch_candidates``), whose requirements are fetched in turn.

Bounds, as all of it is a guess:

* only requirements without an environment marker or extra: the ones every client needs,
  whatever its platform and Python;
* :data:`MAX_DEPTH` levels past what a client asked for (the depth travels with the tasks
  in a context variable, so a client's own request starts again at zero);
* :data:`AT_ONCE` page fetches at a time (more are skipped, not queued), and a project
  fetched ahead in the last :data:`RECENT_SECONDS` is not fetched ahead again;
* no project the team hosts (its name is not sent to an upstream index: service.py), and
  nothing offline.

A fetch ahead goes through the same page cache as a request (single-flight, the gate,
routes): a client asking meanwhile joins it. A failure is logged at debug level and
remembered nowhere but where a request's would be.
"""

import asyncio
import logging
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterable
from contextvars import ContextVar

from packaging.utils import NormalizedName

logger = logging.getLogger(__name__)

MAX_DEPTH = 3
AT_ONCE = 4
RECENT_SECONDS = 60.0
RECENT_ENTRIES = 4096

# How many levels of reading ahead led to the running task (0: a client's request).
_depth: ContextVar[int] = ContextVar("cacheproxy_lookahead_depth", default=0)


class Lookahead:
    """Fetches the pages of requirements ahead of the resolver (see the module text)."""

    def __init__(
        self,
        fetch: Callable[[NormalizedName], Awaitable[object]],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._fetch = fetch
        self._clock = clock
        self._tasks: set[asyncio.Task[None]] = set()
        self._recent: OrderedDict[NormalizedName, float] = OrderedDict()
        self._closed = False

    def requires(self, names: Iterable[NormalizedName]) -> None:
        """Fetch the pages of ``names``, the requirements of a release just read, unless
        this read is already :data:`MAX_DEPTH` levels ahead of any request."""
        depth = _depth.get() + 1
        if depth > MAX_DEPTH or self._closed:
            return
        now = self._clock()
        for name in names:
            if len(self._tasks) >= AT_ONCE:
                return
            seen = self._recent.get(name)
            if seen is not None and now - seen < RECENT_SECONDS:
                continue
            self._recent[name] = now
            self._recent.move_to_end(name)
            while len(self._recent) > RECENT_ENTRIES:
                self._recent.popitem(last=False)
            token = _depth.set(depth)  # copied into the task: what it starts is one deeper
            try:
                task = asyncio.create_task(self._quietly(name), name=f"page ahead {name}")
            finally:
                _depth.reset(token)
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _quietly(self, name: NormalizedName) -> None:
        try:
            await self._fetch(name)
        except asyncio.CancelledError:
            raise
        except Exception as e:  # a request for it reports its own failure
            logger.debug("fetching %s ahead failed: %s", name, e)

    @property
    def busy(self) -> bool:
        return bool(self._tasks)

    async def settle(self) -> None:
        """Wait until no fetch ahead is running."""
        while self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    async def close(self) -> None:
        self._closed = True
        for task in list(self._tasks):
            task.cancel()
        await self.settle()
