"""prefect.yaml: `prefect deploy --all` accepts it, and it agrees with pipeline.yaml."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from flows.config import load
from flows.deployments import PREFECT_YAML, first_stage_match, runner_deployments
from gates.yamlfile import read_mapping
from tests.support.prefect import deploy_all

ROOT = Path(__file__).resolve().parents[2]
NAMES = {"promote-on-push", "promote", "drift-watch", "rescan"}


def test_the_push_trigger_watches_the_example_pipelines_first_stage() -> None:
    doc = read_mapping(PREFECT_YAML, "prefect.yaml")
    by_name = {d["name"]: d for d in doc["deployments"]}
    assert set(by_name) == NAMES
    [trigger] = by_name["promote-on-push"]["triggers"]
    assert trigger["expect"] == ["airlock.image.pushed"]
    assert trigger["match"]["airlock.repository"] == first_stage_match(load(ROOT / "pipeline.yaml"))
    # every templated parameter is one expression, made a string, with a default
    templates = [*trigger["parameters"]["images"], trigger["parameters"]["requester"]]
    for template in templates:
        assert template.startswith("{{") and template.endswith("}}"), template
        assert "| default(" in template and "| string" in template, template


@pytest.mark.anyio
async def test_served_deployments_are_bound_to_the_pipeline_given(tmp_path: Path) -> None:
    pipeline = tmp_path / "p.yaml"
    pipeline.write_text(
        "registries: {r: {url: 'reg.example'}}\n"
        "stages:\n"
        "  - {name: build, registry: r, repository: 'ci/{name}/out'}\n"
        "  - {name: live, registry: r, repository: 'live/{name}'}\n"
    )
    made = {d.name: d for d in await runner_deployments(pipeline, schedules=False)}
    assert set(made) == NAMES
    assert all("pipeline_file" not in d.parameters for d in made.values())  # no run chooses it
    [trigger] = made["promote-on-push"].triggers
    assert trigger.match.model_dump()["airlock.repository"] == "ci/*/out"
    assert not made["drift-watch"].schedules
    scheduled = await runner_deployments(pipeline)
    assert [len(d.schedules or []) for d in scheduled if d.name in ("drift-watch", "rescan")] == [
        1,
        1,
    ]


def test_prefect_deploy_all_accepts_the_file(prefect_api: str) -> None:
    """The real `prefect deploy --all`, against the test server, with the work pool it names
    created as docs/deployments.md says (work-pool.json: no run may override a job variable)."""
    env = {**os.environ, "PREFECT_API_URL": prefect_api}
    deploy_all(ROOT, env)
    from prefect.client.base import PrefectHttpxSyncClient

    # Prefect's own HTTP client: it retries the 503 a busy SQLite server answers under load.
    api = PrefectHttpxSyncClient(base_url=prefect_api, timeout=30, raise_on_all_errors=False)
    found = api.post(
        "/deployments/filter", json={"work_pools": {"name": {"any_": ["airlock"]}}}
    ).json()
    assert {d["name"] for d in found} == NAMES
    # a process worker starts runs in a temporary directory: they must go to the checkout
    step = {"prefect.deployments.steps.set_working_directory": {"directory": str(ROOT)}}
    assert all(d["pull_steps"] == [step] for d in found), [d["pull_steps"] for d in found]
    on_push = next(d for d in found if d["name"] == "promote-on-push")
    automations = api.post("/automations/filter", json={}).json()
    owned = [
        a
        for a in automations
        if any(act.get("deployment_id") == on_push["id"] for act in a["actions"])
    ]
    assert [a["trigger"]["expect"] for a in owned] == [["airlock.image.pushed"]]

    # A run may not change what its deployment runs with: the pool's template has no variables,
    # so a job variable (the pipeline's path, a working directory, a command) is refused.
    promote_id = next(d["id"] for d in found if d["name"] == "promote")
    run = {"parameters": {"image": "r.example/dev/app:1.0", "to_stage": "qa"}}
    for override in (
        {"env": {"AIRLOCK_PIPELINE": "/tmp/gateless.yaml"}},
        {"working_dir": "/tmp"},
        {"command": "sh -c 'echo owned'"},
    ):
        refused = api.post(
            f"/deployments/{promote_id}/create_flow_run", json={**run, "job_variables": override}
        )
        assert refused.status_code == 422, (override, refused.status_code, refused.text)
    plain = api.post(f"/deployments/{promote_id}/create_flow_run", json=run)
    assert plain.status_code == 201, plain.text  # (never picked up: no worker here)
    assert api.delete(f"/flow_runs/{plain.json()['id']}").is_success


@pytest.mark.anyio
async def test_the_run_form_offers_the_stages_and_asks_who_requests(
    tmp_path: Path, prefect_api: str
) -> None:
    """Served with a pipeline whose prod asks for an approval: to_stage is a choice of the
    stages after the first, and a run without a requester is refused by the server when it is
    created (the form says "required"), not failed after Submit."""
    from prefect.client.orchestration import get_client

    pipeline = tmp_path / "p.yaml"
    pipeline.write_text(
        "registries: {r: {url: 'reg.example'}}\n"
        "stages:\n"
        "  - {name: dev, registry: r, repository: 'dev/{name}'}\n"
        "  - {name: prod, registry: r, repository: 'prod/{name}',"
        " gates: [{kind: approval}]}\n"
    )
    made = {d.name: d for d in await runner_deployments(pipeline, schedules=False)}
    promote = made["promote"]
    schema = promote._parameter_openapi_schema
    assert schema.properties["to_stage"]["enum"] == ["prod"]
    assert "requester" in schema.required
    assert schema.properties["image"]["examples"] == ["reg.example/dev/app:1.0"]
    assert all(p.get("description") for p in schema.properties.values())
    deployment_id = await promote.apply()
    async with get_client() as client:
        with pytest.raises(Exception, match="requester"):
            await client.create_flow_run_from_deployment(
                deployment_id, parameters={"image": "reg.example/dev/app:1.0", "to_stage": "prod"}
            )
        with pytest.raises(Exception, match="staging"):
            await client.create_flow_run_from_deployment(
                deployment_id,
                parameters={
                    "image": "reg.example/dev/app:1.0",
                    "to_stage": "staging",
                    "requester": "carol",
                },
            )
