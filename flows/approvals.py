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
import logging
import math
import re
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.exceptions import FlowPauseTimeout
from prefect.flow_runs import pause_flow_run, suspend_flow_run
from prefect.input import RunInput
from prefect.runtime import flow_run

import gates.approval
from flows.config import GateConfig
from flows.hops import Earlier, Hop, artifact_key
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
TOP_FINDINGS = 5  # a gate's findings shown in the request
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
    config: GateConfig,
    hop: Hop,
    results: list[GateResult],
    requester: str | None,
    earlier: list[Earlier],
    announce: Callable[[dict[str, Any]], Awaitable[None]] | None = None,
    *,
    members: list[Hop] | None = None,
    stage_notes: list[str] | None = None,
) -> tuple[GateResult, list[Approval]]:
    """Wait until the approval policy is met, a decision rejects, or the timeout passes. The
    request (what is asked, on what evidence: this stage's gates and `earlier` stages' records;
    for a release, its `members`; the stage's windows and stop switch, `stage_notes`) is shown
    in the Resume form, in a pending-approval artifact and to `airlock approve`."""
    logger = get_run_logger()
    policy = config.policy
    assert isinstance(policy, gates.approval.ApprovalPolicy)  # typed at load (flows/config.py)
    decisions = await Decisions.of(hop)
    binding = gates.approval.Binding(
        hop.stage.name, str(decisions.root), policy.public_keys(hop.pipeline.folder)
    )
    given = await decisions.read()
    inputs = [g for g, _ in given]
    approvals = [a for _, a in given]
    suspend = suspends(config)
    first = await asked_at(decisions.key) if suspend else dt.datetime.now(dt.UTC)
    deadline = first + config.timeout
    announced = False
    pages: Callable[[str], str] | None = None
    while True:
        verdict = gates.approval.evaluate(inputs, policy, requester, hop.digest, binding=binding)
        if verdict.passed or any(a.decision == "reject" for a in inputs):
            return verdict, _annotated(approvals, inputs, policy, requester, hop.digest, binding)
        left = (deadline - dt.datetime.now(dt.UTC)).total_seconds()
        if left <= 0:
            break
        pages = pages or await run_pages()
        asked = (policy, binding)
        request = _request(hop, requester, deadline, asked, results, earlier, inputs, pages)
        request["members"] = [
            {"name": m.name, "digest": m.digest, "target": str(m.target)} for m in members or []
        ]
        request["stage_notes"] = stage_notes or []
        await _publish(request)  # again at each pause: it says who has decided so far
        text = request_markdown(request)
        if not announced:
            await create_markdown_artifact(
                key=artifact_key("pending", hop), markdown=text, description=asking(request)
            )
            logger.info("%s", _waiting_line(request))
            if announce is not None:
                await announce(request)
            announced = True
        form = ApprovalRunInput.with_initial_data(description=text, digest=hop.digest)
        # One pause key per request and decision: on resume, a suspended run reaches this call
        # again with the same key, and Prefect hands back the input given for it (a pipeline
        # run may ask for several hops in turn: each its own keys).
        key = f"approval-{decisions.key.removeprefix(DECISION_PREFIX)}{len(inputs)}"
        if suspend:
            # Exits this process's run; on resume the flow runs again from the top (its gate
            # results persisted), and this call then returns the input given for this key. A
            # suspension that expires is failed by the server ("paused and never resumed").
            _waiting_is_not_an_error()
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
        why = gates.approval.notes(inputs, policy, requester, hop.digest, binding)[-1]
        if why:  # said at once, not only in the record at the end
            logger.warning("%s by %s: not counted (%s)", *_who(given_now), why)
        else:
            logger.info("%s by %s", *_who(given_now))
    waited = gates.approval.evaluate(inputs, policy, requester, hop.digest, binding=binding)
    return (
        GateResult(
            gate="approval",
            passed=False,
            summary=f"refused: approval timed out after {duration_text(config.timeout)}"
            f" ({waited.summary})",
            rows=waited.rows,
            evidence=waited.evidence,
        ),
        _annotated(approvals, inputs, policy, requester, hop.digest, binding),
    )


