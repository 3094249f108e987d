"""Scale-out with real workers: `prefect deploy --all` onto the `airlock` process pool, two
`prefect worker start --pool airlock` processes, and a burst of pushes announced by CI through
`airlock webhooks serve` — the way a team runs airlock when one machine is not enough.

The Prefect server is the e2e one (PostgreSQL). The registry sits behind the fault proxy, so the
test sees every request in the order it arrived, and can hold one to kill a worker mid-hop.
"""

from __future__ import annotations

import hashlib
import hmac
import itertools
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest

from airlock.localregistry import free_port, start_registry
from airlock.supervisor import spawn, stop, wait_http
from flows.records import HISTORY_TAG
from tests.flows.helpers import Setup, default_stages
from tests.support.cli import AIRLOCK, airlock
from tests.support.evidence import push_after_evidence
from tests.support.faultproxy import Fault, FaultProxy
from tests.support.prefect import PrefectServer, deploy_all
from tests.support.registries import ProxiedReg, reg_of

pytestmark = pytest.mark.anyio

ROOT = Path(__file__).resolve().parents[2]
CI_SECRET = "ci-hmac-secret-workers"
WAIT = 240.0
BURST = ("b1", "b2", "b3", "b4")
T = TypeVar("T")


@dataclass
class Workers:
    setup: Setup
    server: PrefectServer
    receiver: str
    workers: list[subprocess.Popen]
    logs: Path

    @property
    def reg(self) -> ProxiedReg:
        assert isinstance(self.setup.reg, ProxiedReg)
        return self.setup.reg

    def api(self, method: str, path: str, body: Any = None) -> Any:
        r = httpx.request(method, f"{self.server.api}{path}", json=body, timeout=30)
        assert r.status_code < 300, (path, r.status_code, r.text)
        return r.json() if r.content else None

    def runs_of(self, ref: str) -> list[dict[str, Any]]:
        dep = self.api("GET", "/deployments/name/airlock-pipeline/promote-on-push")
        runs = self.api(
            "POST", "/flow_runs/filter", {"flow_runs": {"deployment_id": {"any_": [dep["id"]]}}}
        )
        return [r for r in runs if ref in r["parameters"].get("images", [])]

    def state(self, run_id: str) -> dict[str, Any]:
        return self.api("GET", f"/flow_runs/{run_id}")["state"]

    def ci(self, ref: str) -> None:
        """What CI sends after its push: the image, signed with the shared secret."""
        body = json.dumps({"image": ref, "requester": "ci", "timestamp": int(time.time())})
        signature = hmac.new(CI_SECRET.encode(), body.encode(), hashlib.sha256).hexdigest()
        r = httpx.post(
            f"{self.receiver}/ci",
            content=body,
            headers={
                "Content-Type": "application/json",
                "X-Hub-Signature-256": f"sha256={signature}",
                "X-GitHub-Delivery": f"delivery-{ref}",
            },
        )
        assert r.status_code == 202, r.text

    def until(self, what: str, check: Callable[[], T | None], timeout: float = WAIT) -> T:
        """Poll until `check()` gives something truthy (a state change, not a sleep)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if got := check():
                return got
            for worker in self.workers:
                if worker.returncode is None:
                    assert worker.poll() is None, f"a worker died; logs in {self.logs}"
            time.sleep(0.3)
        raise AssertionError(f"{what}: not within {timeout:.0f} s; logs in {self.logs}")


def _run_processes(run_id: str) -> list[int]:
    """PIDs of the processes running flow run `run_id` (a process worker names the run in its
    child's environment)."""
    wanted = f"PREFECT__FLOW_RUN_ID={run_id}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if wanted in (entry / "environ").read_bytes().split(b"\0"):
                found.append(int(entry.name))
        except OSError:  # gone, or not ours
            continue
    return found


def _parent(pid: int) -> int:
    stat = Path(f"/proc/{pid}/stat").read_text()
    return int(stat.rsplit(")", 1)[1].split()[1])


def _kill_run_and_its_worker(stack: Workers, run_id: str) -> None:
    """SIGKILL the process running the flow run and the worker that started it: the machine
    is gone."""
    [pid] = _run_processes(run_id)
    ours = {w.pid: w for w in stack.workers}
    worker = pid
    while worker not in ours:
        worker = _parent(worker)
        assert worker > 1, "the run's process is not a child of any worker"
    os.kill(pid, signal.SIGKILL)
    os.kill(worker, signal.SIGKILL)
    ours[worker].wait()


@pytest.fixture(scope="module")
def stack(
    tmp_path_factory: pytest.TempPathFactory, prefect_server: PrefectServer
) -> Iterator[Workers]:
    base = tmp_path_factory.mktemp("workers")
    registry = start_registry(base / "registry")
    proxy = FaultProxy(registry.host).start()
    plain = reg_of(registry)
    reg = ProxiedReg(**{f.name: getattr(plain, f.name) for f in fields(plain)}, proxy=proxy)
    setup = Setup(reg, base / "pipeline.yaml")
    # dev → qa [tests, scan] → prod [an approval long enough to suspend its run]
    setup.write(
        stages=[s for s in default_stages() if s["name"] != "staging"],
        gates={"prod": [{"kind": "approval", "policy": {"required": 1}, "timeout": "1h"}]},
    )
    env = prefect_server.env(PREFECT_LOGGING_LEVEL="INFO", AIRLOCK_CI_SECRET=CI_SECRET)
    deploy_all(ROOT, env)
    port = free_port()
    receiver = spawn(
        [AIRLOCK, "webhooks", "serve", "--port", str(port), "--pipeline", setup.file],
        env,
        base / "receiver.log",
    )
    # what the workers' runs read: the pipeline; and a quick poll of the pool
    worker_env = {**env, "AIRLOCK_PIPELINE": str(setup.path), "PREFECT_WORKER_QUERY_SECONDS": "1"}
    start = [sys.executable, "-m", "prefect", "worker", "start", "--pool", "airlock"]
    workers = [
        spawn(
            [*start, "--name", name, "--limit", "2"],
            worker_env,
            base / f"{name}.log",
            cwd=ROOT,
        )
        for name in ("worker-1", "worker-2")
    ]
    try:
        wait_http(f"http://127.0.0.1:{port}/healthz", receiver, base / "receiver.log")
        yield Workers(setup, prefect_server, f"http://127.0.0.1:{port}", workers, base)
    finally:
        for proc in [receiver, *workers]:
            stop(proc)
        proxy.stop()
        reg.pusher.close()
        registry.stop()


async def test_a_burst_is_promoted_once_each_serialised_across_workers_and_approvals_suspend(
    stack: Workers,
) -> None:
    setup = stack.setup
    images = {tag: await push_after_evidence(setup.reg, f"burst-{tag}", tag) for tag in BURST}
    for tag in BURST:
        stack.ci(setup.ref("dev", tag))

    def suspended() -> list[dict[str, Any]] | None:
        runs = [r[0] for tag in BURST if (r := stack.runs_of(setup.ref("dev", tag)))]
        states = [stack.state(r["id"]) for r in runs]
        ended = [s for s in states if s["type"] in ("COMPLETED", "FAILED", "CRASHED")]
        assert not ended, f"{ended[0]}; logs in {stack.logs}"
        done = [r for r, s in zip(runs, states, strict=True) if s["name"] == "Suspended"]
        return done if len(done) == len(BURST) else None

    runs = stack.until("every image waiting for prod's approval", suspended)

    # exactly once: one run per push, one qa record per digest, the digest pushed
    for tag, img in images.items():
        assert len(stack.runs_of(setup.ref("dev", tag))) == 1
        assert setup.digest("qa", tag) == img.digest
        qa = [r for r in await setup.records("qa", img.digest) if r.stage == "qa"]
        assert len(qa) == 1, (tag, qa)
        assert setup.digest("prod", tag) is None

    # both workers ran some of them (each takes at most two at a time)
    ids = {r["id"] for r in runs}
    for name in ("worker-1", "worker-2"):
        log = (stack.logs / f"{name}.log").read_text()
        assert any(i in log for i in ids), f"{name} ran none of the burst; see its log"

    # serialised per repository, across both workers: in the order the registry received them,
    # every release tag moved in qa/app is followed by its history entry before the next moves
    moves = [
        "tag" if s.target.rsplit("/", 1)[-1] in BURST else "history"
        for s in stack.reg.faults.requests("PUT", "/v2/qa/app/manifests/")
        if s.target.rsplit("/", 1)[-1] in (*BURST, HISTORY_TAG)
    ]
    assert moves.count("tag") == len(BURST)
    assert "tag" not in (a for a, b in itertools.pairwise(moves) if a == b), moves

    # suspended: no process waits for the approvals (the runs' processes have exited)
    for run in runs:
        stack.until(f"run {run['id']}'s process to exit", lambda r=run: not _run_processes(r["id"]))
        assert stack.state(run["id"])["state_details"]["pause_reschedule"]

    # an approval resumes its run on a worker, which finishes the hop
    first = next(r for r in runs if setup.ref("dev", "b1") in r["parameters"]["images"])
    approved = airlock("approve", first["id"], "--by", "bob", env=stack.server.env())
    assert approved.returncode == 0, approved.stderr
    stack.until(
        "the approved run to complete", lambda: stack.state(first["id"])["type"] == "COMPLETED"
    )
    assert setup.digest("prod", "b1") == images["b1"].digest


async def test_a_worker_killed_mid_hop_leaves_a_state_a_rerun_completes(stack: Workers) -> None:
    setup = stack.setup
    # qa's record is the first plain upload into qa/app after the tag moved (the image's own
    # blobs are mounted): hold it, so the hop is caught between its tag and its record
    held = stack.reg.faults.add(Fault(method="POST", path=r"/v2/qa/app/blobs/uploads/$", delay=600))
    img = await push_after_evidence(setup.reg, "killed-mid-hop", "k1")
    ref = setup.ref("dev", "k1")
    stack.ci(ref)
    stack.until("the hop to reach its record", lambda: held.hits == 1)
    [run] = stack.runs_of(ref)
    _kill_run_and_its_worker(stack, run["id"])

    # the machine is gone between the tag and the record
    assert setup.digest("qa", "k1") == img.digest
    assert [r for r in await setup.records("qa", img.digest) if r.stage == "qa"] == []
    stack.reg.faults.clear()

    # a rerun (on the surviving worker, once the dead holder's lock lease ran out) completes it
    dep = stack.api("GET", "/deployments/name/airlock-pipeline/promote-on-push")
    again = stack.api(
        "POST",
        f"/deployments/{dep['id']}/create_flow_run",
        {"parameters": {"images": [ref], "until": "qa", "requester": "ci"}},
    )
    final = stack.until(
        "the rerun to end",
        lambda: (s := stack.state(again["id"]))["type"] in ("COMPLETED", "FAILED", "CRASHED") and s,
    )
    assert final["type"] == "COMPLETED", final
    [record] = [r for r in await setup.records("qa", img.digest) if r.stage == "qa"]
    assert record.flow_run_id == again["id"]
    assert setup.digest("qa", "k1") == img.digest


def _run_and_wait(stack: Workers, deployment: str, parameters: dict[str, Any]) -> dict[str, Any]:
    """A run of the deployment (flow/deployment name), on the workers, to its final state."""
    dep = stack.api("GET", f"/deployments/name/{deployment}")
    run = stack.api("POST", f"/deployments/{dep['id']}/create_flow_run", {"parameters": parameters})
    final = ("COMPLETED", "FAILED", "CRASHED")
    return stack.until(
        f"{deployment} to end", lambda: (s := stack.state(run["id"]))["type"] in final and s
    )


async def test_a_release_whose_worker_is_killed_while_tags_move_is_reported_then_completed(
    stack: Workers,
) -> None:
    """#16: the worker is killed (SIGKILL) while the release's tags move in qa: api's and
    chart's moved, worker's on its way. drift-watch (a deployment run, on the real
    server, once the dead holder's lock lease ran out) reports qa holding part of the release;
    a rerun completes it, and drift-watch is clean again."""
    setup = stack.setup
    members = {
        name: await push_after_evidence(
            setup.reg, f"killed-release-{name}", "r1", repo=f"dev/{name}"
        )
        for name in ("api", "worker", "chart")
    }
    refs = [setup.ref("dev", "r1", name=name) for name in members]
    made = airlock("release", "create", "shop:r1", *refs, "--pipeline", setup.file)
    assert made.returncode == 0, made.stderr
    ref = setup.ref("dev", "r1", name="releases/shop")
    held = stack.reg.faults.add(
        Fault(method="PUT", path=r"/v2/qa/worker/manifests/r1$", delay=600, status=503)
    )
    dep = stack.api("GET", "/deployments/name/airlock-pipeline/promote-on-push")
    run = stack.api(
        "POST",
        f"/deployments/{dep['id']}/create_flow_run",
        {"parameters": {"images": [ref], "until": "qa", "requester": "ci"}},
    )
    # the members' tags move side by side: worker's is held, api's and chart's go through
    stack.until(
        "api's and chart's tags to move, worker's to be held",
        lambda: (
            held.hits == 1
            and setup.digest("qa", "r1", name="api") == members["api"].digest
            and setup.digest("qa", "r1", name="chart") == members["chart"].digest
        ),
    )
    _kill_run_and_its_worker(stack, run["id"])
    stack.reg.faults.clear()
    # a new worker takes the dead one's place
    stack.workers.append(
        spawn(
            [sys.executable, "-m", "prefect", "worker", "start", "--pool", "airlock", "--name",
             "worker-3", "--limit", "2"],
            {**stack.server.env(), "AIRLOCK_PIPELINE": setup.file,
             "PREFECT_WORKER_QUERY_SECONDS": "1"},
            stack.logs / "worker-3.log",
            cwd=ROOT,
        )
    )  # fmt: skip

    assert setup.tags("qa", name="worker") == []
    assert setup.tags("qa", name="releases/shop") == []  # copied by digest, not tagged

    watched = _run_and_wait(stack, "airlock-drift-watch/drift-watch", {})
    assert watched["type"] == "FAILED", watched
    assert "holds 2 of 3 members of release shop:r1 (not worker)" in watched["message"], watched

    again = _run_and_wait(
        stack,
        "airlock-pipeline/promote-on-push",
        {"images": [ref], "until": "qa", "requester": "ci"},
    )
    assert again["type"] == "COMPLETED", again
    for name, img in members.items():
        assert setup.digest("qa", "r1", name=name) == img.digest
        records = [r for r in await setup.history("qa", name=name) if r.stage == "qa"]
        assert len(records) == 1 and records[0].part_of == "shop:r1"
    assert setup.digest("qa", "r1", name="releases/shop") == setup.digest(
        "dev", "r1", name="releases/shop"
    )
    assert _run_and_wait(stack, "airlock-drift-watch/drift-watch", {})["type"] == "COMPLETED"
