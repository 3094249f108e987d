"""A gate kind is one declaration and one `register` call: nothing else is edited.

The toy kind below is declared here, in the test, and registered for these tests only; with it
pipeline.yaml accepts `{kind: toy, policy: {...}}` with its typed policy (and refuses a bad one),
and a real hop (a real registry, no mocks) evaluates it.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import Field

import gates.kinds
from flows.config import load
from flows.hops import clients, evaluate, resolve
from gates.base import GateResult, Policy
from gates.kinds import Candidate, Gate
from registry.errors import BadInputError
from tests.flows.helpers import Setup
from tests.support.registries import Reg

# ---------------------------------------------------------------------------- the toy kind


class ToyPolicy(Policy):
    max_layers: int = Field(ge=0)


class ToyGate(Gate[ToyPolicy, int]):
    """An image may have at most `max_layers` layers."""

    name = "toy"
    policy = ToyPolicy

    async def collect(self, candidate: Candidate, policy: ToyPolicy) -> int:
        return len(candidate.manifest.layers)

    def evaluate(
        self, evidence: int, policy: ToyPolicy, candidate: Candidate, now: dt.datetime | None = None
    ) -> GateResult:
        passed = evidence <= policy.max_layers
        verdict = "passed" if passed else "refused"
        return GateResult(gate=self.name, passed=passed, summary=f"{verdict}: {evidence} layers")


@pytest.fixture
def toy() -> Iterator[Gate[Any, Any]]:
    """The toy kind, registered for one test and gone after it (other tests see the five)."""
    yield gates.kinds.register(ToyGate())
    gates.kinds.unregister("toy")


def toy_pipeline(tmp_path: Path, reg: Reg, policy: dict[str, Any]) -> Setup:
    setup = Setup(reg, tmp_path / "pipeline.yaml")
    setup.write(gates={"qa": [{"kind": "toy", "policy": policy}]})
    return setup


# ---------------------------------------------------------------------------- pipeline.yaml


def test_pipeline_yaml_accepts_the_kind_with_its_typed_policy(
    toy: Gate[Any, Any], tmp_path: Path, registry: Reg
) -> None:
    config = load(toy_pipeline(tmp_path, registry, {"max_layers": 3}).path).stage("qa").gates[0]
    assert config.kind == "toy" and config.gate is toy
    assert isinstance(config.policy, ToyPolicy) and config.policy.max_layers == 3
    assert config.model_dump(mode="json")["policy"] == {"max_layers": 3}  # as the file says


@pytest.mark.parametrize(
    ("policy", "needle"),
    [
        ({"max_layers": -1}, "toy policy.max_layers: Input should be greater than or equal to 0"),
        ({"max_layers": 1, "maxx": 2}, "toy policy.maxx: unknown key"),
        ({}, "toy policy.max_layers: Field required"),
    ],
)
def test_pipeline_yaml_refuses_a_bad_policy(
    toy: Gate[Any, Any], tmp_path: Path, registry: Reg, policy: dict[str, Any], needle: str
) -> None:
    setup = toy_pipeline(tmp_path, registry, policy)
    with pytest.raises(BadInputError) as info:
        load(setup.path)
    assert f"stages[1: qa].gates[0]: {needle}" in str(info.value)


def test_once_unregistered_the_kind_is_unknown(tmp_path: Path, registry: Reg) -> None:
    setup = toy_pipeline(tmp_path, registry, {"max_layers": 3})
    with pytest.raises(BadInputError) as info:
        load(setup.path)
    message = str(info.value)
    known = "'tests', 'scan', 'signature', 'approval', 'soak' or 'provenance'"
    assert f"gates[0].kind: must be {known}" in message


# ---------------------------------------------------------------------------- a real hop


@pytest.mark.anyio
@pytest.mark.parametrize(("max_layers", "passed"), [(2, True), (1, False)])
async def test_a_hop_evaluates_the_kind(
    toy: Gate[Any, Any], tmp_path: Path, registry: Reg, max_layers: int, passed: bool
) -> None:
    setup = toy_pipeline(tmp_path, registry, {"max_layers": max_layers})
    setup.push("toy")  # two layers
    pipeline = load(setup.path)
    qa = pipeline.stage("qa")
    async with clients(pipeline, pipeline.previous(qa), qa) as opened:
        hop = await resolve(pipeline, setup.ref("dev"), "qa", opened)
        result = await evaluate(qa.gates[0], hop, opened["local"])
    assert (result.gate, result.passed) == ("toy", passed)
    assert result.summary.endswith("2 layers")
    assert GateResult.model_validate_json(result.model_dump_json()) == result  # as records do
