"""gates/keys.py: loading, generating and using signing keys, and keeping them secret.

OpenSSH keys come from the real `ssh-keygen` (on every machine this project runs on; should it be
missing, the tests make the same OpenSSH formats with `cryptography` instead: `_ssh_keygen`).
Keys are also exchanged with securesystemslib (its CryptoSigner), the DSSE reference's library.
"""

from __future__ import annotations

import base64
import copy
import hashlib
import pickle
import shutil
import subprocess
from pathlib import Path

import pytest
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa
from securesystemslib.signer import CryptoSigner, SSlibKey

from gates import keys
from gates.base import EvidenceError
from gates.keys import PrivateKey, PublicKey
from gates.signature import key_id as signature_key_id
from registry.errors import BadInputError

PASSPHRASE = "correct horse battery staple"
SSH_KEYGEN = shutil.which("ssh-keygen")


@pytest.fixture(autouse=True)
def _no_passphrase(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(keys.PASSPHRASE_ENV, raising=False)


def _body(pem: bytes | str) -> str:
    """The base64 inside a PEM block: the key material itself."""
    text = pem.decode() if isinstance(pem, bytes) else pem
    return "".join(line for line in text.splitlines() if not line.startswith("-----"))


def _chunks(secret: str, size: int = 12) -> list[str]:
    return [secret[i : i + size] for i in range(0, len(secret) - size, size)]


def _assert_hides(text: str, *secrets: str) -> None:
    for secret in secrets:
        for chunk in _chunks(secret):
            assert chunk not in text, f"key material {chunk!r} shown in {text!r}"


def _one_line(e: pytest.ExceptionInfo[BaseException]) -> str:
    message = str(e.value)
    assert "\n" not in message and message
    return message


def _ssh_keygen(tmp_path: Path, kind: str, passphrase: str = "") -> Path:
    """A key pair in OpenSSH format: `ssh-keygen -t KIND -N PASSPHRASE -f FILE` (FILE and
    FILE.pub). Without ssh-keygen on the machine, `cryptography` writes the same formats."""
    path = tmp_path / f"id_{kind.replace(' ', '_')}"
    if SSH_KEYGEN:
        kind_args = kind.split()  # "ecdsa -b 256"
        subprocess.run(
            [SSH_KEYGEN, "-q", "-t", *kind_args, "-N", passphrase, "-C", "ci@example", "-f", path],
            check=True,
            capture_output=True,
        )
        return path
    # Fallback: no ssh-keygen here; the OpenSSH formats written by `cryptography`.
    key: ed25519.Ed25519PrivateKey | ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey
    if kind == "ed25519":
        key = ed25519.Ed25519PrivateKey.generate()
    elif kind.startswith("ecdsa"):
        curve = ec.SECP384R1() if "384" in kind else ec.SECP256R1()
        key = ec.generate_private_key(curve)
    else:
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    encryption = (
        serialization.BestAvailableEncryption(passphrase.encode())
        if passphrase
        else serialization.NoEncryption()
    )
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, encryption
        )
    )
    public = key.public_key().public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
    )
    path.with_suffix(".pub").write_bytes(public + b" ci@example\n")
    return path


def _pub(path: Path) -> Path:
    return path.parent / (path.name + ".pub")


# ------------------------------------------------------------------------------ generate


@pytest.mark.parametrize("kind", ["ecdsa-p256", "ed25519"])
def test_generate_sign_verify(kind: keys.KeyKind) -> None:
    private_pem, public_pem = keys.generate(kind)
    assert private_pem.startswith(b"-----BEGIN PRIVATE KEY-----")  # PKCS#8
    assert public_pem.startswith(b"-----BEGIN PUBLIC KEY-----")  # SubjectPublicKeyInfo
    private = keys.load_private_key(private_pem)
    public = keys.load_public_key(public_pem)
    assert private.kind == public.kind == kind
    assert private.public == public and private.key_id == public.key_id
    signature = private.sign(b"payload")
    assert public.verify(signature, b"payload")
    assert not public.verify(signature, b"payload!")
    assert not public.verify(b"", b"payload")
    assert not public.verify(b"\x30\x06\x02\x01\x01\x02\x01\x01", b"payload")
    assert not keys.load_public_key(keys.generate(kind)[1]).verify(signature, b"payload")
    if kind == "ed25519":
        assert len(signature) == 64
    else:  # DER: SEQUENCE { INTEGER r, INTEGER s }
        assert signature[0] == 0x30 and len(signature) <= 72


