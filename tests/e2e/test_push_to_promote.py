"""End to end, as a team would run it: a registry notifies the webhook receiver, the receiver
emits Prefect events, the Prefect server (on PostgreSQL) triggers promote-on-push, and the
deployments served by `airlock serve` promote the image — every part a real process.

The registry is configured with two notification endpoints that both point at the receiver, so
every push is delivered twice with the same event id: a redelivery, made by the registry itself.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from airlock.demo import Api
from airlock.localregistry import free_port, start_registry
from airlock.supervisor import spawn as _spawn
from airlock.supervisor import stop, wait_http
from registry import mediatypes as mt
from tests.flows.helpers import CRITICAL_SCAN, Setup, attach, attach_evidence, scan_of
from tests.support import images as im
from tests.support.cli import AIRLOCK
from tests.support.evidence import push_after_evidence
from tests.support.images import Pusher
from tests.support.prefect import Postgres, PrefectServer
from tests.support.registries import Reg

pytestmark = pytest.mark.anyio

TOKEN = "registry-notification-token-e2e"
CI_SECRET = "ci-hmac-secret-e2e"
USER, PASSWORD = "alice", "e2e-registry-pw-4f7c"
BASIC = base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
SECRETS = (TOKEN, CI_SECRET, PASSWORD, BASIC)
WAIT = 120.0


@dataclass
class Stack:
    setup: Setup
    server: PrefectServer
    receiver: str  # http://127.0.0.1:PORT
    logs: Path

    def api(self, method: str, path: str, body: Any = None) -> Any:
        r = httpx.request(method, f"{self.server.api}{path}", json=body, timeout=30)
        assert r.status_code < 300, (path, r.status_code, r.text)
        return r.json() if r.content else None

    def runs(self, deployment: str) -> list[dict[str, Any]]:
        dep = self.api("GET", f"/deployments/name/{deployment}")
        return self.api(
            "POST", "/flow_runs/filter", {"flow_runs": {"deployment_id": {"any_": [dep["id"]]}}}
        )

    def runs_of(self, image: str) -> list[dict[str, Any]]:
        return [
            r
            for r in self.runs("airlock-pipeline/promote-on-push")
            if any(image in i for i in r["parameters"].get("images", []))
        ]

    def run(self, run_id: str) -> dict[str, Any]:
        return self.api("GET", f"/flow_runs/{run_id}")

    def wait(self, what: str, check: Any, timeout: float = WAIT) -> Any:
        """Poll the API until `check()` gives something truthy (a state, not a sleep)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            got = check()
            if got:
                return got
            time.sleep(0.3)
        raise AssertionError(f"{what}: not within {timeout:.0f} s; logs in {self.logs}")

    def final(self, run_id: str) -> dict[str, Any]:
        return self.wait(
            f"flow run {run_id} to end",
            lambda: (
                (r := self.run(run_id))["state"]["type"]
                in ("COMPLETED", "FAILED", "CRASHED", "CANCELLED")
                and r
            ),
        )

    def event(self, name: str, **payload: str) -> dict[str, Any] | None:
        """The newest event `name` whose payload has these values (events are stored in
        batches: callers poll)."""
        body = {"filter": {"event": {"name": [name]}}}
        for event in self.api("POST", "/events/filter", body)["events"]:
            if all(event["payload"].get(k) == v for k, v in payload.items()):
                return event
        return None

    def start(self, deployment: str) -> str:
        dep = self.api("GET", f"/deployments/name/{deployment}")
        return self.api("POST", f"/deployments/{dep['id']}/create_flow_run", {})["id"]


