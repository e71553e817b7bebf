"""Build real, small, valid distributions at test time (no network, no build backend).

This module owns the bytes of the test distributions: wheels (PEP 427 / the binary
distribution format spec) with a correct ``RECORD``, and sdists (PEP 625 / PEP 517 layout).
``FakeIndex`` (``tests/fakeindex.py``) serves what these functions write, and pip/uv can
install the wheels, so tests exercise real client behaviour rather than placeholder files.

Builds are deterministic (fixed timestamps, sorted members, seeded padding), so the same
arguments always give the same sha256.
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import io
import random
import re
import tarfile
import zipfile
from collections.abc import Sequence
from pathlib import Path

from packaging.tags import parse_tag
from packaging.utils import canonicalize_name, parse_sdist_filename, parse_wheel_filename
from packaging.version import Version

# Zip cannot store dates before 1980; any fixed value makes builds reproducible.
_ZIP_DATE = (2020, 1, 1, 0, 0, 0)
_TAR_MTIME = 1577836800  # the same instant, 2020-01-01T00:00:00Z


def escape_name(name: str) -> str:
    """The distribution name as it appears in a wheel filename (PEP 427 escaping)."""
    return re.sub(r"[-_.]+", "_", name)


def module_name(name: str) -> str:
    """The importable top-level module the built distributions contain."""
    return canonicalize_name(name).replace("-", "_")


def _metadata(
    name: str, version: str, requires: Sequence[str], requires_python: str | None
) -> bytes:
    # Core metadata 2.1 (PEP 566): the minimum that pip and uv read for resolution.
    lines = ["Metadata-Version: 2.1", f"Name: {name}", f"Version: {version}"]
    lines += [f"Requires-Dist: {req}" for req in requires]
    if requires_python is not None:
        lines.append(f"Requires-Python: {requires_python}")
    return ("\n".join(lines) + "\n\n").encode()


def _record_hash(data: bytes) -> str:
    # RECORD uses urlsafe base64 without padding (binary distribution format spec).
    digest = hashlib.sha256(data).digest()
    return "sha256=" + base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def build_wheel(
    out_dir: Path,
    name: str,
    version: str,
    *,
    requires: Sequence[str] = (),
    requires_python: str | None = None,
    tag: str = "py3-none-any",
    pad_bytes: int = 0,
) -> Path:
    """Write a pure-Python wheel to ``out_dir`` and return its path.

    The wheel contains ``<module>/__init__.py`` with ``__version__``, and with ``pad_bytes``
    an extra ``<module>/_pad.bin`` of that many incompressible bytes, stored uncompressed
    so multi-MB wheels build quickly.
    """
    version = str(Version(version))  # wheel filenames carry the normalized version
    dist = f"{escape_name(name)}-{version}"
    filename = f"{dist}-{tag}.whl"
    parse_wheel_filename(filename)  # raises InvalidWheelFilename for bad input
    pkg = module_name(name)
    wheel_file = "Wheel-Version: 1.0\nGenerator: cacheproxy-tests\nRoot-Is-Purelib: true\n"
    # A compressed tag set (py2.py3-none-any) expands to one Tag line per tag.
    wheel_file += "".join(f"Tag: {t}\n" for t in sorted(map(str, parse_tag(tag))))
    members: list[tuple[str, bytes, int]] = [
        (f"{pkg}/__init__.py", f'__version__ = "{version}"\n'.encode(), zipfile.ZIP_DEFLATED)
    ]
    if pad_bytes:
        # Seeded, so the build stays reproducible; randbytes is fast even for many MB.
        pad = random.Random(f"{dist}:{pad_bytes}").randbytes(pad_bytes)
        members.append((f"{pkg}/_pad.bin", pad, zipfile.ZIP_STORED))
    members.append(
        (
            f"{dist}.dist-info/METADATA",
            _metadata(name, version, requires, requires_python),
            zipfile.ZIP_DEFLATED,
        )
    )
    members.append((f"{dist}.dist-info/WHEEL", wheel_file.encode(), zipfile.ZIP_DEFLATED))
    record_name = f"{dist}.dist-info/RECORD"
    record = "".join(f"{path},{_record_hash(data)},{len(data)}\n" for path, data, _ in members)
    record += f"{record_name},,\n"  # RECORD cannot hash itself
    members.append((record_name, record.encode(), zipfile.ZIP_DEFLATED))

    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / filename
    with zipfile.ZipFile(path, "w") as zf:
        for member, data, compression in members:
            info = zipfile.ZipInfo(member, date_time=_ZIP_DATE)
            info.compress_type = compression
            info.external_attr = 0o644 << 16
            zf.writestr(info, data)
    return path


def build_sdist(
    out_dir: Path,
    name: str,
    version: str,
    *,
    requires: Sequence[str] = (),
    requires_python: str | None = None,
) -> Path:
    """Write ``<name>-<version>.tar.gz`` (PEP 625 name) with PKG-INFO and a pyproject.toml."""
    version = str(Version(version))
    base = f"{module_name(name)}-{version}"
    filename = f"{base}.tar.gz"
    parse_sdist_filename(filename)
    deps = ", ".join(f'"{req}"' for req in requires)
    pyproject = (
        '[build-system]\nrequires = ["setuptools>=68"]\n'
        'build-backend = "setuptools.build_meta"\n\n'
        f'[project]\nname = "{name}"\nversion = "{version}"\ndependencies = [{deps}]\n'
    )
    if requires_python is not None:
        pyproject += f'requires-python = "{requires_python}"\n'
    members = {
        "PKG-INFO": _metadata(name, version, requires, requires_python),
        "pyproject.toml": pyproject.encode(),
        f"{module_name(name)}/__init__.py": f'__version__ = "{version}"\n'.encode(),
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / filename
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        for member, data in sorted(members.items()):
            info = tarfile.TarInfo(f"{base}/{member}")
            info.size, info.mtime, info.mode = len(data), _TAR_MTIME, 0o644
            tf.addfile(info, io.BytesIO(data))
    # mtime=0 keeps the gzip header reproducible too.
    path.write_bytes(gzip.compress(buf.getvalue(), mtime=0))
    return path


def wheel_metadata(path: Path | bytes) -> bytes:
    """The exact bytes of the wheel's ``*.dist-info/METADATA`` (what PEP 658 serves); the
    wheel by its path or its bytes."""
    with zipfile.ZipFile(io.BytesIO(path) if isinstance(path, bytes) else path) as zf:
        found = [
            n for n in zf.namelist() if re.fullmatch(r"[^/]+\.dist-info/METADATA", n) is not None
        ]
        if len(found) != 1:
            what = "the wheel" if isinstance(path, bytes) else path.name
            raise ValueError(f"{what}: expected one .dist-info/METADATA, found {found}")
        return zf.read(found[0])
