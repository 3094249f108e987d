"""Signature gate: is the image digest signed, and (optionally) by a key we trust?

Two levels, chosen by `SignaturePolicy.require`:

- **present** — some signature for the digest exists: a cosign `sha256-<hex>.sig` tag whose
  simple-signing payload names the digest, a Notation signature referrer, or a sigstore bundle
  referrer. This is what Harbor's "signed" check means. It proves nothing about who signed.
- **verified** — a cosign *keyed* signature verifies: an ECDSA P-256 / SHA-256 signature (base64
  DER, in the layer annotation `dev.cosignproject.cosign/signature`) over the exact payload bytes,
  with one of the configured public keys, and the payload (cosign's "simple signing" JSON) says
  `critical.type == "cosign container image signature"` and
  `critical.image["docker-manifest-digest"] == <the digest being promoted>`.
  `critical.identity.docker-reference` is deliberately not checked: a promoted image lives under
  other repository names than the one it was signed in; the digest is the binding.

cosign 3 writes an image signature as a sigstore bundle v0.3 referrer instead: a DSSE envelope of
an in-toto statement (predicate type `https://sigstore.dev/cosign/sign/v1`) whose subject is the
manifest digest. Keyed, it is **verified** like a `.sig` signature: the envelope verifies with one
of the public keys and the statement names the digest. Bundles holding other statements (test
reports, VSAs…) are attestations, not signatures, and do not count even as *present*.

Out of scope, by design: **keyless** signatures (a Fulcio certificate in the cosign layer, or a
sigstore bundle) need the Fulcio roots and the Rekor transparency log — a network and a trust root
airlock does not manage here (gates/keyless.py verifies keyless *attestations* for `signed_by`) —
and Notation signatures need an X.509 trust policy. airlock counts both
as *present* but never as *verified*, and says so in the result. Verify them with `cosign verify` /
`notation verify` before promotion if you depend on them.

`collect` is the only I/O (registry/ only, never Prefect); `evaluate` is pure and fails closed:
malformed payloads, signatures or keys refuse with `error` set, they never pass.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import datetime as dt
import hashlib
import json
import re
from collections.abc import Iterable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from pydantic import Field, model_validator

from gates import attestations, dsse, intoto, keys
from gates.base import EvidenceError, EvidenceRef, GateResult, Policy, table_row, utcnow
from gates.keys import MAX_KEY_FILE_BYTES as MAX_KEY_FILE_BYTES  # re-exported
from registry.client import RegistryClient
from registry.errors import InvalidReference, NotFound, UnsupportedContent
from registry.manifest import Descriptor, Manifest, fallback_tag
from registry.reference import validate_digest
from registry.referrers import list_referrers

SignatureKind = Literal["cosign", "notation", "sigstore-bundle"]
ALL_KINDS: tuple[SignatureKind, ...] = ("cosign", "notation", "sigstore-bundle")

COSIGN_PAYLOAD_TYPE = "application/vnd.dev.cosign.simplesigning.v1+json"
COSIGN_SIGNATURE_ANNOTATION = "dev.cosignproject.cosign/signature"
COSIGN_CERTIFICATE_ANNOTATION = "dev.sigstore.cosign/certificate"  # Fulcio cert (keyless)
COSIGN_SIGNATURE_TYPE = "cosign container image signature"
SIGN_PREDICATE = "https://sigstore.dev/cosign/sign/v1"  # cosign 3's image signature statement
NOTATION_SIGNATURE = "application/vnd.cncf.notary.signature"
SIGSTORE_BUNDLE_V03 = "application/vnd.dev.sigstore.bundle.v0.3+json"
# v0.3 and later as `bundle.v0.N+json`; v0.1/v0.2 as `bundle+json;version=0.N`.
_SIGSTORE_BUNDLE = re.compile(
    r"application/vnd\.dev\.sigstore\.bundle(\.v\d+(\.\d+)*)?\+json(\s*;.*)?", re.IGNORECASE
)

MAX_PAYLOAD_BYTES = 1024 * 1024  # a simple-signing payload is a few hundred bytes


@dataclass(frozen=True, slots=True)
class FoundSignature:
    """One signature found for a digest, as read from the registry (nothing checked yet).

    `where` is the cosign tag (`sha256-<hex>.sig`) or the referrer's digest. For cosign,
    `payload` is the simple-signing blob and `signature` the base64 annotation; presence-only
    kinds (Notation, sigstore bundles) carry neither. `manifest` is the digest of the manifest
    that carried it; `problem` says why it could not be read completely (it then never passes).
    """

    kind: SignatureKind
    where: str
    payload: bytes | None = None
    signature: str | None = None
    certificate: str | None = None  # a Fulcio certificate: the signature is keyless
    manifest: str | None = None
    problem: str | None = None


def signature_kind(artifact_type: str | None) -> SignatureKind | None:
    """The signature kind of a referrer's artifact type, or None if it is no signature."""
    if not artifact_type:
        return None
    value = artifact_type.strip()
    if value.lower() == NOTATION_SIGNATURE:
        return "notation"
    if _SIGSTORE_BUNDLE.fullmatch(value):
        return "sigstore-bundle"
    return None


