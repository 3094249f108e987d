"""The scan gate on real Trivy, Grype and SARIF reports (tests/fixtures, see SOURCES.md).

Facts asserted here were checked in the files: alpine-39 has 2 CRITICAL (musl, musl-utils
CVE-2019-14697) and 4 MEDIUM; photon-30 has 1 HIGH and 2 CRITICAL; alpine-310-registry names
alpine@sha256:b1c5a500… and ImageID sha256:96176967…; CreatedAt of the Trivy goldens is pinned to
2021-08-25T12:20:30Z.
"""

from __future__ import annotations

import datetime as dt
import json
from collections import Counter
from pathlib import Path
from typing import Any

import pydantic
import pytest

from gates.base import Evidence, GateResult
from gates.scan import (
    AllowEntry,
    ScanPolicy,
    ScanReport,
    Severity,
    cvss_severity,
    detect,
    evaluate,
    parse,
)
from registry import mediatypes

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"

ALPINE_310_DIGEST = "sha256:b1c5a500182b21d0bfa5a584a8526b56d8be316f89e87d951be04abed2446e60"
ALPINE_310_IMAGE_ID = "sha256:961769676411f082461f9ef46626dd7a2d1e2b2a38e6a44364bcbecf51e66dd4"
RUBY_MANIFEST = "sha256:86abe662dfa3746038eea6b0db91092b0767d78b8b8938a343d614cd1579adc2"
RUBY_REPO_DIGEST = "sha256:3c9afb4f188827ea1062ec3b8acea32893236a0d7df31e0498df93486cff0978"
RUBY_IMAGE_ID = "sha256:2f88265cfbc43ca35cd327347a9f59375b9f29ef998b8a54a882e31111266640"
OTHER = "sha256:" + "0" * 64
OTHER_CONFIG = "sha256:" + "1" * 64
TRIVY_CREATED = dt.datetime(2021, 8, 25, 12, 20, 30, tzinfo=dt.UTC)


def fixture(name: str, **kw: Any) -> Evidence:
    return Evidence(data=(FIXTURES / name).read_bytes(), source=name, **kw)


def raw(data: bytes | str, **kw: Any) -> Evidence:
    if isinstance(data, str):
        data = data.encode()
    return Evidence(data=data, source="report.json", **kw)


def trivy_doc(name: str = "alpine-39.json") -> dict[str, Any]:
    return json.loads((FIXTURES / "trivy" / name).read_bytes())


def as_evidence(doc: Any, **kw: Any) -> Evidence:
    return raw(json.dumps(doc), **kw)


def severities(report: ScanReport) -> Counter[Severity]:
    return Counter(f.severity for f in report.findings)


def blocked_ids(result: GateResult) -> list[tuple[str, str]]:
    return [(r["finding"], r["package"]) for r in result.rows if r["status"].startswith("blocks")]


# -- parsing the real reports ------------------------------------------------------------------


def test_trivy_alpine_39_findings() -> None:
    report = parse(fixture("trivy/alpine-39.json"))
    assert report.format == "trivy"
    assert (report.tool, report.tool_version) == ("trivy", "dev")
    assert report.created == TRIVY_CREATED
    counts = severities(report)
    assert counts[Severity.CRITICAL] == 2
    assert counts[Severity.MEDIUM] == 4
    assert sum(counts.values()) == 6
    musl = [f for f in report.findings if f.package == "musl"]
    assert len(musl) == 1
    assert (musl[0].id, musl[0].installed, musl[0].fixed) == (
        "CVE-2019-14697",
        "1.1.20-r4",
        "1.1.20-r5",
    )
    assert report.manifest_digests == ()  # scanned from a tarball: no RepoDigests
    assert report.config_digests == (
        "sha256:055936d3920576da37aa9bc460d70c5f212028bda1c08c0879aedf03d7a66ea1",
    )


def test_trivy_registry_report_names_its_digests() -> None:
    report = parse(fixture("trivy/alpine-310-registry.json"))
    assert report.manifest_digests == (ALPINE_310_DIGEST,)
    assert report.config_digests == (ALPINE_310_IMAGE_ID,)
    assert report.tool_version is None  # this older golden has no Trivy.Version
    assert severities(report)[Severity.MEDIUM] == 4


def test_trivy_result_without_vulnerabilities_key_is_zero_findings() -> None:
    report = parse(fixture("trivy/sl-micro-rancher5.4-no-vulns.json"))
    assert report.findings == ()
    assert evaluate(fixture("trivy/sl-micro-rancher5.4-no-vulns.json")).passed


def test_grype_report() -> None:
    report = parse(fixture("grype/chainguard-ruby-0.61.1.json"))
    assert (report.format, report.tool, report.tool_version) == ("grype", "grype", "0.61.1")
    assert report.manifest_digests == (RUBY_MANIFEST, RUBY_REPO_DIGEST)
    assert report.config_digests == (RUBY_IMAGE_ID,)
    assert report.created == dt.datetime.fromisoformat("2023-05-17T21:00:56.783213-04:00")
    assert [(f.id, f.package, f.fixed, f.severity) for f in report.findings] == [
        ("CVE-2023-28755", "ruby-3.0", "3.0.6-r0", Severity.HIGH),
        ("CVE-2023-28755", "uri", None, Severity.HIGH),
        ("GHSA-hv5j-3h9f-99c2", "uri", "0.10.2", Severity.HIGH),
    ]


