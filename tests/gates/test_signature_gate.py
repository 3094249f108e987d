"""Signature gate: real cosign-format signatures (made here with `cryptography`) and Notation /
sigstore-bundle referrers pushed to a real registry, collected back by digest and judged."""

from __future__ import annotations

import base64
import hashlib
import json
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from pydantic import ValidationError

from gates import dsse, intoto
from gates.attestations import bundle_of
from gates.base import EvidenceError
from gates.keys import PrivateKey
from gates.signature import (
    COSIGN_PAYLOAD_TYPE,
    NOTATION_SIGNATURE,
    SIGN_PREDICATE,
    SIGSTORE_BUNDLE_V03,
    FoundSignature,
    SignaturePolicy,
    collect,
    evaluate,
    load_public_key,
    read_public_keys,
    signature_kind,
)
from registry.manifest import index_entries, parse_manifest, referrer_descriptor
from tests.support import images as im
from tests.support.registries import Reg

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "oci"
REPO = "dev/app"


# ---------------------------------------------------------------------------- helpers


def new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def pem(key: ec.EllipticCurvePrivateKey) -> str:
    return (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )


def simple_signing(digest: str, reference: str = "registry.example/dev/app") -> bytes:
    """cosign's payload: the exact bytes the signature covers (cosign writes them compact)."""
    doc = {
        "critical": {
            "identity": {"docker-reference": reference},
            "image": {"docker-manifest-digest": digest},
            "type": "cosign container image signature",
        },
        "optional": None,
    }
    return json.dumps(doc, separators=(",", ":")).encode()


def sign(key: ec.EllipticCurvePrivateKey, payload: bytes) -> str:
    """What `cosign sign --key` puts in the annotation: base64 of the DER ECDSA-SHA256 signature."""
    return base64.b64encode(key.sign(payload, ec.ECDSA(hashes.SHA256()))).decode()


def cosign_manifest(payload: bytes, signature: str, **annotations: str) -> im.Image:
    """The manifest cosign pushes under sha256-<hex>.sig: one simple-signing layer per signature."""
    layer = im.Blob(payload, COSIGN_PAYLOAD_TYPE)
    config = im.Blob(
        json.dumps(
            {
                "architecture": "",
                "os": "",
                "config": {},
                "rootfs": {"type": "layers", "diff_ids": [layer.digest]},
            }
        ).encode(),
        im.OCI_CONFIG,
    )
    doc = {
        "schemaVersion": 2,
        "mediaType": im.OCI_MANIFEST,
        "config": config.descriptor(),
        "layers": [
            {
                **layer.descriptor(),
                "annotations": {"dev.cosignproject.cosign/signature": signature, **annotations},
            }
        ],
    }
    return im.Image(json.dumps(doc).encode(), im.OCI_MANIFEST, [config, layer])


def push_signature(registry: Reg, subject: im.Image, sig: im.Image) -> str:
    tag = im.fallback_tag_of(subject.digest) + ".sig"
    registry.pusher.push(REPO, sig, tag)
    return tag


def push_image(registry: Reg, seed: str = "app") -> im.Image:
    img = im.image(seed)
    registry.pusher.push(REPO, img, "v1")
    return img


async def found_for(registry: Reg, digest: str) -> list[FoundSignature]:
    async with registry.client() as client:
        return await collect(client, REPO, digest)


def verified(*keys: ec.EllipticCurvePrivateKey) -> SignaturePolicy:
    return SignaturePolicy(require="verified", public_keys=[pem(k) for k in keys])


# ---------------------------------------------------------------------------- cosign, real registry


