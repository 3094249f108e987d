"""What every gate shares: the evidence it reads, the result it returns, the policy base class.

A gate kind is declared and registered in gates/kinds.py (docs/gates.md); its module typically
has two pure functions:

    parse(evidence) -> Report                  raises EvidenceError on anything malformed
    evaluate(evidence, policy, now=None) -> GateResult

`evaluate` never raises for bad evidence: it returns a refusal whose `error` says why, so a gate
fails closed — missing, malformed, mismatched or stale evidence refuses the promotion, never passes
it. Loading evidence (file, URL, OCI referrer) lives in gates/evidence.py.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Discriminator, Field, Tag

from gates.keyless import Identity
from registry.errors import BadInputError


def _registered(name: Any) -> Any:
    """A gate kind's name must be registered (gates/kinds.py): anything else, a number
    included, is "must be 'tests', 'scan', …". Imported here, not at the top: gates/kinds.py
    imports every gate module, which import this one."""
    from gates.kinds import gate

    return gate(name).name


# A gate kind's name: a plain string in JSON (records), checked against the registered kinds.
GateKind = Annotated[str, BeforeValidator(_registered)]

MAX_EVIDENCE_BYTES = 256 * 1024 * 1024  # refused, not parsed, above this (a 20,000-finding
# Trivy report as Trivy writes it is ~78 MB)


class EvidenceError(BadInputError):
    """Evidence that cannot be read as what it claims to be (exit code 2 on the CLI)."""


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


@dataclass(frozen=True, slots=True)
class Evidence:
    """The bytes a gate reads, and what binds them to an image.

    `subject` is the digest the evidence is about: the referrer's subject when it came from the
    registry, or the digest given on the command line. For an index, `accepted` also holds its
    platform children: a scan of one platform image counts as evidence for the index.
    """

    data: bytes = field(repr=False)
    source: str  # where it came from: a path, a URL, or registry/repo@referrer-digest
    media_type: str | None = None  # the artifact type, when it came from a registry
    subject: str | None = None
    accepted: tuple[str, ...] = ()  # digests a report may name besides `subject` (the family:
    # the index and all its platform manifests)
    config_digests: tuple[str, ...] = ()  # config blobs of those manifests (Trivy's ImageID)
    referrer: str | None = None  # digest of the referrer manifest that carried it
    created: dt.datetime | None = None  # org.opencontainers.image.created of the referrer

    @property
    def digest(self) -> str:
        return "sha256:" + hashlib.sha256(self.data).hexdigest()

    def matches(self, digest: str) -> bool:
        """Whether a manifest digest named inside a report is the image this evidence is about."""
        return digest == self.subject or digest in self.accepted


class EvidenceRef(BaseModel):
    """The evidence a result rests on, as recorded in promotion records."""

    model_config = ConfigDict(frozen=True)

    source: str
    digest: str  # sha256 of the evidence bytes
    subject: str | None = None
    referrer: str | None = None
    created: dt.datetime | None = None

    @classmethod
    def of(cls, evidence: Evidence) -> EvidenceRef:
        return cls(
            source=evidence.source,
            digest=evidence.digest,
            subject=evidence.subject,
            referrer=evidence.referrer,
            created=evidence.created,
        )


class GateResult(BaseModel):
    """One gate's verdict: a one-line summary for people, rows for a table, and the evidence."""

    model_config = ConfigDict(frozen=True)

    gate: GateKind
    passed: bool
    summary: str
    rows: list[dict[str, str]] = Field(default_factory=list)
    evidence: list[EvidenceRef] = Field(default_factory=list)
    evaluated_at: dt.datetime = Field(default_factory=utcnow)
    # Set when the evidence itself was unusable (malformed, unreadable, of another kind): the
    # CLI exits 2 for it. Missing evidence is a plain refusal (exit 1), with no error.
    error: str | None = None
    member: str | None = None  # for a release: the member this verdict is about

    @property
    def label(self) -> str:
        """`scan`, or `api: scan` for a release's member."""
        return f"{self.member}: {self.gate}" if self.member else self.gate

    @classmethod
    def refused_for(
        cls,
        gate: GateKind,
        error: str,
        evidence: list[Evidence] | None = None,
        now: dt.datetime | None = None,
    ) -> GateResult:
        """Fail closed: the evidence could not be used, so the gate refuses."""
        return cls(
            gate=gate,
            passed=False,
            summary=f"refused: {error}",
            evidence=[EvidenceRef.of(e) for e in evidence or []],
            evaluated_at=now or utcnow(),
            error=error,
        )


class Policy(BaseModel):
    """Base of every gate policy: unknown keys are an error, not silently ignored."""

    model_config = ConfigDict(extra="forbid", frozen=True)


# A key (a string) or a keyless identity (a mapping): told apart by shape, so an error names the
# one meant, not every branch of the union.
Signer = Annotated[
    Annotated[str, Tag("key")] | Annotated[Identity, Tag("identity")],
    Discriminator(lambda v: "key" if isinstance(v, str) else "identity"),
]


class ReportPolicy(Policy):
    """Policies of gates that read attached reports (tests, scan)."""

    # For an index: False — one report for the index will do; True — every platform image needs
    # its own report (and each binds to its platform only).
    per_platform: bool = False
    # Public keys (files relative to pipeline.yaml, or the PEM / OpenSSH line itself) and keyless
    # identities ({issuer, subject | subject_regex}: gates/keyless.py): when set, only in-toto
    # attestations signed by one of them count, never a plain attached report (gates/attested.py).
    signed_by: list[Signer] = Field(default_factory=list)

    @property
    def identities(self) -> list[Identity]:
        return [s for s in self.signed_by if isinstance(s, Identity)]


def guarded(
    gate: GateKind,
    evidence: Evidence,
    judge: Callable[[], GateResult],
    now: dt.datetime | None = None,
) -> GateResult:
    """Run `judge`; turn an EvidenceError into a refusal (fail closed)."""
    try:
        return judge()
    except EvidenceError as e:
        return GateResult.refused_for(gate, str(e), [evidence], now=now)


def check_size(evidence: Evidence, limit: int = MAX_EVIDENCE_BYTES) -> None:
    if not evidence.data.strip():
        raise EvidenceError(f"{evidence.source}: the report is empty")
    if len(evidence.data) > limit:
        size = len(evidence.data)
        raise EvidenceError(f"{evidence.source}: the report is {size} bytes, over the {limit} cap")


def combine(gate: GateKind, results: list[GateResult]) -> GateResult:
    """One verdict from several (e.g. one per platform of an index): all must pass."""
    if not results:
        return GateResult.refused_for(gate, "no evidence to evaluate")
    passed = all(r.passed for r in results)
    failing = [r for r in results if not r.passed]
    return GateResult(
        gate=gate,
        passed=passed,
        summary=results[0].summary if passed else failing[0].summary,
        rows=[row for r in results for row in r.rows],
        evidence=[e for r in results for e in r.evidence],
        error=next((r.error for r in failing if r.error), None),
    )


def age_of(created: dt.datetime | None, now: dt.datetime) -> dt.timedelta | None:
    if created is None:
        return None
    if created.tzinfo is None:
        created = created.replace(tzinfo=dt.UTC)
    return now - created


def table_row(**cells: Any) -> dict[str, str]:
    return {k: "" if v is None else str(v) for k, v in cells.items()}
