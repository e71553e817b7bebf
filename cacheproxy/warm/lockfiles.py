"""What ``cacheproxy warm`` reads: lock files and requirements files, parsed into packages.

Pure and synchronous: text in, :class:`LockInput` (or :class:`Unresolved`) out. Which of a
package's files fit a target, and fetching them, is ``plan.py``'s and ``fetch.py``'s business.

Formats:

* ``uv.lock``: ``[[package]]`` with ``wheels``/``sdist`` (url, ``hash = "sha256:…"``, size)
  and a dependency graph with markers; walked from the workspace members per target, so a
  Windows-only dependency is not wanted for Linux.
* ``poetry.lock``: ``[[package]]`` with ``files = [{file, hash}]`` (filenames only: the files
  are looked up on the index page); ``markers`` per package since lock-version 2.1.
* ``pdm.lock``: ``[[package]]`` with ``files = [{file, hash}]`` (``{url, hash}`` with PDM's
  ``static_urls`` strategy), as poetry.lock; a ``marker`` per package with the
  ``inherit_metadata`` strategy (``[metadata] strategy``).
* ``pylock.toml`` (PEP 751): ``[[packages]]`` with ``wheels``/``sdist`` (url or path, name,
  ``hashes``, size) and a ``marker`` per package.
* requirements files: with ``--hash`` pins they name exact files (matched on the index page
  by version and hash); without, they must be resolved first (:class:`Unresolved`).
"""

import re
import shlex
import tomllib
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from packaging.markers import InvalidMarker, Marker, UndefinedComparison, UndefinedEnvironmentName
from packaging.requirements import InvalidRequirement, Requirement
from packaging.specifiers import InvalidSpecifier, SpecifierSet
from packaging.utils import NormalizedName, canonicalize_name
from packaging.version import InvalidVersion, Version

# Hash names pip accepts in --hash (and PEP 751 allows any hashlib name; these cover them).
HASH_ALGORITHMS = ("sha256", "sha384", "sha512")

Environment = Mapping[str, str]


class LockFileError(ValueError):
    """An input file cannot be read as the format it claims; the message names the file."""


class Kind(StrEnum):
    REQUIREMENTS = "requirements"
    UV_LOCK = "uv.lock"
    POETRY_LOCK = "poetry.lock"
    PDM_LOCK = "pdm.lock"
    PYLOCK = "pylock.toml"


@dataclass(frozen=True, slots=True)
class Artifact:
    """One file a lock names."""

    filename: str
    url: str | None  # None: known by filename only (poetry.lock, a local path)
    hashes: Mapping[str, str]  # algorithm -> lowercase hex digest
    size: int | None = None

    @property
    def is_wheel(self) -> bool:
        return self.filename.endswith(".whl")


@dataclass(frozen=True, slots=True)
class Package:
    """A pinned distribution to warm, as one input names it."""

    name: NormalizedName
    version: Version | None
    # The files the lock lists, or None: the lock pins only name, version and hashes
    # (requirements files), so the files are those of the index page that match.
    artifacts: tuple[Artifact, ...] | None
    # With artifacts None: the (algorithm, hex) pairs a file may hash to; None: any file
    # of the version (pins resolved by pip, whose files the proxy checks against its page).
    allowed: frozenset[tuple[str, str]] | None
    origin: str  # "uv.lock", "requirements.txt:12": where to look when it fails
    # False when the input records no markers (poetry.lock before 2.1): a package that fits
    # no target may just not be needed there, so that is a skip, not a failure.
    markers_known: bool = True

    @property
    def label(self) -> str:
        return f"{self.name} {self.version}" if self.version is not None else self.name


@dataclass(frozen=True, slots=True)
class Note:
    """Something that is not fetched: a skip (with why) or a failure found while reading."""

    name: str
    reason: str


@dataclass
class LockInput:
    """A parsed input whose packages are known; :meth:`select` picks those a target needs."""

    path: Path
    kind: Kind
    requires_python: SpecifierSet | None
    selector: Callable[[Environment], tuple[list[Package], list[Note]]]
    skipped: list[Note] = field(default_factory=list)
    failed: list[Note] = field(default_factory=list)

    def select(self, env: Environment) -> tuple[list[Package], list[Note]]:
        """The packages installed in ``env``, and the skips found on the way."""
        return self.selector(env)