def test_key_id_is_the_sha256_of_the_spki_der() -> None:
    public = keys.load_public_key(keys.generate("ecdsa-p256")[1])
    der = public.crypto.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    assert public.key_id == "sha256:" + hashlib.sha256(der).hexdigest()
    # the short form is what the signature gate has always shown
    assert public.short_id == f"sha256:{hashlib.sha256(der).hexdigest()[:16]}…"
    assert signature_key_id(public.crypto) == public.short_id  # type: ignore[arg-type]
    assert public.named_by(public.key_id) and public.named_by(public.key_id[7:].upper())
    assert not public.named_by("") and not public.named_by(public.short_id)


def test_unknown_kind_refused() -> None:
    with pytest.raises(BadInputError, match="unknown key kind"):
        keys.generate("rsa")  # type: ignore[arg-type]


# ------------------------------------------------------------------------ passphrases


def test_encrypted_pkcs8_needs_the_passphrase(monkeypatch: pytest.MonkeyPatch) -> None:
    private_pem, public_pem = keys.generate("ecdsa-p256", PASSPHRASE)
    assert private_pem.startswith(b"-----BEGIN ENCRYPTED PRIVATE KEY-----")

    with pytest.raises(EvidenceError) as e:
        keys.load_private_key(private_pem, "ci.key")
    assert _one_line(e) == "ci.key is encrypted: set AIRLOCK_KEY_PASSPHRASE to its passphrase"

    monkeypatch.setenv(keys.PASSPHRASE_ENV, "not the passphrase")
    with pytest.raises(EvidenceError) as e:
        keys.load_private_key(private_pem, "ci.key")
    message = _one_line(e)
    assert "wrong passphrase" in message and "not the passphrase" not in message
    assert e.value.__cause__ is None and e.value.__suppress_context__

    monkeypatch.setenv(keys.PASSPHRASE_ENV, PASSPHRASE)
    key = keys.load_private_key(private_pem, "ci.key")
    assert key.public == keys.load_public_key(public_pem)
    # an explicit passphrase wins over the environment
    with pytest.raises(EvidenceError, match="wrong passphrase"):
        keys.load_private_key(private_pem, "ci.key", passphrase="nope-nope")


def test_the_passphrase_is_ignored_for_an_unencrypted_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(keys.PASSPHRASE_ENV, PASSPHRASE)
    private_pem, _ = keys.generate("ed25519")
    assert keys.load_private_key(private_pem).kind == "ed25519"


def test_the_passphrase_never_shows(monkeypatch: pytest.MonkeyPatch) -> None:
    """Registered as a secret: even a message that quotes it is scrubbed."""
    monkeypatch.setenv(keys.PASSPHRASE_ENV, PASSPHRASE)
    keys.passphrase_from_env()
    assert PASSPHRASE not in str(EvidenceError(f"echoed {PASSPHRASE}"))


# -------------------------------------------------------------------------- OpenSSH


@pytest.mark.parametrize(
    ("kind", "expected"), [("ed25519", "ed25519"), ("ecdsa -b 256", "ecdsa-p256")]
)
def test_openssh_key_pair(tmp_path: Path, kind: str, expected: str) -> None:
    path = _ssh_keygen(tmp_path, kind)
    line = _pub(path).read_text()
    assert line.startswith(("ssh-ed25519 AAAA", "ecdsa-sha2-nistp256 AAAA"))
    public = keys.read_public_key(_pub(path))
    private = keys.read_private_key(path)
    assert private.kind == public.kind == expected
    assert private.public == public  # one key id whatever the format
    assert public.verify(private.sign(b"x"), b"x")
    # the same key as PEM (`ssh-keygen -e -m PKCS8` where there is one)
    assert keys.load_public_key(public.pem()) == public


