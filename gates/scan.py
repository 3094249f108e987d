"""The scan gate: vulnerability reports from Trivy, Grype or any SARIF 2.1.0 producer.

    report = parse(evidence)                       # EvidenceError on anything malformed
    result = evaluate(evidence, ScanPolicy(fail_on="CRITICAL"), now=...)

Formats (detected from the content, never from the file name):

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

Severity order: UNKNOWN < NEGLIGIBLE < LOW < MEDIUM < HIGH < CRITICAL, case-insensitive (Grype
writes "Negligible", "Unknown"). Any other severity string in a report is an EvidenceError; in a
policy, a validation error.

Evaluation order (first refusal wins): the evidence must parse; the digests the report names must
be the image being promoted; the report must be younger than `max_age`; then allow-list,
`ignore_unfixed`, `fail_on` and `max_counts`. A refusal for a wrong image or a stale report is a
policy refusal (exit 1, `error` unset); unusable evidence sets `error` (exit 2).
"""

from __future__ import annotations

import datetime as dt
import gc
import re
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from enum import IntEnum
from typing import Annotated, Any, Literal

from pydantic import BeforeValidator, Field, NonNegativeInt, StringConstraints, field_validator
from pydantic_core import core_schema, from_json

from gates.base import (
    MAX_EVIDENCE_BYTES,
    Evidence,
    EvidenceError,
    EvidenceRef,
    GateResult,
    Policy,
    age_of,
    check_size,
    guarded,
    table_row,
    utcnow,
)
from registry import mediatypes

Format = Literal["trivy", "grype", "sarif"]

# Artifact types (DESIGN.md) and the format each promises.
MEDIA_TYPES: dict[str, Format] = {
    mediatypes.SCAN_REPORT_TRIVY: "trivy",
    mediatypes.SCAN_REPORT_GRYPE: "grype",
    mediatypes.SARIF: "sarif",
}

MAX_FINDING_ROWS = 50  # blocking findings listed in the rows; the rest are summarised


class Severity(IntEnum):
    """Ordered severities; compare with < and >=. Parses names case-insensitively."""

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
    def _missing_(cls, value: object) -> Severity | None:
        if isinstance(value, str):
            return _SEVERITY_NAMES.get(value.strip().upper())
        return None

    @classmethod
    def parse(cls, value: object) -> Severity:
        """A Severity from its name in any case; ValueError for anything else."""
        if isinstance(value, Severity):
            return value
        if isinstance(value, str):
            found = _SEVERITY_NAMES.get(value.strip().upper())
            if found is not None:
                return found
        names = ", ".join(s.name for s in cls)
        raise ValueError(f"unknown severity {value!r} (expected one of {names})")

    @classmethod
    def __get_pydantic_core_schema__(cls, source: Any, handler: Any) -> core_schema.CoreSchema:
        return core_schema.no_info_plain_validator_function(
            cls.parse,
            json_schema_input_schema=core_schema.literal_schema([s.name for s in cls]),
            serialization=core_schema.plain_serializer_function_ser_schema(
                lambda s: s.name, when_used="json"
            ),
        )


_SEVERITY_NAMES: dict[str, Severity] = {s.name: s for s in Severity}
_DESCENDING = sorted(Severity, reverse=True)


# -- policy ----------------------------------------------------------------------------------

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_SHORT_DURATION = re.compile(r"\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*", re.IGNORECASE)


def _short_duration(value: object) -> object:
    """Accept "7d", "24h", "90m", "30s", "2w" besides what pydantic reads (ISO 8601, seconds)."""
    if isinstance(value, str):
        m = _SHORT_DURATION.fullmatch(value)
        if m:
            return dt.timedelta(seconds=float(m[1]) * _UNITS[m[2].lower()])
    return value


NonEmpty = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1)]
Duration = Annotated[dt.timedelta, BeforeValidator(_short_duration)]


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
        return _as_utc(now).date() >= self.expires

    def covers(self, finding: Finding) -> bool:
        return finding.id.upper() == self.id.upper() and (
            self.package is None or self.package == finding.package
        )


