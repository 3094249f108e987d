"""VSA v1 predicates: airlock's own round-trip, a real one (Google's, from slsa-verifier's test
data) read as written, and every way a summary can fail to admit a digest into a stage."""

from __future__ import annotations

import base64
import datetime as dt
import json
from pathlib import Path

import pytest

from gates import attestations, dsse, intoto
from gates.attestations import attach
from gates.base import EvidenceError
from gates.keys import PrivateKey, PublicKey, generate, load_private_key, load_public_key
from gates.vsa import PREDICATE_TYPE, Summary, check, level, predicate, write
from registry.manifest import Descriptor
from tests.support import images as im
from tests.support.registries import Reg

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "attestations"
REPO = "qa/app"
DIGEST = "sha256:" + "ab" * 32
OTHER = "sha256:" + "cd" * 32
WHEN = dt.datetime(2026, 12, 4, 12, 0, tzinfo=dt.UTC)


def ours(stage: str = "qa", passed: bool = True, digest: str = DIGEST) -> dict:
    return predicate(
        stage=stage,
        resource_uri=f"registry.example/qa/app@{digest}",
        policy_uri="file:///etc/airlock/pipeline.yaml#stages.qa",
        policy_digest="sha256:" + "11" * 32,
        inputs=[("oci://registry.example/dev/app@sha256:" + "22" * 32, "sha256:" + "22" * 32)],
        passed=passed,
        version="0.1.0",
        verified_at=WHEN,
    )


def test_levels_are_ours_never_slsa() -> None:
    assert level("qa") == "AIRLOCK_STAGE_QA"
    assert level("pre-prod") == "AIRLOCK_STAGE_PRE_PROD"
    assert not level("slsa").startswith("SLSA_")


def test_our_predicate_is_read_back_and_admits_its_digest() -> None:
    doc = json.loads(json.dumps(ours()))  # as it travels: JSON
    summary = Summary.read(doc, "here")
    assert summary.verificationResult == "PASSED"
    assert summary.verifiedLevels == ["AIRLOCK_STAGE_QA"]
    assert summary.policy.digest == {"sha256": "11" * 32}
    assert summary.inputAttestations[0].digest == {"sha256": "22" * 32}
    assert doc["timeVerified"] == "2026-12-04T12:00:00Z"
    assert doc["slsaVersion"] == "1.0"
    assert summary.refusal("qa", DIGEST) is None


@pytest.mark.parametrize(
    ("doc", "stage", "digest", "why"),
    [
        (ours(passed=False), "qa", DIGEST, "the VSA says FAILED"),
        (ours(stage="dev"), "qa", DIGEST, "the VSA grants AIRLOCK_STAGE_DEV, not AIRLOCK_STAGE_QA"),
        (
            ours(passed=False) | {"verificationResult": "PASSED"},
            "qa",
            DIGEST,
            "the VSA grants no level, not AIRLOCK_STAGE_QA",
        ),
        (ours(), "qa", OTHER, f"the VSA is about registry.example/qa/app@{DIGEST}, not @{OTHER}"),
    ],
)
def test_a_summary_that_does_not_admit(doc: dict, stage: str, digest: str, why: str) -> None:
    assert Summary.read(doc, "here").refusal(stage, digest) == why


def test_a_real_vsa_is_read_as_written() -> None:
    envelope = json.loads((FIXTURES / "slsa-verifier/gke-gce-pre.bcid-vsa.jsonl").read_bytes())
    statement = json.loads(base64.b64decode(envelope["payload"]))
    assert statement["predicateType"] == PREDICATE_TYPE
    summary = Summary.read(statement["predicate"], "gke")
    assert summary.verificationResult == "PASSED"
    assert summary.verifiedLevels == ["BCID_L1", "SLSA_BUILD_LEVEL_2"]
    assert summary.verifier.id.startswith("https://bcid.corp.google.com/")
    assert summary.refusal("prod", DIGEST) == (
        "the VSA grants BCID_L1, SLSA_BUILD_LEVEL_2, not AIRLOCK_STAGE_PROD"
    )


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"verificationResult": "MAYBE"}, "VSA predicate verificationResult: Input should be"),
        ({"resourceUri": ""}, "VSA predicate resourceUri: String should have at least 1"),
        ({"verifier": "airlock"}, "VSA predicate verifier: Input should be a valid dictionary"),
        ({"timeVerified": "yesterday"}, "VSA predicate timeVerified: Input should be a valid"),
    ],
)
def test_malformed_predicates_are_one_line_errors(change: dict, message: str) -> None:
    with pytest.raises(EvidenceError) as e:
        Summary.read(ours() | change, "qa VSA")
    assert str(e.value).startswith(f"qa VSA: {message}")
    assert "\n" not in str(e.value)


