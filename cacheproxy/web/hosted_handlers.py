"""HTTP side of the hosted indexes: the upload endpoint, their pages and their files.

URLs, for a hosted index NAME::

    POST /index/NAME/                   the legacy upload API (twine, uv publish, ...)
    GET  /index/NAME/simple/            its projects
    GET  /index/NAME/simple/<project>/  a project page (PEP 503 HTML / PEP 691 JSON)
    GET  /index/NAME/files/<filename>   a file, and ``<filename>.metadata`` (PEP 658)

``/simple/<project>/`` serves a hosted project too (handlers.project_page asks
:func:`hosted_project_response` first, before any routing to an upstream index), with
links to the same file URLs. The views of single upstream indexes (index_handlers.py)
share ``/index/NAME/simple/``: a NAME is either hosted or upstream, never both
(settings.py refuses it), and :func:`setup_hosted_routes` sends each request to its kind.
"""

import hmac
import logging
from collections.abc import Mapping
from typing import IO

from aiohttp import BodyPartReader, web
from aiohttp.typedefs import Handler
from packaging.utils import canonicalize_name

from cacheproxy.proxy.hosted import Hosted, NoSuchFile, Rendered, Upload, UploadRefused
from cacheproxy.proxy.uploads import MAX_FIELD_BYTES, MAX_FIELDS_BYTES
from cacheproxy.simple.layout import METADATA_SUFFIX
from cacheproxy.web.auth import authenticate, client_address
from cacheproxy.web.keys import proxy_key, settings_key
from cacheproxy.web.names import add_slash, page_name
from cacheproxy.web.responses import etag_matches, representation, send_stored, text_error

logger = logging.getLogger(__name__)

CHUNK = 256 * 1024
# Pages change when someone uploads: clients revalidate every time (a cheap 304).
PAGE_CACHE_CONTROL = "max-age=0, must-revalidate"
# From /simple/<project>/ to /index/<name>/files/, and from /index/<name>/simple/<p>/.
ROOT_VIEW_FILES = "../../index/{index}/files/"
HOSTED_VIEW_FILES = "../../files/"


def _hosted(request: web.Request) -> tuple[Hosted, str] | web.Response:
    hosted = request.app[proxy_key].hosted
    index = request.match_info["index"]
    if index not in hosted.names:
        return text_error(404, f"no hosted index {index[:100]!r}")
    return hosted, index


def send_rendered(request: web.Request, rendered: Rendered, cache: str = "HOSTED") -> web.Response:
    """A hosted page in the representation the client asked for (PEP 691 negotiation).
    ``cache``: its X-Cache (the root list with hosted names says how upstream's was got)."""
    chosen = representation(request)
    if isinstance(chosen, web.Response):
        return chosen
    media, gz = chosen
    data, etag = rendered.bodies[f"{media.kind}.gz" if gz else media.kind]
    headers = {
        "ETag": etag,
        "Vary": "Accept, Accept-Encoding",
        "Cache-Control": PAGE_CACHE_CONTROL,
        "X-Cache": cache,
    }
    if gz:
        headers["Content-Encoding"] = "gzip"
    if etag_matches(request.headers.get("If-None-Match"), etag):
        return web.Response(status=304, headers=headers)
    headers["Content-Type"] = media.content_type
    return web.Response(body=data, headers=headers)


async def hosted_project_response(request: web.Request, project: str) -> web.Response | None:
    """``/simple/<project>/`` for a project on a hosted index (None: not hosted).

    A hosted project is served from its hosted index only, never from upstream: a public
    project of the same name is shadowed (see proxy/hosted.py).
    """
    hosted = request.app[proxy_key].hosted
    index = await hosted.find(canonicalize_name(project))
    if index is None:
        return None
    rendered = await hosted.page(index, project, ROOT_VIEW_FILES.format(index=index))
    if rendered is None:  # deleted between the two looks
        return None
    return send_rendered(request, rendered)


async def project_list(request: web.Request) -> web.StreamResponse:
    found = _hosted(request)
    if isinstance(found, web.Response):
        return found
    hosted, index = found
    return send_rendered(request, await hosted.project_list(index))


