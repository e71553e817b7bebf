"""Debian's nginx, twice, each with its own config and prefix in the run's temp dir.

* ``Upstream``: a static stand-in for the real index, shaped like it: an index host
  (``/simple/<p>/``, JSON or HTML chosen from Accept, ETag/304) and a separate file host
  (``/packages/...``) with a per-connection bandwidth cap (``limit_rate``) and, optionally,
  a fixed delay before every response (the echo module's ``echo_sleep``: a stand-in for
  the round trip to a CDN). One worker: it is not what is measured. Its access log
  records, per request, the connection, method, status and bytes sent: the ground truth
  for "how many upstream requests, connections and bytes did the proxy cause".
* ``Baseline``: the comparison server: the proxy's own page bytes (and their gzip,
  served by ``gzip_static``) and the same files, by sendfile; ``worker_processes auto``,
  otherwise nginx defaults (no open_file_cache), no access log.
"""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from common import children, stop_process, wait_port

ECHO_MODULE = Path("/usr/lib/nginx/modules/ngx_http_echo_module.so")
NGINX = "/usr/sbin/nginx"

_COMMON_HTTP = """
    types {{
        text/html html;
        application/vnd.pypi.simple.v1+json json;
        application/octet-stream whl metadata gz;
    }}
    default_type application/octet-stream;
    sendfile on;
    tcp_nopush on;
    tcp_nodelay on;
    keepalive_timeout 65;
    keepalive_requests 1000000;
    server_tokens off;
    client_body_temp_path {prefix}/tmp;
    proxy_temp_path {prefix}/tmp;
    fastcgi_temp_path {prefix}/tmp;
    uwsgi_temp_path {prefix}/tmp;
    scgi_temp_path {prefix}/tmp;
    # The simple API's negotiation, enough for a static tree: JSON when asked for, else HTML.
    map $http_accept $simple_file {{
        "~application/vnd\\.pypi\\.simple\\.v1\\+json" index.json;
        default index.html;
    }}
"""


@dataclass
class Nginx:
    prefix: Path
    conf: str
    port: int
    proc: subprocess.Popen[bytes] | None = None
    extra_ports: list[int] = field(default_factory=list)

    def start(self) -> None:
        (self.prefix / "tmp").mkdir(parents=True, exist_ok=True)
        conf = self.prefix / "nginx.conf"
        conf.write_text(self.conf)
        test = subprocess.run(
            [NGINX, "-t", "-q", "-c", str(conf), "-p", str(self.prefix), "-g", "daemon off;"],
            capture_output=True,
            text=True,
            timeout=30,
        )
        if test.returncode != 0:
            raise RuntimeError(f"nginx config rejected: {test.stderr.strip()}")
        self.proc = subprocess.Popen(
            [NGINX, "-c", str(conf), "-p", str(self.prefix), "-g", "daemon off;"],
            stdout=subprocess.DEVNULL,
            stderr=open(self.prefix / "stderr.log", "wb"),
        )
        for port in [self.port, *self.extra_ports]:
            wait_port(port, proc=self.proc)

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc)
            self.proc = None

    def pids(self) -> list[int]:
        if self.proc is None or self.proc.poll() is not None:
            return []
        return [self.proc.pid, *children(self.proc.pid)]


@dataclass(frozen=True)
class LogLine:
    connection: int
    method: str
    status: int
    bytes_sent: int
    body_bytes: int
    host: str
    uri: str
    end: float = 0.0  # epoch seconds when nginx finished the response
    seconds: float = 0.0  # nginx's $request_time

    @property
    def start(self) -> float:
        return self.end - self.seconds


