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
import json
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager, suppress
from typing import Any, ParamSpec, TypeVar

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.concurrency.asyncio import concurrency
from prefect.runtime import flow_run
from prefect.states import Failed, State

from flows import hops
from flows.approvals import asking, deployed, wait_for_approval
from flows.config import GateConfig, Pipeline, load
from flows.hops import Hop, PromotionRefused, artifact_key, clients, resolve
from flows.records import Approval, PromotionRecord, history, recorded, write_record
from gates import vsa
from gates.approval import name_problem
from gates.base import GateResult
from registry.client import RegistryClient
from registry.copy import copy_image
from registry.errors import AirlockError, BadInputError, RegistryError
from registry.manifest import Descriptor
from registry.reference import Reference, parse
from registry.version import __version__

BOARD_KEY = "airlock-stage-board"
P = ParamSpec("P")
R = TypeVar("R")


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
    """One result per gate per flow run and digest: a run resumed after a suspended approval (or
    retried) runs the flow again from the top, and must not judge its gates again on evidence
    that may have changed — nor ever hand one digest's verdicts to another."""
    config, hop = parameters["config"], parameters["hop"]
    same = hashlib.sha256(config.model_dump_json().encode()).hexdigest()[:16]  # two scan gates
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


def _limit_name(target: Reference) -> str:
    """A global concurrency limit per target repository (no '/' allowed in names).

    Per repository, not only per tag: a repository's history and its referrers' fallback indexes
    are read-modify-write, and registries offer no conditional writes, so two promotions into one
    repository — even under different tags — must not interleave their writes.
    """
    readable = re.sub(r"[^a-zA-Z0-9_-]+", "_", target.repository)[:60]
    return f"airlock-{readable}-{hashlib.sha256(target.name.encode()).hexdigest()[:10]}"


async def _ensure_limit(name: str) -> None:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import (
        GlobalConcurrencyLimitCreate,
        GlobalConcurrencyLimitUpdate,
    )
    from prefect.exceptions import ObjectAlreadyExists, ObjectNotFound

    async with get_client() as client:
        try:
            limit = await client.read_global_concurrency_limit_by_name(name)
        except ObjectNotFound:
            with suppress(ObjectAlreadyExists):  # another promotion created it meanwhile
                await client.create_global_concurrency_limit(
                    GlobalConcurrencyLimitCreate(name=name, limit=1)
                )
            return
        if not limit.active or limit.limit != 1:
            # An inactive limit admits everyone: serialisation would silently disappear.
            await client.update_global_concurrency_limit(
                name, GlobalConcurrencyLimitUpdate(limit=1, active=True)
            )


@asynccontextmanager
async def repository_lock(ref: Reference) -> AsyncIterator[None]:
    """Hold the repository's limit: no promotion or rollback writes to it meanwhile (and a
    reader — drift-watch — never sees a tag moved before its record is written)."""
    name = _limit_name(ref)
    await _ensure_limit(name)
    async with concurrency(name, occupy=1, strict=True):
        yield


@flow(name="airlock-promote", flow_run_name="promote {image} to {to_stage}")
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
    started = dt.datetime.now(dt.UTC)
    logger = get_run_logger()
    pipeline = load()
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
        digest = await bind_digest(hop.digest) if deployed() else hop.digest
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
                done = await _done_before(dst, hop, current)
            if done:
                logger.info("%s already holds %s: nothing to do", hop.target, hop.digest)
                return _summary(hop, "already there", None)
        _refuse_immutable(hop, current)

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
                await _board(pipeline, hop, opened, f"waiting for {asking(request)}")

            for g in (g for g in stage.gates if g.gate.waits_for_people):
                verdict, approvals = await wait_for_approval(
                    g, hop, results, requester, shown, waiting
                )
                results.append(verdict)
        await _gate_table(hop, results)
        refused = [r for r in results if not r.passed]
        if refused:
            r = refused[0]
            await _board(pipeline, hop, opened, f"refused: {r.gate} gate {r.summary}", approvals)
            raise PromotionRefused(f"{stage.name}: {r.gate} gate {r.summary}")

        async with repository_lock(hop.target):
            current = await dst.head_manifest(hop.target.repository, hop.target.reference)
            if await _done_before(dst, hop, current):
                return _summary(hop, "already there", None)
            _refuse_immutable(hop, current)
            copied = await copy_image(
                src, hop.source, dst, hop.target, no_clobber=stage.immutable, evidence_only=True
            )
            for warning in copied.warnings:
                logger.warning("%s", warning)
            record = PromotionRecord(
                stage=stage.name,
                image=hop.name,
                digest=hop.digest,
                source=str(hop.source),
                target=str(hop.target.with_digest(hop.digest)),
                tags=[hop.target.tag or ""],
                release=hop.release,
                published=stage.published(hop.name, hop.target.tag),
                gates=results,
                approvals=approvals,
                requester=requester,
                policy=pipeline.policy(stage),
                flow_run_id=flow_run.id,
                flow_run_url=flow_run.ui_url,
                airlock_version=__version__,
                started_at=started,
                finished_at=dt.datetime.now(dt.UTC),
            )
            subject = Descriptor(hop.manifest.media_type, hop.digest, len(hop.manifest.raw))
            record_digest = await write_record(dst, hop.target.repository, subject, record)
            if signer is not None:
                written = await vsa.write(
                    dst,
                    hop.target.repository,
                    subject,
                    hop.target.name,
                    _vsa_predicate(pipeline, hop, results, record_digest),
                    signer,
                )
                logger.info("%s VSA signed by %s: %s", stage.name, signer.short_id, written.bundle)
        await _summary_artifact(hop, record, record_digest)
        await _board(pipeline, hop, opened, "promoted", approvals)
        return _summary(hop, "promoted", record_digest)


