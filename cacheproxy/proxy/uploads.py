"""Checks on an uploaded distribution, before anything is stored.

The legacy upload API (what twine, ``uv publish``, poetry and flit speak; PyPI's
warehouse ``forklift/legacy.py``) sends a multipart form with ``:action=file_upload``,
``protocol_version=1``, the file as ``content`` and its metadata as fields. A file is
accepted only when its filename is a valid wheel or sdist name (binary distribution format
spec; PEP 625) naming the form's project and version, its sha256 matches the form's,
and its archive opens and carries metadata that agrees. Each refusal is one line of
text, which twine and uv print as the reason.
"""

import email.parser
import logging
import re
import tarfile
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from packaging.utils import (
    InvalidSdistFilename,
    InvalidWheelFilename,
    NormalizedName,
    canonicalize_name,
    parse_sdist_filename,
    parse_wheel_filename,
)
from packaging.version import InvalidVersion, Version

logger = logging.getLogger(__name__)

# A METADATA file is a few kilobytes; a huge one is not a wheel we want to parse.
MAX_METADATA_BYTES = 2 * 1024 * 1024
# Form fields other than the file: the long description is the big one (PyPI caps it).
MAX_FIELD_BYTES = 1024 * 1024
MAX_FIELDS_BYTES = 4 * 1024 * 1024


class UploadRefused(Exception):
    """An upload that must not be stored: ``status`` and a one-line reason."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(frozen=True, slots=True)
class Received:
    """The file part of an upload, streamed to a temporary and hashed on the way."""

    path: Path
    filename: str
    size: int
    sha256: str


@dataclass(frozen=True, slots=True)
class Checked:
    """What the checks learned: the project, version and what the pages advertise."""

    project: NormalizedName
    version: str
    requires_python: str | None
    metadata: bytes | None  # a wheel's METADATA (PEP 658), None for an sdist


def _refuse(message: str) -> UploadRefused:
    return UploadRefused(400, message)


def check_form(fields: Mapping[str, str]) -> None:
    """The protocol fields (before the file is looked at)."""
    action = fields.get(":action")
    if action != "file_upload":
        raise _refuse(f"unsupported :action {action!r}; only file_upload is")
    if fields.get("protocol_version", "1") != "1":
        raise _refuse(f"unsupported protocol_version {fields['protocol_version']!r}")


def parse_filename(filename: str) -> tuple[NormalizedName, Version, bool]:
    """The project, version and whether it is a wheel.

    Raises:
        UploadRefused: not a valid wheel or sdist filename.
    """
    if "/" in filename or "\\" in filename or filename.startswith("."):
        raise _refuse(f"invalid distribution filename {filename[:200]!r}")
    try:
        if filename.endswith(".whl"):
            name, version, _build, _tags = parse_wheel_filename(filename)
            return name, version, True
        name, version = parse_sdist_filename(filename)
        return name, version, False
    except (InvalidWheelFilename, InvalidSdistFilename, InvalidVersion) as e:
        raise _refuse(f"invalid distribution filename {filename[:200]!r}: {e}") from None


def check_upload(fields: Mapping[str, str], received: Received) -> Checked:
    """Every check on a received file. Reads the archive: run it in a thread.

    Raises:
        UploadRefused: the file must not be stored (a 400 with the reason).
    """
    check_form(fields)
    project, version, wheel = parse_filename(received.filename)
    form_name = fields.get("name", "")
    if canonicalize_name(form_name) != project:
        raise _refuse(f"filename {received.filename} does not match name {form_name[:100]!r}")
    try:
        form_version = Version(fields.get("version", ""))
    except InvalidVersion:
        raise _refuse(f"invalid version {fields.get('version', '')[:100]!r}") from None
    if form_version != version:
        raise _refuse(
            f"filename {received.filename} does not match version {fields['version'][:100]!r}"
        )
    filetype = fields.get("filetype")
    if filetype is not None and filetype != ("bdist_wheel" if wheel else "sdist"):
        raise _refuse(f"filetype {filetype[:50]!r} does not match {received.filename}")
    digest = fields.get("sha256_digest", "").strip().lower()
    if not digest:
        raise _refuse("sha256_digest is required")
    if digest != received.sha256:
        raise _refuse(f"sha256_digest does not match the bytes of {received.filename}")
    if received.size == 0:
        raise _refuse(f"{received.filename} is empty")
    metadata: bytes | None
    if wheel:
        metadata = _wheel_metadata(received.path, received.filename)
    else:
        metadata = _sdist_metadata(received.path, received.filename)
    requires_python = fields.get("requires_python") or None
    if metadata is not None:
        requires_python = _check_metadata(metadata, project, version, received.filename)
    return Checked(project, str(version), requires_python, metadata if wheel else None)


def _check_metadata(
    data: bytes, project: NormalizedName, version: Version, filename: str
) -> str | None:
    """Name and Version in core metadata agree with the filename; its Requires-Python."""
    try:
        headers = email.parser.BytesHeaderParser().parsebytes(data)
    except Exception:  # the email parser raises many kinds for garbage
        raise _refuse(f"{filename}: unreadable metadata") from None
    name = headers.get("Name", "")
    raw_version = headers.get("Version", "")
    if canonicalize_name(str(name)) != project:
        raise _refuse(f"{filename}: metadata Name {str(name)[:100]!r} does not match")
    try:
        if Version(str(raw_version)) != version:
            raise _refuse(f"{filename}: metadata Version {str(raw_version)[:100]!r} does not match")
    except InvalidVersion:
        raise _refuse(f"{filename}: invalid metadata Version {str(raw_version)[:100]!r}") from None
    requires = headers.get("Requires-Python")
    return str(requires).strip() or None if requires is not None else None


def _wheel_metadata(path: Path, filename: str) -> bytes:
    """The wheel's ``<name>-<version>.dist-info/METADATA`` (binary distribution format)."""
    try:
        with zipfile.ZipFile(path) as zf:
            found = [
                info
                for info in zf.infolist()
                if re.fullmatch(r"[^/]+\.dist-info/METADATA", info.filename)
            ]
            if len(found) != 1:
                raise _refuse(f"{filename}: expected one .dist-info/METADATA, found {len(found)}")
            if found[0].file_size > MAX_METADATA_BYTES:
                raise _refuse(f"{filename}: METADATA is too large")
            return zf.read(found[0])
    except (zipfile.BadZipFile, OSError, EOFError, RuntimeError, ValueError) as e:
        raise _refuse(f"{filename} is not a readable zip archive: {e}") from None


def _sdist_metadata(path: Path, filename: str) -> bytes | None:
    """An sdist's top-level ``PKG-INFO`` when it has one (older ones may not)."""
    try:
        if filename.endswith(".zip"):
            with zipfile.ZipFile(path) as zf:
                names = [n for n in zf.namelist() if n.count("/") == 1 and n.endswith("/PKG-INFO")]
                return zf.read(names[0])[:MAX_METADATA_BYTES] if names else None
        with tarfile.open(path, "r:gz") as tf:
            for member in tf:
                top = member.isfile() and member.name.count("/") == 1
                if top and member.name.endswith("/PKG-INFO"):
                    if member.size > MAX_METADATA_BYTES:
                        return None
                    extracted = tf.extractfile(member)
                    return extracted.read() if extracted is not None else None
            return None
    except (tarfile.TarError, zipfile.BadZipFile, OSError, EOFError, ValueError) as e:
        raise _refuse(f"{filename} is not a readable archive: {e}") from None
