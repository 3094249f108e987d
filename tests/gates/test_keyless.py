"""Keyless signatures, verified offline by sigstore-python against its bundled public-good trust
root, on real bundles: a GitHub artifact attestation (SLSA provenance of a public repository)
and sigstore-conformance's happy path. The attacks: another subject, another issuer, a payload
changed after signing, a keyed bundle offered as keyless, and junk."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest
from pydantic import ValidationError

from gates import attested
from gates.evidence import target_of
from gates.keyless import Identity, Verified, verify
from registry import mediatypes as mt
from registry.manifest import Descriptor
from registry.referrers import artifact, push_referrer
from tests.support import images as im
from tests.support.registries import Reg

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "attestations"
GITHUB = FIXTURES / "github" / "reusable-workflow-attestation.sigstore.json"
CONFORMANCE = FIXTURES / "sigstore-conformance" / "happy-path-intoto-in-dsse-v3.sigstore.json"
KEYED = FIXTURES / "sigstore-conformance" / "managed-key-happy-path.sigstore.json"
ACTIONS = "https://token.actions.githubusercontent.com"
ATTEST = (
    "https://github.com/github/artifact-attestations-workflows/.github/workflows/attest.yml"
    "@09b495c3f12c7881b3cc17209a327792065c1a1d"
)


def test_a_github_attestation_verifies_for_its_workflow_identity() -> None:
    for identity in (
        Identity(issuer=ACTIONS, subject=ATTEST),
        Identity(issuer=ACTIONS, subject_regex=r"https://github\.com/github/artifact-attest.*"),
    ):
        verified = verify(GITHUB.read_bytes(), [identity], "github")
        assert isinstance(verified, Verified), verified
        assert verified.signer.issuer == ACTIONS and verified.signer.subjects == (ATTEST,)
        statement = json.loads(verified.payload)
        assert statement["predicateType"] == "https://slsa.dev/provenance/v1"


def test_the_conformance_happy_path_verifies() -> None:
    subject = (
        "https://github.com/sigstore-conformance/extremely-dangerous-public-oidc-beacon/"
        ".github/workflows/extremely-dangerous-oidc-beacon.yml@refs/heads/main"
    )
    verified = verify(CONFORMANCE.read_bytes(), [Identity(issuer=ACTIONS, subject=subject)], "c")
    assert isinstance(verified, Verified), verified


@pytest.mark.parametrize(
    "identity",
    [
        Identity(issuer=ACTIONS, subject="https://github.com/acme/app/.github/workflows/x.yml"),
        Identity(issuer="https://accounts.google.com", subject=ATTEST),
        # a regex is matched whole: a prefix of the real subject is not enough
        Identity(issuer=ACTIONS, subject_regex=r"https://github\.com/github/"),
    ],
)
def test_another_identity_is_refused(identity: Identity) -> None:
    why = verify(GITHUB.read_bytes(), [identity], "github")
    assert isinstance(why, str)
    assert why.startswith(f"github: keyless signature refused ({ATTEST} (issuer {ACTIONS})")
    assert "is not an identity it names" in why


def test_a_payload_changed_after_signing_is_refused() -> None:
    bundle = json.loads(GITHUB.read_bytes())
    envelope = bundle["dsseEnvelope"]
    statement = json.loads(base64.b64decode(envelope["payload"]))
    statement["subject"][0]["digest"]["sha256"] = "0" * 64
    envelope["payload"] = base64.b64encode(json.dumps(statement).encode()).decode()
    why = verify(json.dumps(bundle).encode(), [Identity(issuer=ACTIONS, subject=ATTEST)], "x")
    assert isinstance(why, str) and why.startswith("x: keyless signature refused"), why


def test_a_keyed_bundle_or_junk_is_a_reason_not_an_error() -> None:
    identity = Identity(issuer=ACTIONS, subject=ATTEST)
    keyed = verify(KEYED.read_bytes(), [identity], "keyed")
    assert isinstance(keyed, str) and "expected certificate in bundle" in keyed
    for junk in (b"{}", b"not json", b"[]"):
        why = verify(junk, [identity], "junk")
        assert isinstance(why, str) and why.startswith("junk: not a sigstore bundle"), why


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        ({"issuer": ACTIONS}, "subject or its subject_regex"),
        ({"issuer": ACTIONS, "subject": "a", "subject_regex": "a"}, "subject or its subject_regex"),
        ({"issuer": ACTIONS, "subject_regex": "("}, "subject_regex is not a regular expression"),
        ({"subject": "a"}, "issuer"),
        ({"issuer": ACTIONS, "subject": "a", "san": "b"}, "Extra inputs"),
    ],
)
def test_bad_identities_are_refused(doc: dict, message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        Identity.model_validate(doc)


# ------------------------------------------------------------------- through a gate's policy


PROVENANCE = "https://slsa.dev/provenance/v1"


@pytest.mark.anyio
async def test_a_genuine_keyless_attestation_next_to_another_image_is_refused(
    registry: Reg,
) -> None:
    """An insider attaches a real, validly signed GitHub attestation (about another artifact)
    to their image: the signature and identity verify, the subject does not."""
    img = im.image("keyless")
    registry.pusher.push("dev/app", img, "keyless")
    subject = Descriptor(img.media_type, img.digest, len(img.raw))
    bundle = GITHUB.read_bytes()
    art, blobs = artifact(subject, mt.SIGSTORE_BUNDLE_V03, bundle)
    async with registry.client() as client:
        await push_referrer(client, "dev/app", art, blobs)
        target = await target_of(client, "dev/app", img.digest)
        right = Identity(issuer=ACTIONS, subject=ATTEST)
        found = await attested.signed(
            client, "dev/app", img.digest, target, [PROVENANCE], [], [right]
        )
        wrong = Identity(issuer=ACTIONS, subject="https://github.com/acme/x")
        refused = await attested.signed(
            client, "dev/app", img.digest, target, [PROVENANCE], [], [wrong]
        )
    assert isinstance(found, str)
    assert f"a signed attestation about another digest, not {img.digest}" in found
    assert isinstance(refused, str) and "is not an identity it names" in refused
