"""The scan gate: vulnerability reports from Trivy, Grype or any SARIF 2.1.0 producer.

    report = parse(evidence)                       # EvidenceError on anything malformed
    result = evaluate(evidence, ScanPolicy(fail_on="CRITICAL"), now=...)
    result = judge(report, evidence, policy, now)  # the verdict on an already parsed report

One module per format (trivy, grype, sarif) parses into the shared model (model: Severity,
Finding, ScanReport); formats detects which one and dispatches; policy holds ScanPolicy;
verdict judges; render writes the rows and the summary. What each format's fields mean, which
of them bind a report to an image, what counts as a scan and the evaluation order:
docs/formats.md.
"""

from gates.scan.formats import MEDIA_TYPES, detect, parse
from gates.scan.model import Finding, Format, ScanReport, Severity, SeverityName
from gates.scan.policy import AllowEntry, ScanPolicy
from gates.scan.render import SUMMARY_FINDINGS
from gates.scan.sarif import cvss_severity
from gates.scan.verdict import evaluate, judge

__all__ = [
    "MEDIA_TYPES",
    "SUMMARY_FINDINGS",
    "AllowEntry",
    "Finding",
    "Format",
    "ScanPolicy",
    "ScanReport",
    "Severity",
    "SeverityName",
    "cvss_severity",
    "detect",
    "evaluate",
    "judge",
    "parse",
]
