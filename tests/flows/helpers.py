"""Helpers for the flow tests: pipeline.yaml per registry, images with evidence, an approver.

Prefect is imported inside the functions that need it: tests/flows/conftest.py sets PREFECT_HOME
before Prefect is first imported, and test_config.py needs no Prefect at all.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import datetime as dt
import os
import sys
import time
from collections.abc import Awaitable, Callable, Coroutine, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar
from uuid import UUID

import httpx
import yaml

from airlock.supervisor import spawn, stop
from flows.records import PromotionRecord, history, records_for
from registry import mediatypes as mt
from registry.manifest import Descriptor
from registry.referrers import artifact, list_referrers, push_referrer
from tests.support import images as im
from tests.support.evidence import CRITICAL_SCAN as CRITICAL_SCAN
from tests.support.evidence import FAILING_TESTS as FAILING_TESTS
from tests.support.evidence import MEDIUM_SCAN, PASSING_TESTS, scan_of
from tests.support.registries import Reg

T = TypeVar("T")

WAIT = 60.0  # seconds any poll below waits for a state before failing the test


def default_stages() -> list[dict[str, Any]]:
    """dev → qa [tests, scan] → staging [soak, immutable] → prod [approval, immutable]."""
    return [
        {"name": "dev", "registry": "local", "repository": "dev/{name}"},
        {
            "name": "qa",
            "registry": "local",
            "repository": "qa/{name}",
            "gates": [{"kind": "tests"}, {"kind": "scan", "policy": {"fail_on": "HIGH"}}],
        },
        {
            "name": "staging",
            "registry": "local",
            "repository": "staging/{name}",
            "immutable": True,
            "gates": [{"kind": "soak", "policy": {"min": "0s"}}],
        },
        {
            "name": "prod",
            "registry": "local",
            "repository": "prod/{name}",
            "immutable": True,
            "gates": [{"kind": "approval", "policy": {"required": 1}, "timeout": "60s"}],
        },
    ]


@dataclass
class Setup:
    """A registry, the pipeline.yaml that uses it, and ways to look at each stage."""

    reg: Reg
    path: Path
    doc: dict[str, Any] = field(default_factory=dict)

    @property
    def host(self) -> str:
        return self.reg.host

    @property
    def file(self) -> str:
        return str(self.path)

    def write(
        self,
        *,
        stages: list[dict[str, Any]] | None = None,
        gates: dict[str, list[dict[str, Any]]] | None = None,
        **stage_changes: dict[str, Any],
    ) -> Path:
        """Write pipeline.yaml: the default stages, with `gates={stage: [...]}` replacing a
        stage's gates and `qa={"tag": ...}` etc. changing other keys of a stage."""
        stages = copy.deepcopy(stages or default_stages())
        by_name = {s["name"]: s for s in stages}
        for name, stage_gates in (gates or {}).items():
            by_name[name]["gates"] = stage_gates
        for name, changes in stage_changes.items():
            by_name[name].update(changes)
        self.doc = {"registries": {"local": {"url": self.host}}, "stages": stages}
        self.path.write_text(yaml.safe_dump(self.doc, sort_keys=False))
        return self.path

    def ref(self, stage: str, tag: str = "1.0", name: str = "app") -> str:
        return f"{self.host}/{stage}/{name}:{tag}"

    def at_digest(self, stage: str, digest: str, name: str = "app") -> str:
        return f"{self.host}/{stage}/{name}@{digest}"

    def digest(self, stage: str, tag: str = "1.0", name: str = "app") -> str | None:
        """What `stage/name:tag` serves, hashed here (independently of airlock)."""
        return self.reg.pusher.digest(f"{stage}/{name}", tag)

    def tags(self, stage: str, name: str = "app") -> list[str]:
        """Tags of the stage's repository, without referrer fallback tags and the history."""
        return [
            t
            for t in self.reg.pusher.tags(f"{stage}/{name}")
            if not t.startswith("sha256-") and t != "airlock.history"
        ]

    def catalog(self) -> list[str]:
        r = self.reg.pusher.http.get("/v2/_catalog")
        assert r.status_code == 200, r.text
        return sorted(r.json().get("repositories") or [])

    def push(self, seed: str, tag: str = "1.0", stage: str = "dev", name: str = "app") -> im.Image:
        img = im.image(seed)
        self.reg.pusher.push(f"{stage}/{name}", img, tag)
        return img

    async def records(self, stage: str, digest: str, name: str = "app") -> list[PromotionRecord]:
        async with self.reg.client() as client:
            return await records_for(client, f"{stage}/{name}", digest)

    async def history(self, stage: str, name: str = "app") -> list[PromotionRecord]:
        async with self.reg.client() as client:
            return await history(client, f"{stage}/{name}")

    async def referrers(self, stage: str, digest: str, name: str = "app") -> list[Descriptor]:
        """What the stage's repository lists as referrers of `digest`, records excluded."""
        async with self.reg.client() as client:
            listing = await list_referrers(client, f"{stage}/{name}", digest)
        return [d for d in listing.descriptors if d.artifact_type != mt.PROMOTION_RECORD]


