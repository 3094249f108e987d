"""gates/dsse.py against the DSSE reference: securesystemslib's `dsse.Envelope` and its
CryptoSigner / SSlibKey, for ECDSA P-256 and Ed25519, both ways; then the attacks; then the real
envelopes in tests/fixtures/attestations/ (each test skips if its file is not there).

securesystemslib matches a signature to a key by keyid before it verifies (its own docstring
calls that "not DSSE spec compliant", issue #416), so its keys are given airlock's key id where
it verifies airlock's envelopes. airlock does the reverse: it ignores keyids for verifying, and
the envelopes securesystemslib makes carry its own keyids (a hash airlock does not use).
"""

from __future__ import annotations

import base64
import hashlib
import json
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ed25519
from securesystemslib import exceptions as sslib_errors
from securesystemslib.dsse import Envelope as SslibEnvelope
from securesystemslib.signer import CryptoSigner, SSlibKey

from gates import dsse, intoto, keys
from gates.base import EvidenceError
from gates.keys import KeyKind, PrivateKey, PublicKey

KINDS: list[KeyKind] = ["ecdsa-p256", "ed25519"]
TYPE = dsse.INTOTO_PAYLOAD_TYPE
PAYLOAD = b'{"_type":"https://in-toto.io/Statement/v1","subject":[]}'


def new_key(kind: KeyKind = "ecdsa-p256") -> PrivateKey:
    return keys.load_private_key(keys.generate(kind)[0])


def as_bytes(envelope: dict) -> bytes:
    return json.dumps(envelope).encode()


def sslib_key(public: PublicKey) -> SSlibKey:
    scheme = "ecdsa-sha2-nistp256" if public.kind == "ecdsa-p256" else "ed25519"
    return SSlibKey.from_crypto(public.crypto, public.key_id, scheme)


def sslib_signer(kind: KeyKind) -> CryptoSigner:
    return (
        CryptoSigner.generate_ecdsa() if kind == "ecdsa-p256" else CryptoSigner.generate_ed25519()
    )


def public_of(signer: CryptoSigner) -> PublicKey:
    """airlock's view of a securesystemslib signer's public key."""
    value = signer.public_key.keyval["public"]
    if signer.public_key.keytype == "ed25519":  # raw hex in securesystemslib
        return PublicKey(ed25519.Ed25519PublicKey.from_public_bytes(bytes.fromhex(value)))
    return keys.load_public_key(value)  # ECDSA: PEM


def sslib_envelope(signer: CryptoSigner, payload: bytes = PAYLOAD, kind: str = TYPE) -> bytes:
    envelope = SslibEnvelope(payload, kind, {})
    envelope.sign(signer)
    return as_bytes(envelope.to_dict())


def verified(data: bytes, *public: PublicKey) -> dsse.Verified:
    result = dsse.verify(dsse.parse(data, "att.json"), list(public))
    assert isinstance(result, dsse.Verified), result
    return result


def refused(data: bytes, *public: PublicKey, **kw: str) -> dsse.Refused:
    result = dsse.verify(dsse.parse(data, "att.json"), list(public), **kw)
    assert isinstance(result, dsse.Refused), result
    assert "\n" not in result.message and result.message.startswith("att.json")
    return result


def malformed(data: bytes) -> str:
    with pytest.raises(EvidenceError) as e:
        dsse.parse(data, "att.json")
    message = str(e.value)
    assert "\n" not in message
    assert message.startswith("att.json is not a valid DSSE envelope: "), message
    return message


# ---------------------------------------------------------------------------------- PAE


def test_pae_is_the_protocols() -> None:
    # the example in DSSE's protocol.md
    assert (
        dsse.pae("http://example.com/HelloWorld", b"hello world")
        == b"DSSEv1 29 http://example.com/HelloWorld 11 hello world"
    )
    assert dsse.pae("", b"") == b"DSSEv1 0  0 "
    assert (
        dsse.pae("t\u00fcp", b"\x00\xff") == b"DSSEv1 4 t\xc3\xbcp 2 \x00\xff"
    )  # bytes, not chars
    for kind, payload in [(TYPE, PAYLOAD), ("x" * 1000, b"y" * 12345), ("é", b"")]:
        assert dsse.pae(kind, payload) == SslibEnvelope(payload, kind, {}).pae()


