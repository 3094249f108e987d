"""One hop for many images inside the pipeline's own flow run.

A flow run per image per hop, with a task run per gate and three artifacts, costs ~0.5 s of
Prefect API writes (bench/README.md) — many times the registry work of the hop. So where a stage
waits for nobody (no approval gate), the pipeline promotes all its images into it here: each
image resolved, judged and landed exactly as `promote` does it (the same checks, record and
VSA), the images concurrently, the target repositories locked in one acquisition, and one gate
table, one summary and one stage-board update for the whole batch, in one task run. A stage with
an approval gate is not a batch: an approval pauses a run, and has a form, of its own
(flows/promote.py: a `promote` subflow per image, or the pipeline run itself, suspended).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import re
from collections import defaultdict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from prefect import task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE

from flows import hops
from flows.config import Pipeline, Stage
from flows.freeze import refuse_if_frozen, wait_for_window
from flows.hops import Hop, PromotionRefused, clients, resolve
from flows.landing import (
    Event,
    Landed,
    board,
    done_before,
    gate_row,
    land,
    refuse_immutable,
    repository_lock,
    summary,
)
from gates.base import GateResult
from registry.reference import parse


@dataclass
class Moving:
    """One image of the batch: where it is, and what became of it in this hop."""

    image: str  # where it is now, by tag
    hop: Hop | None = None
    there: bool = False  # the target tag holds the digest already: maybe promoted before
    results: list[GateResult] = field(default_factory=list)
    done: dict[str, Any] | None = None  # the hop's summary, once promoted (or already there)
    refused: str | None = None
    error: str | None = None

    @property
    def open(self) -> bool:
        return self.done is None and self.refused is None and self.error is None


Work = Callable[[Moving], Awaitable[None]]


async def promote_batch(
    pipeline: Pipeline,
    stage: Stage,
    images: list[str],
    requester: str | None,
    max_concurrency: int,
) -> list[Moving]:
    """Promote every image one hop, into `stage` (which has no approval gate): returns, per
    image and in order, its summary or why it stopped. One image's refusal or error never stops
    another's."""
    started = dt.datetime.now(dt.UTC)
    batch = [Moving(image) for image in images]
    previous = pipeline.previous(stage)
    here = {pipeline.locate(parse(m.image))[0].name for m in batch}
    signer = await pipeline.signing_key(stage)  # a key that cannot be read refuses up front
    limit = asyncio.Semaphore(max_concurrency)

    async def each(work: Work, which: list[Moving]) -> None:
        async def one(m: Moving) -> None:
            async with limit:
                try:
                    await work(m)
                except PromotionRefused as e:
                    m.refused = str(e)
                except Exception as e:  # this image's hop failed; the others go on
                    m.error = f"{stage.name}: {e}"

        await asyncio.gather(*(one(m) for m in which if m.open))

    async def locked(work: Work, which: list[Moving]) -> None:
        """`work` under the locks of all the target repositories, taken at once; the images of
        one repository one after another (its history and referrer indexes are
        read-modify-write), repositories side by side."""
        which = [m for m in which if m.open and m.hop is not None]
        if not which:
            return
        queues: dict[str, list[Moving]] = defaultdict(list)
        for m in which:
            assert m.hop is not None
            queues[m.hop.target.name].append(m)
        async with repository_lock(*(m.hop.target for m in which if m.hop is not None)):
            for i in range(max(len(q) for q in queues.values())):
                await each(work, [q[i] for q in queues.values() if len(q) > i])

    stages = [pipeline.stage(name) for name in sorted(here)] + [previous, stage]
    async with clients(pipeline, *stages) as opened:
        src, dst = opened[previous.registry], opened[stage.registry]

        async def locate(m: Moving) -> None:
            m.hop = hop = await resolve(pipeline, m.image, stage.name, opened)
            current = await dst.head_manifest(hop.target.repository, hop.target.reference)
            m.there = current is not None and current.digest == hop.digest
            refuse_immutable(hop, current)

        async def check(m: Moving) -> None:
            assert m.hop is not None
            current = await dst.head_manifest(m.hop.target.repository, m.hop.target.reference)
            if await done_before(dst, m.hop, current):
                m.done = summary(m.hop, "already there", None)
            refuse_immutable(m.hop, current)

        async def judge(m: Moving) -> None:
            assert m.hop is not None
            m.results = list(
                await asyncio.gather(*(hops.evaluate(g, m.hop, src) for g in stage.gates))
            )
            if refused := [r for r in m.results if not r.passed]:
                m.refused = f"{stage.name}: {refused[0].gate} gate {refused[0].summary}"

        landed: dict[str, Landed] = {}

        async def admit(m: Moving) -> None:
            assert m.hop is not None
            done = await land(m.hop, src, dst, m.results, [], requester, signer, started)
            if done is None:
                m.done = summary(m.hop, "already there", None)
            else:
                landed[m.image] = done
                m.done = summary(m.hop, "promoted", done.digest)

        await each(locate, batch)
        try:  # the stop switch and the windows, once for all (land() looks again, locked)
            await refuse_if_frozen(stage.name)
            if any(m.open for m in batch):
                await wait_for_window(stage)
        except PromotionRefused as e:
            for m in batch:
                if m.open:
                    m.refused = str(e)
        await locked(check, [m for m in batch if m.there])
        await each(judge, batch)
        await locked(admit, batch)
        await _artifacts(stage, batch, landed)
        events = [Event(m.hop, s) for m in batch if m.hop is not None and (s := _status(m))]
        if events:
            await board(pipeline, opened, *events)
    return batch  # the refusals: in the pipeline run's final message, once


