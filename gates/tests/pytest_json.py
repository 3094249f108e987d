"""pytest-json-report JSON into the test report model.

Which keys are read (`summary`, `tests`, `collectors`, `exitcode`, `created`), how they must
agree, and what a summary-only report can and cannot show: docs/formats.md,
"pytest-json-report".
"""

from __future__ import annotations

import datetime as dt
import math
from collections import Counter
from typing import Any

from gates.base import Evidence
from gates.common import JSONError, load_json
from gates.tests.model import (
    COUNTS_AS,
    ERROR,
    FAILED,
    PASSED,
    SKIPPED,
    TestReport,
    fail,
    record,
    tally,
)

# pytest-json-report outcome words beyond the six above. pytest-rerunfailures leaves "rerun" as a
# test's outcome only when its last attempt passed (any later failure overwrites it).
_PYTEST_ALIASES = {"rerun": PASSED}
_SUMMARY_NON_OUTCOMES = frozenset({"total", "collected", "deselected"})
PYTEST_COMPLETED = frozenset({0, 1, 5})  # OK, tests failed, no tests collected
PYTEST_EXIT_NAMES = {2: "interrupted", 3: "internal error", 4: "usage error"}


def looks_like_pytest(doc: Any) -> bool:
    return (
        isinstance(doc, dict)
        and isinstance(doc.get("summary"), dict)
        and any(k in doc for k in ("tests", "exitcode", "created", "collectors"))
    )


def parse_pytest(evidence: Evidence) -> TestReport:
    try:
        doc = load_json(evidence.data)
    except JSONError as e:
        raise fail(evidence, f"invalid JSON: {e}") from None
    if not looks_like_pytest(doc):
        raise fail(evidence, _json_shape_hint(doc))

    declared = _declared(evidence, doc["summary"])
    outcomes: dict[str, str] = {}
    counts: Counter[str] = Counter()
    notes: list[str] = []
    tests = doc.get("tests")
    if tests is not None:
        counts.update(_listed(evidence, tests, declared, outcomes))
    else:
        counts.update(declared)
        notes.append("summary-only report: no per-test outcomes")
    _add_collectors(evidence, doc.get("collectors"), counts, outcomes)
    exitcode = doc.get("exitcode")
    if exitcode is not None and (isinstance(exitcode, bool) or not isinstance(exitcode, int)):
        raise fail(evidence, f"exitcode is {exitcode!r}, not an integer")

    return TestReport(
        format="pytest",
        **tally(counts),
        outcomes=outcomes,
        tool="pytest",
        tool_version=_pytest_version(doc),
        created=_epoch(evidence, doc.get("created")),
        exitcode=exitcode,
        per_test=tests is not None,
        notes=tuple(notes),
    )


def _count(evidence: Evidence, where: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise fail(evidence, f"{where} is {value!r}, not a count")
    if value < 0:
        raise fail(evidence, f"{where} is {value}, a negative count")
    return value


def _json_shape_hint(doc: Any) -> str:
    if isinstance(doc, dict):
        if ("SchemaVersion" in doc and "Results" in doc) or "ArtifactName" in doc:
            return "it looks like a Trivy scan report, not a test report"
        if "matches" in doc and "source" in doc:
            return "it looks like a Grype scan report, not a test report"
        if "runs" in doc and ("$schema" in doc or "version" in doc):
            return "it looks like a SARIF report, not a test report"
        if "summary" not in doc:
            return 'JSON but not a pytest-json-report: no "summary" object'
        return 'JSON but not a pytest-json-report: "summary" is not an object'
    return f"JSON but not a pytest-json-report: the top level is a {type(doc).__name__}"


def _pytest_outcome(evidence: Evidence, where: str, word: Any) -> str:
    if not isinstance(word, str):
        raise fail(evidence, f"{where}: outcome is {word!r}, not a string")
    outcome = _PYTEST_ALIASES.get(word, word)
    if outcome not in COUNTS_AS:
        raise fail(evidence, f"{where}: unknown outcome {word!r}")
    return outcome


def _declared(evidence: Evidence, summary: dict[str, Any]) -> Counter[str]:
    """The per-outcome counts `summary` declares; its `total`, if given, must be their sum."""
    declared: Counter[str] = Counter()
    total_declared: int | None = None
    for key, value in summary.items():
        n = _count(evidence, f"summary.{key}", value)
        if key == "total":
            total_declared = n
        elif key not in _SUMMARY_NON_OUTCOMES:
            declared[_pytest_outcome(evidence, f"summary.{key}", key)] += n
    if total_declared is not None and total_declared != sum(declared.values()):
        raise fail(
            evidence,
            f"inconsistent totals: summary.total is {total_declared} but its outcomes add up "
            f"to {sum(declared.values())}",
        )
    return declared


def _listed(
    evidence: Evidence, tests: Any, declared: Counter[str], outcomes: dict[str, str]
) -> Counter[str]:
    """The per-outcome counts of the `tests` list, which must agree with `summary`; records
    each test's outcome."""
    if not isinstance(tests, list):
        raise fail(evidence, f'"tests" is a {type(tests).__name__}, not a list')
    listed: Counter[str] = Counter()
    for i, test in enumerate(tests):
        if not isinstance(test, dict) or not isinstance(test.get("nodeid"), str):
            raise fail(evidence, f"tests[{i}] has no nodeid")
        where = f"tests[{i}] ({test['nodeid']})"
        outcome = _pytest_outcome(evidence, where, test.get("outcome"))
        listed[outcome] += 1
        record(outcomes, test["nodeid"], outcome)
    for outcome in set(listed) | set(declared):
        if listed[outcome] != declared[outcome]:
            raise fail(
                evidence,
                f"inconsistent totals: summary says {declared[outcome]} {outcome}, "
                f"the tests list has {listed[outcome]}",
            )
    return listed


def _add_collectors(
    evidence: Evidence, collectors: Any, counts: Counter[str], outcomes: dict[str, str]
) -> None:
    """Failed collectors count as errors, skipped ones as skipped (as pytest's JUnit writer)."""
    if collectors is None:
        return
    if not isinstance(collectors, list):
        raise fail(evidence, f'"collectors" is a {type(collectors).__name__}, not a list')
    for i, coll in enumerate(collectors):
        if not isinstance(coll, dict) or not isinstance(coll.get("nodeid"), str):
            raise fail(evidence, f"collectors[{i}] has no nodeid")
        word = coll.get("outcome")
        if word not in (PASSED, FAILED, SKIPPED):
            raise fail(evidence, f"collectors[{i}]: unknown outcome {word!r}")
        if word == PASSED:
            continue
        outcome = ERROR if word == FAILED else SKIPPED
        counts[outcome] += 1
        record(outcomes, coll["nodeid"] or "<session>", outcome)


def _pytest_version(doc: dict[str, Any]) -> str | None:
    env = doc.get("environment")
    packages = env.get("Packages") if isinstance(env, dict) else None
    version = packages.get("pytest") if isinstance(packages, dict) else None
    return version if isinstance(version, str) else None


def _epoch(evidence: Evidence, value: Any) -> dt.datetime | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise fail(evidence, f"created is {value!r}, not a timestamp")
    try:
        return dt.datetime.fromtimestamp(value, dt.UTC)
    except (OverflowError, OSError, ValueError):
        raise fail(evidence, f"created is {value!r}, out of range") from None