def test_grype_mixed_case_severities() -> None:
    # "Low" and "Critical" as Grype writes them.
    report = parse(fixture("grype/presenter-image-snapshot.json"))
    assert [f.severity for f in report.findings] == [Severity.LOW, Severity.CRITICAL]
    assert report.created is None  # descriptor.timestamp is "" in the snapshot


def test_grype_no_matches_passes() -> None:
    result = evaluate(fixture("grype/klass-web-0.114.0-no-matches.json"))
    assert result.passed, result.summary
    assert result.error is None
    assert result.summary == "passed: 0 at or above HIGH (no findings)"


def test_grype_unknown_source_names_no_digest() -> None:
    report = parse(fixture("grype/presenter-empty-snapshot.json"))
    assert report.findings == () and report.manifest_digests == () and report.config_digests == ()


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("trivy/alpine-39.json", "trivy"),
        ("trivy/sl-micro-rancher5.4-no-vulns.json", "trivy"),
        ("grype/keycloak-0.66.0.json", "grype"),
        ("grype/presenter-empty-snapshot.json", "grype"),
        ("sarif/trivy-alpine-310.sarif", "sarif"),
        ("sarif/grype-presenter-image.sarif", "sarif"),
        ("junit/pytest-failures.xml", None),
        ("pytest-json-report/sample_report.json", None),
        ("oci/regclient-v2-subject-index.json", None),
    ],
)
def test_detect_from_content(name: str, expected: str | None) -> None:
    assert detect((FIXTURES / name).read_bytes()) == expected


def test_detect_ignores_garbage() -> None:
    assert detect(b"") is None
    assert detect(b'{"SchemaVersion": 2, "Results": [') is None
    assert detect(b"[1, 2]") is None


# -- SARIF severities ---------------------------------------------------------------------------


def test_sarif_trivy_security_severity_and_package_facts() -> None:
    report = parse(fixture("sarif/trivy-alpine-310.sarif"))
    assert (report.tool, report.tool_version) == ("Trivy", "dev")
    # security-severity 5.3 on both rules -> MEDIUM (level "warning" would say the same).
    assert [f.severity for f in report.findings] == [Severity.MEDIUM] * 4
    assert [(f.id, f.package, f.installed, f.fixed) for f in report.findings] == [
        ("CVE-2019-1549", "libcrypto1.1", "1.1.1c-r0", "1.1.1d-r0"),
        ("CVE-2019-1551", "libcrypto1.1", "1.1.1c-r0", "1.1.1d-r2"),
        ("CVE-2019-1549", "libssl1.1", "1.1.1c-r0", "1.1.1d-r0"),
        ("CVE-2019-1551", "libssl1.1", "1.1.1c-r0", "1.1.1d-r2"),
    ]
    # Trivy's SARIF carries the ImageID in run.properties (repoDigests is null there).
    assert report.manifest_digests == ()
    assert report.config_digests == (ALPINE_310_IMAGE_ID,)
    assert evaluate(fixture("sarif/trivy-alpine-310.sarif")).passed


def test_sarif_security_severity_beats_level() -> None:
    # grype's snapshot: levels note and error, but security-severity 8.2 and 8.5 -> both HIGH.
    report = parse(fixture("sarif/grype-presenter-image.sarif"))
    assert [(f.id, f.severity) for f in report.findings] == [
        ("CVE-1999-0001", Severity.HIGH),
        ("CVE-1999-0002", Severity.HIGH),
    ]
    assert report.findings[0].fixed == "1.2.1,2.1.3,3.4.0"  # from the rule's help text
    assert report.findings[1].unfixed
    result = evaluate(fixture("sarif/grype-presenter-image.sarif"))
    assert not result.passed
    assert result.summary.startswith("refused: 2 HIGH (fail at HIGH): ")


def sarif(results: list[dict[str, Any]], rules: list[dict[str, Any]] | None = None) -> Evidence:
    doc = {
        "version": "2.1.0",
        "runs": [{"tool": {"driver": {"name": "x", "rules": rules or []}}, "results": results}],
    }
    return as_evidence(doc)


@pytest.mark.parametrize(
    ("level", "expected"),
    [
        ("error", Severity.HIGH),
        ("warning", Severity.MEDIUM),
        ("note", Severity.LOW),
        ("none", Severity.UNKNOWN),
        (None, Severity.MEDIUM),  # SARIF's default level is "warning"
    ],
)
def test_sarif_level_mapping(level: str | None, expected: Severity) -> None:
    result: dict[str, Any] = {"ruleId": "R1", "message": {"text": "x"}}
    if level is not None:
        result["level"] = level
    assert parse(sarif([result])).findings[0].severity == expected


def test_sarif_rule_default_level_is_used() -> None:
    rules = [{"id": "R1", "defaultConfiguration": {"level": "error"}}]
    assert parse(sarif([{"ruleId": "R1"}], rules)).findings[0].severity == Severity.HIGH


