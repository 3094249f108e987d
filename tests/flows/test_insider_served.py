"""Insider attacks through the Prefect API/UI on served deployments (a separate process serving
`promote` and `pipeline`, as `airlock serve` does): a run that names its own policy, a tag moved
while a suspended promotion waits, and Retry after a rejection.

The served process reads the pipeline from AIRLOCK_PIPELINE, as `airlock serve --pipeline`
binds it; each test rewrites that one file for its own registry.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest
import yaml

from tests.flows.helpers import (
    CRITICAL_SCAN,
    Setup,
    attach_evidence,
    deployment_ready,
    push_with_evidence,
    run_state,
    serving,
    wait_for_approval_request,
    wait_for_state,
)
from tests.support.cli import run_cli
from tests.support.registries import Reg

pytestmark = [pytest.mark.anyio, pytest.mark.usefixtures("prefect_api", "fast_approval_polls")]

PROMOTE = "airlock-promote/insider"
PIPELINE = "airlock-pipeline/insider"


@pytest.fixture(scope="module")
def pipeline_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("served") / "pipeline.yaml"


@pytest.fixture(scope="module")
def served(prefect_api: str, pipeline_path: Path) -> Iterator[None]:
    """promote and pipeline served by a process of their own."""
    code = (
        "import flows.approvals as a; a.APPROVAL_POLL_SECONDS = 0.2\n"
        "from prefect import serve\n"
        "from flows.promote import pipeline, promote\n"
        "serve(promote.to_deployment(name='insider'), pipeline.to_deployment(name='insider'))\n"
    )
    with serving(prefect_api, pipeline_path, code):
        yield


@pytest.fixture
def setup(
    registry: Reg, pipeline_path: Path, served: None, monkeypatch: pytest.MonkeyPatch
) -> Setup:
    """The default pipeline, written where the served process reads it."""
    s = Setup(registry, pipeline_path)
    s.write()
    monkeypatch.setenv("AIRLOCK_PIPELINE", str(pipeline_path))  # what this process reads too
    return s


async def _run(deployment: str, **kw: Any) -> Any:
    from prefect.deployments import run_deployment

    await deployment_ready(deployment)
    return await run_deployment(deployment, timeout=0, **kw)


async def _retry(run_id: UUID) -> None:
    """What the (V1) UI's Retry does to a failed run: schedule it again, through the server's
    orchestration rules."""
    from prefect.client.orchestration import get_client
    from prefect.states import AwaitingRetry

    async with get_client() as client:
        await client.set_flow_run_state(run_id, AwaitingRetry(message="Retry from the UI"))


async def _reject(run_id: UUID, since: dt.datetime, env: dict[str, str]) -> None:
    await wait_for_approval_request(lambda r: r.id == run_id, since=since)
    rejected = await run_cli("approve", str(run_id), "--by", "bob", "--reject", env=env)
    assert rejected.returncode == 0, rejected.stderr


async def _after_retry(run_id: UUID, paused_before: set[str]) -> Any:
    """The state the retried run settles in: final again, or paused for approval again."""

    def settled(state: Any) -> bool:
        return state.is_final() or (state.is_paused() and str(state.id) not in paused_before)

    return await wait_for_state(run_id, settled)


async def _pauses(run_id: UUID) -> set[str]:
    from prefect.client.orchestration import get_client

    async with get_client() as client:
        return {str(s.id) for s in await client.read_flow_run_states(run_id) if s.is_paused()}


def _gateless(tmp_path: Path, setup: Setup) -> Path:
    """The same pipeline without qa's gates: what an insider would like a run to use."""
    doc = yaml.safe_load(setup.path.read_text())
    doc["stages"][1]["gates"] = []
    path = tmp_path / "gateless.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


async def test_a_run_cannot_choose_its_own_policy(setup: Setup, tmp_path: Path) -> None:
    """A CRITICAL image, and a run from the API that names a gate-less pipeline file (as a
    parameter, or through job variables): the deployment's own pipeline judges it."""
    img = setup.push("critical-via-api")
    await attach_evidence(setup.reg, img, scan=CRITICAL_SCAN)
    gateless = str(_gateless(tmp_path, setup))
    image = {"image": setup.ref("dev"), "to_stage": "qa", "requester": "mallory"}

    # not a parameter of the flow: the run never starts the flow (Prefect refuses to call it
    # with an argument it does not take), whatever the server let through
    with_parameter = await _run(PROMOTE, parameters={**image, "pipeline_file": gateless})
    done = await wait_for_state(with_parameter.id, lambda s: s.is_final())
    assert done.is_crashed() or done.is_failed(), done
    assert setup.tags("qa") == []

    with_env = await _run(
        PROMOTE, parameters=image, job_variables={"env": {"AIRLOCK_PIPELINE": gateless}}
    )
    done = await wait_for_state(with_env.id, lambda s: s.is_final())
    assert done.is_failed() and "qa: scan gate refused" in (done.message or ""), done.message
    assert setup.tags("qa") == [] and setup.digest("qa", img.digest) is None


