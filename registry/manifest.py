"""Descriptors, manifests and indexes: parse, validate, and walk children and blobs.

A Manifest keeps the exact bytes it was parsed from; airlock only ever pushes those bytes, so a
copy can never change a digest by re-serialising.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

from registry import mediatypes as mt
from registry.errors import DigestMismatch, InvalidReference, UnsupportedContent
from registry.reference import validate_digest

MAX_MANIFEST_SIZE = 4 * 1024 * 1024  # what distribution and most registries accept
# Fan-out caps: each child or referrer costs a copy requests and memory (an index of 10,000
# children took 76 s and 178 MB). Real indexes have tens of entries (platforms, doubled by
# buildx's attestations); real images a handful of referrers (signature, SBOM, provenance, a
# report per stage) — a daily scan report for 2.7 years would reach 1,000.
MAX_INDEX_CHILDREN = 1000
MAX_REFERRERS = 1000  # per subject digest, over every page of a listing
_GENERIC_TYPES = frozenset({"application/json", "text/plain", "application/octet-stream"})


def digest_of(data: bytes, algorithm: str = "sha256") -> str:
    return f"{algorithm}:{hashlib.new(algorithm, data).hexdigest()}"


def verify_digest(data: bytes, expected: str, what: str) -> None:
    """Raise DigestMismatch unless `data` hashes to `expected` (in expected's algorithm)."""
    algorithm = expected.split(":", 1)[0]
    if algorithm not in ("sha256", "sha512"):
        raise UnsupportedContent(f"{what}: unsupported digest algorithm in {expected!r}")
    actual = digest_of(data, algorithm)
    if actual != expected:
        raise DigestMismatch(
            f"{what}: content hashes to {actual}, expected {expected}; the registry served other"
            " bytes than asked for, retry and report it to the registry operator if it persists"
        )


@dataclass(frozen=True, slots=True)
class Descriptor:
    media_type: str
    digest: str
    size: int
    artifact_type: str | None = None
    annotations: dict[str, str] | None = None
    platform: dict[str, Any] | None = None
    urls: tuple[str, ...] = ()

    @classmethod
    def from_json(cls, obj: Any, where: str) -> Descriptor:
        if not isinstance(obj, dict):
            raise UnsupportedContent(f"{where}: descriptor is not a JSON object")
        media_type, digest, size = obj.get("mediaType"), obj.get("digest"), obj.get("size")
        if not isinstance(media_type, str) or not media_type:
            raise UnsupportedContent(f"{where}: descriptor has no mediaType")
        if not isinstance(digest, str):
            raise UnsupportedContent(f"{where}: descriptor has no digest")
        try:
            validate_digest(digest)
        except InvalidReference as e:
            raise UnsupportedContent(f"{where}: {e}") from None
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise UnsupportedContent(f"{where}: descriptor {digest} has no valid size")
        annotations = obj.get("annotations")
        platform = obj.get("platform")
        urls = obj.get("urls") or ()
        return cls(
            media_type=media_type,
            digest=digest,
            size=size,
            artifact_type=obj.get("artifactType")
            if isinstance(obj.get("artifactType"), str)
            else None,
            annotations=annotations if isinstance(annotations, dict) else None,
            platform=platform if isinstance(platform, dict) else None,
            urls=tuple(u for u in urls if isinstance(u, str)) if isinstance(urls, list) else (),
        )

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "mediaType": self.media_type,
            "digest": self.digest,
            "size": self.size,
        }
        if self.artifact_type:
            out["artifactType"] = self.artifact_type
        if self.annotations:
            out["annotations"] = self.annotations
        if self.platform:
            out["platform"] = self.platform
        return out

    @property
    def is_manifest(self) -> bool:
        return self.media_type in mt.MANIFESTS

    @property
    def distributable(self) -> bool:
        return self.media_type not in mt.NON_DISTRIBUTABLE


@dataclass(frozen=True, slots=True)
class Manifest:
    raw: bytes
    media_type: str
    digest: str
    config: Descriptor | None = None
    layers: tuple[Descriptor, ...] = ()
    manifests: tuple[Descriptor, ...] = ()
    subject: Descriptor | None = None
    artifact_type: str | None = None
    annotations: dict[str, str] = field(default_factory=dict)

    @property
    def is_index(self) -> bool:
        return self.media_type in mt.INDEXES

    @property
    def descriptor(self) -> Descriptor:
        return Descriptor(self.media_type, self.digest, len(self.raw), self.artifact_type)

    def blobs(self) -> list[Descriptor]:
        """Config and layers a registry must hold for this manifest (non-distributable skipped)."""
        out = [self.config] if self.config else []
        out.extend(d for d in self.layers if d.distributable)
        return out

    def children(self) -> list[Descriptor]:
        """Manifests an index points to (empty for image manifests)."""
        return list(self.manifests)


