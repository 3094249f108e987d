"""The finding model every scan format is parsed into: Severity, Finding, ScanReport.

What each format's fields mean, and how they map onto these: docs/formats.md.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from enum import IntEnum
from typing import Annotated, Literal

from pydantic import BeforeValidator, PlainSerializer, WithJsonSchema

Format = Literal["trivy", "grype", "sarif"]


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
        found = SEVERITY_NAMES.get(value.strip().upper()) if isinstance(value, str) else None
        if found is None:
            names = ", ".join(s.name for s in cls)
            raise ValueError(f"unknown severity {value!r} (expected one of {names})")
        return found


SEVERITY_NAMES: dict[str, Severity] = {s.name: s for s in Severity}
DESCENDING = sorted(Severity, reverse=True)

# A Severity in a policy: its name in any case in, its name out (in JSON).
SeverityName = Annotated[
    Severity,
    BeforeValidator(Severity.parse),
    PlainSerializer(lambda s: s.name, when_used="json"),
    WithJsonSchema({"enum": [s.name for s in Severity]}),
]


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
