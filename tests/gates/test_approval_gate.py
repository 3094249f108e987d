"""Approval gate: the decision model and the pure rules (rejects, the digest an approval names,
look-alike and invisible names, self-approval, allowed approvers, duplicates, N distinct)."""

from __future__ import annotations

import datetime as dt

import pytest
from pydantic import ValidationError

import gates.approval
from gates.approval import ApprovalInput, ApprovalPolicy, identity, name_problem
from gates.base import GateResult

DIGEST = "sha256:" + "d" * 64  # the digest the request is for
OTHER = "sha256:" + "e" * 64


def approve(who: str, comment: str = "", digest: str = DIGEST) -> ApprovalInput:
    return ApprovalInput(decision="approve", approver=who, digest=digest, comment=comment)


def reject(who: str, comment: str = "", digest: str = DIGEST) -> ApprovalInput:
    return ApprovalInput(decision="reject", approver=who, digest=digest, comment=comment)


def evaluate(
    approvals: list[ApprovalInput],
    policy: ApprovalPolicy,
    requester: str | None,
    now: dt.datetime | None = None,
) -> GateResult:
    """The gate on a request for DIGEST."""
    return gates.approval.evaluate(approvals, policy, requester, DIGEST, now=now)


# ---------------------------------------------------------------------------- the model


def test_input_model_strips_and_requires_an_approver_and_a_digest() -> None:
    a = ApprovalInput.model_validate(
        {"decision": "approve", "approver": "  alice  ", "digest": DIGEST}
    )
    assert a.approver == "alice"
    assert a.comment == ""
    for bad in (
        {"decision": "approve", "approver": "   ", "digest": DIGEST},
        {"decision": "approve", "approver": "", "digest": DIGEST},
        {"decision": "approve", "digest": DIGEST},
        {"decision": "approve", "approver": "alice"},  # which digest?
        {"decision": "approve", "approver": "alice", "digest": "sha256:abc"},
        {"decision": "maybe", "approver": "alice", "digest": DIGEST},
        {"decision": "approve", "approver": "alice", "digest": DIGEST, "role": "admin"},
    ):
        with pytest.raises(ValidationError):
            ApprovalInput.model_validate(bad)


def test_input_model_is_a_plain_subclassable_pydantic_model() -> None:
    """flows/ will subclass it with Prefect's RunInput: no frozen config, no custom __init__."""

    class Resume(ApprovalInput):
        pass

    r = Resume(decision="reject", approver="bob", digest=DIGEST, comment="no")
    assert r.model_dump() == {
        "decision": "reject",
        "approver": "bob",
        "digest": DIGEST,
        "comment": "no",
        "signature": "",
    }
    schema = ApprovalInput.model_json_schema()
    assert schema["additionalProperties"] is False
    assert set(schema["required"]) == {"decision", "approver", "digest"}


def test_policy_validation() -> None:
    assert ApprovalPolicy().required == 1
    with pytest.raises(ValidationError):
        ApprovalPolicy(required=0)
    with pytest.raises(ValidationError, match="could never pass"):
        ApprovalPolicy(required=2, approvers=["alice", "ALICE "])
    with pytest.raises(ValidationError):
        ApprovalPolicy(approvers=["alice", "  "])
    with pytest.raises(ValidationError, match="Extra inputs"):
        ApprovalPolicy.model_validate({"required": 1, "quorum": 2})
    assert ApprovalPolicy(required=2, approvers=["alice", "bob"]).required == 2


# ---------------------------------------------------------------------------- the rules


def test_one_approval_passes_by_default() -> None:
    now = dt.datetime(2026, 11, 1, tzinfo=dt.UTC)
    result = evaluate([approve("alice", "lgtm")], ApprovalPolicy(), "ci-bot", now=now)
    assert result.passed
    assert result.gate == "approval"
    assert result.summary == "approved by alice (1 of 1 required; unsigned)"
    assert result.evaluated_at == now
    assert result.error is None
    assert result.rows == [
        {"approver": "alice", "decision": "approve", "note": "counted", "comment": "lgtm"}
    ]
    assert [e.source for e in result.evidence] == ["approval by alice"]


# ---------------------------------------------------------------------------- insider attacks


def test_an_approval_of_another_digest_does_not_count() -> None:
    """The tag moved while the request waited: an approval given for what the reviewer saw
    never counts for another digest."""
    result = evaluate([approve("alice", digest=OTHER)], ApprovalPolicy(), "ci")
    assert not result.passed
    assert result.rows[0]["note"].startswith("not counted (it approves sha256:eeeeeeeeeeee")
    assert "alice: not counted (it approves sha256:eeeeeeeeeeee" in result.summary


def test_a_reject_of_another_digest_still_refuses() -> None:
    result = evaluate([approve("alice"), reject("bob", digest=OTHER)], ApprovalPolicy(), "ci")
    assert not result.passed and result.summary.startswith("refused: rejected by bob")


@pytest.mark.parametrize(
    "twin",
    [
        "alice\u200b",  # zero-width space
        "\u200dalice",  # zero-width joiner
        "al\u00adice",  # soft hyphen
        "alice\u2060",  # word joiner
        "\ufeffalice",  # byte order mark
        "alice\u3164",  # Hangul filler (a letter that renders as nothing)
        "\uff41\uff4c\uff49\uff43\uff45",  # fullwidth
        "ALICE",
        "alice\u3000",  # ideographic space
    ],
)
def test_look_alike_names_are_one_person(twin: str) -> None:
    assert identity(twin) == identity("alice")
    policy = ApprovalPolicy(required=2)
    result = evaluate([approve("alice"), approve(twin)], policy, "ci")
    assert not result.passed, result.rows
    assert result.summary.startswith("pending: 1 of 2"), result.summary


