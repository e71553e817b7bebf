"""From locks and project pages to the list of files to fetch, per target.

For each package and target the one wheel an installer would pick is chosen (the sdist
only when no wheel fits, or with ``sdists``), plus its PEP 658 metadata. Everything that
is not fetched is a :class:`Note`: a skip (not on an index, maybe not needed) or a failure.
"""

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace

from yarl import URL

from cacheproxy.simple.layout import version_of
from cacheproxy.simple.models import DistFile
from cacheproxy.warm.fetch import Job, Page, short
from cacheproxy.warm.lockfiles import Artifact, LockInput, Note, Package
from cacheproxy.warm.report import Outcome, Reporter, Result
from cacheproxy.warm.targets import Target


@dataclass
class Notes:
    """What is not fetched, in the order found; the same skip from two targets is one."""

    skipped: dict[Note, None] = field(default_factory=dict)  # an ordered set
    failed: list[Note] = field(default_factory=list)

    def skip(self, notes: Iterable[Note]) -> None:
        self.skipped.update(dict.fromkeys(notes))

    def report(self, reporter: Reporter) -> None:
        for note in self.skipped:
            reporter.result(Result(Outcome.SKIPPED, note.name, reason=note.reason))
        for note in dict.fromkeys(self.failed):
            reporter.result(Result(Outcome.FAILED, note.name, reason=note.reason))


def wanted(
    plan: Iterable[tuple[LockInput, Sequence[Target]]], notes: Notes
) -> list[tuple[Package, Target]]:
    """Which packages each target needs, by input."""
    out: list[tuple[Package, Target]] = []
    for lock, targets in plan:
        for target in targets:
            if lock.requires_python is not None and not lock.requires_python.contains(
                target.python, prereleases=True
            ):
                notes.failed.append(
                    Note(
                        lock.path.name,
                        f"requires Python {lock.requires_python}, not {target.python} "
                        f"({target.label}); pass --python-version",
                    )
                )
                continue
            packages, skipped = lock.select(target.env)
            notes.skip(skipped)
            out += [(p, target) for p in packages]
    return out


def candidates(package: Package, page: Page | None) -> list[Artifact]:
    """The files of the package's version: the lock's own, else the matching page entries."""
    if package.artifacts is not None:
        return list(package.artifacts)
    if page is None:
        return []
    found = []
    allowed = package.allowed
    # Filter by sha256 only when the input lists sha256 hashes: one that pins sha512
    # alone keeps every file of the version, and the download is checked instead.
    by_sha256 = allowed is not None and any(alg == "sha256" for alg, _ in allowed)
    for f in page.values():
        if version_of(f.filename) != package.version:
            continue
        sha = f.sha256.lower() if f.sha256 else None
        if by_sha256 and sha and ("sha256", sha) not in (allowed or ()):
            continue
        found.append(Artifact(f.filename, f.url, {"sha256": sha} if sha else {}, f.size))
    return found


def choose(
    package: Package, target: Target, candidates: Sequence[Artifact], sdists: bool
) -> list[Artifact]:
    """The files an installer on ``target`` would download: its best wheel, else the sdist.

    With ``sdists`` the sdist comes too (a build that insists on building from source).
    """
    ranked = [
        (r, a) for a in candidates if a.is_wheel and (r := target.rank(a.filename)) is not None
    ]
    chosen = [min(ranked, key=lambda ra: ra[0])[1]] if ranked else []
    if not chosen or sdists:
        chosen += [a for a in candidates if not a.is_wheel and version_of(a.filename)][:1]
    return chosen


def _url(listed: DistFile) -> URL:
    return URL(listed.url, encoded=True)