@pytest.mark.parametrize(
    ("score", "expected"),
    [
        ("10.0", Severity.CRITICAL),
        ("9.0", Severity.CRITICAL),
        ("8.9", Severity.HIGH),
        ("7.0", Severity.HIGH),
        ("6.9", Severity.MEDIUM),
        ("4.0", Severity.MEDIUM),
        ("3.9", Severity.LOW),
        ("0.1", Severity.LOW),
        ("0.0", Severity.UNKNOWN),
        (9.8, Severity.CRITICAL),  # a number instead of the usual string
    ],
)
def test_sarif_cvss_mapping(score: Any, expected: Severity) -> None:
    rules = [{"id": "R1", "properties": {"security-severity": score}}]
    assert parse(sarif([{"ruleId": "R1", "level": "note"}], rules)).findings[0].severity == expected


def test_cvss_severity_edges() -> None:
    assert cvss_severity(9.0) is Severity.CRITICAL
    assert cvss_severity(6.99) is Severity.MEDIUM


# -- thresholds ---------------------------------------------------------------------------------


def test_default_policy_refuses_critical() -> None:
    result = evaluate(fixture("trivy/alpine-39.json"))
    assert not result.passed
    assert result.error is None
    assert result.gate == "scan"
    assert result.summary.startswith("refused: 2 CRITICAL, 4 MEDIUM (fail at HIGH): ")
    assert blocked_ids(result) == [("CVE-2019-14697", "musl"), ("CVE-2019-14697", "musl-utils")]
    assert result.evidence[0].source == "trivy/alpine-39.json"


def test_fail_on_critical_versus_high() -> None:
    photon = fixture("trivy/photon-30.json")  # 1 HIGH, 2 CRITICAL
    registry_alpine = fixture("trivy/alpine-310-registry.json")  # 4 MEDIUM
    assert not evaluate(photon, ScanPolicy(fail_on="CRITICAL")).passed
    assert not evaluate(photon, ScanPolicy(fail_on="high")).passed
    assert evaluate(registry_alpine, ScanPolicy(fail_on="HIGH")).passed
    result = evaluate(registry_alpine, ScanPolicy(fail_on="MEDIUM"))
    assert not result.passed
    assert result.summary.startswith("refused: 4 MEDIUM (fail at MEDIUM): ")


def test_fail_on_critical_passes_high_only_report() -> None:
    result = evaluate(fixture("grype/chainguard-ruby-0.61.1.json"), ScanPolicy(fail_on="CRITICAL"))
    assert result.passed, result.summary
    assert result.summary == "passed: 0 at or above CRITICAL (3 HIGH)"


def test_passed_summary_names_lower_counts() -> None:
    result = evaluate(fixture("trivy/alpine-310-registry.json"))
    assert result.passed
    assert result.summary == "passed: 0 at or above HIGH (4 MEDIUM)"
    counts = [r for r in result.rows if r["finding"] == "4 findings"]
    assert counts and counts[0]["severity"] == "MEDIUM"


def test_max_counts() -> None:
    ev = fixture("trivy/alpine-310-registry.json")  # 4 MEDIUM
    assert evaluate(ev, ScanPolicy(max_counts={"MEDIUM": 4})).passed
    result = evaluate(ev, ScanPolicy(max_counts={"medium": 3}))
    assert not result.passed
    assert result.summary.startswith("refused: 4 MEDIUM (max 3 MEDIUM): ")
    assert len(blocked_ids(result)) == 4


def test_max_counts_alone_without_fail_on() -> None:
    ev = fixture("trivy/photon-30.json")  # 1 HIGH, 2 CRITICAL
    assert evaluate(ev, ScanPolicy(fail_on="never", max_counts={"CRITICAL": 2})).passed
    result = evaluate(ev, ScanPolicy(fail_on="never", max_counts={"CRITICAL": 1, "HIGH": 5}))
    assert not result.passed
    assert result.summary.startswith("refused: 2 CRITICAL, 1 HIGH (max 1 CRITICAL): ")


def test_ignore_unfixed() -> None:
    ev = fixture("grype/chainguard-ruby-0.61.1.json")  # 3 HIGH, one (uri CVE-2023-28755) unfixed
    policy = ScanPolicy(fail_on="HIGH", max_counts={"HIGH": 2})
    assert not evaluate(ev, ScanPolicy(fail_on="never", max_counts={"HIGH": 2})).passed
    result = evaluate(ev, policy.model_copy(update={"fail_on": "never", "ignore_unfixed": True}))
    assert result.passed, result.summary
    assert "1 unfixed ignored" in result.summary
    keycloak = fixture("grype/keycloak-0.66.0.json")  # 6 LOW, all wont-fix
    strict = ScanPolicy(fail_on="LOW", ignore_unfixed=True)
    assert evaluate(keycloak, strict).passed
    assert not evaluate(keycloak, ScanPolicy(fail_on="LOW")).passed


def test_ignore_unfixed_keeps_sarif_findings_without_fix_information() -> None:
    ev = sarif([{"ruleId": "CVE-1", "level": "error", "message": {"text": "no facts"}}])
    assert not evaluate(ev, ScanPolicy(ignore_unfixed=True)).passed


# -- allow-list ---------------------------------------------------------------------------------

NOW = dt.datetime(2021, 9, 1, tzinfo=dt.UTC)


