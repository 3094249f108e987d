"""Approval gate: people sign off a promotion. Pure — the waiting (Prefect pause/suspend and the
Resume form) is wired in flows/, which subclasses `ApprovalInput` with Prefect's `RunInput`.

Rules, in order:
1. Any reject refuses, whoever sent it (an approver outside the list or the requester included,
   whatever digest it names): a reject is a safety signal, and honouring it can only stop a
   promotion, never let one through.
2. An approval counts only for the digest it names (the one the request was made for).
3. A name with a control, format or other invisible character never counts as an approval.
4. The requester may not approve their own promotion (unless `allow_self_approval`).
5. With an `approvers` list, approvals from anyone else do not count (and are reported).
6. One person counts once: names are compared after Unicode NFKC (fullwidth letters are
   letters), without invisible characters (`alice` + U+200B is `alice`), with whitespace
   collapsed and case-insensitively.
7. `required` distinct approvals pass; fewer is "pending: k of N approvals" (not passed, no error).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import unicodedata
from typing import Annotated, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    model_validator,
)

from gates.base import EvidenceRef, GateResult, Policy, table_row, utcnow
from registry.errors import InvalidReference
from registry.reference import validate_digest

Name = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=256)]

# Characters that render as nothing (or as a blank) but are not Unicode format characters:
# Hangul fillers, the combining grapheme joiner, Mongolian and standard variation selectors.
_INVISIBLE = frozenset([0x034F, 0x115F, 0x1160, 0x17B4, 0x17B5, 0x3164, 0xFFA0]).union(
    range(0x180B, 0x1810), range(0xFE00, 0xFE10), range(0xE0100, 0xE01F0)
)


def _invisible(ch: str) -> bool:
    """Control, format, surrogate, private-use, unassigned, or invisible by design."""
    return unicodedata.category(ch) in ("Cc", "Cf", "Cs", "Co", "Cn") or ord(ch) in _INVISIBLE


def name_problem(name: str) -> str | None:
    """Why `name` cannot name a person (None if it can): a control or format character (or
    another invisible one) makes two different strings look like one name."""
    if not name.strip():
        return "the name is empty"
    for ch in name:
        if _invisible(ch):
            return f"the name contains an invisible or control character (U+{ord(ch):04X})"
    return None


def identity(name: str) -> str:
    """How names are compared: NFKC (fullwidth letters are letters), invisible characters removed,
    whitespace collapsed, case-insensitive."""
    text = unicodedata.normalize("NFKC", name)
    text = "".join(ch for ch in text if not _invisible(ch))
    text = unicodedata.normalize("NFKC", text.casefold())
    return " ".join(text.split())


def _digest(value: str) -> str:
    try:
        return validate_digest(value)
    except InvalidReference as e:
        raise ValueError(str(e)) from None


def _person(value: str) -> str:
    problem = name_problem(value)
    if problem:
        raise ValueError(f"{value!r}: {problem}")
    return value


class ApprovalInput(BaseModel):
    """One person's decision on a promotion (the form a paused promotion asks for). The name is
    not checked here — a decision must reach the gate, which says why a name does not count."""

    model_config = ConfigDict(extra="forbid")

    decision: Literal["approve", "reject"] = Field(description="approve or reject the promotion")
    approver: Name = Field(description="who decides (your user name)")
    digest: Annotated[
        str, StringConstraints(pattern=r"^sha(256|512):[0-9a-f]+$"), AfterValidator(_digest)
    ] = Field(description="the digest you decide on: the one shown in the request above")
    comment: str = Field(default="", max_length=4096, description="why (shown in the record)")


class ApprovalPolicy(Policy):
    """How many distinct people must approve, and who may."""

    required: int = Field(default=1, ge=1)
    # empty: anyone may approve
    approvers: list[Annotated[Name, AfterValidator(_person)]] = Field(default_factory=list)
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


def notes(
    approvals: list[ApprovalInput], policy: ApprovalPolicy, requester: str | None, digest: str
) -> list[str | None]:
    """Per decision, in order: None when it counts (an approval that counts, or any reject),
    else why it does not ("the requester may not approve their own promotion", ...)."""
    allowed = {identity(a) for a in policy.approvers}
    self_id = identity(requester) if requester and requester.strip() else None
    counted: dict[str, str] = {}  # identity → name as first written
    out: list[str | None] = []
    for a in approvals:
        who = identity(a.approver)
        bad_name = name_problem(a.approver)
        note: str | None = None
        if a.decision == "reject":
            pass  # a reject always counts (rule 1)
        elif a.digest != digest:
            note = f"it approves {a.digest[:19]}…, not {digest[:19]}…"
        elif bad_name:
            note = bad_name
        elif self_id is not None and who == self_id and not policy.allow_self_approval:
            note = "the requester may not approve their own promotion"
        elif allowed and who not in allowed:
            note = "not in the approvers list"
        elif who in counted:
            note = f"{counted[who]} already approved"
        else:
            counted[who] = a.approver
        out.append(note)
    return out


def evaluate(
    approvals: list[ApprovalInput],
    policy: ApprovalPolicy,
    requester: str | None,
    digest: str,
    now: dt.datetime | None = None,
) -> GateResult:
    """Judge the decisions received so far for the promotion of `digest` requested by
    `requester`."""
    at = now or utcnow()
    allowed = {identity(a) for a in policy.approvers}
    rows: list[dict[str, str]] = []
    counted: list[str] = []
    rejects: list[ApprovalInput] = []
    not_counted: list[str] = []
    for a, why in zip(approvals, notes(approvals, policy, requester, digest), strict=True):
        if a.decision == "reject":
            rejects.append(a)
            outsider = bool(allowed) and identity(a.approver) not in allowed
            note = "rejects" + (" (not in the approvers list)" if outsider else "")
        elif why is None:
            counted.append(a.approver)
            note = "counted"
        else:
            note = f"not counted ({why})"
            not_counted.append(f"{a.approver}: not counted ({why})")
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
        return result(True, f"approved by {', '.join(counted)} ({have} of {need} required)")
    extra = f"; {'; '.join(dict.fromkeys(not_counted))}" if not_counted else ""
    return result(False, f"pending: {have} of {need} approval{'s' * (need > 1)}{extra}")


def _reject_text(a: ApprovalInput) -> str:
    comment = " ".join(a.comment.split())
    if len(comment) > 200:
        comment = comment[:199] + "…"
    return f"{a.approver}: {comment!r}" if comment else f"{a.approver} (no comment)"
