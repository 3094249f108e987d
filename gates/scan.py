"""The scan gate: vulnerability reports from Trivy, Grype or any SARIF 2.1.0 producer.

    report = parse(evidence)                       # EvidenceError on anything malformed
    result = evaluate(evidence, ScanPolicy(fail_on="CRITICAL"), now=...)

Formats (detected from the content, never from the file name; read by gates/common.load_json,
which refuses duplicate keys, NaN and anything but UTF-8 or BOM-marked UTF-16):

* **Trivy JSON** (`trivy image -f json`), SchemaVersion 2 only. Findings are
  `Results[].Vulnerabilities[]`, plus `Results[].Secrets[]` and the `Results[].Misconfigurations[]`
  whose Status is FAIL (a CRITICAL leaked key in an image should stop a promotion just like a
  CRITICAL CVE). The report names the image by `Metadata.RepoDigests` (manifest digests, as
  `name@sha256:…`) and `Metadata.ImageID` (the config blob digest). Report time: `CreatedAt`.
* **Grype JSON** (`grype -o json`): `matches[].vulnerability` / `.artifact`. For an image source,
  `source.target.manifestDigest` and `.repoDigests` are manifest digests and `.imageID` is the
  config digest. Report time: `descriptor.timestamp`.
* **SARIF 2.1.0**: every `runs[].results[]` is a finding, named by its `ruleId`. SARIF has no
  severity vocabulary of its own, so the severity is taken, in this order, from
  1. `properties["security-severity"]` of the result, else of its rule (the CVSS score GitHub code
     scanning reads): >= 9.0 CRITICAL, >= 7.0 HIGH, >= 4.0 MEDIUM, > 0.0 LOW, 0.0 UNKNOWN;
  2. else the level: the result's `level`, else the rule's `defaultConfiguration.level`, else
     "warning" (the SARIF default): error -> HIGH, warning -> MEDIUM, note -> LOW, none -> UNKNOWN.
  Package, installed and fixed versions and the vulnerability id are read, best effort, from the
  `Package:` / `Installed Version:` / `Fixed Version:` / `Vulnerability ID` lines Trivy writes in
  the result message (Grype writes them in the rule's help text). A SARIF finding that says
  nothing about a fix is *not* treated as unfixed, so `ignore_unfixed` never drops it. SARIF has
  no field for the image; Trivy's SARIF carries `run.properties.imageID` / `repoDigests`, and
  those are bound like Trivy JSON. Report time: the earliest `invocations[].endTimeUtc` (else
  `startTimeUtc`).

What counts as a scan. A report with no findings passes, so it must at least show that a scan of
something happened; a document that only has the format's marker keys is an EvidenceError:

* Trivy: `ArtifactName` (what was scanned) and either a non-empty `Results` array (one entry per
  scanned target, OS packages or a lock file, possibly without `Vulnerabilities`) or `Metadata`
  naming the image by `ImageID` or `RepoDigests`. Trivy writes `Results` with `omitempty`: it is
  absent, never `[]`, when an image has nothing Trivy can scan (a scratch image), and then the
  Metadata still names the image.
* Grype: `source` with a `type` and a non-empty `target` (an image object, or a string such as
  the snapshot's "unknown"): Grype always records what it was pointed at.
* SARIF: at least one run; every run names its tool (`tool.driver.name`, required by the spec)
  and has a `results` array. SARIF 2.1.0 writes `results: []` for an analysis that found
  nothing and leaves it null/absent when the analysis was not performed, so a run without it is
  not a clean scan (GitHub code scanning refuses such a run too).

Severity order: UNKNOWN < NEGLIGIBLE < LOW < MEDIUM < HIGH < CRITICAL, case-insensitive (Grype
writes "Negligible", "Unknown"). Any other severity string in a report is an EvidenceError; in a
policy, a validation error. `fail_on: never` turns the severity threshold off (leaving
`max_counts`); an empty `fail_on` (YAML null) is a validation error, not "never".

Evaluation order (first refusal wins): the evidence must parse; the digests the report names must
be the image being promoted; the report must be younger than `max_age` and not dated more than
5 minutes (clock skew) in the future; then allow-list, `ignore_unfixed`, `fail_on` and
`max_counts`. A report dated in the future refuses with or without `max_age`: its time was set
by whoever made it, and a future one is a lie or a broken clock. A refusal for a wrong
image or a stale report is a policy refusal (exit 1, `error` unset); unusable evidence sets
`error` (exit 2).
"""

from __future__ import annotations

import datetime as dt
import re
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from enum import IntEnum
from typing import Annotated, Any, Literal

from pydantic import (
    BeforeValidator,
    Field,
    NonNegativeInt,
    PlainSerializer,
    StringConstraints,
    WithJsonSchema,
    field_validator,
)

