"""SARIF 2.1.0 into the finding model: every `runs[].results[]` is a finding.

How a severity is derived (SARIF has none of its own), where package facts are read from,
which fields bind the report to an image and what counts as a scan: docs/formats.md, "SARIF".
"""

from __future__ import annotations

import datetime as dt
import re
from typing import Any

from gates.base import EvidenceError
from gates.scan.fields import array, digest, not_a_scan, obj, repo_digests, time
from gates.scan.model import Finding, ScanReport, Severity

_LEVELS = {
    "error": Severity.HIGH,
    "warning": Severity.MEDIUM,
    "note": Severity.LOW,
    "none": Severity.UNKNOWN,
}

_KV_LINE = re.compile(r"^([A-Z][A-Za-z ]{1,30}): ?(.*?)\s*$", re.MULTILINE)
_VULN_LINE = re.compile(r"^Vulnerability (?:ID: ?)?(\S+)\s*$", re.MULTILINE)


def looks_like_sarif(doc: dict[str, Any]) -> bool:
    return "runs" in doc and ("version" in doc or "sarif" in str(doc.get("$schema", "")).lower())


def cvss_severity(score: float) -> Severity:
    """CVSS v3 qualitative rating of a score (0.0 'None' maps to UNKNOWN)."""
    if score >= 9.0:
        return Severity.CRITICAL
    if score >= 7.0:
        return Severity.HIGH
    if score >= 4.0:
        return Severity.MEDIUM
    if score > 0.0:
        return Severity.LOW
    return Severity.UNKNOWN


def parse_sarif(doc: dict[str, Any], src: str) -> ScanReport:
    version = doc.get("version")
    if version != "2.1.0":
        raise EvidenceError(f"{src}: SARIF version {version!r} is not supported (need 2.1.0)")
    runs = array(doc.get("runs"), src, "runs")
    if not runs:
        raise not_a_scan(src, "the SARIF report has no runs")
    findings: list[Finding] = []
    manifests: list[str] = []
    configs: list[str] = []
    times: list[dt.datetime] = []
    tools: list[tuple[object, object]] = []
    for r, run in enumerate(runs):
        rw = f"runs[{r}]"
        run = obj(run, src, rw)
        tool = obj(run.get("tool"), src, f"{rw}.tool")
        driver = _driver(tool, run, src, rw)
        tools.append((driver["name"], driver.get("semanticVersion") or driver.get("version")))
        rules, by_id = _rules(tool, driver, src, rw)
        times += _run_times(run, src, rw)
        props = obj(run.get("properties"), src, f"{rw}.properties")  # Trivy's image facts
        manifests += repo_digests(props.get("repoDigests"), src, f"{rw}.properties.repoDigests")
        if props.get("imageID"):
            configs.append(digest(props["imageID"], src, f"{rw}.properties.imageID"))
        for i, res in enumerate(array(run.get("results"), src, f"{rw}.results")):
            where = f"{rw}.results[{i}]"
            findings.append(_finding(obj(res, src, where), rules, by_id, src, where))
    name, tool_version = tools[0]
    return ScanReport(
        format="sarif",
        tool=name if isinstance(name, str) else None,
        tool_version=tool_version if isinstance(tool_version, str) else None,
        created=min(times) if times else None,  # the oldest run decides how stale it is
        findings=tuple(findings),
        manifest_digests=tuple(dict.fromkeys(manifests)),
        config_digests=tuple(dict.fromkeys(configs)),
    )


def _driver(tool: dict[str, Any], run: dict[str, Any], src: str, rw: str) -> dict[str, Any]:
    """The run's tool driver; a run must name its tool and have a results array."""
    driver = obj(tool.get("driver"), src, f"{rw}.tool.driver")
    if not isinstance(driver.get("name"), str) or not driver["name"]:
        raise not_a_scan(src, f"{rw}.tool.driver.name is missing (which tool ran)")
    if run.get("results") is None:
        raise not_a_scan(src, f"{rw}.results is absent: the analysis was not performed")
    return driver


