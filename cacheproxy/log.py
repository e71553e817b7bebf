"""Logging set-up, called only by the CLI (libraries never configure logging)."""

import logging
import sys


def configure_logging(level: str = "info", *, with_pid: bool = False) -> None:
    """Log to stderr; ``with_pid`` tells worker processes apart."""
    pid = "[%(process)d] " if with_pid else ""
    logging.basicConfig(
        level=getattr(logging, level.upper(), logging.INFO),
        format=f"%(asctime)s {pid}%(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
