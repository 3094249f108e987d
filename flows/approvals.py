"""Waiting for people: the approval request, the Resume form, and decisions that are kept.

When a hop's approval gate waits, its flow run pauses — or, from a deployment with a long
timeout, suspends — for an `ApprovalRunInput` (the Prefect UI's Resume form; `airlock approve`
sends the same). What makes that hold against an insider:
- the request is bound to one digest: the form names it, an approval of another digest does not
  count, and the hop promotes exactly that digest (flows/promote.py binds it at the start);
- every decision is stored before it is acted on, as a flow run input of the request's root run
  (the promote run, or the pipeline run whose hop it is), and read back on every start: Prefect's
  Retry forgets its own pause inputs, so without this a Retry of a rejected run — or of the
  pipeline run around it — would ask again, and a second answer would promote;
- what is asked (image, digest, stages, requester, deadline, policy) is stored on the waiting run
  too, for `airlock approve` to show and to bind its decision to.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import hashlib
import math
import uuid
from dataclasses import dataclass
from typing import Any

from prefect import get_run_logger
from prefect.exceptions import FlowPauseTimeout
from prefect.flow_runs import pause_flow_run, suspend_flow_run
from prefect.input import RunInput

import gates.approval
from flows.config import GateConfig
from flows.hops import Hop
from flows.records import Approval
from gates.approval import ApprovalInput
from gates.base import GateResult
from gates.common import duration_text

APPROVAL_POLL_SECONDS = 2
PAUSE_MARGIN_SECONDS = 30
# From a deployment, an approval that may take longer than this suspends the run (no process
# waits; a worker picks it up again on resume) instead of pausing it.
SUSPEND_AFTER = dt.timedelta(minutes=10)
REQUEST_KEY = "airlock-approval-request"  # on the waiting run: what it asks for
DECISION_PREFIX = "airlock-decision-"  # on the root run: one input per decision given
_EPOCH = dt.datetime.min.replace(tzinfo=dt.UTC)
PAGE = 200  # decisions read per request to the server
_FIELDS = set(ApprovalInput.model_fields)  # what a Resume form's answer holds of a decision


class ApprovalRunInput(RunInput, ApprovalInput):
    """What the Prefect UI's Resume form asks for (and `airlock approve` sends)."""


@dataclass(frozen=True)
class Decisions:
    """The decisions given on one request: promoting `digest` into `target` for `stage`, asked
    by the root run `root` (keys are lowercase letters, digits and dashes: Prefect's rule)."""

    root: uuid.UUID
    key: str

    @classmethod
    async def of(cls, hop: Hop) -> Decisions:
        about = f"{hop.stage.name}\n{hop.target.name}\n{hop.digest}".encode()
        key = f"{DECISION_PREFIX}{hashlib.sha256(about).hexdigest()[:24]}-"
        return cls(await _root_run_id(), key)

    async def read(self) -> list[tuple[ApprovalInput, Approval]]:
        """Every decision stored so far, oldest first (all of them: a rejection missed would
        let a Retry ask again, so the listing is read page by page)."""
        from prefect.input.actions import afilter_flow_run_input

        stored: list[Any] = []
        while True:
            page = await afilter_flow_run_input(
                key_prefix=self.key,
                limit=PAGE,
                exclude_keys={i.key for i in stored},
                flow_run_id=self.root,
            )
            stored += page
            if len(page) < PAGE:
                break
        out = []
        for item in sorted(stored, key=lambda i: (i.created or _EPOCH, i.key)):
            value = item.decoded_value
            given = ApprovalInput.model_validate(value["input"])
            out.append((given, _approval(given, dt.datetime.fromisoformat(value["at"]))))
        return out

    async def store(self, given: ApprovalInput) -> Approval:
        from prefect.input.actions import acreate_flow_run_input

        at = dt.datetime.now(dt.UTC)
        value = {"input": given.model_dump(mode="json"), "at": at.isoformat()}
        key = f"{self.key}{uuid.uuid4().hex}"
        await acreate_flow_run_input(key=key, value=value, flow_run_id=self.root)
        return _approval(given, at)


def _approval(given: ApprovalInput, at: dt.datetime) -> Approval:
    return Approval(
        decision=given.decision,
        approver=given.approver,
        digest=given.digest,
        comment=given.comment,
        at=at,
    )


async def _root_run_id() -> uuid.UUID:
    """The run at the top of this one: a hop of a pipeline run is a subflow, and a Retry of the
    pipeline run starts new subflows — the decisions must outlive them."""
    from prefect.client.orchestration import get_client
    from prefect.context import FlowRunContext

    context = FlowRunContext.get()
    assert context is not None and context.flow_run is not None
    run = context.flow_run
    async with get_client() as client:
        while run.parent_task_run_id is not None:
            parent = await client.read_task_run(run.parent_task_run_id)
            if parent.flow_run_id is None:
                break
            run = await client.read_flow_run(parent.flow_run_id)
    return run.id


async def read_request(run_id: uuid.UUID) -> dict[str, Any] | None:
    """What a waiting run asks to be approved (None if it asks nothing)."""
    from prefect.input.actions import aread_flow_run_input

    value = await aread_flow_run_input(key=REQUEST_KEY, flow_run_id=run_id)
    return value if isinstance(value, dict) else None