def test_a_predicate_that_is_no_object_is_refused() -> None:
    with pytest.raises(EvidenceError, match=r"^here: VSA predicate: "):
        Summary.read(["PASSED"], "here")


# ---------------------------------------------------------------- signed, attached, checked


def keypair() -> tuple[PrivateKey, PublicKey]:
    private_pem, public_pem = generate()
    return load_private_key(private_pem, "test key"), load_public_key(public_pem, "test key")


def push_image(registry: Reg, seed: str = "app") -> Descriptor:
    img = im.image(seed)
    registry.pusher.push(REPO, img, seed)
    return Descriptor(img.media_type, img.digest, len(img.raw))


async def attach_raw(registry: Reg, subject: Descriptor, envelope: dict) -> None:
    raw = json.dumps(envelope).encode()
    async with registry.client() as client:
        await attach(client, REPO, subject, raw, PREDICATE_TYPE)


async def check_qa(registry: Reg, digest: str, keys: list[PublicKey], stage: str = "qa"):
    async with registry.client() as client:
        return await check(client, REPO, digest, stage, keys)


@pytest.mark.anyio
async def test_a_written_vsa_is_verified_with_the_stage_key(registry: Reg) -> None:
    private, public = keypair()
    subject = push_image(registry)
    async with registry.client() as client:
        written = await write(client, REPO, subject, "qa/app", ours(digest=subject.digest), private)
    verdict = await check_qa(registry, subject.digest, [public])
    assert verdict.verified, verdict.detail
    assert verdict.vsa in (written.envelope, written.bundle)
    assert verdict.detail.startswith(f"PASSED, signed by {public.short_id}")
    assert verdict.time_verified == WHEN


@pytest.mark.anyio
async def test_a_vsa_signed_by_another_key_does_not_admit(registry: Reg) -> None:
    forger, _ = keypair()
    _, stage_key = keypair()
    subject = push_image(registry)
    async with registry.client() as client:
        await write(client, REPO, subject, "qa/app", ours(digest=subject.digest), forger)
    verdict = await check_qa(registry, subject.digest, [stage_key])
    assert not verdict.verified
    shown = forger.key_id[:39]  # the keyid is the forger's, shortened
    assert f"is signed by a key the policy does not name (keyid '{shown}…'" in verdict.detail


@pytest.mark.anyio
async def test_an_unsigned_vsa_does_not_admit(registry: Reg) -> None:
    _, public = keypair()
    subject = push_image(registry)
    payload = intoto.statement([("qa/app", subject.digest)], PREDICATE_TYPE, ours())
    envelope = {"payload": dsse.b64encode(payload), "payloadType": dsse.INTOTO_PAYLOAD_TYPE}
    await attach_raw(registry, subject, envelope | {"signatures": []})
    verdict = await check_qa(registry, subject.digest, [public])
    assert not verdict.verified and "is unsigned" in verdict.detail