@dataclass
class Unresolved:
    """A requirements file without hashes: it must be resolved for each target first."""

    path: Path
    requirements: list[str]  # PEP 508 strings, markers kept: the resolver evaluates them
    constraints: list[str]
    skipped: list[Note] = field(default_factory=list)


# -- markers -------------------------------------------------------------------------------

_EXTRA_MARKER = re.compile(r"\b(extra|extras|dependency_groups)\b")


def marker_applies(marker: str | None, env: Environment) -> bool:
    """Whether a dependency with ``marker`` is installed in ``env``.

    Markers on extras and dependency groups count as true: warm cannot know which a build
    asks for (uv.lock writes conflicting extras as ``extra == '…'``), and warming a file
    too many costs far less than missing one on an air-gapped machine. So does a marker we
    cannot evaluate.
    """
    if not marker or not marker.strip():
        return True
    if _EXTRA_MARKER.search(marker):
        return True
    try:
        return Marker(marker).evaluate(dict(env))
    except (InvalidMarker, UndefinedComparison, UndefinedEnvironmentName, ValueError):
        return True


# -- detection and loading -----------------------------------------------------------------


def detect_kind(path: Path, text: str) -> Kind:
    """The input's format, by name first (as the tools name them), then by content."""
    name = path.name.lower()
    if name == "uv.lock":
        return Kind.UV_LOCK
    if name == "poetry.lock":
        return Kind.POETRY_LOCK
    if name == "pdm.lock":
        return Kind.PDM_LOCK
    if re.fullmatch(r"pylock(\.[^.]+)?\.toml", name):
        return Kind.PYLOCK
    if name.endswith((".txt", ".in")):
        return Kind.REQUIREMENTS
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError:
        return Kind.REQUIREMENTS
    if "lock-version" in doc and "packages" in doc:
        return Kind.PYLOCK
    metadata = doc.get("metadata", {})
    if "content-hash" in metadata:
        return Kind.POETRY_LOCK
    if "lock_version" in metadata or "content_hash" in metadata:  # PDM spells them so
        return Kind.PDM_LOCK
    if "package" in doc and ("revision" in doc or "requires-python" in doc):
        return Kind.UV_LOCK
    raise LockFileError(
        f"{path}: not a requirements file, uv.lock, poetry.lock, pdm.lock or pylock.toml"
    )


def load(path: Path, kind: Kind | None = None) -> LockInput | Unresolved:
    """Read and parse one input file, of ``kind`` or of the kind :func:`detect_kind` finds.

    Raises:
        LockFileError: it cannot be read or is not valid for its format.
    """
    text = _read(path)
    kind = kind or detect_kind(path, text)
    if kind is Kind.REQUIREMENTS:
        return parse_requirements(path, text)
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise LockFileError(f"{path}: not valid TOML: {e}") from None
    try:
        if kind is Kind.UV_LOCK:
            return parse_uv_lock(path, doc)
        if kind is Kind.POETRY_LOCK:
            return parse_poetry_lock(path, doc)
        if kind is Kind.PDM_LOCK:
            return parse_pdm_lock(path, doc)
        return parse_pylock(path, doc)
    except (KeyError, TypeError, AttributeError, InvalidVersion, InvalidSpecifier) as e:
        # A lock that parses as TOML but not as its format: one line naming the file.
        raise LockFileError(f"{path}: not a valid {kind} ({type(e).__name__}: {e})") from None


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except OSError as e:
        raise LockFileError(f"{path}: {e.strerror or e}") from None
    except UnicodeDecodeError:
        raise LockFileError(f"{path}: not UTF-8 text") from None


def _version(raw: object) -> Version | None:
    return Version(str(raw)) if raw is not None else None


def _filename(url_or_path: str) -> str:
    return unquote(urlsplit(url_or_path).path.rsplit("/", 1)[-1])


def _split_hash(raw: str) -> tuple[str, str] | None:
    alg, sep, hexdigest = raw.partition(":")
    if not sep:
        alg, sep, hexdigest = raw.partition("=")
    alg = alg.strip().lower()
    if not sep or alg not in HASH_ALGORITHMS or not re.fullmatch(r"[0-9a-fA-F]+", hexdigest):
        return None
    return alg, hexdigest.lower()


