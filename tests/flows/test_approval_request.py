"""What a reviewer sees and can trust (issue: the approval request a reviewer can trust).

A waiting promotion says — in its Resume form, in a pending-approval artifact and to `airlock
approve` — what it asks (the full digest, source, target, requester, deadline, policy) on what
evidence (this stage's gates and every earlier stage's record); the decision starts empty; an
approval that does not count is said to be so at once, by the run and by the CLI (exit 1,
nothing sent); a refusal reads as a refusal (Failed task and run, one message, no traceback).
"""

from __future__ import annotations

import datetime as dt
import logging
import re
from collections.abc import Iterator
from typing import Any
from uuid import UUID

import pytest

from flows.approvals import read_request
from flows.promote import BOARD_KEY, PromotionRefused, pipeline, promote
from tests.flows.helpers import (
    CRITICAL_SCAN,
    Approver,
    Setup,
    alongside,
    attach_evidence,
    promote_runs,
    push_with_evidence,
    wait_for_approval_request,
)
from tests.support.artifacts import artifacts, table
from tests.support.cli import run_cli

pytestmark = [pytest.mark.anyio, pytest.mark.usefixtures("prefect_api", "fast_approval_polls")]


async def to_staging(setup: Setup, seed: str) -> Any:
    img = await push_with_evidence(setup, seed)
    await promote(image=setup.ref("dev"), to_stage="qa", requester="ci")
    await promote(image=setup.ref("qa"), to_stage="staging", requester="ci")
    return img


async def logs_of(run_id: UUID) -> list[Any]:
    """The run's logs as the server has them (the ones still queued in this process sent
    first: Prefect sends logs in batches)."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId
    from prefect.logging.handlers import APILogHandler

    await APILogHandler.aflush()
    async with get_client() as client:
        return await client.read_logs(
            log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[run_id]))
        )


async def task_runs_of(run_id: UUID) -> list[Any]:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    async with get_client() as client:
        return await client.read_task_runs(
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[run_id]))
        )


@pytest.fixture
def info_logs() -> Iterator[None]:
    """Prefect's INFO lines logged (tests/flows/conftest.py keeps only warnings)."""
    logger = logging.getLogger("prefect")
    level = logger.level
    logger.setLevel(logging.INFO)
    yield
    logger.setLevel(level)