def allow(id: str, expires: str = "2022-01-01", package: str | None = None) -> AllowEntry:
    return AllowEntry(
        id=id, reason="not reachable", expires=dt.date.fromisoformat(expires), package=package
    )


def test_allow_list_suppresses_until_expiry() -> None:
    ev = fixture("trivy/alpine-39.json")
    result = evaluate(ev, ScanPolicy(allow=[allow("CVE-2019-14697")]), now=NOW)
    assert result.passed, result.summary
    assert result.summary == "passed: 0 at or above HIGH (4 MEDIUM; 2 allow-listed)"
    assert any(r["status"].startswith("allowed until 2022-01-01") for r in result.rows)


def test_allow_list_id_is_case_insensitive() -> None:
    ev = fixture("trivy/alpine-39.json")
    assert evaluate(ev, ScanPolicy(allow=[allow("cve-2019-14697")]), now=NOW).passed


def test_expired_allow_entry_counts_again_and_is_reported() -> None:
    ev = fixture("trivy/alpine-39.json")
    policy = ScanPolicy(allow=[allow("CVE-2019-14697", expires="2021-09-01")])
    result = evaluate(ev, policy, now=NOW)  # expires at 00:00 UTC on that day
    assert not result.passed
    assert "allow-list: 1 expired" in result.summary
    statuses = [r["status"] for r in result.rows]
    assert "allow-list entry CVE-2019-14697 expired 2021-09-01; 2 findings count again" in statuses
    day_before = dt.datetime(2021, 8, 31, 23, 59, tzinfo=dt.UTC)
    assert evaluate(ev, policy, now=day_before).passed


def test_expired_entry_is_reported_even_when_it_matches_nothing() -> None:
    ev = fixture("trivy/alpine-310-registry.json")
    result = evaluate(ev, ScanPolicy(allow=[allow("CVE-2000-0001", expires="2021-01-01")]), now=NOW)
    assert result.passed
    assert any(
        r["status"] == "allow-list entry CVE-2000-0001 expired 2021-01-01" for r in result.rows
    )


def test_package_scoped_allow_entry() -> None:
    ev = fixture("trivy/alpine-39.json")
    only_musl = ScanPolicy(allow=[allow("CVE-2019-14697", package="musl")])
    result = evaluate(ev, only_musl, now=NOW)
    assert not result.passed  # musl-utils still has it
    assert result.summary.startswith(
        "refused: 1 CRITICAL, 4 MEDIUM (fail at HIGH; 1 allow-listed): "
    )
    assert blocked_ids(result) == [("CVE-2019-14697", "musl-utils")]
    both = ScanPolicy(
        allow=[
            allow("CVE-2019-14697", package="musl"),
            allow("CVE-2019-14697", package="musl-utils"),
        ]
    )
    assert evaluate(ev, both, now=NOW).passed


def test_allow_entry_for_another_package_does_not_apply() -> None:
    ev = fixture("trivy/alpine-39.json")
    result = evaluate(ev, ScanPolicy(allow=[allow("CVE-2019-14697", package="openssl")]), now=NOW)
    assert not result.passed
    assert "allow-listed" not in result.summary


# -- report age ---------------------------------------------------------------------------------


def test_max_age_against_the_reports_own_time() -> None:
    ev = fixture("trivy/alpine-310-registry.json")  # CreatedAt 2021-08-25T12:20:30Z
    policy = ScanPolicy(max_age="7d")
    assert evaluate(ev, policy, now=TRIVY_CREATED + dt.timedelta(days=6, hours=23)).passed
    result = evaluate(ev, policy, now=TRIVY_CREATED + dt.timedelta(days=7, seconds=1))
    assert not result.passed
    assert result.error is None
    assert result.summary == "refused: report is 7d old (max 7d)"


def test_max_age_report_time_wins_over_the_referrer_time() -> None:
    fresh_referrer = TRIVY_CREATED + dt.timedelta(days=30)
    ev = fixture("trivy/alpine-310-registry.json", created=fresh_referrer)
    result = evaluate(ev, ScanPolicy(max_age="P7D"), now=fresh_referrer)
    assert not result.passed
    assert result.summary == "refused: report is 30d old (max 7d)"


def test_max_age_falls_back_to_the_referrer_time() -> None:
    # grype snapshot: descriptor.timestamp is empty.
    created = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)
    ev = fixture("grype/presenter-empty-snapshot.json", created=created)
    policy = ScanPolicy(max_age="24h")
    assert evaluate(ev, policy, now=created + dt.timedelta(hours=23)).passed
    assert not evaluate(ev, policy, now=created + dt.timedelta(hours=25)).passed


def test_max_age_without_any_time_refuses() -> None:
    ev = fixture("grype/presenter-empty-snapshot.json")
    assert evaluate(ev).passed
    result = evaluate(ev, ScanPolicy(max_age=3600), now=NOW)
    assert not result.passed
    assert "report states no time" in result.summary


# -- digest binding -----------------------------------------------------------------------------