def _requires_python(raw: object) -> SpecifierSet | None:
    return SpecifierSet(str(raw)) if raw else None


# -- uv.lock -------------------------------------------------------------------------------

# Sources whose files are not on an index: nothing for a proxy to warm.
_UV_LOCAL_SOURCES = {
    "editable": "editable source",
    "directory": "local directory source",
    "path": "local path source",
    "git": "git source",
    "url": "direct URL source",
}


def _uv_artifact(entry: Mapping[str, Any]) -> Artifact:
    location = entry.get("url") or entry.get("path") or entry.get("filename")
    if not isinstance(location, str):
        raise KeyError("a wheel or sdist without url, path or filename")
    hashes: dict[str, str] = {}
    if isinstance(entry.get("hash"), str) and (pair := _split_hash(entry["hash"])):
        hashes[pair[0]] = pair[1]
    url = entry.get("url")
    size = entry.get("size")
    return Artifact(
        filename=str(entry.get("filename") or _filename(location)),
        url=url if isinstance(url, str) else None,
        hashes=hashes,
        size=size if isinstance(size, int) else None,
    )


def parse_uv_lock(path: Path, doc: Mapping[str, Any]) -> LockInput:
    """uv's lock: a universal resolution; walk it from the workspace members per target."""
    raw_packages: list[Mapping[str, Any]] = list(doc.get("package", []))
    by_name: dict[str, list[int]] = {}
    for i, pkg in enumerate(raw_packages):
        by_name.setdefault(canonicalize_name(pkg["name"]), []).append(i)
    members = {canonicalize_name(m) for m in doc.get("manifest", {}).get("members", [])}

    def source_kind(pkg: Mapping[str, Any]) -> str:
        source = pkg.get("source", {})
        return next(iter(source), "registry") if isinstance(source, Mapping) else "registry"

    roots = [
        i
        for i, pkg in enumerate(raw_packages)
        if source_kind(pkg) in ("editable", "virtual") or canonicalize_name(pkg["name"]) in members
    ]
    # A lock without any workspace member (hand-made, or `uv lock --script`): take it all.
    all_packages = not roots

    def targets(dep: Mapping[str, Any]) -> list[int]:
        found = by_name.get(canonicalize_name(dep["name"]), [])
        if "version" in dep:
            found = [i for i in found if str(raw_packages[i].get("version")) == dep["version"]]
        if "source" in dep:
            found = [i for i in found if raw_packages[i].get("source") == dep["source"]]
        return found

    def edges(i: int, extras: frozenset[str], root: bool) -> Iterable[Mapping[str, Any]]:
        pkg = raw_packages[i]
        yield from pkg.get("dependencies", [])
        optional: Mapping[str, list[Mapping[str, Any]]] = pkg.get("optional-dependencies", {})
        for extra, deps in optional.items():
            # The project's own extras and groups are all warmed: a build may ask for any.
            if root or canonicalize_name(extra) in extras:
                yield from deps
        if root:
            for deps in pkg.get("dev-dependencies", {}).values():
                yield from deps

    def package(i: int) -> Package:
        pkg = raw_packages[i]
        artifacts = [_uv_artifact(w) for w in pkg.get("wheels", [])]
        if isinstance(pkg.get("sdist"), Mapping):
            artifacts.append(_uv_artifact(pkg["sdist"]))
        return Package(
            name=canonicalize_name(pkg["name"]),
            version=_version(pkg.get("version")),
            artifacts=tuple(artifacts),
            allowed=None,
            origin=path.name,
        )

    def select(env: Environment) -> tuple[list[Package], list[Note]]:
        seen: set[tuple[int, frozenset[str]]] = set()
        stack = [
            (i, frozenset[str]()) for i in (range(len(raw_packages)) if all_packages else roots)
        ]
        reached: set[int] = set()
        while stack:
            i, extras = stack.pop()
            if (i, extras) in seen:
                continue
            seen.add((i, extras))
            reached.add(i)
            for dep in edges(i, extras, root=i in roots):
                if not marker_applies(dep.get("marker"), env):
                    continue
                wanted = frozenset(canonicalize_name(e) for e in dep.get("extra", []))
                stack.extend((t, wanted) for t in targets(dep))
        packages, skipped = [], []
        for i in sorted(reached):
            kind = source_kind(raw_packages[i])
            registry = raw_packages[i].get("source", {}).get("registry", "https://")
            if kind == "registry" and not re.match(r"https?://", str(registry)):
                pkg = raw_packages[i]
                reason = f"local registry ({registry}), not on an index"
                skipped.append(Note(f"{pkg['name']} {pkg.get('version', '')}".strip(), reason))
            elif kind == "registry":
                packages.append(package(i))
            elif kind in _UV_LOCAL_SOURCES:
                pkg = raw_packages[i]
                where = next(iter(pkg["source"].values()))
                skipped.append(
                    Note(
                        f"{pkg['name']} {pkg.get('version', '')}".strip(),
                        f"{_UV_LOCAL_SOURCES[kind]} ({where}), not on an index",
                    )
                )
            # "virtual": the project itself, which has no files at all.
        return packages, skipped

    return LockInput(
        path=path,
        kind=Kind.UV_LOCK,
        requires_python=_requires_python(doc.get("requires-python")),
        selector=select,
    )