@pytest.mark.skipif(SSH_KEYGEN is None, reason="converts with ssh-keygen")
def test_pem_and_openssh_convert_both_ways_with_ssh_keygen(tmp_path: Path) -> None:
    assert SSH_KEYGEN
    # ECDSA only: OpenSSH 9.2's `ssh-keygen -i -m PKCS8` does not import Ed25519 PEM keys
    pub = tmp_path / "ci.pub"
    pub.write_bytes(keys.generate("ecdsa-p256")[1])
    line = subprocess.run(
        [SSH_KEYGEN, "-i", "-m", "PKCS8", "-f", pub], capture_output=True, check=True, text=True
    ).stdout
    assert line.startswith("ecdsa-sha2-nistp256 AAAA")
    assert keys.load_public_key(line) == keys.read_public_key(pub)
    path = _ssh_keygen(tmp_path, "ecdsa -b 256")
    pem = subprocess.run(
        [SSH_KEYGEN, "-e", "-m", "PKCS8", "-f", _pub(path)],
        capture_output=True,
        check=True,
        text=True,
    ).stdout
    assert keys.load_public_key(pem) == keys.read_public_key(_pub(path))


def test_openssh_private_key_with_a_passphrase(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = _ssh_keygen(tmp_path, "ed25519", PASSPHRASE)
    with pytest.raises(EvidenceError) as e:
        keys.read_private_key(path)
    assert _one_line(e) == f"{path} is encrypted: set AIRLOCK_KEY_PASSPHRASE to its passphrase"
    monkeypatch.setenv(keys.PASSPHRASE_ENV, "wrong-passphrase")
    with pytest.raises(EvidenceError, match="wrong passphrase"):
        keys.read_private_key(path)
    monkeypatch.setenv(keys.PASSPHRASE_ENV, PASSPHRASE)
    assert keys.read_private_key(path).public == keys.read_public_key(_pub(path))


def test_openssh_passphrase_without_bcrypt(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """bcrypt is what OpenSSH derives the key from a passphrase with; without it, say so."""
    from cryptography.hazmat.primitives.serialization import ssh

    path = _ssh_keygen(tmp_path, "ed25519", PASSPHRASE)

    def no_bcrypt(*args: object, **kw: object) -> bytes:  # what cryptography has without it
        raise UnsupportedAlgorithm("Need bcrypt module")

    monkeypatch.setattr(ssh, "_bcrypt_kdf", no_bcrypt)
    monkeypatch.setenv(keys.PASSPHRASE_ENV, PASSPHRASE)
    with pytest.raises(EvidenceError) as e:
        keys.read_private_key(path)
    assert "needs the bcrypt package" in _one_line(e)


@pytest.mark.parametrize(
    ("kind", "what"), [("rsa -b 2048", "an RSA key"), ("ecdsa -b 384", "an ECDSA secp384r1 key")]
)
def test_openssh_keys_of_other_kinds_refused(tmp_path: Path, kind: str, what: str) -> None:
    path = _ssh_keygen(tmp_path, kind)
    with pytest.raises(EvidenceError) as e:
        keys.read_public_key(_pub(path))
    assert _one_line(e) == (
        f"{_pub(path)} is {what}; only ECDSA P-256 and Ed25519 keys are accepted"
    )
    with pytest.raises(EvidenceError) as e:
        keys.read_private_key(path)
    assert _one_line(e) == f"{path} is {what}; only ECDSA P-256 and Ed25519 keys are accepted"
    _assert_hides(str(e.value), _body(path.read_text()))


# ---------------------------------------------------------------------- refusals


def _spki(key: object) -> bytes:
    return key.public_key().public_bytes(  # type: ignore[attr-defined]
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


@pytest.mark.parametrize(
    ("make", "what"),
    [
        (lambda: rsa.generate_private_key(public_exponent=65537, key_size=2048), "an RSA key"),
        (lambda: ec.generate_private_key(ec.SECP384R1()), "an ECDSA secp384r1 key"),
        (lambda: ec.generate_private_key(ec.SECP256K1()), "an ECDSA secp256k1 key"),
        (ed448.Ed448PrivateKey.generate, "an Ed448 key"),
    ],
)
def test_other_key_kinds_refused(make: object, what: str) -> None:
    key = make()  # type: ignore[operator]
    with pytest.raises(EvidenceError) as e:
        keys.load_public_key(_spki(key), "keys/ci.pub")
    assert _one_line(e) == f"keys/ci.pub is {what}; only ECDSA P-256 and Ed25519 keys are accepted"
    private_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    with pytest.raises(EvidenceError) as e:
        keys.load_private_key(private_pem, "keys/ci.key")
    assert _one_line(e) == f"keys/ci.key is {what}; only ECDSA P-256 and Ed25519 keys are accepted"
    _assert_hides(str(e.value), _body(private_pem))


def test_a_private_key_given_as_public_is_refused_without_showing_it() -> None:
    private_pem, _ = keys.generate("ecdsa-p256")
    with pytest.raises(EvidenceError) as e:
        keys.load_public_key(private_pem, "keys/ci.pub")
    assert _one_line(e) == ("keys/ci.pub holds a private key, not a public key: give the .pub file")
    _assert_hides(str(e.value), _body(private_pem))
    with pytest.raises(EvidenceError, match="holds a public key, not a private key"):
        keys.load_private_key(keys.generate("ed25519")[1], "keys/ci.key")


BROKEN_PUBLIC = {
    "empty": b"",
    "garbage": b"not a key at all",
    "binary": b"\x00\xff" * 10,
    "truncated-pem": b"-----BEGIN PUBLIC KEY-----\nMFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAE\n"
    b"-----END PUBLIC KEY-----\n",
    "pem-not-base64": b"-----BEGIN PUBLIC KEY-----\n!!!!\n-----END PUBLIC KEY-----\n",
    "certificate": b"-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n",
    "ssh-not-base64": b"ssh-ed25519 !!!! comment",
    "ssh-unknown-type": b"ssh-foo AAAAB3NzaC1yc2EAAAADAQABAAABAQ",
    "ssh-two-lines": b"ssh-ed25519 AAAA\nssh-ed25519 AAAA",
    "oversized": b"-----BEGIN PUBLIC KEY-----\n" + b"A" * 70_000,
    "unicode": "ssh-ed25519 \udcff".encode("utf-8", "surrogateescape"),
}


@pytest.mark.parametrize("name", sorted(BROKEN_PUBLIC))
def test_malformed_public_keys(name: str) -> None:
    with pytest.raises(EvidenceError) as e:
        keys.load_public_key(BROKEN_PUBLIC[name], "keys/ci.pub")
    assert _one_line(e).startswith("keys/ci.pub")


BROKEN_PRIVATE = {
    "empty": b"",
    "garbage": b"hunter2",
    "pkcs8-not-der": b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
    "openssh-broken": b"-----BEGIN OPENSSH PRIVATE KEY-----\nAAAA\n"
    b"-----END OPENSSH PRIVATE KEY-----\n",
    "cosign": b"-----BEGIN ENCRYPTED SIGSTORE PRIVATE KEY-----\neyJrZGYiOnt9fQ==\n"
    b"-----END ENCRYPTED SIGSTORE PRIVATE KEY-----\n",
    "oversized": b"-----BEGIN PRIVATE KEY-----\n" + b"A" * 70_000,
}


@pytest.mark.parametrize("name", sorted(BROKEN_PRIVATE))
def test_malformed_private_keys(name: str) -> None:
    with pytest.raises(EvidenceError) as e:
        keys.load_private_key(BROKEN_PRIVATE[name], "keys/ci.key")
    assert _one_line(e).startswith("keys/ci.key")
    if name == "cosign":
        assert "cosign private key" in str(e.value)


def test_key_files(tmp_path: Path) -> None:
    with pytest.raises(EvidenceError, match="cannot read the public key"):
        keys.read_public_key(tmp_path / "missing.pub")
    with pytest.raises(EvidenceError, match="cannot read the private key"):
        keys.read_private_key(tmp_path)
    big = tmp_path / "big.pub"
    big.write_bytes(b"x" * (keys.MAX_KEY_FILE_BYTES + 1))
    with pytest.raises(EvidenceError, match="over 65536 bytes"):
        keys.read_public_key(big)


# ------------------------------------------------------------------- secrets stay secret


@pytest.mark.parametrize("kind", ["ecdsa-p256", "ed25519"])
def test_private_key_shows_no_material(kind: keys.KeyKind) -> None:
    private_pem, _ = keys.generate(kind)
    key = keys.load_private_key(private_pem)
    raw = key._key.private_bytes(  # the key's own bytes, in every form we can think of
        serialization.Encoding.DER,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    for shown in (repr(key), str(key), f"{key}", f"{key!r}", repr([key]), repr(key.public)):
        _assert_hides(shown, _body(private_pem), raw.hex(), base64.b64encode(raw).decode())
        assert key.short_id in shown
    assert repr(key) == f"PrivateKey({kind}, {key.short_id})"
    for leak in (pickle.dumps, copy.copy, copy.deepcopy):
        with pytest.raises(TypeError, match="not pickled or copied"):
            leak(key)
    assert not hasattr(key, "__dict__")  # no stray attribute can hold a copy


# ----------------------------------------------------------------- securesystemslib


@pytest.mark.parametrize("kind", ["ecdsa-p256", "ed25519"])
def test_airlock_keys_load_in_securesystemslib(tmp_path: Path, kind: keys.KeyKind) -> None:
    private_pem, public_pem = keys.generate(kind)
    ours = keys.load_private_key(private_pem)
    crypto_private = serialization.load_pem_private_key(private_pem, None)
    crypto_public = serialization.load_pem_public_key(public_pem)
    scheme = "ecdsa-sha2-nistp256" if kind == "ecdsa-p256" else "ed25519"
    sslib_public = SSlibKey.from_crypto(crypto_public, ours.key_id, scheme)  # type: ignore[arg-type]
    # what securesystemslib reads a private key file with (`file2:` URIs): PKCS#8 PEM
    path = tmp_path / "ci.key"
    path.write_bytes(private_pem)
    signer = CryptoSigner.from_priv_key_uri(f"file2:{path}", sslib_public)
    signature = signer.sign(b"data")
    assert ours.public.verify(bytes.fromhex(signature.signature), b"data")
    sslib_public.verify_signature(signature, b"data")  # raises if not
    # and an airlock signature verifies with securesystemslib's key
    from securesystemslib.signer import Signature

    sslib_public.verify_signature(Signature(ours.key_id, ours.sign(b"data").hex()), b"data")
    assert CryptoSigner(crypto_private).public_key.keyval == sslib_public.keyval  # type: ignore[arg-type]


@pytest.mark.parametrize("kind", ["ecdsa-p256", "ed25519"])
def test_securesystemslib_keys_load_in_airlock(kind: str) -> None:
    signer = (
        CryptoSigner.generate_ecdsa() if kind == "ecdsa-p256" else CryptoSigner.generate_ed25519()
    )
    private = keys.load_private_key(signer.private_bytes, "sslib.key")
    assert private.kind == kind
    public_value = signer.public_key.keyval["public"]
    if kind == "ecdsa-p256":  # securesystemslib keeps ECDSA public keys as PEM
        public = keys.load_public_key(public_value, "sslib.pub")
    else:  # and Ed25519 ones as raw hex
        public = PublicKey(ed25519.Ed25519PublicKey.from_public_bytes(bytes.fromhex(public_value)))
    assert public == private.public
    signature = signer.sign(b"data")
    assert public.verify(bytes.fromhex(signature.signature), b"data")


def test_private_key_wrapper_types() -> None:
    assert isinstance(keys.load_private_key(keys.generate()[0]), PrivateKey)


def test_the_signature_gate_loads_keys_here_and_stays_ecdsa_only(tmp_path: Path) -> None:
    """gates/signature.py reads keys with gates/keys.py; cosign keyed signatures are ECDSA."""
    from gates.signature import load_public_key as cosign_key
    from gates.signature import read_public_keys

    ecdsa = keys.load_public_key(keys.generate("ecdsa-p256")[1])
    assert keys.PublicKey(cosign_key(ecdsa.pem())) == ecdsa
    path = _ssh_keygen(tmp_path, "ecdsa -b 256")  # an OpenSSH line is read there too now
    assert read_public_keys([_pub(path)]) == [_pub(path).read_text()]
    with pytest.raises(EvidenceError) as e:
        cosign_key(keys.generate("ed25519")[1].decode(), "public key 1")
    assert _one_line(e) == (
        "public key 1 is an Ed25519 key; only ECDSA P-256 (cosign's default) keys verify"
        " cosign signatures"
    )


def test_ecdsa_raw_r_s_signatures_verify_too() -> None:
    """Google's VSAs carry 64 bytes of r‖s (IEEE P1363), not DER: the same (r, s)."""
    from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

    key = keys.load_private_key(keys.generate("ecdsa-p256")[0])
    r, s = decode_dss_signature(key.sign(b"data"))
    raw = r.to_bytes(32, "big") + s.to_bytes(32, "big")
    assert key.public.verify(raw, b"data")
    assert not key.public.verify(raw, b"other data")
    assert not key.public.verify(raw[:-1] + bytes([raw[-1] ^ 1]), b"data")
    assert not key.public.verify(raw + b"\x00", b"data")  # 65 bytes: neither encoding
    assert not key.public.verify(b"\x00" * 64, b"data")
    other = keys.load_private_key(keys.generate("ecdsa-p256")[0])
    assert not other.public.verify(raw, b"data")