# ------------------------------------------------------------------------------ interop


@pytest.mark.parametrize("kind", KINDS)
def test_airlock_envelopes_verify_with_securesystemslib(kind: KeyKind) -> None:
    key = new_key(kind)
    envelope = dsse.sign(PAYLOAD, TYPE, key)
    assert set(envelope) == {"payload", "payloadType", "signatures"}
    assert envelope["payloadType"] == TYPE
    assert base64.b64decode(envelope["payload"], validate=True) == PAYLOAD  # standard base64
    assert [s["keyid"] for s in envelope["signatures"]] == [key.key_id]

    theirs = SslibEnvelope.from_dict(json.loads(as_bytes(envelope)))
    assert theirs.payload == PAYLOAD and theirs.payload_type == TYPE
    accepted = theirs.verify([sslib_key(key.public)], threshold=1)
    assert list(accepted) == [key.key_id]

    # and the tampered twins do not verify there either
    for change in ({"payload": base64.b64encode(PAYLOAD + b" ").decode()}, {"payloadType": "x"}):
        altered = SslibEnvelope.from_dict({**json.loads(as_bytes(envelope)), **change})
        with pytest.raises(sslib_errors.VerificationError):
            altered.verify([sslib_key(key.public)], threshold=1)
    with pytest.raises(sslib_errors.VerificationError):
        theirs.verify([sslib_key(new_key(kind).public)], threshold=1)  # another key


@pytest.mark.parametrize("kind", KINDS)
def test_securesystemslib_envelopes_verify_with_airlock(kind: KeyKind) -> None:
    signer = sslib_signer(kind)
    data = sslib_envelope(signer)
    envelope = dsse.parse(data, "att.json")
    assert envelope.payload == PAYLOAD and envelope.payload_type == TYPE
    assert envelope.signatures[0].keyid == signer.public_key.keyid  # its own id, not ours
    assert not public_of(signer).named_by(envelope.signatures[0].keyid)

    result = verified(data, new_key(kind).public, public_of(signer))  # the second key verifies
    assert result.key == public_of(signer)
    assert result.payload == PAYLOAD and result.payload_type == TYPE
    assert result.envelope.digest.startswith("sha256:")

    wrong = refused(data, new_key(kind).public)
    assert wrong.reason == "unknown-key"
    assert "signed by a key the policy does not name" in wrong.message


@pytest.mark.parametrize("kind", KINDS)
def test_securesystemslib_signer_over_airlock_pae(kind: KeyKind) -> None:
    """A signature securesystemslib makes over airlock's PAE bytes is a valid DSSE signature."""
    signer = sslib_signer(kind)
    sig = bytes.fromhex(signer.sign(dsse.pae(TYPE, PAYLOAD)).signature)
    envelope = {
        "payload": base64.b64encode(PAYLOAD).decode(),
        "payloadType": TYPE,
        "signatures": [{"keyid": "", "sig": base64.b64encode(sig).decode()}],
    }
    assert verified(as_bytes(envelope), public_of(signer)).key == public_of(signer)


def test_base64_forms() -> None:
    """Standard or URL-safe, padded or not: all the same envelope."""
    key = new_key()
    payload = b"\xfb\xff\xfe" * 7 + b"?"  # encodes with + and / (standard) or - and _ (URL-safe)
    envelope = dsse.sign(payload, TYPE, key)
    raw_sig = base64.b64decode(envelope["signatures"][0]["sig"])
    for encode in (base64.b64encode, base64.urlsafe_b64encode):
        for strip in (False, True):

            def enc(b: bytes, encode=encode, strip=strip) -> str:  # type: ignore[no-untyped-def]
                text = encode(b).decode()
                return text.rstrip("=") if strip else text

            form = {
                "payload": enc(payload),
                "payloadType": TYPE,
                "signatures": [{"keyid": key.key_id, "sig": enc(raw_sig)}],
            }
            assert verified(as_bytes(form), key.public).payload == payload