@pytest.mark.anyio
async def test_verified_cosign_signature_passes(registry: Reg) -> None:
    img = push_image(registry)
    key = new_key()
    payload = simple_signing(img.digest)
    tag = push_signature(registry, img, cosign_manifest(payload, sign(key, payload)))

    found = await found_for(registry, img.digest)
    assert [(f.kind, f.where, f.payload) for f in found] == [("cosign", tag, payload)]

    result = evaluate(found, verified(new_key(), key), img.digest)
    assert result.passed, result.summary
    assert result.gate == "signature"
    # which trusted key verified it: its place in the policy and its SPKI sha256 (a reviewer
    # compares it with `openssl pkey -pubin -outform DER | sha256sum`)
    der = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    key_id = f"sha256:{hashlib.sha256(der).hexdigest()[:16]}…"
    assert result.summary.startswith("verified:")
    assert result.summary.endswith(f"verifies with public key 2 ({key_id})")
    assert result.error is None
    assert result.rows == [
        {
            "kind": "cosign",
            "where": tag,
            "verified": "yes",
            "detail": f"verifies with public key 2 ({key_id})",
        }
    ]
    [ref] = result.evidence
    assert ref.source == tag
    assert ref.digest == im.sha256(payload)
    assert ref.subject == img.digest
    assert ref.referrer == registry.pusher.digest(REPO, tag)

    # the same signature, judged for presence only, passes too and says it was not verified
    present = evaluate(found, SignaturePolicy(), img.digest)
    assert present.passed
    assert "not verified" in present.summary


@pytest.mark.anyio
async def test_wrong_key_refuses(registry: Reg) -> None:
    img = push_image(registry)
    payload = simple_signing(img.digest)
    push_signature(registry, img, cosign_manifest(payload, sign(new_key(), payload)))

    result = evaluate(await found_for(registry, img.digest), verified(new_key()), img.digest)
    assert not result.passed
    assert "does not verify" in result.summary
    assert result.rows[0]["verified"] == "no"
    assert result.error is None  # well-formed, just not trusted


@pytest.mark.anyio
async def test_valid_signature_for_another_digest_refuses(registry: Reg) -> None:
    img = push_image(registry)
    other = push_image(registry, "other")
    key = new_key()
    payload = simple_signing(other.digest)  # a genuine signature, but of the other image
    push_signature(registry, img, cosign_manifest(payload, sign(key, payload)))

    found = await found_for(registry, img.digest)
    for policy in (verified(key), SignaturePolicy()):
        result = evaluate(found, policy, img.digest)
        assert not result.passed, policy
        assert "signature is for another image" in result.summary
        assert other.digest in result.summary


@pytest.mark.anyio
async def test_tampered_payload_refuses(registry: Reg) -> None:
    img = push_image(registry)
    key = new_key()
    payload = simple_signing(img.digest, reference="registry.example/dev/app")
    signature = sign(key, payload)
    tampered = payload.replace(b"dev/app", b"dev/apq")  # one byte, still valid and still ours
    assert len(tampered) == len(payload) and tampered != payload
    push_signature(registry, img, cosign_manifest(tampered, signature))

    found = await found_for(registry, img.digest)
    assert found[0].payload == tampered
    result = evaluate(found, verified(key), img.digest)
    assert not result.passed
    assert "does not verify" in result.summary


@pytest.mark.anyio
async def test_no_signature_refuses(registry: Reg) -> None:
    img = push_image(registry)
    found = await found_for(registry, img.digest)
    assert found == []
    for policy in (SignaturePolicy(), verified(new_key())):
        result = evaluate(found, policy, img.digest)
        assert not result.passed
        assert "no cosign/notation/sigstore-bundle signature found" in result.summary
        assert result.error is None  # missing is a refusal, not malformed evidence


@pytest.mark.anyio
async def test_signature_of_another_image_is_not_collected(registry: Reg) -> None:
    img = push_image(registry)
    other = push_image(registry, "other")
    key = new_key()
    payload = simple_signing(other.digest)
    push_signature(registry, other, cosign_manifest(payload, sign(key, payload)))

    assert await found_for(registry, img.digest) == []
    assert len(await found_for(registry, other.digest)) == 1


@pytest.mark.anyio
async def test_malformed_base64_signature_refuses_with_error(registry: Reg) -> None:
    img = push_image(registry)
    key = new_key()
    payload = simple_signing(img.digest)
    push_signature(registry, img, cosign_manifest(payload, "MEUCIQD*not-base64*"))

    found = await found_for(registry, img.digest)
    for policy in (verified(key), SignaturePolicy()):
        result = evaluate(found, policy, img.digest)
        assert not result.passed
        assert result.error and "not valid base64" in result.error