def _vsa_predicate(
    pipeline: Pipeline, hop: Hop, results: list[GateResult], record_digest: str
) -> dict[str, Any]:
    """What the stage verified, as a VSA: every piece of evidence its gates read and the
    promotion record (which holds the approvals), by digest."""
    policy = pipeline.policy(hop.stage)
    target = hop.target.with_digest(hop.digest)
    inputs = [(e.source, e.digest) for r in results for e in r.evidence]
    inputs.append((f"{target.name}@{record_digest}", record_digest))
    return vsa.predicate(
        stage=hop.stage.name,
        resource_uri=str(target),
        policy_uri=f"file://{policy.file}#stages.{hop.stage.name}",
        policy_digest=f"sha256:{policy.sha256}",
        inputs=inputs,
        passed=True,
        version=__version__,
        verified_at=dt.datetime.now(dt.UTC),
    )


async def _done_before(dst: RegistryClient, hop: Hop, current: Descriptor | None) -> bool:
    """Whether this hop was promoted already: the tag holds the digest *and* this stage's record
    of it exists (under the repository's lock: a record missing from the history is added).
    A tag moved by a promotion that failed before writing its record is not done: the hop runs
    again (its copy finds everything there) and writes the record."""
    if current is None or current.digest != hop.digest:
        return False
    if await recorded(dst, hop.target.repository, hop.digest, hop.stage.name) and (
        await _vsa_written(dst, hop)
    ):
        return True
    get_run_logger().warning(
        "%s holds %s but has no %s record of it (an earlier promotion failed after moving the"
        " tag): judging the gates again and writing the record",
        hop.target,
        hop.digest,
        hop.stage.name,
    )
    return False


async def _vsa_written(dst: RegistryClient, hop: Hop) -> bool:
    """Whether the stage's VSA is there, where the stage signs and names its public key (a hop
    whose VSA write failed after its record is not done: it runs again)."""
    trusted = hop.pipeline.public_keys(hop.stage)
    if hop.stage.signing_key is None or not trusted:
        return True
    repo = hop.target.repository
    return (await vsa.check(dst, repo, hop.digest, hop.stage.name, trusted)).verified


def _refuse_immutable(hop: Hop, current: Descriptor | None) -> None:
    if current is not None and current.digest != hop.digest and hop.stage.immutable:
        raise PromotionRefused(
            f"{hop.stage.name}: {hop.target} already points at {current.digest} and the stage is"
            " immutable; tags there never move (promote under a new tag)"
        )


def _summary(hop: Hop, status: str, record: str | None) -> dict[str, Any]:
    return {
        "status": status,
        "stage": hop.stage.name,
        "image": hop.name,
        "digest": hop.digest,
        "source": str(hop.source),
        "target": str(hop.target.with_digest(hop.digest)),
        "record": record,
        "published": hop.stage.published(hop.name, hop.target.tag),
    }