class _WaitingIsNotAnError(logging.Filter):
    """Prefect logs a flow run that ends in any state but Completed at ERROR — a run suspended
    to wait for people too. Waiting is not a failure: that line is logged at INFO."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno == logging.ERROR and str(record.msg).startswith(
            ("Finished in state Suspended", "Finished in state Paused")
        ):
            record.levelno, record.levelname = logging.INFO, "INFO"
        return True


def _waiting_is_not_an_error() -> None:
    logger = logging.getLogger("prefect.flow_runs")
    if not any(isinstance(f, _WaitingIsNotAnError) for f in logger.filters):
        logger.addFilter(_WaitingIsNotAnError())


def _who(given: ApprovalInput) -> tuple[str, str]:
    return ("approval" if given.decision == "approve" else "rejection"), given.approver


def _annotated(
    approvals: list[Approval],
    inputs: list[ApprovalInput],
    policy: gates.approval.ApprovalPolicy,
    requester: str | None,
    digest: str,
    binding: gates.approval.Binding,
) -> list[Approval]:
    """The decisions as recorded: each one that did not count says why; a signed one that
    verified, by which key."""
    why = gates.approval.notes(inputs, policy, requester, digest, binding)
    out = []
    for a, i, w in zip(approvals, inputs, why, strict=True):
        key = binding.keys.get(gates.approval.identity(i.approver))
        signed = key is not None and not gates.approval.signature_problem(i, digest, binding)
        out.append(
            a.model_copy(update={"not_counted": w, "signed_by": key.short_id if signed else None})
        )
    return out


def _request(
    hop: Hop,
    requester: str | None,
    deadline: dt.datetime,
    asked: tuple[gates.approval.ApprovalPolicy, gates.approval.Binding],
    results: list[GateResult],
    earlier: list[Earlier],
    inputs: list[ApprovalInput],
    pages: Callable[[str], str],
) -> dict[str, Any]:
    """Everything a reviewer needs to decide, as data (JSON): `airlock approve` reads it — and,
    to sign, what a signed approval names: the root run and the approvers' keys."""
    ref = hop.pipeline.policy(hop.stage)
    policy, binding = asked
    why = gates.approval.notes(inputs, policy, requester, hop.digest, binding)
    return {
        "image": hop.name,
        "stage": hop.stage.name,
        "digest": hop.digest,
        "source": str(hop.source),
        "target": str(hop.target),
        "requester": requester,
        "deadline": deadline.isoformat(),
        "policy_file": ref.file,
        "policy_sha256": ref.sha256,
        "approval": policy.model_dump(mode="json"),
        "approval_run": binding.run,  # what a signed approval names (the root run)
        "approver_keys": {a: k.pem() for a, k in binding.keys.items()},
        "decisions": [
            {**i.model_dump(mode="json"), "not_counted": w}
            for i, w in zip(inputs, why, strict=True)
        ],
        "gates": [_gate(r) for r in results],
        "earlier": [
            {
                "stage": e.stage,
                "note": e.note,
                "at": e.record.finished_at.isoformat() if e.record else None,
                "gates": [_gate(g) for g in e.record.gates] if e.record else [],
                "approvals": [a.shown for a in e.record.approvals] if e.record else [],
                "run": pages(e.record.flow_run_id) if e.record and e.record.flow_run_id else None,
            }
            for e in earlier
        ],
        "run_id": flow_run.id,
        "run": pages(str(flow_run.id)),
    }


def _gate(r: GateResult) -> dict[str, Any]:
    """A gate's verdict for the request: the summary, the evidence it rests on, and for a scan
    its top findings (its rows name them, most severe first)."""
    findings = [
        " ".join(filter(None, (row["finding"], row.get("package"), row.get("severity"))))
        for row in r.rows
        if row.get("finding") and row.get("severity")
    ]
    return {
        "gate": r.label,
        "passed": r.passed,
        "summary": r.summary,
        "evidence": [f"{e.source} ({e.digest[:19]}…)" for e in r.evidence],
        "findings": findings[:TOP_FINDINGS],
        "more_findings": max(0, len(findings) - TOP_FINDINGS),
    }


async def run_pages(ui_root: str | None = None) -> Callable[[str], str]:
    """Links to flow runs in the UI version the Prefect server serves by default, as its
    /ui-settings says (Prefect 3.9: V2 under /v2, where a run is /runs/flow-run/ID; V1 at /,
    where it is /flow-runs/flow-run/ID — Prefect's own `ui_url` names V1's)."""
    import httpx
    from prefect.settings import PREFECT_UI_URL

    root = (ui_root or PREFECT_UI_URL.value() or "").rstrip("/")
    try:
        async with httpx.AsyncClient(timeout=5) as client:
            r = await client.get(f"{root}/ui-settings")
        settings = r.json() if r.status_code == 200 else {}
    except (httpx.HTTPError, ValueError):
        settings = {}
    if not isinstance(settings, dict):
        settings = {}
    v2 = settings.get("v2_base_url")
    if settings.get("default_ui") == "v2" and isinstance(v2, str):
        return lambda run_id: f"{root}{v2.rstrip('/')}/runs/flow-run/{run_id}"
    v1 = settings.get("v1_base_url")
    v1 = v1.rstrip("/") if isinstance(v1, str) else ""
    return lambda run_id: f"{root}{v1}/flow-runs/flow-run/{run_id}"


def asking(request: dict[str, Any]) -> str:
    """`1 approval from anyone but the requester (ci)`, `2 signed approvals from alice, bob`."""
    p = request["approval"]
    n = p["required"]
    names = [a["name"] if isinstance(a, dict) else a for a in p["approvers"]]
    what = "signed approval" if names and isinstance(p["approvers"][0], dict) else "approval"
    who = ", ".join(names) or "anyone"
    if request.get("requester") and not p["allow_self_approval"]:
        who += f" but the requester ({request['requester']})"
    return f"{n} {what}{'s' * (n > 1)} from {who}"