@pytest.mark.anyio
async def test_malformed_public_key_refuses_with_error(registry: Reg) -> None:
    img = push_image(registry)
    key = new_key()
    payload = simple_signing(img.digest)
    push_signature(registry, img, cosign_manifest(payload, sign(key, payload)))
    found = await found_for(registry, img.digest)

    garbled = pem(key).replace("\n", "\n!", 2)
    # one good key does not excuse a broken one: the policy is wrong, so the gate fails closed
    result = evaluate(
        found, SignaturePolicy(require="verified", public_keys=[pem(key), garbled]), img.digest
    )
    assert not result.passed
    assert result.error == "public key 2 is not a PEM public key"


@pytest.mark.anyio
async def test_oversized_payload_is_not_read_and_refuses(
    registry: Reg, monkeypatch: pytest.MonkeyPatch
) -> None:
    import gates.signature as sig

    img = push_image(registry)
    key = new_key()
    payload = simple_signing(img.digest)
    push_signature(registry, img, cosign_manifest(payload, sign(key, payload)))
    monkeypatch.setattr(sig, "MAX_PAYLOAD_BYTES", len(payload) - 1)

    found = await found_for(registry, img.digest)
    assert found[0].payload is None
    assert found[0].problem and "over the" in found[0].problem
    result = evaluate(found, verified(key), img.digest)
    assert not result.passed
    assert result.error and "over the" in result.error


@pytest.mark.anyio
async def test_several_signatures_one_verifies(registry: Reg) -> None:
    """cosign appends a layer per signature; one trusted signature is enough."""
    img = push_image(registry)
    trusted, stranger = new_key(), new_key()
    payload = simple_signing(img.digest)
    first = cosign_manifest(payload, sign(stranger, payload))
    second = cosign_manifest(payload + b" ", sign(trusted, payload + b" "))
    doc = json.loads(first.raw)
    doc["layers"].append(json.loads(second.raw)["layers"][0])
    both = im.Image(json.dumps(doc).encode(), im.OCI_MANIFEST, first.blobs + second.blobs[1:])
    push_signature(registry, img, both)

    found = await found_for(registry, img.digest)
    assert len(found) == 2
    result = evaluate(found, verified(trusted), img.digest)
    assert result.passed, result.summary
    assert [r["verified"] for r in result.rows] == ["no", "yes"]


# ---------------------------------------------------------------------------- referrers


def notation_signature(subject: im.Image) -> im.Image:
    return im.artifact(subject, NOTATION_SIGNATURE, b'{"payload":"jws"}', "application/jose+json")


@pytest.mark.anyio
async def test_notation_referrer_in_fallback_index_is_present_not_verified(registry: Reg) -> None:
    img = push_image(registry)
    sig = notation_signature(img)
    registry.pusher.push(REPO, sig)
    registry.pusher.push(
        REPO, im.fallback_index([sig], [NOTATION_SIGNATURE]), im.fallback_tag_of(img.digest)
    )

    found = await found_for(registry, img.digest)
    assert [(f.kind, f.where, f.problem) for f in found] == [("notation", sig.digest, None)]

    present = evaluate(found, SignaturePolicy(), img.digest)
    assert present.passed, present.summary
    assert present.evidence[0].digest == sig.digest  # the manifest, for presence-only kinds
    assert present.evidence[0].subject == img.digest

    strict = evaluate(found, verified(new_key()), img.digest)
    assert not strict.passed
    assert "presence only" in strict.summary
    assert "Notation" in strict.summary

    only_cosign = evaluate(found, SignaturePolicy(kinds=["cosign"]), img.digest)
    assert not only_cosign.passed
    assert only_cosign.rows[0]["detail"] == "kind not allowed by policy"


