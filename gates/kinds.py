"""Gate kinds: what each kind declares, and the one registry of them.

A kind declares its name, its typed policy (a `gates.base.Policy` subclass), the evidence media
types it reads, how it collects evidence for a candidate image, and how it evaluates that
evidence. `register` makes it known everywhere at once: pipeline.yaml (`GateConfig`), the hop's
gates (flows/hops.py), the promote flow, `airlock plan` and `airlock gate`. See docs/gates.md.

This layer knows nothing of flows/: a hop is seen through `Candidate`, which flows/hops.py builds.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Awaitable, Callable
from dataclasses import KW_ONLY, dataclass
from pathlib import Path
from typing import Any, Generic, TypeVar

import gates.approval
import gates.provenance
import gates.scan
import gates.signature
import gates.soak
import gates.tests
from gates import attested, keys
from gates.base import Evidence, GateResult, Policy, ReportPolicy, combine
from gates.evidence import from_referrers, target_of
from gates.keys import PublicKey
from registry import mediatypes as mt
from registry.client import RegistryClient
from registry.manifest import Manifest

P = TypeVar("P", bound=Policy)
E = TypeVar("E")
Entered = tuple[dt.datetime | None, str]  # when the digest entered the previous stage, and by what


async def _unknown_entry() -> Entered:
    return None, "no previous stage"


@dataclass(frozen=True)
class Candidate:
    """The image a gate judges, and where its evidence is read: the previous stage's repository
    for a hop (flows/hops.py builds this from its Hop), the named repository for `airlock gate`."""

    client: RegistryClient
    repository: str
    manifest: Manifest  # of the digest being promoted
    previous: str = ""  # the previous stage's name ("" outside a pipeline)
    entered: Callable[[], Awaitable[Entered]] = _unknown_entry  # read only by gates that need it
    named: str = ""  # how messages name the repository ("": by digest alone)
    folder: Path | None = None  # where a policy's key files are (the pipeline's); None: cwd

    @property
    def digest(self) -> str:
        return self.manifest.digest

    def shown(self, digest: str) -> str:
        return f"{self.named}@{digest}" if self.named else digest


class Gate(Generic[P, E]):
    """The gate protocol. Subclass it, set the class attributes, implement `collect` and
    `evaluate`, and `register` one instance."""

    name: str
    policy: type[P]
    media_types: tuple[str, ...] = ()  # artifact types of the evidence it reads (referrers)
    waits_for_people: bool = False  # True: the flow pauses for decisions instead of a task
    standalone: bool = False  # `airlock gate KIND` can judge it on an image, without a pipeline
    rescan: bool = False  # the rescan flow judges images already promoted against it again

    async def collect(self, candidate: Candidate, policy: P) -> E:
        """Read the evidence for `candidate` (I/O). Raises EvidenceError when it is unusable."""
        raise ValueError(f"gate {self.name} is not evaluated as a task")

    def evaluate(
        self, evidence: E, policy: P, candidate: Candidate, now: dt.datetime | None = None
    ) -> GateResult:
        """Judge the collected evidence (pure). Never raises for bad evidence: it refuses."""
        raise NotImplementedError

    async def judge(
        self, candidate: Candidate, policy: P, now: dt.datetime | None = None
    ) -> GateResult:
        return self.evaluate(await self.collect(candidate, policy), policy, candidate, now)


# ---------------------------------------------------------------------------- the registry

_KINDS: dict[str, Gate[Any, Any]] = {}


def register(gate: Gate[Any, Any]) -> Gate[Any, Any]:
    """Make a kind known everywhere (pipeline.yaml, hops, CLI); its name must be new."""
    if gate.name in _KINDS:
        raise ValueError(f"gate kind {gate.name!r} is registered already")
    _KINDS[gate.name] = gate
    return gate


def unregister(name: str) -> None:
    _KINDS.pop(name, None)


def known() -> tuple[str, ...]:
    """The registered kinds' names, in registration order."""
    return tuple(_KINDS)


