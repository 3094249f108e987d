"""ScanPolicy and its parts: the `fail_on` threshold, `max_counts`, allow-list entries.

The severity order and how each format's severities map onto it: docs/formats.md.
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Literal

from pydantic import (
    BeforeValidator,
    Field,
    NonNegativeInt,
    StringConstraints,
    field_validator,
)

from gates.base import Policy, ReportPolicy
from gates.common import Duration, as_utc
from gates.scan.model import Finding, Severity, SeverityName


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