@pytest.mark.anyio
async def test_sigstore_bundle_referrer_summary_says_keyless_is_out_of_scope(
    registry: Reg,
) -> None:
    img = push_image(registry)
    # a real keyless message-signature bundle (sigstore-python's test data), listed for img
    real = (FIXTURES.parent / "attestations/sigstore-python/bundle_v3.txt.sigstore").read_bytes()
    bundle = im.artifact(img, SIGSTORE_BUNDLE_V03, real, SIGSTORE_BUNDLE_V03)
    registry.pusher.push(REPO, bundle)
    registry.pusher.push(
        REPO, im.fallback_index([bundle], [SIGSTORE_BUNDLE_V03]), im.fallback_tag_of(img.digest)
    )

    found = await found_for(registry, img.digest)
    assert [f.kind for f in found] == ["sigstore-bundle"]
    assert evaluate(found, SignaturePolicy(), img.digest).passed
    strict = evaluate(found, verified(new_key()), img.digest)
    assert not strict.passed
    assert "keyless" in strict.summary and "out of scope" in strict.summary


@pytest.mark.anyio
async def test_listed_referrer_naming_another_subject_does_not_count(registry: Reg) -> None:
    img = push_image(registry)
    other = push_image(registry, "other")
    sig = notation_signature(other)  # a signature of the other image, listed under ours
    registry.pusher.push(REPO, sig)
    registry.pusher.push(
        REPO, im.fallback_index([sig], [NOTATION_SIGNATURE]), im.fallback_tag_of(img.digest)
    )

    found = await found_for(registry, img.digest)
    assert found[0].problem and "names " + other.digest in found[0].problem
    result = evaluate(found, SignaturePolicy(), img.digest)
    assert not result.passed
    assert result.error


@pytest.mark.anyio
async def test_other_referrers_and_a_non_index_fallback_tag_are_ignored(registry: Reg) -> None:
    img = push_image(registry)
    report = im.artifact(img, "application/vnd.airlock.test-report.pytest+json", b"{}", "x/y")
    registry.pusher.push(REPO, report)
    registry.pusher.push(
        REPO,
        im.fallback_index([report], ["application/vnd.airlock.test-report.pytest+json"]),
        im.fallback_tag_of(img.digest),
    )
    assert await found_for(registry, img.digest) == []

    # some registries answer the fallback tag with the subject itself
    registry.pusher.push(REPO, img, im.fallback_tag_of(img.digest))
    assert await found_for(registry, img.digest) == []


# ---------------------------------------------------------------------------- pure


def test_notation_fixtures_classify_as_notation() -> None:
    """The fallback index and signature manifest that `notation sign` wrote (shared fixtures)."""
    index = json.loads((FIXTURES / "notation-referrers-tag-index.json").read_bytes())
    [entry], problems = index_entries(index, "fixture")
    assert problems == []
    assert signature_kind(entry.artifact_type) == "notation"

    raw = (FIXTURES / "notation-signature-manifest.json").read_bytes()
    manifest = parse_manifest(raw, None, im.sha256(raw), "fixture")
    assert manifest.artifact_type is None  # notation carries its type in config.mediaType
    assert signature_kind(referrer_descriptor(manifest).artifact_type) == "notation"
    subject = (FIXTURES / "notation-subject-manifest.json").read_bytes()
    assert manifest.subject is not None and manifest.subject.digest == im.sha256(subject)
    assert entry.digest == manifest.digest


@pytest.mark.parametrize(
    ("artifact_type", "kind"),
    [
        ("application/vnd.cncf.notary.signature", "notation"),
        ("application/vnd.dev.sigstore.bundle.v0.3+json", "sigstore-bundle"),
        ("application/vnd.dev.sigstore.bundle+json;version=0.1", "sigstore-bundle"),
        ("application/vnd.dev.sigstore.bundle+json; version=0.2", "sigstore-bundle"),
        ("application/vnd.dev.sigstore.bundle+json", "sigstore-bundle"),
        ("application/vnd.airlock.test-report.pytest+json", None),
        ("application/vnd.dev.sigstore.bundlex+json", None),
        ("application/example.signature", None),
        (None, None),
    ],
)
def test_signature_kind(artifact_type: str | None, kind: str | None) -> None:
    assert signature_kind(artifact_type) == kind


DIGEST = im.sha256(b"subject")


def cosign_found(payload: bytes | None, signature: str | None, **kw: str) -> FoundSignature:
    return FoundSignature("cosign", "sha256-x.sig", payload, signature, **kw)