# ---------------------------------------------------------------------------------------- I/O


async def collect(client: RegistryClient, repo: str, digest: str) -> list[FoundSignature]:
    """Every signature the registry holds for repo@digest: the cosign `.sig` tag's layers, then
    Notation and sigstore-bundle referrers (referrers API, else the fallback tag index)."""
    cosign, referrers = await asyncio.gather(
        _cosign(client, repo, digest), _referrers(client, repo, digest)
    )
    return [*cosign, *referrers]


async def _cosign(client: RegistryClient, repo: str, digest: str) -> list[FoundSignature]:
    tag = fallback_tag(digest) + ".sig"
    try:
        manifest = await client.get_manifest(repo, tag)
    except NotFound:
        return []
    except UnsupportedContent as e:
        return [FoundSignature("cosign", tag, problem=f"unreadable .sig manifest ({e})")]
    if manifest.is_index:
        return [
            FoundSignature(
                "cosign", tag, manifest=manifest.digest, problem="the .sig tag holds an index"
            )
        ]
    layers = [d for d in manifest.layers if d.media_type == COSIGN_PAYLOAD_TYPE]
    if not layers:
        return [
            FoundSignature(
                "cosign",
                tag,
                manifest=manifest.digest,
                problem=f"the .sig manifest has no {COSIGN_PAYLOAD_TYPE} layer",
            )
        ]
    return list(
        await asyncio.gather(*(_cosign_layer(client, repo, tag, manifest, d) for d in layers))
    )


async def _cosign_layer(
    client: RegistryClient, repo: str, tag: str, manifest: Manifest, layer: Descriptor
) -> FoundSignature:
    annotations = layer.annotations or {}

    def annotation(key: str) -> str | None:
        value = annotations.get(key)
        return value if isinstance(value, str) else None

    found = FoundSignature(
        "cosign",
        tag,
        signature=annotation(COSIGN_SIGNATURE_ANNOTATION),
        certificate=annotation(COSIGN_CERTIFICATE_ANNOTATION),
        manifest=manifest.digest,
    )
    cap = MAX_PAYLOAD_BYTES
    if layer.size > cap:
        return replace(found, problem=f"payload is {layer.size} bytes, over the {cap} byte cap")
    # size and digest checked while reading
    return replace(found, payload=await client.read_blob(repo, layer))


async def _referrers(client: RegistryClient, repo: str, digest: str) -> list[FoundSignature]:
    listing = await list_referrers(client, repo, digest)
    wanted = [(d, k) for d in listing.descriptors if (k := signature_kind(d.artifact_type))]
    found = await asyncio.gather(*(_referrer(client, repo, digest, d, k) for d, k in wanted))
    return [f for f in found if f is not None]


async def _referrer(
    client: RegistryClient, repo: str, subject: str, desc: Descriptor, kind: SignatureKind
) -> FoundSignature | None:
    """A listed signature referrer, checked against its own manifest: the listing is a hint, the
    manifest's `subject` and artifact type are the truth."""
    try:
        manifest = await client.get_manifest(repo, desc.digest)
    except NotFound:
        return FoundSignature(
            kind, desc.digest, manifest=desc.digest, problem="listed but the manifest is missing"
        )
    except UnsupportedContent as e:
        return FoundSignature(kind, desc.digest, problem=f"unreadable manifest ({e})")
    own_type = manifest.artifact_type or (manifest.config.media_type if manifest.config else None)
    if manifest.subject is None or manifest.subject.digest != subject:
        named = manifest.subject.digest if manifest.subject else "no subject"
        return FoundSignature(
            kind,
            desc.digest,
            manifest=manifest.digest,
            problem=f"listed for {subject} but the manifest names {named}",
        )
    if signature_kind(own_type) != kind:
        return FoundSignature(
            kind,
            desc.digest,
            manifest=manifest.digest,
            problem=f"listed as {desc.artifact_type} but the manifest is {own_type}",
        )
    found = FoundSignature(kind, desc.digest, manifest=manifest.digest)
    return await _bundle(client, repo, manifest, found) if kind == "sigstore-bundle" else found


