"""The soak gate: a digest must have spent at least `min` in the previous stage.

The time is measured from when the digest entered that stage, by something airlock or the
registry recorded: its promotion record there, or, for the first stage (where images arrive by
push, with no record), the first push event the Prefect server received for it — never the image
config's `created`, which the builder sets (1970 in every reproducible build). Loading that time
is the caller's job (flows/hops.py: entered); evaluation is pure. No time at all, or a time in the
future, refuses.
"""

from __future__ import annotations

import datetime as dt

from pydantic import field_validator

from gates.base import EvidenceRef, GateResult, Policy, table_row, utcnow
from gates.common import CLOCK_SKEW, Duration, as_utc, duration_text


class SoakPolicy(Policy):
    min: Duration  # e.g. "30m", "24h", "7d"

    @field_validator("min")
    @classmethod
    def _not_negative(cls, value: dt.timedelta) -> dt.timedelta:
        if value < dt.timedelta(0):
            raise ValueError("min must not be negative, e.g. 30m or 24h")
        return value


def evaluate(
    entered: dt.datetime | None,
    policy: SoakPolicy,
    *,
    subject: str,
    stage: str,
    source: str,
    now: dt.datetime | None = None,
) -> GateResult:
    """`entered`: when `subject` entered `stage`, per `source` (a record or the image config)."""
    at = now or utcnow()
    evidence = [EvidenceRef(source=source, digest=subject, subject=subject, created=entered)]

    def result(passed: bool, summary: str, soaked: str) -> GateResult:
        row = table_row(
            check=f"time in {stage}",
            actual=soaked,
            limit=f">= {duration_text(policy.min)}",
            ok="yes" if passed else "no",
        )
        return GateResult(
            gate="soak",
            passed=passed,
            summary=summary,
            rows=[row],
            evidence=evidence,
            evaluated_at=at,
        )

    if entered is None:
        return result(
            False,
            f"refused: nothing airlock or the registry recorded says when {subject[:19]} entered"
            f" {stage} (looked for: {source})",
            "unknown",
        )
    soaked = at - as_utc(entered)
    if soaked < -CLOCK_SKEW:
        return result(
            False,
            f"refused: {stage} entry is dated in the future ({source})",
            duration_text(soaked),
        )
    if soaked < policy.min:
        wait = duration_text(policy.min - soaked)
        return result(
            False,
            f"refused: {duration_text(soaked)} in {stage}, needs"
            f" {duration_text(policy.min)} (another {wait})",
            duration_text(soaked),
        )
    return result(
        True,
        f"passed: {duration_text(soaked)} in {stage} (min {duration_text(policy.min)})",
        duration_text(soaked),
    )
