"""``cacheproxy warm``'s engine: from parsed inputs to files fetched through a proxy.

The steps, each in its own module:

1. ``targets.py``: each (platform, Python) pair, with its wheel tags and marker values.
2. ``resolve.py``: requirements without hashes are resolved per target by pip.
3. ``plan.py``: the packages each target needs; their project pages are fetched through
   the proxy (which stores them: an air-gapped client needs pages as much as files), and
   the files an installer there would pick are chosen.
4. ``fetch.py``: the files (and their PEP 658 metadata) are fetched through the proxy,
   ``jobs`` at a time; every body is hashed against the input's hash, the user's truth.
5. ``report.py``: one result per file, and the summary.

``cli/warm.py`` owns the command line, the in-process proxy for ``--cache-dir`` and the
output.
"""

import asyncio
import contextlib
from collections.abc import Sequence
from dataclasses import dataclass, replace
from urllib.parse import unquote

import aiohttp
from yarl import URL

from cacheproxy.warm.fetch import Job, Page, check_reachable, fetch_file, fetch_page
from cacheproxy.warm.lockfiles import LockInput, Note, Unresolved
from cacheproxy.warm.plan import Notes, plan_jobs, wanted
from cacheproxy.warm.report import Outcome, Recording, Reporter, Summary
from cacheproxy.warm.resolve import resolve_all
from cacheproxy.warm.targets import Target

DEFAULT_JOBS = 8


@dataclass(frozen=True)
class Options:
    index_url: URL  # the proxy's /simple/
    targets: Sequence[Target]
    jobs: int = DEFAULT_JOBS
    metadata: bool = True
    sdists: bool = False


async def _pages(
    session: aiohttp.ClientSession,
    index_url: URL,
    names: Sequence[str],
    limit: asyncio.Semaphore,
    notes: Notes,
) -> dict[str, Page | str]:
    """Each project's page through the proxy, or why it could not be had."""

    async def one(name: str) -> Page | str:
        async with limit:
            return await fetch_page(session, index_url, name)

    pages = dict(zip(names, await asyncio.gather(*(one(n) for n in names)), strict=True))
    for name, got in pages.items():
        if isinstance(got, str):
            notes.failed.append(Note(f"{name} (index page)", got.removeprefix("index page: ")))
    return pages


async def _fetch_all(
    session: aiohttp.ClientSession,
    todo: Sequence[Job],
    limit: asyncio.Semaphore,
    reporter: Reporter,
    resolved_misses: set[str],
) -> None:
    async def one(job: Job) -> None:
        async with limit:
            result = await fetch_file(session, job, reporter.advance)
        if result.outcome is Outcome.CACHED and unquote(job.url.raw_path) in resolved_misses:
            # Not in the cache before this run: resolving brought it in (ResolutionTap).
            result = replace(result, outcome=Outcome.FETCHED, cache="MISS, while resolving")
        reporter.result(result)

    tasks = [asyncio.create_task(one(job)) for job in todo]
    try:
        await asyncio.gather(*tasks)
    finally:
        for task in tasks:
            task.cancel()
        # Let the others finish cancelling (return_exceptions: their errors are moot now).
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.gather(*tasks, return_exceptions=True)


async def warm(
    inputs: Sequence[LockInput | Unresolved],
    options: Options,
    reporter: Reporter,
    session: aiohttp.ClientSession,
) -> Summary:
    """Warm the proxy at ``options.index_url`` with every file the inputs need.

    Raises:
        ProxyUnreachable: the proxy refused or could not be connected to.
    """
    out = Recording(reporter)
    index_url = options.index_url
    await check_reachable(session, index_url)
    limit = asyncio.Semaphore(options.jobs)
    notes = Notes()
    locks: list[tuple[LockInput, Sequence[Target]]] = []
    for item in inputs:
        notes.skip(item.skipped)
        if isinstance(item, LockInput):
            notes.failed += item.failed
            locks.append((item, options.targets))
    unresolved = [item for item in inputs if isinstance(item, Unresolved)]
    resolved, failed, misses = await resolve_all(
        unresolved, options.targets, index_url, session, limit
    )
    notes.failed += failed
    locks += [(lock, [target]) for lock, target in resolved]

    need = wanted(locks, notes)
    projects = list(dict.fromkeys(p.name for p, _ in need))
    pages = await _pages(session, index_url, projects, limit, notes)
    todo = plan_jobs(
        need, pages, index_url, metadata=options.metadata, sdists=options.sdists, notes=notes
    )
    notes.report(out)
    out.planned(len(todo), sum(j.size or 0 for j in todo))
    await _fetch_all(session, todo, limit, out, misses)
    return out.summary