# -- poetry.lock ---------------------------------------------------------------------------

_POETRY_LOCAL_SOURCES = {
    "git": "git source",
    "directory": "local directory source",
    "file": "local file source",
    "url": "direct URL source",
}


def parse_poetry_lock(path: Path, doc: Mapping[str, Any]) -> LockInput:
    """Poetry's lock: filenames and hashes only, so files are found on the index page."""
    metadata: Mapping[str, Any] = doc.get("metadata", {})
    lock_version = Version(str(metadata.get("lock-version", "1.0")))
    # Lock-version 2.1 (Poetry 2) writes `markers` on every package that has any; before,
    # markers lived only on dependency edges, which need the pyproject to walk.
    markers_known = lock_version >= Version("2.1")
    legacy_files: Mapping[str, list[Mapping[str, Any]]] = metadata.get("files", {})
    packages: list[tuple[Package, object]] = []
    skipped: list[Note] = []
    for pkg in doc.get("package", []):
        name = str(pkg["name"])
        version = _version(pkg.get("version"))
        source = pkg.get("source", {})
        kind = source.get("type") if isinstance(source, Mapping) else None
        if kind in _POETRY_LOCAL_SOURCES:
            where = source.get("url", "")
            skipped.append(
                Note(
                    f"{name} {version}", f"{_POETRY_LOCAL_SOURCES[kind]} ({where}), not on an index"
                )
            )
            continue
        files = pkg.get("files") or legacy_files.get(name) or []
        artifacts = tuple(
            Artifact(
                filename=str(f["file"]),
                url=None,
                hashes=dict(pair for pair in [_split_hash(str(f.get("hash", "")))] if pair),
            )
            for f in files
        )
        package = Package(
            name=canonicalize_name(name),
            version=version,
            artifacts=artifacts,
            allowed=None,
            origin=path.name,
            markers_known=markers_known,
        )
        packages.append((package, pkg.get("markers")))

    def applies(markers: object, env: Environment) -> bool:
        if isinstance(markers, Mapping):  # per dependency group: needed if any group needs it
            return any(marker_applies(str(m), env) for m in markers.values())
        return marker_applies(str(markers) if markers else None, env)

    def select(env: Environment) -> tuple[list[Package], list[Note]]:
        return [p for p, markers in packages if applies(markers, env)], []

    return LockInput(
        path=path,
        kind=Kind.POETRY_LOCK,
        requires_python=None,  # Poetry's "^3.11" is not PEP 440; uv/pip check it anyway
        selector=select,
        skipped=skipped,
    )


# -- pdm.lock ------------------------------------------------------------------------------

# Keys of a [[package]] that come from somewhere other than an index (PDM writes the
# requirement's own key: pdm/models/requirements.py), with the words for the skip.
_PDM_LOCAL_SOURCES = {
    "path": "local path source",
    "url": "direct URL source",
    "git": "git source",
    "hg": "hg source",
    "svn": "svn source",
    "bzr": "bzr source",
}