@pytest.mark.parametrize(
    ("payload", "why"),
    [
        (b"not json", "not JSON"),
        (b"[]", "no 'critical' object"),
        (
            json.dumps(
                {"critical": {"type": "other", "image": {"docker-manifest-digest": DIGEST}}}
            ).encode(),
            "payload type is 'other'",
        ),
        (
            json.dumps({"critical": {"type": "cosign container image signature"}}).encode(),
            "names no critical.image.docker-manifest-digest",
        ),
        (b"\xff\xfe", "not JSON"),
    ],
)
def test_malformed_payload_refuses_with_error_even_if_signed(payload: bytes, why: str) -> None:
    key = new_key()
    found = [cosign_found(payload, sign(key, payload))]
    for policy in (verified(key), SignaturePolicy()):
        result = evaluate(found, policy, DIGEST)
        assert not result.passed
        assert result.error and why in result.error


def test_missing_payload_or_signature_refuses() -> None:
    payload = simple_signing(DIGEST)
    for found, why in [
        (cosign_found(None, "AAAA"), "no simple-signing payload"),
        (cosign_found(payload, None), "no dev.cosignproject.cosign/signature annotation"),
        (cosign_found(payload, ""), "no dev.cosignproject.cosign/signature annotation"),
    ]:
        result = evaluate([found], SignaturePolicy(), DIGEST)
        assert not result.passed
        assert result.error and why in result.error


def test_keyless_cosign_signature_is_not_verified() -> None:
    fulcio_key = new_key()  # stands in for the ephemeral key of a Fulcio certificate
    payload = simple_signing(DIGEST)
    found = [cosign_found(payload, sign(fulcio_key, payload), certificate="-----BEGIN CERT…")]
    assert evaluate(found, SignaturePolicy(), DIGEST).passed
    result = evaluate(found, verified(new_key()), DIGEST)
    assert not result.passed
    assert "keyless" in result.summary
    assert "out of scope" in result.summary


def test_signature_over_other_bytes_does_not_verify() -> None:
    key = new_key()
    payload = simple_signing(DIGEST)
    other = simple_signing(DIGEST, reference="elsewhere/app")
    assert evaluate([cosign_found(payload, sign(key, payload))], verified(key), DIGEST).passed
    assert not evaluate([cosign_found(payload, sign(key, other))], verified(key), DIGEST).passed


def test_subject_must_be_a_digest() -> None:
    key = new_key()
    payload = simple_signing("v1")
    result = evaluate([cosign_found(payload, sign(key, payload))], verified(key), "v1")
    assert not result.passed
    assert result.error and "not a digest" in result.error


def test_policy_validation() -> None:
    with pytest.raises(ValidationError, match="at least one public key"):
        SignaturePolicy(require="verified")
    with pytest.raises(ValidationError, match="add cosign to kinds"):
        SignaturePolicy(require="verified", public_keys=[pem(new_key())], kinds=["notation"])
    with pytest.raises(ValidationError):
        SignaturePolicy(kinds=[])
    with pytest.raises(ValidationError):
        SignaturePolicy(kinds=["gpg"])  # type: ignore[list-item]
    with pytest.raises(ValidationError):
        SignaturePolicy(require="trusted")  # type: ignore[arg-type]
    with pytest.raises(ValidationError, match="Extra inputs"):
        SignaturePolicy.model_validate({"require": "present", "keys": []})
    assert SignaturePolicy().kinds == ["cosign", "notation", "sigstore-bundle"]


