"""Promotion records read back from the registry (and the Prefect artifacts of a hop)."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import hashlib
import json
from typing import Any
from uuid import UUID

import pytest

import airlock
from flows.promote import BOARD_KEY, promote
from flows.records import HISTORY_TAG, PromotionRecord
from registry import mediatypes as mt
from tests.flows.helpers import Approver, Setup, alongside, attach_evidence, promote_runs
from tests.support import images as im
from tests.support.artifacts import artifacts, table

pytestmark = [pytest.mark.anyio, pytest.mark.usefixtures("prefect_api", "fast_approval_polls")]


async def hop(setup: Setup, image: str, to_stage: str, requester: str = "ci") -> dict[str, Any]:
    return await promote(image=image, to_stage=to_stage, requester=requester)


def now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def raw_json(setup: Setup, repo: str, ref: str) -> dict[str, Any]:
    got = setup.reg.pusher.manifest(repo, ref)
    assert got is not None, f"{repo}:{ref} is missing"
    return json.loads(got[0])


async def read_flow_run(flow_run_id: str) -> Any:
    from prefect.client.orchestration import get_client

    async with get_client() as client:
        return await client.read_flow_run(UUID(flow_run_id))


async def test_the_record_is_read_back_with_every_field(setup: Setup) -> None:
    img = setup.push("recorded")
    evidence = await attach_evidence(setup.reg, img)
    before = now()
    await hop(setup, setup.ref("dev"), "qa", requester="ci-bot")
    after = now()

    [record] = await setup.records("qa", img.digest)
    assert await setup.history("qa") == [record]
    assert record.kind == "promotion"
    assert record.stage == "qa" and record.image == "app"
    assert record.digest == img.digest
    assert record.source == f"{setup.ref('dev')}@{img.digest}"
    assert record.target == f"{setup.ref('qa')}@{img.digest}"
    # the policy it was judged under: the file's own bytes, and qa's section of it
    assert record.policy is not None
    assert record.policy.sha256 == hashlib.sha256(setup.path.read_bytes()).hexdigest()
    assert record.policy.file == str(setup.path.resolve())
    assert [g["kind"] for g in record.policy.stage["gates"]] == ["tests", "scan"]
    assert record.tags == ["1.0"]
    assert record.requester == "ci-bot"
    assert record.approvals == []
    assert record.airlock_version == airlock.__version__
    assert before <= record.started_at <= record.finished_at <= after

    tests, scan = record.gates
    assert (tests.gate, tests.passed) == ("tests", True)
    assert (scan.gate, scan.passed) == ("scan", True)
    [tests_ev] = tests.evidence
    [scan_ev] = scan.evidence
    assert tests_ev.referrer == evidence.tests and scan_ev.referrer == evidence.scan
    assert tests_ev.digest == im.sha256(evidence.tests_bytes)
    assert scan_ev.digest == im.sha256(evidence.scan_bytes)
    assert tests_ev.subject == scan_ev.subject == img.digest
    assert record.evidence_digests == [evidence.tests, evidence.scan]

    # the flow run it names is the one that promoted, on the Prefect server
    assert record.flow_run_id
    run = await read_flow_run(record.flow_run_id)
    assert run.parameters["image"] == setup.ref("dev") and run.parameters["to_stage"] == "qa"
    assert run.state and run.state.is_completed()
    assert record.flow_run_url and record.flow_run_id in record.flow_run_url


async def test_the_record_as_stored_in_the_registry(setup: Setup) -> None:
    """Read without airlock: an OCI referrer of the digest in the target repository (listed
    under the fallback tag on distribution 2.8), and an entry of the repository's history."""
    img = setup.push("stored")
    await attach_evidence(setup.reg, img)
    done = await hop(setup, setup.ref("dev"), "qa")
    record_digest = done["record"]

    listing = raw_json(setup, "qa/app", im.fallback_tag_of(img.digest))["manifests"]
    [entry] = [e for e in listing if e.get("artifactType") == mt.PROMOTION_RECORD]
    assert entry["digest"] == record_digest
    manifest = raw_json(setup, "qa/app", record_digest)
    assert manifest["artifactType"] == mt.PROMOTION_RECORD
    assert manifest["subject"]["digest"] == img.digest
    assert manifest["subject"]["size"] == len(img.raw)
    assert manifest["annotations"]["vnd.airlock.record.kind"] == "promotion"
    assert manifest["annotations"]["vnd.airlock.record.digest"] == img.digest
    [layer] = manifest["layers"]
    payload = setup.reg.pusher.blob("qa/app", layer["digest"])
    assert payload is not None and im.sha256(payload) == layer["digest"]
    stored = json.loads(payload)
    [record] = await setup.records("qa", img.digest)
    assert PromotionRecord.model_validate(stored) == record
    assert stored["digest"] == img.digest and stored["stage"] == "qa"

    history = raw_json(setup, "qa/app", HISTORY_TAG)["manifests"]
    assert [e["digest"] for e in history] == [record_digest]