async def project_page(request: web.Request) -> web.StreamResponse:
    found = _hosted(request)
    if isinstance(found, web.Response):
        return found
    hosted, index = found
    if not request.path.endswith("/"):
        return add_slash(request)
    name = page_name(request)
    if isinstance(name, web.Response):
        return name
    rendered = await hosted.page(index, name, HOSTED_VIEW_FILES)
    if rendered is None:
        return text_error(404, f"no such project on index {index}: {name}")
    return send_rendered(request, rendered)


async def hosted_file(request: web.Request) -> web.StreamResponse:
    found = _hosted(request)
    if isinstance(found, web.Response):
        return found
    hosted, index = found
    filename = request.match_info["filename"]
    is_metadata = filename.endswith(METADATA_SUFFIX)
    dist_name = filename.removesuffix(METADATA_SUFFIX) if is_metadata else filename
    record = await hosted.file(index, dist_name)
    if record is None:
        return text_error(404, f"no such file on index {index}: {filename[:200]}")
    sha = record.metadata_sha256 if is_metadata else record.sha256
    if sha is None:
        return text_error(404, f"no metadata is advertised for {dist_name}")
    try:
        fobj = hosted.open_file(sha)
    except FileNotFoundError:
        return text_error(404, f"no such file on index {index}: {filename[:200]}")
    private = request.app[settings_key].auth_reads
    return _send_file(request, fobj, f'"{sha}"', private)


def _send_file(
    request: web.Request, fobj: IO[bytes], etag: str, private: bool
) -> web.StreamResponse:
    headers = {
        "Content-Type": "application/octet-stream",
        "Accept-Ranges": "bytes",
        # A file never changes at its URL (an index refuses a second upload of a name).
        "Cache-Control": f"max-age=31536000, immutable, {'private' if private else 'public'}",
        "X-Cache": "HOSTED",
    }
    return send_stored(request, fobj, etag, headers)


# -- upload ---------------------------------------------------------------------------


def refusal(response: web.Response) -> web.Response:
    """An upload refusal with its line as the HTTP reason phrase too: twine prints the
    reason phrase, not the body (PyPI's warehouse puts its message there the same way)."""
    line = response.text.strip() if response.text else ""
    if line:
        safe = line.encode("ascii", "replace").decode()[:200]
        response.set_status(response.status, safe)
    return response


async def upload(request: web.Request) -> web.StreamResponse:
    """POST /index/NAME/: the legacy upload API. Refusals are a 4xx and one line."""
    response = await _upload(request)
    return refusal(response) if response.status >= 400 else response


async def _upload(request: web.Request) -> web.Response:
    found = _hosted(request)
    if isinstance(found, web.Response):
        return found
    hosted, index = found
    users = request.app[proxy_key].users
    if users is None:
        return text_error(403, "uploads are off: this proxy has no users file (--users)")
    who = await authenticate(request, users)
    if isinstance(who, web.Response):
        return who
    allowed = request.app[settings_key].uploaders.get(index)
    if allowed is not None and who not in allowed:
        logger.warning("upload refused: user %r may not upload to %s", who, index)
        return text_error(403, f"user {who} may not upload to index {index}")
    limit = request.app[settings_key].max_upload_size
    # The form's other fields come on top of the file: allow them some room.
    if request.content_length is not None and request.content_length > limit + 8 * 1024 * 1024:
        return text_error(413, f"upload is larger than the limit of {limit} bytes")
    if not request.content_type.startswith("multipart/"):
        return text_error(400, "an upload is multipart/form-data (the legacy upload API)")
    try:
        stored = await _receive(request, hosted, index, who)
    except UploadRefused as e:
        logger.info("upload to %s by %s refused: %s", index, who, e.message)
        return text_error(e.status, e.message)
    return web.Response(text="OK\n" if stored else "OK (already uploaded, same bytes)\n")


