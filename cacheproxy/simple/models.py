"""Value types for the simple API: one model, parsed from HTML or JSON, rendered to both.

The field set follows the PEP 691 JSON form; HTML ``data-*`` attributes map onto it (PEP 691
"Project Detail" maps one onto the other). Values are kept exactly as upstream gave them
(yank reasons, requires-python strings, hashes), so rendering them again loses nothing.
"""

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from packaging.utils import NormalizedName

# Core metadata (PEP 658/714): False = not advertised; True = advertised without a hash;
# a mapping = advertised with these hashes ({"sha256": hex}).
CoreMetadata = bool | Mapping[str, str]


@dataclass(frozen=True, slots=True)
class DistFile:
    """One distribution file as an index lists it."""

    filename: str
    url: str  # absolute upstream URL, percent-encoded exactly as upstream wrote it (1.7)
    hashes: Mapping[str, str] = field(default_factory=dict)
    requires_python: str | None = None
    yanked: bool | str = False  # PEP 592: True, or the reason string byte-exact
    core_metadata: CoreMetadata = False
    size: int | None = None  # PEP 700
    upload_time: str | None = None  # PEP 700
    gpg_sig: bool | None = None
    # PEP 740: the absolute upstream URL of the file's provenance object, or None.
    provenance: str | None = None
    # Other JSON keys upstream sent that we pass through untouched (PEP 691: clients ignore
    # unknown keys). Never includes keys we rewrite (url, provenance).
    extra: Mapping[str, Any] = field(default_factory=dict)

    @property
    def sha256(self) -> str | None:
        return self.hashes.get("sha256")

    @property
    def metadata_sha256(self) -> str | None:
        if isinstance(self.core_metadata, Mapping):
            return self.core_metadata.get("sha256")
        return None


@dataclass(frozen=True, slots=True)
class ProjectPage:
    """A project page (``/simple/<project>/``)."""

    name: NormalizedName
    files: tuple[DistFile, ...]
    api_version: str = "1.0"
    versions: tuple[str, ...] | None = None  # PEP 700, mandatory from api-version 1.1
    meta: Mapping[str, Any] = field(default_factory=dict)  # other "meta" keys (_last-serial)
    # Top-level keys passed through: PEP 708 "tracks"/"alternate-locations",
    # PEP 792 "project-status".
    extra: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class ProjectList:
    """The root page (``/simple/``): names as upstream spells them."""

    names: tuple[str, ...]
    api_version: str = "1.0"
    meta: Mapping[str, Any] = field(default_factory=dict)