async def test_each_stage_holds_its_own_record_and_records_never_travel(setup: Setup) -> None:
    """A record is the decision of the stage that wrote it: a promotion copies the image's
    evidence, never the records of the stage it leaves (a record forged next to an image in a
    lower stage must not arrive in a higher one looking like that stage's decision)."""
    img = setup.push("chain")
    await attach_evidence(setup.reg, img)
    await hop(setup, setup.ref("dev"), "qa")
    await hop(setup, setup.ref("qa"), "staging")
    approver = Approver(promote_runs(setup.ref("staging"), "prod"), [("approve", "alice", "go")])
    await alongside(hop(setup, setup.ref("staging"), "prod", requester="rel-eng"), approver.run())

    chain = [r for s in ("qa", "staging", "prod") for r in await setup.records(s, img.digest)]
    assert [r.stage for r in chain] == ["qa", "staging", "prod"]  # one per stage, in its own
    assert all(r.digest == img.digest for r in chain)
    qa, staging, prod = chain
    # the evidence travelled: prod's repository still has the reports attached in dev
    assert len(await setup.referrers("prod", img.digest)) == 2
    assert [r.policy.stage["name"] for r in chain if r.policy] == ["qa", "staging", "prod"]
    assert len({r.policy.sha256 for r in chain if r.policy}) == 1
    assert qa.finished_at <= staging.started_at and staging.finished_at <= prod.started_at
    assert [g.gate for g in staging.gates] == ["soak"] and staging.gates[0].passed
    assert staging.gates[0].evidence[0].created == qa.finished_at  # soaked since the qa record
    assert prod.requester == "rel-eng"
    [approval] = prod.approvals
    assert (approval.decision, approval.approver, approval.comment) == ("approve", "alice", "go")
    assert prod.started_at <= approval.at <= prod.finished_at
    [gate] = prod.gates
    assert gate.gate == "approval" and gate.passed
    assert gate.evidence and gate.evidence[0].source == "approval by alice"
    assert await setup.history("prod") == [prod]  # history: this repository's promotions only


async def test_a_hop_shows_its_gates_and_summary_as_prefect_artifacts(setup: Setup) -> None:
    img = setup.push("artifacts")
    await attach_evidence(setup.reg, img)
    await hop(setup, setup.ref("dev"), "qa")
    [record] = await setup.records("qa", img.digest)
    assert record.flow_run_id

    made = await artifacts(flow_run_id=record.flow_run_id)
    by_type: dict[str, list[Any]] = {}
    for a in made:
        by_type.setdefault(a.type, []).append(a)
    gate_tables = [a for a in by_type.get("table", []) if a.key != BOARD_KEY]
    [gates] = gate_tables
    rows = table(gates)
    assert [(r["gate"], r["passed"]) for r in rows] == [("tests", True), ("scan", True)]
    [summary] = by_type["markdown"]
    assert img.digest in summary.data and "qa" in summary.data

    [board] = (await artifacts(key=BOARD_KEY))[:1]
    board_rows = table(board)
    mine = [r for r in board_rows if (r["image"], r["release"]) == ("app", "1.0")]
    assert {(r["stage"], r["digest"]) for r in mine} == {
        ("dev", img.digest),
        ("qa", img.digest),
        ("staging", "—"),
        ("prod", "—"),
    }


async def test_the_stage_board_lists_every_image(setup: Setup) -> None:
    """One board (a stable key) for the pipeline: promoting `api` must not drop `web` from it."""
    web, api = im.image("board-web"), im.image("board-api")
    setup.reg.pusher.push("dev/web", web, "1.0")
    setup.reg.pusher.push("dev/api", api, "1.0")
    await attach_evidence(setup.reg, web, repo="dev/web")
    await attach_evidence(setup.reg, api, repo="dev/api")
    await hop(setup, setup.ref("dev", name="web"), "qa")
    await hop(setup, setup.ref("dev", name="api"), "qa")

    [board] = (await artifacts(key=BOARD_KEY))[:1]
    rows = {(r["image"], r["stage"]): r["digest"] for r in table(board)}
    assert rows.get(("api", "qa")) == api.digest
    assert rows.get(("web", "qa")) == web.digest


async def test_concurrent_promotions_into_one_repository_keep_both_in_the_history(
    setup: Setup, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two images promoted into qa/app at once under different tags (what `airlock pipeline`
    does with several images): each appends to qa/app's history. The interleaving is forced —
    both read the history, then one writes and confirms before the other writes — and both
    records must still be listed (rollback reads this history)."""
    import flows.records

    one = setup.push("history-1", "1.0")
    two = setup.push("history-2", "2.0")
    for img in (one, two):
        await attach_evidence(setup.reg, img)
    real_index_doc = flows.records.index_doc
    first: list[asyncio.Task[Any] | None] = []
    first_calls = 0
    other_read, first_confirmed = asyncio.Event(), asyncio.Event()

    async def bounded(event: asyncio.Event) -> None:
        # A version that serialises history writes never lets the other promotion read in
        # between: then this window simply passes (it is never waited out while the bug is
        # there, the other side arrives first).
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(event.wait(), timeout=15)

    async def index_doc(client: Any, repo: str, tag: str) -> Any:
        nonlocal first_calls
        doc = await real_index_doc(client, repo, tag)
        if tag != HISTORY_TAG:
            return doc
        me = asyncio.current_task()
        if not first:
            first.append(me)
        if me is first[0]:
            first_calls += 1
            if first_calls == 1:
                await bounded(other_read)  # until the other promotion has read it too
            elif first_calls == 2:
                first_confirmed.set()  # the first writer re-read its own write: done
        elif not other_read.is_set():
            other_read.set()
            await bounded(first_confirmed)  # write only after the first one is done
        return doc

    monkeypatch.setattr(flows.records, "index_doc", index_doc)
    await asyncio.gather(
        hop(setup, setup.ref("dev", "1.0"), "qa"), hop(setup, setup.ref("dev", "2.0"), "qa")
    )
    monkeypatch.undo()

    assert setup.digest("qa", "1.0") == one.digest and setup.digest("qa", "2.0") == two.digest
    assert len(await setup.records("qa", one.digest)) == 1
    assert len(await setup.records("qa", two.digest)) == 1
    assert sorted(r.digest for r in await setup.history("qa")) == sorted([one.digest, two.digest])