def test_keyid_is_only_a_hint() -> None:
    """cosign writes keyid "", others their own ids, some none at all: every key is tried."""
    key, other = new_key("ed25519"), new_key()
    envelope = dsse.sign(PAYLOAD, TYPE, key)
    for keyid in ("", None, other.key_id, "whatever"):
        entry: dict = {"sig": envelope["signatures"][0]["sig"]}
        if keyid is not None:
            entry["keyid"] = keyid
        data = as_bytes({**envelope, "signatures": [entry]})
        assert verified(data, other.public, key.public).key == key.public


def test_several_signatures() -> None:
    a, b = new_key(), new_key("ed25519")
    envelope = dsse.sign(PAYLOAD, TYPE, [a, b])
    assert len(envelope["signatures"]) == 2
    assert verified(as_bytes(envelope), b.public).key == b.public
    assert verified(as_bytes(envelope), a.public).key == a.public


# ------------------------------------------------------------------------------ attacks


@pytest.mark.parametrize("kind", KINDS)
def test_tampered_payload_refused(kind: KeyKind) -> None:
    key = new_key(kind)
    envelope = dsse.sign(PAYLOAD, TYPE, key)
    tampered = {**envelope, "payload": base64.b64encode(PAYLOAD.replace(b"v1", b"v2")).decode()}
    result = refused(as_bytes(tampered), key.public)
    assert result.reason == "bad-signature"
    assert key.short_id in result.message and "altered" in result.message
    # without a keyid naming the key (cosign's ""), altered or another key cannot be told apart
    anonymous = {**tampered, "signatures": [{**envelope["signatures"][0], "keyid": ""}]}
    result = refused(as_bytes(anonymous), key.public)
    assert result.reason == "unknown-key" and "or altered" in result.message


def test_wrong_payload_type_in_pae_refused() -> None:
    """The type is signed too: relabelling a signed payload breaks the signature."""
    key = new_key()
    envelope = dsse.sign(PAYLOAD, "application/vnd.dev.cosign.simplesigning.v1+json", key)
    relabelled = {**envelope, "payloadType": TYPE}
    assert refused(as_bytes(relabelled), key.public).reason == "bad-signature"
    # a signature over the payload alone (no PAE) is not a DSSE signature
    bare = {
        **envelope,
        "signatures": [{"keyid": "", "sig": base64.b64encode(key.sign(PAYLOAD)).decode()}],
    }
    assert refused(as_bytes({**bare, "payloadType": TYPE}), key.public).reason == "unknown-key"


def test_payload_type_asked_for() -> None:
    key = new_key()
    data = as_bytes(dsse.sign(PAYLOAD, "text/plain", key))
    assert verified(data, key.public).payload_type == "text/plain"
    result = refused(data, key.public, payload_type=TYPE)
    assert result.reason == "wrong-type" and "'text/plain'" in result.message


def test_wrong_key_refused() -> None:
    key, attacker = new_key(), new_key()
    data = as_bytes(dsse.sign(PAYLOAD, TYPE, attacker))
    result = refused(data, key.public)
    assert result.reason == "unknown-key"
    assert result.message == (
        f"att.json is signed by a key the policy does not name (keyid '{attacker.key_id[:39]}…';"
        " 1 key configured)"
    )
    # an attacker who claims our key id is caught all the same
    claimed = dsse.sign(PAYLOAD, TYPE, attacker)
    claimed["signatures"][0]["keyid"] = key.key_id
    assert refused(as_bytes(claimed), key.public).reason == "bad-signature"
    # a key of the other kind does not verify it either
    assert refused(data, new_key("ed25519").public).reason == "unknown-key"


def test_unsigned_refused() -> None:
    envelope = dsse.sign(PAYLOAD, TYPE, new_key())
    key = new_key().public
    for signatures in ([], [{"keyid": "k", "sig": ""}]):
        result = refused(as_bytes({**envelope, "signatures": signatures}), key)
        assert result.reason == "unsigned"
        assert result.message == "att.json is unsigned: the envelope holds no signature"


