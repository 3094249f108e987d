"""A scan refusal's one-line summary names the findings that caused it (real reports only).

Facts asserted here were checked in the files (see tests/fixtures/SOURCES.md and
airlock/demo_data/SOURCES.md): the demo's scan-critical.trivy.json is alpine-39 (CVE-2019-14697 in
musl and musl-utils 1.1.20-r4, CRITICAL, fixed in 1.1.20-r5; 4 MEDIUM CVE-2019-1549/1551 in
libcrypto1.1/libssl1.1); photon-30 has CVE-2019-5481 CRITICAL in curl and curl-libs and
CVE-2019-18276 HIGH in bash; Grype's keycloak report has 6 LOW CVE-2020-12413 (nspr, nss…), all
without a fix; Grype's chainguard ruby has 3 HIGH, CVE-2023-28755 in uri unfixed.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from pathlib import Path
from typing import Any

from gates.base import Evidence, GateResult
from gates.scan import AllowEntry, ScanPolicy, evaluate

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "tests" / "fixtures"
DEMO_CRITICAL = ROOT / "airlock" / "demo_data" / "scan-critical.trivy.json"
NOW = dt.datetime(2021, 9, 1, tzinfo=dt.UTC)

MUSL = "CVE-2019-14697 musl 1.1.20-r4 CRITICAL (fixed in 1.1.20-r5)"
MUSL_UTILS = "CVE-2019-14697 musl-utils 1.1.20-r4 CRITICAL (fixed in 1.1.20-r5)"


def fixture(name: str, **kw: Any) -> Evidence:
    return Evidence(data=(FIXTURES / name).read_bytes(), source=name, **kw)


def as_evidence(doc: Any) -> Evidence:
    return Evidence(data=json.dumps(doc).encode(), source="report.json")


def named(result: GateResult) -> str:
    """The part of a refusal's summary after the counts and reasons: the findings it names."""
    assert not result.passed
    _head, sep, tail = result.summary.partition("): ")
    assert sep, f"no findings named in {result.summary!r}"
    return tail


# -- the demo's report, every format ----------------------------------------------------------


def test_demo_report_refusal_names_its_critical_findings() -> None:
    ev = Evidence(data=DEMO_CRITICAL.read_bytes(), source="scan-critical.trivy.json")
    result = evaluate(ev)
    assert result.summary == f"refused: 2 CRITICAL, 4 MEDIUM (fail at HIGH): {MUSL}, {MUSL_UTILS}"
    # the MEDIUM findings did not cause the refusal, so they are not named
    assert "CVE-2019-1549" not in result.summary and "libssl" not in result.summary
    # the table is what it was: the two blocking findings, with their facts
    blocking = [r for r in result.rows if r["status"] == "blocks"]
    assert [(r["finding"], r["package"], r["installed"], r["fixed"]) for r in blocking] == [
        ("CVE-2019-14697", "musl", "1.1.20-r4", "1.1.20-r5"),
        ("CVE-2019-14697", "musl-utils", "1.1.20-r4", "1.1.20-r5"),
    ]


def test_trivy_most_severe_first() -> None:
    result = evaluate(fixture("trivy/photon-30.json"), ScanPolicy(fail_on="HIGH"))
    assert named(result) == (
        "CVE-2019-5481 curl 7.61.1-4.ph3 CRITICAL (fixed in 7.61.1-5.ph3), "
        "CVE-2019-5481 curl-libs 7.61.1-4.ph3 CRITICAL (fixed in 7.61.1-5.ph3), "
        "CVE-2019-18276 bash 4.4.18-1.ph3 HIGH (fixed in 4.4.18-2.ph3)"
    )
    critical_only = evaluate(fixture("trivy/photon-30.json"), ScanPolicy(fail_on="CRITICAL"))
    assert critical_only.summary.startswith("refused: 2 CRITICAL, 1 HIGH (fail at CRITICAL): ")
    assert "CVE-2019-5481 curl " in critical_only.summary
    assert "bash" not in critical_only.summary  # HIGH is below fail_on: it caused nothing


def test_cap_at_five_with_and_n_more_most_severe_first() -> None:
    result = evaluate(fixture("trivy/alpine-39.json"), ScanPolicy(fail_on="MEDIUM"))
    assert result.summary.startswith("refused: 2 CRITICAL, 4 MEDIUM (fail at MEDIUM): ")
    text = named(result)
    assert text.startswith(f"{MUSL}, {MUSL_UTILS}, CVE-2019-1549 libcrypto1.1 1.1.1b-r1 MEDIUM")
    assert text.endswith(" and 1 more")
    assert len(re.findall(r"CVE-\d{4}-\d+ ", text)) == 5