def _rules(
    tool: dict[str, Any], driver: dict[str, Any], src: str, rw: str
) -> tuple[list[dict[str, Any]], dict[str, dict[str, Any]]]:
    """The driver's rules (by index), and every rule by id (the driver's first, then the
    extensions')."""
    rules = [obj(x, src, f"{rw}.rules") for x in array(driver.get("rules"), src, "rules")]
    by_id = {x["id"]: x for x in rules if isinstance(x.get("id"), str)}
    for ext in array(tool.get("extensions"), src, "extensions"):
        for x in array(obj(ext, src, "extension").get("rules"), src, "extension rules"):
            if isinstance(x, dict) and isinstance(x.get("id"), str):
                by_id.setdefault(x["id"], x)
    return rules, by_id


def _run_times(run: dict[str, Any], src: str, rw: str) -> list[dt.datetime]:
    """When each invocation ended (else started), where it says."""
    times = []
    for inv in array(run.get("invocations"), src, f"{rw}.invocations"):
        inv = obj(inv, src, f"{rw}.invocations[]")
        t = inv.get("endTimeUtc") or inv.get("startTimeUtc")
        when = time(t, src, f"{rw}.invocations[].endTimeUtc")
        if when is not None:
            times.append(when)
    return times


def _finding(
    res: dict[str, Any],
    rules: list[dict[str, Any]],
    by_id: dict[str, dict[str, Any]],
    src: str,
    where: str,
) -> Finding:
    rule, rule_id = _rule_of(res, rules, by_id, where, src)
    sev = _result_severity(res, rule, rule_id, src, where)
    # Package facts, best effort: Trivy writes them in the result message, Grype in the help
    # text of a rule that is already specific to one package.
    text = _text(res.get("message"))
    fields = dict(_KV_LINE.findall(text))
    if "Package" not in fields and rule:
        text = _text(rule.get("help"))
        fields = dict(_KV_LINE.findall(text))
    vuln = _VULN_LINE.search(text)
    fixed_key = next((k for k in ("Fixed Version", "Fix Version") if k in fields), None)
    return Finding(
        vuln[1] if vuln else rule_id,
        fields.get("Package") or None,
        fields.get("Installed Version") or fields.get("Version") or None,
        (fields[fixed_key] or None) if fixed_key else None,
        sev,
        fix_known=fixed_key is not None,
    )


def _rule_of(
    res: dict[str, Any],
    rules: list[dict[str, Any]],
    by_id: dict[str, dict[str, Any]],
    where: str,
    src: str,
) -> tuple[dict[str, Any], str]:
    """The result's rule ({} if none is found) and its id (by index first, then by id)."""
    rule_ref = obj(res.get("rule"), src, f"{where}.rule")
    rule_id = res.get("ruleId") or rule_ref.get("id")
    index = res.get("ruleIndex", rule_ref.get("index"))
    rule: dict[str, Any] = {}
    if isinstance(index, int) and not isinstance(index, bool) and 0 <= index < len(rules):
        rule = rules[index]
    elif isinstance(rule_id, str):
        rule = by_id.get(rule_id, {})
    if not isinstance(rule_id, str) or not rule_id:
        rule_id = rule.get("id") if isinstance(rule.get("id"), str) else f"(result {where})"
    return rule, rule_id


def _result_severity(
    res: dict[str, Any], rule: dict[str, Any], rule_id: str, src: str, where: str
) -> Severity:
    """security-severity of the result, else of its rule; else the level (docs/formats.md)."""
    sev = _security_severity(obj(res.get("properties"), src, where), src, where)
    if sev is None:
        sev = _security_severity(obj(rule.get("properties"), src, "rule"), src, f"rule {rule_id}")
    if sev is None:
        level = res.get("level")
        if level is None:
            level = obj(rule.get("defaultConfiguration"), src, "rule").get("level", "warning")
        sev = _LEVELS.get(level) if isinstance(level, str) else None
        if sev is None:
            raise EvidenceError(f"{src}: unknown SARIF level {level!r} at {where}")
    return sev


def _security_severity(props: dict[str, Any], src: str, where: str) -> Severity | None:
    raw = props.get("security-severity")
    if raw is None:
        return None
    try:
        score = float(raw) if not isinstance(raw, bool) else float("nan")
    except (TypeError, ValueError):
        score = float("nan")
    if not 0.0 <= score <= 10.0:  # also false for NaN
        raise EvidenceError(f"{src}: unknown severity {raw!r} at {where}.security-severity")
    return cvss_severity(score)


def _text(value: object) -> str:
    return value.get("text", "") if isinstance(value, dict) else ""