def test_no_keys_configured_refuses() -> None:
    data = as_bytes(dsse.sign(PAYLOAD, TYPE, new_key()))
    assert refused(data).reason == "unknown-key"


def test_hostile_keyid_stays_one_line() -> None:
    envelope = dsse.sign(PAYLOAD, TYPE, new_key())
    envelope["signatures"][0]["keyid"] = "evil\nairlock: verified\x1b[32m"
    result = refused(as_bytes(envelope), new_key().public)
    assert "\x1b" not in result.message and "'evil?airlock: verified?[32m'" in result.message


GOOD = dsse.sign(PAYLOAD, TYPE, new_key())
SIG = GOOD["signatures"][0]

MALFORMED = {
    "not-json": (b"{not json", "not JSON"),
    "not-utf8": (b"\xff\xfe\xfd", "not JSON"),
    "array": (b"[]", "not a JSON object"),
    "null": (b"null", "not a JSON object"),
    "no-payload": (as_bytes({**GOOD, "payload": None}), "no payload string"),
    "payload-number": (as_bytes({**GOOD, "payload": 1}), "no payload string"),
    "no-type": (as_bytes({k: v for k, v in GOOD.items() if k != "payloadType"}), "payloadType"),
    "empty-type": (as_bytes({**GOOD, "payloadType": ""}), "payloadType"),
    "no-signatures": (as_bytes({k: v for k, v in GOOD.items() if k != "signatures"}), "signatures"),
    "signatures-object": (as_bytes({**GOOD, "signatures": SIG}), "no signatures list"),
    "signature-string": (as_bytes({**GOOD, "signatures": ["sig"]}), "signature 1 is not an object"),
    "no-sig": (as_bytes({**GOOD, "signatures": [{"keyid": ""}]}), "no sig string"),
    "sig-number": (as_bytes({**GOOD, "signatures": [{"sig": 7}]}), "no sig string"),
    "keyid-number": (as_bytes({**GOOD, "signatures": [{**SIG, "keyid": 7}]}), "keyid"),
    "payload-bad-base64": (as_bytes({**GOOD, "payload": "a!b="}), "payload is not base64"),
    "payload-whitespace": (as_bytes({**GOOD, "payload": "YWJj ZA=="}), "payload is not base64"),
    "payload-bad-length": (as_bytes({**GOOD, "payload": "YWJjZ"}), "payload is not base64"),
    "payload-bad-padding": (as_bytes({**GOOD, "payload": "YQ="}), "payload is not base64"),
    "payload-mixed-alphabets": (as_bytes({**GOOD, "payload": "a+b_"}), "payload is not base64"),
    "sig-bad-base64": (
        as_bytes({**GOOD, "signatures": [{"sig": "%%%"}]}),
        "signature 1 is not base64",
    ),
    "sig-huge": (
        as_bytes({**GOOD, "signatures": [{"sig": base64.b64encode(b"x" * 2000).decode()}]}),
        "not a signature",
    ),
    "too-many-signatures": (as_bytes({**GOOD, "signatures": [SIG] * 33}), "over the cap of 32"),
    "duplicate-payload": (
        b'{"payload": "YQ==", "payload": "Yg==", "payloadType": "t", "signatures": []}',
        "duplicate key 'payload'",
    ),
}


@pytest.mark.parametrize("name", sorted(MALFORMED))
def test_malformed_envelopes(name: str) -> None:
    data, needle = MALFORMED[name]
    assert needle in malformed(data)


def test_size_cap() -> None:
    data = as_bytes(GOOD)
    assert dsse.parse(data, "att.json", max_bytes=len(data)).payload == PAYLOAD
    with pytest.raises(EvidenceError, match=r"over the \d+ byte cap"):
        dsse.parse(data, "att.json", max_bytes=len(data) - 1)


def test_digest_names_the_bytes_read() -> None:
    data = as_bytes(GOOD)
    assert dsse.parse(data, "x").digest == "sha256:" + hashlib.sha256(data).hexdigest()


