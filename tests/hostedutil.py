"""Helpers for the hosted-index tests: a users file, and uploads as twine sends them."""

import base64
import hashlib
from pathlib import Path
from typing import Any

import aiohttp
import bcrypt
from aiohttp import web
from aiohttp.test_utils import TestClient
from packaging.utils import parse_sdist_filename, parse_wheel_filename

Client = TestClient[web.Request, web.Application]

PASSWORD = "s3cret-pass"


def write_users(path: Path, *names: str, password: str = PASSWORD) -> Path:
    """An htpasswd file as ``htpasswd -B`` writes it ($2y$), at bcrypt's lowest cost so
    tests stay fast (the cost is part of the hash; the check reads it from there)."""
    lines = []
    for name in names:
        hashed = bcrypt.hashpw(password.encode(), bcrypt.gensalt(4)).decode()
        lines.append(f"{name}:$2y${hashed[4:]}")
    path.write_text("\n".join(lines) + "\n")
    return path


def basic(user: str, password: str = PASSWORD) -> dict[str, str]:
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


def upload_form(
    path: Path, data: bytes | None = None, filename: str | None = None, **overrides: str
) -> aiohttp.FormData:
    """The legacy upload form twine sends for ``path`` (fields first, then the file;
    ``filename`` sends it under another name)."""
    content = path.read_bytes() if data is None else data
    if path.name.endswith(".whl"):
        name, version, _b, _t = parse_wheel_filename(path.name)
        filetype = "bdist_wheel"
    else:
        name, version = parse_sdist_filename(path.name)
        filetype = "sdist"
    fields: dict[str, Any] = {
        ":action": "file_upload",
        "protocol_version": "1",
        "metadata_version": "2.1",
        "name": str(name),
        "version": str(version),
        "filetype": filetype,
        "pyversion": "py3" if filetype == "bdist_wheel" else "source",
        "summary": "a team package",
        "sha256_digest": hashlib.sha256(content).hexdigest(),
    }
    fields.update(overrides)
    form = aiohttp.FormData()
    for key, value in fields.items():
        form.add_field(key, value)
    form.add_field(
        "content", content, filename=filename or path.name, content_type="application/octet-stream"
    )
    return form


async def upload(
    client: Client, index: str, path: Path, user: str = "alice", **kw: Any
) -> tuple[int, str]:
    data = kw.pop("data", None)
    filename = kw.pop("filename", None)
    password = kw.pop("password", PASSWORD)
    form = upload_form(path, data, filename, **kw)
    resp = await client.post(f"/index/{index}/", data=form, headers=basic(user, password))
    return resp.status, await resp.text()
