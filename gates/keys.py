"""Signing keys: the one home for loading, generating and using them (DSSE envelopes, cosign).

Two kinds, and only these: **ECDSA P-256** with SHA-256 (DER signatures, cosign's default; raw
r‖s ones are read too) and **Ed25519** (raw 64-byte signatures). Anything else (RSA, other
curves, DSA) is refused with one line naming the key's source and what is accepted.

Public keys are read as PEM SubjectPublicKeyInfo (`-----BEGIN PUBLIC KEY-----`, what
`cosign public-key` and `airlock keys generate` write) or as one OpenSSH line
(`ssh-ed25519 AAAA… comment`, `ecdsa-sha2-nistp256 AAAA…`). Private keys as PKCS#8 PEM,
encrypted or not (the passphrase from AIRLOCK_KEY_PASSPHRASE), or as OpenSSH private keys
(`~/.ssh/id_ed25519`; a passphrase-protected one needs the `bcrypt` package). cosign's own
`ENCRYPTED SIGSTORE PRIVATE KEY` format is not read.

A key's id is `sha256:<hex>`, the SHA-256 of its DER SubjectPublicKeyInfo: the same for the
PEM, the OpenSSH line and the private key. `short_id` is its first 16 hex digits and `…`, the
form results show (and gates/signature.py has always shown).

Secrets stay secret: a PrivateKey's repr shows its kind and id only and it cannot be pickled or
copied; error messages never hold key material or the passphrase (which is also registered with
registry/secrets.py, so no message airlock prints can show it). Malformed or unusable keys raise
EvidenceError (a BadInputError: exit 2) with one line.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Literal, NoReturn

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import (
    dsa,
    ec,
    ed448,
    ed25519,
    rsa,
    utils,
    x448,
    x25519,
)

from gates.base import EvidenceError
from registry import secrets

KeyKind = Literal["ecdsa-p256", "ed25519"]
KINDS: tuple[KeyKind, ...] = ("ecdsa-p256", "ed25519")
ACCEPTED = "only ECDSA P-256 and Ed25519 keys are accepted"
PASSPHRASE_ENV = "AIRLOCK_KEY_PASSPHRASE"  # noqa: S105 (the name of the variable)
MAX_KEY_FILE_BYTES = 64 * 1024  # a key file is a few hundred bytes; never read a device whole

_KIND_NAMES = {"ecdsa-p256": "ECDSA P-256", "ed25519": "Ed25519"}
_SSH_PUBLIC_PREFIXES = (b"ssh-", b"ecdsa-sha2-", b"sk-")

_Public = ec.EllipticCurvePublicKey | ed25519.Ed25519PublicKey
_Private = ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey


def _describe(key: object) -> str:
    """What kind of key this is, for a refusal ("an RSA key", "an ECDSA secp384r1 key")."""
    if isinstance(key, ec.EllipticCurvePublicKey | ec.EllipticCurvePrivateKey):
        return f"an ECDSA {key.curve.name} key"
    names = [
        ((rsa.RSAPublicKey, rsa.RSAPrivateKey), "an RSA key"),
        ((dsa.DSAPublicKey, dsa.DSAPrivateKey), "a DSA key"),
        ((ed448.Ed448PublicKey, ed448.Ed448PrivateKey), "an Ed448 key"),
        ((x25519.X25519PublicKey, x25519.X25519PrivateKey), "an X25519 key"),
        ((x448.X448PublicKey, x448.X448PrivateKey), "an X448 key"),
    ]
    for types, name in names:
        if isinstance(key, types):
            return name
    return f"a {type(key).__name__.removeprefix('_')} key"


def _kind_of(key: object, source: str) -> KeyKind:
    if isinstance(key, ed25519.Ed25519PublicKey | ed25519.Ed25519PrivateKey):
        return "ed25519"
    if isinstance(key, ec.EllipticCurvePublicKey | ec.EllipticCurvePrivateKey) and isinstance(
        key.curve, ec.SECP256R1
    ):
        return "ecdsa-p256"
    raise EvidenceError(f"{source} is {_describe(key)}; {ACCEPTED}")


class PublicKey:
    """A public key of an accepted kind; compares equal by key id."""

    __slots__ = ("_key", "key_id", "kind", "source")

    def __init__(self, key: _Public, source: str = "public key") -> None:
        self.kind: KeyKind = _kind_of(key, source)
        self._key = key
        self.source = source
        der = key.public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        self.key_id = "sha256:" + hashlib.sha256(der).hexdigest()

    @property
    def crypto(self) -> _Public:
        """The `cryptography` key object."""
        return self._key

    @property
    def short_id(self) -> str:
        """`sha256:0123456789abcdef…`: the key id as results show it."""
        return self.key_id[: len("sha256:") + 16] + "…"

    @property
    def kind_name(self) -> str:
        return _KIND_NAMES[self.kind]

    def pem(self) -> str:
        """The key as PEM SubjectPublicKeyInfo (what `cosign public-key` prints)."""
        return self._key.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        ).decode("ascii")

    def named_by(self, hint: str) -> bool:
        """Whether a signature's keyid hint names this key (`sha256:<hex>` or the bare hex)."""
        return bool(hint) and hint.strip().lower() in (self.key_id, self.key_id[7:])

    def verify(self, signature: bytes, data: bytes) -> bool:
        """Whether `signature` is this key's over `data` (ECDSA: SHA-256, DER; Ed25519: raw).

        An ECDSA signature that is not DER is also tried as 64 bytes of raw r‖s (IEEE P1363):
        Google's VSAs (slsa-verifier's test data) are signed so. It is the same (r, s) in
        another encoding, so this accepts no signature that DER would not."""
        try:
            if isinstance(self._key, ed25519.Ed25519PublicKey):
                self._key.verify(signature, data)
                return True
            try:
                self._key.verify(signature, data, ec.ECDSA(hashes.SHA256()))
                return True
            except InvalidSignature:
                if len(signature) != 64:
                    raise
            r, s = int.from_bytes(signature[:32], "big"), int.from_bytes(signature[32:], "big")
            der = utils.encode_dss_signature(r, s)
            self._key.verify(der, data, ec.ECDSA(hashes.SHA256()))
            return True
        except (InvalidSignature, ValueError):
            return False

    def __eq__(self, other: object) -> bool:
        return isinstance(other, PublicKey) and other.key_id == self.key_id

    def __hash__(self) -> int:
        return hash(self.key_id)

    def __repr__(self) -> str:
        return f"PublicKey({self.kind}, {self.short_id}, from {self.source})"


