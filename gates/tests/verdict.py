"""Judging a parsed test report against a TestsPolicy, its table rows and summary, and
`evaluate` (parse, then judge).

What each check reads (counts, pass rate, required tests, pytest's exit status, the report's
time): docs/formats.md, "Test reports".
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass
from fractions import Fraction

from gates.base import Evidence, EvidenceRef, GateResult, guarded, table_row, utcnow
from gates.common import CLOCK_SKEW, as_utc, capped_rows, duration_text, plural
from gates.tests.formats import parse
from gates.tests.junit import junit_id_for_nodeid
from gates.tests.model import FAILED, PASSING, TestReport
from gates.tests.policy import TestsPolicy
from gates.tests.pytest_json import PYTEST_COMPLETED, PYTEST_EXIT_NAMES


def evaluate(evidence: Evidence, policy: TestsPolicy, now: dt.datetime | None = None) -> GateResult:
    """Parse and judge. Malformed evidence refuses with `error` set; this never raises for it."""
    return guarded("tests", evidence, lambda: judge(parse(evidence), evidence, policy, now), now)


def judge(
    report: TestReport, evidence: Evidence, policy: TestsPolicy, now: dt.datetime | None = None
) -> GateResult:
    """The verdict on an already parsed report (what `evaluate` does after `parse`)."""
    checks = _checks(report, policy)
    if future := _not_in_the_future(report, evidence, now or utcnow()):
        checks.append(future)
    failing = [c for c in checks if not c.ok]
    return GateResult(
        gate="tests",
        passed=not failing,
        summary=_summary(report, failing),
        rows=_rows(report, checks),
        evidence=[EvidenceRef.of(evidence)],
        evaluated_at=now or utcnow(),
    )


@dataclass(slots=True)
class _Check:
    check: str
    actual: str
    limit: str
    ok: bool
    why: str  # the summary's words when it fails

    def row(self) -> dict[str, str]:
        ok = "yes" if self.ok else "no"
        return table_row(check=self.check, actual=self.actual, limit=self.limit, ok=ok)


# -- checks --------------------------------------------------------------------------------------


def _checks(report: TestReport, policy: TestsPolicy) -> list[_Check]:
    r, p = report, policy
    checks = [
        _Check(
            "tests",
            str(r.total),
            f">= {p.min_tests}",
            r.total >= p.min_tests,
            f"{'no' if r.total == 0 else r.total} tests (min {p.min_tests})",
        ),
        _Check(
            "failed",
            str(r.failed),
            f"<= {p.max_failed}",
            r.failed <= p.max_failed,
            f"{r.failed} failed (max {p.max_failed})",
        ),
        _Check(
            "errors",
            str(r.errors),
            f"<= {p.max_errors}",
            r.errors <= p.max_errors,
            f"{plural(r.errors, 'error')} (max {p.max_errors})",
        ),
    ]
    if p.max_skipped_ratio is not None:
        checks.append(_skipped_ratio(r, p.max_skipped_ratio))
    if p.min_pass_rate is not None:
        checks.append(_pass_rate(r, p.min_pass_rate))
    if r.exitcode is not None:
        checks.append(_exit_status(r.exitcode))
    checks.extend(_required(r, entry) for entry in p.required)
    return checks


def _rate(num: int, den: int) -> str:
    return f"{num / den:.4g} ({num}/{den})"


def _exact(x: float) -> Fraction:
    return Fraction(repr(x))  # 0.1 as 1/10, not as the binary float just above it


def _skipped_ratio(r: TestReport, limit: float) -> _Check:
    ratio = Fraction(r.skipped, r.total) if r.total else Fraction(0)
    return _Check(
        "skipped ratio",
        _rate(r.skipped, r.total) if r.total else "0 (no tests)",
        f"<= {limit:g}",
        ratio <= _exact(limit),
        f"skipped ratio {float(ratio):.4g} (max {limit:g})",
    )


def _pass_rate(r: TestReport, limit: float) -> _Check:
    ran = r.total - r.skipped
    ok = ran > 0 and Fraction(r.passed, ran) >= _exact(limit)
    return _Check(
        "pass rate",
        _rate(r.passed, ran) if ran else "n/a (no test ran)",
        f">= {limit:g}",
        ok,
        f"pass rate {r.passed / ran:.4g} (min {limit:g})"
        if ran
        else f"pass rate n/a: no test ran (min {limit:g})",
    )


def _exit_status(exitcode: int) -> _Check:
    name = PYTEST_EXIT_NAMES.get(exitcode)
    actual = f"{exitcode} ({name})" if name else str(exitcode)
    return _Check(
        "exit status",
        actual,
        "run completed (0, 1 or 5)",
        exitcode in PYTEST_COMPLETED,
        f"pytest exit status {actual}: the run did not complete",
    )


def _pattern(entry: str) -> re.Pattern[str] | None:
    """A required entry with `*` or `?` as a regex (`*` any run, `?` one character; the rest,
    brackets included, literal); None for a plain test id."""
    if "*" not in entry and "?" not in entry:
        return None
    return re.compile(re.escape(entry).replace(r"\*", ".*").replace(r"\?", "."), re.DOTALL)


def _matching(report: TestReport, entry: str) -> list[str]:
    """The ids a required entry names: exactly, else as a pattern; a pytest node id is also
    tried in its JUnit form against a JUnit report."""
    candidates = [entry]
    if report.format == "junit" and ".py::" in entry:
        candidates.append(junit_id_for_nodeid(entry))
    matched: list[str] = []
    for candidate in candidates:
        if candidate in report.outcomes:
            return [candidate]
        rx = _pattern(candidate)
        matched = [i for i in report.outcomes if rx.fullmatch(i)] if rx else []
        if matched:
            break
    return matched


def _required(report: TestReport, entry: str) -> _Check:
    matched = _matching(report, entry)
    label = f"required {entry}"
    if not matched:
        actual = "missing" if report.per_test else "missing (summary-only report)"
        return _Check(label, actual, "present, passed", False, f"required {entry} missing")
    bad = [(i, report.outcomes[i]) for i in matched if report.outcomes[i] not in PASSING]
    if bad:
        test_id, outcome = bad[0]
        more = f" (+{len(bad) - 1} more)" if len(bad) > 1 else ""
        return _Check(
            label,
            f"{outcome}: {test_id}{more}",
            "present, passed",
            False,
            f"required {test_id} {outcome}",
        )
    actual = "passed" if len(matched) == 1 else f"passed ({len(matched)} tests)"
    return _Check(label, actual, "present, passed", True, "")


def _not_in_the_future(report: TestReport, evidence: Evidence, now: dt.datetime) -> _Check | None:
    """A report (or its referrer) dated beyond the clock skew in the future refuses: that time
    was made up, and it must never make a report look newer than the real ones."""
    created = report.created or evidence.created
    if created is None or as_utc(created) - now <= CLOCK_SKEW:
        return None
    ahead = duration_text(as_utc(created) - now)
    return _Check(
        "report time",
        as_utc(created).isoformat(timespec="seconds"),
        "not in the future",
        False,
        f"report is dated in the future ({ahead} ahead)",
    )


# -- rendering -----------------------------------------------------------------------------------


def _rows(report: TestReport, checks: list[_Check]) -> list[dict[str, str]]:
    """A row per check, per parser note, then per failed or errored test (capped)."""
    rows = [c.row() for c in checks]
    rows.extend(table_row(check="note", actual=n, limit="", ok="") for n in report.notes)
    rows += capped_rows(
        report.failing,
        lambda bad: table_row(
            check="failed test" if bad[1] == FAILED else "errored test",
            actual=bad[0],
            limit="",
            ok="no",
        ),
        lambda more: table_row(check=more, actual="", limit="", ok="no"),
    )
    return rows


def _summary(report: TestReport, failing: list[_Check]) -> str:
    if failing:
        reasons = [c.why for c in failing]
        if len(reasons) > 4:
            reasons = [*reasons[:3], f"and {len(reasons) - 3} more"]
        return "refused: " + "; ".join(reasons)
    r = report
    return (
        f"passed: {plural(r.total, 'test')}, {r.failed} failed, "
        f"{plural(r.errors, 'error')}, {r.skipped} skipped"
    )