async def _gate_table(hop: Hop, results: list[GateResult]) -> None:
    if not results:
        return
    await create_table_artifact(
        table=[
            {
                "gate": r.gate,
                "passed": r.passed,
                "summary": r.summary,
                "evidence": ", ".join(e.source for e in r.evidence),
            }
            for r in results
        ],
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


async def _board(
    pipeline: Pipeline,
    hop: Hop,
    opened: dict[str, RegistryClient],
    status: str,
    approvals: list[Approval] | None = None,
) -> None:
    """The stage board (a stable artifact key): one row per image, release and stage — the
    digest really under the stage's tag, and for this hop's stage what happened (promoted,
    waiting for approval, refused: why), when, who approved, and the run. Other rows are kept
    (a row of another stage keeps its story while its tag holds the same digest); the board is
    read-modify-write, so concurrent hops take turns. The hop's clients (`opened`) are reused;
    a stage whose registry this process cannot read (no credentials here) shows "?"."""
    from prefect.artifacts import Artifact

    release = hop.release or hop.target.tag or ""
    now = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    fresh = {}
    for stage in pipeline.stages:
        ref = pipeline.reference(stage, hop.name)
        tag = stage.tag_for(hop.release, hop.digest)
        try:
            if stage.registry in opened:
                current = await opened[stage.registry].head_manifest(ref.repository, tag)
            else:
                async with clients(pipeline, stage) as other:
                    current = await other[stage.registry].head_manifest(ref.repository, tag)
            digest = current.digest if current else "—"
        except AirlockError:
            digest = "?"
        fresh[stage.name] = {
            "image": hop.name,
            "release": release,
            "stage": stage.name,
            "tag": tag,
            "digest": digest,
            "status": "",
            "when": "",
            "approved by": "",
            "run": "",
        }
    fresh[hop.stage.name].update(
        {
            "status": status,
            "when": now,
            "approved by": ", ".join(a.shown for a in approvals or []),
            "run": flow_run.ui_url or "",
        }
    )
    order = {s.name: i for i, s in enumerate(pipeline.stages)}
    await _ensure_limit(BOARD_KEY)
    async with concurrency(BOARD_KEY, occupy=1, strict=True):
        latest = await Artifact.aget(BOARD_KEY)
        try:
            rows = [r for r in (json.loads(latest.data) if latest else []) if _row_ok(r)]
        except (TypeError, ValueError, AttributeError):
            rows = []  # an unreadable board is rebuilt from this image on
        mine = {
            r["stage"]: r for r in rows if (r["image"], r.get("release", "")) == (hop.name, release)
        }
        for name, row in fresh.items():
            before = mine.get(name)
            if name != hop.stage.name and before and before.get("digest") == row["digest"]:
                fresh[name] = {**row, **{k: before.get(k, "") for k in _STORY}}
        kept = [r for r in rows if (r["image"], r.get("release", "")) != (hop.name, release)]
        await create_table_artifact(
            table=sorted(
                kept + list(fresh.values()),
                key=lambda r: (str(r["image"]), str(r.get("release")), order.get(r["stage"], 99)),
            ),
            key=BOARD_KEY,
            description="Every image's release in every stage: the digest under the stage's tag,"
            " the last promotion's outcome, when, who approved, the run",
        )


_STORY = ("status", "when", "approved by", "run")  # what a board row says of its last event


def _row_ok(row: Any) -> bool:
    return isinstance(row, dict) and {"image", "stage"} <= row.keys()


# ---------------------------------------------------------------------------- pipeline


def _pipeline_run_name() -> str:
    """`app:1.0 @ sha256:0123456789ab…` (and `+ 2 more`): what a person looks for in a list of
    runs, instead of a random name."""
    images = flow_run.parameters.get("images") or []
    if not images:
        return "no images"
    try:
        ref = parse(str(images[0]))
        name = f"{ref.repository.rsplit('/', 1)[-1]}:{ref.tag}" if ref.tag else ref.repository
        shown = f"{name} @ {ref.digest[:19]}…" if ref.digest else name
    except AirlockError:
        shown = str(images[0])[:80]
    return shown + (f" + {len(images) - 1} more" if len(images) > 1 else "")


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
    for image in images:
        config.locate(parse(image))  # bad input fails before any hop runs
    limit = asyncio.Semaphore(max_concurrency)

    async def one(image: str) -> dict[str, Any]:
        async with limit:
            ref = parse(image)
            here, _ = config.locate(ref)
            reached: dict[str, Any] = {"image": image, "reached": here.name, "refused": None}
            for stage in config.stages[config.stages.index(here) + 1 :]:
                try:
                    done = await promote(image=image, to_stage=stage.name, requester=requester)
                except PromotionRefused as e:
                    reached["refused"] = str(e)
                    return reached
                except Exception as e:
                    reached["error"] = f"{stage.name}: {e}"
                    return reached
                reached.update(reached=stage.name, digest=done["digest"])
                image = done["target"].split("@", 1)[0]  # the next hop starts here
                if stage.name == until:
                    break
            return reached

    # Every image runs to its own end: one image's failure never abandons another's hops.
    outcomes = list(await asyncio.gather(*(one(i) for i in images)))
    errors = [f"{o['image']}: {o['error']}" for o in outcomes if o.get("error")]
    refusals = [f"{o['image']}: {o['refused']}" for o in outcomes if o["refused"]]
    if errors:
        raise PipelineFailed("; ".join(errors + refusals), outcomes)
    if refusals:
        raise PipelineRefused("; ".join(refusals), outcomes)
    return outcomes


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