class PrivateKey:
    """A private key of an accepted kind. Its repr and str show the kind and key id only, and it
    refuses to be pickled or copied (a copy is one more place a secret could leak from)."""

    __slots__ = ("_key", "kind", "public", "source")

    def __init__(self, key: _Private, source: str = "private key") -> None:
        self.kind: KeyKind = _kind_of(key, source)
        self._key = key
        self.source = source
        self.public = PublicKey(key.public_key(), source)

    @property
    def key_id(self) -> str:
        return self.public.key_id

    @property
    def short_id(self) -> str:
        return self.public.short_id

    def sign(self, data: bytes) -> bytes:
        """The signature over `data`: ECDSA with SHA-256 (DER), or Ed25519 (64 bytes)."""
        if isinstance(self._key, ed25519.Ed25519PrivateKey):
            return self._key.sign(data)
        return self._key.sign(data, ec.ECDSA(hashes.SHA256()))

    def verify(self, signature: bytes, data: bytes) -> bool:
        return self.public.verify(signature, data)

    def __repr__(self) -> str:
        return f"PrivateKey({self.kind}, {self.short_id})"

    __str__ = __repr__

    def __reduce_ex__(self, protocol: object) -> NoReturn:
        raise TypeError("a private key is not pickled or copied")


# ------------------------------------------------------------------------------------ loading