# ---------------------------------------------------------------------------- evidence


def keypair(folder: Path, name: str) -> Path:
    """folder/NAME.key and folder/NAME.pub, a new key pair; returns the private key's path."""
    from gates.keys import generate

    private, public = generate()
    (folder / f"{name}.key").write_bytes(private)
    (folder / f"{name}.pub").write_bytes(public)
    return folder / f"{name}.key"


def subject_of(img: im.Image) -> Descriptor:
    return Descriptor(img.media_type, img.digest, len(img.raw))


async def attach(reg: Reg, repo: str, img: im.Image, artifact_type: str, payload: bytes) -> str:
    """Attach `payload` to img in repo as an OCI referrer (airlock's own writer, as `airlock
    attach` does); returns the referrer's digest."""
    manifest, blobs = artifact(subject_of(img), artifact_type, payload)
    async with reg.client() as client:
        assert await push_referrer(client, repo, manifest, blobs) == []
    return manifest.digest


@dataclass
class Evidence:
    tests: str  # referrer digests
    scan: str
    tests_bytes: bytes
    scan_bytes: bytes


async def attach_evidence(
    reg: Reg,
    img: im.Image,
    *,
    tests: Path = PASSING_TESTS,
    scan: Path = MEDIUM_SCAN,
    repo: str = "dev/app",
) -> Evidence:
    """A pytest report and a Trivy report about img, attached to it (passing by default)."""
    tests_bytes = tests.read_bytes()
    scan_bytes = scan_of(img, scan, repo)
    return Evidence(
        tests=await attach(reg, repo, img, mt.TEST_REPORT_PYTEST, tests_bytes),
        scan=await attach(reg, repo, img, mt.SCAN_REPORT_TRIVY, scan_bytes),
        tests_bytes=tests_bytes,
        scan_bytes=scan_bytes,
    )


async def push_with_evidence(setup: Setup, seed: str, tag: str = "1.0", **kw: Any) -> im.Image:
    img = setup.push(seed, tag)
    await attach_evidence(setup.reg, img, **kw)
    return img


# ---------------------------------------------------------------------------- Prefect


def promote_runs(image: str, to_stage: str | None = None) -> Callable[[Any], bool]:
    """Matches the promote flow runs of `image` (into `to_stage`); a pipeline's hops name it
    with the digest they carry too (`image@sha256:…`)."""

    def match(run: Any) -> bool:
        params = run.parameters or {}
        named = str(params.get("image")).split("@", 1)[0]
        return named == image and to_stage in (None, params.get("to_stage"))

    return match


