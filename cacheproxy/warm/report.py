"""What ``cacheproxy warm`` says about each file, and the summary: the result model.

Every step (resolve, plan, fetch) reports :class:`Result` values to a :class:`Reporter`;
``cli/warm.py`` draws them (a progress bar or plain lines). The text of a result line and
of the summary line lives here, so every reporter prints the same words.
"""

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Protocol

from cacheproxy.units import format_bytes


class Outcome(StrEnum):
    FETCHED = "fetched"  # the proxy did not have it (X-Cache MISS): it does now
    CACHED = "cached"  # the proxy already had it (X-Cache HIT)
    SKIPPED = "skipped"  # deliberately not fetched: not on an index, or maybe not needed
    FAILED = "failed"


@dataclass(frozen=True, slots=True)
class Result:
    outcome: Outcome
    name: str  # a filename, a package ("beta 1.0") or an input
    reason: str | None = None
    size: int | None = None
    cache: str | None = None  # the proxy's X-Cache for a fetched file


class Reporter(Protocol):
    """Where progress goes (cli/warm.py: a rich progress bar, or plain lines)."""

    def planned(self, files: int, total_bytes: int) -> None: ...

    def advance(self, nbytes: int) -> None: ...

    def result(self, result: Result) -> None: ...


@dataclass
class Summary:
    results: list[Result] = field(default_factory=list)

    def count(self, outcome: Outcome) -> int:
        return sum(1 for r in self.results if r.outcome is outcome)

    @property
    def fetched_bytes(self) -> int:
        return sum(r.size or 0 for r in self.results if r.outcome is Outcome.FETCHED)

    @property
    def ok(self) -> bool:
        return self.count(Outcome.FAILED) == 0


class Recording:
    """A :class:`Reporter` wrapper that keeps every result for the :class:`Summary`."""

    def __init__(self, reporter: Reporter) -> None:
        self.reporter = reporter
        self.summary = Summary()

    def planned(self, files: int, total_bytes: int) -> None:
        self.reporter.planned(files, total_bytes)

    def advance(self, nbytes: int) -> None:
        self.reporter.advance(nbytes)

    def result(self, result: Result) -> None:
        self.summary.results.append(result)
        self.reporter.result(result)


def result_line(r: Result) -> str:
    if r.outcome in (Outcome.FETCHED, Outcome.CACHED):
        size = format_bytes(r.size) if r.size is not None else "size unknown"
        return f"{r.outcome} {r.name} ({size}, {r.cache})"
    return f"{r.outcome} {r.name}: {r.reason}"


def summary_line(s: Summary) -> str:
    return (
        f"warm: {s.count(Outcome.FETCHED)} fetched ({format_bytes(s.fetched_bytes)}), "
        f"{s.count(Outcome.CACHED)} already cached, {s.count(Outcome.SKIPPED)} skipped, "
        f"{s.count(Outcome.FAILED)} failed"
    )