def _pdm_artifact(entry: Mapping[str, Any]) -> Artifact:
    url = entry.get("url")
    name = entry.get("file") or (_filename(url) if isinstance(url, str) else None)
    if not name:
        raise KeyError("a file entry without file or url")
    return Artifact(
        filename=str(name),
        url=url if isinstance(url, str) else None,
        hashes=dict(pair for pair in [_split_hash(str(entry.get("hash", "")))] if pair),
    )


def _pdm_requires_python(metadata: Mapping[str, Any]) -> SpecifierSet | None:
    # lock_version 4.5 lists the environments it was locked for in [[metadata.targets]];
    # with more than one the project's own range is not one specifier: none is checked.
    targets = metadata.get("targets", [])
    if isinstance(targets, list) and len(targets) == 1 and isinstance(targets[0], Mapping):
        return _requires_python(targets[0].get("requires_python"))
    return _requires_python(metadata.get("requires_python"))


def parse_pdm_lock(path: Path, doc: Mapping[str, Any]) -> LockInput:
    """PDM's lock: filenames and hashes, as poetry.lock; files are found on the index page.

    The same distribution appears once more for each set of extras it is locked with
    (``extras = [...]``, same files): the fetch is one per file anyway.
    """
    metadata: Mapping[str, Any] = doc.get("metadata", {})
    # With inherit_metadata every package records the marker under which any group needs
    # it; without it, markers live on the dependency edges only (like poetry.lock < 2.1).
    markers_known = "inherit_metadata" in metadata.get("strategy", [])
    packages: list[tuple[Package, object]] = []
    skipped: list[Note] = []
    for pkg in doc.get("package", []):
        name = str(pkg["name"])
        version = _version(pkg.get("version"))
        label = f"{name} {version}" if version is not None else name
        local = next((k for k in _PDM_LOCAL_SOURCES if k in pkg), None)
        if local is not None:
            what = "editable, " if pkg.get("editable") else ""
            reason = f"{what}{_PDM_LOCAL_SOURCES[local]} ({pkg[local]}), not on an index"
            skipped.append(Note(label, reason))
            continue
        package = Package(
            name=canonicalize_name(name),
            version=version,
            artifacts=tuple(_pdm_artifact(f) for f in pkg.get("files", [])),
            allowed=None,
            origin=path.name,
            markers_known=markers_known,
        )
        packages.append((package, pkg.get("marker")))

    def select(env: Environment) -> tuple[list[Package], list[Note]]:
        chosen: dict[tuple[str, Version | None], Package] = {}
        for p, marker in packages:
            if marker_applies(str(marker or ""), env):
                chosen.setdefault((p.name, p.version), p)  # an extras entry: the same files
        return list(chosen.values()), []

    return LockInput(
        path=path,
        kind=Kind.PDM_LOCK,
        requires_python=_pdm_requires_python(metadata),
        selector=select,
        skipped=skipped,
    )


# -- pylock.toml (PEP 751) -----------------------------------------------------------------


def _pylock_artifact(entry: Mapping[str, Any]) -> Artifact:
    location = entry.get("url") or entry.get("path")
    name = entry.get("name") or (_filename(location) if isinstance(location, str) else None)
    if not name:
        raise KeyError("a wheel or sdist without name, url or path")
    hashes = {
        alg.lower(): str(hexdigest).lower()
        for alg, hexdigest in entry.get("hashes", {}).items()
        if alg.lower() in HASH_ALGORITHMS
    }
    url = entry.get("url")
    size = entry.get("size")
    return Artifact(
        filename=str(name),
        url=url if isinstance(url, str) else None,
        hashes=hashes,
        size=size if isinstance(size, int) else None,
    )


