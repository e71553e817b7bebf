"""Logging set-up, called only by the CLI (libraries never configure logging).

``text`` is for people; ``json`` is one object per line for log shippers, with the access
log's fields as keys. Nothing logged carries upstream credentials: every URL we log went
through ``urls.redact_url`` first, and client requests never contain them.
"""

import json
import logging
import sys
import time
from typing import Any

from aiohttp import web
from aiohttp.abc import AbstractAccessLogger

# Client, request line, status, bytes, seconds, cache outcome: what an operator greps for.
ACCESS_LOG_FORMAT = '%a "%r" %s %b %Tf %{X-Cache}o'
_ACCESS_FIELDS = ("remote", "method", "path", "status", "bytes", "seconds", "cache", "agent")


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "pid": record.process,
            "message": record.getMessage(),
        }
        for key in _ACCESS_FIELDS:
            if key in record.__dict__:
                doc[key] = record.__dict__[key]
        if record.exc_info:
            doc["exception"] = self.formatException(record.exc_info)
        return json.dumps(doc, ensure_ascii=False)


class JsonAccessLogger(AbstractAccessLogger):
    """aiohttp access log lines as structured fields (used with ``--log-format json``)."""

    def log(self, request: web.BaseRequest, response: web.StreamResponse, time: float) -> None:
        self.logger.info(
            "%s %s %s",
            request.method,
            request.path_qs,
            response.status,
            extra={
                "remote": request.remote,
                "method": request.method,
                "path": request.path_qs,
                "status": response.status,
                "bytes": response.body_length,
                "seconds": round(time, 6),
                "cache": response.headers.get("X-Cache"),
                "agent": request.headers.get("User-Agent", "")[:200],
            },
        )


def configure_logging(level: str = "info", *, with_pid: bool = False, fmt: str = "text") -> None:
    """Log to stderr; ``with_pid`` tells worker processes apart in text mode."""
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        pid = "[%(process)d] " if with_pid else ""
        handler.setFormatter(
            logging.Formatter(f"%(asctime)s {pid}%(levelname)s %(name)s: %(message)s")
        )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(getattr(logging, level.upper(), logging.INFO))
