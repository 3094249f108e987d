"""One hop of a release: all its members into the stage, or none of them (#16).

A release (flows/releases.py) is promoted by the reference of its index, releases/NAME:VERSION,
in any stage: its digest is bound for the run, and every member is the digest the index lists,
under the tag the index gives it. Each member is a hop of its own — it must have passed the
previous stage (its record there, its VSA where that stage signs), and it is judged by the
stage's gates, all members at once — and the index is a hop too (its record in the previous
stage). One approval, of the index's digest, which names every member's digest, covers them all.

Landing, under the locks of every member's repository and the releases repository, taken at
once: whatever could refuse (an immutable tag, the release's VERSION taken, the stop switch,
the windows) is looked at again; every member and the index are copied by digest, with no tag
moved; only then does each member's tag move, with its record and VSA; the index's tag, its
record and one VSA naming every member come last. A failure before the tags move leaves none
moved; a run stopped while tags move (a worker killed) leaves some moved and the index untagged —
drift-watch reports the stage as holding part of the release, and a rerun finds the moved members
done and completes the rest.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Awaitable, Iterable
from dataclasses import replace
from typing import Any

from prefect import get_run_logger
from prefect.artifacts import create_markdown_artifact

from flows import releases
from flows.config import Pipeline, Stage
from flows.freeze import refuse_if_window_closed
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
from flows.records import history, previous_digest, records_for
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
        await _refuse_moving(dst, everything)
        await refuse_if_frozen_on_board(pipeline, opened, index)
        await wait_for_window_on_board(pipeline, opened, index)

        results = await _judge_release(stage.gates, members, src)
        approvals = await ask_people(pipeline, opened, index, results, requester, members)
        await gate_table(index, results)
        if refused := [r for r in results if not r.passed]:
            r = refused[0]
            await board(pipeline, opened, Event(index, f"refused: {r.label} gate {r.summary}"))
            raise PromotionRefused(
                f"{stage.name}: release {shown}: {r.label} gate {r.summary}; no member moved"
            )
        if stage.asks_approval:
            await wait_for_window_on_board(pipeline, opened, index)  # approval took long? again

        async with repository_lock(*(hop.target for hop in everything)):
            # everything that could refuse is looked at again before anything moves: a promotion
            # into the same repositories (an immutable tag taken meanwhile), the stop switch, the
            # windows — so no refusal comes after the first tag has moved
            await _refuse_moving(dst, everything)
            await refuse_if_frozen_on_board(pipeline, opened, index)
            refuse_if_window_closed(stage)
            await _every_one(_copy(src, dst, h, referrers=h is not index) for h in everything)
            await refuse_if_frozen_on_board(pipeline, opened, index)  # the copy may have been long
            asked = [r for r in results if r.member is None]  # the approval, for all

            async def tag(m: Hop) -> None:
                own = [r.model_copy(update={"member": None}) for r in results if r.member == m.name]
                await land(
                    m, src, dst, own + asked, approvals, requester, signer, started,
                    copied=True, part_of=shown,
                )  # fmt: skip

            # the members' tags side by side (each in its own repository); a run stopped here
            # leaves some moved: drift-watch reports it, a rerun completes it
            await _every_one(tag(m) for m in members)
            landed = await land(
                index, src, dst, results, approvals, requester, signer, started,
                copied=True, part_of=shown, members=members,
            )  # fmt: skip
        record = landed.digest if landed else None
        await _summary_artifact(index, members, record)
        events = [Event(h, "promoted", tuple(approvals)) for h in everything]
        await board(pipeline, opened, *events)
        return _summary(index, members, "promoted" if landed else "already there", record)


async def release_hops(
    pipeline: Pipeline, index: Hop, opened: dict[str, RegistryClient]
) -> list[Hop]:
    """Every member's hop into the index's stage, each by the digest the index lists and under
    the tag the index gives it (the stage's tag rule applied: never a tag taken from some other
    record of that digest), then the index's own hop (`index`). Each member must have passed the
    previous stage (resolve: its record there, its VSA where that stage signs); at the first
    hop, its tag in the first stage must still name its digest — an index pushed by hand cannot
    give a build another image's tag."""
    release = _release(pipeline, index)
    stage, previous = index.stage, index.previous
    first = pipeline.stages[0]

    async def one(m: releases.Member) -> Hop:
        at = pipeline.reference(previous, m.name)
        ref = at.with_tag(previous.tag_for(m.tag, m.digest)).with_digest(m.digest)
        hop = await resolve(pipeline, str(ref), stage.name, opened)
        if previous is first:
            named = await opened[first.registry].head_manifest(at.repository, m.tag)
            if named is None or named.digest != m.digest:
                now = named.digest if named else "nothing"
                raise PromotionRefused(
                    f"{stage.name}: release {release.name}:{release.version} lists"
                    f" {at.name}:{m.tag} as {m.digest}, but that tag names {now}; create a new"
                    " release version from the builds the tags name"
                )
        target = pipeline.reference(stage, m.name).with_tag(stage.tag_for(m.tag, m.digest))
        return replace(hop, release=m.tag, target=target, source=hop.source.with_tag(ref.tag))

    members = await asyncio.gather(*(one(m) for m in release.members))
    return [*members, index]