def parse_pylock(path: Path, doc: Mapping[str, Any]) -> LockInput:
    """PEP 751: every package carries its own marker, so no graph walk is needed."""
    packages: list[tuple[Package, str | None]] = []
    skipped: list[Note] = []
    for pkg in doc.get("packages", []):
        name = str(pkg["name"])
        version = _version(pkg.get("version"))
        label = f"{name} {version}" if version is not None else name
        local = next((k for k in ("vcs", "directory", "archive") if k in pkg), None)
        if local is not None:
            where = pkg[local].get("url") or pkg[local].get("path") or ""
            skipped.append(Note(label, f"{local} source ({where}), not on an index"))
            continue
        artifacts = [_pylock_artifact(w) for w in pkg.get("wheels", [])]
        if isinstance(pkg.get("sdist"), Mapping):
            artifacts.append(_pylock_artifact(pkg["sdist"]))
        if "index" not in pkg and artifacts and all(a.url is None for a in artifacts):
            skipped.append(Note(label, "local files (path), not on an index"))
            continue
        package = Package(
            name=canonicalize_name(name),
            version=version,
            artifacts=tuple(artifacts),
            allowed=None,
            origin=path.name,
        )
        packages.append((package, pkg.get("marker")))

    def select(env: Environment) -> tuple[list[Package], list[Note]]:
        return [p for p, marker in packages if marker_applies(marker, env)], []

    return LockInput(
        path=path,
        kind=Kind.PYLOCK,
        requires_python=_requires_python(doc.get("requires-python")),
        selector=select,
        skipped=skipped,
    )


# -- requirements files --------------------------------------------------------------------

# pip's own rule (req_file.py COMMENT_RE): a '#' at the start or after whitespace.
_COMMENT = re.compile(r"(^|\s+)#.*$")
_NESTED = {"-r": "requirement", "--requirement": "requirement"}
_CONSTRAINT = {"-c": "constraint", "--constraint": "constraint"}
_EDITABLE = ("-e", "--editable")


@dataclass(frozen=True, slots=True)
class _Line:
    text: str
    origin: str  # "file:line"


def _logical_lines(text: str, origin: str) -> Iterable[_Line]:
    """Lines with comments removed and backslash continuations joined (pip's rules)."""
    buffer, start = "", 0
    for number, raw in enumerate(text.splitlines(), 1):
        line = _COMMENT.sub("", raw)
        if not buffer:
            start = number
        if line.endswith("\\"):
            buffer += line[:-1] + " "
            continue
        buffer += line
        if buffer.strip():
            yield _Line(buffer.strip(), f"{origin}:{start}")
        buffer = ""
    if buffer.strip():
        yield _Line(buffer.strip(), f"{origin}:{start}")


def _option_value(tokens: Sequence[str], names: Iterable[str]) -> str | None:
    """The value of a leading ``-r FILE`` / ``-rFILE`` / ``--requirement=FILE``."""
    first = tokens[0]
    for name in names:
        if first == name:
            return tokens[1] if len(tokens) > 1 else ""
        if name.startswith("--") and first.startswith(name + "="):
            return first[len(name) + 1 :]
        if not name.startswith("--") and first.startswith(name) and len(first) > len(name):
            return first[len(name) :]
    return None


def _looks_local(spec: str) -> bool:
    """A path or URL instead of a requirement (``./pkg``, ``https://…/x.whl``)."""
    return bool(
        re.match(r"^(\.|/|~|[A-Za-z]:\\|[a-z+]+://)", spec)
        or spec.endswith((".whl", ".tar.gz", ".zip"))
    )


@dataclass
class _Requirements:
    entries: list[tuple[Requirement, frozenset[tuple[str, str]], str]] = field(default_factory=list)
    constraints: list[str] = field(default_factory=list)
    skipped: list[Note] = field(default_factory=list)


def _collect(
    path: Path, text: str, out: _Requirements, seen: set[Path], *, constraint: bool
) -> None:
    for line in _logical_lines(text, path.name):
        # pip's break_args_options: the requirement ends where the first word starting
        # with "-" begins, and only the options are shell-split (quotes in a marker stay).
        words = line.text.split()
        first_option = next((n for n, w in enumerate(words) if w.startswith("-")), len(words))
        spec = " ".join(words[:first_option])
        try:
            tokens = shlex.split(" ".join(words[first_option:]))
        except ValueError as e:
            raise LockFileError(f"{line.origin}: cannot split the line: {e}") from None
        if not spec and not tokens:
            continue
        if spec:
            _requirement(spec, tokens, line, out, constraint=constraint)
            continue
        nested = _option_value(tokens, _NESTED)
        also = _option_value(tokens, _CONSTRAINT)
        if nested is not None or also is not None:
            ref = nested if nested is not None else also
            if not ref or "://" in ref:
                raise LockFileError(f"{line.origin}: only local files can be included: {ref!r}")
            child = (path.parent / ref).resolve()
            if child in seen:
                continue  # pip reads an included file once, however often it is named
            seen.add(child)
            _collect(child, _read(child), out, seen, constraint=constraint or also is not None)
            continue
        if tokens[0] in _EDITABLE or tokens[0].startswith("--editable="):
            target = tokens[1] if len(tokens) > 1 else tokens[0].partition("=")[2]
            out.skipped.append(Note(target, f"editable ({line.origin}), not on an index"))
        # Any other option (--index-url, --extra-index-url, --find-links, --pre, ...) is
        # ignored: warm always goes through the proxy, and the resolver gets its options
        # from us.