def test_unsupported_key_types_refuse() -> None:
    rsa_pem = (
        rsa.generate_private_key(public_exponent=65537, key_size=2048)
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    p384 = pem(ec.generate_private_key(ec.SECP384R1()))  # type: ignore[arg-type]
    for text in (rsa_pem, p384):
        with pytest.raises(EvidenceError, match="only ECDSA P-256"):
            load_public_key(text)
        result = evaluate([], SignaturePolicy(require="verified", public_keys=[text]), DIGEST)
        assert not result.passed
        assert result.error and "only ECDSA P-256" in result.error


def test_read_public_keys(tmp_path: Path) -> None:
    good = tmp_path / "cosign.pub"
    good.write_text(pem(new_key()))
    assert read_public_keys([good]) == [good.read_text()]

    bad = tmp_path / "bad.pub"
    bad.write_text("-----BEGIN PUBLIC KEY-----\nnope\n-----END PUBLIC KEY-----\n")
    with pytest.raises(EvidenceError, match=r"bad\.pub is not a PEM public key"):
        read_public_keys([good, bad])
    with pytest.raises(EvidenceError, match="cannot read"):
        read_public_keys([tmp_path / "missing.pub"])
    binary = tmp_path / "binary.pub"
    binary.write_bytes(b"\x00\xff" * 10)
    with pytest.raises(EvidenceError, match="not a PEM public key"):
        read_public_keys([binary])


# ---------------------------------------------------------------- cosign 3: signatures as bundles


def cosign3_bundle(
    img: im.Image, key: ec.EllipticCurvePrivateKey, about: str | None = None, kind: str = ""
) -> im.Image:
    """What `cosign sign --key` (cosign 3) pushes: a sigstore bundle v0.3 referrer whose DSSE
    envelope holds an in-toto statement of predicate type sign/v1 about the manifest digest."""
    private = PrivateKey(key)
    predicate_type = kind or SIGN_PREDICATE
    statement = intoto.statement([("", about or img.digest)], predicate_type, {})
    envelope = dsse.sign(statement, dsse.INTOTO_PAYLOAD_TYPE, private)
    bundle = bundle_of(envelope, private.key_id)
    return im.artifact(img, SIGSTORE_BUNDLE_V03, bundle, SIGSTORE_BUNDLE_V03)


def push_bundles(registry: Reg, img: im.Image, *bundles: im.Image) -> None:
    for bundle in bundles:
        registry.pusher.push(REPO, bundle)
    registry.pusher.push(
        REPO,
        im.fallback_index(list(bundles), [SIGSTORE_BUNDLE_V03] * len(bundles)),
        im.fallback_tag_of(img.digest),
    )


@pytest.mark.anyio
async def test_a_cosign3_signature_by_another_key_is_refused(registry: Reg) -> None:
    img = push_image(registry, "cosign3-forged")
    push_bundles(registry, img, cosign3_bundle(img, new_key()))
    result = evaluate(await found_for(registry, img.digest), verified(new_key()), img.digest)
    assert not result.passed
    assert "cosign 3 signature" in result.summary and "does not verify" in result.summary


@pytest.mark.anyio
async def test_a_genuine_cosign3_signature_of_another_image_is_refused(registry: Reg) -> None:
    key = new_key()
    img, other = push_image(registry, "cosign3-img"), push_image(registry, "cosign3-other")
    push_bundles(registry, img, cosign3_bundle(img, key, about=other.digest))
    result = evaluate(await found_for(registry, img.digest), verified(key), img.digest)
    assert not result.passed and "signature is for another image" in result.summary


@pytest.mark.anyio
async def test_an_attestation_bundle_is_no_signature_even_for_presence(registry: Reg) -> None:
    """A signed test report (or any statement but sign/v1) next to the image signs nothing."""
    key = new_key()
    img = push_image(registry, "cosign3-attestation")
    report = cosign3_bundle(img, key, kind="https://in-toto.io/attestation/test-result/v0.1")
    push_bundles(registry, img, report)
    found = await found_for(registry, img.digest)
    assert found == []
    assert not evaluate(found, SignaturePolicy(), img.digest).passed


@pytest.mark.anyio
async def test_a_cosign3_signature_verifies_with_the_key(registry: Reg) -> None:
    key = new_key()
    img = push_image(registry, "cosign3-good")
    push_bundles(registry, img, cosign3_bundle(img, key))
    found = await found_for(registry, img.digest)
    result = evaluate(found, verified(new_key(), key), img.digest)
    assert result.passed, result.summary
    assert result.summary.startswith("verified: cosign signature sha256:")
    assert "verifies with public key 2" in result.summary
    assert evaluate(found, SignaturePolicy(), img.digest).passed  # and it is present