def test_binding_matching_subject_passes() -> None:
    ev = fixture("trivy/alpine-310-registry.json", subject=ALPINE_310_DIGEST)
    result = evaluate(ev)
    assert result.passed, result.summary
    assert {
        "finding": "digest binding",
        "status": f"report names {ALPINE_310_DIGEST}",
    }.items() <= next(r for r in result.rows if r["finding"] == "digest binding").items()
    assert result.evidence[0].subject == ALPINE_310_DIGEST


def test_binding_other_subject_refuses() -> None:
    ev = fixture("trivy/alpine-310-registry.json", subject=OTHER)
    result = evaluate(ev)
    assert not result.passed
    assert result.summary == f"refused: report is for another image (names {ALPINE_310_DIGEST})"


def test_binding_is_checked_before_thresholds() -> None:
    # Even a permissive policy does not pass a report about another image.
    ev = fixture("trivy/alpine-310-registry.json", subject=OTHER)
    result = evaluate(ev, ScanPolicy(fail_on="never"))
    assert not result.passed
    assert "report is for another image" in result.summary


def test_binding_index_family_via_accepted() -> None:
    # The subject is an index; the scan is of one of its platform manifests.
    index = "sha256:" + "2" * 64
    ev = fixture("trivy/alpine-310-registry.json", subject=index, accepted=(ALPINE_310_DIGEST,))
    assert evaluate(ev).passed
    stranger = fixture("trivy/alpine-310-registry.json", subject=index, accepted=(OTHER,))
    assert not evaluate(stranger).passed


def test_binding_grype_any_named_digest_may_match() -> None:
    # Grype names the platform manifest and the repo digest (e.g. an index); either binds.
    for subject in (RUBY_MANIFEST, RUBY_REPO_DIGEST):
        ev = fixture("grype/chainguard-ruby-0.61.1.json", subject=subject)
        assert evaluate(ev, ScanPolicy(fail_on="never")).passed
    ev = fixture("grype/chainguard-ruby-0.61.1.json", subject=OTHER)
    result = evaluate(ev, ScanPolicy(fail_on="never"))
    assert not result.passed
    assert result.summary.startswith(f"refused: report is for another image (names {RUBY_MANIFEST}")


def test_binding_config_digest() -> None:
    good = fixture(
        "trivy/alpine-310-registry.json",
        subject=ALPINE_310_DIGEST,
        config_digests=(ALPINE_310_IMAGE_ID,),
    )
    assert evaluate(good).passed
    bad = fixture(
        "trivy/alpine-310-registry.json", subject=ALPINE_310_DIGEST, config_digests=(OTHER_CONFIG,)
    )
    result = evaluate(bad)
    assert not result.passed
    assert result.summary == f"refused: report is for another image (names {ALPINE_310_IMAGE_ID})"


def test_binding_config_digest_alone() -> None:
    # alpine-39 names no manifest digest, only its ImageID: that alone binds when configs are known.
    image_id = "sha256:055936d3920576da37aa9bc460d70c5f212028bda1c08c0879aedf03d7a66ea1"
    ok = fixture("trivy/alpine-39.json", subject=OTHER, config_digests=(image_id,))
    assert evaluate(ok, ScanPolicy(fail_on="never")).passed
    wrong = fixture("trivy/alpine-39.json", subject=OTHER, config_digests=(OTHER_CONFIG,))
    assert "report is for another image" in evaluate(wrong, ScanPolicy(fail_on="never")).summary


def test_binding_sarif_from_trivy_uses_image_id() -> None:
    ev = fixture("sarif/trivy-alpine-310.sarif", subject=OTHER, config_digests=(OTHER_CONFIG,))
    assert "report is for another image" in evaluate(ev).summary


def test_no_subject_means_nothing_to_bind() -> None:
    result = evaluate(fixture("trivy/alpine-310-registry.json"))
    assert result.passed
    binding = next(r for r in result.rows if r["finding"] == "digest binding")
    assert binding["status"] == "not checked: no digest given"


def test_artifact_type_must_agree_with_content() -> None:
    grype_as_trivy = fixture("grype/keycloak-0.66.0.json", media_type=mediatypes.SCAN_REPORT_TRIVY)
    result = evaluate(grype_as_trivy)
    assert not result.passed and result.error
    assert "artifact type says trivy" in result.error
    test_report = fixture(
        "trivy/alpine-310-registry.json", media_type=mediatypes.TEST_REPORT_PYTEST
    )
    assert evaluate(test_report).error
    assert evaluate(
        fixture("trivy/alpine-310-registry.json", media_type=mediatypes.SCAN_REPORT_TRIVY)
    ).passed


# -- rows ---------------------------------------------------------------------------------------


def test_blocking_rows_are_capped() -> None:
    doc = trivy_doc()
    template = doc["Results"][0]["Vulnerabilities"][4]  # a CRITICAL musl entry
    doc["Results"][0]["Vulnerabilities"] = [
        {**template, "VulnerabilityID": f"CVE-2099-{i:04d}"} for i in range(120)
    ]
    result = evaluate(as_evidence(doc))
    assert result.summary.startswith("refused: 120 CRITICAL (fail at HIGH): ")
    finding_rows = blocked_ids(result)
    assert len(finding_rows) == 51
    assert finding_rows[-1][0] == "… 70 more"


# -- policy validation --------------------------------------------------------------------------