def _as_bytes(data: str | bytes, source: str, what: str) -> bytes:
    if isinstance(data, str):
        try:
            data = data.encode("utf-8")
        except UnicodeEncodeError:
            raise EvidenceError(f"{source} is not {what}") from None
    if len(data) > MAX_KEY_FILE_BYTES:
        raise EvidenceError(f"{source}: over {MAX_KEY_FILE_BYTES} bytes, not {what} file")
    return data.strip()


def load_public_key(data: str | bytes, source: str = "public key") -> PublicKey:
    """A public key from PEM (SubjectPublicKeyInfo) or one OpenSSH line; EvidenceError else."""
    text = _as_bytes(data, source, "a public key")
    if b"PRIVATE KEY-----" in text:
        raise EvidenceError(f"{source} holds a private key, not a public key: give the .pub file")
    if text.startswith(b"-----BEGIN"):
        try:
            key = serialization.load_pem_public_key(text)
        except (ValueError, TypeError, UnsupportedAlgorithm):
            raise EvidenceError(f"{source} is not a PEM public key") from None
    elif text.startswith(_SSH_PUBLIC_PREFIXES) and b"\n" not in text:
        try:
            key = serialization.load_ssh_public_key(text)
        except (ValueError, TypeError, UnsupportedAlgorithm):
            kind = text.split(None, 1)[0][:40].decode("ascii", "replace")
            raise EvidenceError(
                f"{source} is not a usable OpenSSH public key line ({kind}); {ACCEPTED}"
                " (ssh-ed25519, ecdsa-sha2-nistp256)"
            ) from None
    else:
        raise EvidenceError(
            f"{source} is not a PEM public key (nor an OpenSSH line such as `ssh-ed25519 AAAA…`)"
        )
    return PublicKey(key, source)  # type: ignore[arg-type]  # the kind is checked there


def passphrase_from_env() -> bytes | None:
    """AIRLOCK_KEY_PASSPHRASE (None if unset or empty), registered as a secret."""
    value = os.environ.get(PASSPHRASE_ENV) or None
    secrets.register(value)
    return value.encode("utf-8") if value else None


def load_private_key(
    data: str | bytes, source: str = "private key", passphrase: str | bytes | None = None
) -> PrivateKey:
    """A private key from PKCS#8 PEM (encrypted or not) or an OpenSSH private key.

    `passphrase` defaults to AIRLOCK_KEY_PASSPHRASE; it is used only if the key is encrypted."""
    if passphrase is None:
        password = passphrase_from_env()
    else:
        if isinstance(passphrase, str):
            secrets.register(passphrase)
            passphrase = passphrase.encode("utf-8")
        password = passphrase or None
    text = _as_bytes(data, source, "a private key")
    if b"SIGSTORE PRIVATE KEY" in text:
        raise EvidenceError(
            f"{source} is a cosign private key (ENCRYPTED SIGSTORE PRIVATE KEY), which airlock"
            " does not read: use a PKCS#8 PEM or OpenSSH key (`airlock keys generate`)"
        )
    if b"-----BEGIN OPENSSH PRIVATE KEY-----" in text:
        return _load_ssh_private(text, source, password)
    if text.startswith(b"-----BEGIN") and b"PRIVATE KEY-----" in text:
        return _load_pem_private(text, source, password)
    if b"PUBLIC KEY-----" in text or text.startswith(_SSH_PUBLIC_PREFIXES):
        raise EvidenceError(f"{source} holds a public key, not a private key")
    raise EvidenceError(
        f"{source} is not a private key (expected PKCS#8 PEM or an OpenSSH private key)"
    )


def _encrypted_no_passphrase(source: str) -> NoReturn:
    raise EvidenceError(f"{source} is encrypted: set {PASSPHRASE_ENV} to its passphrase") from None


def _wrong_passphrase(source: str) -> NoReturn:
    raise EvidenceError(
        f"{source} does not decrypt with {PASSPHRASE_ENV} (wrong passphrase?)"
    ) from None