@pytest.fixture(scope="module")
def stack(
    tmp_path_factory: pytest.TempPathFactory, prefect_server: PrefectServer
) -> Iterator[Stack]:
    base = tmp_path_factory.mktemp("e2e")
    docker_config = base / "docker-config"
    docker_config.mkdir()
    receiver_port = free_port()
    receiver = f"http://127.0.0.1:{receiver_port}"
    endpoint = {
        "url": f"{receiver}/registry",
        "headers": {"Authorization": [f"Bearer {TOKEN}"]},
        "timeout": "5s",
        "threshold": 10,
        "backoff": "1s",
    }
    # The registry wants a password (htpasswd): airlock reads it from the environment variables
    # pipeline.yaml names; this process (the test's own reads and pushes) from a docker config.
    line = subprocess.run(
        ["htpasswd", "-Bbn", USER, PASSWORD], capture_output=True, text=True, check=True
    ).stdout
    (base / "htpasswd").write_text(line)
    server = start_registry(
        base / "registry",
        auth={"htpasswd": {"realm": "airlock-e2e", "path": str(base / "htpasswd")}},
        extra={
            "notifications": {
                "endpoints": [
                    {"name": "airlock", **endpoint},
                    {"name": "airlock-redelivery", **endpoint},
                ]
            }
        },
    )
    (docker_config / "config.json").write_text(
        json.dumps({"auths": {server.host: {"auth": BASIC}}})
    )
    reg = Reg(server, Pusher(server.url, headers={"Authorization": f"Basic {BASIC}"}))
    setup = Setup(reg, base / "pipeline.yaml")
    setup.write()
    setup.doc["registries"]["local"]["credentials"] = {
        "env": {"username": "E2E_REGISTRY_USER", "password": "E2E_REGISTRY_PASSWORD"}
    }
    setup.path.write_text(yaml.safe_dump(setup.doc, sort_keys=False))
    monkeypatch = pytest.MonkeyPatch()
    monkeypatch.setenv("DOCKER_CONFIG", str(docker_config))
    env = prefect_server.env(
        DOCKER_CONFIG=str(base / "no-docker-config"),  # airlock gets nothing but the variables
        E2E_REGISTRY_USER=USER,
        E2E_REGISTRY_PASSWORD=PASSWORD,
        AIRLOCK_WEBHOOK_TOKEN=TOKEN,
        AIRLOCK_CI_SECRET=CI_SECRET,
        PREFECT_RUNNER_POLL_FREQUENCY="1",
        PREFECT_LOGGING_LEVEL="INFO",
    )
    procs = [
        _spawn(
            [AIRLOCK, "webhooks", "serve", "--port", str(receiver_port), "--pipeline", setup.file],
            env,
            base / "receiver.log",
        ),
        _spawn(
            [AIRLOCK, "serve", "--pipeline", setup.file, "--no-schedules"], env, base / "serve.log"
        ),
    ]
    try:
        wait_http(f"{receiver}/healthz", procs[0], base / "receiver.log")
        s = Stack(setup, prefect_server, receiver, base)
        s.wait(
            "the served deployments",
            lambda: len(s.api("POST", "/deployments/filter", {})) >= 4,
        )
        yield s
    finally:
        monkeypatch.undo()
        for proc in procs:
            stop(proc)
        reg.pusher.close()
        server.stop()


async def test_a_push_runs_the_pipeline_once_through_staging_and_prod_waits_for_approval(
    stack: Stack, postgres: Postgres
) -> None:
    setup = stack.setup
    img = await push_after_evidence(stack.setup.reg, "e2e-push", "1.0")

    # exactly one pipeline run, though the registry delivered the push twice
    [run] = stack.wait(
        "a pipeline run for the push", lambda: stack.runs_of(f"dev/app:1.0@{img.digest}")
    )
    assert run["parameters"]["images"] == [f"{setup.host}/dev/app:1.0@{img.digest}"]

    # dev → qa → staging by itself; prod waits for a person
    requests = Api(stack.server.api)
    paused = stack.wait("prod's approval request", lambda: requests.waiting_approval("app:1.0"))
    assert setup.digest("qa") == setup.digest("staging") == img.digest
    assert setup.digest("prod") is None
    approved = subprocess.run(
        [AIRLOCK, "approve", paused["id"], "--by", "bob"],
        env=stack.server.env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert approved.returncode == 0, approved.stderr
    done = stack.final(run["id"])
    assert done["state"]["type"] == "COMPLETED", done["state"]
    assert setup.digest("prod") == img.digest
    [record] = [r for r in await setup.records("prod", img.digest) if r.stage == "prod"]
    assert [a.approver for a in record.approvals] == ["bob"]
    assert record.requester == USER  # who pushed, as the registry authenticated them

    # both deliveries reached the receiver, and still one run; the server kept it in PostgreSQL
    log = (stack.logs / "receiver.log").read_text()
    assert log.count(f"registry push {setup.host}/dev/app:1.0@{img.digest}") == 2, log
    assert len(stack.runs_of(f"dev/app:1.0@{img.digest}")) == 1
    run_id = str(uuid.UUID(run["id"]))  # a UUID: safe to put in the query
    assert postgres.query(f"select count(*) from flow_run where id = '{run_id}'") == "1"  # noqa: S608


def _ci(stack: Stack, body: bytes, secret: str, delivery: str) -> httpx.Response:
    signature = "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    return httpx.post(
        f"{stack.receiver}/ci",
        content=body,
        headers={
            "Content-Type": "application/json",
            "X-Hub-Signature-256": signature,
            "X-GitHub-Delivery": delivery,
        },
    )


async def test_a_ci_call_with_a_bad_signature_starts_nothing_and_a_signed_one_starts_a_run(
    stack: Stack,
) -> None:
    setup = stack.setup
    img = im.image("e2e-ci")
    setup.reg.pusher.push("dev/ci", img, "2.0")  # a tag push: its own run (image dev/ci)
    await attach_evidence(setup.reg, img, repo="dev/ci")
    ref = f"{setup.host}/dev/ci:2.0"
    body = json.dumps({"image": ref, "requester": "jenkins", "timestamp": int(time.time())})
    body = body.encode()

    forged = _ci(stack, body, "not-the-secret", "delivery-1")
    assert forged.status_code == 401
    assert CI_SECRET not in forged.text
    signed = _ci(stack, body, CI_SECRET, "delivery-2")
    assert signed.status_code == 202, signed.text

    runs = stack.wait(
        "the signed CI call's run",
        lambda: [
            r
            for r in stack.runs("airlock-pipeline/promote-on-push")
            if r["parameters"].get("images") == [ref]
        ],
    )
    assert len(runs) == 1  # the forged call made none
    assert runs[0]["parameters"]["requester"] == "jenkins"


