"""Load generation with Debian's ``wrk`` (bounded duration, keep-alive connections).

A small Lua ``done()`` hook prints the summary as one JSON line, so nothing is parsed from
wrk's human output. ``bytes`` counts every byte read, including responses still in flight
when the run ends, so MB/s is right for large files too. Latency percentiles are wrk's
(per completed request, in microseconds).
"""

from __future__ import annotations

import json
import shutil
import subprocess
from dataclasses import asdict, dataclass
from pathlib import Path

_LUA = r"""
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRKJSON {"requests":%d,"bytes":%d,"duration_us":%d,"connect":%d,"read":%d,' ..
    '"write":%d,"status":%d,"timeout":%d,"p50_us":%d,"p99_us":%d,"mean_us":%.1f}\n',
    summary.requests, summary.bytes, summary.duration, e.connect, e.read, e.write,
    e.status, e.timeout, latency:percentile(50), latency:percentile(99), latency.mean))
end
"""


@dataclass
class WrkResult:
    requests: int
    bytes: int
    seconds: float
    errors: int
    p50_ms: float
    p99_ms: float
    connections: int

    @property
    def rps(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0

    @property
    def mbps(self) -> float:
        return self.bytes / 1e6 / self.seconds if self.seconds else 0.0

    def as_dict(self) -> dict[str, float]:
        d = asdict(self)
        d.update(rps=round(self.rps, 1), mbps=round(self.mbps, 1))
        return d


def have_wrk() -> bool:
    return shutil.which("wrk") is not None


def wrk(
    url: str,
    connections: int,
    duration: float,
    headers: dict[str, str] | None = None,
    *,
    script_dir: Path,
    threads: int = 2,
) -> WrkResult:
    script = script_dir / "wrk-done.lua"
    if not script.exists():
        script.write_text(_LUA)
    cmd = ["wrk", "-t", str(max(1, min(threads, connections))), "-c", str(connections)]
    cmd += ["-d", f"{duration:g}s", "--timeout", "30s", "-s", str(script)]
    for k, v in (headers or {}).items():
        cmd += ["-H", f"{k}: {v}"]
    cmd.append(url)
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=duration + 60)
    line = next((ln for ln in out.stdout.splitlines() if ln.startswith("WRKJSON ")), None)
    if line is None:
        raise RuntimeError(
            f"wrk failed ({out.returncode}): {out.stderr.strip() or out.stdout.strip()}"
        )
    d = json.loads(line.removeprefix("WRKJSON "))
    errors = d["connect"] + d["read"] + d["write"] + d["status"] + d["timeout"]
    return WrkResult(
        requests=d["requests"],
        bytes=d["bytes"],
        seconds=d["duration_us"] / 1e6,
        errors=errors,
        p50_ms=d["p50_us"] / 1000,
        p99_ms=d["p99_us"] / 1000,
        connections=connections,
    )


def wrk_version() -> str:
    out = subprocess.run(["wrk", "-v"], capture_output=True, text=True, timeout=10)
    text = (out.stdout + out.stderr).strip().splitlines()
    return text[0].split(" [", 1)[0].removeprefix("wrk ").strip() if text else "?"
