"""A scan verdict for people: the table rows and the one-line summary (gates/scan/verdict.py
decides; this only says it).

A refusal's summary names the findings that caused it: at most SUMMARY_FINDINGS, in at most
_NAMED_CHARS (a finding is ~60 characters; each string from the report is cut to _FIELD_CHARS, so
a hostile report fits ~3), then "and N more". The rows name up to MAX_ROWS (gates/common.py).
"""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING

from gates.base import table_row
from gates.common import capped_rows, plural
from gates.scan.model import DESCENDING, Finding, ScanReport, Severity
from gates.scan.policy import AllowEntry, ScanPolicy

if TYPE_CHECKING:
    from gates.scan.verdict import Tally, Thresholds

SUMMARY_FINDINGS = 5
_FIELD_CHARS = 40
_NAMED_CHARS = 700


def row(
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


# -- rows ----------------------------------------------------------------------------------------


def report_row(report: ScanReport) -> dict[str, str]:
    """What the report is: "trivy dev", "grype 0.65.1", "sarif (Trivy dev)", and its findings."""
    tool = " ".join(x for x in (report.tool, report.tool_version) if x)
    what = tool if tool.lower().startswith(report.format) else f"{report.format} ({tool or '?'})"
    return row("report", f"{what}: {plural(len(report.findings), 'finding')}")


def severity_rows(
    counts: list[int], policy: ScanPolicy, limits: Thresholds
) -> list[dict[str, str]]:
    """One row per severity that has findings or a max_count, most severe first."""
    return [
        row(plural(counts[s], "finding"), _severity_status(s, counts[s], policy, limits), s)
        for s in DESCENDING
        if counts[s] or s in policy.max_counts
    ]


def _severity_status(s: Severity, count: int, policy: ScanPolicy, limits: Thresholds) -> str:
    notes = []
    fail_on = limits.fail_on
    if fail_on is not None and count:
        notes.append(f"fail at {fail_on}" if s >= fail_on else f"below {fail_on}")
    if s in policy.max_counts:
        limit = f"max {policy.max_counts[s]}"
        notes.append(f"over {limit}" if s in limits.over else f"within {limit}")
    return "; ".join(notes) or "no limit"


def allow_rows(policy: ScanPolicy, tally: Tally, now: dt.datetime) -> list[dict[str, str]]:
    """A row per allow-list entry that expired or suppressed a finding."""
    rows = []
    for i, entry in enumerate(policy.allow):
        status = _allow_status(entry, tally.allowed[i], tally.revived[i], now)
        if status is not None:
            rows.append(row(entry.id, status, package=entry.package))
    return rows


def _allow_status(entry: AllowEntry, allowed: int, revived: int, now: dt.datetime) -> str | None:
    if entry.expired(now):
        again = f"; {plural(revived, 'finding')} count again" if revived else ""
        return f"allow-list entry {entry.id} expired {entry.expires}{again}"
    if allowed:
        return f"allowed until {entry.expires}: {entry.reason} ({plural(allowed, 'finding')})"
    return None


def unfixed_rows(tally: Tally) -> list[dict[str, str]]:
    if not tally.unfixed:
        return []
    return [row(plural(tally.unfixed, "finding"), "ignored: no fixed version")]


def finding_rows(shown: list[Finding]) -> list[dict[str, str]]:
    """A row per blocking finding, capped at MAX_ROWS."""
    return capped_rows(
        shown,
        lambda f: row(
            f.id,
            "blocks" if f.kind == "vulnerability" else f"blocks ({f.kind})",
            f.severity,
            f.package,
            f.installed,
            f.fixed,
        ),
        lambda more: row(more, "blocks"),
    )


# -- the summary ---------------------------------------------------------------------------------


def summary(
    tally: Tally,
    policy: ScanPolicy,
    limits: Thresholds,
    shown: list[Finding],
    now: dt.datetime,
) -> str:
    """ "passed: …" or "refused: …", with the counts, what was dropped, and what blocks."""
    counts = tally.counts
    counted = ", ".join(f"{counts[s]} {s}" for s in DESCENDING if counts[s])
    extras = _dropped(tally, policy, now)
    fail_on = limits.fail_on
    if not limits.blocking:
        inner = "; ".join([counted or "no findings", *extras])
        if fail_on is None:
            return f"passed: {inner}"
        return f"passed: 0 at or above {fail_on} ({inner})"
    reasons = [f"fail at {fail_on}"] if limits.at_or_above else []
    reasons += [f"max {m} {s}" for s, m in sorted(limits.over.items(), reverse=True)]
    named = f": {_named(shown)}" if shown else ""  # `shown` is never empty here; no dangling ":"
    return f"refused: {counted} ({'; '.join(reasons + extras)}){named}"


def _dropped(tally: Tally, policy: ScanPolicy, now: dt.datetime) -> list[str]:
    """What the allow-list and `ignore_unfixed` took out, and how many entries expired."""
    extras = []
    if tally.allowed:
        extras.append(f"{tally.allowed.total()} allow-listed")
    if tally.unfixed:
        extras.append(f"{tally.unfixed} unfixed ignored")
    if n_expired := sum(entry.expired(now) for entry in policy.allow):
        extras.append(f"allow-list: {n_expired} expired")
    return extras


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