def _release(pipeline: Pipeline, index: Hop) -> releases.Release:
    """What the index says, as a release of the first stage (its name and VERSION: the tag it
    was created under, carried by the records of every stage it passed)."""
    if index.release is None:
        raise BadInputError(f"{index.source}: name the release by its version (releases/NAME:1.0)")
    name, version = releases.split_name(
        f"{index.name.removeprefix(releases.RELEASES)}:{index.release}"
    )  # one path component: releases/a/shop is not the release shop
    where = releases.release_reference(pipeline, name, version)
    return releases.of_index(pipeline, where, index.manifest)


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


async def _judge_release(
    gates: list[Any], members: list[Hop], src: RegistryClient
) -> list[GateResult]:
    """Every member's gates (not approval: that is asked once, for the release), all at once in
    one task (flows/gating.py); each verdict says which member it is about."""
    judged = [g for g in gates if not g.gate.waits_for_people]
    if not judged:
        return []
    state = await evaluate_members(judged, members, src, return_state=True)
    return await verdicts(state)


async def _copy(src: RegistryClient, dst: RegistryClient, hop: Hop, *, referrers: bool) -> None:
    """The hop's digest into its target repository by digest: no tag moves. A member's evidence
    travels with it, as with any promotion (records do not); the index travels without
    referrers — its entries' evidence is in the members' repositories, and its VSAs and records
    are each stage's own. The index's entries come from the previous stage's releases
    repository, where they are (a registry holds an index only with its entries)."""
    target = Reference(hop.target.registry, hop.target.repository, None, hop.digest)
    await copy_image(src, hop.source, dst, target, referrers=referrers, evidence_only=True)


async def _every_one(work: Iterable[Awaitable[None]]) -> None:
    """All of `work` side by side, each to its end even when another fails (the repositories'
    locks are held until the last is done), then the first failure raised."""
    failures = [e for e in await asyncio.gather(*work, return_exceptions=True) if e is not None]
    if failures:
        raise failures[0]


async def _refuse_moving(dst: RegistryClient, everything: list[Hop]) -> None:
    """Refuse before anything moves where a tag may not move: an immutable stage's, or the
    release's own VERSION in any stage whose tags keep versions apart (a release never changes:
    an index pushed by hand under an existing VERSION does not replace it). With one tag for
    every version (`tag: current`) the index's tag moves as the members' do."""
    index = everything[-1]
    currents = await asyncio.gather(*(_current(dst, h) for h in everything))
    for hop, current in zip(everything, currents, strict=True):
        refuse_immutable(hop, current)
    current = currents[-1]
    versioned = "{tag}" in index.stage.tag
    if versioned and current is not None and current.digest != index.digest:
        raise PromotionRefused(
            f"{index.stage.name}: {index.target} is release {current.digest} already; a release"
            " never changes (create a new version)"
        )


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
    promoted there before the current one (the newest record of the stage's releases/NAME),
    and write a rollback record for each member and for the release. Only where the stage's
    tag rule gives every version the same tags (e.g. `tag: current`): with one tag per version
    the earlier release's tags still point at its members. Members of the current release that
    the earlier one does not have are left as they are."""
    if "{tag}" in stage.tag or "{short}" in stage.tag:
        raise PromotionRefused(
            f"{stage.name} tags each version apart (tag: {stage.tag}): the earlier release's tags"
            " still name its members, so there is nothing to move back; deploy that version's"
            " tags"
        )
    started = dt.datetime.now(dt.UTC)
    index_repo = pipeline.reference(stage, releases.RELEASES + name)
    async with clients(pipeline, stage) as opened:
        client = opened[stage.registry]

        async def decide() -> tuple[str, str, releases.Release]:
            records = [
                r
                for r in await history(client, index_repo.repository)
                if r.is_for(stage.name, index_repo.repository)
            ]
            if not records:
                raise PromotionRefused(f"{stage.name}: release {name} was never promoted here")
            current = records[-1].digest
            earlier = previous_digest([r.digest for r in records if r.kind == "promotion"], current)
            if earlier is None:
                raise PromotionRefused(
                    f"{stage.name}: release {name} has no earlier release here to go back to"
                )
            version = next(r.release for r in reversed(records) if r.digest == earlier)
            where = releases.release_reference(pipeline, name, version or "latest")
            manifest = await client.get_manifest(index_repo.repository, earlier)
            return current, earlier, releases.of_index(pipeline, where, manifest)

        # which release to go back to decides which repositories to lock: decided first, then
        # again under all their locks, where it must come out the same
        async with repository_lock(index_repo):
            current, earlier, release = await decide()
        back = [
            (pipeline.reference(stage, m.name), m, stage.tag_for(m.tag, m.digest))
            for m in release.members
        ]
        part_of = f"{name}:{release.version}"
        async with repository_lock(*[ref for ref, _, _ in back], index_repo):
            if await decide() != (current, earlier, release):
                raise PromotionRefused(
                    f"{stage.name}: release {name} was promoted or rolled back meanwhile; run the"
                    " rollback again"
                )
            for ref, m, _ in back:  # every member passed this stage as part of that release
                passed = [
                    r
                    for r in await records_for(client, ref.repository, m.digest)
                    if r.is_for(stage.name, ref.repository) and r.part_of == part_of
                ]
                if not passed:
                    raise PromotionRefused(
                        f"{stage.name}: {ref.name}@{m.digest} has no {stage.name} record as part"
                        f" of {part_of}; refusing to roll to it"
                    )

            async def back_to(ref: Reference, image: str, digest: str, tag: str) -> str:
                return await put_back(
                    pipeline, client, stage, ref, image, digest, tag, requester, started, part_of
                )

            for ref, m, tag in back:
                await back_to(ref, m.name, m.digest, tag)
            tag = stage.tag_for(release.version, earlier)
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
