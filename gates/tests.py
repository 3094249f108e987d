"""The tests gate: pytest-json-report JSON and JUnit XML, judged against a TestsPolicy.

    detect(data) -> "pytest" | "junit" | None        what the bytes are, from their content
    parse(evidence) -> TestReport                    raises EvidenceError (one line) if malformed
    evaluate(evidence, policy, now=None) -> GateResult   never raises for bad evidence: refuses

Counting (the same in both formats, so a pytest run gives the same numbers either way):

* **passed** = passed + xpassed. A non-strict xpass is a pass for pytest (exit status 0) and
  pytest's JUnit writer records it as a plain passing testcase; a *strict* xpass is reported as
  failed by pytest itself, so it counts as failed.
* **skipped** = skipped + xfailed. An xfail is a known, expected failure: the test did not show
  the code works, so it is not a pass — but it does not fail the run either. pytest's JUnit writer
  records it as `<skipped type="pytest.xfail">`, which is where this choice comes from. It counts
  towards `max_skipped_ratio` and is excluded from the pass rate's denominator, like a skip.
* **failed**, **errors** (pytest "error": setup/teardown failures, collection errors).
* total = passed + failed + errors + skipped.

Per-test outcomes keep the finer word ("xfailed", "xpassed") so a table can say what happened;
a required test is satisfied by "passed" or "xpassed" only.

Test ids:

* pytest-json-report: the pytest node id, e.g. `tests/test_app.py::TestApi::test_get[v1]`.
  Failed collectors (import errors in a test module) count as errors under the collector's node
  id; skipped collectors (a module-level skip) count as skipped — pytest's JUnit writer lists both
  as testcases, so the counts agree.
* JUnit: `classname::name`, or `name` alone when the classname is empty (gotestsum's `TestMain`,
  pytest's collection errors). pytest's junitxml derives classname/name from the node id by
  turning the file path into a dotted module (`/` → `.`, `.py` dropped) and joining classes with
  dots: node id `tests/test_app.py::TestApi::test_get[v1]` becomes classname
  `tests.test_app.TestApi`, name `test_get[v1]`, i.e. id `tests.test_app.TestApi::test_get[v1]`.
  So that one policy works for both formats, a required entry written as a pytest node id is
  also tried in that dotted form against a JUnit report (see `junit_id_for_nodeid`).
* A JUnit id that occurs more than once (TestNG writes one testcase per invocation, pytest two
  when a test fails and then errors in teardown) is one id in `outcomes` with the worst outcome
  (error > failed > skipped > passed); the counts still count every testcase element, as the
  file's own `tests=` attribute does.

Required tests (`required`): each entry is a test id, matched exactly (a pytest node id is also
tried in its JUnit form, above), or, only when it contains `*` or `?`, a pattern: `*` is any run
of characters and `?` any one character. Everything else is literal, `[` and `]` included:
`tests/test_a.py::test_x[1]` is that one parametrisation (never the fnmatch character class that
would match `test_x1`), and `test_x[*]` is every parametrisation of `test_x`.

JSON is read by gates/common.load_json, like the scan gate's reports: UTF-8 (BOM or not) or
UTF-16 with a BOM; a key repeated in one object (a second `summary`/`tests` pair would decide
the verdict) and NaN are invalid JSON.

XML is parsed with defusedxml and refuses any DOCTYPE (no JUnit writer emits one): entity
bombs, external entities and external DTDs are refused before anything is expanded or fetched.

JUnit details: any nesting of `<testsuite>`/`<testsuites>`; `<failure>`, `<error>`, `<skipped>`
children (surefire's `<flakyFailure>`/`<rerunFailure>` are ignored: the final outcome is the
`<failure>`/`<error>` or its absence); googletest's `status="notrun"`/`result="suppressed"` is a
skip. A suite that declares more tests than it lists is inconsistent (refused); a suite that
declares more failures or errors than its testcases show (gotestsum puts a package's build error
only into the root's `errors=`) has the excess counted as failures/errors — fail closed — and a
note says so. Timestamps are read leniently (gates/common.parse_time: a naive one is UTC, TestNG
writes `2021-03-07T10:36:56 UTC`; Go's zero time means "unknown"); an unreadable timestamp is
simply unknown. A report dated more than 5 minutes in the future (its own time, else its
referrer's) refuses: whoever made it set that time.

pytest-json-report: the `tests` list when present (its counts must agree with `summary`), else
`summary` alone (`--json-report-summary`: counts but no per-test outcomes, so required tests are
missing). pytest's exit status is checked too: 2 (interrupted), 3 (internal error) and 4 (usage
error) mean the run did not complete, whatever the counts say.
"""

