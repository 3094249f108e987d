"""Judging a parsed scan report against a ScanPolicy, and `evaluate` (parse, then judge).

The evaluation order (binding, age, allow-list, `ignore_unfixed`, `fail_on`, `max_counts`; the
first refusal wins) is described in docs/formats.md, "Scan reports: evaluation"; the rows and the
one-line summary are built in gates/scan/render.py.
"""

from __future__ import annotations

import datetime as dt
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass

from gates.base import Evidence, EvidenceRef, GateResult, guarded, utcnow
from gates.common import CLOCK_SKEW, as_utc, duration_text
from gates.scan import render
from gates.scan.formats import parse
from gates.scan.model import Finding, ScanReport, Severity
from gates.scan.policy import AllowEntry, ScanPolicy


def evaluate(
    evidence: Evidence, policy: ScanPolicy | None = None, now: dt.datetime | None = None
) -> GateResult:
    """Judge a scan report against `policy` (default: refuse HIGH and above). Never raises for
    bad evidence: it refuses with `error` set (fail closed)."""
    policy = policy if policy is not None else ScanPolicy()
    when = as_utc(now) if now is not None else utcnow()
    return guarded("scan", evidence, lambda: judge(parse(evidence), evidence, policy, when), when)


def judge(
    report: ScanReport,
    evidence: Evidence,
    policy: ScanPolicy | None = None,
    now: dt.datetime | None = None,
) -> GateResult:
    """The verdict on a report already parsed from `evidence` (what `evaluate` does after
    `parse`; parse once, e.g. to show it)."""
    policy = policy if policy is not None else ScanPolicy()
    now = as_utc(now) if now is not None else utcnow()
    rows = [render.report_row(report)]
    refusal = _refuse_binding_or_age(report, evidence, policy, now, rows)
    if refusal is not None:
        passed, summary = False, refusal
    else:
        passed, summary = _judge_findings(report, policy, now, rows)
    return GateResult(
        gate="scan",
        passed=passed,
        summary=summary,
        rows=rows,
        evidence=[EvidenceRef.of(evidence)],
        evaluated_at=now,
    )


def _refuse_binding_or_age(
    report: ScanReport,
    evidence: Evidence,
    policy: ScanPolicy,
    now: dt.datetime,
    rows: list[dict[str, str]],
) -> str | None:
    """Steps 1 and 2: is the report about the image being promoted, and is it fresh enough and
    not from the future? Adds their rows; the refusal's summary, or None to go on."""
    bound, status = _binding(report, evidence)
    rows.append(render.row("digest binding", status))
    if not bound:
        return f"refused: {status}"
    age_row, stale = _freshness(report, evidence, policy.max_age, now)
    if age_row is not None:
        rows.append(age_row)
    if stale is not None:
        return f"refused: {stale}"
    return None


def _judge_findings(
    report: ScanReport, policy: ScanPolicy, now: dt.datetime, rows: list[dict[str, str]]
) -> tuple[bool, str]:
    """Steps 3 and 4: the allow-list and unfixed findings, then the thresholds on what is left.
    Adds the rows; whether it passes, and the summary."""
    tally = _tally(report.findings, policy, now)
    limits = Thresholds.of(tally.counts, policy)
    shown = sorted(
        (f for f in tally.kept if f.severity in limits.blocking),
        key=lambda f: (-f.severity, f.id, f.package or ""),
    )
    rows += render.severity_rows(tally.counts, policy, limits)
    rows += render.allow_rows(policy, tally, now)
    rows += render.unfixed_rows(tally)
    rows += render.finding_rows(shown)
    return not limits.blocking, render.summary(tally, policy, limits, shown, now)


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
            render.row("report age", "unknown: the report states no time"),
            f"report states no time, and max_age is {limit}",
        )
    age = now - as_utc(created)
    if age < -CLOCK_SKEW:
        ahead = f"{duration_text(-age)} ahead, by the {origin}"
        limit = f"; max {duration_text(max_age)}" if max_age is not None else ""
        status = f"dated in the future ({ahead}{limit})"
        return render.row("report age", status), f"report is dated in the future ({ahead})"
    if max_age is None:
        return None, None
    limit = duration_text(max_age)
    row = render.row("report age", f"{duration_text(age)} by the {origin} (max {limit})")
    return row, (f"report is {duration_text(age)} old (max {limit})" if age > max_age else None)


@dataclass(slots=True)
class Tally:
    """The findings that count after the allow-list and `ignore_unfixed`, and what was dropped."""

    counts: list[int]  # by Severity value
    kept: list[Finding]
    allowed: Counter[int]  # index of a live allow entry -> findings it suppressed
    revived: Counter[int]  # index of an expired allow entry -> findings that count again
    unfixed: int


def _tally(findings: Iterable[Finding], policy: ScanPolicy, now: dt.datetime) -> Tally:
    entries: dict[str, list[tuple[int, AllowEntry]]] = {}
    for i, entry in enumerate(policy.allow):
        entries.setdefault(entry.id.upper(), []).append((i, entry))
    expired = {i for i, entry in enumerate(policy.allow) if entry.expired(now)}
    t = Tally([0] * len(Severity), [], Counter(), Counter(), 0)
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


@dataclass(frozen=True, slots=True)
class Thresholds:
    """What the counts break: `fail_on` (None: "never") and `max_counts`."""

    fail_on: Severity | None
    over: dict[Severity, int]  # the max_counts exceeded
    at_or_above: set[Severity]  # severities with findings at or above fail_on
    blocking: set[Severity]  # either of the two

    @classmethod
    def of(cls, counts: list[int], policy: ScanPolicy) -> Thresholds:
        fail_on = policy.threshold
        over = {s: m for s, m in policy.max_counts.items() if counts[s] > m}
        at_or_above = {s for s in Severity if fail_on is not None and s >= fail_on and counts[s]}
        return cls(fail_on, over, at_or_above, at_or_above | set(over))