def _requirement(
    spec: str, options: Sequence[str], line: _Line, out: _Requirements, *, constraint: bool
) -> None:
    hashes: set[tuple[str, str]] = set()
    for n, tok in enumerate(options):
        value = None
        if tok.startswith("--hash="):
            value = tok[len("--hash=") :]
        elif tok == "--hash" and n + 1 < len(options):
            value = options[n + 1]
        if value is not None:
            pair = _split_hash(value)
            if pair is None:
                raise LockFileError(f"{line.origin}: not a hash pip accepts: {value!r}")
            hashes.add(pair)
    local = Note(spec, f"a local path or URL ({line.origin}), not on an index")
    try:
        req = Requirement(spec)
    except InvalidRequirement as e:
        if _looks_local(spec):
            out.skipped.append(local)
            return
        # packaging's message draws a caret under the line: one line is kept.
        why = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise LockFileError(f"{line.origin}: not a requirement: {why}") from None
    if req.url:
        out.skipped.append(Note(req.name, f"direct URL ({line.origin}), not on an index"))
    elif _looks_local(spec):  # "pkg-1.0.tar.gz" parses as a name, but pip takes it as a file
        out.skipped.append(local)
    elif constraint:
        out.constraints.append(str(req))
    else:
        out.entries.append((req, frozenset(hashes), line.origin))


def _pinned(req: Requirement) -> Version | None:
    specs = list(req.specifier)
    if len(specs) == 1 and specs[0].operator in ("==", "===") and "*" not in specs[0].version:
        try:
            return Version(specs[0].version)
        except InvalidVersion:
            return None
    return None


def parse_requirements(
    path: Path, text: str, *, require_hashes: bool | None = None
) -> LockInput | Unresolved:
    """A requirements file: hashed pins are a lock; anything else needs resolving.

    ``require_hashes=None`` decides as pip does: one ``--hash`` anywhere puts the whole
    file in hash-checking mode, where every requirement must be pinned with ``==`` and
    hashed. ``False`` reads a resolver's output: pinned, hashes optional.
    """
    out = _Requirements()
    _collect(path, text, out, {path.resolve()}, constraint=False)
    hashed = any(h for _, h, _ in out.entries) if require_hashes is None else require_hashes
    if require_hashes is None and not hashed:
        return Unresolved(
            path=path,
            requirements=[str(r) for r, _, _ in out.entries],
            constraints=out.constraints,
            skipped=out.skipped,
        )
    packages: list[tuple[Package, Requirement]] = []
    failed: list[Note] = []
    for req, hashes, origin in out.entries:
        version = _pinned(req)
        if version is None:
            failed.append(Note(str(req), f"not pinned with == ({origin})"))
            continue
        if hashed and not hashes:
            # pip refuses the whole file then; naming the line is more useful.
            failed.append(Note(str(req), f"no --hash in a hash-checking file ({origin})"))
            continue
        package = Package(
            name=canonicalize_name(req.name),
            version=version,
            artifacts=None,
            allowed=hashes or None,
            origin=origin,
        )
        packages.append((package, req))

    def select(env: Environment) -> tuple[list[Package], list[Note]]:
        chosen = [
            p for p, req in packages if marker_applies(str(req.marker) if req.marker else None, env)
        ]
        return chosen, []

    return LockInput(
        path=path,
        kind=Kind.REQUIREMENTS,
        requires_python=None,
        selector=select,
        skipped=out.skipped,
        failed=failed,
    )