from __future__ import annotations

import datetime as dt
import io
import math
import re
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any, Literal
from xml.etree.ElementTree import ParseError

import defusedxml
import defusedxml.ElementTree as SafeET
from pydantic import Field, field_validator

from gates.base import (
    Evidence,
    EvidenceError,
    EvidenceRef,
    GateResult,
    ReportPolicy,
    check_size,
    guarded,
    table_row,
    utcnow,
)
from gates.common import (
    CLOCK_SKEW,
    JSONError,
    as_utc,
    capped_rows,
    duration_text,
    first_char,
    load_json,
    parse_time,
    plural,
)
from registry import mediatypes

ReportFormat = Literal["pytest", "junit"]

PASSED, FAILED, ERROR = "passed", "failed", "error"
SKIPPED, XFAILED, XPASSED = "skipped", "xfailed", "xpassed"
# What each per-test outcome counts as (see the module docstring).
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
# pytest-json-report outcome words beyond the six above. pytest-rerunfailures leaves "rerun" as a
# test's outcome only when its last attempt passed (any later failure overwrites it).
_PYTEST_ALIASES = {"rerun": PASSED}
_SUMMARY_NON_OUTCOMES = frozenset({"total", "collected", "deselected"})
_PYTEST_COMPLETED = frozenset({0, 1, 5})  # OK, tests failed, no tests collected
_PYTEST_EXIT_NAMES = {2: "interrupted", 3: "internal error", 4: "usage error"}

_SUITES = frozenset({"testsuite", "testsuites"})
_JUNIT_COUNT_ATTRS = ("tests", "failures", "errors", "skipped", "skip", "skips", "disabled")
_XSI_SCHEMA = "{http://www.w3.org/2001/XMLSchema-instance}noNamespaceSchemaLocation"

_OTHER_KINDS = {
    mediatypes.SCAN_REPORT_TRIVY: "a Trivy scan report",
    mediatypes.SCAN_REPORT_GRYPE: "a Grype scan report",
    mediatypes.SARIF: "a SARIF report",
    mediatypes.PROMOTION_RECORD: "a promotion record",
}
_KIND_OF_TYPE: dict[str, ReportFormat] = {
    mediatypes.TEST_REPORT_PYTEST: "pytest",
    mediatypes.TEST_REPORT_JUNIT: "junit",
}


class TestsPolicy(ReportPolicy):
    """What a test report must show for the gate to pass. Defaults: ≥ 1 test, no failures/errors."""

    __test__ = False  # not a pytest test class

    min_tests: int = Field(default=1, ge=0, description="zero tests is a failure by default")
    max_failed: int = Field(default=0, ge=0)
    max_errors: int = Field(default=0, ge=0)
    max_skipped_ratio: float | None = Field(
        default=None, ge=0, le=1, description="skipped (incl. xfailed) / total"
    )
    required: list[str] = Field(
        default_factory=list,
        description="test ids, or patterns with * and ?, that must be present and passed",
    )
    min_pass_rate: float | None = Field(
        default=None, ge=0, le=1, description="passed / (total - skipped)"
    )

    @field_validator(
        "min_tests", "max_failed", "max_errors", "max_skipped_ratio", "min_pass_rate", mode="before"
    )
    @classmethod
    def _no_bools(cls, value: Any) -> Any:
        # pydantic would read `max_failed: true` as 1; a policy file saying that is a mistake.
        if isinstance(value, bool):
            raise ValueError("must be a number, not true/false")
        return value

    @field_validator("required")
    @classmethod
    def _non_empty_ids(cls, value: list[str]) -> list[str]:
        if any(not item.strip() for item in value):
            raise ValueError("required test ids must be non-empty")
        return value


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


# --- detection -------------------------------------------------------------------------------


def _looks_like_pytest(doc: Any) -> bool:
    return (
        isinstance(doc, dict)
        and isinstance(doc.get("summary"), dict)
        and any(k in doc for k in ("tests", "exitcode", "created", "collectors"))
    )