def test_policy_parses_case_insensitive_severities_and_durations() -> None:
    policy = ScanPolicy.model_validate(
        {"fail_on": "critical", "max_counts": {"Medium": 3}, "max_age": "24h"}
    )
    assert policy.fail_on is Severity.CRITICAL
    assert policy.max_counts == {Severity.MEDIUM: 3}
    assert policy.max_age == dt.timedelta(hours=24)
    assert ScanPolicy(max_age="P7D").max_age == dt.timedelta(days=7)
    assert ScanPolicy(max_age=90).max_age == dt.timedelta(seconds=90)
    dumped = policy.model_dump(mode="json")
    assert dumped["fail_on"] == "CRITICAL" and dumped["max_counts"] == {"MEDIUM": 3}
    assert ScanPolicy.model_validate(dumped) == policy


@pytest.mark.parametrize(
    "bad",
    [
        {"fail_on": "SEVERE"},
        {"fail_on": 4},
        {"max_counts": {"URGENT": 1}},
        {"max_counts": {"HIGH": -1}},
        {"max_age": "-1d"},
        {"max_age": "soon"},
        {"max_age": "99999999999999d"},  # too long for a timedelta: not an OverflowError
        {"fail_on": None},  # an empty YAML value: `never` must be said
        {"max_counts": {"HIGH": 0, "high": 100}},
        {"unknown_key": True},
        {"allow": [{"id": "CVE-1", "reason": "  ", "expires": "2030-01-01"}]},
        {"allow": [{"id": "CVE-1", "reason": "r"}]},  # no expiry
        {"allow": [{"id": "CVE-1", "reason": "r", "expires": "2030-01-01", "pkg": "x"}]},
    ],
)
def test_policy_rejects(bad: dict[str, Any]) -> None:
    with pytest.raises(pydantic.ValidationError):
        ScanPolicy.model_validate(bad)


def test_severity_order() -> None:
    assert (
        Severity.UNKNOWN
        < Severity.NEGLIGIBLE
        < Severity.LOW
        < Severity.MEDIUM
        < Severity.HIGH
        < Severity.CRITICAL
    )
    assert Severity.parse(" negligible") is Severity.NEGLIGIBLE
    assert f"{Severity.HIGH}" == "HIGH"


# -- bad input: refuse with `error` set, never pass ------------------------------------------------


def refuses_with_error(ev: Evidence, policy: ScanPolicy | None = None) -> GateResult:
    # The most permissive policy: anything that passes here would pass anywhere.
    result = evaluate(ev, policy or ScanPolicy(fail_on="never"))
    assert not result.passed
    assert result.error, result.summary
    assert "\n" not in result.error
    assert result.summary == f"refused: {result.error}"
    return result