class ScanPolicy(Policy):
    """What the scan gate refuses. The default refuses any finding at HIGH or above."""

    fail_on: Severity | None = Severity.HIGH  # refuse any finding at or above; None: never
    max_counts: dict[Severity, NonNegativeInt] = Field(default_factory=dict)  # per severity
    ignore_unfixed: bool = False  # drop findings the report says have no fixed version
    allow: list[AllowEntry] = Field(default_factory=list)
    max_age: Duration | None = None  # of the report (its own time, else the referrer's)

    @field_validator("max_age")
    @classmethod
    def _positive(cls, value: dt.timedelta | None) -> dt.timedelta | None:
        if value is not None and value <= dt.timedelta(0):
            raise ValueError("max_age must be positive")
        return value


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
    artifact: str | None = None  # what the scanner was pointed at (name, tag, path)

    def counts(self) -> dict[Severity, int]:
        counts = dict.fromkeys(Severity, 0)
        for f in self.findings:
            counts[f.severity] += 1
        return counts


# -- detection and parsing -------------------------------------------------------------------


@contextmanager
def _gc_paused() -> Iterator[None]:
    """Pause the cyclic GC while building a big acyclic tree: halves the parse of a 60 MB report
    (each allocation burst otherwise triggers collections that scan every object built so far)."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def _load_json(data: bytes, source: str) -> Any:
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):  # PowerShell 5 `>` writes UTF-16
        try:
            data = data.decode("utf-16").encode()
        except UnicodeDecodeError as e:
            raise EvidenceError(f"{source}: not valid UTF-16 text ({e.reason})") from None
    data = data.removeprefix(b"\xef\xbb\xbf")
    try:
        # pydantic-core's parser (jiter): about twice as fast as json.loads on big reports.
        return from_json(data, allow_inf_nan=False)
    except ValueError as e:
        if data.lstrip()[:1] == b"<":
            raise EvidenceError(
                f"{source}: XML, not a scan report (Trivy, Grype and SARIF reports are JSON)"
            ) from None
        raise EvidenceError(f"{source}: not valid JSON: {e}") from None


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
    """Which scan report format `data` holds, from its content; None if none (or not JSON)."""
    try:
        with _gc_paused():
            return _detect_doc(_load_json(data, "<data>"))
    except EvidenceError:
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
    with _gc_paused():
        return _parse(evidence, src)


def _parse(evidence: Evidence, src: str) -> ScanReport:
    doc = _load_json(evidence.data, src)
    fmt = _detect_doc(doc)
    if fmt is None:
        raise EvidenceError(f"{src}: not a Trivy, Grype or SARIF report{_what_it_is(doc)}")
    mt = evidence.media_type
    if mt in MEDIA_TYPES and MEDIA_TYPES[mt] != fmt:
        raise EvidenceError(f"{src}: the artifact type says {MEDIA_TYPES[mt]} but it holds {fmt}")
    if mt is not None and mt not in MEDIA_TYPES and mt.startswith("application/vnd.airlock."):
        raise EvidenceError(f"{src}: artifact type {mt} is not a scan report")
    parser = _PARSERS[fmt]
    try:
        return parser(doc, src)
    except EvidenceError:
        raise
    except (KeyError, TypeError, AttributeError, ValueError, IndexError) as e:
        # Backstop for shapes the explicit checks below missed: refuse, never crash or pass.
        raise EvidenceError(f"{src}: malformed {fmt} report ({type(e).__name__}: {e})") from None


def _severity(value: object, src: str, where: str) -> Severity:
    sev = _SEVERITY_NAMES.get(value) if isinstance(value, str) else None  # fast path
    if sev is None:
        try:
            sev = Severity.parse(value)
        except ValueError:
            raise EvidenceError(f"{src}: unknown severity {value!r} at {where}") from None
    return sev


def _str(value: object, src: str, where: str, *, required: bool = True) -> str | None:
    if isinstance(value, str) and (value or not required):
        return value or None
    if value is None and not required:
        return None
    raise EvidenceError(f"{src}: {where} must be a non-empty string, not {value!r}")


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
    if isinstance(value, str):
        try:
            t = dt.datetime.fromisoformat(value)
        except ValueError:
            pass
        else:
            return _as_utc(t)
    raise EvidenceError(f"{src}: {where} is not an ISO 8601 time: {value!r}")


def _as_utc(t: dt.datetime) -> dt.datetime:
    return t.replace(tzinfo=dt.UTC) if t.tzinfo is None else t


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
    tool = _obj(doc.get("Trivy"), src, "Trivy")

    findings: list[Finding] = []
    add = findings.append
    names = _SEVERITY_NAMES
    for i, result in enumerate(_list(doc.get("Results"), src, "Results")):
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
                add(
                    Finding(
                        vid,
                        pkg,
                        v.get("InstalledVersion") or None,
                        v.get("FixedVersion") or None,
                        sev,
                    )
                )
        target = result.get("Target")
        for j, s in enumerate(_list(result.get("Secrets"), src, f"Results[{i}].Secrets")):
            where = f"Results[{i}].Secrets[{j}]"
            s = _obj(s, src, where)
            add(
                Finding(
                    _str(s.get("RuleID"), src, f"{where}.RuleID") or "",
                    target if isinstance(target, str) else None,
                    None,
                    None,
                    _severity(s.get("Severity"), src, f"{where}.Severity"),
                    fix_known=False,
                    kind="secret",
                )
            )
        misconfs = _list(result.get("Misconfigurations"), src, f"Results[{i}].Misconfigurations")
        for j, m in enumerate(misconfs):
            where = f"Results[{i}].Misconfigurations[{j}]"
            m = _obj(m, src, where)
            if m.get("Status", "FAIL") != "FAIL":
                continue
            add(
                Finding(
                    _str(m.get("AVDID") or m.get("ID"), src, f"{where}.ID") or "",
                    target if isinstance(target, str) else None,
                    None,
                    None,
                    _severity(m.get("Severity"), src, f"{where}.Severity"),
                    fix_known=False,
                    kind="misconfiguration",
                )
            )
    return ScanReport(
        format="trivy",
        tool="trivy",
        tool_version=_str(tool.get("Version"), src, "Trivy.Version", required=False),
        created=_time(doc.get("CreatedAt"), src, "CreatedAt"),
        findings=tuple(findings),
        manifest_digests=tuple(manifests),
        config_digests=tuple(configs),
        artifact=_str(doc.get("ArtifactName"), src, "ArtifactName", required=False),
    )


def _parse_grype(doc: dict[str, Any], src: str) -> ScanReport:
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
                _str(vuln.get("id"), src, f"{where}.vulnerability.id") or "",
                _str(art.get("name"), src, f"{where}.artifact.name"),
                _str(art.get("version"), src, f"{where}.artifact.version", required=False),
                ", ".join(str(v) for v in versions) or None,
                _severity(vuln.get("severity"), src, f"{where}.vulnerability.severity"),
            )
        )
    source = _obj(doc.get("source"), src, "source")
    target = source.get("target")
    manifests: list[str] = []
    configs: list[str] = []
    artifact = None
    if source.get("type") == "image" and isinstance(target, dict):
        if target.get("manifestDigest"):
            manifests.append(_digest(target["manifestDigest"], src, "source.target.manifestDigest"))
        manifests += _repo_digests(target.get("repoDigests"), src, "source.target.repoDigests")
        if target.get("imageID"):
            configs.append(_digest(target["imageID"], src, "source.target.imageID"))
        artifact = target.get("userInput")
    elif isinstance(target, str):
        artifact = target
    descriptor = _obj(doc.get("descriptor"), src, "descriptor")
    version = descriptor.get("version")
    return ScanReport(
        format="grype",
        tool=_str(descriptor.get("name"), src, "descriptor.name", required=False) or "grype",
        tool_version=version if isinstance(version, str) and version else None,
        created=_time(descriptor.get("timestamp"), src, "descriptor.timestamp"),
        findings=tuple(findings),
        manifest_digests=tuple(dict.fromkeys(manifests)),
        config_digests=tuple(configs),
        artifact=artifact if isinstance(artifact, str) else None,
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
    findings: list[Finding] = []
    manifests: list[str] = []
    configs: list[str] = []
    times: list[dt.datetime] = []
    tools: list[tuple[str | None, str | None]] = []
    for r, run in enumerate(_list(doc.get("runs"), src, "runs")):
        rw = f"runs[{r}]"
        run = _obj(run, src, rw)
        driver = _obj(_obj(run.get("tool"), src, f"{rw}.tool").get("driver"), src, "driver")
        tools.append((driver.get("name"), driver.get("semanticVersion") or driver.get("version")))
        rules = [_obj(x, src, f"{rw}.rules") for x in _list(driver.get("rules"), src, "rules")]
        by_id = {x["id"]: x for x in rules if isinstance(x.get("id"), str)}
        for ext in _list(_obj(run.get("tool"), src, "tool").get("extensions"), src, "extensions"):
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
    name, tool_version = tools[0] if tools else (None, None)
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
    when = _as_utc(now) if now is not None else utcnow()
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


def _n(count: int, noun: str) -> str:
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"


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
    if configs:
        return True, f"report names only config {configs[0]}, no config digest known to check"
    return True, "report names no image digest"


def _duration_text(td: dt.timedelta) -> str:
    seconds = int(td.total_seconds())
    sign, seconds = ("-", -seconds) if seconds < 0 else ("", seconds)
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        text = f"{days}d {hours}h" if hours else f"{days}d"
    elif hours:
        text = f"{hours}h {minutes}m" if minutes else f"{hours}h"
    elif minutes:
        text = f"{minutes}m {secs}s" if secs else f"{minutes}m"
    else:
        text = f"{secs}s"
    return sign + text


def evaluate_report(
    report: ScanReport,
    evidence: Evidence,
    policy: ScanPolicy | None = None,
    now: dt.datetime | None = None,
) -> GateResult:
    """`evaluate` for a report already parsed from `evidence` (parse once, e.g. to show it)."""
    policy = policy if policy is not None else ScanPolicy()
    now = _as_utc(now) if now is not None else utcnow()
    used = [EvidenceRef.of(evidence)]
    tool = " ".join(x for x in (report.tool, report.tool_version) if x)
    # "trivy dev", "grype 0.65.1", "sarif (Trivy dev)"
    what = tool if tool.lower().startswith(report.format) else f"{report.format} ({tool or '?'})"
    rows = [_row("report", f"{what}: {_n(len(report.findings), 'finding')}")]

    def refuse(reason: str) -> GateResult:
        return GateResult(
            gate="scan",
            passed=False,
            summary=f"refused: {reason}",
            rows=rows,
            evidence=used,
            evaluated_at=now,
        )

    # 1. Is this report about the image being promoted?
    bound, status = _binding(report, evidence)
    rows.append(_row("digest binding", status))
    if not bound:
        return refuse(status)

    # 2. Is it fresh enough?
    if policy.max_age is not None:
        created, origin = report.created, "report"
        if created is None:
            created, origin = evidence.created, "referrer"
        age = age_of(created, now)
        if age is None:
            rows.append(_row("report age", "unknown: the report states no time"))
            return refuse(f"report states no time, and max_age is {_duration_text(policy.max_age)}")
        limit = _duration_text(policy.max_age)
        rows.append(_row("report age", f"{_duration_text(age)} by the {origin} (max {limit})"))
        if age > policy.max_age:
            return refuse(f"report is {_duration_text(age)} old (max {limit})")

    # 3. Allow-list and unfixed findings; count what is left.
    active: dict[str, list[AllowEntry]] = {}
    expired: list[AllowEntry] = []
    for entry in policy.allow:
        if entry.expired(now):
            expired.append(entry)
        else:
            active.setdefault(entry.id.upper(), []).append(entry)
    expired_by_id: dict[str, list[AllowEntry]] = {}
    for entry in expired:
        expired_by_id.setdefault(entry.id.upper(), []).append(entry)
    allowed: dict[int, int] = {}  # id(entry) -> findings it suppressed
    revived: dict[int, int] = {}  # id(expired entry) -> findings that count again
    unfixed = 0
    counts = [0] * len(Severity)
    kept: list[Finding] = []
    check_allow = bool(active or expired_by_id)
    ignore_unfixed = policy.ignore_unfixed
    for f in report.findings:
        if check_allow:
            key = f.id.upper()
            entry = next((e for e in active.get(key, ()) if e.covers(f)), None)
            if entry is not None:
                allowed[id(entry)] = allowed.get(id(entry), 0) + 1
                continue
            for e in expired_by_id.get(key, ()):
                if e.covers(f):
                    revived[id(e)] = revived.get(id(e), 0) + 1
        if ignore_unfixed and f.fixed is None and f.fix_known:
            unfixed += 1
            continue
        counts[f.severity] += 1
        kept.append(f)

    # 4. Thresholds.
    fail_on = policy.fail_on
    over = {s: m for s, m in policy.max_counts.items() if counts[s] > m}
    at_or_above = sum(counts[s] for s in Severity if fail_on is not None and s >= fail_on)
    blocking = {s for s in Severity if (fail_on is not None and s >= fail_on) or s in over}
    blocking = {s for s in blocking if counts[s]}
    passed = not blocking

    for s in _DESCENDING:
        if not counts[s] and s not in policy.max_counts:
            continue
        notes = []
        if fail_on is not None and counts[s]:
            notes.append(f"fail at {fail_on}" if s >= fail_on else f"below {fail_on}")
        if s in policy.max_counts:
            limit_text = f"max {policy.max_counts[s]}"
            notes.append(f"over {limit_text}" if s in over else f"within {limit_text}")
        rows.append(_row(_n(counts[s], "finding"), "; ".join(notes) or "no limit", s))
    for entry in policy.allow:
        if entry.expired(now):
            n = revived.get(id(entry), 0)
            again = f"; {_n(n, 'finding')} count again" if n else ""
            status = f"allow-list entry {entry.id} expired {entry.expires}{again}"
        elif allowed.get(id(entry)):
            status = (
                f"allowed until {entry.expires}: {entry.reason}"
                f" ({_n(allowed[id(entry)], 'finding')})"
            )
        else:
            continue
        rows.append(_row(entry.id, status, package=entry.package))
    if unfixed:
        rows.append(_row(_n(unfixed, "finding"), "ignored: no fixed version"))

    if blocking:
        shown = sorted(
            (f for f in kept if f.severity in blocking),
            key=lambda f: (-f.severity, f.id, f.package or ""),
        )
        for f in shown[:MAX_FINDING_ROWS]:
            status = "blocks" if f.kind == "vulnerability" else f"blocks ({f.kind})"
            rows.append(_row(f.id, status, f.severity, f.package, f.installed, f.fixed))
        if len(shown) > MAX_FINDING_ROWS:
            rows.append(_row(f"… {len(shown) - MAX_FINDING_ROWS} more", "blocks"))

    counted = ", ".join(f"{counts[s]} {s}" for s in _DESCENDING if counts[s])
    extras = []
    if allowed:
        extras.append(f"{sum(allowed.values())} allow-listed")
    if unfixed:
        extras.append(f"{unfixed} unfixed ignored")
    if expired:
        extras.append(f"allow-list: {len(expired)} expired")
    if passed:
        inner = "; ".join([counted or "no findings", *extras])
        if fail_on is not None:
            summary = f"passed: 0 at or above {fail_on} ({inner})"
        else:
            summary = f"passed: {inner}"
    else:
        reasons = []
        if at_or_above:
            reasons.append(f"fail at {fail_on}")
        reasons += [f"max {m} {s}" for s, m in sorted(over.items(), reverse=True)]
        summary = f"refused: {counted} ({'; '.join(reasons + extras)})"
    return GateResult(
        gate="scan",
        passed=passed,
        summary=summary,
        rows=rows,
        evidence=used,
        evaluated_at=now,
    )
