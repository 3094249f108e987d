"""DSSE envelopes (github.com/secure-systems-lab/dsse, protocol v1): sign, parse, verify.

    {"payload": "<base64>", "payloadType": "application/vnd.in-toto+json",
     "signatures": [{"keyid": "<hint>", "sig": "<base64>"}]}

A signature is over PAE(payloadType, payload) = "DSSEv1" SP LEN(type) SP type SP LEN(body) SP
body (LEN: the byte length in ASCII decimal, no leading zeros), never over the payload alone, so
changing the payloadType breaks it as surely as changing the payload.

`keyid` is a hint only (cosign writes ""): `verify` tries every configured key on every
signature. It returns `Verified` (which key) or `Refused` with a reason:

- `unsigned`: no signature at all (`"signatures": []`, or only empty `sig`s);
- `unknown-key`: signed, but by no key the policy names;
- `bad-signature`: a signature whose keyid names a configured key does not verify with it (the
  payload, its type or the signature was altered);
- `wrong-type`: the payloadType is not the one asked for.

Those are refusals (exit 1). Only an envelope that cannot be read as one — not JSON, fields
missing or of the wrong type, bad base64, over the size caps — is bad input: `parse` raises
EvidenceError (exit 2) with one line. Base64 is accepted standard or URL-safe, with or without
padding; `sign` writes standard base64 with padding.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

from gates.base import MAX_EVIDENCE_BYTES, EvidenceError
from gates.common import JSONError, load_json
from gates.keys import PrivateKey, PublicKey

INTOTO_PAYLOAD_TYPE = "application/vnd.in-toto+json"
MAX_ENVELOPE_BYTES = MAX_EVIDENCE_BYTES  # an attestation may carry a whole scan report
MAX_SIGNATURES = 32  # verify tries every key on every signature: keep that bounded
MAX_SIGNATURE_BYTES = 1024  # an ECDSA P-256 DER signature is <= 72 bytes, Ed25519's 64
MAX_KEYID_CHARS = 1024

_STANDARD = re.compile(r"[A-Za-z0-9+/]*={0,2}")
_URLSAFE = re.compile(r"[A-Za-z0-9_-]*={0,2}")

Reason = Literal["unsigned", "unknown-key", "bad-signature", "wrong-type"]


def pae(payload_type: str, payload: bytes) -> bytes:
    """The DSSE v1 pre-authentication encoding: what a signature is over."""
    kind = payload_type.encode("utf-8")
    return b"DSSEv1 %d %b %d %b" % (len(kind), kind, len(payload), payload)


def b64encode(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def b64decode(text: str) -> bytes:
    """Standard or URL-safe base64, padded or not; ValueError for anything else (whitespace,
    a mix of both alphabets, a length no encoding has)."""
    if _STANDARD.fullmatch(text):
        alphabet = text
    elif _URLSAFE.fullmatch(text):
        alphabet = text.replace("-", "+").replace("_", "/")
    else:
        raise ValueError("not base64")
    bare = alphabet.rstrip("=")
    if len(bare) % 4 == 1 or (bare != alphabet and len(alphabet) % 4):
        raise ValueError("not base64 (wrong length or padding)")
    try:
        return base64.b64decode(bare + "=" * (-len(bare) % 4), validate=True)
    except binascii.Error:
        raise ValueError("not base64") from None


def sign(
    payload: bytes, payload_type: str, key: PrivateKey | Sequence[PrivateKey]
) -> dict[str, Any]:
    """The envelope (a dict, to be written as JSON) of `payload` signed by `key` (or each of
    several keys); `keyid` is the key's id."""
    signers = [key] if isinstance(key, PrivateKey) else list(key)
    if not signers:
        raise ValueError("sign needs at least one private key")
    message = pae(payload_type, payload)
    return {
        "payload": b64encode(payload),
        "payloadType": payload_type,
        "signatures": [{"keyid": k.key_id, "sig": b64encode(k.sign(message))} for k in signers],
    }


@dataclass(frozen=True, slots=True)
class Signature:
    keyid: str  # a hint: may be "", or name a key nobody configured
    sig: bytes


@dataclass(frozen=True, slots=True)
class Envelope:
    """A parsed envelope; nothing verified yet. `digest` is the SHA-256 of the envelope bytes
    as read: what names this piece of evidence (e.g. in a VSA's inputAttestations)."""

    payload: bytes = field(repr=False)
    payload_type: str
    signatures: tuple[Signature, ...]
    source: str
    digest: str

    def pae(self) -> bytes:
        return pae(self.payload_type, self.payload)


