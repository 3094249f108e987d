"""One hop of the pipeline, without Prefect: resolve it, open its clients, judge its gates.

flows/promote.py and flows/release_hop.py run these inside Prefect (flows/gating.py: gates as
tasks); `airlock plan REF --to STAGE` runs them as a dry run, so a plan costs no Prefect start-up
and writes nothing (except for a soak gate on the time in the first stage: that time is a push
event, read from the Prefect server).
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

from flows import pushes
from flows.config import GateConfig, Pipeline, Stage
from flows.records import PromotionRecord, read_record, records_for
from gates import vsa
from gates.approval import name_problem
from gates.base import EvidenceError, GateResult
from gates.kinds import Candidate
from registry.client import RegistryClient
from registry.errors import BadInputError, NotFound, RefusedError
from registry.http import tune_http
from registry.manifest import Manifest
from registry.reference import Reference, parse


class PromotionRefused(RefusedError):
    """A gate, an immutable tag or a missing image stopped the hop (exit code 1)."""


@dataclass(frozen=True)
class Hop:
    pipeline: Pipeline
    name: str  # the image's name in the pipeline
    previous: Stage
    stage: Stage
    source: Reference  # previous stage, with the digest (and its tag there, when known)
    target: Reference  # this stage, with the tag
    manifest: Manifest  # of the digest being promoted
    release: str | None  # the tag it was pushed under in the first stage; every stage's tag
    # rule applies to this, so `{tag}-{stage}` gives 1.0-qa, 1.0-staging — never 1.0-qa-staging
    entered: PromotionRecord | None  # its promotion into the previous stage (None: first stage)

    @property
    def digest(self) -> str:
        return self.manifest.digest


@dataclass(frozen=True)
class Earlier:
    """What an earlier stage says about the digest: its promotion record there, or why there is
    none to show (a registry this hop holds no credentials for is not read)."""

    stage: str
    record: PromotionRecord | None
    note: str = ""


async def earlier(hop: Hop, opened: dict[str, RegistryClient]) -> list[Earlier]:
    """The records of the digest in every stage before this one (after the first, where images
    arrive by push), oldest first: what a reviewer of this hop needs to see it has passed."""
    out = []
    for stage in hop.pipeline.stages[1 : hop.pipeline.stages.index(hop.stage)]:
        if stage is hop.previous and hop.entered is not None:
            out.append(Earlier(stage.name, hop.entered))
            continue
        client = opened.get(stage.registry)
        if client is None:
            out.append(Earlier(stage.name, None, f"on registry {stage.registry}: not read here"))
            continue
        repo = hop.pipeline.reference(stage, hop.name).repository
        mine = [
            r for r in await records_for(client, repo, hop.digest) if r.is_for(stage.name, repo)
        ]
        out.append(Earlier(stage.name, mine[-1] if mine else None, "" if mine else "no record"))
    return out


def artifact_key(kind: str, hop: Hop) -> str:
    """`airlock-gates-prod-app`: a stable key per kind, stage and image, so the Artifacts page
    lists each once, with its versions (Prefect: lowercase letters, digits, dashes)."""
    name = re.sub(r"[^a-z0-9]+", "-", hop.name.lower()).strip("-")[:40] or "image"
    return f"airlock-{kind}-{hop.stage.name.replace('_', '-')}-{name}"


def check_requester(stage: Stage, requester: str | None) -> None:
    """A requester's name is a plain name, and a stage with an approval gate needs one."""
    if requester is not None and (problem := name_problem(requester)):
        raise BadInputError(f"requester {requester!r}: {problem}")
    if requester is None and stage.asks_approval:
        raise BadInputError(
            f"{stage.name} has an approval gate: say who asks (requester), so that nobody"
            " approves their own promotion"
        )


# ---------------------------------------------------------------------------- clients


@asynccontextmanager
async def clients(pipeline: Pipeline, *stages: Stage) -> AsyncIterator[dict[str, RegistryClient]]:
    """One client per registry the stages use (one pool, one token cache each)."""
    tune_http()  # a worker runs flows without the CLI's start-up
    clients: dict[str, RegistryClient] = {}
    try:
        for stage in stages:
            if stage.registry not in clients:
                settings = pipeline.registries[stage.registry]
                clients[stage.registry] = settings.client(await settings.resolve_credentials())
        yield clients
    finally:
        for client in clients.values():
            await client.aclose()


# ---------------------------------------------------------------------------- gates


def candidate(hop: Hop, client: RegistryClient) -> Candidate:
    """The hop as the gates see it: the digest, its evidence in the previous stage's repository,
    and when it entered that stage (read only by a gate that asks, e.g. soak)."""
    return Candidate(
        client,
        hop.source.repository,
        hop.manifest,
        hop.previous.name,
        lambda: entered(hop),
        folder=hop.pipeline.folder,
    )


