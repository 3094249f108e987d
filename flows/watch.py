"""Scheduled checks of what the stages hold (deployments `drift-watch` and `rescan`).

drift-watch: every release tag of every stage after the first still points at the digest its
latest promotion (or rollback) record names — and, where the stage has a `public_key`, at a
digest holding a VSA of that stage signed by it (a record anyone with push rights could write;
the VSA only the stage's key). A tag moved, deleted or pushed behind airlock's back is drift: the
run writes an artifact listing it, emits `airlock.drift.detected`, and fails. So is a stage that
holds part of a release (some members' tags and not the others'), once its promotion there began.

rescan: the digests now in a stage (production by default) are judged again by the pipeline's scan
gate on the newest scan report attached to them *in that stage's repository* (attach a fresh scan
to prod/app@sha256:… to have it counted). A refusal emits `airlock.rescan.failed` and fails the
run. Nothing is changed in any registry by either.
"""

from __future__ import annotations

from typing import Any

from prefect import flow, get_run_logger
from prefect.artifacts import create_table_artifact
from prefect.events import emit_event

from flows import releases
from flows.config import GateConfig, Pipeline, Stage, load
from flows.hops import clients
from flows.landing import repository_lock
from flows.records import NOT_A_RELEASE, history
from gates import vsa
from gates.kinds import Candidate
from registry.client import RegistryClient
from registry.errors import BadInputError, NotFound, RefusedError, UnsupportedContent
from registry.reference import Reference

DRIFT_EVENT = "airlock.drift.detected"
RESCAN_EVENT = "airlock.rescan.failed"


class DriftDetected(RefusedError):
    """A stage's tag no longer points at what airlock promoted there."""


class RescanFailed(RefusedError):
    """A digest in the stage no longer passes the scan gate."""


def _repositories(catalog: list[str], stage: Stage) -> list[str]:
    return [r for r in catalog if stage.name_in(r) is not None]


async def _stage_drift(
    client: RegistryClient, catalog: list[str], pipeline: Pipeline, stage: Stage
) -> list[dict]:
    host = pipeline.registries[stage.registry].url
    trusted = pipeline.public_keys(stage)
    found: list[dict[str, Any]] = []
    for repo in _repositories(catalog, stage):
        # A promotion moves the tag, then writes its record: wait until none is in flight.
        async with repository_lock(Reference(host, repo)):
            latest, now = await _recorded_and_current(client, stage, repo)
        unsigned: dict[str, str | None] = {}  # per digest: why no VSA admits it, or None
        for tag in sorted(now):
            expected = latest.get(tag)
            digest = now[tag]
            if digest is not None and digest == expected and trusted:
                if digest not in unsigned:
                    verdict = await vsa.check(client, repo, digest, stage.name, trusted)
                    unsigned[digest] = None if verdict.verified else verdict.detail
                if unsigned[digest]:
                    why = f"no valid {stage.name} VSA ({unsigned[digest]})"
                    found.append(_drift(stage, f"{host}/{repo}:{tag}", expected, digest, why))
                continue
            if digest == expected:
                continue
            if expected is None:
                why = "pushed without airlock (no promotion record names this tag)"
            elif now[tag] is None:
                why = "deleted"
            else:
                why = "moved behind airlock's back"
            found.append(_drift(stage, f"{host}/{repo}:{tag}", expected, digest, why))
    return found


def _drift(
    stage: Stage, image: str, recorded: str | None, now: str | None, why: str
) -> dict[str, Any]:
    return {
        "stage": stage.name,
        "image": image,
        "recorded": recorded or "-",
        "now": now or "-",
        "drift": why,
    }


async def _recorded_and_current(
    client: RegistryClient, stage: Stage, repo: str
) -> tuple[dict[str, str], dict[str, str | None]]:
    """Per tag: the digest its newest record names, and the digest it points at now."""
    latest: dict[str, str] = {}
    for record in await history(client, repo):
        if record.is_for(stage.name, repo):
            for tag in record.tags:
                latest[tag] = record.digest
    tags = [t for t in await client.list_tags(repo) if not NOT_A_RELEASE.match(t)]
    now: dict[str, str | None] = {}
    for tag in set(tags) | set(latest):
        current = await client.head_manifest(repo, tag)
        now[tag] = current.digest if current else None
    return latest, now


async def _release_drift(
    pipeline: Pipeline, opened: dict[str, RegistryClient], catalog: list[str]
) -> list[dict[str, Any]]:
    """Every release of the first stage that a later stage holds part of (_partly)."""
    first = pipeline.stages[0]
    client = opened[first.registry]
    found: list[dict[str, Any]] = []
    for repo in _repositories(catalog, first):
        name = first.name_in(repo) or ""
        if not releases.is_release(name):
            continue
        for version in await client.list_tags(repo):
            if NOT_A_RELEASE.match(version):
                continue
            try:
                release = await releases.read(
                    pipeline, client, name.removeprefix(releases.RELEASES), version
                )
            except (BadInputError, UnsupportedContent):
                continue  # not a release index: nothing to hold part of
            for stage in pipeline.stages[1:]:
                found += await _partly(pipeline, opened[stage.registry], stage, release)
    return found


