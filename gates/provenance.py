"""Provenance gate: who built the image, from which source — SLSA provenance v1, signed.

    https://slsa.dev/spec/v1.0/provenance

The gate reads `https://slsa.dev/provenance/v1` in-toto statements attached to the image (either
layout cosign writes), signed by one of the policy's `signed_by` keys or keyless identities —
required: provenance anyone could write proves nothing. The statement must name the image's
digest. Then:

- `builder_ids`: allowed `runDetails.builder.id`, exactly (e.g.
  `https://github.com/actions/runner/github-hosted`);
- `repositories`: allowed source repositories, as GitHub's build types name them
  (`buildDefinition.externalParameters.workflow.repository`, e.g. `https://github.com/acme/app`),
  else the first `resolvedDependencies[].uri` (`git+https://github.com/acme/app@refs/heads/main`);
- `refs`: allowed source refs (`refs/heads/main`, `refs/tags/v*`: shell-style patterns), from
  `externalParameters.workflow.ref` or the `@…` of that uri.

Each list empty means "any". A policy constraint the provenance does not answer refuses (fail
closed), saying which field was missing.
"""

from __future__ import annotations

import datetime as dt
import fnmatch
import json
from typing import Any

from pydantic import Field

from gates.base import Evidence, EvidenceRef, GateResult, ReportPolicy, Signer, table_row, utcnow

PREDICATE_TYPE = "https://slsa.dev/provenance/v1"
MEDIA_TYPE = "application/vnd.airlock.slsa-provenance.v1+json"  # the predicate, as read


class ProvenancePolicy(ReportPolicy):
    """Who may have built the image, from where. `signed_by` is required."""

    signed_by: list[Signer] = Field(min_length=1)
    builder_ids: list[str] = Field(default_factory=list)
    repositories: list[str] = Field(default_factory=list)
    refs: list[str] = Field(default_factory=list)


def parse(evidence: Evidence) -> dict[str, Any]:
    """The provenance predicate (it arrives as JSON from gates/attested.py)."""
    doc = json.loads(evidence.data)
    return doc if isinstance(doc, dict) else {}


def _get(doc: Any, *path: str) -> Any:
    for key in path:
        doc = doc.get(key) if isinstance(doc, dict) else None
    return doc


def source_of(predicate: dict[str, Any]) -> tuple[str | None, str | None]:
    """(repository, ref) the provenance says it was built from, as far as it says."""
    workflow = _get(predicate, "buildDefinition", "externalParameters", "workflow")
    repo, ref = _get(workflow, "repository"), _get(workflow, "ref")
    if isinstance(repo, str) and isinstance(ref, str):
        return repo, ref
    deps = _get(predicate, "buildDefinition", "resolvedDependencies")
    uri = _get(deps[0], "uri") if isinstance(deps, list) and deps else None
    if not isinstance(uri, str):
        return (repo if isinstance(repo, str) else None), (ref if isinstance(ref, str) else None)
    uri = uri.removeprefix("git+")
    base, _, at = uri.partition("@")
    return (repo if isinstance(repo, str) else base), (ref if isinstance(ref, str) else at or None)


def _normal(repo: str) -> str:
    return repo.rstrip("/").removesuffix(".git").lower()


def evaluate(
    evidence: Evidence, policy: ProvenancePolicy, now: dt.datetime | None = None
) -> GateResult:
    """Judge one verified provenance predicate against the policy."""
    predicate = parse(evidence)
    builder = _get(predicate, "runDetails", "builder", "id")
    repo, ref = source_of(predicate)
    checks: list[tuple[str, str | None, list[str], bool]] = [
        (
            "builder id",
            builder if isinstance(builder, str) else None,
            policy.builder_ids,
            isinstance(builder, str) and builder in policy.builder_ids,
        ),
        (
            "source repository",
            repo,
            policy.repositories,
            repo is not None and _normal(repo) in {_normal(r) for r in policy.repositories},
        ),
        (
            "source ref",
            ref,
            policy.refs,
            ref is not None and any(fnmatch.fnmatchcase(ref, p) for p in policy.refs),
        ),
    ]
    rows, refusals = [], []
    for what, actual, allowed, ok in checks:
        if not allowed:
            ok = True  # no constraint
        elif actual is None:
            refusals.append(f"the provenance names no {what}")
        elif not ok:
            refusals.append(f"{what} {actual!r} is not allowed ({', '.join(allowed)})")
        rows.append(
            table_row(
                check=what,
                actual=actual or "-",
                allowed=", ".join(allowed) or "any",
                ok="yes" if ok and (actual or not allowed) else "no",
            )
        )
    return GateResult(
        gate="provenance",
        passed=not refusals,
        summary=(
            f"refused: {'; '.join(refusals)}"
            if refusals
            else f"passed: built by {builder or '?'} from {repo or '?'}@{ref or '?'}"
        ),
        rows=rows,
        evidence=[EvidenceRef.of(evidence)],
        evaluated_at=now or utcnow(),
    )