@pytest.mark.parametrize("name", ["alice\u200b", "bob\x00", "car\u202eol", "dave\x1b[31m"])
def test_names_with_invisible_or_control_characters_never_approve(name: str) -> None:
    assert name_problem(name) is not None
    result = evaluate([approve(name)], ApprovalPolicy(), "ci")
    assert not result.passed
    assert "invisible or control character" in result.rows[0]["note"]
    # …but may always reject (a reject only ever stops a promotion)
    assert evaluate([reject(name)], ApprovalPolicy(), "ci").summary.startswith("refused")


def test_the_requester_in_fullwidth_is_still_the_requester() -> None:
    result = evaluate([approve("\uff43\uff49")], ApprovalPolicy(), requester="ci")
    assert not result.passed
    assert "requester may not approve" in result.rows[0]["note"]


def test_an_approvers_list_with_an_invisible_name_is_refused() -> None:
    with pytest.raises(ValidationError, match="invisible or control"):
        ApprovalPolicy(approvers=["alice", "bob\u200b"])
    with pytest.raises(ValidationError, match="could never pass"):
        ApprovalPolicy(required=2, approvers=["alice", "\uff41\uff4c\uff49\uff43\uff45"])


def test_no_approvals_is_pending() -> None:
    result = evaluate([], ApprovalPolicy(required=2), "ci-bot")
    assert not result.passed
    assert result.summary == "pending: 0 of 2 approvals"
    assert result.error is None


def test_pending_until_enough_distinct_approvals() -> None:
    policy = ApprovalPolicy(required=2)
    one = evaluate([approve("alice")], policy, "ci-bot")
    assert not one.passed
    assert one.summary == "pending: 1 of 2 approvals"
    two = evaluate([approve("alice"), approve("bob")], policy, "ci-bot")
    assert two.passed
    assert two.summary == "approved by alice, bob (2 of 2 required; unsigned)"


def test_duplicates_count_once_case_insensitively() -> None:
    policy = ApprovalPolicy(required=2)
    result = evaluate([approve("Alice"), approve(" alice "), approve("ALICE")], policy, None)
    assert not result.passed
    assert result.summary.startswith("pending: 1 of 2")
    assert [r["note"] for r in result.rows] == [
        "counted",
        "not counted (Alice already approved)",
        "not counted (Alice already approved)",
    ]
    assert result.summary == (
        "pending: 1 of 2 approvals; alice: not counted (Alice already approved);"
        " ALICE: not counted (Alice already approved)"
    )


def test_any_reject_refuses_naming_who_and_why() -> None:
    result = evaluate(
        [approve("alice"), approve("bob"), reject("carol", "breaks\narm64 boot")],
        ApprovalPolicy(required=2),
        "ci-bot",
    )
    assert not result.passed
    assert result.summary == "refused: rejected by carol: 'breaks arm64 boot'"
    assert "\n" not in result.summary


def test_reject_refuses_even_after_enough_approvals_and_from_outside_the_list() -> None:
    policy = ApprovalPolicy(approvers=["alice"])
    result = evaluate([approve("alice"), reject("mallory")], policy, "ci-bot")
    assert not result.passed
    assert result.summary == "refused: rejected by mallory (no comment)"
    assert result.rows[1]["note"] == "rejects (not in the approvers list)"


def test_several_rejects_are_all_named() -> None:
    result = evaluate([reject("bob", "no"), reject("carol")], ApprovalPolicy(), None)
    assert result.summary == "refused: rejected by bob: 'no'; carol (no comment)"


def test_requester_may_not_approve_their_own_promotion() -> None:
    result = evaluate([approve("Dave")], ApprovalPolicy(), requester="dave")
    assert not result.passed
    assert result.summary == (
        "pending: 0 of 1 approval; Dave: not counted (the requester may not approve their own"
        " promotion)"
    )
    assert "requester may not approve" in result.rows[0]["note"]

    allowed = evaluate(
        [approve("Dave")], ApprovalPolicy(allow_self_approval=True), requester="dave"
    )
    assert allowed.passed


def test_requester_may_still_reject() -> None:
    result = evaluate([approve("alice"), reject("dave", "wrong build")], ApprovalPolicy(), "dave")
    assert not result.passed
    assert "rejected by dave" in result.summary


def test_approvers_outside_the_list_do_not_count() -> None:
    policy = ApprovalPolicy(required=2, approvers=["Alice", "bob", "carol"])
    result = evaluate([approve("alice"), approve("mallory")], policy, "ci-bot")
    assert not result.passed
    assert result.summary == (
        "pending: 1 of 2 approvals; mallory: not counted (not in the approvers list)"
    )
    assert result.rows[1]["note"] == "not counted (not in the approvers list)"

    ok = evaluate([approve("alice"), approve("mallory"), approve("BOB")], policy, "ci-bot")
    assert ok.passed
    assert ok.summary == "approved by alice, BOB (2 of 2 required; unsigned)"


def test_requester_in_the_approvers_list_still_cannot_self_approve() -> None:
    policy = ApprovalPolicy(required=1, approvers=["alice", "bob"])
    assert not evaluate([approve("alice")], policy, "ALICE").passed
    assert evaluate([approve("alice"), approve("bob")], policy, "ALICE").passed


def test_without_a_requester_nobody_is_excluded() -> None:
    assert evaluate([approve("dave")], ApprovalPolicy(), None).passed
    assert evaluate([approve("dave")], ApprovalPolicy(), "  ").passed
