"""`airlock promote`, `pipeline`, `rollback`, `approve`, `freeze`: Prefect from the command line.

Flows run in this process against `PREFECT_API_URL` when it is set, else against Prefect's
embedded (ephemeral, SQLite) server. Approvals need a server that `airlock approve` (or a person in
the UI) can reach too, so a promotion into a stage with an approval gate wants PREFECT_API_URL.
Exit codes: 0 promoted, 1 refused (a gate, an immutable tag, a skipped stage), 2 bad input,
3 registry or network failure.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

from registry.errors import BadInputError


def add_parsers(sub: Any) -> None:
    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument(
            "--pipeline",
            metavar="FILE",
            help="pipeline.yaml (default: $AIRLOCK_PIPELINE or ./pipeline.yaml)",
        )
        p.add_argument("--by", metavar="NAME", help="who asks (recorded; may not self-approve)")
        p.add_argument("--json", action="store_true", help="print one JSON object")

    p = sub.add_parser(
        "promote",
        help="promote an image one hop, through the stage's gates",
        description="Run the target stage's gates on the image's digest in the"
        " previous stage; copy it only if they pass. Prints the promoted digest.",
    )
    p.add_argument("ref", metavar="REF", help="the image, e.g. localhost:5000/dev/app:1.0")
    p.add_argument("--to", required=True, metavar="STAGE", help="the stage to promote into")
    common(p)
    p.set_defaults(func=cmd_promote)

    p = sub.add_parser(
        "pipeline",
        help="promote images through every stage, in order",
        description="Every hop in order for each image; an image stops at its first refusal.",
    )
    p.add_argument("refs", nargs="+", metavar="REF")
    p.add_argument("--until", metavar="STAGE", help="stop after this stage")
    p.add_argument(
        "--concurrency",
        type=int,
        default=4,
        metavar="N",
        help="images promoted at once (default 4)",
    )
    common(p)
    p.set_defaults(func=cmd_pipeline)

    p = sub.add_parser(
        "rollback",
        help="re-point a stage's tag to the previously promoted digest",
        description="Only digests that passed the stage before are allowed.",
    )
    p.add_argument("stage", metavar="STAGE")
    p.add_argument(
        "--image",
        default="",
        metavar="NAME",
        help="the image's name in the pipeline ({name} in repositories)",
    )
    p.add_argument("--to", metavar="DIGEST", help="roll to this digest (it must have passed)")
    p.add_argument("--tag", metavar="TAG", help="the tag to move (default: the last promoted)")
    p.add_argument(
        "--release",
        metavar="NAME",
        help="put every member of release NAME back to the release promoted before (#16)",
    )
    common(p)
    p.set_defaults(func=cmd_rollback)

    p = sub.add_parser(
        "freeze",
        help="stop the line: refuse every promotion into a stage until it is unfrozen",
        description="Refuse promotions into STAGE, saying REASON, until `airlock unfreeze`"
        " (a Prefect variable every worker reads; rollbacks still run).",
    )
    p.add_argument("stage", metavar="STAGE")
    p.add_argument("--reason", required=True, metavar="TEXT", help="shown in every refusal")
    common(p)
    p.set_defaults(func=cmd_freeze)

    p = sub.add_parser(
        "unfreeze",
        help="lift a stage's freeze",
        description="Promotions into STAGE run again (a stage that was not frozen: exit 0).",
    )
    p.add_argument("stage", metavar="STAGE")
    common(p)
    p.set_defaults(func=cmd_unfreeze)

    p = sub.add_parser(
        "approve",
        help="approve (or reject) a promotion waiting for approval",
        description="Resume a paused promotion flow run with a decision.",
    )
    p.add_argument("run_id", metavar="RUN_ID", help="the flow run id (shown by the run and UI)")
    p.add_argument("--by", required=True, metavar="NAME", help="who decides")
    p.add_argument("--reject", action="store_true", help="reject instead of approving")
    p.add_argument(
        "--digest",
        metavar="DIGEST",
        help="decide only if the run waits for this digest (exit 1 and nothing sent otherwise)",
    )
    p.add_argument("--comment", default="", metavar="TEXT")
    p.add_argument(
        "--key",
        metavar="FILE",
        help="sign the decision with your private key (PEM or OpenSSH; where approvers are"
        " declared with keys, an unsigned approval does not count)",
    )
    p.add_argument(
        "--print-signature",
        action="store_true",
        help="print the signature (for the Resume form's signature field) and send nothing",
    )
    p.set_defaults(func=cmd_approve)

    p = sub.add_parser(
        "serve",
        help="serve prefect.yaml's deployments from this process (no work pool needed)",
        description="promote-on-push, promote, drift-watch and rescan, bound to one pipeline,"
        " served against PREFECT_API_URL until interrupted.",
    )
    p.add_argument(
        "--pipeline",
        metavar="FILE",
        help="pipeline.yaml (default: $AIRLOCK_PIPELINE or ./pipeline.yaml)",
    )
    p.add_argument(
        "--no-schedules", action="store_true", help="serve drift-watch and rescan without crons"
    )
    p.set_defaults(func=cmd_serve)


def cmd_serve(args: argparse.Namespace) -> int:
    from flows import deployments

    # Prefect's runner handles SIGTERM itself (pauses the deployments, then exits)
    pipeline = args.pipeline or os.environ.get("AIRLOCK_PIPELINE") or "pipeline.yaml"
    _run(deployments.serve(pipeline, schedules=not args.no_schedules))
    return 0


def _quiet_tracebacks() -> None:
    """Prefect logs a flow's exception with its traceback, and a Failed state once per task and
    run; for airlock's own errors (a refusal, bad input) the one-line message printed at the end
    is the whole story, so the console shows neither (the server's logs keep them)."""
    import logging

    from prefect.logging.handlers import PrefectConsoleHandler

    from registry.errors import AirlockError

    class NoAirlockTracebacks(logging.Filter):
        def filter(self, record: logging.LogRecord) -> bool:
            if record.exc_info and isinstance(record.exc_info[1], AirlockError):
                record.exc_info, record.exc_text = None, None
            return True

    class NoFailedEcho(logging.Filter):
        """On the console only: a run or gate that ended Failed repeats the one line airlock
        prints at the end (once, not once per task and run among the log lines)."""

        def filter(self, record: logging.LogRecord) -> bool:
            message = str(record.msg)
            return not message.startswith(
                ("Finished in state Failed", "Task run failed with state")
            )

    class NoLateHeartbeat(logging.Filter):
        """Prefect's flow-run heartbeat thread can emit once more after the run ended and its
        events worker stopped, logging that race with a traceback; the run is final by then and
        nothing is lost, so the console does not show it."""

        def filter(self, record: logging.LogRecord) -> bool:
            error = record.exc_info[1] if record.exc_info else None
            return not (
                record.name == "prefect.events.utilities"
                and isinstance(error, RuntimeError)
                and "stopped service instance" in str(error)
            )

    quiet = NoAirlockTracebacks()
    loggers = [
        logging.getLogger(),
        *(
            logging.getLogger(name)
            for name in list(logging.root.manager.loggerDict)
            if name.startswith("prefect")
        ),
    ]
    console, late = NoFailedEcho(), NoLateHeartbeat()
    for logger in loggers:
        for handler in logger.handlers:
            handler.addFilter(quiet)
            handler.addFilter(late)
            if isinstance(handler, PrefectConsoleHandler):
                handler.addFilter(console)


def _run(flow_call: Any) -> Any:
    """Run a flow to completion; a Prefect API that cannot be reached is a network failure
    (exit 3) with a message saying so, not an internal error."""
    import asyncio

    from registry.errors import RegistryError

    try:
        return asyncio.run(flow_call)
    except RuntimeError as e:
        if "Failed to reach API" in str(e):
            url = os.environ.get("PREFECT_API_URL", "the Prefect API")
            raise RegistryError(
                f"cannot reach the Prefect API at {url}: is the server running? (unset"
                " PREFECT_API_URL to use the embedded one)"
            ) from None
        raise


def _requester(args: argparse.Namespace) -> str:
    import getpass

    return args.by or os.environ.get("AIRLOCK_REQUESTER") or getpass.getuser()


def _bind_pipeline(args: argparse.Namespace) -> None:
    """The flows run in this process and read the pipeline this process names (never a flow
    parameter: flows/config.py): --pipeline, else $AIRLOCK_PIPELINE, else ./pipeline.yaml. A bad
    file is bad input before Prefect starts."""
    from flows.config import load, pipeline_path

    path = pipeline_path(args.pipeline)
    load(path)
    os.environ["AIRLOCK_PIPELINE"] = os.path.abspath(path)


def _print(args: argparse.Namespace, value: Any, text: str) -> None:
    import json

    print(json.dumps(value, default=str) if args.json else text)


def cmd_promote(args: argparse.Namespace) -> int:
    from flows.promote import promote

    _quiet_tracebacks()
    _bind_pipeline(args)
    done = _run(promote(image=args.ref, to_stage=args.to, requester=_requester(args)))
    _print(args, done, done["digest"])
    if not args.json:
        print(f"{done['target']}: {done['status']}", file=sys.stderr)
    return 0


def cmd_pipeline(args: argparse.Namespace) -> int:
    from flows.promote import PipelineFailed, PipelineRefused, pipeline

    _quiet_tracebacks()

    if not 1 <= args.concurrency <= 64:
        raise BadInputError("--concurrency expects 1-64")
    _bind_pipeline(args)
    try:
        outcomes = _run(
            pipeline(
                images=args.refs,
                until=args.until,
                requester=_requester(args),
                max_concurrency=args.concurrency,
            )
        )
    except (PipelineRefused, PipelineFailed) as e:
        _outcomes(args, e.outcomes)  # where every image got to, then the one-line error
        raise
    _outcomes(args, outcomes)
    return 0


def _outcomes(args: argparse.Namespace, outcomes: list[dict[str, Any]]) -> None:
    lines = [
        f"{o['image']}: reached {o['reached']} {o.get('digest', '')}".rstrip() for o in outcomes
    ]
    _print(args, outcomes, "\n".join(lines))


def cmd_rollback(args: argparse.Namespace) -> int:
    from flows.promote import rollback

    _quiet_tracebacks()
    _bind_pipeline(args)
    if args.to:
        from registry.reference import validate_digest

        validate_digest(args.to)
    done = _run(
        rollback(
            stage=args.stage,
            image=args.image,
            to=args.to,
            tag=args.tag,
            requester=_requester(args),
            release=args.release,
        )
    )
    _print(args, done, f"{done['target']} -> {done['digest']} (was {done['from']})")
    return 0


def _stage_of(args: argparse.Namespace) -> str:
    from flows.config import load

    return load(args.pipeline).stage(args.stage).name  # an unknown stage: bad input


def cmd_freeze(args: argparse.Namespace) -> int:
    from flows import freeze

    stage = _stage_of(args)
    reason = " ".join(args.reason.split())
    if not reason or len(reason) > freeze.MAX_REASON:
        raise BadInputError(f"--reason: say why, in 1 to {freeze.MAX_REASON} characters")
    done = _run(freeze.freeze(stage, reason, _requester(args)))
    _print(args, vars(done), f"{stage}: frozen by {done.by}: {done.reason}")
    return 0


def cmd_unfreeze(args: argparse.Namespace) -> int:
    from flows import freeze

    stage = _stage_of(args)
    lifted = _run(freeze.unfreeze(stage))
    _print(
        args,
        {"stage": stage, "was_frozen": lifted},
        f"{stage}: {'unfrozen' if lifted else 'was not frozen'}",
    )
    return 0


def cmd_approve(args: argparse.Namespace) -> int:
    """Resume a waiting promotion with a decision bound to the digest it waits for: the run's
    request is read first and shown, and `--digest` (when given) must be that digest."""
    import uuid

    from prefect.exceptions import FlowPauseTimeout, NotPausedError, ObjectNotFound
    from prefect.flow_runs import resume_flow_run
    from pydantic import ValidationError

    from gates.approval import ApprovalInput, name_problem
    from gates.keys import read_private_key
    from registry.errors import RefusedError

    try:
        run_id = uuid.UUID(args.run_id)
    except ValueError:
        raise BadInputError(f"{args.run_id!r} is not a flow run id (a UUID)") from None
    if args.digest:
        from registry.reference import validate_digest

        validate_digest(args.digest)
    if problem := name_problem(args.by):
        raise BadInputError(f"--by {args.by!r}: {problem}; type the name plainly")
    if args.print_signature and not args.key:
        raise BadInputError("--print-signature signs: give --key FILE")
    key = read_private_key(args.key) if args.key else None  # a bad key: said before asking
    request = _run(_waiting_request(run_id))
    if args.digest and args.digest != request["digest"]:
        raise RefusedError(
            f"flow run {run_id} asks to promote {request['digest']}, not {args.digest}:"
            " nothing sent (check what you approve)"
        )
    try:
        decision = ApprovalInput(
            decision="reject" if args.reject else "approve",
            approver=args.by,
            digest=request["digest"],
            comment=args.comment,
        )
    except ValidationError as e:
        raise BadInputError(f"approval: {e.errors()[0]['msg']}") from None
    if key is not None:
        decision = _signed(decision, request, key)
        if args.print_signature:
            print(decision.signature)
            return 0
    if decision.decision == "approve" and (why := _would_not_count(request, decision)):
        raise RefusedError(
            f"{decision.approver}'s approval of {request['image']} into {request['stage']}"
            f" would not count ({why}): nothing sent"
        )
    try:
        resume_flow_run(run_id, run_input=decision.model_dump())  # sync here (async_dispatch)
    except ObjectNotFound:
        raise BadInputError(f"no flow run {run_id} on this Prefect server") from None
    except NotPausedError:
        raise BadInputError(f"flow run {run_id} is not waiting for an approval") from None
    except FlowPauseTimeout:
        raise BadInputError(f"flow run {run_id} waited too long; it cannot be resumed") from None
    except RuntimeError as e:  # the server rejected the resume (e.g. an input it will not take)
        raise BadInputError(f"flow run {run_id} was not resumed: {e}") from None
    print(
        f"{decision.decision} given for {run_id} by {decision.approver}: {request['image']}"
        f" {request['digest']} into {request['stage']}"
        f" (requested by {request.get('requester') or 'nobody'})"
    )
    return 0


def _binding(request: dict[str, Any]) -> Any:
    """What a signed decision on this request names, and the keys the run will check it with."""
    from gates.approval import Binding
    from gates.keys import load_public_key

    keys = {
        who: load_public_key(pem, f"approver {who}'s key in the request")
        for who, pem in (request.get("approver_keys") or {}).items()
    }
    return Binding(request["stage"], str(request.get("approval_run", "")), keys)


def _signed(decision: Any, request: dict[str, Any], key: Any) -> Any:
    """`decision` with its signature by `key` over the digest, stage, run and decision."""
    from gates.approval import sign

    binding = _binding(request)
    if not binding.run:
        raise BadInputError("this run does not take signed approvals (an older airlock)")
    return decision.model_copy(update={"signature": sign(key, decision, request["image"], binding)})


def _would_not_count(request: dict[str, Any], decision: Any) -> str | None:
    """Why this approval would not count, judged as the run will judge it: by the request's
    policy, after the decisions it has had so far (the requester's own, a repeat, an outsider,
    an unsigned approval or one signed with a key not the approver's)."""
    from gates.approval import ApprovalInput, ApprovalPolicy, notes

    try:
        policy = ApprovalPolicy.model_validate(request["approval"])
        before = [
            ApprovalInput.model_validate({k: d[k] for k in ApprovalInput.model_fields if k in d})
            for d in request["decisions"]
        ]
        binding = _binding(request)
    except (KeyError, TypeError, ValueError):
        return None  # a request from an older airlock: the run judges alone
    given = [*before, decision]
    return notes(given, policy, request.get("requester"), request["digest"], binding)[-1]


async def _waiting_request(run_id: Any) -> dict[str, Any]:
    """What the run waits to have approved; bad input if it waits for nothing."""
    from prefect.client.orchestration import get_client
    from prefect.exceptions import ObjectNotFound

    from flows.approvals import read_request

    async with get_client() as client:
        try:
            run = await client.read_flow_run(run_id)
        except ObjectNotFound:
            raise BadInputError(f"no flow run {run_id} on this Prefect server") from None
    request = await read_request(run_id) if run.state and run.state.is_paused() else None
    if request is None:
        raise BadInputError(f"flow run {run_id} is not waiting for an approval")
    return request


def plan_hop(args: argparse.Namespace) -> int:
    """`airlock plan REF --to STAGE`: the hop's gates judged on today's evidence, and the copy;
    no Prefect, no writes. Exit 0 whatever the verdicts (it is a plan)."""
    import asyncio
    import json

    from flows.config import load
    from flows.hops import PromotionRefused, clients, evaluate, resolve
    from flows.release_hop import release_hops
    from flows.releases import is_release
    from registry.copy import human_size, plan_copy
    from registry.reference import parse

    pipeline = load(args.pipeline)
    stage = pipeline.stage(args.to)
    previous = pipeline.previous(stage)

    async def run() -> dict[str, Any]:
        here, name = pipeline.locate(parse(args.src))
        first = pipeline.stages[0]
        async with clients(pipeline, first, here, previous, stage) as opened:
            src, dst = opened[previous.registry], opened[stage.registry]
            try:
                hop = await resolve(pipeline, args.src, args.to, opened)
                # a release: every member's hop, then the index's (flows/release_hop.py)
                hops = await release_hops(pipeline, hop, opened) if is_release(name) else [hop]
            except PromotionRefused as e:
                return {"refused": str(e)}
            gates = []
            for one in hops[:-1] or hops:  # a release's members (its index has no gates)
                member = one.name if one is not hop else None
                for config in stage.gates:
                    if config.gate.waits_for_people:
                        continue
                    result = await evaluate(config, one, src)
                    result = result.model_copy(update={"member": member})
                    gates.append(
                        {"gate": result.label, "passed": result.passed, "summary": result.summary}
                    )
            for config in stage.gates:  # a plan never waits: it says it would (once, for all)
                if config.gate.waits_for_people:
                    gates.append({"gate": config.kind, "passed": None, "summary": _waits(config)})
            copies = [
                await plan_copy(src, h.source, dst, h.target, evidence_only=True) for h in hops
            ]
            copy = copies[-1]  # the image's, or the release index's
            return {
                "stage": stage.name,
                "source": str(hop.source),
                "target": str(hop.target),
                "digest": hop.digest,
                **({"members": [h.name for h in hops[:-1]]} if len(hops) > 1 else {}),
                "gates": gates,
                "target_state": "already there"
                if copy.root.exists
                else ("moves from " + copy.tag_conflict)
                if copy.tag_conflict
                else "new",
                "immutable": stage.immutable,
                "copy": {
                    "mount": sum(c.count("mount") for c in copies),
                    "stream": sum(c.count("stream") for c in copies),
                    "skip": sum(c.count("skip") for c in copies),
                    "bytes_to_stream": sum(c.bytes_to_stream() for c in copies),
                },
            }

    plan = asyncio.run(run())
    if args.json:
        print(json.dumps(plan))
        return 0
    if "refused" in plan:
        print(f"refused: {plan['refused']}")
        return 0
    print(f"{plan['source']} -> {plan['target']}")
    if plan.get("members"):
        print(f"a release of {len(plan['members'])}: {', '.join(plan['members'])}")
    print(
        f"digest {plan['digest']}; target tag: {plan['target_state']}"
        + (
            " (immutable stage: refused)"
            if plan["immutable"] and plan["target_state"].startswith("moves")
            else ""
        )
    )
    for g in plan["gates"]:
        mark = {True: "pass", False: "REFUSE", None: "wait"}[g["passed"]]
        print(f"  {mark:<6} {g['gate']:<9} {g['summary']}")
    c = plan["copy"]
    print(
        f"copy: {c['mount']} to mount, {c['stream']} to stream"
        f" ({human_size(c['bytes_to_stream'])}), {c['skip']} already there"
    )
    return 0


def _waits(config: Any) -> str:
    """`would wait up to 1h for 2 approval(s)`: a gate that waits for people, in a plan."""
    from gates.common import duration_text

    required = getattr(config.policy, "required", None)  # how many people (approval)
    return f"would wait up to {duration_text(config.timeout)}" + (
        f" for {required} approval(s)" if required is not None else ""
    )