from gates.base import (
    MAX_EVIDENCE_BYTES,
    Evidence,
    EvidenceError,
    EvidenceRef,
    GateResult,
    Policy,
    ReportPolicy,
    check_size,
    guarded,
    table_row,
    utcnow,
)
from gates.common import (
    CLOCK_SKEW,
    Duration,
    JSONError,
    as_utc,
    capped_rows,
    duration_text,
    first_char,
    gc_paused,
    load_json,
    parse_time,
    plural,
)
from registry import mediatypes

Format = Literal["trivy", "grype", "sarif"]

# Artifact types (DESIGN.md) and the format each promises.
MEDIA_TYPES: dict[str, Format] = {
    mediatypes.SCAN_REPORT_TRIVY: "trivy",
    mediatypes.SCAN_REPORT_GRYPE: "grype",
    mediatypes.SARIF: "sarif",
}


class Severity(IntEnum):
    """Ordered severities; compare with < and >=. `parse` reads names in any case."""

    UNKNOWN = 0
    NEGLIGIBLE = 1
    LOW = 2
    MEDIUM = 3
    HIGH = 4
    CRITICAL = 5

    def __str__(self) -> str:
        return self.name

    def __format__(self, spec: str) -> str:
        return format(self.name, spec)

    @classmethod
    def parse(cls, value: object) -> Severity:
        """A Severity from its name in any case; ValueError for anything else."""
        if isinstance(value, Severity):
            return value
        found = _SEVERITY_NAMES.get(value.strip().upper()) if isinstance(value, str) else None
        if found is None:
            names = ", ".join(s.name for s in cls)
            raise ValueError(f"unknown severity {value!r} (expected one of {names})")
        return found


_SEVERITY_NAMES: dict[str, Severity] = {s.name: s for s in Severity}
_DESCENDING = sorted(Severity, reverse=True)

# A Severity in a policy: its name in any case in, its name out (in JSON).
SeverityName = Annotated[
    Severity,
    BeforeValidator(Severity.parse),
    PlainSerializer(lambda s: s.name, when_used="json"),
    WithJsonSchema({"enum": [s.name for s in Severity]}),
]


# -- policy ----------------------------------------------------------------------------------


def _fail_on(value: object) -> object:
    if value is None:
        raise ValueError(
            "is empty; write `fail_on: never` to refuse on no severity, or name one "
            "(CRITICAL, HIGH, MEDIUM, LOW, NEGLIGIBLE, UNKNOWN)"
        )
    if isinstance(value, str) and value.strip().lower() == "never":
        return "never"
    try:
        return Severity.parse(value)
    except ValueError as e:
        raise ValueError(f"{e}, or never") from None


def _one_key_per_severity(value: object) -> object:
    """{HIGH: 0, high: 100} names HIGH twice: which limit was meant is a guess, so refuse."""
    if not isinstance(value, dict):
        return value
    seen: dict[Severity, object] = {}
    for key in value:
        sev = Severity.parse(key)
        if sev in seen:
            raise ValueError(f"{sev} is given twice ({seen[sev]!r} and {key!r})")
        seen[sev] = key
    return value


NonEmpty = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1)]


class AllowEntry(Policy):
    """An accepted risk: finding `id` (in `package`, if given) does not count until `expires`.

    `expires` is a date; the entry stops counting at 00:00 UTC that day (as Trivy's
    `.trivyignore.yaml` `expired_at`), and the gate reports it from then on.
    """

    id: NonEmpty
    reason: NonEmpty
    expires: dt.date
    package: NonEmpty | None = None

    def expired(self, now: dt.datetime) -> bool:
        return as_utc(now).date() >= self.expires

    def covers(self, finding: Finding) -> bool:
        return finding.id.upper() == self.id.upper() and (
            self.package is None or self.package == finding.package
        )


class ScanPolicy(ReportPolicy):
    """What the scan gate refuses. The default refuses any finding at HIGH or above."""

    # refuse any finding at or above; "never": no severity threshold (max_counts still apply)
    fail_on: Annotated[SeverityName | Literal["never"], BeforeValidator(_fail_on)] = Severity.HIGH
    max_counts: Annotated[
        dict[SeverityName, NonNegativeInt], BeforeValidator(_one_key_per_severity)
    ] = Field(default_factory=dict)  # per severity
    ignore_unfixed: bool = False  # drop findings the report says have no fixed version
    allow: list[AllowEntry] = Field(default_factory=list)
    max_age: Duration | None = None  # of the report (its own time, else the referrer's)

    @field_validator("max_age")
    @classmethod
    def _positive(cls, value: dt.timedelta | None) -> dt.timedelta | None:
        if value is not None and value <= dt.timedelta(0):
            raise ValueError("max_age must be positive")
        return value

    @property
    def threshold(self) -> Severity | None:
        """`fail_on` as a Severity; None for "never" only (a policy built without validation,
        e.g. by model_copy, with anything else raises rather than refusing nothing)."""
        return None if self.fail_on == "never" else Severity.parse(self.fail_on)