def parse_manifest(raw: bytes, content_type: str | None, digest: str, where: str) -> Manifest:
    """Parse and validate manifest bytes already verified to hash to `digest`."""
    if len(raw) > MAX_MANIFEST_SIZE:
        raise UnsupportedContent(
            f"{where}: manifest is {len(raw)} bytes, over the {MAX_MANIFEST_SIZE} byte limit"
        )
    try:
        doc = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise UnsupportedContent(f"{where}: manifest is not valid JSON") from None
    if not isinstance(doc, dict):
        raise UnsupportedContent(f"{where}: manifest is not a JSON object")
    if doc.get("schemaVersion") == 1:
        raise UnsupportedContent(
            f"{where}: Docker schema 1 manifests are deprecated and not supported;"
            " re-push the image as Docker v2 schema 2 or OCI"
        )
    if doc.get("schemaVersion") != 2:
        raise UnsupportedContent(
            f"{where}: manifest has schemaVersion {doc.get('schemaVersion')!r}, expected 2"
        )

    header_type = (content_type or "").split(";", 1)[0].strip() or None
    if header_type in _GENERIC_TYPES:
        header_type = None  # a registry that does not know better: go by the document
    media_type = doc.get("mediaType") if isinstance(doc.get("mediaType"), str) else None
    media_type = media_type or header_type
    if media_type is None:
        # OCI allows omitting mediaType: an index has "manifests", an image has "config".
        media_type = mt.OCI_INDEX if "manifests" in doc else mt.OCI_MANIFEST
    if media_type not in mt.MANIFESTS:
        raise UnsupportedContent(
            f"{where}: unsupported manifest media type {media_type!r}; airlock copies OCI and"
            " Docker v2 manifests and indexes"
        )

    subject = Descriptor.from_json(doc["subject"], f"{where} subject") if "subject" in doc else None
    annotations = doc.get("annotations") if isinstance(doc.get("annotations"), dict) else {}
    artifact_type = doc.get("artifactType") if isinstance(doc.get("artifactType"), str) else None

    if media_type in mt.INDEXES:
        entries = doc.get("manifests")
        if not isinstance(entries, list):
            raise UnsupportedContent(f"{where}: index has no 'manifests' list")
        if len(entries) > MAX_INDEX_CHILDREN:
            raise UnsupportedContent(
                f"{where}: index has {len(entries)} entries, over the limit of"
                f" {MAX_INDEX_CHILDREN}; airlock does not copy indexes that wide"
            )
        children = tuple(
            Descriptor.from_json(e, f"{where} manifests[{i}]") for i, e in enumerate(entries)
        )
        for child in children:
            if not child.is_manifest:
                raise UnsupportedContent(
                    f"{where}: index entry {child.digest} has unsupported media type"
                    f" {child.media_type!r}"
                )
        return Manifest(
            raw,
            media_type,
            digest,
            manifests=children,
            subject=subject,
            artifact_type=artifact_type,
            annotations=annotations,
        )

    if "config" not in doc:
        raise UnsupportedContent(f"{where}: image manifest has no config descriptor")
    config = Descriptor.from_json(doc["config"], f"{where} config")
    layers_json = doc.get("layers", [])
    if not isinstance(layers_json, list):
        raise UnsupportedContent(f"{where}: image manifest 'layers' is not a list")
    layers = tuple(
        Descriptor.from_json(e, f"{where} layers[{i}]") for i, e in enumerate(layers_json)
    )
    return Manifest(
        raw,
        media_type,
        digest,
        config=config,
        layers=layers,
        subject=subject,
        artifact_type=artifact_type or None,
        annotations=annotations,
    )


def index_entries(doc: Any, where: str) -> tuple[list[Descriptor], list[str]]:
    """The usable entries of an index-shaped JSON document, and a note for each unusable one.

    Lenient on purpose, for referrer listings: one odd entry must not hide the others.
    """
    if not isinstance(doc, dict) or not isinstance(doc.get("manifests"), list):
        raise UnsupportedContent(f"{where}: not an index (no 'manifests' list)")
    if len(doc["manifests"]) > MAX_REFERRERS:
        raise UnsupportedContent(
            f"{where}: lists {len(doc['manifests'])} referrers, over the limit of {MAX_REFERRERS}"
            " per digest; delete old ones (reports, signatures) from the registry"
        )
    found, problems = [], []
    for i, entry in enumerate(doc["manifests"]):
        try:
            found.append(Descriptor.from_json(entry, f"{where} manifests[{i}]"))
        except UnsupportedContent as e:
            problems.append(str(e))
    return found, problems


def referrer_descriptor(manifest: Manifest) -> Descriptor:
    """How a referrer is listed, built from the manifest itself (never from someone's listing):
    artifactType falls back to the config media type, as the OCI spec says."""
    artifact_type = manifest.artifact_type or (
        manifest.config.media_type if manifest.config else None
    )
    return Descriptor(
        manifest.media_type,
        manifest.digest,
        len(manifest.raw),
        artifact_type=artifact_type,
        annotations=manifest.annotations or None,
    )


def travel_problem(manifest: Manifest) -> str | None:
    """Why `manifest` may not travel with a promoted image as one of its referrers, or None.

    Only evidence about the image travels: an artifact manifest (not an index, nothing a runtime
    could unpack) typed as a signature, attestation, SBOM or report. A promotion must never make
    a digest look promoted that was not — an image pushed to dev with `subject` set to a good
    image, or an airlock record forged for it, must stay in dev.
    """
    if manifest.is_index:
        return "an index (only artifact manifests travel with a promotion)"
    kind = referrer_descriptor(manifest).artifact_type or ""
    types = [kind, *(layer.media_type for layer in manifest.layers)]
    if mt.PROMOTION_RECORD in types:
        return "an airlock promotion record (each stage writes its own)"
    if any(t.startswith(mt.FILESYSTEM_LAYER_PREFIXES) for t in types[1:]):
        return "a runnable image (it has filesystem layers)"
    if kind.startswith(mt.EVIDENCE_TYPE_PREFIXES):
        return None
    if manifest.layers and all(t.startswith(mt.EVIDENCE_TYPE_PREFIXES) for t in types[1:]):
        return None  # cosign's tag layout: an image config, evidence layers
    return f"of type {kind or 'unknown'}, not a signature, attestation, SBOM or report"


def fallback_tag(digest: str) -> str:
    """The referrers fallback tag for a subject: sha256:abc… → sha256-abc…

    The hex part is cut to 64 characters, as the OCI referrers tag schema says, so a sha512
    subject still yields a valid (≤ 128 character) tag.
    """
    algorithm, hex_ = digest.split(":", 1)
    return f"{algorithm}-{hex_[:64]}"
