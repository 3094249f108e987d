"""The deployments of prefect.yaml, served from this process (`airlock serve`, the demo).

prefect.yaml is the one description of airlock's deployments: `prefect deploy --all` registers it
on a work pool, and this module serves the same deployments with `prefect.serve` — the local
default, no pool or worker needed. Served, every run reads the pipeline given here (the serving
process exports it as AIRLOCK_PIPELINE, which its runs inherit and no run can change: the runner
starts runs with this process's environment, not with per-run job variables), and promote-on-push
watches that pipeline's first stage. The pipeline is not a parameter of any deployment: a run
from the UI or the API cannot choose its own policy.
"""

from __future__ import annotations

import importlib
import os
from pathlib import Path
from typing import Any

from flows.config import Pipeline, load
from gates.yamlfile import read_mapping
from registry.errors import BadInputError

# The packaged prefect.yaml: in a wheel, the copy pyproject.toml force-includes beside this module;
# in a checkout, the repository root's.
_HERE = Path(__file__).resolve().parent
PREFECT_YAML = next(
    (p for p in (_HERE / "prefect.yaml", _HERE.parent / "prefect.yaml") if p.is_file()),
    _HERE.parent / "prefect.yaml",
)


def prefect_yaml() -> Path:
    """The prefect.yaml `airlock serve` serves: ./prefect.yaml when the current directory has
    one, else the packaged copy (PREFECT_YAML)."""
    local = Path("prefect.yaml")
    return local.resolve() if local.is_file() else PREFECT_YAML


def first_stage_match(pipeline: Pipeline) -> str:
    """The `airlock.repository` pattern of the pipeline's first stage ({name} → *)."""
    return pipeline.stages[0].repository.replace("{name}", "*")


def _absolute(path: str | Path) -> str:
    return os.path.abspath(path)


def _flow(entrypoint: str) -> Any:
    path, _, name = entrypoint.partition(":")
    module = importlib.import_module(path.removesuffix(".py").replace("/", "."))
    return getattr(module, name)


async def runner_deployments(
    pipeline_file: str | Path, *, schedules: bool = True, spec: Path | None = None
) -> list[Any]:
    """RunnerDeployments for every deployment in `spec` (default: prefect_yaml()), bound to
    `pipeline_file`."""
    from prefect.events.schemas.deployment_triggers import DeploymentTriggerTypes
    from pydantic import TypeAdapter

    pipeline = load(_absolute(pipeline_file))
    spec = spec or prefect_yaml()
    doc = read_mapping(spec, "prefect.yaml")
    triggers = TypeAdapter(DeploymentTriggerTypes)
    out = []
    for d in doc.get("deployments") or []:
        if not isinstance(d, dict) or not d.get("name") or not d.get("entrypoint"):
            raise BadInputError(f"{spec}: every deployment needs a name and an entrypoint")
        parameters = d.get("parameters") or {}
        if "pipeline_file" in parameters:
            raise BadInputError(
                f"{spec}: deployment {d['name']}: pipeline_file is no longer a parameter (a run"
                " must not choose its policy); remove it: the pipeline is the one the serving"
                " process or worker is started with (AIRLOCK_PIPELINE, else ./pipeline.yaml)"
            )
        made = []
        for i, t in enumerate(d.get("triggers") or [], start=1):
            t = {**t, "name": t.get("name") or f"{d['name']}__automation_{i}"}
            if "airlock.repository" in (t.get("match") or {}):
                t["match"] = {**t["match"], "airlock.repository": first_stage_match(pipeline)}
            made.append(triggers.validate_python(t))
        crons = [s["cron"] for s in d.get("schedules") or [] if "cron" in s] if schedules else []
        deployment = await _flow(d["entrypoint"]).ato_deployment(
            name=d["name"],
            description=d.get("description"),
            parameters=parameters,
            triggers=made or None,
            cron=crons or None,
        )
        _run_form(deployment._parameter_openapi_schema, pipeline)
        out.append(deployment)
    return out


def _run_form(schema: Any, pipeline: Pipeline) -> None:
    """The run form as this pipeline needs it: stages are a choice of its stages, an example
    image names its first stage, and where any stage asks for an approval the requester is
    required (the form refuses to submit without it, instead of the run failing after)."""
    props = schema.properties
    later = [s.name for s in pipeline.stages[1:]]
    for name in ("to_stage", "until"):
        if name in props:
            choice = {"type": "string", "enum": later}
            if "anyOf" in props[name]:  # optional: keep "none"
                props[name]["anyOf"] = [choice, {"type": "null"}]
            else:
                props[name].update(choice)
    first = pipeline.reference(pipeline.stages[0], "app").with_tag("1.0")
    if "image" in props:
        props["image"]["examples"] = [str(first)]
    if "images" in props:
        props["images"]["examples"] = [[str(first)]]
    if "requester" in props and any(s.asks_approval for s in pipeline.stages[1:]):
        props["requester"] = {
            **{k: v for k, v in props["requester"].items() if k not in ("anyOf", "default")},
            "type": "string",
            "minLength": 1,
        }
        schema.required = [*(schema.required or []), "requester"]


async def serve(pipeline_file: str | Path, *, schedules: bool = True) -> None:
    """Serve every deployment until interrupted (runs start in subprocesses of this one, with
    this process's environment: AIRLOCK_PIPELINE binds them all to `pipeline_file`)."""
    from prefect import aserve

    deployments = await runner_deployments(pipeline_file, schedules=schedules)
    os.environ["AIRLOCK_PIPELINE"] = _absolute(pipeline_file)
    await aserve(*deployments)
