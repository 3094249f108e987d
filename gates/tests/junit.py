"""JUnit XML into the test report model, streamed with defusedxml (no DOCTYPE, no entities).

How testcase ids are formed (and pytest's junitxml naming that `junit_id_for_nodeid` mirrors),
which children and attributes decide an outcome, and how declared and listed counts are
reconciled: docs/formats.md, "JUnit XML".
"""

from __future__ import annotations

import datetime as dt
import io
import re
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from xml.etree.ElementTree import ParseError

import defusedxml
import defusedxml.ElementTree as SafeET

from gates.base import Evidence, EvidenceError
from gates.common import parse_time, plural
from gates.tests.model import (
    ERROR,
    FAILED,
    PASSED,
    SKIPPED,
    XFAILED,
    TestReport,
    fail,
    one_line,
    record,
    tally,
)

SUITES = frozenset({"testsuite", "testsuites"})
_JUNIT_COUNT_ATTRS = ("tests", "failures", "errors", "skipped", "skip", "skips", "disabled")
_XSI_SCHEMA = "{http://www.w3.org/2001/XMLSchema-instance}noNamespaceSchemaLocation"


def local(tag: Any) -> str:
    """An element's tag without its namespace."""
    if not isinstance(tag, str):  # comments / processing instructions, if ever reported
        return ""
    return tag.rpartition("}")[2] if tag[:1] == "{" else tag


def looks_like_junit(data: bytes) -> bool:
    """Whether the XML's root is <testsuites> or <testsuite> (False if it is not XML)."""
    try:
        events = SafeET.iterparse(io.BytesIO(data), events=("start",), forbid_dtd=True)
        for _event, elem in events:
            return local(elem.tag) in SUITES
    except (ParseError, defusedxml.DefusedXmlException, ValueError):
        return False
    return False


def junit_id_for_nodeid(nodeid: str) -> str:
    """The JUnit id (`classname::name`) pytest's junitxml writes for a pytest node id."""
    path, bracket, params = nodeid.partition("[")
    names = path.split("::")
    names[0] = re.sub(r"\.py$", "", names[0].replace("/", "."))
    names[-1] += bracket + params
    classname, name = ".".join(names[:-1]), names[-1]
    return f"{classname}::{name}" if classname else name


def parse_junit(evidence: Evidence) -> TestReport:
    reader = _Reader(evidence)
    try:
        events = SafeET.iterparse(
            io.BytesIO(evidence.data),
            events=("start", "end"),
            forbid_dtd=True,  # no JUnit writer emits a DOCTYPE; refusing it stops XXE/bombs early
            forbid_entities=True,
            forbid_external=True,
        )
        for event, elem in events:
            if event == "start":
                reader.start(local(elem.tag), elem)
            else:
                reader.end(local(elem.tag), elem)
    except EvidenceError:
        raise
    except defusedxml.DefusedXmlException as e:
        raise fail(evidence, f"refused XML: {_defused_reason(e)}") from None
    except (ParseError, ValueError, RecursionError) as e:
        raise fail(evidence, f"invalid XML: {e}") from None
    return reader.report()


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
            raise fail(
                evidence,
                f"inconsistent totals: {self.label} declares {tests} tests but lists {self.tests}",
            )
        failed = max(self.failed, self.declared.get("failures", 0))
        errors = max(self.errors, self.declared.get("errors", 0))
        excess = [(failed - self.failed, "failure"), (errors - self.errors, "error")]
        unlisted = " and ".join(plural(n, word) for n, word in excess if n)
        note = f"{self.label} declares {unlisted} that no testcase shows: counted (fail closed)"
        return failed, errors, note if unlisted else None


class _Reader:
    """The state of one streamed JUnit document: open suites, outcomes, counts, what it says
    about itself. `start` and `end` take each element's events in document order."""

    def __init__(self, evidence: Evidence) -> None:
        self.evidence = evidence
        self.stack: list[_Suite] = []
        self.outcomes: dict[str, str] = {}
        self.counts: Counter[str] = Counter()
        self.notes: list[str] = []
        self.tool: str | None = "testng" if b"org.testng." in evidence.data[:4096] else None
        self.version: str | None = None
        self.created: dt.datetime | None = None
        self.seen_root = False

    def start(self, tag: str, elem: Any) -> None:
        if not self.seen_root:
            self.seen_root = True
            if tag not in SUITES:
                raise fail(
                    self.evidence,
                    f"XML root is <{tag}>, not <testsuites> or <testsuite>: not a JUnit report",
                )
        if tag in SUITES:
            self._open_suite(tag, elem)

    def end(self, tag: str, elem: Any) -> None:
        if tag == "testcase":
            self._testcase(elem)
            elem.clear()
        elif tag == "property" and self.tool is None and elem.get("name") == "go.version":
            self.tool, self.version = "go", elem.get("value")
        elif tag in SUITES:
            self._close_suite()
            elem.clear()

    def report(self) -> TestReport:
        return TestReport(
            format="junit",
            **tally(self.counts),
            outcomes=self.outcomes,
            tool=self.tool,
            tool_version=self.version,
            created=self.created,
            notes=tuple(self.notes),
        )

    def _open_suite(self, tag: str, elem: Any) -> None:
        name = elem.get("name")
        label = f'<{tag} name="{one_line(name, 80)}">' if name else f"<{tag}>"
        self.stack.append(_Suite(label, _junit_counts(self.evidence, label, elem.attrib)))
        if self.created is None:
            self.created = _junit_time(elem.get("timestamp"))
        if self.tool is None:
            if name == "pytest" or (tag == "testsuites" and name == "pytest tests"):
                self.tool = "pytest"
            elif "surefire" in (elem.get(_XSI_SCHEMA) or ""):
                self.tool = "maven-surefire"

    def _testcase(self, elem: Any) -> None:
        name = elem.get("name")
        if name is None:
            raise fail(self.evidence, f"a testcase in {self.stack[-1].label} has no name")
        classname = elem.get("classname") or ""
        test_id = f"{classname}::{name}" if classname else name
        outcome = _testcase_outcome(elem)
        self.counts[outcome] += 1
        record(self.outcomes, test_id, outcome)
        self.stack[-1].add(1, outcome == FAILED, outcome == ERROR)

    def _close_suite(self) -> None:
        suite = self.stack.pop()
        failed, errors, note = suite.close(self.evidence)
        if note:
            self.notes.append(note)
        if self.stack:
            self.stack[-1].add(suite.tests, failed, errors)
        else:  # the root: what it declares but never lists counts too
            self.counts[FAILED], self.counts[ERROR] = failed, errors


def _junit_counts(evidence: Evidence, label: str, attrs: Mapping[str, str]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for name in _JUNIT_COUNT_ATTRS:
        raw = attrs.get(name)
        if raw is None:
            continue
        text = raw.strip()
        if not re.fullmatch(r"[+-]?\d{1,18}", text):
            raise fail(evidence, f"{label} has {name}={raw!r}, not a count")
        value = int(text)
        if value < 0:
            raise fail(evidence, f"{label} has {name}={value}, a negative count")
        counts[name] = value
    return counts


def _junit_time(value: str | None) -> dt.datetime | None:
    """A suite's timestamp; None when absent, unreadable, or Go's zero time (unknown)."""
    try:
        when = parse_time(value) if value else None
    except ValueError:
        return None
    return None if when is None or when.year <= 1 else when


def _testcase_outcome(elem: Any) -> str:
    outcome = PASSED
    for child in elem:
        tag = local(child.tag)
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
