"""What every promotion run does with Prefect before it lands: each gate a task of its own (its
verdict persisted for the run), the digest bound at the run's first start, the gate table, and
airlock's own errors as a Failed state without a traceback. Shared by one image's hop
(flows/promote.py) and a release's (flows/release_hop.py).
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
from collections.abc import Awaitable, Callable
from typing import Any, ParamSpec, TypeVar

from prefect import task
from prefect.artifacts import create_table_artifact
from prefect.states import Failed, State

from flows import hops
from flows.approvals import asking, wait_for_approval
from flows.config import GateConfig, Pipeline
from flows.freeze import stage_notes
from flows.hops import Hop, artifact_key
from flows.landing import Event, board, gate_row
from flows.records import Approval
from gates.base import GateResult
from registry.client import RegistryClient
from registry.errors import AirlockError

P = ParamSpec("P")
R = TypeVar("R")


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


def _members_key(context: Any, parameters: dict[str, Any]) -> str:
    """As _gate_key, for all the gates of a release's members at once."""
    configs, members = parameters["configs"], parameters["members"]
    about = "\n".join(
        [*(c.model_dump_json() for c in configs), *(f"{m.target.name}@{m.digest}" for m in members)]
    )
    same = hashlib.sha256(about.encode()).hexdigest()[:32]
    return f"airlock-gates-{context.task_run.flow_run_id}-{same}"


def _members_run_name() -> str:
    """`gates of api, worker, chart`: the members, by name, as the run's task list shows it."""
    from prefect.runtime import task_run

    names = ", ".join(m.name for m in task_run.parameters["members"])
    return f"gates of {names}"[:120]


async def _judge_members(
    configs: list[GateConfig], members: list[Hop], client: RegistryClient
) -> list[GateResult] | State:
    """Every gate of every member of a release, all at once, each verdict naming its member; the
    task ends Failed (red) when one refuses, the verdicts still its data."""
    pairs = [(m, c) for m in members for c in configs]
    results = await asyncio.gather(*(hops.evaluate(c, m, client) for m, c in pairs))
    named = [
        r.model_copy(update={"member": m.name}) for (m, _), r in zip(pairs, results, strict=True)
    ]
    if refused := [r for r in named if not r.passed]:
        return Failed(message=f"{refused[0].label} gate {refused[0].summary}", data=named)
    return named


# One task for a release's gates, not one per gate: a release of ten members would be twenty
# task runs, each a few Prefect API writes that the server records while the release waits
# for its locks. Its verdicts are persisted for the run, as a gate's are; the gate table shows
# each member's.
evaluate_members = task(
    name="release-gates",
    task_run_name=_members_run_name,
    cache_key_fn=_members_key,
    persist_result=True,
)(_judge_members)


async def verdict(state: State) -> GateResult:
    value = await state.result(raise_on_failure=False)
    if isinstance(value, BaseException):  # the gate broke (not a refusal): the hop fails
        raise value
    return value


async def verdicts(state: State) -> list[GateResult]:
    """The release-gates task's verdicts, refused or not (as `verdict`)."""
    value = await state.result(raise_on_failure=False)
    if isinstance(value, BaseException):
        raise value
    return list(value)


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


async def gate_table(hop: Hop, results: list[GateResult]) -> None:
    if not results:
        return
    await create_table_artifact(
        table=[gate_row(r) for r in results],
        key=artifact_key("gates", hop),
        description=f"Gates for {hop.name} into {hop.stage.name} ({hop.digest[:19]})",
    )


async def ask_people(
    pipeline: Pipeline,
    opened: dict[str, RegistryClient],
    hop: Hop,
    results: list[GateResult],
    requester: str | None,
    members: list[Hop] | None = None,
) -> list[Approval]:
    """The stage's gates that wait for people (approval), asked only when every other gate
    passed (`results`, to which their verdicts are added); the decisions given. The request
    shows the earlier stages' records, the stage's windows and switch and, for a release, its
    `members`; while it waits, the stage board says so."""
    stage = hop.stage
    if not stage.asks_approval or not all(r.passed for r in results):
        return []
    earlier = await hops.earlier(hop, opened)
    notes = await stage_notes(stage)

    async def waiting(request: dict[str, Any]) -> None:
        await board(pipeline, opened, Event(hop, f"waiting for {asking(request)}"))

    approvals: list[Approval] = []
    for g in (g for g in stage.gates if g.gate.waits_for_people):
        decided, approvals = await wait_for_approval(
            g, hop, results, requester, earlier, waiting, members=members, stage_notes=notes
        )
        results.append(decided)
    return approvals