class Upstream(Nginx):
    def __init__(
        self,
        prefix: Path,
        index_root: Path,
        files_root: Path,
        index_port: int,
        files_port: int,
        rate: str,
        delay_ms: float,
        unlimited_marker: str = "/huge-",
    ) -> None:
        if delay_ms > 0 and not ECHO_MODULE.exists():
            raise RuntimeError(
                f"--upstream-delay-ms needs {ECHO_MODULE} (Debian libnginx-mod-http-echo)"
            )
        delay = f"echo_sleep {delay_ms / 1000:.3f};" if delay_ms > 0 else ""
        self.log_path = prefix / "access.log"
        load = f"load_module {ECHO_MODULE};\n" if delay_ms > 0 else ""
        if delay:
            index_loc = f"""
            location /simple/ {{ {delay} echo_exec @simple; }}
            location @simple {{ add_header Vary Accept;
                               add_header Cache-Control "max-age=600, public";
                               try_files $uri$simple_file $uri/ =404; }}"""
            files_loc = f"""
            location /packages/ {{ {delay} echo_exec @file; }}
            location @file {{ limit_rate $file_rate; }}"""
        else:
            index_loc = """
            location /simple/ { add_header Vary Accept;
                                add_header Cache-Control "max-age=600, public";
                                try_files $uri$simple_file $uri/ =404; }"""
            files_loc = """
            location /packages/ { limit_rate $file_rate; }"""
        conf = f"""{load}worker_processes 1;
error_log {prefix}/error.log warn;
pid {prefix}/nginx.pid;
events {{ worker_connections 4096; }}
http {{
{_COMMON_HTTP.format(prefix=prefix)}
    log_format bench '$connection $request_method $status $bytes_sent $body_bytes_sent '
                     '$server_port $msec $request_time $request_uri';
    access_log {self.log_path} bench;
    map $uri $file_rate {{
        "~{unlimited_marker}" 0;
        default {rate};
    }}
    server {{
        listen 127.0.0.1:{index_port};
        root {index_root};
        absolute_redirect off;
        {index_loc}
    }}
    server {{
        listen 127.0.0.1:{files_port};
        root {files_root};
        {files_loc}
    }}
}}
"""
        super().__init__(prefix, conf, index_port, extra_ports=[files_port])
        self.index_port = index_port
        self.files_port = files_port
        self.index_url = f"http://127.0.0.1:{index_port}/simple/"

    def log_mark(self) -> int:
        try:
            return self.log_path.stat().st_size
        except FileNotFoundError:
            return 0

    def log_since(self, mark: int) -> list[LogLine]:
        try:
            with open(self.log_path, "rb") as f:
                f.seek(mark)
                data = f.read().decode(errors="replace")
        except FileNotFoundError:
            return []
        out = []
        for line in data.splitlines():
            parts = line.split(" ", 8)
            if len(parts) != 9:
                continue
            conn, method, status, sent, body, port, msec, rtime, uri = parts
            host = "index" if int(port) == self.index_port else "files"
            out.append(
                LogLine(
                    int(conn),
                    method,
                    int(status),
                    int(sent),
                    int(body),
                    host,
                    uri,
                    float(msec),
                    float(rtime),
                )
            )
        return out


class Baseline(Nginx):
    def __init__(self, prefix: Path, root: Path, port: int, workers: str = "auto") -> None:
        conf = f"""worker_processes {workers};
error_log {prefix}/error.log warn;
pid {prefix}/nginx.pid;
events {{ worker_connections 4096; }}
http {{
{_COMMON_HTTP.format(prefix=prefix)}
    access_log off;
    gzip off;
    gzip_static on;
    server {{
        listen 127.0.0.1:{port} backlog=4096;
        root {root};
        absolute_redirect off;
        location /simple/ {{
            add_header Vary "Accept, Accept-Encoding";
            try_files $uri$simple_file $uri/ =404;
        }}
        location /packages/ {{ }}
    }}
}}
"""
        super().__init__(prefix, conf, port)
        self.url = f"http://127.0.0.1:{port}"
        self.index_url = f"{self.url}/simple/"


def nginx_version() -> str:
    out = subprocess.run([NGINX, "-v"], capture_output=True, text=True, timeout=10)
    return (out.stderr or out.stdout).strip().split("/", 1)[-1]


def have_nginx() -> bool:
    return os.access(NGINX, os.X_OK)