async def _publish(request: dict[str, Any]) -> None:
    from prefect.exceptions import PrefectHTTPStatusError
    from prefect.input.actions import acreate_flow_run_input, adelete_flow_run_input

    with contextlib.suppress(PrefectHTTPStatusError):  # 404: asked for the first time
        await adelete_flow_run_input(key=REQUEST_KEY)  # a Retry asks again, maybe until later
    await acreate_flow_run_input(key=REQUEST_KEY, value=request)


async def wait_for_approval(
    config: GateConfig, hop: Hop, results: list[GateResult], requester: str | None
) -> tuple[GateResult, list[Approval]]:
    """Wait until the approval policy is met, a decision rejects, or the timeout passes."""
    policy = config.policy_model()
    decisions = await Decisions.of(hop)
    given = await decisions.read()
    inputs = [g for g, _ in given]
    approvals = [a for _, a in given]
    suspend = deployed() and config.timeout >= SUSPEND_AFTER
    deadline = _started(suspend) + config.timeout
    asked = False
    while True:
        verdict = gates.approval.evaluate(inputs, policy, requester, hop.digest)
        if verdict.passed or any(a.decision == "reject" for a in inputs):
            return verdict, approvals
        left = (deadline - dt.datetime.now(dt.UTC)).total_seconds()
        if left <= 0:
            break
        if not asked:
            await _publish(_request(hop, requester, deadline))
            asked = True
        form = ApprovalRunInput.with_initial_data(
            description=_description(hop, results, verdict), decision="approve", digest=hop.digest
        )
        # One pause key per decision: on resume, a suspended run reaches this call again with
        # the same count, and Prefect hands back the input given for that key.
        key = f"approval-{len(inputs)}"
        if suspend:
            # Exits this process's run; on resume the flow runs again from the top (its gate
            # results persisted), and this call then returns the input given for this key. A
            # suspension that expires is failed by the server ("paused and never resumed").
            answer = await suspend_flow_run(wait_for_input=form, timeout=math.ceil(left), key=key)
        else:
            try:
                # airlock keeps the deadline; the server's pause lasts a little longer, so the
                # run is never failed by the server behind our back (which would lose the
                # refusal message)
                async with asyncio.timeout(left):
                    answer = await pause_flow_run(
                        wait_for_input=form,
                        timeout=math.ceil(left) + PAUSE_MARGIN_SECONDS,
                        poll_interval=APPROVAL_POLL_SECONDS,
                        key=key,
                    )
            except (TimeoutError, FlowPauseTimeout):
                await _running_again()
                break
        given_now = ApprovalInput.model_validate(answer.model_dump(include=_FIELDS))
        approvals.append(await decisions.store(given_now))  # kept before it is acted on
        inputs.append(given_now)
        get_run_logger().info("%s by %s", given_now.decision, given_now.approver)
    waited = gates.approval.evaluate(inputs, policy, requester, hop.digest)
    return (
        GateResult(
            gate="approval",
            passed=False,
            summary=f"refused: approval timed out after {duration_text(config.timeout)}"
            f" ({waited.summary})",
            rows=waited.rows,
            evidence=waited.evidence,
        ),
        approvals,
    )


def _request(hop: Hop, requester: str | None, deadline: dt.datetime) -> dict[str, Any]:
    return {
        "image": hop.name,
        "stage": hop.stage.name,
        "digest": hop.digest,
        "source": str(hop.source),
        "target": str(hop.target),
        "requester": requester,
        "deadline": deadline.isoformat(),
        "policy_sha256": hop.pipeline.policy(hop.stage).sha256,
    }


def _started(suspend: bool) -> dt.datetime:
    """When the approval wait began. A suspended run starts over in a new process on every
    resume, so its deadline counts from the flow run's first start, kept by the server."""
    from prefect.context import FlowRunContext

    context = FlowRunContext.get()
    first = context.flow_run.start_time if suspend and context and context.flow_run else None
    return first or dt.datetime.now(dt.UTC)


def deployed() -> bool:
    """Whether this flow run belongs to a deployment (only those can be suspended, or
    retried)."""
    from prefect.context import FlowRunContext

    context = FlowRunContext.get()
    return bool(context and context.flow_run and context.flow_run.deployment_id)


async def _running_again() -> None:
    """Take a run that is still paused on the server back to Running, so it can fail with the
    refusal as its message."""
    from prefect.client.orchestration import get_client
    from prefect.runtime import flow_run
    from prefect.states import Running

    async with get_client() as client:
        await client.set_flow_run_state(uuid.UUID(flow_run.id), Running(), force=True)


def _description(hop: Hop, results: list[GateResult], verdict: GateResult) -> str:
    lines = [
        f"### Approve {hop.name} into **{hop.stage.name}**?",
        "",
        f"- digest: `{hop.digest}` (your decision names this digest; it counts for no other)",
        f"- from: `{hop.source}`",
        f"- to: `{hop.target}`",
        f"- so far: {verdict.summary}",
        "",
        "| gate | verdict | evidence |",
        "|---|---|---|",
    ]
    for r in results:
        evidence = ", ".join(f"`{e.source}`" for e in r.evidence) or "—"
        lines.append(f"| {r.gate} | {r.summary} | {evidence} |")
    return "\n".join(lines)
