"""Approval gate: people sign off a promotion. Pure — the waiting (Prefect pause/suspend and the
Resume form) is wired in flows/, which subclasses `ApprovalInput` with Prefect's `RunInput`.

Rules, in order:
1. Any reject refuses, whoever sent it (an approver outside the list or the requester included):
   a reject is a safety signal, and honouring it can only stop a promotion, never let one through.
2. The requester may not approve their own promotion (unless `allow_self_approval`).
3. With an `approvers` list, approvals from anyone else do not count (and are reported).
4. One person counts once: names are compared stripped and case-insensitively.
5. `required` distinct approvals pass; fewer is "pending: k of N approvals" (not passed, no error).
"""

from __future__ import annotations

import datetime as dt
import hashlib
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator

from gates.base import EvidenceRef, GateResult, Policy, table_row, utcnow

Name = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=256)]


class ApprovalInput(BaseModel):
    """One person's decision on a promotion (the form a paused promotion asks for)."""

    model_config = ConfigDict(extra="forbid")

    decision: Literal["approve", "reject"] = Field(description="approve or reject the promotion")
    approver: Name = Field(description="who decides (your user name)")
    comment: str = Field(default="", max_length=4096, description="why (shown in the record)")


def identity(name: str) -> str:
    """How names are compared: stripped, case-insensitive."""
    return name.strip().casefold()


class ApprovalPolicy(Policy):
    """How many distinct people must approve, and who may."""

    required: int = Field(default=1, ge=1)
    approvers: list[Name] = Field(default_factory=list)  # empty: anyone may approve
    allow_self_approval: bool = False

    @model_validator(mode="after")
    def _satisfiable(self) -> ApprovalPolicy:
        distinct = {identity(a) for a in self.approvers}
        if self.approvers and len(distinct) < self.required:
            raise ValueError(
                f"required={self.required} approvals but only {len(distinct)} distinct approvers"
                " are allowed: the gate could never pass"
            )
        return self


def evaluate(
    approvals: list[ApprovalInput],
    policy: ApprovalPolicy,
    requester: str | None,
    now: dt.datetime | None = None,
) -> GateResult:
    """Judge the decisions received so far for one promotion requested by `requester`."""
    at = now or utcnow()
    allowed = {identity(a) for a in policy.approvers}
    self_id = identity(requester) if requester and requester.strip() else None

    rows: list[dict[str, str]] = []
    counted: dict[str, str] = {}  # identity → name as first written
    rejects: list[ApprovalInput] = []
    not_counted: list[str] = []
    for a in approvals:
        who = identity(a.approver)
        outsider = bool(allowed) and who not in allowed
        if a.decision == "reject":
            rejects.append(a)
            note = "rejects" + (" (not in the approvers list)" if outsider else "")
        elif self_id is not None and who == self_id and not policy.allow_self_approval:
            note = "not counted: the requester may not approve their own promotion"
            not_counted.append(f"{a.approver} is the requester")
        elif outsider:
            note = "not counted: not in the approvers list"
            not_counted.append(f"{a.approver} is not an allowed approver")
        elif who in counted:
            note = f"not counted again: {counted[who]} already approved"
        else:
            counted[who] = a.approver
            note = "counted"
        rows.append(
            table_row(approver=a.approver, decision=a.decision, note=note, comment=a.comment)
        )

    evidence = [
        EvidenceRef(
            source=f"approval by {a.approver}",
            digest="sha256:" + hashlib.sha256(a.model_dump_json().encode()).hexdigest(),
        )
        for a in approvals
    ]

    def result(passed: bool, summary: str) -> GateResult:
        return GateResult(
            gate="approval",
            passed=passed,
            summary=summary,
            rows=rows,
            evidence=evidence,
            evaluated_at=at,
        )

    if rejects:
        return result(False, "refused: rejected by " + "; ".join(map(_reject_text, rejects)))
    have, need = len(counted), policy.required
    if have >= need:
        return result(
            True, f"approved by {', '.join(counted.values())} ({have} of {need} required)"
        )
    extra = f" ({'; '.join(dict.fromkeys(not_counted))})" if not_counted else ""
    return result(False, f"pending: {have} of {need} approval{'s' * (need > 1)}{extra}")


def _reject_text(a: ApprovalInput) -> str:
    comment = " ".join(a.comment.split())
    if len(comment) > 200:
        comment = comment[:199] + "…"
    return f"{a.approver}: {comment!r}" if comment else f"{a.approver} (no comment)"