def _batch_run_name() -> str:
    """`into qa: 3 images`."""
    from prefect.runtime import task_run

    stage, images = task_run.parameters["stage"], task_run.parameters["images"]
    return f"into {stage.name}: {len(images)} image{'' if len(images) == 1 else 's'}"


# One task run per batch, so the pipeline run shows each hop it made: its state, time and logs.
# Nothing is cached or persisted: a run that starts again redoes the batch, and finds its
# images there already.
batch_task = task(
    name="batch", task_run_name=_batch_run_name, cache_policy=NO_CACHE, persist_result=False
)(promote_batch)


def _status(m: Moving) -> str:
    if m.refused:
        return f"refused: {m.refused.split(': ', 1)[-1]}"
    if m.done and m.done["status"] == "promoted":
        return "promoted"
    return ""


async def _artifacts(stage: Stage, batch: list[Moving], landed: dict[str, Landed]) -> None:
    """One table of every image's gates and one summary of what was promoted, per batch."""
    key = re.sub(r"[^a-z0-9]+", "-", stage.name.lower()).strip("-")
    judged = [m for m in batch if m.hop is not None and m.results]
    if judged:
        await create_table_artifact(
            table=[
                {"image": m.hop.name, "digest": m.hop.digest, **gate_row(r)}
                for m in judged
                if m.hop is not None
                for r in m.results
            ],
            key=f"airlock-gates-{key}-batch",
            description=f"Gates of {len(judged)} image(s) into {stage.name}",
        )
    if landed:
        lines = [f"## {len(landed)} image(s) promoted into {stage.name}", ""]
        lines += ["| image | digest (copied, never rebuilt) | to | record |", "|---|---|---|---|"]
        for m in batch:
            if m.image in landed and m.hop is not None:
                record = landed[m.image]
                lines.append(
                    f"| {m.hop.name} | `{m.hop.digest}` | `{record.record.target}` |"
                    f" `{record.digest}` |"
                )
        await create_markdown_artifact(
            markdown="\n".join(lines),
            key=f"airlock-promoted-{key}-batch",
            description=f"Promoted into {stage.name}",
        )
