"""Signed approvals: with keyed approvers, a typed name proves nothing — an approval counts only
with a signature by that approver's key over exactly this digest, stage, run and decision. The
attacks first (unsigned, another person's key, a signature replayed from another digest, stage,
run or decision, garbage), then the signed path with a key made by the real `ssh-keygen`."""

from __future__ import annotations

import base64
import json
import subprocess
from pathlib import Path

import pytest
from pydantic import ValidationError

import gates.approval
from gates.approval import ApprovalInput, ApprovalPolicy, Binding, sign
from gates.base import GateResult
from gates.keys import generate, load_private_key, read_private_key, read_public_key

DIGEST = "sha256:" + "d" * 64
OTHER = "sha256:" + "e" * 64
STAGE, RUN = "prod", "6f1c1b9e-0d3c-4a55-9a53-2f6c1d2b8e11"


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """alice's key from the real ssh-keygen (OpenSSH, Ed25519); bob's and mallory's from
    `airlock keys generate`'s code (PKCS#8 PEM, ECDSA P-256)."""
    folder = tmp_path_factory.mktemp("keys")
    alice = folder / "alice"
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "alice", "-f", str(alice)],
        check=True,
    )
    out = {"alice": alice}
    for name in ("bob", "mallory"):
        private, public = generate()
        (folder / name).write_bytes(private)
        (folder / f"{name}.pub").write_bytes(public)
        out[name] = folder / name
    return out


def policy(keys: dict[str, Path], required: int = 1) -> ApprovalPolicy:
    """alice by her OpenSSH line, bob by his PEM file (relative to the pipeline's folder)."""
    return ApprovalPolicy(
        required=required,
        approvers=[
            {"name": "alice", "key": (keys["alice"].parent / "alice.pub").read_text()},
            {"name": "bob", "key": "bob.pub"},
        ],
    )


def binding(keys: dict[str, Path], stage: str = STAGE, run: str = RUN) -> Binding:
    return Binding(stage, run, policy(keys).public_keys(keys["alice"].parent))


def decision(who: str, verdict: str = "approve", digest: str = DIGEST) -> ApprovalInput:
    return ApprovalInput(decision=verdict, approver=who, digest=digest)


def signed(
    keys: dict[str, Path], who: str, by: str | None = None, *, on: Binding | None = None, **kw: str
) -> ApprovalInput:
    """`who`'s decision, signed with `by`'s key (default: their own) for `on`."""
    given = decision(who, **kw)
    text = sign(read_private_key(keys[by or who]), given, "app", on or binding(keys))
    return given.model_copy(update={"signature": text})


def judge(keys: dict[str, Path], *approvals: ApprovalInput, required: int = 1) -> GateResult:
    return gates.approval.evaluate(
        list(approvals), policy(keys, required), "ci", DIGEST, binding=binding(keys)
    )


def why_not(keys: dict[str, Path], approval: ApprovalInput) -> str | None:
    return gates.approval.notes([approval], policy(keys), "ci", DIGEST, binding(keys))[0]


# ---------------------------------------------------------------------------- the attacks


def test_a_typed_name_without_a_signature_does_not_count(keys: dict[str, Path]) -> None:
    result = judge(keys, decision("alice"))
    assert not result.passed
    assert result.summary.startswith("pending: 0 of 1 approval; alice: not counted (unsigned")


def test_another_persons_key_does_not_make_alice(keys: dict[str, Path]) -> None:
    for forger in ("bob", "mallory"):
        assert why_not(keys, signed(keys, "alice", by=forger)) == (
            "the signature is not by alice's key"
        )


def test_a_signature_for_anything_else_does_not_count(keys: dict[str, Path]) -> None:
    """Replayed from another digest, another stage, another run (a later request for the same
    digest), or a reject passed off as an approval."""
    other_digest = signed(keys, "alice", digest=OTHER).model_copy(update={"digest": DIGEST})
    assert "signed for another digest" in (why_not(keys, other_digest) or "")
    staging = signed(keys, "alice", on=binding(keys, stage="staging"))
    assert why_not(keys, staging) == "it is signed for another stage ('staging')"
    earlier_run = signed(keys, "alice", on=binding(keys, run="an-earlier-run"))
    assert why_not(keys, earlier_run) == "it is signed for another run ('an-earlier-run')"
    reject = signed(keys, "alice", verdict="reject").model_copy(update={"decision": "approve"})
    assert why_not(keys, reject) == "it is signed for another decision ('reject')"
    for approval in (other_digest, staging, earlier_run, reject):
        assert not judge(keys, approval).passed


