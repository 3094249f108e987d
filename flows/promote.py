"""The Prefect flows: promote one hop, run the whole pipeline, roll a stage back.

A hop resolves the digest in the previous stage's repository (no skipping stages) — once per run:
a run resumed or retried promotes the digest its first start resolved, or nothing — runs the
target stage's gates on evidence bound to that digest — concurrently, approval last — and only
then copies that digest with registry/ (with its evidence, never other images or records),
verifies it, and writes the promotion record naming the policy it was judged under. Promotions to
the same repository are serialised by a Prefect global concurrency limit. Re-promoting a digest
already there is an idempotent success; an immutable stage never has a tag moved. The pipeline
is the one the process was started with (flows/config.py: load), never a flow parameter. A
release (…/releases/NAME:VERSION) is promoted by the same flows, all its members or none
(flows/release_hop.py).
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Awaitable
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.runtime import flow_run

from flows.approvals import deployed, suspends
from flows.batch import batch_task
from flows.config import Pipeline, Stage, load
from flows.gating import (
    ask_people,
    bind_digest,
    evaluate_gate,
    failing_quietly,
    gate_table,
    verdict,
)
from flows.hops import Hop, PromotionRefused, artifact_key, check_requester, clients, resolve
from flows.landing import (
    BOARD_KEY,
    Event,
    board,
    done_before,
    land,
    lazy_prefect_tls,
    put_back,
    refuse_if_frozen_on_board,
    refuse_immutable,
    repository_lock,
    summary,
    wait_for_window_on_board,
)
from flows.records import PromotionRecord, history, previous_digest
from flows.release_hop import release_hop, rollback_release
from flows.releases import is_release
from gates.approval import name_problem
from registry.errors import AirlockError, BadInputError, RegistryError
from registry.reference import Reference, is_path_component, parse

__all__ = ["BOARD_KEY", "pipeline", "promote", "rollback"]

lazy_prefect_tls()  # in every process that runs these flows


class PipelineRefused(PromotionRefused):
    """Some image stopped at a gate; `outcomes` says where every image got to."""

    def __init__(self, message: str, outcomes: list[dict[str, Any]]):
        super().__init__(message)
        self.outcomes = outcomes


class PipelineFailed(RegistryError):
    """Some image's hop failed (not a refusal); `outcomes` says where every image got to."""

    def __init__(self, message: str, outcomes: list[dict[str, Any]]):
        super().__init__(message)
        self.outcomes = outcomes


# ---------------------------------------------------------------------------- promote


def _shown(image: str, *, whole: bool = False) -> str:
    """`app:1.0 @ sha256:0123456789ab…` (`whole`: `staging/app:…`): what a person looks for in
    a list of runs, instead of a random name or a 100-character reference."""
    try:
        ref = parse(image)
        repo = ref.repository if whole else ref.repository.rsplit("/", 1)[-1]
        name = f"{repo}:{ref.tag}" if ref.tag else repo
        return f"{name} @ {ref.digest[:19]}…" if ref.digest else name
    except AirlockError:
        return image[:80]


def _pipeline_run_name() -> str:
    """`app:1.0 @ sha256:0123456789ab…` (and `+ 2 more`)."""
    images = flow_run.parameters.get("images") or []
    if not images:
        return "no images"
    return _shown(str(images[0])) + (f" + {len(images) - 1} more" if len(images) > 1 else "")


def _promote_run_name() -> str:
    """`promote staging/app:1.0 @ sha256:0123456789ab… to prod`."""
    image, to_stage = flow_run.parameters.get("image"), flow_run.parameters.get("to_stage")
    return f"promote {_shown(str(image), whole=True)} to {to_stage}"


@flow(name="airlock-promote", flow_run_name=_promote_run_name)
@failing_quietly
async def promote(image: str, to_stage: str, requester: str | None = None) -> dict[str, Any]:
    """Promote one image one hop, into `to_stage`, through that stage's gates. The pipeline is
    the one this process was started with (flows/config.py: load), never a run's choice.

    Args:
        image: The image where it is now, by the tag it was pushed under, e.g.
            registry.example.com/dev/app:1.0 (or @sha256:… after the tag).
        to_stage: The stage to promote it into: the one after the stage it is in.
        requester: Who asks for this promotion (your name). Required where the stage has an
            approval gate: nobody's approval of their own promotion counts.
    """
    return await _hop(load(), image, to_stage, requester, bind=deployed())


