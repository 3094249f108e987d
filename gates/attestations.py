"""Signed attestations (DSSE envelopes) stored with an image, in the two layouts cosign writes.

- **`.att` tag**: the manifest under `sha256-<hex>.att` has one layer per attestation, each a DSSE
  envelope (`application/vnd.dsse.envelope.v1+json`) annotated `predicateType` (cosign 2,
  Kyverno and Sigstore's policy-controller read this layout).
- **sigstore bundle referrer**: an OCI 1.1 artifact of type
  `application/vnd.dev.sigstore.bundle.v0.3+json` whose subject is the image and whose one layer
  is the bundle; the bundle's `dsseEnvelope` is the attestation (cosign 3's default), annotated
  `dev.sigstore.bundle.predicateType`.

Annotations are hints for finding things quickly; what a statement says is read from its verified
payload only. `collect` reads both layouts (nothing is verified here); `attach` writes one
envelope in both. Like gates/signature.py, this is registry I/O only, never Prefect.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
from dataclasses import dataclass, replace
from typing import Any, Literal

from gates.base import MAX_EVIDENCE_BYTES, EvidenceError
from registry import mediatypes as mt
from registry.client import RegistryClient
from registry.errors import NotFound, UnsupportedContent
from registry.manifest import Descriptor, Manifest, digest_of, fallback_tag, parse_manifest
from registry.referrers import artifact, list_referrers, push_blobs, push_referrer

ATT_PREDICATE = "predicateType"  # the .att layer's annotation (cosign's name for it)
BUNDLE_PREDICATE = "dev.sigstore.bundle.predicateType"
BUNDLE_CONTENT = "dev.sigstore.bundle.content"
IMAGE_CONFIG = "application/vnd.oci.image.config.v1+json"
MAX_ATT_LAYERS = 256  # attestations under one .att tag read at most (the rest are reported)

Layout = Literal["att", "bundle"]


@dataclass(frozen=True, slots=True)
class FoundEnvelope:
    """One DSSE envelope found for a digest, unverified.

    `identity` names what was read, by digest: the envelope blob for the `.att` layout, the bundle
    referrer's manifest for the bundle layout (what a VSA's `inputAttestations` cites).
    `problem` says why it could not be read; such an entry never passes a gate.
    """

    layout: Layout
    where: str  # the tag and layer, or the referrer manifest's digest
    identity: str
    envelope: bytes | None = None  # the envelope's JSON
    bundle: bytes | None = None  # the whole sigstore bundle: keyless needs its certificate
    predicate_hint: str | None = None  # from an annotation: a hint, never trusted
    created: str | None = None
    problem: str | None = None


# ------------------------------------------------------------------------------------- read


async def collect(client: RegistryClient, repo: str, digest: str) -> list[FoundEnvelope]:
    """Every DSSE envelope stored for repo@digest: the `.att` tag's layers, then sigstore-bundle
    referrers that hold an envelope (bundles holding a plain message signature are signatures,
    read by the signature gate)."""
    att, bundles = await asyncio.gather(_att(client, repo, digest), _bundles(client, repo, digest))
    return [*att, *bundles]


def att_tag(digest: str) -> str:
    return fallback_tag(digest) + ".att"


async def _att(client: RegistryClient, repo: str, digest: str) -> list[FoundEnvelope]:
    tag = att_tag(digest)
    try:
        manifest = await client.get_manifest(repo, tag)
    except NotFound:
        return []
    except UnsupportedContent as e:
        return [FoundEnvelope("att", tag, tag, problem=f"unreadable .att manifest ({e})")]
    if manifest.is_index:
        return [FoundEnvelope("att", tag, manifest.digest, problem="the .att tag holds an index")]
    layers = [d for d in manifest.layers if d.media_type == mt.DSSE_ENVELOPE]
    found = await asyncio.gather(
        *(_att_layer(client, repo, tag, d) for d in layers[:MAX_ATT_LAYERS])
    )
    if len(layers) > MAX_ATT_LAYERS:
        more = f"{len(layers) - MAX_ATT_LAYERS} more layers not read (cap {MAX_ATT_LAYERS})"
        return [*found, FoundEnvelope("att", tag, manifest.digest, problem=more)]
    return list(found)


async def _att_layer(
    client: RegistryClient, repo: str, tag: str, layer: Descriptor
) -> FoundEnvelope:
    hint = (layer.annotations or {}).get(ATT_PREDICATE)
    found = FoundEnvelope("att", f"{tag} layer {layer.digest}", layer.digest, predicate_hint=hint)
    if layer.size > MAX_EVIDENCE_BYTES:
        return replace(found, problem=f"envelope is {layer.size} bytes, over the cap")
    return replace(found, envelope=await client.read_blob(repo, layer))


async def _bundles(client: RegistryClient, repo: str, digest: str) -> list[FoundEnvelope]:
    listing = await list_referrers(client, repo, digest)
    wanted = [d for d in listing.descriptors if d.artifact_type == mt.SIGSTORE_BUNDLE_V03]
    found = await asyncio.gather(*(_bundle(client, repo, digest, d) for d in wanted))
    return [f for f in found if f is not None]


async def _bundle(
    client: RegistryClient, repo: str, subject: str, desc: Descriptor
) -> FoundEnvelope | None:
    """A listed bundle referrer, checked against its own manifest (the listing is a hint)."""
    found = FoundEnvelope(
        "bundle",
        desc.digest,
        desc.digest,
        predicate_hint=(desc.annotations or {}).get(BUNDLE_PREDICATE),
    )
    try:
        manifest = await client.get_manifest(repo, desc.digest)
    except NotFound:
        return replace(found, problem="listed but the manifest is missing")
    except UnsupportedContent as e:
        return replace(found, problem=f"unreadable manifest ({e})")
    problem = _bundle_problem(manifest, subject)
    if problem:
        return replace(found, problem=problem)
    layer = manifest.layers[0]
    if layer.size > MAX_EVIDENCE_BYTES:
        return replace(found, problem=f"bundle is {layer.size} bytes, over the cap")
    data = await client.read_blob(repo, layer)
    try:
        envelope = envelope_of_bundle(data, desc.digest)
    except EvidenceError as e:
        return replace(found, problem=str(e))
    if envelope is None:
        return None  # a message-signature bundle: not an attestation
    return replace(
        found,
        envelope=envelope,
        bundle=data,
        created=manifest.annotations.get("org.opencontainers.image.created"),
    )


def _bundle_problem(manifest: Manifest, subject: str) -> str | None:
    if manifest.subject is None or manifest.subject.digest != subject:
        named = manifest.subject.digest if manifest.subject else "no subject"
        return f"listed for {subject} but the manifest names {named}"
    if manifest.artifact_type != mt.SIGSTORE_BUNDLE_V03:
        return f"listed as a sigstore bundle but the manifest is {manifest.artifact_type}"
    if len(manifest.layers) != 1:
        return f"a bundle referrer has one layer, this one {len(manifest.layers)}"
    return None


def envelope_of_bundle(data: bytes, where: str) -> bytes | None:
    """The DSSE envelope (as JSON) inside a sigstore bundle, or None when the bundle holds a
    message signature instead. Raises EvidenceError for anything that is not a bundle."""
    try:
        doc = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
        raise EvidenceError(f"{where}: the sigstore bundle is not JSON") from None
    if not isinstance(doc, dict) or not str(doc.get("mediaType", "")).startswith(
        "application/vnd.dev.sigstore.bundle"
    ):
        raise EvidenceError(f"{where}: not a sigstore bundle (no bundle mediaType)")
    envelope = doc.get("dsseEnvelope")
    if envelope is None:
        if "messageSignature" in doc:
            return None
        raise EvidenceError(f"{where}: the sigstore bundle has neither dsseEnvelope nor signature")
    if not isinstance(envelope, dict):
        raise EvidenceError(f"{where}: the bundle's dsseEnvelope is not an object")
    return json.dumps(envelope, separators=(",", ":")).encode()


# ------------------------------------------------------------------------------------ write


@dataclass(frozen=True, slots=True)
class Attached:
    """Where one envelope was written: the `.att` layer (the envelope blob's digest) and manifest,
    and the bundle referrer's manifest."""

    envelope: str
    att_manifest: str
    bundle: str


def bundle_of(envelope: dict[str, Any], key_hint: str) -> bytes:
    """A keyed sigstore bundle v0.3 around a DSSE envelope: the public key named by its hint, no
    certificate and no transparency-log entry (what cosign writes for a key with
    --tlog-upload=false)."""
    doc = {
        "mediaType": mt.SIGSTORE_BUNDLE_V03,
        "verificationMaterial": {"publicKey": {"hint": key_hint}, "tlogEntries": []},
        "dsseEnvelope": envelope,
    }
    return json.dumps(doc, separators=(",", ":")).encode()


async def attach(
    client: RegistryClient,
    repo: str,
    subject: Descriptor,
    envelope: bytes,
    predicate_type: str,
    key_hint: str = "",
    created: dt.datetime | None = None,
) -> Attached:
    """Store one envelope for `subject` in both layouts: appended to the `.att` tag's layers (kept
    once) and as a sigstore-bundle referrer."""
    att_manifest = await _append_att(client, repo, subject.digest, envelope, predicate_type)
    try:
        doc = json.loads(envelope)
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise EvidenceError("the envelope to attach is not JSON") from None
    manifest, blobs = artifact(
        subject,
        mt.SIGSTORE_BUNDLE_V03,
        bundle_of(doc, key_hint),
        annotations={BUNDLE_PREDICATE: predicate_type, BUNDLE_CONTENT: "dsse-envelope"},
        created=created,
    )
    await push_referrer(client, repo, manifest, blobs)
    return Attached(digest_of(envelope), att_manifest, manifest.digest)


async def _append_att(
    client: RegistryClient, repo: str, digest: str, envelope: bytes, predicate_type: str
) -> str:
    """Add the envelope as a layer of the `.att` manifest (created if absent), as cosign does;
    a layer already there is not added twice. Returns the manifest's digest."""
    tag = att_tag(digest)
    layers: list[dict[str, Any]] = []
    try:
        current = await client.get_manifest(repo, tag)
        if not current.is_index:
            layers = [d.to_json() for d in current.layers]
    except NotFound:
        pass
    layer = Descriptor(
        mt.DSSE_ENVELOPE,
        digest_of(envelope),
        len(envelope),
        annotations={ATT_PREDICATE: predicate_type},
    )
    if not any(item.get("digest") == layer.digest for item in layers):
        layers.append(layer.to_json())
    config = _config([item["digest"] for item in layers])
    blobs = {layer.digest: envelope, digest_of(config): config}
    raw = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": mt.OCI_MANIFEST,
            "config": {"mediaType": IMAGE_CONFIG, "digest": digest_of(config), "size": len(config)},
            "layers": layers,
        },
        separators=(",", ":"),
    ).encode()
    manifest = parse_manifest(raw, mt.OCI_MANIFEST, digest_of(raw), f"{repo}:{tag}")
    await push_blobs(client, repo, manifest, blobs)  # layers already there are not re-sent
    await client.put_manifest(repo, tag, manifest)
    return manifest.digest


def _config(layer_digests: list[str]) -> bytes:
    """The image config cosign gives an `.att` image (go-containerregistry's empty image with the
    layers appended): readers that open it as an image find one diff_id per layer."""
    doc = {
        "architecture": "",
        "created": "0001-01-01T00:00:00Z",
        "history": [{"created": "0001-01-01T00:00:00Z"} for _ in layer_digests],
        "os": "",
        "rootfs": {"type": "layers", "diff_ids": layer_digests},
        "config": {},
    }
    return json.dumps(doc, separators=(",", ":")).encode()
