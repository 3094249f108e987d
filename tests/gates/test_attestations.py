"""Attestations in both layouts cosign writes, on a real registry: written by airlock and read
back, real cosign/GitHub/sigstore bundles read, and the look-alikes an insider could push next to
an image (a bundle listed for this digest but about another, a `.att` tag holding something else)
reported, never taken as evidence."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from gates.attestations import (
    ATT_PREDICATE,
    att_tag,
    attach,
    collect,
    envelope_of_bundle,
)
from gates.base import EvidenceError
from registry import mediatypes as mt
from registry.manifest import Descriptor, digest_of, referrer_descriptor
from registry.referrers import artifact, merge_fallback, push_referrer
from tests.support import images as im
from tests.support.registries import Reg

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "attestations"
REPO = "dev/app"
VULN = "https://cosign.sigstore.dev/attestation/vuln/v1"


def push_image(registry: Reg, seed: str = "app") -> im.Image:
    img = im.image(seed)
    registry.pusher.push(REPO, img, seed)
    return img


def subject_of(img: im.Image) -> Descriptor:
    return Descriptor(img.media_type, img.digest, len(img.raw))


def fixture(path: str) -> bytes:
    return (FIXTURES / path).read_bytes()


@pytest.mark.anyio
async def test_attached_envelope_is_found_in_both_layouts(registry: Reg) -> None:
    img = push_image(registry)
    envelope = fixture("cosign/policy-vuln.dsse.json")
    async with registry.client() as client:
        written = await attach(client, REPO, subject_of(img), envelope, VULN, key_hint="k1")
        found = await collect(client, REPO, img.digest)

    by_layout = {f.layout: f for f in found}
    assert sorted(by_layout) == ["att", "bundle"]
    att, bundle = by_layout["att"], by_layout["bundle"]
    assert att.envelope == envelope  # the blob, byte for byte
    assert att.identity == written.envelope == digest_of(envelope)
    assert att.predicate_hint == VULN
    assert bundle.identity == written.bundle
    assert json.loads(bundle.envelope or b"") == json.loads(envelope)
    assert bundle.predicate_hint == VULN
    assert all(f.problem is None for f in found)


@pytest.mark.anyio
async def test_att_tag_is_what_cosign_reads(registry: Reg) -> None:
    """sha256-<hex>.att, an image manifest whose layers are the envelopes, each annotated with
    its predicateType; the config lists one diff_id per layer (an image go-containerregistry
    can open)."""
    img = push_image(registry)
    first, second = fixture("cosign/policy-vuln.dsse.json"), fixture("trivy/attestation.dsse.json")
    async with registry.client() as client:
        await attach(client, REPO, subject_of(img), first, VULN)
        await attach(client, REPO, subject_of(img), first, VULN)  # again: kept once
        await attach(client, REPO, subject_of(img), second, "https://example.com/p")
    doc = registry.pusher.http.get(
        f"/v2/{REPO}/manifests/{att_tag(img.digest)}",
        headers={"Accept": mt.OCI_MANIFEST},
    ).json()
    assert [layer["mediaType"] for layer in doc["layers"]] == [mt.DSSE_ENVELOPE] * 2
    assert [layer["digest"] for layer in doc["layers"]] == [digest_of(first), digest_of(second)]
    assert doc["layers"][1]["annotations"] == {ATT_PREDICATE: "https://example.com/p"}
    config = registry.pusher.http.get(f"/v2/{REPO}/blobs/{doc['config']['digest']}").json()
    assert config["rootfs"]["diff_ids"] == [digest_of(first), digest_of(second)]


@pytest.mark.anyio
async def test_real_cosign_bundle_referrer_yields_its_envelope(registry: Reg) -> None:
    img = push_image(registry)
    bundle = fixture("cosign/oci-attestation.sigstore.json")
    manifest, blobs = artifact(subject_of(img), mt.SIGSTORE_BUNDLE_V03, bundle)
    async with registry.client() as client:
        await push_referrer(client, REPO, manifest, blobs)
        found = await collect(client, REPO, img.digest)
    assert len(found) == 1 and found[0].layout == "bundle" and found[0].problem is None
    assert json.loads(found[0].envelope or b"") == json.loads(bundle)["dsseEnvelope"]


@pytest.mark.anyio
async def test_message_signature_bundle_is_not_an_attestation(registry: Reg) -> None:
    img = push_image(registry)
    bundle = fixture("sigstore-python/bundle_v3.txt.sigstore")
    manifest, blobs = artifact(subject_of(img), mt.SIGSTORE_BUNDLE_V03, bundle)
    async with registry.client() as client:
        await push_referrer(client, REPO, manifest, blobs)
        assert await collect(client, REPO, img.digest) == []


@pytest.mark.anyio
async def test_bundle_about_another_image_listed_for_this_one_is_reported(registry: Reg) -> None:
    """The attack: an attestation made for image B, listed in image A's referrers fallback tag.
    The referrer's own manifest names B, so it is no evidence for A."""
    a, b = push_image(registry, "a"), push_image(registry, "b")
    envelope = fixture("cosign/policy-vuln.dsse.json")
    async with registry.client() as client:
        written = await attach(client, REPO, subject_of(b), envelope, VULN)
        manifest = await client.get_manifest(REPO, written.bundle)
        await merge_fallback(client, REPO, a.digest, [referrer_descriptor(manifest)])
        found = await collect(client, REPO, a.digest)
    assert len(found) == 1 and found[0].envelope is None
    assert found[0].problem == f"listed for {a.digest} but the manifest names {b.digest}"


