"""Logging set-up, called only by the CLI (libraries never configure logging).

``text`` is for people; ``json`` is one object per line for log shippers, with the access
log's fields as keys. Nothing logged carries upstream credentials: every URL we log went
through ``urls.redact_url`` first, and client requests never contain them.
"""

import json
import logging
import sys
import time
from collections.abc import Iterable
from typing import Any

from aiohttp import web
from aiohttp.abc import AbstractAccessLogger
from aiohttp.helpers import must_be_empty_body
from aiohttp.web_log import AccessLogger

# Client, request line, status, body bytes, seconds, cache outcome: what an operator greps
# for. %b is body_bytes below, not aiohttp's (see TextAccessLogger).
ACCESS_LOG_FORMAT = '%a "%r" %s %b %Tf %{X-Cache}o'
_ACCESS_FIELDS = ("remote", "method", "path", "status", "bytes", "seconds", "cache", "agent")


def body_bytes(request: web.BaseRequest, response: web.StreamResponse) -> int:
    """The body bytes a finished response sent.

    aiohttp's ``body_length`` counts what went through its writer: the headers plus any
    body written with ``write()``, but nothing sent with ``loop.sendfile`` (every hit, and
    a followed download: web/responses.py, web/file_handlers.py), so it logged the header
    size for those. aiohttp logs a response only once ``write_eof`` ran (a transfer cut off
    raises instead), so a finished response with a Content-Length sent exactly that many;
    without one (chunked), it is what the writer carried less the header block.
    """
    if (
        response.body_length == 0
        or request.method == "HEAD"
        or must_be_empty_body(request.method, response.status)
    ):
        return 0
    if response.content_length is not None:
        return response.content_length
    return max(0, response.body_length - _header_bytes(request, response))


def _header_bytes(request: web.BaseRequest, response: web.StreamResponse) -> int:
    # As aiohttp serialises them (http_writer.py): status line, "Name: value" lines, CRLF.
    version = request.version
    status_line = f"HTTP/{version.major}.{version.minor} {response.status} {response.reason}"
    fields = sum(len(k.encode()) + len(v.encode()) + 4 for k, v in response.headers.items())
    return len(status_line) + 2 + fields + 2


class TextAccessLogger(AccessLogger):
    """aiohttp's access log, with ``%b`` the body bytes sent (:func:`body_bytes`)."""

    def _format_line(
        self, request: web.BaseRequest, response: web.StreamResponse, time: float
    ) -> Iterable[tuple[str | tuple[str, str], Any]]:
        return [
            (
                key,
                body_bytes(request, response)
                if key == "response_size"
                else m(request, response, time),
            )
            for key, m in self._methods
        ]


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
                "bytes": body_bytes(request, response),
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