def test_a_signature_naming_another_approver_does_not_count(keys: dict[str, Path]) -> None:
    """bob signs a decision that names "bobby"; typed as bob, it still names someone else."""
    given = decision("bobby")
    text = sign(read_private_key(keys["bob"]), given, "app", binding(keys))
    as_bob = decision("bob").model_copy(update={"signature": text})
    assert why_not(keys, as_bob) == "it is signed for another approver's name"


def test_garbage_and_tampering_do_not_count_and_raise_nothing(keys: dict[str, Path]) -> None:
    good = signed(keys, "alice")
    envelope = json.loads(base64.b64decode(good.signature))
    envelope["payload"] = base64.b64encode(
        base64.b64decode(envelope["payload"]).replace(b"prod", b"pwnd")
    ).decode()
    tampered = good.model_copy(update={"signature": json.dumps(envelope)})
    assert why_not(keys, tampered) == "the signature is not by alice's key"
    for text in ("not base64 at all!", base64.b64encode(b"[1,2]").decode(), "{"):
        note = why_not(keys, good.model_copy(update={"signature": text}))
        assert note and "signature" in note, note


def test_without_a_binding_a_keyed_policy_counts_nothing(keys: dict[str, Path]) -> None:
    """Fail closed: a caller that cannot say which run asks gets no approval counted."""
    result = gates.approval.evaluate([signed(keys, "alice")], policy(keys), "ci", DIGEST)
    assert not result.passed and "no key to check its signature with" in result.summary


def test_rejects_need_no_signature(keys: dict[str, Path]) -> None:
    """A reject is a safety signal: honouring it can only stop a promotion."""
    result = judge(keys, signed(keys, "bob"), decision("alice", "reject"))
    assert not result.passed and result.summary.startswith("refused: rejected by alice")


def test_a_policy_mixing_keyed_and_unkeyed_approvers_is_refused(keys: dict[str, Path]) -> None:
    with pytest.raises(ValidationError, match="give every approver a key"):
        ApprovalPolicy(approvers=[{"name": "alice", "key": "alice.pub"}, "bob"])


# ---------------------------------------------------------------------------- the signed path


def test_signed_approvals_count_and_the_verdict_says_signed(keys: dict[str, Path]) -> None:
    result = judge(keys, signed(keys, "alice"), signed(keys, "bob"), required=2)
    assert result.passed
    assert result.summary == "approved by alice, bob (2 of 2 required; signed)"
    # one person counts once, signed or not
    again = judge(keys, signed(keys, "alice"), signed(keys, "alice"), required=2)
    assert not again.passed and "alice already approved" in again.summary


def test_the_signature_text_may_be_pasted_as_json_with_line_breaks(keys: dict[str, Path]) -> None:
    """The Resume form's text field: people paste what they were given, wrapped or not."""
    good = signed(keys, "alice")
    as_json = json.dumps(json.loads(base64.b64decode(good.signature)), indent=2)
    wrapped = "\n".join(good.signature[i : i + 64] for i in range(0, len(good.signature), 64))
    for text in (as_json, wrapped):
        assert why_not(keys, good.model_copy(update={"signature": text})) is None


def test_unkeyed_policies_say_their_approvals_were_unsigned() -> None:
    result = gates.approval.evaluate(
        [decision("alice")], ApprovalPolicy(approvers=["alice"]), "ci", DIGEST
    )
    assert result.passed and result.summary == "approved by alice (1 of 1 required; unsigned)"


def test_a_passphrase_protected_openssh_key_signs(tmp_path: Path) -> None:
    """What `ssh-keygen` writes with a passphrase (bcrypt KDF) is read with
    AIRLOCK_KEY_PASSPHRASE's value."""
    key = tmp_path / "carol"
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "s3cret", "-f", str(key)], check=True
    )
    private = load_private_key(key.read_bytes(), "carol", passphrase=b"s3cret")
    on = Binding(STAGE, RUN, {"carol": read_public_key(f"{key}.pub")})
    given = decision("carol")
    given = given.model_copy(update={"signature": sign(private, given, "app", on)})
    assert gates.approval.signature_problem(given, DIGEST, on) is None