async def _hop(
    pipeline: Pipeline, image: str, to_stage: str, requester: str | None, *, bind: bool
) -> dict[str, Any]:
    """One hop in the flow run it is called from (`bind`: the run may start again from the top,
    so the digest it promotes is the one its first start resolved)."""
    here, name = pipeline.locate(parse(image))
    if is_release(name):
        return await release_hop(pipeline, image, to_stage, requester, bind=bind)
    started = dt.datetime.now(dt.UTC)
    logger = get_run_logger()
    stage = pipeline.stage(to_stage)
    previous = pipeline.previous(stage)
    check_requester(stage, requester)
    signer = await pipeline.signing_key(stage)  # a key that cannot be read refuses up front
    # Only the registries this hop touches: no other stage's credentials are read.
    async with clients(pipeline, here, previous, stage) as opened:
        src, dst = opened[previous.registry], opened[stage.registry]
        hop = await resolve(pipeline, image, to_stage, opened)
        # only a deployment's run can be resumed or retried (started again from the top)
        digest = await bind_digest(hop.digest) if bind else hop.digest
        if digest != hop.digest:  # resumed or retried: the tag has moved since the first start
            logger.warning(
                "%s now names %s; this run promotes %s, the digest it was started for",
                image,
                hop.digest,
                digest,
            )
            hop = await resolve(pipeline, str(parse(image).with_digest(digest)), to_stage, opened)
        logger.info("%s: %s -> %s", stage.name, hop.source, hop.target)

        current = await dst.head_manifest(hop.target.repository, hop.target.reference)
        if current is not None and current.digest == hop.digest:
            async with repository_lock(hop.target):
                done = await done_before(dst, hop, current)
            if done:
                logger.info("%s already holds %s: nothing to do", hop.target, hop.digest)
                return summary(hop, "already there", None)
        refuse_immutable(hop, current)
        await refuse_if_frozen_on_board(pipeline, opened, hop)  # before anyone is asked
        await wait_for_window_on_board(pipeline, opened, hop)

        # gates that wait for people (approval) come last, and only if the others passed
        task_gates = [g for g in stage.gates if not g.gate.waits_for_people]
        states = await asyncio.gather(
            *(evaluate_gate(g, hop, src, return_state=True) for g in task_gates)
        )
        results = [await verdict(s) for s in states]
        approvals = await ask_people(pipeline, opened, hop, results, requester)
        await gate_table(hop, results)
        refused = [r for r in results if not r.passed]
        if refused:
            r = refused[0]
            why = f"refused: {r.gate} gate {r.summary}"
            await board(pipeline, opened, Event(hop, why, tuple(approvals)))
            raise PromotionRefused(f"{stage.name}: {r.gate} gate {r.summary}")
        if stage.asks_approval:
            await wait_for_window_on_board(pipeline, opened, hop)  # approval took long? again

        async with repository_lock(hop.target):
            landed = await land(hop, src, dst, results, approvals, requester, signer, started)
        if landed is None:
            return summary(hop, "already there", None)
        await _summary_artifact(hop, landed.record, landed.digest)
        await board(pipeline, opened, Event(hop, "promoted", tuple(approvals)))
        return summary(hop, "promoted", landed.digest)


async def _summary_artifact(hop: Hop, record: PromotionRecord, record_digest: str) -> None:
    gates_md = "\n".join(f"- **{r.gate}**: {r.summary}" for r in record.gates) or "- (no gates)"
    approvals = ", ".join(a.shown for a in record.approvals) or "—"
    await create_markdown_artifact(
        markdown="\n".join(
            [
                f"## {hop.name} promoted into {hop.stage.name}",
                "",
                f"- digest: `{hop.digest}` (identical bytes: copied, never rebuilt)",
                f"- from `{hop.source}`",
                f"- to `{record.target}`",
                *([f"- customers pull `{record.published}`"] if record.published else []),
                f"- promotion record: `{hop.target.name}@{record_digest}`",
                f"- approvals: {approvals}",
                "",
                "### Gates",
                gates_md,
            ]
        ),
        key=artifact_key("promoted", hop),
        description=f"{hop.name} into {hop.stage.name}",
    )


# ---------------------------------------------------------------------------- pipeline