@pytest.mark.anyio
async def test_att_tag_holding_an_index_is_reported(registry: Reg) -> None:
    img = push_image(registry)
    registry.pusher.push(REPO, im.index([im.image("other")]), att_tag(img.digest))
    async with registry.client() as client:
        found = await collect(client, REPO, img.digest)
    assert [f.problem for f in found] == ["the .att tag holds an index"]


@pytest.mark.anyio
async def test_malformed_bundle_is_reported_not_read(registry: Reg) -> None:
    img = push_image(registry)
    manifest, blobs = artifact(subject_of(img), mt.SIGSTORE_BUNDLE_V03, b'{"mediaType": 1')
    async with registry.client() as client:
        await push_referrer(client, REPO, manifest, blobs)
        found = await collect(client, REPO, img.digest)
    assert len(found) == 1 and found[0].envelope is None
    assert found[0].problem == f"{manifest.digest}: the sigstore bundle is not JSON"


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"[]", "not a sigstore bundle (no bundle mediaType)"),
        (b'{"mediaType": "application/json"}', "not a sigstore bundle (no bundle mediaType)"),
        (
            b'{"mediaType": "application/vnd.dev.sigstore.bundle.v0.3+json"}',
            "the sigstore bundle has neither dsseEnvelope nor signature",
        ),
        (
            b'{"mediaType": "application/vnd.dev.sigstore.bundle.v0.3+json", "dsseEnvelope": []}',
            "the bundle's dsseEnvelope is not an object",
        ),
    ],
)
def test_bundle_shapes_that_are_refused(data: bytes, message: str) -> None:
    with pytest.raises(EvidenceError) as e:
        envelope_of_bundle(data, "here")
    assert str(e.value) == f"here: {message}"


def test_every_real_bundle_fixture_with_an_envelope_yields_it() -> None:
    bundles = [*FIXTURES.rglob("*.sigstore*"), FIXTURES / "sigstore-go/bundle-publish.json"]
    assert len(bundles) >= 8
    for path in sorted(bundles):
        doc = json.loads(path.read_bytes())
        got = envelope_of_bundle(path.read_bytes(), path.name)
        if "dsseEnvelope" in doc:
            assert got is not None and json.loads(got) == doc["dsseEnvelope"], path
        else:
            assert got is None and "messageSignature" in doc, path