def choices() -> str:
    """`'tests', 'scan' or 'soak'`: the registered names, worded as pydantic words a Literal's
    (so pipeline.yaml errors read as they did when the kinds were a Literal)."""
    quoted = [repr(n) for n in known()]
    return quoted[0] if len(quoted) == 1 else f"{', '.join(quoted[:-1])} or {quoted[-1]}"


def gate(name: str) -> Gate[Any, Any]:
    """The registered kind called `name`; ValueError naming the known kinds otherwise."""
    try:
        return _KINDS[name]
    except (KeyError, TypeError):
        raise ValueError(f"must be {choices()}") from None


def reading(media_type: str) -> Gate[Any, Any]:
    """The kind that reads evidence of `media_type`."""
    return next(g for g in _KINDS.values() if media_type in g.media_types)


def signers(policy: ReportPolicy, folder: Path, kind: str) -> list[PublicKey]:
    """The keys a report gate's `signed_by` names (files relative to `folder`); its keyless
    identities are `policy.identities`."""
    return [
        keys.public_key_from(value, folder, f"{kind} policy signed_by[{i}]")
        for i, value in enumerate(policy.signed_by)
        if isinstance(value, str)
    ]


# ---------------------------------------------------------------------------- built-in kinds

# (digest, its newest report, or its signed reports, or why none counts, or None: no report)
Found = list[tuple[str, Evidence | list[Evidence] | str | None]]


@dataclass(frozen=True)
class ReportGate(Gate[ReportPolicy, Found]):
    """A gate on reports attached as OCI referrers (tests, scan): the newest report of its media
    types for the image — or, with `per_platform`, for each platform of an index."""

    name: str
    policy: type[ReportPolicy]
    media_types: tuple[str, ...]
    _: KW_ONLY
    parse: Callable[[Evidence], Any]
    judge_report: Callable[[Evidence, Any, dt.datetime | None], GateResult]
    predicates: tuple[str, ...] = ()  # in-toto predicate types read when signed_by is set
    standalone: bool = True
    rescan: bool = False

    async def collect(self, candidate: Candidate, policy: ReportPolicy) -> Found:
        client, repo = candidate.client, candidate.repository
        target = await target_of(client, repo, candidate.manifest)
        if not policy.signed_by:
            found = await from_referrers(
                client, repo, target, self.media_types, per_platform=policy.per_platform
            )
            return list(found)
        keys = signers(policy, candidate.folder or Path.cwd(), self.name)
        digests = target.platforms if policy.per_platform and target.platforms else (target.digest,)
        return [
            (
                d,
                await attested.signed(
                    client, repo, d, target, self.predicates, keys, policy.identities
                ),
            )
            for d in digests
        ]

    def evaluate(
        self,
        evidence: Found,
        policy: ReportPolicy,
        candidate: Candidate,
        now: dt.datetime | None = None,
    ) -> GateResult:
        results = [self._judge(candidate, digest, found, policy, now) for digest, found in evidence]
        return results[0] if len(results) == 1 else combine(self.name, results)

    def _judge(
        self,
        candidate: Candidate,
        digest: str,
        found: Evidence | list[Evidence] | str | None,
        policy: ReportPolicy,
        now: dt.datetime | None,
    ) -> GateResult:
        if isinstance(found, Evidence):
            return self.judge_report(found, policy, now)
        if isinstance(found, list):  # signed reports: every one must pass
            results = [self.judge_report(report, policy, now) for report in found]
            return results[0] if len(results) == 1 else combine(self.name, results)
        if isinstance(found, str):
            return GateResult(gate=self.name, passed=False, summary=f"refused: {found}")
        return self.missing(candidate, digest, now)

    def missing(self, candidate: Candidate, digest: str, now: dt.datetime | None) -> GateResult:
        summary = f"refused: no {self.name} report is attached to {candidate.shown(digest)}"
        if now is None:
            return GateResult(gate=self.name, passed=False, summary=summary)
        return GateResult(gate=self.name, passed=False, summary=summary, evaluated_at=now)


