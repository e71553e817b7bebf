"""Run ``cacheproxy serve`` with uvloop and/or N worker processes — for the benchmark only.

    python bench/proxy_launcher.py [--uvloop] [--workers N] -- serve --port P ...

The proxy itself has neither today; this wrapper measures what they would buy without
touching ``cacheproxy/``:

* ``--uvloop`` installs uvloop's event-loop policy before ``cacheproxy.cli.main.main`` runs.
* ``--workers N`` forks N processes that each run ``cacheproxy.cli.main.main`` with
  ``web.run_app(..., reuse_port=True)`` (SO_REUSEPORT: the kernel spreads connections).
  They share the cache directory (diskcache is multi-process safe), but not the in-memory
  single-flight tables: two workers can each download the same cold file.

SIGTERM/SIGINT to this process are forwarded to the workers.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import os
import signal
import sys


def _run_one(argv: list[str], use_uvloop: bool, reuse_port: bool) -> int:
    if use_uvloop:
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    if reuse_port:
        from aiohttp import web

        web.run_app = functools.partial(web.run_app, reuse_port=True)  # type: ignore[assignment]
    from cacheproxy.cli.main import main

    return main(argv)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--uvloop", action="store_true")
    parser.add_argument("--workers", type=int, default=1)
    args, rest = parser.parse_known_args()
    if rest and rest[0] == "--":
        rest = rest[1:]
    if args.workers <= 1:
        return _run_one(rest, args.uvloop, reuse_port=False)
    pids: list[int] = []
    for _ in range(args.workers):
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                code = _run_one(rest, args.uvloop, reuse_port=True)
            finally:
                os._exit(code)
        pids.append(pid)

    def forward(signum: int, _frame: object) -> None:
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    code = 0
    for pid in pids:
        _, status = os.waitpid(pid, 0)
        code = code or os.waitstatus_to_exitcode(status)
    return code


if __name__ == "__main__":
    sys.exit(main())
