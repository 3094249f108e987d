"""SLSA Verification Summary Attestations (VSA v1): what a stage says it admitted.

    https://slsa.dev/spec/v1.0/verification_summary

A promotion into a stage writes one, signed with the stage's key, about the digest it admitted:
who verified (`verifier`), when (`timeVerified`), what (`resourceUri`: the target by digest),
against which policy (`policy`: the pipeline file's uri and sha256), on which evidence
(`inputAttestations`: each by digest), the result, and the levels it grants. airlock's own level
per stage is `AIRLOCK_STAGE_<STAGE>` (custom levels must not start with `SLSA_`). The next hop,
drift-watch, `airlock verify` and the gateway accept a stage only through such a VSA.

`predicate` and `Summary` build and read the predicate; `write` signs it (gates/dsse.py) as an
in-toto statement (gates/intoto.py) and attaches it in both layouts (gates/attestations.py);
`check` finds the one that admits a digest into a stage, signed by that stage's key.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from gates import attestations, dsse, intoto
from gates.base import EvidenceError
from gates.keys import PrivateKey, PublicKey
from registry.client import RegistryClient
from registry.manifest import Descriptor

PREDICATE_TYPE = "https://slsa.dev/verification_summary/v1"
VERIFIER_ID = "urn:airlock:promoter"  # verifier.id: a URI naming airlock (no web page implied)
SLSA_VERSION = "1.0"


def level(stage: str) -> str:
    """`AIRLOCK_STAGE_QA`: the level a promotion into `stage` grants."""
    return "AIRLOCK_STAGE_" + re.sub(r"[^A-Z0-9]", "_", stage.upper())


def digest_map(digest: str) -> dict[str, str]:
    """`sha256:abc…` → `{"sha256": "abc…"}` (in-toto's DigestSet)."""
    algorithm, _, hex_ = digest.partition(":")
    return {algorithm: hex_}


class _Open(BaseModel):
    """VSA objects may carry fields airlock does not read; they are kept, not refused."""

    model_config = ConfigDict(extra="allow", frozen=True)


class Verifier(_Open):
    id: str = Field(min_length=1)
    version: dict[str, str] = Field(default_factory=dict)


class ResourceDescriptor(_Open):
    uri: str = ""
    digest: dict[str, str] = Field(default_factory=dict)


class Summary(_Open):
    """The predicate of a VSA, as read (field names as the spec spells them)."""

    verifier: Verifier
    timeVerified: dt.datetime | None = None
    resourceUri: str = Field(min_length=1)
    policy: ResourceDescriptor
    inputAttestations: list[ResourceDescriptor] = Field(default_factory=list)
    verificationResult: Literal["PASSED", "FAILED"]
    verifiedLevels: list[str] = Field(default_factory=list)
    slsaVersion: str | None = None

    @classmethod
    def read(cls, predicate: Any, where: str) -> Summary:
        """The predicate, or EvidenceError (one line) when it is not a VSA predicate."""
        try:
            return cls.model_validate(predicate)
        except ValidationError as e:
            err = e.errors()[0]
            path = "".join(f" {p}" if i == 0 else f".{p}" for i, p in enumerate(err["loc"]))
            raise EvidenceError(f"{where}: VSA predicate{path}: {err['msg']}") from None

    def refusal(self, stage: str, digest: str) -> str | None:
        """Why this summary does not admit `digest` into `stage`, or None when it does."""
        if self.verificationResult != "PASSED":
            return f"the VSA says {self.verificationResult}"
        if level(stage) not in self.verifiedLevels:
            return (
                f"the VSA grants {', '.join(self.verifiedLevels) or 'no level'}, not {level(stage)}"
            )
        if not self.resourceUri.endswith("@" + digest):
            return f"the VSA is about {self.resourceUri}, not @{digest}"
        return None


def predicate(
    *,
    stage: str,
    resource_uri: str,
    policy_uri: str,
    policy_digest: str,
    inputs: list[tuple[str, str]],
    passed: bool,
    version: str,
    verified_at: dt.datetime,
) -> dict[str, Any]:
    """The VSA predicate for a promotion into `stage` (`inputs`: (uri, digest) per evidence)."""
    return {
        "verifier": {"id": VERIFIER_ID, "version": {"airlock": version}},
        "timeVerified": verified_at.astimezone(dt.UTC).isoformat().replace("+00:00", "Z"),
        "resourceUri": resource_uri,
        "policy": {"uri": policy_uri, "digest": digest_map(policy_digest)},
        "inputAttestations": [{"uri": u, "digest": digest_map(d)} for u, d in inputs],
        "verificationResult": "PASSED" if passed else "FAILED",
        "verifiedLevels": [level(stage)] if passed else [],
        "slsaVersion": SLSA_VERSION,
    }


# ------------------------------------------------------------------------- write and check


async def write(
    client: RegistryClient,
    repo: str,
    subject: Descriptor,
    name: str,
    summary: dict[str, Any],
    key: PrivateKey,
    also: Sequence[tuple[str, str]] = (),
) -> attestations.Attached:
    """Sign `summary` (a predicate) as a VSA about `subject` — and `also` these (name, digest)
    subjects, e.g. a release's members — and attach it to `subject` in `repo`."""
    payload = intoto.statement([(name, subject.digest), *also], PREDICATE_TYPE, summary)
    envelope = dsse.sign(payload, dsse.INTOTO_PAYLOAD_TYPE, key)
    raw = json.dumps(envelope, separators=(",", ":")).encode()
    return await attestations.attach(client, repo, subject, raw, PREDICATE_TYPE, key.key_id)


@dataclass(frozen=True, slots=True)
class Verdict:
    """Whether `stage` admitted the digest: by which VSA (its identity) and key, or why not."""

    stage: str
    verified: bool
    detail: str  # one line: "PASSED, signed by …" or why not
    vsa: str | None = None
    time_verified: dt.datetime | None = None
    inputs: tuple[str, ...] = ()  # the digests of the evidence it cites (its inputAttestations)


async def check(
    client: RegistryClient, repo: str, digest: str, stage: str, keys: Sequence[PublicKey]
) -> Verdict:
    """The stage's verdict on `digest`, from the VSAs attached to it in `repo`: one signed by one
    of `keys`, about this digest, PASSED with the stage's level, is enough. Anything else —
    unsigned, signed by another key, about another digest, FAILED, malformed — says why not."""
    found = await attestations.collect(client, repo, digest)
    reasons: list[str] = []
    for item in found:
        verdict = _judge(item, digest, stage, keys)
        if isinstance(verdict, Verdict):
            return verdict
        if verdict:
            reasons.append(verdict)
    if reasons:
        return Verdict(stage, False, reasons[0])
    return Verdict(stage, False, f"no {stage} VSA is attached to {repo}@{digest}")


def _judge(
    item: attestations.FoundEnvelope, digest: str, stage: str, keys: Sequence[PublicKey]
) -> Verdict | str | None:
    """A Verdict if `item` admits the digest; else why not, or None when it is no VSA at all."""
    if item.problem or item.envelope is None:
        return f"{item.where}: {item.problem}"
    try:
        envelope = dsse.parse(item.envelope, item.where)
        verified = dsse.verify(envelope, keys, payload_type=dsse.INTOTO_PAYLOAD_TYPE)
        if not verified.ok:
            return verified.message if _claims_vsa(item, envelope, stage) else None
        statement = intoto.from_verified(verified)
        if statement.predicate_type != PREDICATE_TYPE:
            return None
        if not statement.names(digest):
            return f"{item.where}: a VSA about another digest, not {digest}"
        summary = Summary.read(statement.predicate, item.where)
    except EvidenceError as e:
        return str(e)
    why = summary.refusal(stage, digest)
    if why:
        return f"{item.where}: {why}"
    detail = f"PASSED, signed by {verified.key.short_id} ({item.layout} layout)"
    inputs = tuple(
        f"{algorithm}:{value}"
        for a in summary.inputAttestations
        for algorithm, value in a.digest.items()
    )
    return Verdict(stage, True, detail, item.identity, summary.timeVerified, inputs)


def _claims_vsa(item: attestations.FoundEnvelope, envelope: dsse.Envelope, stage: str) -> bool:
    """Whether an envelope that did not verify says it is a VSA for `stage` (by its unverified
    payload, else its annotation): then why it failed is worth saying. Another stage's VSA,
    which travels with the image, is passed over quietly. Trusted it never is."""
    try:
        statement = intoto.parse(envelope.payload, item.where)
    except EvidenceError:
        return item.predicate_hint == PREDICATE_TYPE
    if statement.predicate_type != PREDICATE_TYPE:
        return False
    levels = statement.predicate.get("verifiedLevels")
    return not isinstance(levels, list) or level(stage) in levels