def _load_pem_private(text: bytes, source: str, password: bytes | None) -> PrivateKey:
    try:
        key = serialization.load_pem_private_key(text, password=None)
    except TypeError:  # "Password was not given but private key is encrypted"
        if not password:
            _encrypted_no_passphrase(source)
        try:
            key = serialization.load_pem_private_key(text, password=password)
        except (ValueError, TypeError, UnsupportedAlgorithm):
            _wrong_passphrase(source)
    except (ValueError, UnsupportedAlgorithm):
        raise EvidenceError(f"{source} is not a valid PEM private key") from None
    return PrivateKey(key, source)  # type: ignore[arg-type]  # the kind is checked there


def _load_ssh_private(text: bytes, source: str, password: bytes | None) -> PrivateKey:
    try:
        key = serialization.load_ssh_private_key(text, password=None)
    except TypeError:  # "Key is password-protected, but password was not provided."
        if not password:
            _encrypted_no_passphrase(source)
        try:
            key = serialization.load_ssh_private_key(text, password=password)
        except UnsupportedAlgorithm:
            raise EvidenceError(
                f"{source} is a passphrase-protected OpenSSH key: reading it needs the bcrypt"
                " package (pip install bcrypt), or use a PKCS#8 key (`airlock keys generate`)"
            ) from None
        except (ValueError, TypeError):
            _wrong_passphrase(source)
    except (ValueError, UnsupportedAlgorithm):
        raise EvidenceError(f"{source} is not a valid OpenSSH private key") from None
    return PrivateKey(key, source)  # type: ignore[arg-type]  # the kind is checked there


def read_key_file(path: str | Path, what: str = "public key") -> bytes:
    """A key file's bytes (at most MAX_KEY_FILE_BYTES); EvidenceError naming the path."""
    path = Path(path)
    try:
        with path.open("rb") as f:
            data = f.read(MAX_KEY_FILE_BYTES + 1)
    except OSError as e:
        raise EvidenceError(f"{path}: cannot read the {what} ({e.strerror})") from None
    if len(data) > MAX_KEY_FILE_BYTES:
        raise EvidenceError(f"{path}: over {MAX_KEY_FILE_BYTES} bytes, not a {what} file")
    return data


def read_public_key(path: str | Path) -> PublicKey:
    return load_public_key(read_key_file(path, "public key"), str(path))


def read_private_key(path: str | Path, passphrase: str | bytes | None = None) -> PrivateKey:
    return load_private_key(read_key_file(path, "private key"), str(path), passphrase)


# --------------------------------------------------------------------------------- generating


def generate(
    kind: KeyKind = "ecdsa-p256", passphrase: str | bytes | None = None
) -> tuple[bytes, bytes]:
    """A new key pair: (PKCS#8 PEM private key, encrypted when a passphrase is given; PEM public
    key). An empty passphrase means none."""
    if kind == "ecdsa-p256":
        key: _Private = ec.generate_private_key(ec.SECP256R1())
    elif kind == "ed25519":
        key = ed25519.Ed25519PrivateKey.generate()
    else:
        raise EvidenceError(f"unknown key kind {kind!r}: expected one of {', '.join(KINDS)}")
    if isinstance(passphrase, str):
        secrets.register(passphrase)
        passphrase = passphrase.encode("utf-8")
    encryption: serialization.KeySerializationEncryption = (
        serialization.BestAvailableEncryption(passphrase)
        if passphrase
        else serialization.NoEncryption()
    )
    private_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption
    )
    public_pem = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return private_pem, public_pem


def public_key_from(value: str, folder: Path, source: str) -> PublicKey:
    """A public key as pipeline.yaml names one: the PEM or OpenSSH line itself, or a file
    relative to `folder` (the pipeline file's)."""
    text = value.strip()
    if text.startswith("-----BEGIN") or text.encode().startswith(_SSH_PUBLIC_PREFIXES):
        return load_public_key(text, source)
    try:
        return read_public_key(folder / text)
    except EvidenceError as e:
        raise EvidenceError(f"{source}: {e}") from None
