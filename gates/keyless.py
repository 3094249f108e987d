"""Keyless signatures: sigstore bundles signed with a short-lived Fulcio certificate, such as
GitHub artifact attestations of public repositories and `cosign attest` without `--key`.

Who signed is the certificate's identity — the OIDC issuer that vouched (e.g.
`https://token.actions.githubusercontent.com`) and the subject it vouched for (a workflow URI, an
e-mail) — so a policy names identities instead of keys:

    signed_by:
      - keys/ci.pub                                               # a key, as before
      - issuer: https://token.actions.githubusercontent.com       # or an identity
        subject_regex: ^https://github\\.com/acme/app/\\.github/workflows/release\\.yml@refs/tags/

sigstore-python verifies the certificate chain to Fulcio, the transparency log entry and its
signed time, and the signature, **offline**, against the public-good trust root it ships (TUF
metadata is not refreshed: nothing here goes to the network). A bundle from another Sigstore
instance (GitHub's private-repository one, a company's own) does not verify against it, and
refuses. sigstore is imported only when a policy names an identity.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

PUBLIC_GOOD = "the Sigstore public-good instance"


class Identity(BaseModel):
    """A keyless signer: the OIDC issuer, and the subject exactly or by a regular expression
    (matched whole, so `^…$` need not be written)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    issuer: str = Field(min_length=1)
    subject: str | None = Field(default=None, min_length=1)
    subject_regex: str | None = Field(default=None, min_length=1)

    @model_validator(mode="after")
    def _one_subject(self) -> Identity:
        if (self.subject is None) == (self.subject_regex is None):
            raise ValueError("an identity names its subject or its subject_regex (one of them)")
        if self.subject_regex is not None:
            try:
                re.compile(self.subject_regex)
            except re.error as e:
                raise ValueError(f"subject_regex is not a regular expression ({e})") from None
        return self

    @property
    def shown(self) -> str:
        subject = self.subject if self.subject is not None else f"/{self.subject_regex}/"
        return f"{subject} (issuer {self.issuer})"

    def matches(self, issuer: str | None, subjects: set[str]) -> bool:
        if issuer != self.issuer:
            return False
        if self.subject is not None:
            return self.subject in subjects
        pattern = re.compile(self.subject_regex or "")
        return any(pattern.fullmatch(s) for s in subjects)


@dataclass(frozen=True, slots=True)
class Signer:
    """Who a verified keyless signature is from (as the certificate says)."""

    issuer: str | None
    subjects: tuple[str, ...]

    @property
    def summary(self) -> str:
        return f"signed keylessly by {', '.join(self.subjects)} (issuer {self.issuer})"


@dataclass(frozen=True, slots=True)
class Verified:
    payload_type: str
    payload: bytes
    signer: Signer


@functools.cache
def _verifier() -> Any:
    from sigstore.verify import Verifier

    return Verifier.production(offline=True)


def _signer(cert: Any) -> Signer:
    """The issuer and subjects (SANs) a Fulcio certificate names."""
    from cryptography.x509 import (
        ObjectIdentifier,
        OtherName,
        RFC822Name,
        SubjectAlternativeName,
        UniformResourceIdentifier,
    )
    from cryptography.x509.oid import ExtensionOID

    sans = cert.extensions.get_extension_for_oid(ExtensionOID.SUBJECT_ALTERNATIVE_NAME).value
    assert isinstance(sans, SubjectAlternativeName)
    subjects = [*sans.get_values_for_type(RFC822Name)]
    subjects += sans.get_values_for_type(UniformResourceIdentifier)
    other = ObjectIdentifier("1.3.6.1.4.1.57264.1.7")  # Fulcio's "username" other name
    subjects += [
        o.value.decode() for o in sans.get_values_for_type(OtherName) if o.type_id == other
    ]
    issuer = None
    for oid in ("1.3.6.1.4.1.57264.1.8", "1.3.6.1.4.1.57264.1.1"):  # the issuer: v2, then v1
        for ext in cert.extensions:
            if ext.oid.dotted_string == oid:
                raw = ext.value.value
                # v2 is a DER UTF8String (tag 0x0c, short length); v1 the bare bytes
                issuer = (
                    raw[2:].decode() if oid.endswith(".8") and raw[:1] == b"\x0c" else raw.decode()
                )
                break
        if issuer:
            break
    return Signer(issuer, tuple(subjects))


class _Allowed:
    """sigstore's VerificationPolicy: the certificate names one of `identities`."""

    def __init__(self, identities: Sequence[Identity]) -> None:
        self.identities = identities

    def verify(self, cert: Any) -> None:
        from sigstore.errors import VerificationError

        signer = _signer(cert)
        if not any(i.matches(signer.issuer, set(signer.subjects)) for i in self.identities):
            who = ", ".join(signer.subjects)
            raise VerificationError(f"{who} (issuer {signer.issuer}) is not an identity it names")


def verify(bundle: bytes, identities: Sequence[Identity], where: str) -> Verified | str:
    """The DSSE payload of a keyless sigstore bundle signed by one of `identities`, or why not
    (one line)."""
    from sigstore.errors import Error as SigstoreError
    from sigstore.models import Bundle

    try:
        parsed = Bundle.from_json(bundle)
    except Exception as e:  # sigstore raises many kinds for a malformed bundle
        return f"{where}: not a sigstore bundle sigstore-python can read ({_line(e)})"
    if parsed._dsse_envelope is None:  # sigstore has no public accessor
        return f"{where}: a keyless bundle without a DSSE envelope (a message signature)"
    try:
        payload_type, payload = _verifier().verify_dsse(parsed, _Allowed(identities))
    except SigstoreError as e:
        return f"{where}: keyless signature refused ({_line(e)}; trust root: {PUBLIC_GOOD})"
    except Exception as e:  # from parsing code sigstore calls
        return f"{where}: keyless signature not verified ({_line(e)})"
    return Verified(payload_type, payload, _signer(parsed.signing_certificate))


def _line(e: Exception) -> str:
    text = " ".join(str(e).split()) or type(e).__name__
    return text if len(text) <= 300 else text[:299] + "…"