@dataclass(frozen=True, slots=True)
class Verified:
    """An envelope one of the configured keys signed; `key` is the one that verified."""

    ok: ClassVar[bool] = True
    envelope: Envelope
    key: PublicKey

    @property
    def payload(self) -> bytes:
        return self.envelope.payload

    @property
    def payload_type(self) -> str:
        return self.envelope.payload_type

    @property
    def source(self) -> str:
        return self.envelope.source

    @property
    def summary(self) -> str:
        return f"signed by {self.key.short_id} ({self.key.kind_name})"


@dataclass(frozen=True, slots=True)
class Refused:
    """Why an envelope does not verify; `message` is one line for people."""

    ok: ClassVar[bool] = False
    reason: Reason
    message: str


def _fail(source: str, why: str) -> EvidenceError:
    return EvidenceError(f"{source} is not a valid DSSE envelope: {why}")


def parse(data: bytes, source: str, *, max_bytes: int = MAX_ENVELOPE_BYTES) -> Envelope:
    """Read a DSSE envelope (JSON); EvidenceError with one line if it is not one."""
    if len(data) > max_bytes:
        raise _fail(source, f"{len(data)} bytes, over the {max_bytes} byte cap")
    try:
        doc = load_json(data)
    except JSONError as e:
        raise _fail(source, f"not JSON ({e})") from None
    if not isinstance(doc, dict):
        raise _fail(source, "not a JSON object")
    payload, payload_type, signatures = (
        doc.get("payload"),
        doc.get("payloadType"),
        doc.get("signatures"),
    )
    if not isinstance(payload, str):
        raise _fail(source, "no payload string")
    if not isinstance(payload_type, str) or not payload_type:
        raise _fail(source, "no payloadType string")
    if not isinstance(signatures, list):
        raise _fail(source, "no signatures list")
    if len(signatures) > MAX_SIGNATURES:
        raise _fail(source, f"{len(signatures)} signatures, over the cap of {MAX_SIGNATURES}")
    try:
        body = b64decode(payload)
    except ValueError as e:
        raise _fail(source, f"the payload is {e}") from None
    found = []
    for i, entry in enumerate(signatures, 1):
        if not isinstance(entry, dict):
            raise _fail(source, f"signature {i} is not an object")
        sig, keyid = entry.get("sig"), entry.get("keyid")
        if not isinstance(sig, str):
            raise _fail(source, f"signature {i} has no sig string")
        if keyid is None:
            keyid = ""
        if not isinstance(keyid, str) or len(keyid) > MAX_KEYID_CHARS:
            raise _fail(source, f"signature {i} has a keyid that is not a short string")
        try:
            raw = b64decode(sig)
        except ValueError as e:
            raise _fail(source, f"signature {i} is {e}") from None
        if len(raw) > MAX_SIGNATURE_BYTES:
            raise _fail(source, f"signature {i} is {len(raw)} bytes, not a signature")
        found.append(Signature(keyid, raw))
    return Envelope(
        payload=body,
        payload_type=payload_type,
        signatures=tuple(found),
        source=source,
        digest="sha256:" + hashlib.sha256(data).hexdigest(),
    )


def _shown(text: str, limit: int = 40) -> str:
    """An untrusted string (a keyid, a payloadType) fit for a one-line message."""
    clean = "".join(c if c.isprintable() else "?" for c in text)
    return repr(clean if len(clean) <= limit else clean[: limit - 1] + "…")


def verify(
    envelope: Envelope, keys: Sequence[PublicKey], *, payload_type: str | None = None
) -> Verified | Refused:
    """Whether one of `keys` signed the envelope; with `payload_type`, also that it is of that
    type. Every key is tried on every signature: keyids are hints, never trusted."""
    source = envelope.source
    if payload_type is not None and envelope.payload_type != payload_type:
        return Refused(
            "wrong-type",
            f"{source}: payloadType is {_shown(envelope.payload_type)}, not {payload_type!r}",
        )
    signatures = [s for s in envelope.signatures if s.sig]
    if not signatures:
        return Refused("unsigned", f"{source} is unsigned: the envelope holds no signature")
    if not keys:
        return Refused("unknown-key", f"{source}: no public key is configured to verify it")
    message = envelope.pae()
    for signature in signatures:
        for key in keys:
            if key.verify(signature.sig, message):
                return Verified(envelope, key)
    n = len(keys)
    named = [k for s in signatures for k in keys if k.named_by(s.keyid)]
    if named:
        return Refused(
            "bad-signature",
            f"{source}: the signature by {named[0].short_id} does not verify: the payload, its"
            " type or the signature was altered",
        )
    hints = sorted({s.keyid for s in signatures if s.keyid.strip()})
    if hints:
        return Refused(
            "unknown-key",
            f"{source} is signed by a key the policy does not name (keyid {_shown(hints[0])};"
            f" {n} key{'s' * (n > 1)} configured)",
        )
    return Refused(
        "unknown-key",
        f"{source}: no signature verifies with the {n} key{'s' * (n > 1)} the policy names"
        " (signed by another key, or altered)",
    )
