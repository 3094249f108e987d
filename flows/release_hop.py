"""One hop of a release: all its members into the stage, or none of them (#16).

A release (flows/releases.py) is promoted by the reference of its index, releases/NAME:VERSION,
in any stage: its digest is bound for the run, and every member is the digest the index lists.
Each member is a hop of its own — resolved as `promote` resolves an image (it must have passed
the previous stage: its record there, its VSA where that stage signs), judged by the stage's
gates, concurrently with the other members — and the index is a hop too (its record in the
previous stage says the release passed there as one). One approval, of the index's digest, which
names every member's digest, covers them all.

Landing, under the locks of every member's repository and the releases repository, taken at
once: every member and the index are copied by digest, with no tag moved; only then does each
member's tag move, with its record and VSA; the index's tag, its record and one VSA naming
every member come last. A failure before the tags move leaves none moved; a run stopped while
tags move (a worker killed) leaves some moved and the index untagged — drift-watch reports the
stage as holding part of the release, and a rerun finds the moved members done and completes
the rest.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from typing import Any

from prefect import get_run_logger
from prefect.artifacts import create_markdown_artifact

from flows import releases
from flows.config import Pipeline, Stage
from flows.gating import ask_people, bind_digest, evaluate_members, gate_table, verdicts
from flows.hops import Hop, PromotionRefused, artifact_key, check_requester, clients, resolve
from flows.landing import (
    Event,
    board,
    done_before,
    land,
    put_back,
    refuse_if_frozen_on_board,
    refuse_immutable,
    repository_lock,
    wait_for_window_on_board,
)
from flows.records import history, previous_digest
from gates.base import GateResult
from registry.client import RegistryClient
from registry.copy import copy_image
from registry.errors import BadInputError
from registry.reference import Reference, parse


async def release_hop(
    pipeline: Pipeline, image: str, to_stage: str, requester: str | None, *, bind: bool
) -> dict[str, Any]:
    """Promote the release `image` (…/releases/NAME:VERSION, in any stage) into `to_stage`."""
    started = dt.datetime.now(dt.UTC)
    logger = get_run_logger()
    stage = pipeline.stage(to_stage)
    previous, first = pipeline.previous(stage), pipeline.stages[0]
    here, _ = pipeline.locate(parse(image))
    check_requester(stage, requester)
    signer = await pipeline.signing_key(stage)
    async with clients(pipeline, first, here, previous, stage) as opened:
        src, dst = opened[previous.registry], opened[stage.registry]
        index = await resolve(pipeline, image, to_stage, opened)
        digest = await bind_digest(index.digest) if bind else index.digest
        if digest != index.digest:  # resumed or retried: the tag has moved since the first start
            logger.warning("%s now names %s; this run promotes %s", image, index.digest, digest)
            index = await resolve(pipeline, str(parse(image).with_digest(digest)), to_stage, opened)
        release = _release(pipeline, index)
        shown = f"{release.name}:{release.version}"
        logger.info("%s: release %s -> %s", stage.name, shown, index.target)
        *members, _ = await release_hops(pipeline, index, opened)
        everything = [*members, index]

        if await _done(dst, everything):
            logger.info("%s already holds release %s: nothing to do", stage.name, shown)
            return _summary(index, members, "already there")
        for hop in everything:
            refuse_immutable(hop, await _current(dst, hop))
        await refuse_if_frozen_on_board(pipeline, opened, index)
        await wait_for_window_on_board(pipeline, opened, index)

        results = await _judge(stage.gates, members, src)
        approvals = await ask_people(pipeline, opened, index, results, requester, members)
        await gate_table(index, results)
        if refused := [r for r in results if not r.passed]:
            r = refused[0]
            await board(pipeline, opened, Event(index, f"refused: {r.label} gate {r.summary}"))
            raise PromotionRefused(
                f"{stage.name}: release {shown}: {r.label} gate {r.summary}; no member moved"
            )
        await wait_for_window_on_board(pipeline, opened, index)  # approval took long? again

        async with repository_lock(*(hop.target for hop in everything)):
            # the stop switch once for the whole release, before anything moves
            await refuse_if_frozen_on_board(pipeline, opened, index)
            await _copy_by_digest(src, dst, everything)
            asked = [r for r in results if r.member is None]  # the approval, for all

            async def tag(m: Hop) -> None:
                own = [r.model_copy(update={"member": None}) for r in results if r.member == m.name]
                await land(
                    m, src, dst, own + asked, approvals, requester, signer, started, release=shown
                )

            # the members' tags side by side (each in its own repository); a run stopped here
            # leaves some moved: drift-watch reports it, a rerun completes it
            await asyncio.gather(*(tag(m) for m in members))
            landed = await land(
                index,
                src,
                dst,
                results,
                approvals,
                requester,
                signer,
                started,
                release=shown,
                members=members,
            )
        record = landed.digest if landed else None
        await _summary_artifact(index, members, record)
        events = [Event(h, "promoted", tuple(approvals)) for h in everything]
        await board(pipeline, opened, *events)
        return _summary(index, members, "promoted" if landed else "already there", record)


async def release_hops(
    pipeline: Pipeline, index: Hop, opened: dict[str, RegistryClient]
) -> list[Hop]:
    """Every member's hop into the index's stage, each by the digest the index lists, then the
    index's own hop (`index`); `opened` holds a client of the first stage's registry too."""
    release = _release(pipeline, index)
    members = await asyncio.gather(
        *(
            resolve(pipeline, str(_in_first(release.where, m)), index.stage.name, opened)
            for m in release.members
        )
    )
    return [*members, index]


def _release(pipeline: Pipeline, index: Hop) -> releases.Release:
    """What the index says, as a release of the first stage (its name and VERSION: the tag it
    was created under, carried by the records of every stage it passed)."""
    if index.release is None:
        raise BadInputError(f"{index.source}: name the release by its version (releases/NAME:1.0)")
    name = index.name.removeprefix(releases.RELEASES)
    where = releases.release_reference(pipeline, name, index.release)
    return releases.of_index(pipeline, where, index.manifest)


def _in_first(where: Reference, member: releases.Member) -> Reference:
    """A member as named in the first stage: its repository, its tag there, the listed digest."""
    return Reference(where.registry, member.repository, member.tag, member.digest)


async def _current(dst: RegistryClient, hop: Hop) -> Any:
    return await dst.head_manifest(hop.target.repository, hop.target.reference)


async def _done(dst: RegistryClient, everything: list[Hop]) -> bool:
    """Whether every member and the index are there, each with its record (and VSA)."""
    currents = await asyncio.gather(*(_current(dst, h) for h in everything))
    if not all(
        c is not None and c.digest == h.digest for h, c in zip(everything, currents, strict=True)
    ):
        return False
    async with repository_lock(*(h.target for h in everything)):
        for h in everything:
            if not await done_before(dst, h, await _current(dst, h)):
                return False
    return True


async def _judge(gates: list[Any], members: list[Hop], src: RegistryClient) -> list[GateResult]:
    """Every member's gates (not approval: that is asked once, for the release), all members at
    once, a task per member; each verdict says which member it is about."""
    judged = [g for g in gates if not g.gate.waits_for_people]
    if not judged:
        return []
    state = await evaluate_members(judged, members, src, return_state=True)
    return await verdicts(state)


async def _copy_by_digest(src: RegistryClient, dst: RegistryClient, everything: list[Hop]) -> None:
    """Every member and the index, by digest, side by side: no tag moves. The index's entries
    come from the previous stage's releases repository, where they are (a registry holds an
    index only with its entries). A member's evidence travels with it, as with any promotion
    (records do not); the index travels without referrers — its entries' evidence is in the
    members' repositories already, and its own VSAs and records are each stage's, in that
    stage."""
    index = everything[-1]

    async def one(hop: Hop) -> None:
        target = Reference(hop.target.registry, hop.target.repository, None, hop.digest)
        await copy_image(
            src, hop.source, dst, target, referrers=hop is not index, evidence_only=True
        )

    await asyncio.gather(*(one(h) for h in everything))


def _summary(
    index: Hop, members: list[Hop], status: str, record: str | None = None
) -> dict[str, Any]:
    return {
        "status": status,
        "stage": index.stage.name,
        "image": index.name,
        "digest": index.digest,
        "source": str(index.source),
        "target": str(index.target.with_digest(index.digest)),
        "record": record,
        "published": None,
        "members": [
            {"image": m.name, "digest": m.digest, "target": str(m.target.with_digest(m.digest))}
            for m in members
        ],
    }


async def _summary_artifact(index: Hop, members: list[Hop], record: str | None) -> None:
    lines = [
        f"## Release {index.name.removeprefix(releases.RELEASES)}:{index.release} promoted into"
        f" {index.stage.name}",
        "",
        f"- release digest: `{index.digest}` (names every member's digest)",
        f"- to `{index.target}`",
        *([f"- release record: `{index.target.name}@{record}`"] if record else []),
        "",
        "| member | digest (copied, never rebuilt) | to |",
        "|---|---|---|",
        *(f"| {m.name} | `{m.digest}` | `{m.target}` |" for m in members),
    ]
    await create_markdown_artifact(
        markdown="\n".join(lines),
        key=artifact_key("promoted", index),
        description=f"{index.name} into {index.stage.name}",
    )


# ---------------------------------------------------------------------------- rollback


async def rollback_release(
    pipeline: Pipeline, stage: Stage, name: str, requester: str | None
) -> dict[str, Any]:
    """Put every member of the release NAME back, in `stage`, to the digests of the release
    promoted there before the current one: each member's tag moves back (where the stage's tag
    rule gives one tag for every version, e.g. `tag: current`), and a rollback record is written
    for each member and for the release. Members of the current release that the earlier one
    does not have are left as they are."""
    started = dt.datetime.now(dt.UTC)
    index_repo = pipeline.reference(stage, releases.RELEASES + name)
    async with clients(pipeline, stage) as opened:
        client = opened[stage.registry]
        records = [
            r for r in await history(client, index_repo.repository)
            if r.is_for(stage.name, index_repo.repository)
        ]  # fmt: skip
        if not records:
            raise PromotionRefused(f"{stage.name}: release {name} was never promoted here")
        current = records[-1].digest
        promoted = [r.digest for r in records if r.kind == "promotion"]
        earlier = previous_digest(promoted, current)
        if earlier is None:
            raise PromotionRefused(
                f"{stage.name}: release {name} has no earlier release here to go back to"
            )
        version = next(r.release for r in reversed(records) if r.digest == earlier)
        where = releases.release_reference(pipeline, name, version or "latest")
        manifest = await client.get_manifest(index_repo.repository, earlier)
        release = releases.of_index(pipeline, where, manifest)
        back = [
            (pipeline.reference(stage, m.name), m, stage.tag_for(m.tag, m.digest))
            for m in release.members
        ]
        everything = [ref for ref, _, _ in back] + [index_repo]
        part_of = f"{name}:{version}"

        async def back_to(ref: Reference, image: str, digest: str, tag: str) -> str:
            return await put_back(
                pipeline, client, stage, ref, image, digest, tag, requester, started, part_of
            )

        async with repository_lock(*everything):
            for ref, m, tag in back:
                await back_to(ref, m.name, m.digest, tag)
            tag = stage.tag_for(version, earlier)
            record = await back_to(index_repo, releases.RELEASES + name, earlier, tag)
    return {
        "status": "rolled back",
        "stage": stage.name,
        "target": str(index_repo.with_tag(tag)),
        "digest": earlier,
        "from": current,
        "record": record,
        "members": [{"image": m.name, "digest": m.digest} for _, m, _ in back],
    }