def test_sign_needs_a_key() -> None:
    with pytest.raises(ValueError, match="at least one"):
        dsse.sign(PAYLOAD, TYPE, [])


# ------------------------------------------------------------------------ real envelopes

ATTESTATIONS = Path(__file__).resolve().parents[1] / "fixtures" / "attestations"
# envelope (bare, or a sigstore bundle's dsseEnvelope) -> its key file, or None: the bundle's
# certificate key (keyless: only the DSSE signature is checked here, not the chain or the log)
REAL = {
    "slsa-verifier/gke-gce-pre.bcid-vsa.jsonl": "slsa-verifier/vsa_signing_public_key.pem",
    "sigstore-go/bundle-publish.json": "sigstore-go/publish_key.pub",
    "cosign/oci-attestation.sigstore.json": None,
    "github/reusable-workflow-attestation.sigstore.json": None,
    "sigstore-conformance/happy-path-intoto-in-dsse-v3.sigstore.json": None,
    "sigstore-conformance/rekor2-dsse-happy-path.sigstore.json": None,
    "sigstore-go/sigstore.js@2.0.0-provenance.sigstore.json": None,
}
NO_KEY = [
    "cosign/policy-vuln.dsse.json",
    "cosign/policy-custom.dsse.json",
    "trivy/attestation.dsse.json",
]


def _real(name: str) -> tuple[bytes, dict | None]:
    path = ATTESTATIONS / name
    if not path.is_file():
        pytest.skip(f"tests/fixtures/attestations/{name} is not there")
    data = path.read_bytes()
    doc = json.loads(data)
    if "dsseEnvelope" in doc:  # a sigstore bundle
        return json.dumps(doc["dsseEnvelope"]).encode(), doc
    return data, None


def _certificate_key(bundle: dict) -> PublicKey:
    material = bundle["verificationMaterial"]
    cert = material.get("certificate") or material["x509CertificateChain"]["certificates"][0]
    return PublicKey(
        x509.load_der_x509_certificate(base64.b64decode(cert["rawBytes"])).public_key()
    )


@pytest.mark.parametrize("name", sorted(REAL))
def test_real_envelopes_verify(name: str) -> None:
    """What cosign, GitHub, npm, sigstore-go/-python and Google's VSA signer wrote: ECDSA P-256,
    keyids "" / absent / their own, DER and (the VSA) raw r‖s signatures."""
    data, bundle = _real(name)
    key_file = REAL[name]
    if key_file:
        if not (ATTESTATIONS / key_file).is_file():
            pytest.skip(f"tests/fixtures/attestations/{key_file} is not there")
        key = keys.read_public_key(ATTESTATIONS / key_file)
    else:
        assert bundle is not None
        key = _certificate_key(bundle)
    envelope = dsse.parse(data, name)
    result = dsse.verify(envelope, [new_key().public, key], payload_type=TYPE)
    assert isinstance(result, dsse.Verified), result
    assert result.key == key
    statement = intoto.from_verified(result)
    assert statement.type in intoto.STATEMENT_TYPES and statement.subjects
    # one changed byte of the payload and it no longer verifies
    altered = dsse.Envelope(
        envelope.payload + b" ", envelope.payload_type, envelope.signatures, name, ""
    )
    assert isinstance(dsse.verify(altered, [key]), dsse.Refused)


@pytest.mark.parametrize("name", NO_KEY)
def test_real_cosign_envelopes_without_their_key(name: str) -> None:
    """cosign's bare envelopes (keyid ""), whose key nobody published: read, and refused."""
    data, _ = _real(name)
    envelope = dsse.parse(data, name)
    assert [s.keyid for s in envelope.signatures] == [""]
    result = dsse.verify(envelope, [new_key().public])
    assert isinstance(result, dsse.Refused) and result.reason == "unknown-key"
    statement = intoto.parse(envelope.payload, name)
    assert statement.type == intoto.STATEMENT_V01 and len(statement.subject_digests()) == 1