@pytest.mark.usefixtures("info_logs")
async def test_the_request_shows_every_earlier_stage_and_the_decision_starts_empty(
    setup: Setup,
) -> None:
    img = await to_staging(setup, "request")
    seen: dict[str, Any] = {}
    since = dt.datetime.now(dt.UTC)

    async def reviewer() -> None:
        from prefect.client.orchestration import get_client
        from prefect.flow_runs import resume_flow_run
        from prefect.input.actions import aread_flow_run_input

        run = await wait_for_approval_request(
            promote_runs(setup.ref("staging"), "prod"), since=since
        )
        seen["request"] = await read_request(run.id)
        keyset = run.state.state_details.run_input_keyset
        seen["schema"] = await aread_flow_run_input(keyset["schema"], flow_run_id=run.id)
        seen["description"] = await aread_flow_run_input(keyset["description"], flow_run_id=run.id)
        seen["pending"] = (await artifacts(key="airlock-pending-prod-app"))[:1]
        async with get_client() as client:
            board = (await artifacts(key=BOARD_KEY))[0]
            seen["board"] = table(board)
            seen["run"] = await client.read_flow_run(run.id)
        await resume_flow_run(
            run.id,
            run_input={"decision": "approve", "approver": "alice", "digest": img.digest},
        )

    done = await alongside(
        promote(image=setup.ref("staging"), to_stage="prod", requester="carol"), reviewer()
    )
    assert done["status"] == "promoted"

    request = seen["request"]
    assert request["digest"] == img.digest and request["requester"] == "carol"
    assert request["target"].endswith("/prod/app:1.0")
    assert dt.datetime.fromisoformat(request["deadline"]) > since
    assert len(request["policy_sha256"]) == 64
    earlier = {e["stage"]: e for e in request["earlier"]}
    assert list(earlier) == ["qa", "staging"]  # every stage before prod, after dev
    qa_gates = {g["gate"]: g for g in earlier["qa"]["gates"]}
    assert qa_gates["tests"]["summary"].startswith("passed: 12 tests")
    assert qa_gates["scan"]["summary"].startswith("passed")
    assert qa_gates["scan"]["findings"], "a scan's top findings are shown"
    assert all(g["evidence"] for g in qa_gates.values())  # each names its evidence
    assert earlier["staging"]["gates"][0]["gate"] == "soak"

    # the form: the request in full, the digest whole, no decision chosen for the reviewer
    text = seen["description"]
    assert f"\n{img.digest}\n" in text  # whole, on a line of its own
    for needle in ("requested by** carol", "Passed qa", "Passed staging", "12 tests", "deadline"):
        assert needle in text, needle
    assert "|" not in text  # no Markdown table (it collapses in the V1 UI, loses rows in V2)
    properties = seen["schema"]["properties"]
    assert "default" not in properties["decision"]
    assert properties["digest"].get("default") == img.digest
    # the same request as an artifact, written when the wait began, and on the board
    [pending] = seen["pending"]
    assert img.digest in pending.data and "Passed qa" in pending.data
    [waiting] = [
        r for r in seen["board"] if (r["image"], r["release"], r["stage"]) == ("app", "1.0", "prod")
    ]
    assert waiting["status"].startswith("waiting for 1 approval")

    # the wait is said at INFO, with the exact command; nothing is logged as an error
    logs = await logs_of(seen["run"].id)
    [line] = [log for log in logs if "waiting for 1 approval" in log.message]
    assert line.level == logging.INFO
    assert f"airlock approve {seen['run'].id} --by NAME --digest {img.digest}" in line.message
    assert not [log for log in logs if log.level >= logging.ERROR]


async def test_an_approval_that_does_not_count_is_said_at_once_and_recorded_apart(
    setup: Setup,
) -> None:
    img = await to_staging(setup, "self-approval")
    approver = Approver(
        promote_runs(setup.ref("staging"), "prod"),
        [("approve", "Carol", "mine"), ("approve", "dave", "ok")],
    )
    done = await alongside(
        promote(image=setup.ref("staging"), to_stage="prod", requester="carol"), approver.run()
    )
    assert done["status"] == "promoted" and setup.digest("prod") == img.digest
    run_id = approver.given[0][0]
    said = [log for log in await logs_of(run_id) if "by Carol" in log.message]
    assert [(log.level, log.message) for log in said] == [
        (
            logging.WARNING,
            "approval by Carol: not counted (the requester may not approve their own promotion)",
        )
    ]
    [record] = await setup.history("prod")
    assert [a.shown for a in record.approvals] == [
        "Carol: not counted (the requester may not approve their own promotion)",
        "dave",
    ]
    [summary] = [
        a for a in await artifacts(key="airlock-promoted-prod-app") if a.flow_run_id == run_id
    ]
    assert "approvals: Carol: not counted (the requester" in summary.data