async def _partly(
    pipeline: Pipeline, client: RegistryClient, stage: Stage, release: releases.Release
) -> list[dict[str, Any]]:
    """The stage holds some of the release's members under their tags and not the others,
    where that means something: its promotion there began and never finished (the index is in
    the stage, unrecorded: a run stopped while it moved tags), or it is the stage's current
    release of that name (its record is the newest) and a member has moved since. A release
    superseded by a later one is that one's business (with one tag for every version, the later
    release moves the members' tags)."""
    index = pipeline.reference(stage, releases.RELEASES + release.name)
    if await client.head_manifest(index.repository, release.digest) is None:
        return []  # never promoted here (or refused before anything was copied)
    async with repository_lock(index):  # not while a promotion of it is landing
        held = await releases.holds(pipeline, client, stage, release)
        records = [
            r.digest
            for r in await history(client, index.repository)
            if r.is_for(stage.name, index.repository)
        ]
    if len(held) == len(release.members):
        return []
    if release.digest in records:
        if records[-1] != release.digest:
            return []
        what = "a member was moved since it was promoted"
    elif held:
        what = "a promotion stopped while it moved tags"
    else:
        return []  # copied by digest, no tag moved: refused or stopped before any moved
    missing = [m.name for m in release.members if m.name not in held]
    why = (
        f"holds {len(held)} of {len(release.members)} members of release"
        f" {release.name}:{release.version} (not {', '.join(missing)}): {what}; promote the"
        " release again"
    )
    tag = stage.tag_for(release.version, release.digest)
    return [_drift(stage, str(index.with_tag(tag)), release.digest, None, why)]


@flow(name="airlock-drift-watch")
async def drift_watch() -> list[dict[str, Any]]:
    """Check every stage tag against its latest promotion record; fail on any drift."""
    pipeline = load()
    drift: list[dict[str, Any]] = []
    checked = pipeline.stages[1:]  # the first stage is where CI pushes: airlock records nothing
    async with clients(pipeline, *pipeline.stages) as opened:
        catalogs = {alias: await client.catalog() for alias, client in opened.items()}
        for stage in checked:
            client = opened[stage.registry]
            drift += await _stage_drift(client, catalogs[stage.registry], pipeline, stage)
        first = pipeline.stages[0]
        drift += await _release_drift(pipeline, opened, catalogs[first.registry])
    if not drift:
        get_run_logger().info("no drift in %s", ", ".join(s.name for s in checked))
        return []
    await create_table_artifact(
        key="airlock-drift", table=drift, description="Stage tags that moved behind airlock's back"
    )
    for d in drift:
        emit_event(
            event=DRIFT_EVENT,
            resource={"prefect.resource.id": f"airlock.image.{d['image']}", **_labels(d)},
            payload=d,
        )
    first = drift[0]
    raise DriftDetected(
        f"{len(drift)} tag(s) drifted; first: {first['image']} {first['drift']}"
        f" (recorded {first['recorded']}, now {first['now']})"
    )


def _labels(d: dict[str, Any]) -> dict[str, str]:
    return {f"airlock.{k}": str(v) for k, v in d.items()}


def _scan_gate(pipeline: Pipeline, stage: Stage) -> GateConfig:
    """The stage's scan gate, else the nearest one before it (prod rarely rescans on its own
    policy: the policy that let the digest in is the one it must keep meeting)."""
    for s in reversed(pipeline.stages[: pipeline.stages.index(stage) + 1]):
        for gate in s.gates:
            if gate.gate.rescan:  # a kind whose verdict can change after promotion (scan)
                return gate
    raise BadInputError(f"no stage up to {stage.name} has a scan gate: nothing to rescan against")


@flow(name="airlock-rescan")
async def rescan(stage: str | None = None) -> list[dict]:
    """Judge the digests now in `stage` (default: the last) against their newest scan report."""
    pipeline = load()
    target = pipeline.stage(stage) if stage else pipeline.stages[-1]
    gate = _scan_gate(pipeline, target)
    host = pipeline.registries[target.registry].url
    results: list[dict[str, Any]] = []
    async with clients(pipeline, target) as opened:
        client = opened[target.registry]
        for repo in _repositories(await client.catalog(), target):
            digests: dict[str, list[str]] = {}
            for tag in await client.list_tags(repo):
                if not NOT_A_RELEASE.match(tag) and (d := await client.head_manifest(repo, tag)):
                    digests.setdefault(d.digest, []).append(tag)
            for digest, tags in sorted(digests.items()):
                try:
                    manifest = await client.get_manifest(repo, digest)
                except NotFound:  # deleted since the listing: nothing there to rescan
                    continue
                verdict = await gate.gate.judge(Candidate(client, repo, manifest), gate.policy)
                results.append(
                    {
                        "image": f"{host}/{repo}@{digest}",
                        "tags": ", ".join(tags),
                        "passed": verdict.passed,
                        "summary": verdict.summary,
                    }
                )
    await create_table_artifact(
        key="airlock-rescan", table=results, description=f"Rescan of {target.name}"
    )
    failed = [r for r in results if not r["passed"]]
    for r in failed:
        emit_event(
            event=RESCAN_EVENT,
            resource={"prefect.resource.id": f"airlock.image.{r['image']}", **_labels(r)},
            payload=r,
        )
    if failed:
        raise RescanFailed(
            f"{len(failed)} of {len(results)} digest(s) in {target.name} fail the scan gate now;"
            f" first: {failed[0]['image']}: {failed[0]['summary']}"
        )
    get_run_logger().info("%d digest(s) in %s still pass the scan gate", len(results), target.name)
    return results