def test_grype_no_fix_and_cap() -> None:
    result = evaluate(fixture("grype/keycloak-0.66.0.json"), ScanPolicy(fail_on="LOW"))
    assert result.summary.startswith("refused: 6 LOW (fail at LOW): ")
    assert named(result) == (
        "CVE-2020-12413 nspr 4.34.0-17.el9_1 LOW (no fix), "
        "CVE-2020-12413 nss 3.79.0-17.el9_1 LOW (no fix), "
        "CVE-2020-12413 nss-softokn 3.79.0-17.el9_1 LOW (no fix), "
        "CVE-2020-12413 nss-softokn-freebl 3.79.0-17.el9_1 LOW (no fix), "
        "CVE-2020-12413 nss-sysinit 3.79.0-17.el9_1 LOW (no fix) and 1 more"
    )


def test_grype_fixed_and_unfixed_side_by_side() -> None:
    result = evaluate(fixture("grype/chainguard-ruby-0.61.1.json"))
    assert named(result) == (
        "CVE-2023-28755 ruby-3.0 3.0.4-r1 HIGH (fixed in 3.0.6-r0), "
        "CVE-2023-28755 uri 0.10.1 HIGH (no fix), "
        "GHSA-hv5j-3h9f-99c2 uri 0.10.1 HIGH (fixed in 0.10.2)"
    )


def test_ignored_unfixed_and_allow_listed_findings_are_not_named() -> None:
    ruby = fixture("grype/chainguard-ruby-0.61.1.json")
    result = evaluate(ruby, ScanPolicy(ignore_unfixed=True))
    assert result.summary.startswith("refused: 2 HIGH (fail at HIGH; 1 unfixed ignored): ")
    assert "no fix" not in result.summary
    assert (
        "CVE-2023-28755 ruby-3.0" in result.summary and "GHSA-hv5j-3h9f-99c2 uri" in result.summary
    )

    entry = AllowEntry(
        id="CVE-2019-14697", reason="not reachable", expires=dt.date(2022, 1, 1), package="musl"
    )
    result = evaluate(fixture("trivy/alpine-39.json"), ScanPolicy(allow=[entry]), now=NOW)
    assert result.summary == (
        f"refused: 1 CRITICAL, 4 MEDIUM (fail at HIGH; 1 allow-listed): {MUSL_UTILS}"
    )


def test_sarif_from_grype() -> None:
    result = evaluate(fixture("sarif/grype-presenter-image.sarif"))
    assert result.summary == (
        "refused: 2 HIGH (fail at HIGH): "
        "CVE-1999-0001 package-1 1.1.1 HIGH (fixed in 1.2.1,2.1.3,3.4.0), "
        "CVE-1999-0002 package-2 2.2.2 HIGH (no fix)"
    )


def test_sarif_from_trivy() -> None:
    result = evaluate(fixture("sarif/trivy-alpine-310.sarif"), ScanPolicy(fail_on="MEDIUM"))
    assert result.summary == (
        "refused: 4 MEDIUM (fail at MEDIUM): "
        "CVE-2019-1549 libcrypto1.1 1.1.1c-r0 MEDIUM (fixed in 1.1.1d-r0), "
        "CVE-2019-1549 libssl1.1 1.1.1c-r0 MEDIUM (fixed in 1.1.1d-r0), "
        "CVE-2019-1551 libcrypto1.1 1.1.1c-r0 MEDIUM (fixed in 1.1.1d-r2), "
        "CVE-2019-1551 libssl1.1 1.1.1c-r0 MEDIUM (fixed in 1.1.1d-r2)"
    )


def test_sarif_without_fix_facts_says_fix_unknown() -> None:
    # A SARIF result that says nothing about a fix is not "no fix" (see ignore_unfixed).
    doc = json.loads((FIXTURES / "sarif/trivy-alpine-310.sarif").read_bytes())
    for res in doc["runs"][0]["results"]:
        res["message"]["text"] = re.sub(r"(?m)^Fixed Version:.*\n?", "", res["message"]["text"])
    result = evaluate(as_evidence(doc), ScanPolicy(fail_on="MEDIUM"))
    assert "CVE-2019-1549 libcrypto1.1 1.1.1c-r0 MEDIUM (fix unknown)" in result.summary
    assert "no fix" not in result.summary


