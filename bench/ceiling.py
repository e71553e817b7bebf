"""What aiohttp itself can do on this machine: the ceiling for the page-hit targets.

    python bench/ceiling.py [--body-kb 423] [--duration 4] [--reps 3] [--uvloop]

A bare aiohttp app (no cacheproxy code) answers the same shapes of response the proxy sends
for a page hit, each ÷ nginx serving the same bytes from a file in the same run:

* ``/304``: a 304 with the proxy's page headers (ETag, Vary, Cache-Control, X-Cache);
* ``/sendfile``: the body from an open file via ``loop.sendfile`` (what the proxy does);
* ``/memory``: the body from bytes held in memory, one ``web.Response(body=...)``.

If even ``/304`` of a bare app is below 0.25x nginx, no change inside cacheproxy's handler
reaches the target in one process: it takes more processes (``--workers``) or less
per-request Python. ``--uvloop`` runs the app on uvloop.
"""

from __future__ import annotations

import argparse
import os
import random
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import free_port, stop_process, wait_port
from load import wrk
from nginx import Nginx
from run import median, paired

APP = textwrap.dedent(
    """
    import asyncio, sys
    from aiohttp import web
    path, port, use_uvloop = sys.argv[1], int(sys.argv[2]), sys.argv[3] == "1"
    if use_uvloop:
        import uvloop
        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    body = open(path, "rb").read()
    JSON = "application/vnd.pypi.simple.v1+json"
    H = {"ETag": '"abc"', "Vary": "Accept, Accept-Encoding", "Cache-Control": "max-age=600, public",
         "X-Cache": "HIT", "Content-Encoding": "gzip"}

    async def not_modified(request):
        return web.Response(status=304, headers=H)

    async def memory(request):
        return web.Response(body=body, headers={**H, "Content-Type": JSON})

    async def sendfile(request):
        resp = web.StreamResponse(headers={**H, "Content-Type": JSON})
        resp.content_length = len(body)
        await resp.prepare(request)
        with open(path, "rb") as f:
            await asyncio.get_running_loop().sendfile(request.transport, f, 0, len(body))
        await resp.write_eof()
        return resp

    app = web.Application()
    app.router.add_get("/304", not_modified)
    app.router.add_get("/memory", memory)
    app.router.add_get("/sendfile", sendfile)
    web.run_app(app, host="127.0.0.1", port=port, print=None, access_log=None)
    """
)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--body-kb", type=int, default=423)
    p.add_argument("--duration", type=float, default=4.0)
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--conns", type=int, default=16)
    p.add_argument("--uvloop", action="store_true")
    a = p.parse_args()
    work = Path(tempfile.mkdtemp(prefix="cacheproxy-ceiling-"))
    work.chmod(0o755)
    root = work / "root"
    root.mkdir()
    body = root / "body.json.gz"
    body.write_bytes(random.Random(1).randbytes(a.body_kb * 1000))
    (work / "app.py").write_text(APP)
    port, nport = free_port(), free_port()
    conf = f"""worker_processes auto;
error_log {work}/error.log warn;
pid {work}/nginx.pid;
events {{ worker_connections 4096; }}
http {{
    sendfile on; tcp_nopush on; tcp_nodelay on; access_log off; keepalive_requests 1000000;
    client_body_temp_path {work}/tmp; proxy_temp_path {work}/tmp; fastcgi_temp_path {work}/tmp;
    uwsgi_temp_path {work}/tmp; scgi_temp_path {work}/tmp;
    server {{ listen 127.0.0.1:{nport}; root {root}; location / {{ }} }}
}}
"""
    ng = Nginx(work, conf, nport)
    ng.start()
    app = subprocess.Popen(
        [sys.executable, str(work / "app.py"), str(body), str(port), "1" if a.uvloop else "0"]
    )
    try:
        wait_port(port, proc=app)
        etag = None
        import http.client

        c = http.client.HTTPConnection("127.0.0.1", nport)
        c.request("GET", "/body.json.gz")
        r = c.getresponse()
        r.read()
        etag = r.getheader("ETag")
        c.close()
        cases = {
            "304": (
                f"http://127.0.0.1:{port}/304",
                f"http://127.0.0.1:{nport}/body.json.gz",
                {"If-None-Match": etag or ""},
            ),
            "sendfile": (
                f"http://127.0.0.1:{port}/sendfile",
                f"http://127.0.0.1:{nport}/body.json.gz",
                {},
            ),
            "memory": (
                f"http://127.0.0.1:{port}/memory",
                f"http://127.0.0.1:{nport}/body.json.gz",
                {},
            ),
        }
        print(
            f"bare aiohttp{' + uvloop' if a.uvloop else ''}, {a.body_kb} kB body, "
            f"{a.conns} connections, {os.cpu_count()} CPUs"
        )
        print("| response | aiohttp req/s | nginx req/s | ratio |")
        print("|---|---|---|---|")
        for name, (url, nurl, hdrs) in cases.items():
            xs, ns = [], []
            for _ in range(a.reps):
                xs.append(
                    wrk(
                        url, a.conns, a.duration, {} if name == "304" else hdrs, script_dir=work
                    ).rps
                )
                ns.append(wrk(nurl, a.conns, a.duration, hdrs, script_dir=work).rps)
                time.sleep(0.2)
            print(f"| {name} | {median(xs):,.0f} | {median(ns):,.0f} | {paired(xs, ns):.2f} |")
    finally:
        stop_process(app)
        ng.stop()
        import shutil

        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
