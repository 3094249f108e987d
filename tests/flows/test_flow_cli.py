"""`airlock promote`, `approve`, `rollback` as scripts run them: subprocesses that talk to the
test's Prefect server through PREFECT_API_URL (never a server of their own)."""

from __future__ import annotations

import datetime as dt
import subprocess
import uuid
from typing import Any

import pytest

from flows.promote import promote
from tests.flows.helpers import (
    FAILING_TESTS,
    Setup,
    alongside,
    attach_evidence,
    promote_runs,
    push_with_evidence,
    wait_for_approval_request,
)
from tests.support.cli import airlock, assert_one_line_error, assert_refusal, run_cli

pytestmark = [pytest.mark.anyio, pytest.mark.usefixtures("fast_approval_polls")]


async def runs_of(image: str, since: dt.datetime) -> list[Any]:
    """Promote runs of `image` created after `since`: the Prefect server lives for the whole
    session, and a later test's registry may get an earlier test's port (so the same name)."""
    from prefect.client.orchestration import get_client

    async with get_client() as client:
        return [
            r
            for r in await client.read_flow_runs()
            if promote_runs(image)(r) and r.created and r.created >= since
        ]


async def test_promote_prints_the_digest(setup: Setup, cli_env: dict[str, str]) -> None:
    img = await push_with_evidence(setup, "cli-promote")
    started = dt.datetime.now(dt.UTC)
    proc = await run_cli(
        "promote", setup.ref("dev"), "--to", "qa", "--pipeline", setup.file, env=cli_env
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == f"{img.digest}\n"
    assert f"{setup.ref('qa')}@{img.digest}: promoted" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert setup.digest("qa") == img.digest
    # the run was made on this test's Prefect server, not an ephemeral one of its own
    [run] = await runs_of(setup.ref("dev"), since=started)
    assert run.state and run.state.is_completed()


async def test_a_refusal_exits_1_with_one_line(setup: Setup, cli_env: dict[str, str]) -> None:
    img = setup.push("cli-refused")
    await attach_evidence(setup.reg, img, tests=FAILING_TESTS)
    proc = await run_cli(
        "promote", setup.ref("dev"), "--to", "qa", "--pipeline", setup.file, env=cli_env
    )
    assert_refusal(proc, 1, "qa: tests gate refused")
    assert setup.tags("qa") == []


async def test_a_skipped_stage_exits_1(setup: Setup, cli_env: dict[str, str]) -> None:
    await push_with_evidence(setup, "cli-skip")
    proc = await run_cli(
        "promote", setup.ref("dev"), "--to", "staging", "--pipeline", setup.file, env=cli_env
    )
    assert_refusal(proc, 1, "staging:", "not in qa")


def test_a_bad_pipeline_exits_2(setup: Setup, cli_env: dict[str, str]) -> None:
    setup.write(gates={"qa": [{"kind": "lint"}]})
    proc = airlock("promote", setup.ref("dev"), "--to", "qa", "--pipeline", setup.file, env=cli_env)
    assert_one_line_error(proc, 2, setup.file, "stages[1: qa].gates[0].kind")


async def test_a_malformed_reference_exits_2_before_any_write(
    setup: Setup, cli_env: dict[str, str]
) -> None:
    await push_with_evidence(setup, "cli-malformed")
    catalog = setup.catalog()
    proc = await run_cli(
        "promote", f"{setup.host}/dev/App:1.0", "--to", "qa", "--pipeline", setup.file, env=cli_env
    )
    assert_refusal(proc, 2, "App")
    assert setup.catalog() == catalog and setup.tags("qa") == []


async def test_approve_resumes_a_waiting_promotion(setup: Setup, cli_env: dict[str, str]) -> None:
    img = await push_with_evidence(setup, "cli-approve")
    for stage in ("qa", "staging"):
        previous = "dev" if stage == "qa" else "qa"
        await promote(image=setup.ref(previous), to_stage=stage)
    approved: list[tuple[str, subprocess.CompletedProcess[str]]] = []
    started = dt.datetime.now(dt.UTC)

    async def approve_from_the_cli() -> None:
        run = await wait_for_approval_request(
            promote_runs(setup.ref("staging"), "prod"), since=started
        )
        args = ("approve", str(run.id), "--by", "alice", "--comment", "from the CLI")
        approved.append((str(run.id), await run_cli(*args, env=cli_env)))

    done = await alongside(
        promote(image=setup.ref("staging"), to_stage="prod", requester="ci"),
        approve_from_the_cli(),
    )

    # the decision reached the flow run
    assert done["status"] == "promoted" and setup.digest("prod") == img.digest
    [record] = await setup.history("prod")
    [approval] = record.approvals
    assert (approval.approver, approval.comment) == ("alice", "from the CLI")
    assert approval.digest == img.digest  # the CLI bound the decision to what the run asked
    [(run_id, proc)] = approved
    # the run is no longer waiting: approving it again is bad input
    again = await run_cli("approve", run_id, "--by", "bob", env=cli_env)
    assert_one_line_error(again, 2, "not waiting for an approval")
    # and the command said so, and succeeded
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == (
        f"approve given for {run_id} by alice: app {img.digest} into prod (requested by ci)\n"
    )
    assert proc.stderr == ""


async def test_approve_bad_input(cli_env: dict[str, str]) -> None:
    not_a_uuid = await run_cli("approve", "run-42", "--by", "alice", env=cli_env)
    assert_one_line_error(not_a_uuid, 2, "not a flow run id")
    unknown = await run_cli("approve", str(uuid.uuid4()), "--by", "alice", env=cli_env)
    assert_one_line_error(unknown, 2, "no flow run")


async def test_rollback_from_the_cli(setup: Setup, cli_env: dict[str, str]) -> None:
    first = await push_with_evidence(setup, "cli-rb-1")
    await promote(image=setup.ref("dev"), to_stage="qa")
    second = await push_with_evidence(setup, "cli-rb-2")
    await promote(image=setup.ref("dev"), to_stage="qa")
    assert setup.digest("qa") == second.digest
    bad = await run_cli(
        "rollback", "qa", "--image", "app", "--to", "sha256:nope", "--pipeline", setup.file,
        env=cli_env,
    )  # fmt: skip
    assert_one_line_error(bad, 2, "sha256:nope")
    proc = await run_cli(
        "rollback", "qa", "--image", "app", "--pipeline", setup.file, "--by", "oncall",
        env=cli_env,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == f"{setup.ref('qa')} -> {first.digest} (was {second.digest})"
    assert setup.digest("qa") == first.digest
