"""From a deployment, a long approval suspends the run instead of pausing it: no process waits,
and on resume the flow runs again from the top with its gate results taken from the first run.

The promote flow is served for real (`flow.serve` in a subprocess, against the test server), so
this is the path a deployment takes."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from typing import Any
from uuid import UUID

import pytest

from tests.flows.helpers import (
    CRITICAL_SCAN,
    Setup,
    attach_evidence,
    deployment_ready,
    push_with_evidence,
    serving,
    wait_for_approval_request,
    wait_for_state,
)
from tests.support.cli import run_cli

pytestmark = [pytest.mark.anyio, pytest.mark.usefixtures("prefect_api", "fast_approval_polls")]

DEPLOYMENT = "airlock-promote/suspend-test"


def _serve(prefect_api: str, setup: Setup, flow: str) -> Iterator[None]:
    """flows.promote's `flow` served as a deployment (`suspend-test`) by a separate process."""
    code = f"from flows.promote import {flow}; {flow}.serve(name='suspend-test')"
    with serving(prefect_api, setup.path, code):
        yield


@pytest.fixture
def served(prefect_api: str, setup: Setup) -> Iterator[None]:
    yield from _serve(prefect_api, setup, "promote")


async def _gate_runs(run_id: UUID) -> list[Any]:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    async with get_client() as client:
        runs = await client.read_task_runs(
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[run_id]))
        )
    return [r for r in runs if r.name.startswith("gate-")]


async def test_a_long_approval_suspends_and_resumes_without_judging_gates_again(
    setup: Setup, served: None, prefect_api: str
) -> None:
    cli_env = {"PREFECT_API_URL": prefect_api}
    since = dt.datetime.now(dt.UTC)
    from prefect.deployments import run_deployment

    # qa: a scan gate and a long approval; the deployment promotes dev → qa
    setup.write(
        gates={
            "qa": [
                {"kind": "scan"},
                {"kind": "approval", "policy": {"required": 1}, "timeout": "2h"},
            ]
        }
    )
    img = await push_with_evidence(setup, "suspended", "1.0")
    await deployment_ready(DEPLOYMENT)
    run = await run_deployment(
        DEPLOYMENT,
        parameters={
            "image": setup.ref("dev", "1.0"),
            "to_stage": "qa",
            "requester": "ci",
        },
        timeout=0,
    )
    suspended = await wait_for_state(run.id, lambda s: s.is_paused() and s.name == "Suspended")
    assert suspended.state_details.pause_reschedule  # suspended, not a paused process
    assert setup.digest("qa", "1.0") is None
    first = await _gate_runs(run.id)
    assert [r.name for r in first] == ["gate-scan"]

    # evidence changes while it waits: a CRITICAL scan is attached — the judged one stands
    await attach_evidence(setup.reg, img, scan=CRITICAL_SCAN)
    await wait_for_approval_request(lambda r: r.id == run.id, since=since)
    approved = await run_cli(
        "approve", str(run.id), "--by", "alice", "--comment", "ship it", env=cli_env
    )
    assert approved.returncode == 0, approved.stderr
    done = await wait_for_state(run.id, lambda s: s.is_final())
    assert done.is_completed(), done
    assert setup.digest("qa", "1.0") == img.digest
    again = await _gate_runs(run.id)
    scans = [r for r in again if r.name == "gate-scan"]
    assert all(r.state is not None and r.state.name in ("Completed", "Cached") for r in scans)
    [record] = [r for r in await setup.records("qa", img.digest) if r.stage == "qa"]
    assert [a.approver for a in record.approvals] == ["alice"]
    assert [g.passed for g in record.gates if g.gate == "scan"] == [True]


PIPELINE = "airlock-pipeline/suspend-test"


@pytest.fixture
def served_pipeline(prefect_api: str, setup: Setup) -> Iterator[None]:
    """As promote-on-push: a deployment of the pipeline flow."""
    yield from _serve(prefect_api, setup, "pipeline")


async def test_a_deployed_pipeline_suspends_itself_for_each_long_approval_in_turn(
    setup: Setup, served_pipeline: None, prefect_api: str
) -> None:
    """A push-triggered pipeline's approval holds no process: the pipeline run itself suspends,
    once per image, and every resume promotes the digests its first start found — a tag moved
    in dev while it waits changes nothing."""
    from prefect.deployments import run_deployment

    from flows.approvals import read_request

    cli_env = {"PREFECT_API_URL": prefect_api}
    since = dt.datetime.now(dt.UTC)
    setup.write(
        gates={
            "qa": [{"kind": "scan"}],
            "staging": [{"kind": "approval", "policy": {"required": 1}, "timeout": "2h"}],
        },
        staging={"immutable": False},
    )
    one = await push_with_evidence(setup, "pipeline-suspended-1", "1.0")
    two = await push_with_evidence(setup, "pipeline-suspended-2", "2.0")
    await deployment_ready(PIPELINE)
    run = await run_deployment(
        PIPELINE,
        parameters={
            "images": [setup.ref("dev", "1.0"), setup.ref("dev", "2.0")],
            "until": "staging",
            "requester": "ci",
        },
        timeout=0,
    )
    seen: set[UUID] = set()
    asked = []
    for tag in ("1.0", "2.0"):
        waiting = await wait_for_approval_request(lambda r: r.id == run.id, since=since, seen=seen)
        assert waiting.state.name == "Suspended" and waiting.state.state_details.pause_reschedule
        request = await read_request(run.id)
        assert request is not None
        asked.append((request["target"], request["digest"]))
        if tag == "1.0":
            # both passed qa as one batch before the first wait; staging has neither yet
            assert (
                setup.digest("qa", "1.0") == one.digest and setup.digest("qa", "2.0") == two.digest
            )
            assert setup.digest("staging", "1.0") is None
            # the insider's move while it waits: dev/app:1.0 now names another build
            moved = await push_with_evidence(setup, "pipeline-suspended-moved", "1.0")
            assert setup.digest("dev", "1.0") == moved.digest != one.digest
        approved = await run_cli("approve", str(run.id), "--by", "alice", env=cli_env)
        assert approved.returncode == 0, approved.stderr

    done = await wait_for_state(run.id, lambda s: s.is_final())
    assert done.is_completed(), done
    assert asked == [
        (setup.ref("staging", "1.0"), one.digest),
        (setup.ref("staging", "2.0"), two.digest),
    ]
    assert setup.digest("staging", "1.0") == setup.digest("qa", "1.0") == one.digest
    assert setup.digest("staging", "2.0") == two.digest
    for img, tag in ((one, "1.0"), (two, "2.0")):
        [record] = [r for r in await setup.records("staging", img.digest) if r.stage == "staging"]
        assert [a.approver for a in record.approvals] == ["alice"], tag
        assert record.flow_run_id == str(run.id)