def detect(data: bytes) -> ReportFormat | None:
    """Which test report `data` is, from its content: "pytest" (pytest-json-report JSON),
    "junit" (XML whose root is <testsuites> or <testsuite>), or None."""
    first = first_char(data)
    if first in ("{", "["):
        try:
            doc = load_json(data, unique_keys=False)  # `parse` names a repeated key
        except JSONError:
            return None
        return "pytest" if _looks_like_pytest(doc) else None
    if first == "<":
        try:
            events = SafeET.iterparse(io.BytesIO(data), events=("start",), forbid_dtd=True)
            for _event, elem in events:
                return "junit" if _local(elem.tag) in _SUITES else None
        except (ParseError, defusedxml.DefusedXmlException, ValueError):
            return None
    return None


# --- parsing -------------------------------------------------------------------------------------


def _one_line(text: str, limit: int = 300) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _fail(evidence: Evidence, message: str) -> EvidenceError:
    return EvidenceError(_one_line(f"{evidence.source}: {message}", 500))


def parse(evidence: Evidence) -> TestReport:
    """Read pytest-json-report JSON or JUnit XML; EvidenceError (one line) if malformed."""
    check_size(evidence)
    first = first_char(evidence.data)
    if first in ("{", "["):
        kind: ReportFormat = "pytest"
    elif first == "<":
        kind = "junit"
    else:
        raise _fail(evidence, "not a test report: expected pytest-json-report JSON or JUnit XML")
    if evidence.media_type in _OTHER_KINDS:
        what = _OTHER_KINDS[evidence.media_type]
        raise _fail(evidence, f"is {what} ({evidence.media_type}), not a test report")
    declared = _KIND_OF_TYPE.get(evidence.media_type or "")
    if declared is not None and declared != kind:
        raise _fail(
            evidence,
            f"attached as {evidence.media_type} but the content is "
            f"{'JSON' if kind == 'pytest' else 'XML'}",
        )
    if kind == "pytest":
        return _parse_pytest(evidence)
    return _parse_junit(evidence)


# pytest-json-report


