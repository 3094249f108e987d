"""The tests gate: pytest-json-report JSON and JUnit XML, judged against a TestsPolicy.

    detect(data) -> "pytest" | "junit" | None        what the bytes are, from their content
    parse(evidence) -> TestReport                    raises EvidenceError (one line) if malformed
    judge(report, evidence, policy, now=None) -> GateResult   the verdict on a parsed report
    evaluate(evidence, policy, now=None) -> GateResult   never raises for bad evidence: refuses

One module per format (pytest_json, junit) parses into the shared model (model: outcomes,
TestReport); formats detects which one and dispatches; policy holds TestsPolicy; verdict
judges and renders. How outcomes are counted, how test ids are formed in each format, how
`required` entries match, and how XML and JSON are read safely: docs/formats.md.
"""

from gates.tests.formats import detect, parse
from gates.tests.junit import junit_id_for_nodeid
from gates.tests.model import (
    COUNTS_AS,
    ERROR,
    FAILED,
    PASSED,
    PASSING,
    SKIPPED,
    XFAILED,
    XPASSED,
    ReportFormat,
    TestReport,
)
from gates.tests.policy import TestsPolicy
from gates.tests.verdict import evaluate, judge

__all__ = [
    "COUNTS_AS",
    "ERROR",
    "FAILED",
    "PASSED",
    "PASSING",
    "SKIPPED",
    "XFAILED",
    "XPASSED",
    "ReportFormat",
    "TestReport",
    "TestsPolicy",
    "detect",
    "evaluate",
    "judge",
    "junit_id_for_nodeid",
    "parse",
]
