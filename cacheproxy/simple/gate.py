"""The release-age gate: which files of a project page are too new to hand out.

A compromised release is usually caught and pulled within hours, so a team can ask its
index for a cooldown: a file is listed (and served) only once it has been public for
``min_age``, or only if it was uploaded before a fixed ``exclude_newer`` cut-off (as uv's
``--exclude-newer``). The upload time comes from the index (PEP 700 ``upload-time``); a
file without one is held unless unknown times are allowed: the gate fails closed.

Pure: the caller passes the time. The result says when it next changes (the first held
file to age in), so a stored page can be filtered again then without asking upstream.
"""

import fnmatch
import math
from collections.abc import Iterable
from dataclasses import dataclass, replace

from packaging.utils import (
    canonicalize_name,
    canonicalize_version,
)

from cacheproxy.errors import ConfigError
from cacheproxy.settings import Settings
from cacheproxy.simple.layout import version_of
from cacheproxy.simple.models import DistFile, ProjectPage
from cacheproxy.units import BadTimestamp, format_timestamp, parse_timestamp


@dataclass(frozen=True, slots=True)
class Exempt:
    """``urllib3==2.5.1`` (one release), ``urllib3`` or ``acme-*`` (every release)."""

    project: str  # a glob over normalized names
    version: str | None = None  # canonical, or None for every version
    spec: str = ""  # as the operator wrote it, for logs

    @classmethod
    def parse(cls, spec: str) -> "Exempt":
        """Raises: ConfigError: not NAME, NAME==VERSION or a glob."""
        name, sep, version = spec.strip().partition("==")
        name = name.strip()
        if not name or (sep and not version.strip()):
            raise ConfigError(f"min-age-exempt must be NAME, NAME==VERSION or a glob, not {spec!r}")
        pattern = name.lower() if any(c in name for c in "*?[") else canonicalize_name(name)
        canonical = canonicalize_version(version.strip()) if sep else None
        return cls(pattern, canonical, spec.strip())

    def matches(self, project: str, version: str | None) -> bool:
        if not fnmatch.fnmatchcase(project, self.project):
            return False
        return self.version is None or (
            version is not None and canonicalize_version(version) == self.version
        )

    def __str__(self) -> str:
        return self.spec or self.project


@dataclass(frozen=True, slots=True)
class Gate:
    """The rule. ``min_age`` in seconds and/or an ``exclude_newer`` epoch; both may be set
    (the earlier cut-off wins)."""

    min_age: float | None = None
    exclude_newer: float | None = None
    allow_unknown: bool = False
    exempt: tuple[Exempt, ...] = ()

    @classmethod
    def from_settings(cls, settings: Settings) -> "Gate":
        """Raises: ConfigError: an exemption is not NAME, NAME==VERSION or a glob."""
        return cls(
            min_age=settings.min_age,
            exclude_newer=settings.exclude_newer,
            allow_unknown=settings.min_age_unknown == "allow",
            exempt=tuple(Exempt.parse(spec) for spec in settings.min_age_exempt),
        )

    @property
    def active(self) -> bool:
        return self.min_age is not None or self.exclude_newer is not None

    def cutoff(self, now: float) -> float:
        """Files uploaded after this time are held."""
        bounds = [math.inf]
        if self.min_age is not None:
            bounds.append(now - self.min_age)
        if self.exclude_newer is not None:
            bounds.append(self.exclude_newer)
        return min(bounds)

    def available_at(self, uploaded: float) -> float | None:
        """When a file uploaded at ``uploaded`` is handed out (None: never, by the fixed
        cut-off)."""
        if self.exclude_newer is not None and uploaded > self.exclude_newer:
            return None
        return uploaded + (self.min_age or 0.0)

    def is_exempt(self, project: str, version: str | None) -> Exempt | None:
        return next((e for e in self.exempt if e.matches(project, version)), None)


@dataclass(frozen=True, slots=True)
class Held:
    """A file the gate keeps back."""

    project: str
    filename: str
    version: str | None
    available_at: float | None  # None: unknown upload time, or never (fixed cut-off)
    reason: str

    def line(self) -> str:
        """One line for a client's 403 and for logs."""
        if self.available_at is None:
            return f"{self.filename} is held back by the release-age gate: {self.reason}"
        return (
            f"{self.filename} is held back by the release-age gate until "
            f"{format_timestamp(self.available_at)}"
        )


def release_line(
    project: str, version: str | None, held: Iterable[tuple[str, str | None, float | None]]
) -> str:
    """One line for a client's 403 when the gate holds every file of a release (``version``;
    None: of every release of ``project``), as :meth:`Held.line` says it of one file.
    ``held``: (filename, version, available from) of those files, as page records keep them;
    the release is handed out when its first file is."""
    what = f"{project} {version}" if version is not None else f"every release of {project}"
    times = [when for _f, _v, when in held if when is not None]
    if not times:
        return (
            f"{what} is held back by the release-age gate: upload time unknown or past the cut-off"
        )
    return f"{what} is held back by the release-age gate until {format_timestamp(min(times))}"


def file_version(filename: str) -> str | None:
    """The version a wheel or sdist filename carries, or None."""
    version = version_of(filename)
    return None if version is None else str(version)


def upload_epoch(upload_time: str | None) -> float | None:
    if upload_time is None:
        return None
    try:
        return parse_timestamp(upload_time)
    except BadTimestamp:
        return None  # an unreadable time is an unknown one: held unless allowed


def judge(
    gate: Gate, project: str, filename: str, uploaded: float | None, now: float
) -> Held | None:
    """Whether the rule holds ``filename`` of ``project`` at ``now``, exemptions aside
    (None: handed out). See :meth:`Gate.is_exempt`."""
    if not gate.active:
        return None
    version = file_version(filename)
    if uploaded is None:
        if gate.allow_unknown:
            return None
        return Held(project, filename, version, None, "the index gives no upload time")
    if uploaded <= gate.cutoff(now):
        return None
    when = gate.available_at(uploaded)
    reason = "uploaded after the fixed cut-off" if when is None else "too new"
    return Held(project, filename, version, when, reason)


@dataclass(frozen=True, slots=True)
class Filtered:
    page: ProjectPage
    held: tuple[Held, ...]
    changes_at: float | None  # when the next held file ages in (None: nothing will)


def filter_page(gate: Gate, page: ProjectPage, now: float) -> Filtered:
    """``page`` without the files ``gate`` holds at ``now``. PEP 700's ``versions`` list
    loses the versions left with no file (versions that never had one stay)."""
    if not gate.active:
        return Filtered(page, (), None)
    kept: list[DistFile] = []
    held: list[Held] = []
    for f in page.files:
        verdict = judge(gate, page.name, f.filename, upload_epoch(f.upload_time), now)
        if verdict is not None and gate.is_exempt(page.name, verdict.version) is None:
            held.append(verdict)
        else:
            kept.append(f)
    if not held:
        return Filtered(page, (), None)
    versions = page.versions
    if versions is not None:
        emptied = _versions_of(page.files) - _versions_of(kept)
        versions = tuple(v for v in versions if canonicalize_version(v) not in emptied)
    times = [h.available_at for h in held if h.available_at is not None]
    return Filtered(
        replace(page, files=tuple(kept), versions=versions),
        tuple(held),
        min(times) if times else None,
    )


def _versions_of(files: Iterable[DistFile]) -> set[str]:
    return {canonicalize_version(v) for f in files if (v := file_version(f.filename)) is not None}
