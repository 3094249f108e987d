"""A person approves a release into prod in the Prefect UI, in a real (headless) browser (#16).

A registry, `prefect server start` with its UI, and a pipeline dev → qa → prod [one approval];
the release shop:1.0 (api and worker) is created and promoted to qa with the CLI, then
`airlock promote …/releases/shop:1.0 --to prod` waits for the approval. Chromium (Debian's,
driven by selenium) opens the waiting run, reads the request in the Resume dialog — the
release's digest, which the decision names, and every member by digest — and approves; the
promotion then ends with both members in prod. Screenshots of every step go to
$AIRLOCK_TEST_ARTIFACTS/ui-release/ (default: pytest's tmp dir). Every process started here is
stopped by PID at the end.
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import yaml

from airlock.localregistry import start_registry
from airlock.supervisor import PrefectServer
from tests.support import browser
from tests.support import images as im
from tests.support.browser import step
from tests.support.cli import AIRLOCK, airlock
from tests.support.registries import reg_of

pytestmark = pytest.mark.anyio
WAIT = 120.0


@dataclass
class Waiting:
    server: PrefectServer
    host: str  # the registry
    run_id: str
    release: str  # its digest
    members: dict[str, str]  # name → digest
    promotion: subprocess.Popen


def _paused_run(api: str, promotion: subprocess.Popen, deadline: float) -> str:
    """The flow run that pauses for the approval (polled, not slept for)."""
    while time.monotonic() < deadline:
        if promotion.poll() is not None:
            out, err = promotion.communicate()
            raise AssertionError(f"the promotion ended instead of waiting:\n{out}\n{err}")
        runs = httpx.post(f"{api}/flow_runs/filter", json={}, timeout=30).json()
        for run in runs:
            if (run.get("state") or {}).get("type") == "PAUSED":
                return str(run["id"])
        time.sleep(0.2)
    raise AssertionError("no run paused for the release's approval")


@pytest.fixture(scope="module")
def waiting(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Waiting]:
    browser.require_chromium()
    base = tmp_path_factory.mktemp("ui-release")
    registry = start_registry(base / "registry")
    (base / "prefect").mkdir()
    server = PrefectServer(base / "prefect", ui=True)
    promotion: subprocess.Popen | None = None
    try:
        server.start()
        stages = [
            {"name": "dev", "registry": "local", "repository": "dev/{name}"},
            {"name": "qa", "registry": "local", "repository": "qa/{name}"},
            {
                "name": "prod",
                "registry": "local",
                "repository": "prod/{name}",
                "gates": [{"kind": "approval", "policy": {"required": 1}, "timeout": "10m"}],
            },
        ]
        pipeline = base / "pipeline.yaml"
        doc = {"registries": {"local": {"url": registry.host}}, "stages": stages}
        pipeline.write_text(yaml.safe_dump(doc, sort_keys=False))
        reg = reg_of(registry)
        members = {"api": im.multi_platform("ui-rel-api"), "worker": im.image("ui-rel-worker")}
        for name, img in members.items():
            reg.pusher.push(f"dev/{name}", img, "1.0")
        refs = [f"{registry.host}/dev/{name}:1.0" for name in members]
        made = airlock("release", "create", "shop:1.0", *refs, "--pipeline", str(pipeline))
        assert made.returncode == 0, made.stderr
        release = made.stdout.splitlines()[0]
        ref = f"{registry.host}/dev/releases/shop:1.0"
        env = {**server.client_env(), "AIRLOCK_PIPELINE": str(pipeline)}
        qa = airlock("promote", ref, "--to", "qa", "--pipeline", str(pipeline), env=env)
        assert qa.returncode == 0, qa.stderr
        promotion = subprocess.Popen(
            [
                AIRLOCK,
                "promote",
                ref,
                "--to",
                "prod",
                "--by",
                "ci",
                "--pipeline",
                str(pipeline),
            ],
            env={**os.environ, **env},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        run_id = _paused_run(server.api, promotion, time.monotonic() + WAIT)
        digests = {name: img.digest for name, img in members.items()}
        yield Waiting(server, registry.host, run_id, release, digests, promotion)
    finally:
        if promotion is not None and promotion.poll() is None:
            promotion.kill()
            promotion.wait()
        server.stop()
        registry.stop()


@pytest.fixture(scope="module")
def shots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = os.environ.get("AIRLOCK_TEST_ARTIFACTS")
    where = (Path(base).resolve() if base else tmp_path_factory.mktemp("shots")) / "ui-release"
    where.mkdir(parents=True, exist_ok=True)
    return where


def test_a_person_approves_a_release_seeing_every_member(shots: Path, waiting: Waiting) -> None:
    with browser.chromium() as driver:
        with step(driver, shots, "01-waiting-release"):
            driver.get(f"{waiting.server.url}/v2/runs/flow-run/{waiting.run_id}")
            browser.wait_for_state(driver, "Paused")

        with step(driver, shots, "02-resume-dialog"):
            dialog = browser.open_resume_dialog(driver)
            request = browser.request_text(driver, dialog)
            assert "Approve releases/shop into prod?" in request, request
            assert waiting.release in request, request  # the decision names the release
            assert "The release's 2 members, each by digest" in request, request
            for name, digest in waiting.members.items():
                shown = f"{name} {digest[:19]}… to {waiting.host}/prod/{name}:1.0"
                assert shown in request, (name, request)  # the digest, and the tag it will move

        with step(driver, shots, "03-form-filled"):
            browser.choose(driver, dialog, "Decision", "approve")
            browser.type_into(browser.field(dialog, "Approver"), "release-manager")
            digest_field = browser.field(dialog, "Digest")
            if (digest_field.get_attribute("value") or "") != waiting.release:
                browser.type_into(digest_field, waiting.release)
        browser.screenshot_whole_dialog(driver, dialog, shots / "release-approval-request.png")

        with step(driver, shots, "04-resumed"):
            browser.submit(driver, dialog)

    _, err = waiting.promotion.communicate(timeout=WAIT)
    assert waiting.promotion.returncode == 0, err
    for name, digest in waiting.members.items():
        r = httpx.head(
            f"http://{waiting.host}/v2/prod/{name}/manifests/1.0",
            headers={"Accept": im.ACCEPT},
        )
        assert r.headers.get("docker-content-digest") == digest, name
