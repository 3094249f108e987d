"""Grype JSON (`grype -o json`) into the finding model.

Which fields are read, which bind the report to an image, and what counts as a scan:
docs/formats.md, "Grype JSON".
"""

from __future__ import annotations

from typing import Any

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
from gates.scan.model import Finding, ScanReport


def looks_like_grype(doc: dict[str, Any]) -> bool:
    return "matches" in doc and ("source" in doc or "descriptor" in doc)


def parse_grype(doc: dict[str, Any], src: str) -> ScanReport:
    source = obj(doc.get("source"), src, "source")
    target = source.get("target")
    if not (isinstance(source.get("type"), str) and source["type"] and target):
        raise not_a_scan(src, "the Grype report has no source type and target (what was scanned)")
    findings = [
        _finding(m, src, f"matches[{i}]")
        for i, m in enumerate(array(doc.get("matches"), src, "matches"))
    ]
    manifests, configs = _image_digests(source["type"], target, src)
    descriptor = obj(doc.get("descriptor"), src, "descriptor")
    version = descriptor.get("version")
    return ScanReport(
        format="grype",
        tool=opt_string(descriptor.get("name"), src, "descriptor.name") or "grype",
        tool_version=version if isinstance(version, str) and version else None,
        created=time(descriptor.get("timestamp"), src, "descriptor.timestamp"),
        findings=tuple(findings),
        manifest_digests=tuple(dict.fromkeys(manifests)),
        config_digests=tuple(configs),
    )


def _finding(m: object, src: str, where: str) -> Finding:
    m = obj(m, src, where)
    vuln = obj(m.get("vulnerability"), src, f"{where}.vulnerability")
    art = obj(m.get("artifact"), src, f"{where}.artifact")
    fix = obj(vuln.get("fix"), src, f"{where}.vulnerability.fix")
    versions = array(fix.get("versions"), src, f"{where}.vulnerability.fix.versions")
    return Finding(
        string(vuln.get("id"), src, f"{where}.vulnerability.id"),
        string(art.get("name"), src, f"{where}.artifact.name"),
        opt_string(art.get("version"), src, f"{where}.artifact.version"),
        ", ".join(str(v) for v in versions) or None,
        severity(vuln.get("severity"), src, f"{where}.vulnerability.severity"),
    )


def _image_digests(kind: str, target: object, src: str) -> tuple[list[str], list[str]]:
    """The manifest and config digests an image source names (none for other sources)."""
    manifests: list[str] = []
    configs: list[str] = []
    if kind == "image" and isinstance(target, dict):
        if target.get("manifestDigest"):
            manifests.append(digest(target["manifestDigest"], src, "source.target.manifestDigest"))
        manifests += repo_digests(target.get("repoDigests"), src, "source.target.repoDigests")
        if target.get("imageID"):
            configs.append(digest(target["imageID"], src, "source.target.imageID"))
    return manifests, configs