class SignatureGate(Gate[gates.signature.SignaturePolicy, list[gates.signature.FoundSignature]]):
    """Cosign, Notation and sigstore-bundle signatures of the digest (gates/signature.py)."""

    name = "signature"
    policy = gates.signature.SignaturePolicy
    media_types = (
        gates.signature.COSIGN_PAYLOAD_TYPE,  # layers of the cosign `.sig` tag
        gates.signature.NOTATION_SIGNATURE,
        gates.signature.SIGSTORE_BUNDLE_V03,  # and the other bundle versions
    )
    standalone = True

    async def collect(
        self, candidate: Candidate, policy: gates.signature.SignaturePolicy
    ) -> list[gates.signature.FoundSignature]:
        return await gates.signature.collect(
            candidate.client, candidate.repository, candidate.digest
        )

    def evaluate(
        self,
        evidence: list[gates.signature.FoundSignature],
        policy: gates.signature.SignaturePolicy,
        candidate: Candidate,
        now: dt.datetime | None = None,
    ) -> GateResult:
        return gates.signature.evaluate(evidence, policy, candidate.digest, now=now)


class SoakGate(Gate[gates.soak.SoakPolicy, Entered]):
    """Time spent in the previous stage, from when the digest entered it (Candidate.entered)."""

    name = "soak"
    policy = gates.soak.SoakPolicy

    async def collect(self, candidate: Candidate, policy: gates.soak.SoakPolicy) -> Entered:
        return await candidate.entered()

    def evaluate(
        self,
        evidence: Entered,
        policy: gates.soak.SoakPolicy,
        candidate: Candidate,
        now: dt.datetime | None = None,
    ) -> GateResult:
        entered, source = evidence
        return gates.soak.evaluate(
            entered,
            policy,
            subject=candidate.digest,
            stage=candidate.previous,
            source=source,
            now=now,
        )


ApprovalEvidence = tuple[list[gates.approval.ApprovalInput], str | None]  # decisions, requester


class ApprovalGate(Gate[gates.approval.ApprovalPolicy, ApprovalEvidence]):
    """People's decisions: the flow pauses for them (flows/approvals.py), so there is nothing to
    collect here; `evaluate` judges the decisions received so far."""

    name = "approval"
    policy = gates.approval.ApprovalPolicy
    waits_for_people = True

    def evaluate(
        self,
        evidence: ApprovalEvidence,
        policy: gates.approval.ApprovalPolicy,
        candidate: Candidate,
        now: dt.datetime | None = None,
    ) -> GateResult:
        decisions, requester = evidence
        return gates.approval.evaluate(decisions, policy, requester, candidate.digest, now=now)


BUILT_IN: tuple[Gate[Any, Any], ...] = (
    ReportGate(
        "tests",
        gates.tests.TestsPolicy,
        (mt.TEST_REPORT_PYTEST, mt.TEST_REPORT_JUNIT),
        parse=gates.tests.parse,
        judge_report=gates.tests.evaluate,
        predicates=(attested.PYTEST_PREDICATE, attested.JUNIT_PREDICATE, attested.TEST_RESULT),
    ),
    ReportGate(
        "scan",
        gates.scan.ScanPolicy,
        (mt.SCAN_REPORT_TRIVY, mt.SCAN_REPORT_GRYPE, mt.SARIF),
        parse=gates.scan.parse,
        judge_report=gates.scan.evaluate,
        predicates=(attested.COSIGN_VULN, attested.SARIF_PREDICATE),
        rescan=True,  # new vulnerabilities are found in images already promoted
    ),
    SignatureGate(),
    ApprovalGate(),
    SoakGate(),
    ReportGate(
        "provenance",
        gates.provenance.ProvenancePolicy,
        (gates.provenance.MEDIA_TYPE,),  # read only as signed attestations (signed_by required)
        parse=gates.provenance.parse,
        judge_report=gates.provenance.evaluate,
        predicates=(gates.provenance.PREDICATE_TYPE,),
        standalone=False,
    ),
)
for _gate in BUILT_IN:
    register(_gate)
