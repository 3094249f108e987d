"""The test report model both formats are parsed into: outcomes, how each counts, TestReport.

How pytest-json-report and JUnit outcomes map onto these counts (so one pytest run gives the
same numbers either way): docs/formats.md, "Test reports: counting".
"""

from __future__ import annotations

import datetime as dt
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

from gates.base import Evidence, EvidenceError

ReportFormat = Literal["pytest", "junit"]

PASSED, FAILED, ERROR = "passed", "failed", "error"
SKIPPED, XFAILED, XPASSED = "skipped", "xfailed", "xpassed"
# What each per-test outcome counts as (docs/formats.md).
COUNTS_AS = {
    PASSED: PASSED,
    XPASSED: PASSED,
    FAILED: FAILED,
    ERROR: ERROR,
    SKIPPED: SKIPPED,
    XFAILED: SKIPPED,
}
PASSING = frozenset({PASSED, XPASSED})
_SEVERITY = {PASSED: 0, XPASSED: 0, SKIPPED: 1, XFAILED: 1, FAILED: 2, ERROR: 3}


@dataclass(frozen=True, slots=True)
class TestReport:
    """A parsed test report: counts, per-test outcomes, and what the file says about itself."""

    __test__ = False  # not a pytest test class

    format: ReportFormat
    passed: int
    failed: int
    errors: int
    skipped: int
    total: int
    # test id -> passed | failed | error | skipped | xfailed | xpassed, in report order
    outcomes: Mapping[str, str] = field(default_factory=dict, repr=False, hash=False)
    tool: str | None = None
    tool_version: str | None = None
    created: dt.datetime | None = None
    exitcode: int | None = None  # pytest's exit status (pytest-json-report only)
    per_test: bool = True  # False for a summary-only report: counts, but no outcomes
    notes: tuple[str, ...] = ()  # what the parser decided that a reader should know

    @property
    def failing(self) -> list[tuple[str, str]]:
        """(id, outcome) of failed and errored tests, in report order."""
        return [(i, o) for i, o in self.outcomes.items() if o in (FAILED, ERROR)]


def tally(counts: Counter[str]) -> dict[str, int]:
    """The report's counts from per-outcome counts, via COUNTS_AS."""
    out = dict.fromkeys((PASSED, FAILED, ERROR, SKIPPED), 0)
    for outcome, n in counts.items():
        out[COUNTS_AS[outcome]] += n
    return {
        "passed": out[PASSED],
        "failed": out[FAILED],
        "errors": out[ERROR],
        "skipped": out[SKIPPED],
        "total": sum(out.values()),
    }


def record(outcomes: dict[str, str], test_id: str, outcome: str) -> None:
    """Keep the worst outcome of an id that occurs more than once."""
    before = outcomes.get(test_id)
    if before is None or _SEVERITY[outcome] > _SEVERITY[before]:
        outcomes[test_id] = outcome


def one_line(text: str, limit: int = 300) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def fail(evidence: Evidence, message: str) -> EvidenceError:
    """The one-line EvidenceError for a malformed report, naming its source."""
    return EvidenceError(one_line(f"{evidence.source}: {message}", 500))
