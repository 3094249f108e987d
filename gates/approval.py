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
7. With keyed approvers (`approvers: [{name: alice, key: "ssh-ed25519 AAAA…"}]`), an approval
   counts only with a signature by that approver's key over exactly this decision: a DSSE-signed
   in-toto statement (predicate type `urn:airlock:approval:v1`) about the digest, naming the
   stage, the run that asks and the decision (`sign`). A typed name proves nothing by itself.
8. `required` distinct approvals pass; fewer is "pending: k of N approvals" (not passed, no error).
   The verdict says whether the approvals were signed.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import hashlib
import json
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    model_validator,
)

from gates import dsse, intoto, keys
from gates.base import EvidenceError, EvidenceRef, GateResult, Policy, table_row, utcnow
from gates.keys import PrivateKey, PublicKey
from registry.errors import InvalidReference
from registry.reference import validate_digest

Name = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=256)]
PREDICATE_TYPE = "urn:airlock:approval:v1"  # a signed decision (rule 7)
MAX_SIGNATURE_CHARS = 16384  # a signed decision is about 1.5 KB of text

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
    signature: str = Field(
        default="",
        max_length=MAX_SIGNATURE_CHARS,
        description="where approvers sign: the text `airlock approve RUN --by NAME --key FILE"
        " --print-signature` prints (leave empty where approvals are not signed)",
    )


Person = Annotated[Name, AfterValidator(_person)]


class Approver(BaseModel):
    """An approver who signs: a name and a public key (PEM or an OpenSSH line, or a file
    relative to pipeline.yaml)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: Person
    key: str = Field(min_length=1)


class ApprovalPolicy(Policy):
    """How many distinct people must approve, and who may."""

    required: int = Field(default=1, ge=1)
    # empty: anyone may approve; with keys, every approver signs
    approvers: list[Person | Approver] = Field(default_factory=list)
    allow_self_approval: bool = False

    @property
    def names(self) -> list[str]:
        return [a.name if isinstance(a, Approver) else a for a in self.approvers]

    @property
    def keyed(self) -> bool:
        """Whether approvals must be signed (every approver has a key)."""
        return bool(self.approvers) and isinstance(self.approvers[0], Approver)

    @model_validator(mode="after")
    def _satisfiable(self) -> ApprovalPolicy:
        distinct = {identity(a) for a in self.names}
        if self.approvers and len(distinct) < self.required:
            raise ValueError(
                f"required={self.required} approvals but only {len(distinct)} distinct approvers"
                " are allowed: the gate could never pass"
            )
        kinds = {isinstance(a, Approver) for a in self.approvers}
        if len(kinds) > 1:
            raise ValueError(
                "approvers: give every approver a key ({name: NAME, key: PUBLIC KEY}) or none;"
                " a name without a key could approve unsigned"
            )
        return self

    def public_keys(self, folder: Path) -> dict[str, PublicKey]:
        """Each keyed approver's public key, by identity (files relative to `folder`). (Not
        called `keys`: `dict(model)`, which Prefect applies to parameters, would call it.)"""
        return {
            identity(a.name): keys.public_key_from(a.key, folder, f"approver {a.name}'s key")
            for a in self.approvers
            if isinstance(a, Approver)
        }


@dataclass(frozen=True)
class Binding:
    """What a signed approval must name besides the digest: the stage, the run that asks
    (its root run, which keeps the decisions), and the approvers' keys by identity."""

    stage: str
    run: str
    keys: Mapping[str, PublicKey] = field(default_factory=dict)


def sign(key: PrivateKey, decision: ApprovalInput, image: str, binding: Binding) -> str:
    """The signature text for `decision` (base64 of a DSSE envelope, one line to paste)."""
    payload = intoto.statement(
        [(image, decision.digest)],
        PREDICATE_TYPE,
        {
            "stage": binding.stage,
            "run": binding.run,
            "decision": decision.decision,
            "approver": decision.approver,
        },
    )
    envelope = dsse.sign(payload, dsse.INTOTO_PAYLOAD_TYPE, key)
    return base64.b64encode(json.dumps(envelope, separators=(",", ":")).encode()).decode()


def _envelope(text: str) -> bytes:
    """The envelope a signature text carries: base64 of its JSON, or the JSON itself."""
    text = text.strip()
    if text.startswith("{"):
        return text.encode()
    try:
        return base64.b64decode("".join(text.split()), validate=True)
    except (binascii.Error, ValueError):
        raise EvidenceError("the signature is neither base64 nor a DSSE envelope") from None


def signature_problem(a: ApprovalInput, digest: str, binding: Binding | None) -> str | None:
    """Why `a`'s signature does not make it count (None when it does): rule 7."""
    if not a.signature.strip():
        return "unsigned (this stage's approvers sign: airlock approve --key)"
    key = binding.keys.get(identity(a.approver)) if binding else None
    if binding is None or key is None:
        return "no key to check its signature with"
    try:
        envelope = dsse.parse(_envelope(a.signature), "the signature")
        verified = dsse.verify(envelope, [key], payload_type=dsse.INTOTO_PAYLOAD_TYPE)
        if not verified.ok:
            return f"the signature is not by {a.approver}'s key"
        statement = intoto.from_verified(verified)
    except EvidenceError as e:
        return str(e)
    said: dict[str, Any] = statement.predicate
    if statement.predicate_type != PREDICATE_TYPE:
        return f"the signed statement is not an approval ({statement.predicate_type[:60]})"
    if not statement.names(digest):
        return f"it is signed for another digest, not {digest[:19]}…"
    for what, want in (("stage", binding.stage), ("run", binding.run), ("decision", a.decision)):
        if said.get(what) != want:
            return f"it is signed for another {what} ({str(said.get(what))[:40]!r})"
    if not isinstance(said.get("approver"), str) or identity(said["approver"]) != identity(
        a.approver
    ):
        return "it is signed for another approver's name"
    return None


def notes(
    approvals: list[ApprovalInput],
    policy: ApprovalPolicy,
    requester: str | None,
    digest: str,
    binding: Binding | None = None,
) -> list[str | None]:
    """Per decision, in order: None when it counts (an approval that counts, or any reject),
    else why it does not ("the requester may not approve their own promotion", ...). Signed
    approvals are checked against `binding` (none: a keyed policy counts no approval)."""
    allowed = {identity(a) for a in policy.names}
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
        elif policy.keyed and (unsigned := signature_problem(a, digest, binding)):
            note = unsigned
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
    binding: Binding | None = None,
) -> GateResult:
    """Judge the decisions received so far for the promotion of `digest` requested by
    `requester` (signed approvals checked against `binding`)."""
    at = now or utcnow()
    allowed = {identity(a) for a in policy.names}
    rows: list[dict[str, str]] = []
    counted: list[str] = []
    rejects: list[ApprovalInput] = []
    not_counted: list[str] = []
    why_not = notes(approvals, policy, requester, digest, binding)
    for a, why in zip(approvals, why_not, strict=True):
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
        signed = "signed" if policy.keyed else "unsigned"
        return result(
            True, f"approved by {', '.join(counted)} ({have} of {need} required; {signed})"
        )
    extra = f"; {'; '.join(dict.fromkeys(not_counted))}" if not_counted else ""
    return result(False, f"pending: {have} of {need} approval{'s' * (need > 1)}{extra}")


def _reject_text(a: ApprovalInput) -> str:
    comment = " ".join(a.comment.split())
    if len(comment) > 200:
        comment = comment[:199] + "…"
    return f"{a.approver}: {comment!r}" if comment else f"{a.approver} (no comment)"