def test_max_counts_refusal_names_the_findings_over_the_limit() -> None:
    result = evaluate(
        fixture("trivy/alpine-310-registry.json"), ScanPolicy(max_counts={"MEDIUM": 3})
    )
    assert result.summary.startswith("refused: 4 MEDIUM (max 3 MEDIUM): ")
    assert named(result).startswith(
        "CVE-2019-1549 libcrypto1.1 1.1.1c-r0 MEDIUM (fixed in 1.1.1d-r0)"
    )
    photon = fixture("trivy/photon-30.json")
    result = evaluate(photon, ScanPolicy(fail_on="never", max_counts={"CRITICAL": 1, "HIGH": 5}))
    assert result.summary.startswith("refused: 2 CRITICAL, 1 HIGH (max 1 CRITICAL): ")
    assert "curl-libs" in result.summary
    assert "bash" not in result.summary  # HIGH is within its limit


def test_trivy_secret_is_named_as_a_secret() -> None:
    doc = json.loads((FIXTURES / "trivy/sl-micro-rancher5.4-no-vulns.json").read_bytes())
    target = doc["Results"][0]["Target"]
    doc["Results"][0]["Secrets"] = [
        {"RuleID": "aws-access-key-id", "Category": "AWS", "Severity": "CRITICAL", "Title": "AWS"}
    ]
    result = evaluate(as_evidence(doc))
    assert result.summary.startswith("refused: 1 CRITICAL (fail at HIGH): aws-access-key-id ")
    assert result.summary.endswith(" CRITICAL (secret)")
    assert target[:20] in result.summary


# -- what does not change ---------------------------------------------------------------------


def test_passing_summaries_are_unchanged() -> None:
    assert (
        evaluate(fixture("trivy/alpine-310-registry.json")).summary
        == "passed: 0 at or above HIGH (4 MEDIUM)"
    )
    ruby = evaluate(fixture("grype/chainguard-ruby-0.61.1.json"), ScanPolicy(fail_on="CRITICAL"))
    assert ruby.summary == "passed: 0 at or above CRITICAL (3 HIGH)"
    never = ScanPolicy(fail_on="never", max_counts={"CRITICAL": 2})
    assert evaluate(fixture("trivy/photon-30.json"), never).summary == "passed: 2 CRITICAL, 1 HIGH"
    clean = evaluate(fixture("sarif/trivy-alpine-310.sarif"))
    assert clean.summary == "passed: 0 at or above HIGH (4 MEDIUM)"


def test_refusals_not_caused_by_findings_name_none() -> None:
    other = "sha256:" + "0" * 64
    result = evaluate(fixture("trivy/photon-30.json", subject=other))
    assert not result.passed
    assert "CVE" not in result.summary and "curl" not in result.summary
    stale = evaluate(fixture("trivy/alpine-39.json"), ScanPolicy(max_age="1h"), now=NOW)
    assert stale.summary.startswith("refused: report is ")
    assert "CVE" not in stale.summary


# -- one line, bounded --------------------------------------------------------------------------


def test_summary_is_one_bounded_line_whatever_the_report_holds() -> None:
    doc = json.loads((FIXTURES / "trivy/alpine-39.json").read_bytes())
    template = doc["Results"][0]["Vulnerabilities"][4]  # the CRITICAL musl entry
    hostile = [
        {
            **template,
            "VulnerabilityID": f"CVE-2099-{i:04d}\n\x1b[31mFORGED" + "X" * 500,
            "PkgName": "p" * 5000 + "\u2028next",
            "InstalledVersion": "1" * 5000,
            "FixedVersion": "2" * 5000 + "\r\nline",
        }
        for i in range(120)
    ]
    doc["Results"][0]["Vulnerabilities"] = hostile
    result = evaluate(as_evidence(doc))
    summary = result.summary
    assert summary.startswith("refused: 120 CRITICAL (fail at HIGH): CVE-2099-0000 ")
    assert summary.isprintable(), repr(summary[:300])  # no newline, CR, ESC, U+2028
    assert len(summary) <= 800, len(summary)  # 5 such findings would be ~1,000
    assert "…" in summary  # long fields are cut, visibly
    named_count = summary.count(" CRITICAL (fixed in 2")
    assert 1 <= named_count <= 5
    assert summary.endswith(f" and {120 - named_count} more")  # every finding is accounted for
    # the rows still carry the full facts
    blocking = [r for r in result.rows if r["status"] == "blocks"]
    assert len(blocking[0]["package"]) == 5000 + len("\u2028next")