@pytest.mark.anyio
async def test_a_signed_vsa_about_another_digest_does_not_admit(registry: Reg) -> None:
    """The replay: a genuine VSA for image B, attached next to image A."""
    private, public = keypair()
    a, b = push_image(registry, "a"), push_image(registry, "b")
    payload = intoto.statement([("qa/app", b.digest)], PREDICATE_TYPE, ours(digest=b.digest))
    await attach_raw(registry, a, dsse.sign(payload, dsse.INTOTO_PAYLOAD_TYPE, private))
    verdict = await check_qa(registry, a.digest, [public])
    assert not verdict.verified
    assert verdict.detail.endswith(f"a VSA about another digest, not {a.digest}")


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("passed", "stage", "why"),
    [
        (False, "qa", "the VSA says FAILED"),
        (True, "staging", "the VSA grants AIRLOCK_STAGE_QA, not AIRLOCK_STAGE_STAGING"),
    ],
)
async def test_a_signed_vsa_that_does_not_pass_this_stage(
    registry: Reg, passed: bool, stage: str, why: str
) -> None:
    private, public = keypair()
    subject = push_image(registry)
    async with registry.client() as client:
        await write(
            client, REPO, subject, "qa/app", ours(passed=passed, digest=subject.digest), private
        )
    verdict = await check_qa(registry, subject.digest, [public], stage=stage)
    assert not verdict.verified and verdict.detail.endswith(why)


@pytest.mark.anyio
async def test_no_vsa_at_all(registry: Reg) -> None:
    _, public = keypair()
    subject = push_image(registry)
    verdict = await check_qa(registry, subject.digest, [public])
    assert not verdict.verified
    assert verdict.detail == f"no qa VSA is attached to {REPO}@{subject.digest}"


@pytest.mark.anyio
async def test_an_independent_dsse_verifier_accepts_the_vsa_as_stored(registry: Reg) -> None:
    """The VSA envelope as a reader finds it in the registry (both layouts), verified by
    securesystemslib — the DSSE reference implementation — with the stage's public key."""
    from securesystemslib.dsse import Envelope as SslibEnvelope
    from securesystemslib.signer import SSlibKey

    private, public = keypair()
    subject = push_image(registry)
    async with registry.client() as client:
        await write(client, REPO, subject, "qa/app", ours(digest=subject.digest), private)
        found = await attestations.collect(client, REPO, subject.digest)
    assert sorted(f.layout for f in found) == ["att", "bundle"]
    key = SSlibKey.from_crypto(public.crypto, public.key_id, "ecdsa-sha2-nistp256")
    for item in found:
        theirs = SslibEnvelope.from_dict(json.loads(item.envelope or b""))
        assert list(theirs.verify([key], threshold=1)) == [public.key_id]
        statement = json.loads(theirs.payload)
        assert statement["predicateType"] == PREDICATE_TYPE
        assert statement["subject"][0]["digest"] == {"sha256": subject.digest[7:]}


@pytest.mark.anyio
async def test_another_stages_vsa_travelling_with_the_image_is_passed_over(registry: Reg) -> None:
    """qa's VSA (qa's key) travels to staging with the image; staging's check says its own VSA
    is missing rather than that qa's is signed by another key."""
    qa_key, _ = keypair()
    _, staging_key = keypair()
    subject = push_image(registry)
    async with registry.client() as client:
        await write(client, REPO, subject, "qa/app", ours(digest=subject.digest), qa_key)
    verdict = await check_qa(registry, subject.digest, [staging_key], stage="staging")
    assert not verdict.verified
    assert verdict.detail == f"no staging VSA is attached to {REPO}@{subject.digest}"


@pytest.mark.anyio
@pytest.mark.parametrize(
    "envelope",
    [{"payload": 5, "payloadType": "x", "signatures": []}, {"signatures": "none"}, {}],
)
async def test_a_malformed_envelope_is_a_reason_not_an_error(registry: Reg, envelope: dict) -> None:
    """Someone with push rights attaches junk claiming to be a VSA: `check` says why it does not
    admit (airlock verify exits 1 with it), it never raises (which would be exit 2, bad input)."""
    _, public = keypair()
    subject = push_image(registry)
    await attach_raw(registry, subject, envelope)
    verdict = await check_qa(registry, subject.digest, [public])
    assert not verdict.verified
    assert "is not a valid DSSE envelope" in verdict.detail, verdict.detail