def _waiting_line(request: dict[str, Any]) -> str:
    """What the run says while it waits: for what, from whom, until when, and how to answer."""
    return (
        f"waiting for {asking(request)} to promote {request['image']} {request['digest']} into"
        f" {request['stage']}, until {request['deadline']}; approve in the UI ({request['run']},"
        f" Resume) or run: airlock approve {request['run_id']} --by NAME"
        f" --digest {request['digest']}{' --key FILE' if request['approver_keys'] else ''}"
    )


def request_markdown(request: dict[str, Any]) -> str:
    """The request as a reviewer reads it (the Resume form and the pending-approval artifact).
    Headings and lists only: a Markdown table collapses in one Prefect UI and loses its rows in
    the other. The digest is shown whole twice — in a code block to copy, and in groups of eight
    that wrap in a narrow dialog — and shortened everywhere else (no line runs off the form).
    Every value someone typed or a report carried (names, comments, summaries, findings) is
    shown as text: it can neither add a line nor look like a link, a heading or a verdict."""
    digest = request["digest"]
    algorithm, _, hexes = digest.partition(":")
    groups = " ".join(hexes[i : i + 8] for i in range(0, len(hexes), 8))
    lines = [
        f"### Approve {_md(request['image'])} into {_md(request['stage'])}?",
        "",
        "Your decision names this digest and counts for no other:",
        "",
        "```",
        digest,
        "```",
        "",
        f"{algorithm}: **{groups}**",
        "",
        f"- **from** {_md(request['source'])}",
        f"- **to** {_md(request['target'])}",
        f"- **requested by** {_md(request.get('requester') or '(nobody named)')}",
        f"- **needs** {_md(asking(request))}",
        f"- **deadline** {_md(request['deadline'])} (refused if not approved by then)",
        f"- **policy** {_md(request['policy_file'])} (sha256 {request['policy_sha256'][:16]}…)",
        f"- **this run** {request['run']}",
    ]
    for note in request.get("stage_notes") or []:
        lines.append(f"- **{_md(request['stage'])}** {_md(note)}")
    if members := request.get("members"):
        lines += ["", f"#### The release's {len(members)} members, each by digest"]
        lines += [f"- {_md(m['name'])} {_md(m['digest'])} to {_md(m['target'])}" for m in members]
    if request["decisions"]:
        lines += ["", "#### Decisions so far"]
        for d in request["decisions"]:
            note = f": not counted ({d['not_counted']})" if d["not_counted"] else ""
            lines.append(f"- {_md(d['approver'])} ({d['decision']}){_md(note)}")
    lines += ["", f"#### {_md(request['stage'])}'s gates"]
    lines += _gate_lines(request["gates"]) or ["- (none before the approval)"]
    for e in request["earlier"]:
        lines += ["", f"#### Passed {_md(e['stage'])}" + (f" at {_md(e['at'])}" if e["at"] else "")]
        if e["note"]:
            lines.append(f"- {_md(e['note'])}")
        lines += _gate_lines(e["gates"])
        if e["approvals"]:
            lines.append(f"- **approvals** {_md(', '.join(e['approvals']))}")
        if e["run"]:
            lines.append(f"- **run** {e['run']}")
    return "\n".join(lines)


_LONG_DIGEST = re.compile(r"(sha256[:-])([0-9a-f]{12})[0-9a-f]{52}")
_MARKDOWN = re.compile(r"([\\`*_\[\]<>|~&!:])")  # what makes links, emphasis, HTML


def _md(text: str) -> str:
    """Untrusted text as one line of plain Markdown text: control and line-break characters
    become spaces, Markdown's punctuation is escaped, and full digests are cut to 12 hex digits
    (the request shows the one that matters in full)."""
    flat = " ".join("".join(c if c.isprintable() else " " for c in str(text)).split())
    return _MARKDOWN.sub(r"\\\1", _LONG_DIGEST.sub(r"\1\2…", flat))


def _gate_lines(gates_: list[dict[str, Any]]) -> list[str]:
    lines = []
    for g in gates_:
        lines.append(f"- **{_md(g['gate'])}** {_md(g['summary'])}")
        lines += [f"    - {_md(f)}" for f in g["findings"]]
        if g["more_findings"]:
            lines.append(f"    - and {g['more_findings']} more")
        lines += [f"    - evidence: {_md(e)}" for e in g["evidence"]]
    return lines


async def _now(key: str) -> dt.datetime:
    return dt.datetime.now(dt.UTC)


# When a suspended wait began (`key`: the request's). A suspended run starts over in a new
# process on every resume: its deadline counts from the first time it asked, kept for the run.
asked_at = task(
    name="approval-asked",
    cache_key_fn=lambda context, p: f"airlock-asked-{context.task_run.flow_run_id}-{p['key']}",
    persist_result=True,
)(_now)


def suspends(config: GateConfig) -> bool:
    """Whether this gate's wait suspends the run (else it pauses, a process waiting)."""
    return config.gate.waits_for_people and deployed() and config.timeout >= SUSPEND_AFTER


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
    from prefect.states import Running

    async with get_client() as client:
        await client.set_flow_run_state(uuid.UUID(flow_run.id), Running(), force=True)