def job_for(
    artifact: Artifact, package: Package, page: Page | None, page_error: str | None, index_url: URL
) -> Job | Note:
    """How to fetch ``artifact`` through the proxy, or why it cannot be."""
    listed = page.get(artifact.filename) if page is not None else None
    lock_sha = artifact.hashes.get("sha256")
    listed_sha = listed.sha256.lower() if listed is not None and listed.sha256 else None
    if listed_sha and lock_sha and listed_sha != lock_sha:
        # Cheaper and clearer than downloading it to find out.
        return Note(
            artifact.filename,
            f"the index lists sha256 {short(listed_sha)}, {package.origin} says {short(lock_sha)}",
        )
    if listed is not None:
        url = _url(listed)
    elif artifact.url and (path := URL(artifact.url, encoded=True).raw_path).startswith(
        "/packages/"
    ):
        # Not on the page we got (or no page): a PyPI-shaped URL maps to the proxy by its
        # path, and the proxy finds the project from the filename.
        url = index_url.join(URL("../packages/" + path[len("/packages/") :], encoded=True))
    else:
        return Note(artifact.filename, page_error or "not listed on the proxy's index page")
    allowed = package.allowed if package.artifacts is None else None
    known = lock_sha
    if known is None and allowed is not None and ("sha256", listed_sha) in allowed:
        known = listed_sha
    return Job(
        name=artifact.filename,
        url=url,
        required=dict(artifact.hashes) if package.artifacts is not None else {},
        allowed=allowed,
        size=artifact.size if artifact.size is not None else listed.size if listed else None,
        origin=package.origin,
        known_sha256=known,
    )


def metadata_job(listed: DistFile) -> Job:
    """The PEP 658 metadata file next to a listed wheel, checked against the page's hash."""
    url = _url(listed)
    sha = listed.metadata_sha256
    return Job(
        name=listed.filename + ".metadata",
        url=url.with_path(url.raw_path + ".metadata", encoded=True),
        required={"sha256": sha} if sha else {},
        allowed=None,
        size=None,
        origin="the index page",
        known_sha256=sha,
    )


def add_job(jobs: dict[str, list[Job]], job: Job) -> None:
    """One fetch per file, with every input's conditions on it.

    A filename is never reused on an index, so two inputs naming it mean one file; if their
    hashes disagree, both jobs stay, and the one that is wrong fails with its own origin.
    """
    same = jobs.setdefault(job.name, [])
    for i, other in enumerate(same):
        if any(other.required.get(alg, h) != h for alg, h in job.required.items()):
            continue
        if other.allowed is None or job.allowed is None:
            allowed = other.allowed if job.allowed is None else job.allowed
        else:
            allowed = other.allowed & job.allowed
        same[i] = replace(
            other,
            required={**other.required, **job.required},
            allowed=allowed,
            size=other.size if other.size is not None else job.size,
            known_sha256=other.known_sha256 or job.known_sha256,
        )
        return
    same.append(job)


def _nothing_fits(
    package: Package, target: Target, found: Sequence[Artifact], notes: Notes
) -> None:
    if found:
        reason = f"no wheel for {target.label} and no sdist"
    elif package.artifacts is None:
        what = "with these hashes " if package.allowed else ""
        reason = f"the index has no file of this version {what}"
    else:
        reason = "the lock lists no files"
    reason = f"{reason.rstrip()} ({package.origin})"
    if package.markers_known:
        notes.failed.append(Note(package.label, reason))
    else:  # without markers we cannot tell "not available" from "not needed"
        notes.skip([Note(package.label, reason + "; the lock records no markers")])


def plan_jobs(
    wanted: Sequence[tuple[Package, Target]],
    pages: dict[str, Page | str],
    index_url: URL,
    *,
    metadata: bool,
    sdists: bool,
    notes: Notes,
) -> list[Job]:
    """Every file (and metadata file) to fetch, each once; what cannot be goes to ``notes``."""
    jobs: dict[str, list[Job]] = {}
    meta_jobs: dict[str, Job] = {}
    for package, target in wanted:
        got = pages[package.name]
        page, page_error = (None, got) if isinstance(got, str) else (got, None)
        found = candidates(package, page)
        chosen = choose(package, target, found, sdists)
        if not chosen:
            if page_error is None or package.artifacts is not None:
                _nothing_fits(package, target, found, notes)
            # else only the page could say which files there are: its failure is reported
            continue
        for artifact in chosen:
            job = job_for(artifact, package, page, page_error, index_url)
            if isinstance(job, Note):
                notes.failed.append(job)
                continue
            add_job(jobs, job)
            listed = page.get(artifact.filename) if page is not None else None
            if metadata and artifact.is_wheel and listed is not None and listed.core_metadata:
                meta_jobs[listed.filename + ".metadata"] = metadata_job(listed)
    return [*(j for same in jobs.values() for j in same), *meta_jobs.values()]