async def test_a_moved_tag_never_swaps_the_digest_a_resumed_run_promotes(
    setup: Setup, prefect_api: str
) -> None:
    """A promotion suspended for approval is resumed after the tag moved to another digest
    that would pass the gates too: the run promotes the digest it asked about, or nothing."""
    env = {"PREFECT_API_URL": prefect_api}
    setup.write(gates={"qa": [{"kind": "tests"}, {"kind": "approval", "timeout": "2h"}]})
    asked = await push_with_evidence(setup, "asked-about", "1.0")
    since = dt.datetime.now(dt.UTC)
    run = await _run(
        PROMOTE, parameters={"image": setup.ref("dev"), "to_stage": "qa", "requester": "ci"}
    )
    await wait_for_state(run.id, lambda s: s.is_paused() and s.name == "Suspended")
    swapped = await push_with_evidence(setup, "swapped-in", "1.0")  # dev/app:1.0 moves
    assert setup.digest("dev") == swapped.digest

    await wait_for_approval_request(lambda r: r.id == run.id, since=since)
    wrong = await run_cli(
        "approve", str(run.id), "--by", "alice", "--digest", swapped.digest, env=env
    )
    assert wrong.returncode == 1 and "not " + swapped.digest in wrong.stderr, wrong.stderr
    assert (await run_state(run.id)).is_paused()  # nothing was sent
    approved = await run_cli("approve", str(run.id), "--by", "alice", env=env)
    assert approved.returncode == 0, approved.stderr
    assert asked.digest in approved.stdout

    done = await wait_for_state(run.id, lambda s: s.is_final())
    assert done.is_completed(), done
    assert setup.digest("qa") == asked.digest
    assert setup.digest("qa", swapped.digest) is None
    [record] = await setup.records("qa", asked.digest)
    assert [(a.approver, a.digest) for a in record.approvals] == [("alice", asked.digest)]


async def test_retry_after_a_rejection_stays_rejected(setup: Setup, prefect_api: str) -> None:
    """The V1 UI's Retry goes through the server's rules, which reset the run's pauses: Prefect
    alone would show the form again. (The V2 UI forces the state, keeping the pause keys, and
    Prefect hands back the old rejection; the stored decision refuses first either way.)"""
    env = {"PREFECT_API_URL": prefect_api}
    setup.write(gates={"qa": [{"kind": "approval", "timeout": "5m"}]})
    img = setup.push("rejected-once")
    since = dt.datetime.now(dt.UTC)
    run = await _run(
        PROMOTE, parameters={"image": setup.ref("dev"), "to_stage": "qa", "requester": "ci"}
    )
    await _reject(run.id, since, env)
    failed = await wait_for_state(run.id, lambda s: s.is_final())
    assert failed.is_failed() and "rejected by bob" in (failed.message or "")

    paused = await _pauses(run.id)
    await _retry(run.id)
    again = await _after_retry(run.id, paused)
    assert again.is_failed(), f"the retried run asked again: {again}"
    assert "rejected by bob" in (again.message or ""), again.message
    assert setup.digest("qa", img.digest) is None


async def test_retrying_the_pipeline_run_keeps_its_hops_rejection(
    setup: Setup, prefect_api: str
) -> None:
    """In a push-triggered pipeline run each hop is a subflow, and Retry starts new ones: the
    rejection is kept on the pipeline run, so the new hop finds it."""
    env = {"PREFECT_API_URL": prefect_api}
    setup.write(gates={"qa": [{"kind": "approval", "timeout": "5m"}]})
    img = setup.push("rejected-in-pipeline")
    since = dt.datetime.now(dt.UTC)
    run = await _run(
        PIPELINE,
        parameters={"images": [setup.ref("dev")], "until": "qa", "requester": "ci"},
    )
    hop = await wait_for_approval_request(
        lambda r: (r.parameters or {}).get("to_stage") == "qa", since=since
    )
    await _reject(hop.id, since, env)
    failed = await wait_for_state(run.id, lambda s: s.is_final())
    assert failed.is_failed() and "rejected by bob" in (failed.message or ""), failed.message

    retried_at = dt.datetime.now(dt.UTC)
    await _retry(run.id)
    again = await wait_for_state(
        run.id, lambda s: s.is_final() and s.timestamp > retried_at and s.name != "AwaitingRetry"
    )
    assert again.is_failed() and "rejected by bob" in (again.message or ""), again.message
    assert setup.digest("qa", img.digest) is None
    # the new hop (a subflow of the retried run, done when it is) never asked again
    new_hops = [r for r in await _hop_runs(since=retried_at)]
    assert new_hops, "the retried pipeline run started no hop"
    for hop_run in new_hops:
        assert not await _pauses(hop_run.id), f"hop {hop_run.id} asked for approval again"


async def _hop_runs(since: dt.datetime) -> list[Any]:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterStartTime

    async with get_client() as client:
        runs = await client.read_flow_runs(
            flow_run_filter=FlowRunFilter(start_time=FlowRunFilterStartTime(after_=since))
        )
    return [r for r in runs if (r.parameters or {}).get("to_stage") == "qa"]
