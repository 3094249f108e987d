"""The Prefect flows: promote one hop, run the whole pipeline, roll a stage back.

A hop resolves the digest in the previous stage's repository (no skipping stages) — once per run:
a run resumed or retried promotes the digest its first start resolved, or nothing — runs the
target stage's gates on evidence bound to that digest — concurrently, approval last — and only
then copies that digest with registry/ (with its evidence, never other images or records),
verifies it, and writes the promotion record naming the policy it was judged under. Promotions to
the same repository are serialised by a Prefect global concurrency limit. Re-promoting a digest
already there is an idempotent success; an immutable stage never has a tag moved. The pipeline
is the one the process was started with (flows/config.py: load), never a flow parameter.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import functools
import hashlib
from collections.abc import Awaitable, Callable
from typing import Any, ParamSpec, TypeVar

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.runtime import flow_run
from prefect.states import Failed, State

from flows import hops
from flows.approvals import asking, deployed, suspends, wait_for_approval
from flows.batch import batch_task
from flows.config import GateConfig, Pipeline, Stage, load
from flows.freeze import refuse_if_frozen
from flows.hops import Hop, PromotionRefused, artifact_key, clients, resolve
from flows.landing import (
    BOARD_KEY,
    Event,
    board,
    done_before,
    gate_row,
    land,
    lazy_prefect_tls,
    refuse_immutable,
    repository_lock,
    summary,
)
from flows.records import Approval, PromotionRecord, history, write_record
from gates.approval import name_problem
from gates.base import GateResult
from registry.client import RegistryClient
from registry.copy import copy_image
from registry.errors import AirlockError, BadInputError, RegistryError
from registry.manifest import Descriptor
from registry.reference import Reference, parse
from registry.version import __version__

__all__ = ["BOARD_KEY", "pipeline", "promote", "rollback"]
P = ParamSpec("P")
R = TypeVar("R")

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


def _gate_key(context: Any, parameters: dict[str, Any]) -> str:
    """One result per gate per flow run, target and digest: a run resumed after a suspended
    approval (or retried) runs the flow again from the top, and must not judge its gates again
    on evidence that may have changed — nor ever hand one hop's verdicts to another."""
    config, hop = parameters["config"], parameters["hop"]
    about = f"{config.model_dump_json()}\n{hop.target.name}"  # two scan gates; two images
    same = hashlib.sha256(about.encode()).hexdigest()[:16]
    run = context.task_run.flow_run_id
    return f"airlock-gate-{run}-{hop.digest.split(':', 1)[-1][:32]}-{config.kind}-{same}"


async def _judge(config: GateConfig, hop: Hop, client: RegistryClient) -> GateResult | State:
    """A gate that refuses ends its task Failed (red in the UI), its verdict still the data."""
    result = await hops.evaluate(config, hop, client)
    if result.passed:
        return result
    return Failed(message=f"{config.kind} gate {result.summary}", data=result)


# Each gate is a task of its own in the UI; its result is persisted for the run (see above).
evaluate_gate = task(
    name="gate",
    task_run_name="gate-{config.kind}",
    cache_key_fn=_gate_key,
    persist_result=True,
)(_judge)


async def _verdict(state: State) -> GateResult:
    value = await state.result(raise_on_failure=False)
    if isinstance(value, BaseException):  # the gate broke (not a refusal): the hop fails
        raise value
    return value


def failing_quietly(fn: Callable[P, Awaitable[R]]) -> Callable[P, Awaitable[R | State]]:
    """airlock's own errors (a refusal, bad input, a registry that says no) end the flow run
    Failed with their one-line message, without a Python traceback in the run's logs; callers
    still get the exception (Prefect raises a Failed state's data)."""

    @functools.wraps(fn)
    async def run(*args: P.args, **kwargs: P.kwargs) -> R | State:
        try:
            return await fn(*args, **kwargs)
        except AirlockError as e:
            return Failed(message=str(e), data=e)

    return run


async def _digest_of(hop_digest: str) -> str:
    return hop_digest