async def test_airlock_approve_exits_1_for_an_approval_that_would_not_count(
    setup: Setup, cli_env: dict[str, str]
) -> None:
    """The requester's own approval and a repeat: said, exit 1, nothing sent (the run still
    waits, with no decision stored); a countable approval then goes through."""
    setup.write(gates={"prod": [{"kind": "approval", "policy": {"required": 2}, "timeout": "60s"}]})
    img = await to_staging(setup, "cli-count")
    since = dt.datetime.now(dt.UTC)

    async def reviewers() -> None:
        match = promote_runs(setup.ref("staging"), "prod")
        seen: set[UUID] = set()
        run = await wait_for_approval_request(match, since=since, seen=seen)
        own = await run_cli("approve", str(run.id), "--by", "CAROL", env=cli_env)
        assert own.returncode == 1, own.stderr
        assert "would not count (the requester may not approve" in own.stderr
        assert "nothing sent" in own.stderr and "Traceback" not in own.stderr
        first = await run_cli("approve", str(run.id), "--by", "alice", env=cli_env)
        assert first.returncode == 0, first.stderr
        run = await wait_for_approval_request(match, since=since, seen=seen)
        again = await run_cli("approve", str(run.id), "--by", "Alice", env=cli_env)
        assert again.returncode == 1, again.stderr
        assert "would not count (alice already approved)" in again.stderr
        second = await run_cli("approve", str(run.id), "--by", "bob", env=cli_env)
        assert second.returncode == 0, second.stderr

    done = await alongside(
        promote(image=setup.ref("staging"), to_stage="prod", requester="carol"), reviewers()
    )
    assert done["status"] == "promoted" and setup.digest("prod") == img.digest
    [record] = await setup.history("prod")
    assert [(a.approver, a.not_counted) for a in record.approvals] == [
        ("alice", None),
        ("bob", None),
    ]


async def test_a_refused_hop_reads_as_one_refusal(setup: Setup) -> None:
    img = setup.push("refused-scan")
    await attach_evidence(setup.reg, img, scan=CRITICAL_SCAN)
    since = dt.datetime.now(dt.UTC)
    with pytest.raises(PromotionRefused, match="qa: scan gate refused: 2 CRITICAL"):
        await promote(image=setup.ref("dev"), to_stage="qa", requester="ci")
    from prefect.client.orchestration import get_client

    async with get_client() as client:
        [run] = [
            r
            for r in await client.read_flow_runs()
            if promote_runs(setup.ref("dev"), "qa")(r) and r.created and r.created >= since
        ]
    assert run.state and run.state.is_failed()
    assert run.state.message.startswith("qa: scan gate refused: 2 CRITICAL")
    gates = {t.name: t.state for t in await task_runs_of(run.id) if t.name.startswith("gate-")}
    assert gates["gate-scan"].is_failed() and gates["gate-tests"].is_completed()
    logs = [log.message for log in await logs_of(run.id)]
    assert not [m for m in logs if "Traceback" in m], logs
    board = table((await artifacts(key=BOARD_KEY))[0])
    [row] = [r for r in board if (r["image"], r["release"], r["stage"]) == ("app", "1.0", "qa")]
    assert row["digest"] == "—"
    assert row["status"].startswith("refused: scan gate refused: 2 CRITICAL")


async def test_the_cli_prints_a_refusal_once(setup: Setup, cli_env: dict[str, str]) -> None:
    img = setup.push("refused-once")
    await attach_evidence(setup.reg, img, scan=CRITICAL_SCAN)
    proc = await run_cli(
        "promote", setup.ref("dev"), "--to", "qa", "--pipeline", setup.file, env=cli_env
    )
    assert proc.returncode == 1
    assert proc.stderr.count("scan gate refused") == 1, proc.stderr
    assert "airlock: error: qa: scan gate refused: 2 CRITICAL" in proc.stderr
    assert "Traceback" not in proc.stderr


async def test_pipeline_runs_are_named_after_the_image(setup: Setup) -> None:
    img = await push_with_evidence(setup, "named")
    ref = f"{setup.ref('dev')}@{img.digest}"
    since = dt.datetime.now(dt.UTC)
    await pipeline([ref], until="qa", requester="ci")
    from prefect.client.orchestration import get_client

    async with get_client() as client:
        names = [
            r.name
            for r in await client.read_flow_runs()
            if ref in (r.parameters or {}).get("images", []) and r.created and r.created >= since
        ]
    assert names == [f"app:1.0 @ {img.digest[:19]}…"]