def _count(evidence: Evidence, where: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise _fail(evidence, f"{where} is {value!r}, not a count")
    if value < 0:
        raise _fail(evidence, f"{where} is {value}, a negative count")
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
        raise _fail(evidence, f"{where}: outcome is {word!r}, not a string")
    outcome = _PYTEST_ALIASES.get(word, word)
    if outcome not in COUNTS_AS:
        raise _fail(evidence, f"{where}: unknown outcome {word!r}")
    return outcome


def _parse_pytest(evidence: Evidence) -> TestReport:
    try:
        doc = load_json(evidence.data)
    except JSONError as e:
        raise _fail(evidence, f"invalid JSON: {e}") from None
    if not _looks_like_pytest(doc):
        raise _fail(evidence, _json_shape_hint(doc))

    summary: dict[str, Any] = doc["summary"]
    declared: Counter[str] = Counter()
    total_declared: int | None = None
    for key, value in summary.items():
        n = _count(evidence, f"summary.{key}", value)
        if key == "total":
            total_declared = n
        elif key not in _SUMMARY_NON_OUTCOMES:
            declared[_pytest_outcome(evidence, f"summary.{key}", key)] += n
    if total_declared is not None and total_declared != sum(declared.values()):
        raise _fail(
            evidence,
            f"inconsistent totals: summary.total is {total_declared} but its outcomes add up "
            f"to {sum(declared.values())}",
        )

    outcomes: dict[str, str] = {}
    counts: Counter[str] = Counter()
    notes: list[str] = []
    tests = doc.get("tests")
    per_test = tests is not None
    if tests is not None:
        if not isinstance(tests, list):
            raise _fail(evidence, f'"tests" is a {type(tests).__name__}, not a list')
        listed: Counter[str] = Counter()
        for i, test in enumerate(tests):
            if not isinstance(test, dict) or not isinstance(test.get("nodeid"), str):
                raise _fail(evidence, f"tests[{i}] has no nodeid")
            where = f"tests[{i}] ({test['nodeid']})"
            outcome = _pytest_outcome(evidence, where, test.get("outcome"))
            listed[outcome] += 1
            _record(outcomes, test["nodeid"], outcome)
        for outcome in set(listed) | set(declared):
            if listed[outcome] != declared[outcome]:
                raise _fail(
                    evidence,
                    f"inconsistent totals: summary says {declared[outcome]} {outcome}, "
                    f"the tests list has {listed[outcome]}",
                )
        counts.update(listed)
    else:
        counts.update(declared)
        notes.append("summary-only report: no per-test outcomes")

    collectors = doc.get("collectors")
    if collectors is not None:
        if not isinstance(collectors, list):
            raise _fail(evidence, f'"collectors" is a {type(collectors).__name__}, not a list')
        for i, coll in enumerate(collectors):
            if not isinstance(coll, dict) or not isinstance(coll.get("nodeid"), str):
                raise _fail(evidence, f"collectors[{i}] has no nodeid")
            word = coll.get("outcome")
            if word not in (PASSED, FAILED, SKIPPED):
                raise _fail(evidence, f"collectors[{i}]: unknown outcome {word!r}")
            if word == PASSED:
                continue
            outcome = ERROR if word == FAILED else SKIPPED
            counts[outcome] += 1
            _record(outcomes, coll["nodeid"] or "<session>", outcome)

    exitcode = doc.get("exitcode")
    if exitcode is not None and (isinstance(exitcode, bool) or not isinstance(exitcode, int)):
        raise _fail(evidence, f"exitcode is {exitcode!r}, not an integer")

    return TestReport(
        format="pytest",
        **_tally(counts),
        outcomes=outcomes,
        tool="pytest",
        tool_version=_pytest_version(doc),
        created=_epoch(evidence, doc.get("created")),
        exitcode=exitcode,
        per_test=per_test,
        notes=tuple(notes),
    )


def _pytest_version(doc: dict[str, Any]) -> str | None:
    env = doc.get("environment")
    packages = env.get("Packages") if isinstance(env, dict) else None
    version = packages.get("pytest") if isinstance(packages, dict) else None
    return version if isinstance(version, str) else None


def _epoch(evidence: Evidence, value: Any) -> dt.datetime | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise _fail(evidence, f"created is {value!r}, not a timestamp")
    try:
        return dt.datetime.fromtimestamp(value, dt.UTC)
    except (OverflowError, OSError, ValueError):
        raise _fail(evidence, f"created is {value!r}, out of range") from None


def _tally(counts: Counter[str]) -> dict[str, int]:
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


def _record(outcomes: dict[str, str], test_id: str, outcome: str) -> None:
    """Keep the worst outcome of an id that occurs more than once."""
    before = outcomes.get(test_id)
    if before is None or _SEVERITY[outcome] > _SEVERITY[before]:
        outcomes[test_id] = outcome


# JUnit XML


def _local(tag: Any) -> str:
    if not isinstance(tag, str):  # comments / processing instructions, if ever reported
        return ""
    return tag.rpartition("}")[2] if tag[:1] == "{" else tag


@dataclass(slots=True)
class _Suite:
    label: str
    declared: dict[str, int]  # its count attributes (tests=, failures=, errors=, …)
    tests: int = 0  # testcases listed inside (nested suites included)
    failed: int = 0  # failures inside, each nested suite counted at max(declared, listed)
    errors: int = 0

    def add(self, tests: int, failed: int, errors: int) -> None:
        self.tests += tests
        self.failed += failed
        self.errors += errors

    def close(self, evidence: Evidence) -> tuple[int, int, str | None]:
        """Its failures and errors, each the larger of declared and listed, and a note when
        the declared ones are more; refuses a suite that declares more tests than it lists."""
        tests = self.declared.get("tests")
        if tests is not None and tests > self.tests:
            raise _fail(
                evidence,
                f"inconsistent totals: {self.label} declares {tests} tests but lists {self.tests}",
            )
        failed = max(self.failed, self.declared.get("failures", 0))
        errors = max(self.errors, self.declared.get("errors", 0))
        excess = [(failed - self.failed, "failure"), (errors - self.errors, "error")]
        unlisted = " and ".join(plural(n, word) for n, word in excess if n)
        note = f"{self.label} declares {unlisted} that no testcase shows: counted (fail closed)"
        return failed, errors, note if unlisted else None


def _junit_counts(evidence: Evidence, label: str, attrs: Mapping[str, str]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for name in _JUNIT_COUNT_ATTRS:
        raw = attrs.get(name)
        if raw is None:
            continue
        text = raw.strip()
        if not re.fullmatch(r"[+-]?\d{1,18}", text):
            raise _fail(evidence, f"{label} has {name}={raw!r}, not a count")
        value = int(text)
        if value < 0:
            raise _fail(evidence, f"{label} has {name}={value}, a negative count")
        counts[name] = value
    return counts


def _junit_time(value: str | None) -> dt.datetime | None:
    """A suite's timestamp; None when absent, unreadable, or Go's zero time (unknown)."""
    try:
        when = parse_time(value) if value else None
    except ValueError:
        return None
    return None if when is None or when.year <= 1 else when


def junit_id_for_nodeid(nodeid: str) -> str:
    """The JUnit id (`classname::name`) pytest's junitxml writes for a pytest node id."""
    path, bracket, params = nodeid.partition("[")
    names = path.split("::")
    names[0] = re.sub(r"\.py$", "", names[0].replace("/", "."))
    names[-1] += bracket + params
    classname, name = ".".join(names[:-1]), names[-1]
    return f"{classname}::{name}" if classname else name


def _testcase_outcome(elem: Any) -> str:
    outcome = PASSED
    for child in elem:
        tag = _local(child.tag)
        if tag == "error":
            return ERROR
        if tag == "failure":
            outcome = FAILED
        elif tag == "skipped" and outcome == PASSED:
            outcome = XFAILED if child.get("type") == "pytest.xfail" else SKIPPED
    if outcome == PASSED and (
        elem.get("status") in ("notrun", "skipped", "disabled")
        or elem.get("result") in ("skipped", "suppressed")
    ):
        outcome = SKIPPED  # googletest
    return outcome


def _defused_reason(e: defusedxml.DefusedXmlException) -> str:
    if isinstance(e, defusedxml.DTDForbidden):
        what = "has a DOCTYPE" + (f" referencing {e.sysid!r}" if e.sysid else "")
    elif isinstance(e, defusedxml.EntitiesForbidden):
        what = f"declares the entity {e.name!r}"
    elif isinstance(e, defusedxml.ExternalReferenceForbidden):
        what = f"references the external resource {e.sysid!r}"
    else:
        what = type(e).__name__
    return (
        f"it {what}; DTDs, entities and external references are not allowed in a test report "
        "(entity-expansion bombs, external-entity reads)"
    )


def _parse_junit(evidence: Evidence) -> TestReport:
    stack: list[_Suite] = []
    outcomes: dict[str, str] = {}
    counts: Counter[str] = Counter()
    notes: list[str] = []
    tool: str | None = None
    version: str | None = None
    created: dt.datetime | None = None
    seen_root = False
    if b"org.testng." in evidence.data[:4096]:
        tool = "testng"
    try:
        events = SafeET.iterparse(
            io.BytesIO(evidence.data),
            events=("start", "end"),
            forbid_dtd=True,  # no JUnit writer emits a DOCTYPE; refusing it stops XXE/bombs early
            forbid_entities=True,
            forbid_external=True,
        )
        for event, elem in events:
            tag = _local(elem.tag)
            if event == "start":
                if not seen_root:
                    seen_root = True
                    if tag not in _SUITES:
                        raise _fail(
                            evidence,
                            f"XML root is <{tag}>, not <testsuites> or <testsuite>: "
                            "not a JUnit report",
                        )
                if tag in _SUITES:
                    name = elem.get("name")
                    label = f'<{tag} name="{_one_line(name, 80)}">' if name else f"<{tag}>"
                    stack.append(_Suite(label, _junit_counts(evidence, label, elem.attrib)))
                    if created is None:
                        created = _junit_time(elem.get("timestamp"))
                    if tool is None:
                        if name == "pytest" or (tag == "testsuites" and name == "pytest tests"):
                            tool = "pytest"
                        elif "surefire" in (elem.get(_XSI_SCHEMA) or ""):
                            tool = "maven-surefire"
                continue
            # event == "end"
            if tag == "testcase":
                name = elem.get("name")
                if name is None:
                    raise _fail(evidence, f"a testcase in {stack[-1].label} has no name")
                classname = elem.get("classname") or ""
                test_id = f"{classname}::{name}" if classname else name
                outcome = _testcase_outcome(elem)
                counts[outcome] += 1
                _record(outcomes, test_id, outcome)
                stack[-1].add(1, outcome == FAILED, outcome == ERROR)
                elem.clear()
            elif tag == "property" and tool is None and elem.get("name") == "go.version":
                tool, version = "go", elem.get("value")
            elif tag in _SUITES:
                suite = stack.pop()
                failed, errors, note = suite.close(evidence)
                if note:
                    notes.append(note)
                if stack:
                    stack[-1].add(suite.tests, failed, errors)
                else:  # the root: what it declares but never lists counts too
                    counts[FAILED], counts[ERROR] = failed, errors
                elem.clear()
    except EvidenceError:
        raise
    except defusedxml.DefusedXmlException as e:
        raise _fail(evidence, f"refused XML: {_defused_reason(e)}") from None
    except (ParseError, ValueError, RecursionError) as e:
        raise _fail(evidence, f"invalid XML: {e}") from None

    return TestReport(
        format="junit",
        **_tally(counts),
        outcomes=outcomes,
        tool=tool,
        tool_version=version,
        created=created,
        notes=tuple(notes),
    )


# --- evaluation ----------------------------------------------------------------------------------


def _rate(num: int, den: int) -> str:
    return f"{num / den:.4g} ({num}/{den})"


def _exact(x: float) -> Fraction:
    return Fraction(repr(x))  # 0.1 as 1/10, not as the binary float just above it


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


def _pattern(entry: str) -> re.Pattern[str] | None:
    """A required entry with `*` or `?` as a regex (`*` any run, `?` one character; the rest,
    brackets included, literal); None for a plain test id."""
    if "*" not in entry and "?" not in entry:
        return None
    return re.compile(re.escape(entry).replace(r"\*", ".*").replace(r"\?", "."), re.DOTALL)


def _required(report: TestReport, entry: str) -> _Check:
    candidates = [entry]
    if report.format == "junit" and ".py::" in entry:
        candidates.append(junit_id_for_nodeid(entry))
    matched: list[str] = []
    for candidate in candidates:
        if candidate in report.outcomes:
            matched = [candidate]
            break
        rx = _pattern(candidate)
        matched = [i for i in report.outcomes if rx.fullmatch(i)] if rx else []
        if matched:
            break
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
        ratio = Fraction(r.skipped, r.total) if r.total else Fraction(0)
        checks.append(
            _Check(
                "skipped ratio",
                _rate(r.skipped, r.total) if r.total else "0 (no tests)",
                f"<= {p.max_skipped_ratio:g}",
                ratio <= _exact(p.max_skipped_ratio),
                f"skipped ratio {float(ratio):.4g} (max {p.max_skipped_ratio:g})",
            )
        )
    if p.min_pass_rate is not None:
        ran = r.total - r.skipped
        ok = ran > 0 and Fraction(r.passed, ran) >= _exact(p.min_pass_rate)
        checks.append(
            _Check(
                "pass rate",
                _rate(r.passed, ran) if ran else "n/a (no test ran)",
                f">= {p.min_pass_rate:g}",
                ok,
                f"pass rate {r.passed / ran:.4g} (min {p.min_pass_rate:g})"
                if ran
                else f"pass rate n/a: no test ran (min {p.min_pass_rate:g})",
            )
        )
    if r.exitcode is not None:
        name = _PYTEST_EXIT_NAMES.get(r.exitcode)
        actual = f"{r.exitcode} ({name})" if name else str(r.exitcode)
        checks.append(
            _Check(
                "exit status",
                actual,
                "run completed (0, 1 or 5)",
                r.exitcode in _PYTEST_COMPLETED,
                f"pytest exit status {actual}: the run did not complete",
            )
        )
    checks.extend(_required(r, entry) for entry in p.required)
    return checks


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


def judge(
    report: TestReport, evidence: Evidence, policy: TestsPolicy, now: dt.datetime | None = None
) -> GateResult:
    """The verdict on an already parsed report (what `evaluate` does after `parse`)."""
    checks = _checks(report, policy)
    if future := _not_in_the_future(report, evidence, now or utcnow()):
        checks.append(future)
    failing = [c for c in checks if not c.ok]
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
    return GateResult(
        gate="tests",
        passed=not failing,
        summary=_summary(report, failing),
        rows=rows,
        evidence=[EvidenceRef.of(evidence)],
        evaluated_at=now or utcnow(),
    )


def evaluate(evidence: Evidence, policy: TestsPolicy, now: dt.datetime | None = None) -> GateResult:
    """Parse and judge. Malformed evidence refuses with `error` set; this never raises for it."""
    return guarded("tests", evidence, lambda: judge(parse(evidence), evidence, policy, now), now)