async def _receive(request: web.Request, hosted: Hosted, index: str, user: str) -> bool:
    """Stream the form: fields into memory (bounded), the file to a temporary."""
    fields: dict[str, str] = {}
    fields_size = 0
    upload: Upload | None = None
    filename = ""
    try:
        reader = await request.multipart()
        while (part := await reader.next()) is not None:
            if not isinstance(part, BodyPartReader):
                raise UploadRefused(400, "nested multipart parts are not part of the upload API")
            name = part.name or ""
            if name == "content" and upload is None:
                filename = part.filename or ""
                if not filename:
                    raise UploadRefused(400, "the content part has no filename")
                upload = await hosted.begin_upload()
                while chunk := await part.read_chunk(CHUNK):
                    await upload.write(chunk)
                continue
            data = await _read_field(part, fields_size)
            fields_size += len(data)
            if part.filename is None:  # other files (gpg_signature, attestations): ignored
                fields.setdefault(name, data.decode("utf-8", "replace"))
        if upload is None:
            raise UploadRefused(400, "no file in the upload (the content field)")
        received = await upload.finish(filename)
        upload = None  # accept() owns the temporary now
        return await hosted.accept(index, fields, received, user)
    except ValueError as e:  # a malformed multipart body
        raise UploadRefused(400, f"malformed upload form: {e}") from None
    finally:
        if upload is not None:
            upload.discard()


async def _read_field(part: BodyPartReader, used: int) -> bytes:
    chunks: list[bytes] = []
    size = 0
    while chunk := await part.read_chunk(64 * 1024):
        size += len(chunk)
        if size > MAX_FIELD_BYTES or used + size > MAX_FIELDS_BYTES:
            raise UploadRefused(413, f"form field {part.name!r} is too large")
        chunks.append(chunk)
    return b"".join(chunks)


# -- yank, unyank, delete over HTTP (the admin token) ---------------------------------------


async def admin_hosted(request: web.Request) -> web.Response:
    """POST /-/admin/hosted/<index>/<yank|unyank|delete>/<file>[?reason=...]: as the
    ``cacheproxy hosted`` commands, with the admin token; audited in the log."""
    token = request.app[settings_key].admin_token
    if token is None:
        return text_error(404, "admin endpoints are off (set CACHEPROXY_ADMIN_TOKEN)")
    given = request.headers.get("Authorization", "")
    if not hmac.compare_digest(given.encode(), f"Bearer {token}".encode()):
        return text_error(401, "admin token required", {"WWW-Authenticate": "Bearer"})
    found = _hosted(request)
    if isinstance(found, web.Response):
        return found
    hosted, index = found
    action, filename = request.match_info["action"], request.match_info["filename"]
    actor = f"admin token from {client_address(request)}"
    try:
        if action == "delete":
            await hosted.delete(index, filename, actor)
        elif action in ("yank", "unyank"):
            reason = request.query.get("reason", "")
            yanked: bool | str = False if action == "unyank" else (reason or True)
            await hosted.set_yanked(index, filename, yanked, actor)
        else:
            return text_error(404, f"no such action {action[:50]!r}: yank, unyank or delete")
    except NoSuchFile:
        return text_error(404, f"no such file on index {index}: {filename[:200]}")
    return web.json_response({"index": index, "file": filename, "done": action})


def _either(hosted: Handler, upstream: Handler) -> Handler:
    """A view under /index/NAME/ that hosted and upstream indexes both have: NAME is one
    or the other, never both (settings.py refuses it)."""

    async def view(request: web.Request) -> web.StreamResponse:
        if request.match_info["index"] in request.app[proxy_key].hosted.names:
            return await hosted(request)
        return await upstream(request)

    return view


def setup_hosted_routes(
    app: web.Application, index_views: Mapping[str, Handler] | None = None
) -> None:
    """The hosted indexes' routes. ``index_views``: the upstream indexes' views of the
    same paths (index_handlers.INDEX_VIEWS), for a NAME that is not hosted."""
    app.router.add_post("/-/admin/hosted/{index}/{action}/{filename}", admin_hosted)
    app.router.add_post("/index/{index}/", upload)
    app.router.add_get("/index/{index}/files/{filename}", hosted_file)
    views = index_views or {}
    for path, handler in (
        ("/index/{index}/simple/", project_list),
        ("/index/{index}/simple/{project}", project_page),
        ("/index/{index}/simple/{project}/", project_page),
    ):
        other = views.get(path)
        app.router.add_get(path, handler if other is None else _either(handler, other))