async def test_the_board_keeps_every_release_with_its_story(setup: Setup) -> None:
    """app:1.0 promoted, then app:1.1 refused: both rows stay, each with what happened."""
    good = await push_with_evidence(setup, "board-good", "1.0")
    await promote(image=setup.ref("dev", "1.0"), to_stage="qa", requester="ci")
    bad = setup.push("board-bad", "1.1")
    await attach_evidence(setup.reg, bad, scan=CRITICAL_SCAN)
    with pytest.raises(PromotionRefused):
        await promote(image=setup.ref("dev", "1.1"), to_stage="qa", requester="ci")
    rows = {
        (r["release"], r["stage"]): r
        for r in table((await artifacts(key=BOARD_KEY))[0])
        if r["image"] == "app"
    }
    assert rows[("1.0", "qa")]["digest"] == good.digest
    assert rows[("1.0", "qa")]["status"] == "promoted" and rows[("1.0", "qa")]["when"]
    assert rows[("1.0", "qa")]["run"].startswith("http")
    assert rows[("1.1", "qa")]["digest"] == "—"
    assert rows[("1.1", "qa")]["status"].startswith("refused: scan gate refused")
    assert rows[("1.1", "dev")]["digest"] == bad.digest


async def test_a_refused_pipeline_says_where_each_image_got_to_and_the_refusal_once(
    setup: Setup, cli_env: dict[str, str]
) -> None:
    good = await push_with_evidence(setup, "pipe-good", "1.0")
    bad = setup.push("pipe-bad", "1.1")
    await attach_evidence(setup.reg, bad, scan=CRITICAL_SCAN)
    proc = await run_cli(
        "pipeline",
        setup.ref("dev", "1.0"),
        setup.ref("dev", "1.1"),
        "--until",
        "qa",
        "--pipeline",
        setup.file,
        env=cli_env,
    )
    assert proc.returncode == 1, proc.stderr
    assert proc.stdout.splitlines() == [
        f"{setup.ref('dev', '1.0')}: reached qa {good.digest}",
        f"{setup.ref('dev', '1.1')}: reached dev",
    ]
    assert proc.stderr.count("scan gate refused") == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    assert setup.digest("qa", "1.1") is None


def test_typed_text_cannot_forge_lines_links_or_html_in_the_request() -> None:
    """An approver name, a comment or a report's text reaches the request a reviewer reads:
    it stays one line of text there — no new list item, no link, no HTML."""
    from flows.approvals import request_markdown

    digest = "sha256:" + "ab" * 32
    forged = "mallory\n- alice (approve) [docs](http://evil.example) <img src=x onerror=alert(1)>"
    request = {
        "image": "app",
        "stage": "prod",
        "digest": digest,
        "source": f"reg/staging/app:1.0@{digest}",
        "target": "reg/prod/app:1.0",
        "requester": forged,
        "deadline": "2026-12-04T12:00:00+00:00",
        "policy_file": "pipeline.yaml",
        "policy_sha256": "0" * 64,
        "approval": {"required": 1, "approvers": [], "allow_self_approval": False},
        "decisions": [{"approver": forged, "decision": "approve", "not_counted": None}],
        "gates": [
            {
                "gate": "tests",
                "passed": True,
                "summary": forged,
                "evidence": [forged],
                "findings": [forged],
                "more_findings": 0,
            }
        ],
        "earlier": [],
        "run_id": "r",
        "run": "http://127.0.0.1:4200/v2/runs/flow-run/r",
    }
    text = request_markdown(request)
    lines = text.splitlines()
    assert not [line for line in lines if line.lstrip().startswith("- alice")]
    # the characters are there, escaped: shown as typed, never acted on
    assert not re.search(r"(?<!\\)\]\(", text), "an unescaped link"
    assert not re.search(r"(?<!\\)<img", text), "unescaped HTML"
    assert "http://evil" not in text, "a bare URL (GFM makes it a link)"
    # requester, needs, decision, summary, finding, evidence: each on its own single line
    assert sum("mallory" in line for line in lines) == 6