def test_truncated_json() -> None:
    data = (FIXTURES / "trivy/alpine-39.json").read_bytes()
    result = refuses_with_error(raw(data[: len(data) // 2]))
    assert result.error.startswith("report.json: invalid JSON")


def test_empty_file() -> None:
    assert "empty" in refuses_with_error(raw(b"")).error
    assert "empty" in refuses_with_error(raw(b"  \n")).error


def test_junit_xml_given_to_the_scan_gate() -> None:
    result = refuses_with_error(fixture("junit/pytest-failures.xml"))
    assert "XML, not a scan report" in result.error


def test_pytest_report_given_to_the_scan_gate() -> None:
    result = refuses_with_error(fixture("pytest-json-report/sample_report.json"))
    assert "not a Trivy, Grype or SARIF report" in result.error
    assert "pytest-json-report" in result.error


def test_unknown_severity_in_trivy_report() -> None:
    doc = trivy_doc()
    doc["Results"][0]["Vulnerabilities"][2]["Severity"] = "SEVERE"
    result = refuses_with_error(as_evidence(doc))
    assert result.error == (
        "report.json: unknown severity 'SEVERE' at Results[0].Vulnerabilities[2].Severity"
    )


def test_unknown_severity_in_grype_report() -> None:
    doc = json.loads((FIXTURES / "grype/keycloak-0.66.0.json").read_bytes())
    doc["matches"][0]["vulnerability"]["severity"] = "Moderate"
    assert "unknown severity 'Moderate'" in refuses_with_error(as_evidence(doc)).error


def test_unknown_security_severity_in_sarif() -> None:
    rules = [{"id": "R1", "properties": {"security-severity": "high"}}]
    assert "unknown severity 'high'" in refuses_with_error(sarif([{"ruleId": "R1"}], rules)).error
    assert (
        "unknown SARIF level"
        in refuses_with_error(sarif([{"ruleId": "R1", "level": "fatal"}])).error
    )


def test_missing_severity_refuses() -> None:
    doc = trivy_doc()
    del doc["Results"][0]["Vulnerabilities"][0]["Severity"]
    refuses_with_error(as_evidence(doc))


def test_trivy_schema_version_1() -> None:
    doc = trivy_doc()
    doc["SchemaVersion"] = 1
    result = refuses_with_error(as_evidence(doc))
    assert "SchemaVersion 1 is not supported" in result.error


def test_trivy_legacy_bare_list() -> None:
    legacy = trivy_doc()["Results"]  # what Trivy < 0.20 wrote: just the results
    assert "schema 1" in refuses_with_error(as_evidence(legacy)).error


def test_sarif_version_2_0_0() -> None:
    doc = json.loads((FIXTURES / "sarif/trivy-alpine-310.sarif").read_bytes())
    doc["version"] = "2.0.0"
    result = refuses_with_error(as_evidence(doc))
    assert "SARIF version '2.0.0' is not supported" in result.error


@pytest.mark.parametrize(
    "mutate",
    [
        lambda d: d["Results"][0].__setitem__("Vulnerabilities", {"not": "a list"}),
        lambda d: d["Results"][0]["Vulnerabilities"][0].__setitem__("VulnerabilityID", 7),
        lambda d: d["Results"].__setitem__(0, "a string"),
        lambda d: d.__setitem__("Results", "nope"),
        lambda d: d.__setitem__("CreatedAt", "yesterday"),
        lambda d: d["Metadata"].__setitem__("ImageID", "not-a-digest"),
    ],
)
def test_malformed_trivy_structure(mutate: Any) -> None:
    doc = trivy_doc()
    mutate(doc)
    refuses_with_error(as_evidence(doc))


def test_malformed_repo_digest_refuses_instead_of_skipping_the_binding() -> None:
    doc = trivy_doc("alpine-310-registry.json")
    doc["Metadata"]["RepoDigests"] = ["alpine-without-digest"]
    refuses_with_error(as_evidence(doc, subject=ALPINE_310_DIGEST))


def test_non_json_bytes() -> None:
    refuses_with_error(raw(b"\x00\x01\x02 binary"))
    refuses_with_error(raw(b'{"SchemaVersion": 2, "Results": [], "x": NaN}'))


def test_utf8_bom_and_utf16_are_read() -> None:
    data = (FIXTURES / "trivy/alpine-39.json").read_bytes()
    assert evaluate(raw(b"\xef\xbb\xbf" + data)).summary.startswith("refused: 2 CRITICAL")
    utf16 = data.decode().encode("utf-16")  # with a BOM, as PowerShell 5 writes
    assert severities(parse(raw(utf16)))[Severity.CRITICAL] == 2


def test_over_the_size_cap() -> None:
    data = (FIXTURES / "trivy/alpine-39.json").read_bytes()
    with pytest.raises(Exception, match="over the 1000 cap"):
        parse(raw(data), limit=1000)


def test_trivy_secrets_and_failed_misconfigurations_count() -> None:
    doc = trivy_doc("sl-micro-rancher5.4-no-vulns.json")
    result_entry = doc["Results"][0]
    result_entry["Secrets"] = [
        {"RuleID": "aws-access-key-id", "Category": "AWS", "Severity": "CRITICAL", "Title": "AWS"}
    ]
    result_entry["Misconfigurations"] = [
        {"ID": "DS002", "AVDID": "AVD-DS-0002", "Severity": "HIGH", "Status": "PASS"},
        {"ID": "DS026", "AVDID": "AVD-DS-0026", "Severity": "LOW", "Status": "FAIL"},
    ]
    report = parse(as_evidence(doc))
    assert [(f.kind, f.id, f.severity) for f in report.findings] == [
        ("secret", "aws-access-key-id", Severity.CRITICAL),
        ("misconfiguration", "AVD-DS-0026", Severity.LOW),
    ]
    assert not report.findings[0].unfixed  # "unfixed" is about versions, not secrets
    result = evaluate(as_evidence(doc), ScanPolicy(ignore_unfixed=True))
    assert result.summary.startswith("refused: 1 CRITICAL, 1 LOW (fail at HIGH): ")
    assert any(r["status"] == "blocks (secret)" for r in result.rows)


# -- review fixes: each of these passed a report or a policy it should not have -------------------


def trivy_text(name: str = "alpine-39.json") -> str:
    return (FIXTURES / "trivy" / name).read_text()


def test_report_dated_in_the_future_refuses_with_max_age() -> None:
    doc = trivy_doc("alpine-310-registry.json")  # 4 MEDIUM: passes the default policy
    doc["CreatedAt"] = "2099-01-01T00:00:00Z"
    result = evaluate(as_evidence(doc), ScanPolicy(max_age="1h"), now=NOW)
    assert not result.passed
    assert result.error is None  # a policy refusal, like a stale report
    assert result.summary.startswith("refused: report is dated in the future (")
    age = next(r for r in result.rows if r["finding"] == "report age")
    assert "in the future" in age["status"]


def test_clock_skew_of_up_to_five_minutes_is_allowed() -> None:
    doc = trivy_doc("alpine-310-registry.json")
    policy = ScanPolicy(max_age="1h")
    doc["CreatedAt"] = (NOW + dt.timedelta(minutes=5)).isoformat()
    assert evaluate(as_evidence(doc), policy, now=NOW).passed
    doc["CreatedAt"] = (NOW + dt.timedelta(minutes=5, seconds=1)).isoformat()
    assert "dated in the future" in evaluate(as_evidence(doc), policy, now=NOW).summary


def test_future_referrer_time_refuses_when_the_report_has_none() -> None:
    ev = fixture("grype/presenter-empty-snapshot.json", created=NOW + dt.timedelta(days=1))
    result = evaluate(ev, ScanPolicy(max_age="7d"), now=NOW)
    assert result.summary == "refused: report is dated in the future (1d ahead, by the referrer)"


def test_a_future_report_refuses_even_without_max_age() -> None:
    """A time in the future was made up (or a clock is broken): such a report never counts."""
    doc = trivy_doc("alpine-310-registry.json")
    doc["CreatedAt"] = "2099-01-01T00:00:00Z"
    result = evaluate(as_evidence(doc), now=NOW)
    assert not result.passed and result.error is None
    assert result.summary.startswith("refused: report is dated in the future (")
    age = next(r for r in result.rows if r["finding"] == "report age")
    assert age["status"].startswith("dated in the future")
    # a report in the past without max_age gets no age row
    past = evaluate(fixture("trivy/alpine-310-registry.json"), now=NOW)
    assert not [r for r in past.rows if r["finding"] == "report age"]


EMPTY_REPORTS = {
    "trivy without Results or Metadata": {"SchemaVersion": 2},
    "trivy with empty Results": {"SchemaVersion": 2, "ArtifactName": "app", "Results": []},
    "trivy without ArtifactName": {
        "SchemaVersion": 2,
        "Metadata": {"ImageID": ALPINE_310_IMAGE_ID},
        "Results": [{"Target": "app"}],
    },
    "trivy with Metadata naming no image": {
        "SchemaVersion": 2,
        "ArtifactName": "app",
        "Metadata": {"OS": {"Family": "alpine"}},
    },
    "sarif without runs": {"version": "2.1.0", "runs": []},
    "sarif run without tool.driver": {"version": "2.1.0", "runs": [{"results": []}]},
    "sarif driver without name": {"version": "2.1.0", "runs": [{"tool": {"driver": {}}}]},
    "sarif run that did not analyse (results absent)": {
        "version": "2.1.0",
        "runs": [{"tool": {"driver": {"name": "x"}}}],
    },
    "grype without a source target": {"matches": [], "source": {}},
    "grype without source": {"matches": [], "descriptor": {"name": "grype"}},
    "grype with an empty target": {"matches": [], "source": {"type": "image", "target": {}}},
}


@pytest.mark.parametrize("doc", EMPTY_REPORTS.values(), ids=EMPTY_REPORTS.keys())
def test_a_report_that_shows_no_scan_refuses(doc: dict[str, Any]) -> None:
    result = refuses_with_error(as_evidence(doc))
    assert "not a scan" in result.error


def test_trivy_without_results_but_naming_the_image_is_a_clean_scan() -> None:
    # Trivy omits Results when it found nothing to scan (json:",omitempty"), e.g. a scratch image.
    doc = trivy_doc("sl-micro-rancher5.4-no-vulns.json")
    del doc["Results"]
    report = parse(as_evidence(doc))
    assert report.findings == ()
    assert evaluate(as_evidence(doc), ScanPolicy(fail_on="LOW")).passed


def test_fail_on_null_is_a_validation_error() -> None:
    with pytest.raises(pydantic.ValidationError, match="fail_on: never"):
        ScanPolicy.model_validate({"fail_on": None})
    policy = ScanPolicy.model_validate({"fail_on": "Never", "max_counts": {"CRITICAL": 2}})
    assert policy.fail_on == "never"
    assert policy.model_dump(mode="json")["fail_on"] == "never"
    result = evaluate(fixture("trivy/photon-30.json"), policy)  # 1 HIGH, 2 CRITICAL
    assert result.passed
    assert result.summary == "passed: 2 CRITICAL, 1 HIGH"


def test_an_unvalidated_null_fail_on_does_not_mean_never() -> None:
    # model_copy skips validation: None must not quietly turn the threshold off there either
    policy = ScanPolicy().model_copy(update={"fail_on": None})
    with pytest.raises(ValueError, match="unknown severity None"):
        evaluate(fixture("trivy/photon-30.json"), policy)


def test_max_counts_key_repeated_in_another_case_is_a_validation_error() -> None:
    with pytest.raises(pydantic.ValidationError, match="HIGH"):
        ScanPolicy.model_validate({"max_counts": {"HIGH": 0, "high": 100}})


def test_huge_max_age_is_a_validation_error() -> None:
    with pytest.raises(pydantic.ValidationError, match="max_age"):
        ScanPolicy.model_validate({"max_age": "99999999999999d"})


@pytest.mark.parametrize(
    ("old", "new"),
    [
        # a second Results drops every finding
        ('"SchemaVersion": 2,', '"SchemaVersion": 2, "Results": [],'),
        # a second Severity inside one vulnerability
        ('"Severity": "CRITICAL",', '"Severity": "CRITICAL", "Severity": "LOW",'),
    ],
    ids=["top level", "nested"],
)
def test_duplicate_keys_in_a_scan_report_refuse(old: str, new: str) -> None:
    text = trivy_text()
    assert old in text
    result = refuses_with_error(raw(text.replace(old, new, 1)))
    assert "duplicate key" in result.error
    assert "\n" not in result.error


def test_duplicate_keys_still_detect_the_format() -> None:
    text = trivy_text().replace('"SchemaVersion": 2,', '"SchemaVersion": 2, "Results": [],', 1)
    assert detect(text.encode()) == "trivy"  # so `attach` names the real problem