async def _bundle(
    client: RegistryClient, repo: str, manifest: Manifest, found: FoundSignature
) -> FoundSignature | None:
    """A bundle's DSSE envelope when it holds cosign 3's image signature (as `payload`), the
    bundle as found when it holds a message signature, None when it holds another statement."""
    if len(manifest.layers) != 1 or manifest.layers[0].size > MAX_PAYLOAD_BYTES:
        return replace(found, problem="a bundle referrer has one layer of at most 1 MiB")
    data = await client.read_blob(repo, manifest.layers[0])
    try:
        envelope = attestations.envelope_of_bundle(data, found.where)
        if envelope is None:
            return found  # a message signature: presence only
        claimed = intoto.parse(dsse.parse(envelope, found.where).payload, found.where)
    except EvidenceError as e:
        return replace(found, problem=str(e))
    if claimed.predicate_type != SIGN_PREDICATE:
        return None  # an attestation (a report, a VSA…), not a signature
    material = json.loads(data).get("verificationMaterial") or {}
    keyless = isinstance(material, dict) and bool(
        material.get("certificate") or material.get("x509CertificateChain")
    )
    return replace(found, payload=envelope, certificate="bundle" if keyless else None)


# -------------------------------------------------------------------------------------- keys


def load_public_key(pem: str, name: str = "public key") -> ec.EllipticCurvePublicKey:
    """Parse a public key (PEM, as `cosign generate-key-pair` writes cosign.pub, or an OpenSSH
    line; gates/keys.py reads them); cosign signatures verify with ECDSA P-256 keys only.
    Raises EvidenceError with a one-line reason."""
    key = keys.load_public_key(pem, name)
    if key.kind != "ecdsa-p256":
        raise EvidenceError(
            f"{name} is an {key.kind_name} key; only ECDSA P-256 (cosign's default) keys"
            " verify cosign signatures"
        )
    return key.crypto  # type: ignore[return-value]  # checked: ECDSA P-256


def read_public_keys(paths: Iterable[str | Path]) -> list[str]:
    """The text of key files, each checked to load (for SignaturePolicy.public_keys).

    Raises EvidenceError (a BadInputError: exit 2 on the CLI) naming the file."""
    texts = []
    for path in map(Path, paths):
        data = keys.read_key_file(path, "public key")
        try:
            text = data.decode("ascii")
        except UnicodeDecodeError:
            raise EvidenceError(f"{path} is not a PEM public key") from None
        load_public_key(text, str(path))
        texts.append(text)
    return texts


# ------------------------------------------------------------------------------------ policy


