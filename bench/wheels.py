"""Wheels shaped like real ones: many members, deflated, Python source and "native" blobs.

``tests/distbuild.py`` pads a wheel with one incompressible member, which installs in a
single copy: then an install is nearly all download, and even nginx would be 1.4x a local
wheelhouse for pip (measured), far from the 1.03x the issue measured on the real set. Real
data-stack wheels are hundreds to thousands of files: Python modules (that pip byte-compiles
and uv does not), extension modules and data that deflate 2-3x. This builder makes that
shape, deterministically (seeded; the same arguments give the same bytes):

* Python source: ``min(src_fraction * size, src_cap)`` bytes of plausible modules
  (functions, classes, docstrings) in files of 2-24 KB;
* the rest: ``.so``-like members of 64 KB-8 MB whose bytes deflate about 2.2x (random
  bytes from a skewed alphabet with runs of zeros), until the *compressed* wheel reaches
  the requested size;
* a valid ``RECORD`` (sha256 of every member), ``METADATA`` and ``WHEEL``.
"""

from __future__ import annotations

import base64
import hashlib
import random
import zipfile
from pathlib import Path

_ZIP_DATE = (2020, 1, 1, 0, 0, 0)
_WORDS = [
    "array",
    "data",
    "frame",
    "index",
    "value",
    "series",
    "block",
    "axis",
    "dtype",
    "shape",
    "buffer",
    "chunk",
    "table",
    "field",
    "record",
    "column",
    "row",
    "scalar",
    "mask",
    "merge",
    "group",
    "apply",
    "reduce",
    "window",
    "offset",
    "stride",
    "cache",
    "parse",
    "render",
    "encode",
    "decode",
    "stream",
    "reader",
    "writer",
    "config",
    "option",
    "handle",
    "result",
    "error",
]


def _record_hash(data: bytes) -> str:
    digest = hashlib.sha256(data).digest()
    return "sha256=" + base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def _py_module(rng: random.Random, target: int) -> bytes:
    out: list[str] = ['"""Generated module for the cacheproxy benchmark."""\n\nimport math\n\n']
    size = len(out[0])
    while size < target:
        name = "_".join(rng.choice(_WORDS) for _ in range(rng.randint(2, 3)))
        args = ", ".join(rng.sample(_WORDS, rng.randint(1, 4)))
        body = []
        for _ in range(rng.randint(3, 12)):
            a, b = rng.sample(_WORDS, 2)
            body.append(
                f"    {a}_{rng.randint(0, 99)} = {b} * {rng.randint(1, 999)}"
                f" + math.sqrt({rng.random():.6f})\n"
            )
        if rng.random() < 0.3:
            func = (
                f"class {name.title().replace('_', '')}:\n"
                f'    """{" ".join(rng.choice(_WORDS) for _ in range(rng.randint(6, 20)))}."""\n\n'
                f"    def {name}(self, {args}):\n"
                + "".join("    " + ln for ln in body)
                + "        return None\n\n\n"
            )
        else:
            func = (
                f"def {name}_{rng.randint(0, 9999)}({args}):\n"
                f'    """{" ".join(rng.choice(_WORDS) for _ in range(rng.randint(6, 20)))}."""\n'
                + "".join(body)
                + f"    return {rng.choice(_WORDS)}_{rng.randint(0, 99)} if False else None\n\n\n"
            )
        out.append(func)
        size += len(func)
    return "".join(out).encode()


# 16 symbols spread over the byte range: ~4 bits of entropy per byte, so deflate gets ~2x;
# with the zero runs below, ~2.2x, like stripped extension modules.
_SKEW = bytes((b % 16) * 16 + 3 for b in range(256))


def _blob(rng: random.Random, n: int) -> bytes:
    parts = []
    left = n
    while left > 0:
        k = min(left, rng.randint(16_384, 262_144))
        parts.append(rng.randbytes(k).translate(_SKEW))
        z = min(left - k, rng.randint(0, k // 6))
        if z > 0:
            parts.append(bytes(z))
        left -= k + max(z, 0)
    return b"".join(parts)[:n]


def build_real_wheel(
    out_dir: Path,
    name: str,
    version: str,
    size: int,
    *,
    requires_python: str = ">=3.8",
    src_fraction: float = 0.25,
    src_cap: int = 3_000_000,
) -> Path:
    """A wheel whose file is about ``size`` bytes (within ~1%), shaped as described above.

    Written member by member, watching the archive grow, so every byte is deflated once
    (level 6 for source, level 1 for the blobs: their ratio barely depends on it).
    """
    rng = random.Random(f"{name}-{version}-{size}")
    dist_name = name.replace("-", "_")
    dist = f"{dist_name}-{version}"
    pkg = dist_name
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{dist}-py3-none-any.whl"
    record: list[str] = []

    with zipfile.ZipFile(path, "w") as zf:

        def add(member: str, data: bytes, level: int) -> None:
            info = zipfile.ZipInfo(member, date_time=_ZIP_DATE)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            zf.writestr(info, data, compresslevel=level)
            record.append(f"{member},{_record_hash(data)},{len(data)}\n")

        add(f"{pkg}/__init__.py", f'__version__ = "{version}"\n'.encode(), 6)
        src_left = int(min(size * src_fraction * 4, src_cap))  # source deflates ~4x
        i = 0
        while src_left > 0:
            n = min(src_left, rng.randint(2_000, 24_000))
            sub = f"{pkg}/{rng.choice(_WORDS)}" if i % 7 else pkg
            add(f"{sub}/mod_{i:04d}.py", _py_module(rng, n), 6)
            src_left -= n
            i += 1
        j = 0
        budget = size - 4_000  # metadata, RECORD and the central directory
        while (written := zf.fp.tell()) < budget - 1024:  # type: ignore[union-attr]
            want = min(int((budget - written) * 2.1), rng.randint(64 * 1024, 8 * 1024 * 1024))
            add(f"{pkg}/_native/lib_{j:03d}.so", _blob(rng, max(want, 2048)), 1)
            j += 1
        meta = (
            f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n"
            f"Requires-Python: {requires_python}\n\n"
        ).encode()
        wheel = (
            b"Wheel-Version: 1.0\nGenerator: cacheproxy-bench\n"
            b"Root-Is-Purelib: true\nTag: py3-none-any\n"
        )
        add(f"{dist}.dist-info/METADATA", meta, 6)
        add(f"{dist}.dist-info/WHEEL", wheel, 6)
        record_name = f"{dist}.dist-info/RECORD"
        info = zipfile.ZipInfo(record_name, date_time=_ZIP_DATE)
        info.compress_type = zipfile.ZIP_DEFLATED
        info.external_attr = 0o644 << 16
        zf.writestr(info, "".join(record) + f"{record_name},,\n")
    return path
