"""Trivy JSON (`trivy image -f json`, SchemaVersion 2) into the finding model.

Which fields are read, which bind the report to an image, and what counts as a scan:
docs/formats.md, "Trivy JSON".
"""

from __future__ import annotations

from typing import Any

from gates.base import EvidenceError
from gates.scan.fields import (
    array,
    digest,
    not_a_scan,
    obj,
    opt_string,
    repo_digests,
    severity,
    string,
    time,
)
from gates.scan.model import SEVERITY_NAMES, Finding, ScanReport


def looks_like_trivy(doc: Any) -> bool:
    """Trivy's marker keys (a bare list of results is Trivy before 0.20, schema 1)."""
    if isinstance(doc, list):
        return bool(doc) and all(isinstance(r, dict) and "Target" in r for r in doc)
    return "SchemaVersion" in doc or ("ArtifactName" in doc and "Results" in doc)


def parse_trivy(doc: Any, src: str) -> ScanReport:
    _check_schema(doc, src)
    meta = obj(doc.get("Metadata"), src, "Metadata")
    manifests = repo_digests(meta.get("RepoDigests"), src, "Metadata.RepoDigests")
    image_id = meta.get("ImageID")
    configs = [digest(image_id, src, "Metadata.ImageID")] if image_id else []
    results = array(doc.get("Results"), src, "Results")
    _check_scanned(doc, results, bool(manifests or configs), src)

    findings: list[Finding] = []
    for i, result in enumerate(results):
        if not isinstance(result, dict):
            raise EvidenceError(f"{src}: Results[{i}] must be an object")
        _add_vulnerabilities(result, i, src, findings)
        _add_secrets_and_misconfigurations(result, i, src, findings)
    tool = obj(doc.get("Trivy"), src, "Trivy")
    return ScanReport(
        format="trivy",
        tool="trivy",
        tool_version=opt_string(tool.get("Version"), src, "Trivy.Version"),
        created=time(doc.get("CreatedAt"), src, "CreatedAt"),
        findings=tuple(findings),
        manifest_digests=tuple(manifests),
        config_digests=tuple(configs),
    )


def _check_schema(doc: Any, src: str) -> None:
    if isinstance(doc, list):
        raise EvidenceError(
            f"{src}: Trivy schema 1 output (a bare list of results) is not supported;"
            " rescan with Trivy >= 0.20 (SchemaVersion 2)"
        )
    version = doc.get("SchemaVersion")
    if version != 2 or isinstance(version, bool):
        raise EvidenceError(f"{src}: Trivy SchemaVersion {version!r} is not supported (need 2)")


def _check_scanned(doc: dict[str, Any], results: list[Any], names_image: bool, src: str) -> None:
    """A report without findings must still show what was scanned (docs/formats.md)."""
    if not isinstance(doc.get("ArtifactName"), str) or not doc["ArtifactName"]:
        raise not_a_scan(src, "the Trivy report has no ArtifactName (what was scanned)")
    if not results and not names_image:
        raise not_a_scan(
            src, "the Trivy report has no Results and its Metadata names no image (ImageID)"
        )


def _add_vulnerabilities(result: dict[str, Any], i: int, src: str, out: list[Finding]) -> None:
    vulns = result.get("Vulnerabilities")
    if not vulns:
        return
    if not isinstance(vulns, list):
        raise EvidenceError(f"{src}: Results[{i}].Vulnerabilities must be an array")
    add = out.append
    names = SEVERITY_NAMES
    # The hot loop (20,000 entries must take well under a second): the fast path reads the
    # fields and checks types with as little as possible per entry.
    for j, v in enumerate(vulns):
        try:
            vid = v["VulnerabilityID"]
            pkg = v["PkgName"]
            raw = v["Severity"]
        except (KeyError, TypeError):
            where = f"Results[{i}].Vulnerabilities[{j}]"
            raise EvidenceError(
                f"{src}: {where} lacks VulnerabilityID, PkgName or Severity"
            ) from None
        sev = names.get(raw) if raw.__class__ is str else None
        if sev is None:
            sev = severity(raw, src, f"Results[{i}].Vulnerabilities[{j}].Severity")
        if vid.__class__ is not str or not vid or pkg.__class__ is not str:
            raise EvidenceError(
                f"{src}: Results[{i}].Vulnerabilities[{j}] has a non-string"
                " VulnerabilityID or PkgName"
            )
        fixed = v.get("FixedVersion") or None
        add(Finding(vid, pkg, v.get("InstalledVersion") or None, fixed, sev))


def _add_secrets_and_misconfigurations(
    result: dict[str, Any], i: int, src: str, out: list[Finding]
) -> None:
    """Secrets, and the misconfigurations whose Status is FAIL, as findings of their kind."""
    target = result.get("Target") if isinstance(result.get("Target"), str) else None
    for key, kind in (("Secrets", "secret"), ("Misconfigurations", "misconfiguration")):
        for j, x in enumerate(array(result.get(key), src, f"Results[{i}].{key}")):
            where = f"Results[{i}].{key}[{j}]"
            x = obj(x, src, where)
            if kind == "secret":
                rule = string(x.get("RuleID"), src, f"{where}.RuleID")
            elif x.get("Status", "FAIL") != "FAIL":
                continue
            else:
                rule = string(x.get("AVDID") or x.get("ID"), src, f"{where}.ID")
            sev = severity(x.get("Severity"), src, f"{where}.Severity")
            out.append(Finding(rule, target, None, None, sev, fix_known=False, kind=kind))