class SignaturePolicy(Policy):
    """require=present: any signature of an allowed kind; require=verified: a cosign signature
    that verifies with one of `public_keys` (PEM text) and names the digest. Giving keys means
    verified unless `require` says otherwise — and then it is an error, never a key ignored."""

    require: Literal["present", "verified"] = "present"
    public_keys: list[str] = Field(default_factory=list)
    kinds: list[SignatureKind] = Field(default_factory=lambda: list(ALL_KINDS), min_length=1)

    @model_validator(mode="before")
    @classmethod
    def _keys_mean_verified(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("require") is None and data.get("public_keys"):
            return {**data, "require": "verified"}
        return data

    @model_validator(mode="after")
    def _verifiable(self) -> SignaturePolicy:
        if self.require == "present" and self.public_keys:
            raise ValueError("public keys are only used with require=verified: drop one of them")
        if self.require == "verified":
            if not self.public_keys:
                raise ValueError("require=verified needs at least one public key (public_keys)")
            if "cosign" not in self.kinds:
                raise ValueError(
                    "require=verified can only be met by cosign signatures: add cosign to kinds"
                )
        return self


# ---------------------------------------------------------------------------------- evaluate


@dataclass(frozen=True, slots=True)
class _Check:
    found: FoundSignature
    counts: bool  # satisfies the policy
    verified: str  # yes / no / n/a
    detail: str
    rank: int = 0  # how telling this reason is when summarising a refusal (higher wins)
    malformed: str | None = None


_R_MALFORMED, _R_UNVERIFIABLE, _R_KEYLESS, _R_WRONG_KEY, _R_OTHER_IMAGE = 1, 2, 3, 4, 5


def evaluate(
    signatures: list[FoundSignature],
    policy: SignaturePolicy,
    subject: str,
    now: dt.datetime | None = None,
) -> GateResult:
    """Judge the signatures found for `subject` (the digest being promoted); pure."""
    at = now or utcnow()
    keys: list[ec.EllipticCurvePublicKey] = []
    key_problem = None
    if policy.require == "verified":
        try:
            keys = [
                load_public_key(pem, f"public key {i}")
                for i, pem in enumerate(policy.public_keys, 1)
            ]
        except EvidenceError as e:
            key_problem = str(e)

    allowed = [s for s in signatures if s.kind in policy.kinds]
    checks = [_check(s, policy, subject, keys) for s in allowed]
    rows = [_row(c) for c in checks] + [
        table_row(kind=s.kind, where=s.where, verified="n/a", detail="kind not allowed by policy")
        for s in signatures
        if s.kind not in policy.kinds
    ]
    evidence = [_evidence_ref(s, subject) for s in allowed]

    def result(passed: bool, summary: str, error: str | None = None) -> GateResult:
        return GateResult(
            gate="signature",
            passed=passed,
            summary=summary,
            rows=rows,
            evidence=evidence,
            evaluated_at=at,
            error=error,
        )

    if key_problem:
        return result(False, f"refused: {key_problem}", key_problem)
    try:
        validate_digest(subject)
    except InvalidReference:
        error = f"the subject {subject!r} is not a digest; signatures bind to a digest"
        return result(False, f"refused: {error}", error)
    short = _short(subject)
    if not allowed:
        others = f" (only {', '.join(sorted({s.kind for s in signatures}))})" if signatures else ""
        missing = f"no {'/'.join(policy.kinds)} signature found for {short}{others}"
        return result(False, f"refused: {missing}")  # missing evidence refuses; it is not malformed

    good = [c for c in checks if c.counts]
    if good:
        first = good[0].found
        if policy.require == "verified":
            return result(
                True,
                f"verified: cosign signature {first.where} for {short} {good[0].detail}",
            )
        kinds = ", ".join(sorted({c.found.kind for c in good}))
        n = len(good)
        return result(
            True,
            f"signed: {n} signature{'s' * (n > 1)} ({kinds}) for {short}; presence only,"
            " not verified",
        )

    telling = max(checks, key=lambda c: c.rank)  # the most specific reason to refuse
    if telling.rank in (_R_KEYLESS, _R_UNVERIFIABLE):
        summary = (
            f"refused: no keyed cosign signature verifies for {short}; only"
            f" {_kinds_of(checks)} found, which airlock checks for presence only (keyless"
            " Fulcio/Rekor and Notation verification need a network and trust roots: out of scope)"
        )
    else:
        summary = f"refused: {telling.detail}"
    return result(False, summary, telling.malformed)


def _kinds_of(checks: list[_Check]) -> str:
    names = {
        "notation": "Notation signatures",
        "sigstore-bundle": "sigstore bundles",
        "cosign": "keyless cosign signatures",
    }
    kinds = sorted({c.found.kind for c in checks if c.rank in (_R_KEYLESS, _R_UNVERIFIABLE)})
    return " and ".join(names[k] for k in kinds)


def _check(
    found: FoundSignature,
    policy: SignaturePolicy,
    subject: str,
    keys: list[ec.EllipticCurvePublicKey],
) -> _Check:
    verify = policy.require == "verified"
    if found.problem:
        return _malformed(found, found.problem)
    if found.kind == "sigstore-bundle" and found.payload is not None:
        return _check_bundle(found, verify, subject, keys)
    if found.kind != "cosign":
        if not verify:
            return _Check(found, True, "n/a", "present (presence only)")
        what = "Notation signature" if found.kind == "notation" else "sigstore bundle (keyless)"
        return _Check(
            found, False, "no", f"{what}: checked for presence only", rank=_R_UNVERIFIABLE
        )

    if found.payload is None:
        return _malformed(found, "no simple-signing payload")
    if not found.signature:
        return _malformed(found, f"no {COSIGN_SIGNATURE_ANNOTATION} annotation")
    try:
        named = _signed_digest(found.payload)
    except EvidenceError as e:
        return _malformed(found, str(e))
    try:
        raw_signature = base64.b64decode(found.signature.strip(), validate=True)
    except (binascii.Error, ValueError):
        return _malformed(found, "the signature annotation is not valid base64")
    if not raw_signature:
        return _malformed(found, "the signature annotation is empty")
    if named != subject:
        return _Check(
            found,
            False,
            "no",
            f"signature is for another image: {found.where} names {named}, not {subject}",
            rank=_R_OTHER_IMAGE,
        )
    if not verify:
        return _Check(found, True, "n/a", "present (presence only, not verified)")

    for i, key in enumerate(keys, 1):
        try:
            key.verify(raw_signature, found.payload, ec.ECDSA(hashes.SHA256()))
        except InvalidSignature:
            continue
        return _Check(found, True, "yes", f"verifies with public key {i} ({key_id(key)})")
    if found.certificate:
        return _Check(
            found,
            False,
            "no",
            "keyless (Fulcio certificate) signature: not verifiable offline",
            rank=_R_KEYLESS,
        )
    n = len(keys)
    return _Check(
        found,
        False,
        "no",
        f"cosign signature {found.where} does not verify with the {n} trusted"
        f" key{'s' * (n > 1)} (wrong key, or payload or signature altered)",
        rank=_R_WRONG_KEY,
    )


def _check_bundle(
    found: FoundSignature, verify: bool, subject: str, trusted: list[ec.EllipticCurvePublicKey]
) -> _Check:
    """cosign 3's image signature: a signed sign/v1 statement naming the digest."""
    assert found.payload is not None
    try:
        envelope = dsse.parse(found.payload, found.where)
        claimed = intoto.parse(envelope.payload, found.where)
    except EvidenceError as e:
        return _malformed(found, str(e))
    if not claimed.names(subject):
        named = ", ".join(sorted(claimed.subject_digests())) or "no digest"
        why = f"signature is for another image: {found.where} names {named}, not {subject}"
        return _Check(found, False, "no", why, rank=_R_OTHER_IMAGE)
    if not verify:
        return _Check(found, True, "n/a", "present (cosign 3 bundle; presence only)")
    wrapped = [keys.PublicKey(k) for k in trusted]
    verified = dsse.verify(envelope, wrapped, payload_type=dsse.INTOTO_PAYLOAD_TYPE)
    if verified.ok:
        i = wrapped.index(verified.key) + 1
        return _Check(
            found, True, "yes", f"verifies with public key {i} ({key_id(trusted[i - 1])})"
        )
    if found.certificate:
        why = "keyless (Fulcio certificate) cosign 3 signature: not verifiable offline"
        return _Check(found, False, "no", why, rank=_R_KEYLESS)
    n = len(trusted)
    why = (
        f"cosign 3 signature {found.where} does not verify with the {n} trusted"
        f" key{'s' * (n > 1)} ({verified.message})"
    )
    return _Check(found, False, "no", why, rank=_R_WRONG_KEY)


def key_id(key: ec.EllipticCurvePublicKey) -> str:
    """`sha256:0123456789abcdef…`: the SHA-256 of the key's DER SubjectPublicKeyInfo, so a
    reviewer can tell which trusted key verified a signature (gates/keys.py: `short_id`)."""
    return keys.PublicKey(key).short_id


def _malformed(found: FoundSignature, why: str) -> _Check:
    message = f"malformed {found.kind} signature at {found.where}: {why}"
    return _Check(found, False, "no", message, rank=_R_MALFORMED, malformed=message)


def _signed_digest(payload: bytes) -> str:
    """The digest a simple-signing payload names; EvidenceError if it is not one."""
    try:
        doc = json.loads(payload)
    except (ValueError, UnicodeDecodeError):
        raise EvidenceError("the payload is not JSON") from None
    critical = doc.get("critical") if isinstance(doc, dict) else None
    if not isinstance(critical, dict):
        raise EvidenceError("the payload has no 'critical' object")
    if critical.get("type") != COSIGN_SIGNATURE_TYPE:
        raise EvidenceError(
            f"the payload type is {critical.get('type')!r}, not {COSIGN_SIGNATURE_TYPE!r}"
        )
    image = critical.get("image")
    named = image.get("docker-manifest-digest") if isinstance(image, dict) else None
    if not isinstance(named, str) or not named:
        raise EvidenceError("the payload names no critical.image.docker-manifest-digest")
    return named


def _row(check: _Check) -> dict[str, str]:
    return table_row(
        kind=check.found.kind,
        where=check.found.where,
        verified=check.verified,
        detail=check.detail,
    )


def _evidence_ref(found: FoundSignature, subject: str) -> EvidenceRef:
    if found.payload is not None:
        digest = "sha256:" + hashlib.sha256(found.payload).hexdigest()
    else:
        digest = found.manifest or found.where
    return EvidenceRef(source=found.where, digest=digest, subject=subject, referrer=found.manifest)


def _short(digest: str) -> str:
    algorithm, _, hex_ = digest.partition(":")
    return f"{algorithm}:{hex_[:12]}" if hex_ else digest