async def _digests_of(images: list[str]) -> list[str]:
    """Each image by its digest too (tag@digest), read where it is now; one not found stays as
    given (its first hop refuses it, naming where it looked)."""
    config = load()
    located = [(ref, config.locate(ref)[0]) for ref in map(parse, images)]
    async with clients(config, *{stage.name: stage for _, stage in located}.values()) as opened:

        async def one(ref: Reference, stage: Stage) -> str:
            if ref.digest or not ref.tag:
                return str(ref)
            found = await opened[stage.registry].head_manifest(ref.repository, ref.tag)
            return str(ref.with_digest(found.digest)) if found else str(ref)

        return list(await asyncio.gather(*(one(r, s) for r, s in located)))


# The digests a pipeline run promotes, decided at its first start (as `bind_digest` for one hop).
bind_digests = task(
    name="bind-digests",
    cache_key_fn=lambda context, _: f"airlock-digests-{context.task_run.flow_run_id}",
    persist_result=True,
)(_digests_of)


@flow(name="airlock-pipeline", flow_run_name=_pipeline_run_name)
@failing_quietly
async def pipeline(
    images: list[str],
    until: str | None = None,
    requester: str | None = None,
    max_concurrency: int = 4,
) -> list[dict[str, Any]]:
    """Every hop in order for each image (several at once); an image stops at its first refusal
    and the run fails naming the stage, gate and reason.

    Args:
        images: The images to promote, each where it is now by the tag it was pushed under,
            e.g. registry.example.com/dev/app:1.0.
        until: The last stage to promote into (default: the pipeline's last stage).
        requester: Who asks (your name; a push names its pusher, else "registry"). Nobody's
            approval of their own promotion counts.
        max_concurrency: How many images are promoted at once.
    """
    config = load()
    if until is not None:
        config.stage(until)
    if requester is not None and (problem := name_problem(requester)):
        raise BadInputError(f"requester {requester!r}: {problem}")
    if max_concurrency < 1:
        raise BadInputError(f"max_concurrency {max_concurrency}: give 1 or more")
    outcomes = [  # bad input fails before any hop runs
        {"image": image, "reached": config.locate(parse(image))[0].name, "refused": None}
        for image in images
    ]
    # where each image is now; a deployment's run may start again from the top (a resumed
    # approval, a Retry), so it holds on to the digests its first start found
    at = await bind_digests(images) if deployed() else list(images)
    last = config.stages.index(config.stage(until)) if until else len(config.stages) - 1
    for index in range(1, last + 1):
        stage = config.stages[index]
        moving = [
            i
            for i, o in enumerate(outcomes)
            if o["reached"] == config.stages[index - 1].name
            and not o["refused"]
            and not o.get("error")
        ]
        if not moving:
            continue
        if any(suspends(g) for g in stage.gates):
            done = await _in_turn(config, [at[i] for i in moving], stage.name, requester)
        elif stage.asks_approval:  # each waits in a run of its own (it pauses there)
            done = await _one_by_one(
                [at[i] for i in moving], stage.name, requester, max_concurrency
            )
        else:
            done = await _batched(
                config, [at[i] for i in moving], stage, requester, max_concurrency
            )
        for i, result in zip(moving, done, strict=True):
            if result.get("refused"):
                outcomes[i]["refused"] = result["refused"]
            elif result.get("error"):
                outcomes[i]["error"] = result["error"]
            else:
                outcomes[i].update(reached=stage.name, digest=result["digest"])
                at[i] = result["target"]  # the next hop starts here, with this digest

    # Every image runs to its own end: one image's failure never abandons another's hops.
    errors = [f"{o['image']}: {o['error']}" for o in outcomes if o.get("error")]
    refusals = [f"{o['image']}: {o['refused']}" for o in outcomes if o["refused"]]
    if errors:
        raise PipelineFailed("; ".join(errors + refusals), outcomes)
    if refusals:
        raise PipelineRefused("; ".join(refusals), outcomes)
    return outcomes


async def _in_turn(
    config: Pipeline, images: list[str], to_stage: str, requester: str | None
) -> list[dict[str, Any]]:
    """Each hop in the pipeline run itself, one image after another. An approval that may take
    long suspends this run (only a deployment's run can be suspended, and a subflow never is):
    no process waits, and on resume the run starts again from the top — the hops it finished
    are already there, the gates it judged are taken from the first start, and each wait gets
    back the decision given for it. One image waits at a time: a run has one suspension."""
    return [
        await _settled(_hop(config, image, to_stage, requester, bind=False), to_stage)
        for image in images
    ]


