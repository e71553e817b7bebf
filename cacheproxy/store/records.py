"""The records every store keeps: page records with their bodies, file records.

Shared by every store implementation (the local disk today), and by the proxy, which
reads and writes them through :class:`cacheproxy.store.api.Store`.
"""

import hashlib
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

_SCHEMA = 1


@dataclass(frozen=True, slots=True)
class Body:
    """One stored representation of a page."""

    etag: str  # quoted strong ETag
    name: str  # file name under pages/
    size: int


@dataclass(frozen=True, slots=True)
class PageRecord:
    """What we know about one index page: its bodies and how fresh they are."""

    status: int  # 200, or 404 for a remembered "no such project"
    fetched_at: float  # wall-clock time of the last upstream answer (200 or 304)
    upstream_etag: str | None = None
    upstream_last_modified: str | None = None
    serial: str | None = None
    bodies: Mapping[str, Body] = field(default_factory=dict)  # "json", "json.gz", "html", …
    # The release-age gate (simple/gate.py) the bodies were filtered with, and when the
    # next held file ages in; with a gate, "source" is upstream's body, kept to filter
    # again then without asking upstream (source_type and source_url to parse it).
    gate: str | None = None
    gate_changes_at: float | None = None
    held: tuple[tuple[str, str | None, float | None], ...] = ()  # filename, version, from
    source_type: str | None = None
    source_url: str | None = None

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["schema"] = _SCHEMA
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "PageRecord":
        bodies = {k: Body(**v) for k, v in d["bodies"].items()}
        return cls(
            status=d["status"],
            fetched_at=d["fetched_at"],
            upstream_etag=d["upstream_etag"],
            upstream_last_modified=d["upstream_last_modified"],
            serial=d["serial"],
            bodies=bodies,
            gate=d.get("gate"),
            gate_changes_at=d.get("gate_changes_at"),
            held=tuple(tuple(h) for h in d.get("held", ())),
            source_type=d.get("source_type"),
            source_url=d.get("source_url"),
        )


@dataclass(frozen=True, slots=True)
class FileRecord:
    """Where a proxied file comes from and what it must hash to."""

    url: str  # the exact upstream URL from the index page: never rebuilt (signed URLs, %2B)
    sha256: str | None
    size: int | None
    metadata_sha256: str | None = None  # PEP 658 hash, when advertised with one
    metadata: bool = False  # PEP 658 advertised at all
    uploaded: float | None = None  # PEP 700 upload-time, as an epoch (the age gate)
    provenance: str | None = None  # PEP 740: the upstream URL of its provenance
    # Without a sha256: the strongest other hash the index gives (PEP 503 allows any
    # hashlib.algorithms_guaranteed name in "#<name>=<hex>"), checked while downloading.
    hash_name: str | None = None
    hash_value: str | None = None
    # PEP 658 metadata the index does not give, read from the wheel by the proxy
    # (proxy/metadata.py); None: the index's own, or none.
    extracted: bool | None = None


FileMap = dict[str, FileRecord]


def pack_file_record(r: FileRecord) -> tuple[Any, ...]:
    """A file record as a compact tuple, read back as ``FileRecord(*packed)`` (the
    record store and the shared store keep file records this way)."""
    # Positional, in field order (read back as FileRecord(*packed)); trailing fields
    # still at their default are left out, so most records stay five values long.
    packed: tuple[Any, ...] = (
        r.url, r.sha256, r.size, r.metadata_sha256, r.metadata,
        r.uploaded, r.provenance, r.hash_name, r.hash_value, r.extracted,
    )  # fmt: skip
    while len(packed) > 5 and packed[-1] is None:
        packed = packed[:-1]
    return packed


# Strongest first; sha256 has its own field (and names the stored file).
_HASH_PREFERENCE = (
    "sha512",
    "sha3_512",
    "blake2b",
    "sha384",
    "sha3_384",
    "sha3_256",
    "blake2s",
    "sha224",
    "sha3_224",
    "sha1",
    "md5",
)


def strongest_hash(hashes: Mapping[str, str]) -> tuple[str, str] | None:
    """The strongest hash other than sha256 that ``hashes`` gives, as (hashlib name, hex)."""
    for name in _HASH_PREFERENCE:
        value = hashes.get(name)
        if value:
            return name, value.lower()
    return None


def files_version(record: PageRecord) -> str | None:
    """Which rendering of a project page its file records belong to: the name (sha256) of
    its JSON body, which lists every file's URL, hashes and size, so it changes exactly
    when a file record does, and a 304 keeps it."""
    body = record.bodies.get("json")
    return body.name if body is not None else None


class DamagedBody(Exception):
    """A stored page body is not what its record says (cut short by a crash, say)."""

    def __init__(self, body: "Body", problem: str) -> None:
        super().__init__(f"page body {body.name}: {problem}")
        self.body = body


def name_bodies(bodies: Mapping[str, bytes]) -> tuple[dict[str, Body], dict[str, bytes]]:
    """Name rendered bodies by their sha256 and give each its strong ETag.

    Returns the record's body map (representation -> Body) and the bytes by body name.
    Pure CPU work, so it runs in the render thread, off the event loop.
    """
    named: dict[str, Body] = {}
    blobs: dict[str, bytes] = {}
    for kind, data in bodies.items():
        digest = hashlib.sha256(data).hexdigest()
        suffix = "-gz" if kind.endswith(".gz") else ""
        named[kind] = Body(etag=f'"{digest[:32]}{suffix}"', name=digest, size=len(data))
        blobs[digest] = data
    return named, blobs
