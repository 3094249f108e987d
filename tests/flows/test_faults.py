"""The fault matrix: every fault x every phase of a promotion, through the real promote flow.

dev lives on registry A, qa and staging on registry B, each behind a fault-injecting proxy
(tests/support/faultproxy.py), so dev → qa streams blobs across registries and qa → staging
mounts within one. For each cell the first promotion either succeeds after retries or fails with
one clear line, and whatever happened:
- the target tag is absent or names the source digest — never anything else;
- no record and no "promoted" artifact claims a promotion whose tag did not move;
- with the fault gone, promoting again completes (idempotently: no second record).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from airlock.localregistry import start_registry
from flows.promote import promote
from registry.errors import AirlockError
from registry.manifest import digest_of
from tests.flows.helpers import attach_evidence
from tests.support import images as im
from tests.support.faultproxy import Fault, FaultProxy
from tests.support.registries import Reg
from tests.support.registries import reg_of as _reg

pytestmark = [pytest.mark.anyio, pytest.mark.usefixtures("prefect_api")]

# phase → (the hop it happens in, the proxy in front of, method, request target pattern)
# ({layer}: the image's layer blob; {report}: the attached test report's blob)
PHASES: dict[str, tuple[str, str, str, str]] = {
    "evidence read": ("qa", "a", "GET", r"^/v2/dev/app/blobs/{report}$"),
    "mount": ("staging", "b", "POST", r"^/v2/staging/app/blobs/uploads/\?.*mount="),
    "streamed blob": ("qa", "a", "GET", r"^/v2/dev/app/blobs/{layer}$"),
    "manifest put": ("qa", "b", "PUT", r"^/v2/qa/app/manifests/1\.0$"),
    "referrer copy": ("qa", "b", "PUT", r"^/v2/qa/app/manifests/sha256:"),
    "record write": ("qa", "b", "PUT", r"^/v2/qa/app/manifests/airlock\.history$"),
}
# fault → (Fault fields, whether retries must get through it)
FAULTS: dict[str, tuple[dict[str, Any], bool]] = {
    "503 once": ({"status": 503}, True),
    "429 Retry-After once": ({"status": 429, "retry_after": "1"}, True),
    "reset after the head": ({"reset_after": 0}, True),  # the registry did it; the answer is lost
    "dropped unanswered": ({"drop": True}, True),
    "300 ms latency": ({"delay": 0.3, "times": None}, True),
    "502 every time": ({"status": 502, "times": None}, False),
    "corrupted body": ({"corrupt_at": 0, "times": None}, False),
}
# A corrupted *response* body means something only where the body is the payload (a blob GET).
CELLS = [
    (fault, phase)
    for fault in FAULTS
    for phase in PHASES
    if fault != "corrupted body" or PHASES[phase][2] == "GET"
]


@pytest.fixture(autouse=True)
def quick_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    """The flows' clients keep the default number of attempts, with shorter waits between them
    (speed only: which faults are survived does not change; Retry-After is still honoured)."""
    import registry.client

    quick = registry.client.RetryPolicy(attempts=5, base_delay=0.02, max_delay=0.1, total=60.0)
    monkeypatch.setattr(registry.client, "RetryPolicy", lambda: quick)


@dataclass
class Two:
    """Registry A (dev) and B (qa, staging), each behind a proxy; pipeline.yaml uses the proxies."""

    a: Reg
    b: Reg
    pa: FaultProxy
    pb: FaultProxy
    file: str

    def proxy(self, side: str) -> FaultProxy:
        return self.pa if side == "a" else self.pb

    def ref(self, stage: str) -> str:
        host = self.pa.host if stage == "dev" else self.pb.host
        return f"{host}/{stage}/app:1.0"

    def digest(self, stage: str) -> str | None:
        return (self.a if stage == "dev" else self.b).pusher.digest(f"{stage}/app", "1.0")

    async def records(self, stage: str, digest: str) -> list[Any]:
        from flows.records import history, records_for

        async with self.b.client() as client:
            attached = [r for r in await records_for(client, f"{stage}/app", digest)]
            listed = await history(client, f"{stage}/app")
        return [r for r in attached if r.stage == stage], [r for r in listed if r.stage == stage]


@pytest.fixture
def two(tmp_path: Path, docker_config: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Two]:
    a, b = start_registry(tmp_path / "a"), start_registry(tmp_path / "b")
    with FaultProxy(a.host) as pa, FaultProxy(b.host) as pb:
        doc = {
            "registries": {"a": {"url": pa.host}, "b": {"url": pb.host}},
            "stages": [
                {"name": "dev", "registry": "a", "repository": "dev/{name}"},
                {
                    "name": "qa",
                    "registry": "b",
                    "repository": "qa/{name}",
                    "gates": [{"kind": "tests"}, {"kind": "scan", "policy": {"fail_on": "HIGH"}}],
                },
                {"name": "staging", "registry": "b", "repository": "staging/{name}"},
            ],
        }
        path = tmp_path / "pipeline.yaml"
        path.write_text(yaml.safe_dump(doc))
        monkeypatch.setenv("AIRLOCK_PIPELINE", str(path))
        two = Two(_reg(a), _reg(b), pa, pb, str(path))
        yield two
        two.a.pusher.close()
        two.b.pusher.close()
    a.stop()
    b.stop()


async def _promote(two: Two, to: str) -> tuple[Any, str]:
    """Run the promote flow; returns (its final state, its flow run id)."""
    state = await promote(
        image=two.ref("dev" if to == "qa" else "qa"),
        to_stage=to,
        return_state=True,
    )
    return state, str(state.state_details.flow_run_id)


def _promoted_artifacts(api: str, run_id: str) -> list[dict[str, Any]]:
    body = {"artifacts": {"flow_run_id": {"any_": [run_id]}, "type": {"any_": ["markdown"]}}}
    return httpx.post(f"{api}/artifacts/filter", json=body, timeout=30).json()


@pytest.mark.parametrize(("fault", "phase"), CELLS, ids=[f"{f} x {p}" for f, p in CELLS])
async def test_fault_in_phase(two: Two, prefect_api: str, fault: str, phase: str) -> None:
    img = im.image(f"faults-{fault}-{phase}")
    two.a.pusher.push("dev/app", img, "1.0")
    evidence = await attach_evidence(two.a, img)
    hop, side, method, path = PHASES[phase]
    path = path.format(layer=img.blobs[-1].digest, report=digest_of(evidence.tests_bytes))
    if hop == "staging":  # the mount happens in qa → staging: get into qa first, without faults
        state, _ = await _promote(two, "qa")
        assert state.is_completed(), state
    fields, recovers = FAULTS[fault]
    injected = two.proxy(side).add(Fault(method, path, **{"times": 1, **fields}))

    state, run_id = await _promote(two, hop)
    assert injected.hits >= 1, f"the fault never fired: {fault} x {phase}"
    tag = two.digest(hop)
    attached, listed = await two.records(hop, img.digest)
    artifacts = _promoted_artifacts(prefect_api, run_id)
    if recovers:
        assert state.is_completed(), state.message
        assert tag == img.digest
        assert len(attached) == len(listed) == 1
        assert len(artifacts) == 1
    else:
        assert state.is_failed()
        error = await state.aresult(raise_on_failure=False)
        assert isinstance(error, AirlockError), repr(error)
        assert "\n" not in str(error) and str(error), str(error)
        assert tag in (None, img.digest)  # never another digest
        if tag is None:  # the promotion did not happen: nothing may say it did
            assert attached == [] and listed == []
        assert artifacts == []  # the "promoted" summary is written only after the record

    # the fault gone, promoting again completes, with exactly one record
    two.proxy(side).clear()
    again, _ = await _promote(two, hop)
    assert again.is_completed(), again.message
    assert two.digest(hop) == img.digest
    attached, listed = await two.records(hop, img.digest)
    assert len(attached) == 1 and len(listed) == 1, (attached, listed)