async def evaluate(config: GateConfig, hop: Hop, client: RegistryClient) -> GateResult:
    """One gate of the hop's stage, on evidence read from the previous stage's repository.
    Evidence that cannot be read (a referrer without its report, one too large…) refuses the
    gate — naming it — rather than failing the whole hop."""
    try:
        return await _evaluate(config, hop, client)
    except EvidenceError as e:
        return GateResult.refused_for(config.kind, str(e))


async def _evaluate(config: GateConfig, hop: Hop, client: RegistryClient) -> GateResult:
    """One gate of the hop's stage, judged by its registered kind (gates/kinds.py)."""
    return await config.gate.judge(candidate(hop, client), config.policy)


async def entered(hop: Hop) -> tuple[dt.datetime | None, str]:
    """When the digest entered the previous stage, by something airlock or the registry
    recorded — never by what the image says of itself: its promotion record there, or, for the
    first stage (where images arrive by push), the first push event Prefect received for it
    (flows/pushes.py). None when there is no such record: the soak gate then refuses."""
    where = f"{hop.source.name}@{hop.digest}"
    if hop.entered is not None:
        return hop.entered.finished_at, f"{where} {hop.previous.name} record"
    if hop.previous is not hop.pipeline.stages[0]:
        return None, f"{where} ({hop.previous.name} record)"
    repository = hop.pipeline.reference(hop.previous, hop.name)
    return await pushes.first_received(repository, hop.digest), f"{where} push event"


async def _entered(
    pipeline: Pipeline,
    previous: Stage,
    client: RegistryClient,
    repo: Reference,
    digest: str,
    stage: Stage,
) -> PromotionRecord:
    """The digest's promotion record in the previous stage: what the hop takes the release
    (so the tags it moves) and the time it entered (so the soak) from.

    Where the previous stage names a public key, a record is not enough — anyone with push
    rights could write one, with another release or an old time. Only a VSA signed by that key
    says the digest passed, and the record taken is the one that VSA cites (by digest)."""
    passed = [
        r
        for r in await records_for(client, repo.repository, digest)
        if r.is_for(previous.name, repo.repository)
    ]
    if not passed:
        raise PromotionRefused(
            f"{stage.name}: {repo.name}@{digest} is in {previous.name} but was never promoted"
            f" there (no {previous.name} promotion record): it has not passed"
            f" {previous.name}'s gates"
        )
    trusted = pipeline.public_keys(previous)
    if not trusted:
        return passed[-1]
    verdict = await vsa.check(client, repo.repository, digest, previous.name, trusted)
    if not verdict.verified:
        raise PromotionRefused(
            f"{stage.name}: {repo.name}@{digest} has no valid {previous.name} VSA"
            f" ({verdict.detail}): it has not passed {previous.name}'s gates"
        )
    for cited in reversed(verdict.inputs):  # the record is cited last
        record = await read_record(client, repo.repository, cited, subject=digest)
        if record is not None and record.is_for(previous.name, repo.repository):
            return record
    raise PromotionRefused(
        f"{stage.name}: {repo.name}@{digest}'s {previous.name} VSA cites no {previous.name}"
        " promotion record: it cannot say which release passed"
    )


async def resolve(
    pipeline: Pipeline, image: str, to_stage: str, opened: dict[str, RegistryClient]
) -> Hop:
    """The hop that promotes `image` into `to_stage`.

    The digest `image` names — read where `image` is — must be in the previous stage and, unless
    that is the first stage, have been promoted there by airlock (its promotion record for that
    stage): present is not passed. Stages are never skipped, not even via a tag rebuilt since.
    """
    ref = parse(image)
    stage = pipeline.stage(to_stage)
    previous = pipeline.previous(stage)
    here, name = pipeline.locate(ref)
    repo = pipeline.reference(previous, name)
    src = opened[previous.registry]
    try:
        named = await opened[here.registry].get_manifest(ref.repository, ref.reference)
        manifest = named
        if here is not previous:
            manifest = await src.get_manifest(repo.repository, named.digest)
    except NotFound:
        where = previous.name if here is not previous else f"{here.name} ({ref})"
        raise PromotionRefused(
            f"{stage.name}: {ref} is not in {where}; promote it there first"
            " (stages are never skipped)"
        ) from None
    digest = manifest.digest
    entered_record = None
    release = ref.tag if here is pipeline.stages[0] else None
    previous_tag = ref.tag if here is previous else None
    if previous is not pipeline.stages[0]:
        entered_record = await _entered(pipeline, previous, src, repo, digest, stage)
        release = entered_record.release or release
        previous_tag = entered_record.tags[0] if entered_record.tags else previous_tag
    if release is None and "{tag}" in stage.tag:
        raise BadInputError(
            f"{ref}: name the image by the tag it was pushed under (stage {stage.name}'s tags are"
            f" made from it: {stage.tag})"
        )
    source = Reference(repo.registry, repo.repository, previous_tag, digest)
    target = pipeline.reference(stage, name).with_tag(stage.tag_for(release, digest))
    return Hop(pipeline, name, previous, stage, source, target, manifest, release, entered_record)