async def test_drift_watch_finds_a_tag_moved_behind_airlocks_back(stack: Stack) -> None:
    setup = stack.setup
    first = stack.final(stack.start("airlock-drift-watch/drift-watch"))
    assert first["state"]["type"] == "COMPLETED", first["state"]  # nothing moved yet

    intruder = im.image("e2e-intruder")
    setup.reg.pusher.push("staging/app", intruder, "1.0")  # straight into staging, no gates
    done = stack.final(stack.start("airlock-drift-watch/drift-watch"))
    assert done["state"]["type"] == "FAILED"
    message = done["state"]["message"]
    assert f"{setup.host}/staging/app:1.0 moved behind airlock's back" in message, message
    assert intruder.digest in message
    [artifact] = stack.api(
        "POST",
        "/artifacts/filter",
        {"artifacts": {"flow_run_id": {"any_": [done["id"]]}, "key": {"any_": ["airlock-drift"]}}},
    )
    assert intruder.digest in json.dumps(artifact["data"])
    stack.wait(
        "the airlock.drift.detected event",
        lambda: stack.event("airlock.drift.detected", now=intruder.digest),
    )


async def test_rescan_fails_when_a_newer_report_has_a_critical(stack: Stack) -> None:
    setup = stack.setup
    passed = stack.final(stack.start("airlock-rescan/rescan"))
    assert passed["state"]["type"] == "COMPLETED", passed["state"]

    prod_image = im.image("e2e-push")
    digest = prod_image.digest
    assert setup.digest("prod") == digest  # promoted by the first test of this module
    critical = scan_of(prod_image, CRITICAL_SCAN, "prod/app")
    await attach(setup.reg, "prod/app", prod_image, mt.SCAN_REPORT_TRIVY, critical)
    done = stack.final(stack.start("airlock-rescan/rescan"))
    assert done["state"]["type"] == "FAILED"
    assert f"prod/app@{digest}" in done["state"]["message"]
    assert "CRITICAL" in done["state"]["message"], done["state"]["message"]
    image = f"{setup.host}/prod/app@{digest}"
    stack.wait(
        "the airlock.rescan.failed event", lambda: stack.event("airlock.rescan.failed", image=image)
    )


def _pages(stack: Stack, path: str) -> list[Any]:
    """Every object a Prefect filter endpoint returns, page by page."""
    out: list[Any] = []
    while True:
        page = stack.api("POST", path, {"limit": 200, "offset": len(out)})
        out.extend(page)
        if len(page) < 200:
            return out


async def test_no_secret_is_anywhere(stack: Stack, monkeypatch: pytest.MonkeyPatch) -> None:
    """Last in this module, after promotions, approvals, a refused CI call, drift and a rescan
    ran with a registry password, a notification token and a CI secret: none of them (nor the
    Basic header made of the password) is in a log line, an artifact, a flow or task run, an
    event, a deployment, a promotion record, or the repr of the objects that hold them."""
    places: dict[str, str] = {
        path.name: path.read_text(errors="replace") for path in stack.logs.glob("*.log")
    }
    places["prefect server log"] = (stack.server.home / "server.log").read_text(errors="replace")
    for what in ("logs", "artifacts", "flow_runs", "task_runs", "deployments", "automations"):
        places[what] = json.dumps(_pages(stack, f"/{what}/filter"))
    assert '"airlock.image.pushed"' in places["automations"]  # the places are not empty
    events = stack.api("POST", "/events/filter", {"limit": 50})
    places["events"] = json.dumps(events)
    for stage in ("qa", "staging", "prod"):
        places[f"{stage} records"] = json.dumps(
            [r.model_dump(mode="json") for r in await stack.setup.history(stage)]
        )
    assert "bob" in places["prod records"] and USER in places["prod records"]

    from flows.blocks import RegistryCredentials
    from flows.config import load
    from registry.auth import Credentials
    from registry.client import RegistryClient
    from webhooks.app import Settings

    monkeypatch.setenv("E2E_REGISTRY_USER", USER)
    monkeypatch.setenv("E2E_REGISTRY_PASSWORD", PASSWORD)
    pipeline = load(stack.setup.file)
    resolved = await pipeline.registries["local"].resolve_credentials()
    assert resolved is not None and resolved.password == PASSWORD  # it does hold the secret
    client = RegistryClient(stack.setup.host, credentials=resolved)
    objects = [
        resolved,
        Credentials(USER, PASSWORD),
        client,
        client.auth,
        RegistryCredentials(username=USER, password=PASSWORD),
        Settings(pipeline, TOKEN, CI_SECRET, stack.server.api, {"Authorization": f"Basic {BASIC}"}),
    ]
    for obj in objects:
        places[f"repr({type(obj).__name__})"] = f"{obj!r} {obj}"
    await client.aclose()

    for place, text in places.items():
        for secret in SECRETS:
            assert secret not in text, f"a secret ({secret[:3]}…) is in {place}"