# -- the report ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Finding:
    id: str  # CVE-…, GHSA-…, a secret or misconfiguration rule id, a SARIF rule id
    package: str | None
    installed: str | None
    fixed: str | None  # the fixed version(s); None when there is none (or none is known)
    severity: Severity
    fix_known: bool = True  # False when the report says nothing about fixes (SARIF, secrets)
    kind: str = "vulnerability"  # or "secret", "misconfiguration"

    @property
    def unfixed(self) -> bool:
        """The report says no fixed version exists (what `ignore_unfixed` drops)."""
        return self.fix_known and self.fixed is None


@dataclass(frozen=True, slots=True)
class ScanReport:
    format: Format
    tool: str | None
    tool_version: str | None
    created: dt.datetime | None  # when the scan ran, by the report's own account
    findings: tuple[Finding, ...]
    manifest_digests: tuple[str, ...] = ()  # manifest digests the report names
    config_digests: tuple[str, ...] = ()  # config blob digests (Trivy ImageID, Grype imageID)


# -- detection and parsing -------------------------------------------------------------------


def _detect_doc(doc: Any) -> Format | None:
    if isinstance(doc, list):
        # Trivy before 0.20 (schema 1) wrote a bare list of results.
        if doc and all(isinstance(r, dict) and "Target" in r for r in doc):
            return "trivy"
        return None
    if not isinstance(doc, dict):
        return None
    if "SchemaVersion" in doc or ("ArtifactName" in doc and "Results" in doc):
        return "trivy"
    if "matches" in doc and ("source" in doc or "descriptor" in doc):
        return "grype"
    if "runs" in doc and ("version" in doc or "sarif" in str(doc.get("$schema", "")).lower()):
        return "sarif"
    return None


def detect(data: bytes) -> Format | None:
    """Which scan report format `data` holds, from its content; None if none (or not JSON).

    Duplicate keys do not hide the format: `parse` refuses them, naming the key."""
    try:
        return _detect_doc(load_json(data, unique_keys=False))
    except JSONError:
        return None


def _what_it_is(doc: Any) -> str:
    """A hint for the wrong-format message."""
    if isinstance(doc, dict):
        if "tests" in doc or ("summary" in doc and "exitcode" in doc):
            return " (it looks like a pytest-json-report test report)"
        if "bomFormat" in doc or "spdxVersion" in doc:
            return " (it looks like an SBOM)"
        keys = ", ".join(list(doc)[:5])
        return f" (a JSON object with keys {keys})" if keys else " (an empty JSON object)"
    return f" (a JSON {type(doc).__name__})"


def parse(evidence: Evidence, *, limit: int = MAX_EVIDENCE_BYTES) -> ScanReport:
    """Read a Trivy, Grype or SARIF report; EvidenceError (one line) on anything malformed.

    One JSON parse and one pass over the findings; `limit` caps the size of the evidence."""
    src = evidence.source
    check_size(evidence, limit)
    if first_char(evidence.data) == "<":
        raise EvidenceError(f"{src}: XML, not a scan report (Trivy, Grype and SARIF are JSON)")
    with gc_paused():
        try:
            doc = load_json(evidence.data)
        except JSONError as e:
            raise EvidenceError(f"{src}: invalid JSON: {e}") from None
        fmt = _detect_doc(doc)
        if fmt is None:
            raise EvidenceError(f"{src}: not a Trivy, Grype or SARIF report{_what_it_is(doc)}")
        mt = evidence.media_type
        if mt in MEDIA_TYPES and MEDIA_TYPES[mt] != fmt:
            raise EvidenceError(
                f"{src}: the artifact type says {MEDIA_TYPES[mt]} but it holds {fmt}"
            )
        if mt is not None and mt not in MEDIA_TYPES and mt.startswith("application/vnd.airlock."):
            raise EvidenceError(f"{src}: artifact type {mt} is not a scan report")
        try:
            return _PARSERS[fmt](doc, src)
        except EvidenceError:
            raise
        except (KeyError, TypeError, AttributeError, ValueError, IndexError) as e:
            # Backstop for shapes the explicit checks missed: refuse, never crash or pass.
            raise EvidenceError(
                f"{src}: malformed {fmt} report ({type(e).__name__}: {e})"
            ) from None