async def _batched(
    config: Pipeline, images: list[str], stage: Stage, requester: str | None, max_concurrency: int
) -> list[dict[str, Any]]:
    """The images in one batch (flows/batch.py); a release — all its members or none — in a
    hop of its own, in this run."""
    whole = {i for i, image in enumerate(images) if is_release(config.locate(parse(image))[1])}
    batch = [image for i, image in enumerate(images) if i not in whole]
    moved = await batch_task(config, stage, batch, requester, max_concurrency) if batch else []
    done = iter([m.done or {"refused": m.refused, "error": m.error} for m in moved])
    return [
        await _settled(_hop(config, image, stage.name, requester, bind=False), stage.name)
        if i in whole
        else next(done)
        for i, image in enumerate(images)
    ]


async def _one_by_one(
    images: list[str], to_stage: str, requester: str | None, max_concurrency: int
) -> list[dict[str, Any]]:
    """A `promote` run per image (several at once): its summary, or why it stopped."""
    limit = asyncio.Semaphore(max_concurrency)

    async def one(image: str) -> dict[str, Any]:
        async with limit:
            hop = promote(image=image, to_stage=to_stage, requester=requester)
            return await _settled(hop, to_stage)

    return list(await asyncio.gather(*(one(i) for i in images)))


async def _settled(hop: Awaitable[dict[str, Any]], to_stage: str) -> dict[str, Any]:
    """A hop's summary, or why it stopped: one image's refusal or error never stops another's."""
    try:
        return await hop
    except PromotionRefused as e:
        return {"refused": str(e)}
    except Exception as e:
        return {"error": f"{to_stage}: {e}"}


# ---------------------------------------------------------------------------- rollback


@flow(name="airlock-rollback", flow_run_name="rollback {stage}")
@failing_quietly
async def rollback(
    stage: str,
    image: str = "",
    to: str | None = None,
    tag: str | None = None,
    requester: str | None = None,
    release: str | None = None,
) -> dict[str, Any]:
    """Re-point the stage's tag to the digest promoted there before the current one (or to `to`,
    if it ever passed this stage), and record the rollback. With `release` (a release's NAME):
    every member of that release back to the release promoted before the current one."""
    started = dt.datetime.now(dt.UTC)
    config = load()
    st = config.stage(stage)
    if release is not None:
        if image or to or tag:
            raise BadInputError("--release rolls a whole release back: no --image, --to or --tag")
        if not is_path_component(release):
            raise BadInputError(
                f"--release {release!r}: a release's NAME, as `airlock release create` took it"
            )
        return await rollback_release(config, st, release, requester)
    if is_release(image):
        raise BadInputError(f"{image} is a release: roll it back with --release NAME")
    if "{name}" in st.repository and not image:
        raise BadInputError(f"{st.name} holds several images ({st.repository}): pass --image")
    ref = config.reference(st, image)
    async with clients(config, st) as opened:
        client = opened[st.registry]
        async with repository_lock(ref):
            everything = await history(client, ref.repository)
            records = [r for r in everything if r.is_for(st.name, ref.repository)]
            if not records:
                raise PromotionRefused(f"{st.name}: nothing was ever promoted into {ref}")
            tag = tag or (records[-1].tags[0] if records[-1].tags else None)
            if not tag:
                raise PromotionRefused(f"{st.name}: no tag known to roll back; pass --tag")
            current = await client.head_manifest(ref.repository, tag)
            now_at = current.digest if current else None
            promoted = [r.digest for r in records if r.kind == "promotion" and tag in r.tags]
            if to is None:
                to = previous_digest(promoted, now_at)
                if to is None:
                    raise PromotionRefused(
                        f"{st.name}: {ref}:{tag} has no earlier promotion to go back to"
                    )
            elif to == now_at:
                raise PromotionRefused(f"{st.name}: {ref}:{tag} already points at {to}")
            elif to not in promoted:
                raise PromotionRefused(
                    f"{st.name}: {to} never passed {st.name}'s gates into {ref}:{tag};"
                    " refusing to roll to it"
                )
            record_digest = await put_back(
                config, client, st, ref, image, to, tag, requester, started
            )
    return {
        "status": "rolled back",
        "stage": st.name,
        "target": str(ref.with_tag(tag)),
        "digest": to,
        "from": now_at,
        "record": record_digest,
    }
