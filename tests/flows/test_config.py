"""pipeline.yaml: what loads, and bad input as one line that names the file and the place in it.

No Prefect here (and no registry): flows/config.py only reads and validates.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import pytest
import yaml

from flows.config import Pipeline, load
from registry.errors import BadInputError
from registry.reference import parse
from tests.flows.helpers import default_stages

HOST = "127.0.0.1:5000"


def doc(**top: Any) -> dict[str, Any]:
    d: dict[str, Any] = {"registries": {"local": {"url": HOST}}, "stages": default_stages()}
    d.update(top)
    return d


def write(tmp_path: Path, content: dict[str, Any] | str) -> Path:
    path = tmp_path / "pipeline.yaml"
    text = content if isinstance(content, str) else yaml.safe_dump(content, sort_keys=False)
    path.write_text(text)
    return path


def stage(d: dict[str, Any], name: str) -> dict[str, Any]:
    return next(s for s in d["stages"] if s["name"] == name)


def bad(tmp_path: Path, content: dict[str, Any] | str, *needles: str) -> str:
    """Loading refuses with one line naming the file and each needle (the place, the problem)."""
    path = write(tmp_path, content)
    with pytest.raises(BadInputError) as info:
        load(path)
    message = str(info.value)
    assert "\n" not in message, message
    assert str(path) in message, message
    for needle in needles:
        assert needle in message, message
    return message


# ---------------------------------------------------------------------------- what loads


def test_the_default_pipeline_loads(tmp_path: Path) -> None:
    pipeline = load(write(tmp_path, doc()))
    assert [s.name for s in pipeline.stages] == ["dev", "qa", "staging", "prod"]
    qa, prod = pipeline.stage("qa"), pipeline.stage("prod")
    assert [g.kind for g in qa.gates] == ["tests", "scan"]
    assert prod.immutable and not qa.immutable
    assert prod.gates[0].timeout == dt.timedelta(seconds=60)
    assert pipeline.previous(prod).name == "staging"
    found, name = pipeline.locate(parse(f"{HOST}/qa/web:2.0"))
    assert (found.name, name) == ("qa", "web")
    assert str(pipeline.reference(prod, "web")).startswith(f"{HOST}/prod/web")


def test_durations_and_tag_rules(tmp_path: Path) -> None:
    d = doc()
    stage(d, "staging")["gates"] = [{"kind": "soak", "policy": {"min": "90m"}}]
    stage(d, "prod")["gates"][0]["timeout"] = "PT2H"
    stage(d, "qa")["tag"] = "{tag}-{stage}"
    pipeline = load(write(tmp_path, d))
    assert pipeline.stage("staging").gates[0].policy.min == dt.timedelta(minutes=90)
    assert pipeline.stage("prod").gates[0].timeout == dt.timedelta(hours=2)
    assert pipeline.stage("qa").tag_for("1.0", "sha256:" + "a" * 64) == "1.0-qa"


def test_registry_urls_are_normalised(tmp_path: Path) -> None:
    pipeline = load(write(tmp_path, doc(registries={"local": {"url": f"http://{HOST}/"}})))
    assert pipeline.registries["local"].url == HOST


# ---------------------------------------------------------------------------- bad input


def test_unknown_top_level_key(tmp_path: Path) -> None:
    bad(tmp_path, doc(stagse=[]), "stagse", "unknown key")


def test_unknown_stage_key(tmp_path: Path) -> None:
    d = doc()
    stage(d, "prod")["immutible"] = True
    bad(tmp_path, d, "stages[3: prod].immutible", "unknown key")


def test_unknown_gate_key(tmp_path: Path) -> None:
    d = doc()
    stage(d, "qa")["gates"][0]["polcy"] = {}
    bad(tmp_path, d, "stages[1: qa].gates[0].polcy", "unknown key")


def test_unknown_registry_key(tmp_path: Path) -> None:
    bad(tmp_path, doc(registries={"local": {"url": HOST, "insecur": True}}), "local.insecur")


def test_unknown_gate_kind(tmp_path: Path) -> None:
    d = doc()
    stage(d, "qa")["gates"][0]["kind"] = "lint"
    message = bad(tmp_path, d, "stages[1: qa].gates[0].kind")
    for allowed in ("tests", "scan", "signature", "approval", "soak"):
        assert allowed in message  # what is allowed


def test_duplicate_stage_names(tmp_path: Path) -> None:
    d = doc()
    stage(d, "staging")["name"] = "qa"
    bad(tmp_path, d, "unique", "qa")


def test_unknown_registry_alias(tmp_path: Path) -> None:
    d = doc()
    stage(d, "prod")["registry"] = "remote"
    bad(tmp_path, d, "prod", "'remote'", "local")  # the stage, the alias, the ones defined


@pytest.mark.parametrize("value", ["3 fortnights", "soon", "1h30", "10y"])
def test_bad_approval_timeout(tmp_path: Path, value: str) -> None:
    d = doc()
    stage(d, "prod")["gates"][0]["timeout"] = value
    bad(tmp_path, d, "stages[3: prod].gates[0].timeout")


@pytest.mark.parametrize("value", ["-5m", "-PT5M", -30, "0s"])
def test_an_approval_timeout_that_is_not_positive_is_refused(tmp_path: Path, value: Any) -> None:
    """A zero or negative wait can only ever refuse: that is a mistake in the file."""
    d = doc()
    stage(d, "prod")["gates"][0]["timeout"] = value
    bad(tmp_path, d, "stages[3: prod].gates[0].timeout")


@pytest.mark.parametrize("value", ["a week", "-PT1H"])
def test_bad_soak_duration(tmp_path: Path, value: str) -> None:
    d = doc()
    stage(d, "staging")["gates"] = [{"kind": "soak", "policy": {"min": value}}]
    bad(tmp_path, d, "stages[2: staging].gates[0]", "min")


def test_bad_policy_key(tmp_path: Path) -> None:
    d = doc()
    stage(d, "qa")["gates"][1]["policy"] = {"fail_onn": "HIGH"}
    bad(tmp_path, d, "stages[1: qa].gates[1]", "fail_onn", "unknown key")


def test_bad_policy_value(tmp_path: Path) -> None:
    d = doc()
    stage(d, "qa")["gates"][1]["policy"] = {"fail_on": "SEVERE"}
    bad(tmp_path, d, "stages[1: qa].gates[1]", "fail_on", "SEVERE", "CRITICAL")


def test_an_approval_policy_that_can_never_pass(tmp_path: Path) -> None:
    d = doc()
    stage(d, "prod")["gates"][0]["policy"] = {"required": 3, "approvers": ["alice", "bob"]}
    bad(tmp_path, d, "stages[3: prod].gates[0]", "never pass")


def test_a_gate_on_the_first_stage(tmp_path: Path) -> None:
    d = doc()
    stage(d, "dev")["gates"] = [{"kind": "tests"}]
    bad(tmp_path, d, "dev", "first stage")


def test_fewer_than_two_stages(tmp_path: Path) -> None:
    bad(tmp_path, doc(stages=default_stages()[:1]), "stages")


@pytest.mark.parametrize(
    "repository",
    [
        "QA/{name}",  # uppercase
        "qa//{name}",  # empty component
        "qa/{name}/",
        "localhost:5000/qa/{name}",  # a registry inside the repository
        "qa/{name}:1.0",  # a tag is not part of a repository name
        "qa/{name}@sha256:" + "a" * 64,  # nor is a digest
    ],
)
def test_a_repository_that_is_not_a_valid_name(tmp_path: Path, repository: str) -> None:
    d = doc()
    stage(d, "qa")["repository"] = repository
    bad(tmp_path, d, "stages[1: qa].repository")


@pytest.mark.parametrize("tag", ["{tag} candidate", "{version}", "{tag}/{stage}", "{"])
def test_a_tag_rule_that_cannot_make_a_tag(tmp_path: Path, tag: str) -> None:
    d = doc()
    stage(d, "qa")["tag"] = tag
    bad(tmp_path, d, "stages[1: qa].tag")


def test_a_registry_url_that_is_not_a_host(tmp_path: Path) -> None:
    bad(tmp_path, doc(registries={"local": {"url": "not a host"}}), "registries.local.url")


def test_a_stage_name_that_is_not_allowed(tmp_path: Path) -> None:
    d = doc()
    stage(d, "qa")["name"] = "QA Stage"
    bad(tmp_path, d, "stages[1: QA Stage].name")


def test_credentials_need_exactly_one_source(tmp_path: Path) -> None:
    registries = {"local": {"url": HOST, "credentials": {}}}
    bad(tmp_path, doc(registries=registries), "registries.local.credentials", "env or block")


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("registries: {}\nregistries: {}\nstages: []\n", "duplicate key 'registries'"),
        ("- just\n- a list\n", "mapping"),
        ("stages: [\n", "line"),
        ("", "registries"),
    ],
)
def test_files_that_are_not_a_pipeline(tmp_path: Path, text: str, needle: str) -> None:
    bad(tmp_path, text, needle)


def test_a_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.yaml"
    with pytest.raises(BadInputError, match=r"nope\.yaml"):
        load(path)


def test_unknown_stage_name_when_used(tmp_path: Path) -> None:
    pipeline = load(write(tmp_path, doc()))
    with pytest.raises(BadInputError, match=r"unknown stage 'uat'.*dev, qa, staging, prod"):
        pipeline.stage("uat")
    with pytest.raises(BadInputError, match="first stage"):
        pipeline.previous(pipeline.stage("dev"))


def test_an_image_outside_the_pipeline(tmp_path: Path) -> None:
    pipeline: Pipeline = load(write(tmp_path, doc()))
    with pytest.raises(BadInputError, match="not in any stage"):
        pipeline.locate(parse(f"{HOST}/elsewhere/app:1.0"))
    with pytest.raises(BadInputError, match="not in any stage"):
        pipeline.locate(parse("otherhost:5000/dev/app:1.0"))


@pytest.mark.parametrize(
    ("publish", "ok"),
    [
        ("shop.example.com/{name}", True),
        ("127.0.0.1:9000/customers/{name}", True),
        ("shop.example.com/{name}:1.0", False),
        ("shop.example.com/{name}@sha256:" + "a" * 64, False),
        ("Shop.example.com/UPPER/{name}", False),
    ],
)
def test_publish_names_a_repository(tmp_path: Path, publish: str, ok: bool) -> None:
    d = doc()
    stage(d, "prod")["publish"] = publish
    path = write(tmp_path, d)
    if ok:
        assert (
            load(path).stage("prod").published("app", "1.0")
            == publish.replace("{name}", "app") + ":1.0"
        )
    else:
        with pytest.raises(BadInputError, match="publish"):
            load(path)
