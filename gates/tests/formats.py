"""Which test report the bytes are (from their content), and `parse`.

The formats and the media types that promise each: docs/formats.md.
"""

from __future__ import annotations

from gates.base import Evidence, check_size
from gates.common import JSONError, first_char, load_json
from gates.tests.junit import looks_like_junit, parse_junit
from gates.tests.model import ReportFormat, TestReport, fail
from gates.tests.pytest_json import looks_like_pytest, parse_pytest
from registry import mediatypes

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


def detect(data: bytes) -> ReportFormat | None:
    """Which test report `data` is, from its content: "pytest" (pytest-json-report JSON),
    "junit" (XML whose root is <testsuites> or <testsuite>), or None."""
    first = first_char(data)
    if first in ("{", "["):
        try:
            doc = load_json(data, unique_keys=False)  # `parse` names a repeated key
        except JSONError:
            return None
        return "pytest" if looks_like_pytest(doc) else None
    if first == "<":
        return "junit" if looks_like_junit(data) else None
    return None


def parse(evidence: Evidence) -> TestReport:
    """Read pytest-json-report JSON or JUnit XML; EvidenceError (one line) if malformed."""
    check_size(evidence)
    first = first_char(evidence.data)
    if first in ("{", "["):
        kind: ReportFormat = "pytest"
    elif first == "<":
        kind = "junit"
    else:
        raise fail(evidence, "not a test report: expected pytest-json-report JSON or JUnit XML")
    _check_media_type(evidence, kind)
    if kind == "pytest":
        return parse_pytest(evidence)
    return parse_junit(evidence)


def _check_media_type(evidence: Evidence, kind: ReportFormat) -> None:
    """The artifact type, when there is one, must be a test report of the content's syntax."""
    if evidence.media_type in _OTHER_KINDS:
        what = _OTHER_KINDS[evidence.media_type]
        raise fail(evidence, f"is {what} ({evidence.media_type}), not a test report")
    declared = _KIND_OF_TYPE.get(evidence.media_type or "")
    if declared is not None and declared != kind:
        raise fail(
            evidence,
            f"attached as {evidence.media_type} but the content is "
            f"{'JSON' if kind == 'pytest' else 'XML'}",
        )