# The digest a run promotes, decided once: a run resumed after a suspension (or retried) gets the
# digest its first start resolved, whatever the tag says now — the gates and the approval were
# given for that digest, and it is the only one the run may promote.
bind_digest = task(
    name="bind-digest",
    cache_key_fn=lambda context, _: f"airlock-digest-{context.task_run.flow_run_id}",
    persist_result=True,
)(_digest_of)


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
    started = dt.datetime.now(dt.UTC)
    logger = get_run_logger()
    stage = pipeline.stage(to_stage)
    previous = pipeline.previous(stage)
    here, _ = pipeline.locate(parse(image))
    if requester is not None and (problem := name_problem(requester)):
        raise BadInputError(f"requester {requester!r}: {problem}")
    if requester is None and stage.asks_approval:
        raise BadInputError(
            f"{stage.name} has an approval gate: say who asks (requester), so that nobody"
            " approves their own promotion"
        )
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
        await refuse_if_frozen(stage.name)  # before anyone is asked to approve

        # gates that wait for people (approval) come last, and only if the others passed
        task_gates = [g for g in stage.gates if not g.gate.waits_for_people]
        states = await asyncio.gather(
            *(evaluate_gate(g, hop, src, return_state=True) for g in task_gates)
        )
        results = [await _verdict(s) for s in states]
        approvals: list[Approval] = []
        if all(r.passed for r in results):
            shown = await hops.earlier(hop, opened) if stage.asks_approval else []

            async def waiting(request: dict[str, Any]) -> None:
                await board(pipeline, opened, Event(hop, f"waiting for {asking(request)}"))

            for g in (g for g in stage.gates if g.gate.waits_for_people):
                verdict, approvals = await wait_for_approval(
                    g, hop, results, requester, shown, waiting
                )
                results.append(verdict)
        await _gate_table(hop, results)
        refused = [r for r in results if not r.passed]
        if refused:
            r = refused[0]
            why = f"refused: {r.gate} gate {r.summary}"
            await board(pipeline, opened, Event(hop, why, tuple(approvals)))
            raise PromotionRefused(f"{stage.name}: {r.gate} gate {r.summary}")

        async with repository_lock(hop.target):
            landed = await land(hop, src, dst, results, approvals, requester, signer, started)
        if landed is None:
            return summary(hop, "already there", None)
        await _summary_artifact(hop, landed.record, landed.digest)
        await board(pipeline, opened, Event(hop, "promoted", tuple(approvals)))
        return summary(hop, "promoted", landed.digest)


async def _gate_table(hop: Hop, results: list[GateResult]) -> None:
    if not results:
        return
    await create_table_artifact(
        table=[gate_row(r) for r in results],
        key=artifact_key("gates", hop),
        description=f"Gates for {hop.name} into {hop.stage.name} ({hop.digest[:19]})",
    )


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
            done = [
                m.done or {"refused": m.refused, "error": m.error}
                for m in await batch_task(
                    config, stage, [at[i] for i in moving], requester, max_concurrency
                )
            ]
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
) -> dict[str, Any]:
    """Re-point the stage's tag to the digest promoted there before the current one (or to `to`,
    if it ever passed this stage), and record the rollback."""
    started = dt.datetime.now(dt.UTC)
    config = load()
    st = config.stage(stage)
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
                to = _previous(promoted, now_at)
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
            target, source = ref.with_tag(tag), ref.with_digest(to)
            await copy_image(client, source, client, target, evidence_only=True)
            manifest = await client.get_manifest(ref.repository, to)
            record = PromotionRecord(
                kind="rollback",
                stage=st.name,
                image=image,
                digest=to,
                source=str(source),
                target=str(target.with_digest(to)),
                tags=[tag],
                requester=requester,
                policy=config.policy(st),
                flow_run_id=flow_run.id,
                flow_run_url=flow_run.ui_url,
                airlock_version=__version__,
                started_at=started,
                finished_at=dt.datetime.now(dt.UTC),
            )
            subject = Descriptor(manifest.media_type, to, len(manifest.raw))
            record_digest = await write_record(client, ref.repository, subject, record)
    return {
        "status": "rolled back",
        "stage": st.name,
        "target": str(target),
        "digest": to,
        "from": now_at,
        "record": record_digest,
    }


def _previous(promoted: list[str], current: str | None) -> str | None:
    """The digest promoted before `current` was (last) promoted: repeated rollbacks keep going
    back, never forward to a release that was rolled away from."""
    if current in promoted:
        before = promoted[: len(promoted) - 1 - promoted[::-1].index(current)]
    else:
        before = promoted
    earlier = [d for d in before if d != current]
    return earlier[-1] if earlier else None