async def wait_for_approval_request(
    match: Callable[[Any], bool],
    *,
    since: dt.datetime,
    seen: set[UUID] | None = None,
    timeout: float = WAIT,
) -> Any:
    """The flow run matching `match` (created after `since`) once it is paused for an approval
    it can take: its Paused state is new (not in `seen`) and the form's schema is saved (Prefect
    saves it after entering Paused, and rejects a resume that comes before). Polls the API."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        FlowRunFilter,
        FlowRunFilterState,
        FlowRunFilterStateType,
    )
    from prefect.client.schemas.objects import StateType
    from prefect.exceptions import ObjectNotFound

    paused = FlowRunFilter(
        state=FlowRunFilterState(type=FlowRunFilterStateType(any_=[StateType.PAUSED]))
    )
    deadline = time.monotonic() + timeout
    async with get_client() as client:
        while time.monotonic() < deadline:
            for run in await client.read_flow_runs(flow_run_filter=paused):
                state = run.state
                if not (match(run) and run.created and run.created >= since and state):
                    continue
                if seen is not None and state.id in seen:
                    continue
                keyset = state.state_details.run_input_keyset
                if not keyset:
                    continue
                try:
                    await client.read_flow_run_input(run.id, keyset["schema"])
                except (ObjectNotFound, httpx.HTTPStatusError):
                    continue  # paused, but the form is not saved yet
                if seen is not None:
                    seen.add(state.id)
                return run
            await asyncio.sleep(0.05)  # poll interval, not a wait for time to pass
    raise AssertionError(f"no flow run paused for approval within {timeout}s")


@dataclass
class Approver:
    """Gives decisions to a paused promotion one at a time, each to a new pause."""

    match: Callable[[Any], bool]
    decisions: list[tuple[str, str, str]]  # (approve|reject, approver, comment)
    since: dt.datetime = field(default_factory=lambda: dt.datetime.now(dt.UTC))
    given: list[tuple[UUID, str, str]] = field(default_factory=list)  # (run, decision, who)

    async def run(self) -> None:
        from prefect.flow_runs import resume_flow_run

        from flows.approvals import read_request

        seen: set[UUID] = set()
        for decision, approver, comment in self.decisions:
            run = await wait_for_approval_request(self.match, since=self.since, seen=seen)
            request = await read_request(run.id)  # what a person sees, as `airlock approve` does
            assert request is not None, f"flow run {run.id} waits without saying for what"
            await resume_flow_run(
                run.id,
                run_input={
                    "decision": decision,
                    "approver": approver,
                    "digest": request["digest"],
                    "comment": comment,
                },
            )
            self.given.append((run.id, decision, approver))

    @property
    def done(self) -> bool:
        return len(self.given) == len(self.decisions)


async def alongside(flow: Coroutine[Any, Any, T], helper: Awaitable[Any]) -> T:
    """Run a flow and a helper (an approver) concurrently; the flow's result or exception is
    the outcome, but a helper that fails first (e.g. no pause came) fails the test at once."""
    flow_task = asyncio.ensure_future(flow)
    helper_task = asyncio.ensure_future(helper)
    try:
        await asyncio.wait({flow_task, helper_task}, return_when=asyncio.FIRST_COMPLETED)
        if not flow_task.done() and helper_task.exception() is not None:
            raise helper_task.exception()  # type: ignore[misc]
        return await flow_task  # a helper still waiting then is cancelled: the test checks it
    finally:
        for task in (flow_task, helper_task):
            if not task.done():
                task.cancel()
        await asyncio.gather(flow_task, helper_task, return_exceptions=True)


async def flow_run_states(flow_run_id: UUID) -> list[str]:
    from prefect.client.orchestration import get_client

    async with get_client() as client:
        return [s.type.value for s in await client.read_flow_run_states(flow_run_id)]


# ---------------------------------------------------------------------------- served deployments


@contextlib.contextmanager
def serving(prefect_api: str, pipeline: Path, code: str) -> Iterator[None]:
    """A process of its own running `code` (which serves deployments) against the test server,
    reading `pipeline` as `airlock serve --pipeline` binds its runs; stopped by PID."""
    env = {
        **os.environ,
        "PREFECT_API_URL": prefect_api,
        "PREFECT_RUNNER_POLL_FREQUENCY": "1",
        "AIRLOCK_PIPELINE": str(pipeline),
    }
    proc = spawn([sys.executable, "-c", code], env)  # output to /dev/null
    try:
        yield
    finally:
        stop(proc, timeout=30)


async def deployment_ready(name: str, timeout: float = 120) -> None:
    """Wait until a served deployment is registered (the process registers it at start)."""
    from prefect.client.orchestration import get_client
    from prefect.exceptions import ObjectNotFound

    deadline = time.monotonic() + timeout
    async with get_client() as client:
        while time.monotonic() < deadline:
            try:
                await client.read_deployment_by_name(name)
                return
            except ObjectNotFound:
                await asyncio.sleep(0.3)
    raise AssertionError(f"the served deployment {name} never appeared")


async def run_state(run_id: UUID) -> Any:
    from prefect.client.orchestration import get_client

    async with get_client() as client:
        return (await client.read_flow_run(run_id)).state


async def wait_for_state(run_id: UUID, accept: Callable[[Any], bool], timeout: float = 120) -> Any:
    """Poll the run's state until `accept(state)` (a state change, not a sleep to hide a race)."""
    deadline = time.monotonic() + timeout
    state = None
    while time.monotonic() < deadline:
        state = await run_state(run_id)
        if state is not None and accept(state):
            return state
        await asyncio.sleep(0.3)
    raise AssertionError(f"flow run {run_id} never reached the expected state (last: {state})")