def _severity(value: object, src: str, where: str) -> Severity:
    sev = _SEVERITY_NAMES.get(value) if isinstance(value, str) else None  # fast path
    if sev is None:
        try:
            sev = Severity.parse(value)
        except ValueError:
            raise EvidenceError(f"{src}: unknown severity {value!r} at {where}") from None
    return sev


def _str(value: object, src: str, where: str) -> str:
    """A required, non-empty string."""
    if isinstance(value, str) and value:
        return value
    raise EvidenceError(f"{src}: {where} must be a non-empty string, not {value!r}")


def _opt_str(value: object, src: str, where: str) -> str | None:
    """An optional string; "" and null are None."""
    return _str(value, src, where) if value not in (None, "") else None


def _list(value: object, src: str, where: str) -> list[Any]:
    """A JSON array; null or absent counts as empty (Trivy writes null for "none")."""
    if value is None:
        return []
    if not isinstance(value, list):
        raise EvidenceError(f"{src}: {where} must be an array, not {type(value).__name__}")
    return value


def _obj(value: object, src: str, where: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise EvidenceError(f"{src}: {where} must be an object, not {type(value).__name__}")
    return value


_DIGEST = re.compile(r"[a-z0-9]+(?:[+._-][a-z0-9]+)*:[a-zA-Z0-9=_-]{32,}")


def _digest(value: object, src: str, where: str) -> str:
    if not isinstance(value, str) or not _DIGEST.fullmatch(value):
        raise EvidenceError(f"{src}: {where} is not a digest: {value!r}")
    return value


def _repo_digests(values: object, src: str, where: str) -> list[str]:
    out = []
    for i, v in enumerate(_list(values, src, where)):
        _name, at, digest = v.rpartition("@") if isinstance(v, str) else ("", "", "")
        if not at:
            raise EvidenceError(f"{src}: {where}[{i}] is not name@digest: {v!r}")
        out.append(_digest(digest, src, f"{where}[{i}]"))
    return out


def _time(value: object, src: str, where: str) -> dt.datetime | None:
    if value is None or value == "":
        return None
    try:
        if isinstance(value, str):
            return parse_time(value)
    except ValueError:
        pass
    raise EvidenceError(f"{src}: {where} is not an ISO 8601 time: {value!r}")


def _not_a_scan(src: str, why: str) -> EvidenceError:
    return EvidenceError(f"{src}: not a scan: {why}")


def _parse_trivy(doc: Any, src: str) -> ScanReport:
    if isinstance(doc, list):
        raise EvidenceError(
            f"{src}: Trivy schema 1 output (a bare list of results) is not supported;"
            " rescan with Trivy >= 0.20 (SchemaVersion 2)"
        )
    version = doc.get("SchemaVersion")
    if version != 2 or isinstance(version, bool):
        raise EvidenceError(f"{src}: Trivy SchemaVersion {version!r} is not supported (need 2)")
    meta = _obj(doc.get("Metadata"), src, "Metadata")
    manifests = _repo_digests(meta.get("RepoDigests"), src, "Metadata.RepoDigests")
    image_id = meta.get("ImageID")
    configs = [_digest(image_id, src, "Metadata.ImageID")] if image_id else []
    results = _list(doc.get("Results"), src, "Results")
    if not isinstance(doc.get("ArtifactName"), str) or not doc["ArtifactName"]:
        raise _not_a_scan(src, "the Trivy report has no ArtifactName (what was scanned)")
    if not results and not (manifests or configs):
        raise _not_a_scan(
            src, "the Trivy report has no Results and its Metadata names no image (ImageID)"
        )

    findings: list[Finding] = []
    add = findings.append
    names = _SEVERITY_NAMES
    for i, result in enumerate(results):
        if not isinstance(result, dict):
            raise EvidenceError(f"{src}: Results[{i}] must be an object")
        vulns = result.get("Vulnerabilities")
        if vulns:
            if not isinstance(vulns, list):
                raise EvidenceError(f"{src}: Results[{i}].Vulnerabilities must be an array")
            # The hot loop (20,000 entries must take well under a second): the fast path reads
            # the fields and checks types with as little as possible per entry.
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
                    sev = _severity(raw, src, f"Results[{i}].Vulnerabilities[{j}].Severity")
                if vid.__class__ is not str or not vid or pkg.__class__ is not str:
                    raise EvidenceError(
                        f"{src}: Results[{i}].Vulnerabilities[{j}] has a non-string"
                        " VulnerabilityID or PkgName"
                    )
                fixed = v.get("FixedVersion") or None
                add(Finding(vid, pkg, v.get("InstalledVersion") or None, fixed, sev))
        target = result.get("Target") if isinstance(result.get("Target"), str) else None
        for key, kind in (("Secrets", "secret"), ("Misconfigurations", "misconfiguration")):
            for j, x in enumerate(_list(result.get(key), src, f"Results[{i}].{key}")):
                where = f"Results[{i}].{key}[{j}]"
                x = _obj(x, src, where)
                if kind == "secret":
                    rule = _str(x.get("RuleID"), src, f"{where}.RuleID")
                elif x.get("Status", "FAIL") != "FAIL":
                    continue
                else:
                    rule = _str(x.get("AVDID") or x.get("ID"), src, f"{where}.ID")
                sev = _severity(x.get("Severity"), src, f"{where}.Severity")
                add(Finding(rule, target, None, None, sev, fix_known=False, kind=kind))
    tool = _obj(doc.get("Trivy"), src, "Trivy")
    return ScanReport(
        format="trivy",
        tool="trivy",
        tool_version=_opt_str(tool.get("Version"), src, "Trivy.Version"),
        created=_time(doc.get("CreatedAt"), src, "CreatedAt"),
        findings=tuple(findings),
        manifest_digests=tuple(manifests),
        config_digests=tuple(configs),
    )


def _parse_grype(doc: dict[str, Any], src: str) -> ScanReport:
    source = _obj(doc.get("source"), src, "source")
    target = source.get("target")
    if not (isinstance(source.get("type"), str) and source["type"] and target):
        raise _not_a_scan(src, "the Grype report has no source type and target (what was scanned)")
    findings: list[Finding] = []
    for i, m in enumerate(_list(doc.get("matches"), src, "matches")):
        where = f"matches[{i}]"
        m = _obj(m, src, where)
        vuln = _obj(m.get("vulnerability"), src, f"{where}.vulnerability")
        art = _obj(m.get("artifact"), src, f"{where}.artifact")
        fix = _obj(vuln.get("fix"), src, f"{where}.vulnerability.fix")
        versions = _list(fix.get("versions"), src, f"{where}.vulnerability.fix.versions")
        findings.append(
            Finding(
                _str(vuln.get("id"), src, f"{where}.vulnerability.id"),
                _str(art.get("name"), src, f"{where}.artifact.name"),
                _opt_str(art.get("version"), src, f"{where}.artifact.version"),
                ", ".join(str(v) for v in versions) or None,
                _severity(vuln.get("severity"), src, f"{where}.vulnerability.severity"),
            )
        )
    manifests: list[str] = []
    configs: list[str] = []
    if source["type"] == "image" and isinstance(target, dict):
        if target.get("manifestDigest"):
            manifests.append(_digest(target["manifestDigest"], src, "source.target.manifestDigest"))
        manifests += _repo_digests(target.get("repoDigests"), src, "source.target.repoDigests")
        if target.get("imageID"):
            configs.append(_digest(target["imageID"], src, "source.target.imageID"))
    descriptor = _obj(doc.get("descriptor"), src, "descriptor")
    version = descriptor.get("version")
    return ScanReport(
        format="grype",
        tool=_opt_str(descriptor.get("name"), src, "descriptor.name") or "grype",
        tool_version=version if isinstance(version, str) and version else None,
        created=_time(descriptor.get("timestamp"), src, "descriptor.timestamp"),
        findings=tuple(findings),
        manifest_digests=tuple(dict.fromkeys(manifests)),
        config_digests=tuple(configs),
    )


_LEVELS = {
    "error": Severity.HIGH,
    "warning": Severity.MEDIUM,
    "note": Severity.LOW,
    "none": Severity.UNKNOWN,
}


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


_KV_LINE = re.compile(r"^([A-Z][A-Za-z ]{1,30}): ?(.*?)\s*$", re.MULTILINE)
_VULN_LINE = re.compile(r"^Vulnerability (?:ID: ?)?(\S+)\s*$", re.MULTILINE)


def _text(value: object) -> str:
    return value.get("text", "") if isinstance(value, dict) else ""


def _parse_sarif(doc: dict[str, Any], src: str) -> ScanReport:
    version = doc.get("version")
    if version != "2.1.0":
        raise EvidenceError(f"{src}: SARIF version {version!r} is not supported (need 2.1.0)")
    runs = _list(doc.get("runs"), src, "runs")
    if not runs:
        raise _not_a_scan(src, "the SARIF report has no runs")
    findings: list[Finding] = []
    manifests: list[str] = []
    configs: list[str] = []
    times: list[dt.datetime] = []
    tools: list[tuple[object, object]] = []
    for r, run in enumerate(runs):
        rw = f"runs[{r}]"
        run = _obj(run, src, rw)
        tool = _obj(run.get("tool"), src, f"{rw}.tool")
        driver = _obj(tool.get("driver"), src, f"{rw}.tool.driver")
        if not isinstance(driver.get("name"), str) or not driver["name"]:
            raise _not_a_scan(src, f"{rw}.tool.driver.name is missing (which tool ran)")
        if run.get("results") is None:
            raise _not_a_scan(src, f"{rw}.results is absent: the analysis was not performed")
        tools.append((driver["name"], driver.get("semanticVersion") or driver.get("version")))
        rules = [_obj(x, src, f"{rw}.rules") for x in _list(driver.get("rules"), src, "rules")]
        by_id = {x["id"]: x for x in rules if isinstance(x.get("id"), str)}
        for ext in _list(tool.get("extensions"), src, "extensions"):
            for x in _list(_obj(ext, src, "extension").get("rules"), src, "extension rules"):
                if isinstance(x, dict) and isinstance(x.get("id"), str):
                    by_id.setdefault(x["id"], x)
        for inv in _list(run.get("invocations"), src, f"{rw}.invocations"):
            inv = _obj(inv, src, f"{rw}.invocations[]")
            t = inv.get("endTimeUtc") or inv.get("startTimeUtc")
            when = _time(t, src, f"{rw}.invocations[].endTimeUtc")
            if when is not None:
                times.append(when)
        props = _obj(run.get("properties"), src, f"{rw}.properties")  # Trivy's image facts
        manifests += _repo_digests(props.get("repoDigests"), src, f"{rw}.properties.repoDigests")
        if props.get("imageID"):
            configs.append(_digest(props["imageID"], src, f"{rw}.properties.imageID"))
        for i, res in enumerate(_list(run.get("results"), src, f"{rw}.results")):
            where = f"{rw}.results[{i}]"
            findings.append(_sarif_finding(_obj(res, src, where), rules, by_id, src, where))
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


def _sarif_finding(
    res: dict[str, Any],
    rules: list[dict[str, Any]],
    by_id: dict[str, dict[str, Any]],
    src: str,
    where: str,
) -> Finding:
    rule_ref = _obj(res.get("rule"), src, f"{where}.rule")
    rule_id = res.get("ruleId") or rule_ref.get("id")
    index = res.get("ruleIndex", rule_ref.get("index"))
    rule: dict[str, Any] = {}
    if isinstance(index, int) and not isinstance(index, bool) and 0 <= index < len(rules):
        rule = rules[index]
    elif isinstance(rule_id, str):
        rule = by_id.get(rule_id, {})
    if not isinstance(rule_id, str) or not rule_id:
        rule_id = rule.get("id") if isinstance(rule.get("id"), str) else f"(result {where})"

    sev = _security_severity(_obj(res.get("properties"), src, where), src, where)
    if sev is None:
        sev = _security_severity(_obj(rule.get("properties"), src, "rule"), src, f"rule {rule_id}")
    if sev is None:
        level = res.get("level")
        if level is None:
            level = _obj(rule.get("defaultConfiguration"), src, "rule").get("level", "warning")
        sev = _LEVELS.get(level) if isinstance(level, str) else None
        if sev is None:
            raise EvidenceError(f"{src}: unknown SARIF level {level!r} at {where}")

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


_PARSERS: dict[Format, Callable[[Any, str], ScanReport]] = {
    "trivy": _parse_trivy,
    "grype": _parse_grype,
    "sarif": _parse_sarif,
}


# -- evaluation ------------------------------------------------------------------------------


def evaluate(
    evidence: Evidence, policy: ScanPolicy | None = None, now: dt.datetime | None = None
) -> GateResult:
    """Judge a scan report against `policy` (default: refuse HIGH and above). Never raises for
    bad evidence: it refuses with `error` set (fail closed)."""
    policy = policy if policy is not None else ScanPolicy()
    when = as_utc(now) if now is not None else utcnow()
    return guarded(
        "scan", evidence, lambda: evaluate_report(parse(evidence), evidence, policy, when), when
    )


def _row(
    finding: str,
    status: str,
    severity: object = None,
    package: object = None,
    installed: object = None,
    fixed: object = None,
) -> dict[str, str]:
    return table_row(
        finding=finding,
        severity=severity,
        package=package,
        installed=installed,
        fixed=fixed,
        status=status,
    )


def _short(d: Iterable[str]) -> str:
    names = list(d)
    more = f" and {len(names) - 1} more" if len(names) > 1 else ""
    return f"{names[0]}{more}"


def _binding(report: ScanReport, evidence: Evidence) -> tuple[bool, str]:
    """Whether the report is about the evidence's image, and a row status saying why."""
    if evidence.subject is None:
        return True, "not checked: no digest given"
    named = report.manifest_digests
    hit = next((d for d in named if evidence.matches(d)), None)
    if named and hit is None:
        return False, f"report is for another image (names {_short(named)})"
    configs = report.config_digests
    if configs and evidence.config_digests:
        wrong = [d for d in configs if d not in evidence.config_digests]
        if wrong:
            return False, f"report is for another image (names {_short(wrong)})"
    if hit is not None:
        return True, f"report names {hit}"
    if configs and evidence.config_digests:
        return True, f"report names config {configs[0]}"
    if configs:  # fail closed: an image ID that cannot be checked is no binding at all
        return False, (
            f"report names only an image ID ({configs[0]}), which cannot be checked against"
            f" {evidence.subject} without the image's config: gate the attached report instead"
        )
    return True, "report names no image digest"


def _freshness(
    report: ScanReport, evidence: Evidence, max_age: dt.timedelta | None, now: dt.datetime
) -> tuple[dict[str, str] | None, str | None]:
    """The "report age" row (None: nothing to say) and why it refuses (None: it does not)."""
    created, origin = report.created, "report"
    if created is None:
        created, origin = evidence.created, "referrer"
    if created is None:
        if max_age is None:
            return None, None
        limit = duration_text(max_age)
        return (
            _row("report age", "unknown: the report states no time"),
            f"report states no time, and max_age is {limit}",
        )
    age = now - as_utc(created)
    if age < -CLOCK_SKEW:
        ahead = f"{duration_text(-age)} ahead, by the {origin}"
        limit = f"; max {duration_text(max_age)}" if max_age is not None else ""
        status = f"dated in the future ({ahead}{limit})"
        return _row("report age", status), f"report is dated in the future ({ahead})"
    if max_age is None:
        return None, None
    limit = duration_text(max_age)
    row = _row("report age", f"{duration_text(age)} by the {origin} (max {limit})")
    return row, (f"report is {duration_text(age)} old (max {limit})" if age > max_age else None)


@dataclass(slots=True)
class _Tally:
    """The findings that count after the allow-list and `ignore_unfixed`, and what was dropped."""

    counts: list[int]  # by Severity value
    kept: list[Finding]
    allowed: Counter[int]  # index of a live allow entry -> findings it suppressed
    revived: Counter[int]  # index of an expired allow entry -> findings that count again
    unfixed: int


def _tally(findings: Iterable[Finding], policy: ScanPolicy, now: dt.datetime) -> _Tally:
    entries: dict[str, list[tuple[int, AllowEntry]]] = {}
    for i, entry in enumerate(policy.allow):
        entries.setdefault(entry.id.upper(), []).append((i, entry))
    expired = {i for i, entry in enumerate(policy.allow) if entry.expired(now)}
    t = _Tally([0] * len(Severity), [], Counter(), Counter(), 0)
    for f in findings:
        if entries and (candidates := entries.get(f.id.upper())):
            covering = [i for i, entry in candidates if entry.covers(f)]
            live = next((i for i in covering if i not in expired), None)
            if live is not None:
                t.allowed[live] += 1
                continue
            t.revived.update(covering)
        if policy.ignore_unfixed and f.unfixed:
            t.unfixed += 1
            continue
        t.counts[f.severity] += 1
        t.kept.append(f)
    return t


def evaluate_report(
    report: ScanReport,
    evidence: Evidence,
    policy: ScanPolicy | None = None,
    now: dt.datetime | None = None,
) -> GateResult:
    """`evaluate` for a report already parsed from `evidence` (parse once, e.g. to show it)."""
    policy = policy if policy is not None else ScanPolicy()
    now = as_utc(now) if now is not None else utcnow()
    tool = " ".join(x for x in (report.tool, report.tool_version) if x)
    # "trivy dev", "grype 0.65.1", "sarif (Trivy dev)"
    what = tool if tool.lower().startswith(report.format) else f"{report.format} ({tool or '?'})"
    rows = [_row("report", f"{what}: {plural(len(report.findings), 'finding')}")]

    def result(passed: bool, summary: str) -> GateResult:
        return GateResult(
            gate="scan",
            passed=passed,
            summary=summary,
            rows=rows,
            evidence=[EvidenceRef.of(evidence)],
            evaluated_at=now,
        )

    # 1. Is this report about the image being promoted?
    bound, status = _binding(report, evidence)
    rows.append(_row("digest binding", status))
    if not bound:
        return result(False, f"refused: {status}")

    # 2. Is it fresh enough, and not from the future?
    age_row, stale = _freshness(report, evidence, policy.max_age, now)
    if age_row is not None:
        rows.append(age_row)
    if stale is not None:
        return result(False, f"refused: {stale}")

    # 3. Allow-list and unfixed findings; count what is left.
    t = _tally(report.findings, policy, now)
    counts = t.counts

    # 4. Thresholds.
    fail_on = policy.threshold
    over = {s: m for s, m in policy.max_counts.items() if counts[s] > m}
    at_or_above = {s for s in Severity if fail_on is not None and s >= fail_on and counts[s]}
    blocking = at_or_above | set(over)

    for s in _DESCENDING:
        if not counts[s] and s not in policy.max_counts:
            continue
        notes = []
        if fail_on is not None and counts[s]:
            notes.append(f"fail at {fail_on}" if s >= fail_on else f"below {fail_on}")
        if s in policy.max_counts:
            limit = f"max {policy.max_counts[s]}"
            notes.append(f"over {limit}" if s in over else f"within {limit}")
        rows.append(_row(plural(counts[s], "finding"), "; ".join(notes) or "no limit", s))
    for i, entry in enumerate(policy.allow):
        if entry.expired(now):
            again = f"; {plural(t.revived[i], 'finding')} count again" if t.revived[i] else ""
            status = f"allow-list entry {entry.id} expired {entry.expires}{again}"
        elif t.allowed[i]:
            n = plural(t.allowed[i], "finding")
            status = f"allowed until {entry.expires}: {entry.reason} ({n})"
        else:
            continue
        rows.append(_row(entry.id, status, package=entry.package))
    if t.unfixed:
        rows.append(_row(plural(t.unfixed, "finding"), "ignored: no fixed version"))

    shown = sorted(
        (f for f in t.kept if f.severity in blocking),
        key=lambda f: (-f.severity, f.id, f.package or ""),
    )
    rows += capped_rows(
        shown,
        lambda f: _row(
            f.id,
            "blocks" if f.kind == "vulnerability" else f"blocks ({f.kind})",
            f.severity,
            f.package,
            f.installed,
            f.fixed,
        ),
        lambda more: _row(more, "blocks"),
    )

    counted = ", ".join(f"{counts[s]} {s}" for s in _DESCENDING if counts[s])
    extras = []
    if t.allowed:
        extras.append(f"{t.allowed.total()} allow-listed")
    if t.unfixed:
        extras.append(f"{t.unfixed} unfixed ignored")
    if n_expired := sum(entry.expired(now) for entry in policy.allow):
        extras.append(f"allow-list: {n_expired} expired")
    if not blocking:
        inner = "; ".join([counted or "no findings", *extras])
        if fail_on is None:
            return result(True, f"passed: {inner}")
        return result(True, f"passed: 0 at or above {fail_on} ({inner})")
    reasons = [f"fail at {fail_on}"] if at_or_above else []
    reasons += [f"max {m} {s}" for s, m in sorted(over.items(), reverse=True)]
    named = f": {_named(shown)}" if shown else ""  # `shown` is never empty here; no dangling ":"
    return result(False, f"refused: {counted} ({'; '.join(reasons + extras)}){named}")


# A refusal's one-line summary names the findings that caused it: at most SUMMARY_FINDINGS, in
# at most _NAMED_CHARS (a finding is ~60 characters; each string from the report is cut to
# _FIELD_CHARS, so a hostile report fits ~3), then "and N more". The rows name up to MAX_ROWS.
SUMMARY_FINDINGS = 5
_FIELD_CHARS = 40
_NAMED_CHARS = 700


def _clip(value: str) -> str:
    """A report's string made safe for a one-line summary: no control characters or line
    breaks (they could forge log lines or move a terminal's cursor), at most _FIELD_CHARS."""
    text = " ".join("".join(c if c.isprintable() else " " for c in value).split())
    return text if len(text) <= _FIELD_CHARS else text[: _FIELD_CHARS - 1] + "…"


def _finding_text(f: Finding) -> str:
    """`CVE-2023-1234 openssl 3.0.2 CRITICAL (fixed in 3.0.7)`; `(no fix)` when the report says
    there is none, `(fix unknown)` when it says nothing (SARIF), `(secret)` for a secret…"""
    if f.kind != "vulnerability":
        fix = f.kind
    elif f.fixed is not None:
        fix = f"fixed in {_clip(f.fixed)}"
    else:
        fix = "no fix" if f.fix_known else "fix unknown"
    facts = [_clip(x) for x in (f.id, f.package, f.installed) if x]
    return f"{' '.join(facts)} {f.severity} ({fix})"


def _named(shown: list[Finding]) -> str:
    """The findings that refused (already most severe first), capped, for the summary."""
    texts: list[str] = []
    size = 0
    for f in shown[:SUMMARY_FINDINGS]:
        text = _finding_text(f)
        size += len(text) + (2 if texts else 0)
        if texts and size > _NAMED_CHARS:
            break
        texts.append(text)
    more = len(shown) - len(texts)
    return ", ".join(texts) + (f" and {more} more" if more > 0 else "")
