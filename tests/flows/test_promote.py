"""The promote and pipeline flows against a real registry and a Prefect test server.

Evidence is attached with airlock's own writer (registry.referrers), results are read back with
tests.support.images.Pusher (plain httpx, not airlock), approvals are given the way the UI and
`airlock approve` give them (resume_flow_run with run input).
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

import flows.landing as fl
import flows.promote as fp
from flows.promote import PromotionRefused, pipeline, promote
from registry import mediatypes as mt
from registry.client import RegistryClient
from registry.errors import BadInputError
from registry.reference import parse
from tests.flows.helpers import (
    CRITICAL_SCAN,
    FAILING_TESTS,
    PASSING_TESTS,
    Approver,
    Setup,
    alongside,
    attach,
    attach_evidence,
    flow_run_states,
    promote_runs,
    push_with_evidence,
    scan_of,
)
from tests.support import images as im

pytestmark = [pytest.mark.anyio, pytest.mark.usefixtures("prefect_api", "fast_approval_polls")]

REQUESTER = "ci"


async def hop(setup: Setup, image: str, to_stage: str, **kw: Any) -> dict[str, Any]:
    kw.setdefault("requester", REQUESTER)
    return await promote(image=image, to_stage=to_stage, **kw)


async def refused(setup: Setup, image: str, to_stage: str, **kw: Any) -> str:
    with pytest.raises(PromotionRefused) as info:
        await hop(setup, image, to_stage, **kw)
    return str(info.value)


async def to_staging(setup: Setup, seed: str, tag: str = "1.0") -> im.Image:
    """An image with passing evidence, promoted dev → qa → staging."""
    img = await push_with_evidence(setup, seed, tag)
    await hop(setup, setup.ref("dev", tag), "qa")
    await hop(setup, setup.ref("qa", tag), "staging")
    assert setup.digest("staging", tag) == img.digest
    return img


def approvals(setup: Setup, to_stage: str, *decisions: tuple[str, str, str]) -> Approver:
    previous = {"qa": "dev", "staging": "qa", "prod": "staging"}[to_stage]
    return Approver(promote_runs(setup.ref(previous), to_stage), list(decisions))


# ---------------------------------------------------------------------------- the happy path


async def test_a_clean_pipeline_run_promotes_the_same_digest_into_every_stage(
    setup: Setup,
) -> None:
    approval = {"kind": "approval", "policy": {"required": 1}, "timeout": "60s"}
    setup.write(gates={"prod": [{"kind": "signature"}, approval]})
    img = await push_with_evidence(setup, "clean")
    sig_tag = im.fallback_tag_of(img.digest) + ".sig"
    setup.reg.pusher.push("dev/app", im.cosign_signature(img), sig_tag)  # as cosign would
    approver = Approver(
        promote_runs(setup.ref("staging"), "prod"), [("approve", "alice", "ship it")]
    )

    outcomes = await alongside(
        pipeline(images=[setup.ref("dev")], requester=REQUESTER),
        approver.run(),
    )

    assert approver.done
    assert outcomes == [
        {"image": setup.ref("dev"), "reached": "prod", "refused": None, "digest": img.digest}
    ]
    for stage in ("dev", "qa", "staging", "prod"):
        assert setup.digest(stage) == img.digest, stage  # the same bytes everywhere
        assert setup.digest(stage, img.digest) == img.digest, stage
    for stage in ("qa", "staging", "prod"):
        [record] = [r for r in await setup.records(stage, img.digest) if r.stage == stage]
        assert record.digest == img.digest and record.kind == "promotion"
    [prod] = await setup.history("prod")
    assert [(a.decision, a.approver) for a in prod.approvals] == [("approve", "alice")]
    assert [(g.gate, g.passed) for g in prod.gates] == [("signature", True), ("approval", True)]


async def test_pipeline_until_stops_there(setup: Setup) -> None:
    img = await push_with_evidence(setup, "until")
    outcomes = await pipeline(images=[setup.ref("dev")], until="qa", requester=REQUESTER)
    assert [o["reached"] for o in outcomes] == ["qa"]
    assert setup.digest("qa") == img.digest
    assert setup.tags("staging") == [] and setup.tags("prod") == []

    # the run shows the hop it made: one task run for the batch, named for it, Completed
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    [record] = [r for r in await setup.records("qa", img.digest) if r.stage == "qa"]
    async with get_client() as client:
        assert record.flow_run_id is not None
        tasks = await client.read_task_runs(
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[record.flow_run_id]))
        )
    assert [(t.name, t.state_name) for t in tasks] == [("into qa: 1 image", "Completed")]


async def test_one_hop_reports_what_it_did(setup: Setup) -> None:
    img = await push_with_evidence(setup, "hop")
    done = await hop(setup, setup.ref("dev"), "qa")
    assert done["status"] == "promoted"
    assert done["stage"] == "qa" and done["image"] == "app"
    assert done["digest"] == img.digest
    assert done["source"] == f"{setup.ref('dev')}@{img.digest}"
    assert done["target"] == f"{setup.ref('qa')}@{img.digest}"
    assert done["record"] and done["record"].startswith("sha256:")
    assert setup.digest("qa") == img.digest


async def test_evidence_and_signatures_travel_with_the_image(setup: Setup) -> None:
    """Referrers are copied with the digest: the signature pushed in dev is what prod checks,
    and the reports attached in dev are in prod too."""
    setup.write(gates={"prod": [{"kind": "signature"}]})
    img = setup.push("signed")
    evidence = await attach_evidence(setup.reg, img)
    sig_tag = im.fallback_tag_of(img.digest) + ".sig"
    setup.reg.pusher.push("dev/app", im.cosign_signature(img), sig_tag)
    await hop(setup, setup.ref("dev"), "qa")
    await hop(setup, setup.ref("qa"), "staging")
    done = await hop(setup, setup.ref("staging"), "prod")
    assert done["status"] == "promoted" and setup.digest("prod") == img.digest
    assert setup.reg.pusher.digest("prod/app", sig_tag) == setup.reg.pusher.digest(
        "dev/app", sig_tag
    )
    [record] = await setup.history("prod")
    assert record.gates[0].gate == "signature" and record.gates[0].passed
    listed = setup.reg.pusher.manifest("prod/app", im.fallback_tag_of(img.digest))
    assert listed is not None
    referrers = {e["digest"] for e in json.loads(listed[0])["manifests"]}
    assert {evidence.tests, evidence.scan} <= referrers


# ---------------------------------------------------------------------------- gates refuse


async def test_failing_tests_refuse(setup: Setup) -> None:
    img = setup.push("failing-tests")
    await attach_evidence(setup.reg, img, tests=FAILING_TESTS)
    message = await refused(setup, setup.ref("dev"), "qa")
    assert message.startswith("qa: tests gate refused"), message
    assert "3 failed" in message, message
    assert setup.tags("qa") == [] and setup.digest("qa", img.digest) is None


async def test_missing_tests_report_refuses(setup: Setup) -> None:
    img = setup.push("no-tests")
    await attach(setup.reg, "dev/app", img, mt.SCAN_REPORT_TRIVY, scan_of(img))
    message = await refused(setup, setup.ref("dev"), "qa")
    assert message.startswith("qa: tests gate refused: no tests report"), message
    assert setup.tags("qa") == []


async def test_a_malformed_report_refuses_naming_the_gate(setup: Setup) -> None:
    """Evidence that cannot be read fails closed: a refusal of that gate, not a crash."""
    img = setup.push("truncated")
    await attach(setup.reg, "dev/app", img, mt.TEST_REPORT_PYTEST, PASSING_TESTS.read_bytes()[:100])
    await attach(setup.reg, "dev/app", img, mt.SCAN_REPORT_TRIVY, scan_of(img))
    message = await refused(setup, setup.ref("dev"), "qa")
    assert message.startswith("qa: tests gate refused"), message
    assert setup.tags("qa") == []


async def test_a_critical_scan_refuses(setup: Setup) -> None:
    img = setup.push("critical")
    await attach_evidence(setup.reg, img, scan=CRITICAL_SCAN)
    message = await refused(setup, setup.ref("dev"), "qa")
    assert message.startswith("qa: scan gate refused"), message
    assert "2 CRITICAL" in message, message
    assert setup.tags("qa") == [] and setup.digest("qa", img.digest) is None


async def test_a_missing_signature_refuses(setup: Setup) -> None:
    setup.write(gates={"prod": [{"kind": "signature"}, {"kind": "approval", "timeout": "60s"}]})
    img = await to_staging(setup, "unsigned")
    message = await refused(setup, setup.ref("staging"), "prod")  # refused before any approval
    assert message.startswith("prod: signature gate refused"), message
    assert "signature" in message.split("refused", 1)[1], message
    assert setup.tags("prod") == [] and setup.digest("prod", img.digest) is None


async def test_a_young_image_refuses_the_soak(setup: Setup) -> None:
    setup.write(gates={"staging": [{"kind": "soak", "policy": {"min": "1h"}}]})
    img = await push_with_evidence(setup, "young")
    await hop(setup, setup.ref("dev"), "qa")
    message = await refused(setup, setup.ref("qa"), "staging")
    assert message.startswith("staging: soak gate refused"), message
    assert "in qa, needs 1h" in message, message
    assert setup.tags("staging") == [] and setup.digest("staging", img.digest) is None


async def test_a_refused_gate_asks_nobody_for_approval(setup: Setup) -> None:
    setup.write(
        gates={"qa": [{"kind": "tests"}, {"kind": "approval", "timeout": "30s"}]},
    )
    img = setup.push("refused-early")
    await attach_evidence(setup.reg, img, tests=FAILING_TESTS)
    state = await promote(
        image=setup.ref("dev"),
        to_stage="qa",
        requester=REQUESTER,
        return_state=True,
    )
    assert state.is_failed()
    assert "qa: tests gate refused" in (state.message or ""), state.message
    assert "PAUSED" not in await flow_run_states(state.state_details.flow_run_id)


async def test_the_pipeline_run_fails_naming_stage_gate_and_reason(setup: Setup) -> None:
    img = setup.push("pipeline-refused")
    await attach_evidence(setup.reg, img, scan=CRITICAL_SCAN)
    state = await pipeline(images=[setup.ref("dev")], requester=REQUESTER, return_state=True)
    assert state.is_failed()
    message = state.message or ""
    assert setup.ref("dev") in message and "qa: scan gate refused" in message, message
    assert "CRITICAL" in message, message
    for stage in ("qa", "staging", "prod"):
        assert setup.tags(stage) == [], stage


async def test_pipeline_stops_each_image_at_its_own_refusal(setup: Setup) -> None:
    good = await push_with_evidence(setup, "good", "1.0")
    bad = setup.push("bad", "2.0")
    await attach_evidence(setup.reg, bad, tests=FAILING_TESTS)
    with pytest.raises(PromotionRefused) as info:
        await pipeline(
            images=[setup.ref("dev", "1.0"), setup.ref("dev", "2.0")],
            until="staging",
            requester=REQUESTER,
        )
    assert "2.0: qa: tests gate refused" in str(info.value)
    assert ":1.0" not in str(info.value)
    assert setup.digest("staging", "1.0") == good.digest  # the other image went on
    assert setup.digest("qa", "2.0") is None


# ---------------------------------------------------------------------------- approvals


async def test_approval_given(setup: Setup) -> None:
    img = await to_staging(setup, "approved")
    approver = approvals(setup, "prod", ("approve", "alice", "looks good"))
    done = await alongside(hop(setup, setup.ref("staging"), "prod"), approver.run())
    assert approver.done and done["status"] == "promoted"
    assert setup.digest("prod") == img.digest
    [record] = await setup.history("prod")
    assert [(a.decision, a.approver, a.comment) for a in record.approvals] == [
        ("approve", "alice", "looks good")
    ]
    assert record.gates[-1].summary == "approved by alice (1 of 1 required; unsigned)"


async def test_approval_rejected(setup: Setup) -> None:
    img = await to_staging(setup, "rejected")
    approver = approvals(setup, "prod", ("reject", "bob", "not on a Friday"))
    with pytest.raises(PromotionRefused) as info:
        await alongside(hop(setup, setup.ref("staging"), "prod"), approver.run())
    assert approver.done
    message = str(info.value)
    assert message.startswith("prod: approval gate refused: rejected by bob"), message
    assert "not on a Friday" in message
    assert setup.tags("prod") == [] and setup.digest("prod", img.digest) is None


async def test_approval_times_out(setup: Setup) -> None:
    setup.write(gates={"prod": [{"kind": "approval", "timeout": "3s"}]})
    img = await to_staging(setup, "timeout")
    started = asyncio.get_running_loop().time()
    message = await refused(setup, setup.ref("staging"), "prod")
    waited = asyncio.get_running_loop().time() - started
    assert message.startswith("prod: approval gate refused: approval timed out"), message
    assert "0 of 1" in message, message
    assert 3.0 <= waited < 30, waited  # at least the configured timeout
    assert setup.tags("prod") == [] and setup.digest("prod", img.digest) is None


async def test_a_timed_out_approval_leaves_the_reason_on_the_flow_run(setup: Setup) -> None:
    """What the Prefect UI shows for the run: the refusal (stage, gate, reason), not only that
    a pause expired."""
    setup.write(gates={"prod": [{"kind": "approval", "timeout": "2s"}]})
    await to_staging(setup, "timeout-state")
    state = await hop(setup, setup.ref("staging"), "prod", return_state=True)
    assert state.is_failed()
    message = state.message or ""
    assert "prod" in message and "approval" in message and "timed out" in message, message
    assert setup.tags("prod") == []


async def test_n_of_m_distinct_approvers(setup: Setup) -> None:
    policy = {"required": 2, "approvers": ["alice", "bob", "carol"]}
    setup.write(gates={"prod": [{"kind": "approval", "policy": policy, "timeout": "60s"}]})
    img = await to_staging(setup, "two-of-three")
    approver = approvals(
        setup,
        "prod",
        ("approve", "alice", ""),
        ("approve", " ALICE ", "me again"),  # the same person counts once
        ("approve", "mallory", ""),  # not an allowed approver
        ("approve", "bob", ""),
    )
    done = await alongside(hop(setup, setup.ref("staging"), "prod"), approver.run())
    assert approver.done  # it paused again after each of the first three
    assert done["status"] == "promoted" and setup.digest("prod") == img.digest
    [record] = await setup.history("prod")
    # the record keeps every decision, each one that did not count with its reason
    assert [(a.approver, a.not_counted) for a in record.approvals] == [
        ("alice", None),
        ("ALICE", "alice already approved"),
        ("mallory", "not in the approvers list"),
        ("bob", None),
    ]
    gate = record.gates[-1]
    assert gate.passed and gate.summary == "approved by alice, bob (2 of 2 required; unsigned)"
    notes = [row["note"] for row in gate.rows]
    assert notes == [
        "counted",
        "not counted (alice already approved)",
        "not counted (not in the approvers list)",
        "counted",
    ]


async def test_one_approval_of_two_is_not_enough(setup: Setup) -> None:
    setup.write(gates={"prod": [{"kind": "approval", "policy": {"required": 2}, "timeout": "3s"}]})
    await to_staging(setup, "one-of-two")
    approver = approvals(setup, "prod", ("approve", "alice", ""))
    with pytest.raises(PromotionRefused) as info:
        await alongside(hop(setup, setup.ref("staging"), "prod"), approver.run())
    assert approver.done
    assert "approval timed out" in str(info.value) and "1 of 2" in str(info.value)
    assert setup.tags("prod") == []


async def test_the_requester_cannot_approve_their_own_promotion(setup: Setup) -> None:
    await to_staging(setup, "self")
    approver = approvals(
        setup,
        "prod",
        ("approve", "Carol", "my own"),  # the requester, written differently: not counted
        ("approve", "dave", ""),
    )
    done = await alongside(
        hop(setup, setup.ref("staging"), "prod", requester="carol"), approver.run()
    )
    assert approver.done  # carol's approval did not end the wait
    assert done["status"] == "promoted"
    [record] = await setup.history("prod")
    assert record.requester == "carol"
    gate = record.gates[-1]
    assert gate.summary == "approved by dave (1 of 1 required; unsigned)"
    assert "requester" in gate.rows[0]["note"]


async def test_self_approval_alone_times_out(setup: Setup) -> None:
    setup.write(gates={"prod": [{"kind": "approval", "timeout": "3s"}]})
    await to_staging(setup, "self-only")
    approver = approvals(setup, "prod", ("approve", "carol", ""))
    with pytest.raises(PromotionRefused) as info:
        await alongside(hop(setup, setup.ref("staging"), "prod", requester="carol"), approver.run())
    assert approver.done
    assert "carol: not counted (the requester may not approve" in str(info.value)
    assert setup.tags("prod") == []


# ---------------------------------------------------------------------------- stages and tags


async def test_a_skipped_stage_is_refused(setup: Setup) -> None:
    img = await push_with_evidence(setup, "skipper")
    message = await refused(setup, setup.ref("dev"), "staging")
    assert message.startswith("staging:"), message
    assert "not in qa" in message and "never skipped" in message, message
    assert setup.tags("staging") == [] and setup.digest("staging", img.digest) is None
    by_digest = await refused(setup, setup.at_digest("dev", img.digest), "staging")
    assert "not in qa" in by_digest


async def test_a_dev_image_is_not_promoted_past_qa_under_a_tag_qa_holds_for_another(
    setup: Setup,
) -> None:
    """dev/app:1.0 was rebuilt after 1.0 passed qa: asking to promote dev/app:1.0 (the new
    digest) into staging skips qa for that digest and must be refused — not quietly promote the
    digest qa holds under the same tag."""
    old = await push_with_evidence(setup, "old")
    await hop(setup, setup.ref("dev"), "qa")
    new = await push_with_evidence(setup, "new")  # dev/app:1.0 now points at another digest
    assert setup.digest("dev") == new.digest and setup.digest("qa") == old.digest
    with pytest.raises(PromotionRefused):
        await hop(setup, setup.ref("dev"), "staging")
    assert setup.tags("staging") == []


async def test_an_immutable_tag_is_never_moved(setup: Setup) -> None:
    first = await to_staging(setup, "first")
    second = await push_with_evidence(setup, "second")  # same tag, new digest
    await hop(setup, setup.ref("dev"), "qa")  # qa is not immutable: its tag moves
    assert setup.digest("qa") == second.digest
    before = await setup.history("staging")

    message = await refused(setup, setup.ref("qa"), "staging")

    assert message.startswith("staging:"), message
    assert first.digest in message and "immutable" in message, message
    assert setup.digest("staging") == first.digest  # untouched
    assert setup.digest("staging", second.digest) is None
    assert len(await setup.history("staging")) == len(before)


async def test_re_promoting_the_same_digest_is_an_idempotent_success(setup: Setup) -> None:
    img = await push_with_evidence(setup, "again")
    first = await hop(setup, setup.ref("dev"), "qa")
    second = await hop(setup, setup.ref("dev"), "qa")
    assert first["status"] == "promoted"
    assert second["status"] == "already there" and second["record"] is None
    assert second["digest"] == img.digest and setup.digest("qa") == img.digest
    assert len(await setup.records("qa", img.digest)) == 1
    assert len(await setup.history("qa")) == 1
    # into an immutable stage too
    await hop(setup, setup.ref("qa"), "staging")
    again = await hop(setup, setup.ref("qa"), "staging")
    assert again["status"] == "already there"
    assert len(await setup.history("staging")) == 1


async def test_a_tag_rule_names_the_target_tag(setup: Setup) -> None:
    setup.write(qa={"tag": "{tag}-{stage}-{short}"})
    img = await push_with_evidence(setup, "tag-rule")
    done = await hop(setup, setup.ref("dev"), "qa")
    tag = f"1.0-qa-{img.digest[7:19]}"
    assert done["target"] == f"{setup.host}/qa/app:{tag}@{img.digest}"
    assert setup.tags("qa") == [tag] and setup.digest("qa", tag) == img.digest


async def test_two_promotions_of_one_tag_are_serialised(
    setup: Setup, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two digests promoted to qa:latest at once (qa's tag rule is a fixed `latest`): the
    copy-and-record step runs one at a time under a Prefect global concurrency limit, both
    complete, the tag ends at the later one."""
    setup.write(qa={"tag": "latest"})
    a = await push_with_evidence(setup, "race-a", "a")
    b = await push_with_evidence(setup, "race-b", "b")
    real_copy, real_ensure = fl.copy_image, fl._ensure_limits
    asked: list[str] = []
    both_asked = asyncio.Event()
    second_copy = asyncio.Event()
    copying: list[str] = []
    overlap: list[int] = []
    in_copy = 0

    async def ensure_limits(names: list[str]) -> None:
        await real_ensure(names)
        if names == [fl.BOARD_KEY]:
            return
        asked.extend(names)
        if len(asked) == 2:
            both_asked.set()

    async def copy_image(src: RegistryClient, source: Any, *args: Any, **kw: Any) -> Any:
        nonlocal in_copy
        in_copy += 1
        overlap.append(in_copy)
        copying.append(source.digest)
        try:
            if len(copying) == 1:
                # Hold the first copy until the other promotion has passed its gates and asked
                # for the same limit: without the limit it would now enter this copy within
                # milliseconds. Watch for that for a second (a bounded window to observe an
                # absence, not a sleep that hides a race).
                await asyncio.wait_for(both_asked.wait(), timeout=30)
                with_limit = True
                try:
                    await asyncio.wait_for(second_copy.wait(), timeout=1.0)
                    with_limit = False
                except TimeoutError:
                    pass
                assert with_limit, "a second copy to the same tag started during the first"
            else:
                second_copy.set()
            return await real_copy(src, source, *args, **kw)
        finally:
            in_copy -= 1

    monkeypatch.setattr(fl, "_ensure_limits", ensure_limits)
    monkeypatch.setattr(fl, "copy_image", copy_image)

    results = await asyncio.gather(
        hop(setup, setup.ref("dev", "a"), "qa"),
        hop(setup, setup.ref("dev", "b"), "qa"),
    )

    assert [r["status"] for r in results] == ["promoted", "promoted"]
    assert max(overlap) == 1 and sorted(copying) == sorted([a.digest, b.digest])
    assert setup.digest("qa", "latest") == copying[-1]  # the later copy holds the tag
    for img in (a, b):
        [record] = await setup.records("qa", img.digest)
        assert record.tags == ["latest"]
    assert {r.digest for r in await setup.history("qa")} == {a.digest, b.digest}

    from prefect.client.orchestration import get_client

    name = fl._limit_name(parse(setup.ref("qa", "latest")))
    assert [n for n in asked if n != fl.BOARD_KEY] == [name, name] and "/" not in name
    async with get_client() as client:
        limit = await client.read_global_concurrency_limit_by_name(name)
    assert limit.limit == 1 and limit.active and limit.active_slots == 0


async def test_a_batch_lands_one_repository_s_images_one_at_a_time(
    setup: Setup, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The pipeline promotes a batch of images into qa inside its own run: two of them go to
    the same repository (qa/app, tags 1.0 and 2.0), whose history is read-modify-write, so
    their copy-and-record steps must not overlap — the first copy waits a bounded second for
    the other to start — and both records end in the history."""
    a = await push_with_evidence(setup, "batch-a", "1.0")
    b = await push_with_evidence(setup, "batch-b", "2.0")
    real_copy = fl.copy_image
    second_started = asyncio.Event()
    copying: list[str] = []
    overlapped: list[bool] = []

    async def copy_image(src: RegistryClient, source: Any, *args: Any, **kw: Any) -> Any:
        copying.append(source.digest)
        if len(copying) == 1:
            try:
                await asyncio.wait_for(second_started.wait(), timeout=1.0)
                overlapped.append(True)
            except TimeoutError:
                overlapped.append(False)
        else:
            second_started.set()
        return await real_copy(src, source, *args, **kw)

    monkeypatch.setattr(fl, "copy_image", copy_image)
    outcomes = await pipeline(
        images=[setup.ref("dev", "1.0"), setup.ref("dev", "2.0")],
        until="qa",
        requester=REQUESTER,
        max_concurrency=4,
    )

    assert [o["reached"] for o in outcomes] == ["qa", "qa"]
    assert overlapped == [False] and sorted(copying) == sorted([a.digest, b.digest])
    assert (setup.digest("qa", "1.0"), setup.digest("qa", "2.0")) == (a.digest, b.digest)
    assert sorted(r.digest for r in await setup.history("qa")) == sorted([a.digest, b.digest])
    for img, tag in ((a, "1.0"), (b, "2.0")):
        [record] = await setup.records("qa", img.digest)
        assert record.tags == [tag] and [g.gate for g in record.gates] == ["tests", "scan"]


async def test_a_batch_refusal_stops_only_that_image(setup: Setup) -> None:
    """One image of the batch fails its scan: it stops in dev with the reason, the other goes
    on to staging, and the run fails naming the refused one."""
    good = await push_with_evidence(setup, "batch-good", "1.0")
    await push_with_evidence(setup, "batch-bad", "2.0", scan=CRITICAL_SCAN)

    with pytest.raises(fp.PipelineRefused) as refused:
        await pipeline(
            images=[setup.ref("dev", "1.0"), setup.ref("dev", "2.0")],
            until="staging",
            requester=REQUESTER,
        )

    first, second = refused.value.outcomes
    assert first["reached"] == "staging" and first["refused"] is None
    assert second["reached"] == "dev" and "qa: scan gate" in second["refused"]
    assert setup.digest("staging", "1.0") == good.digest
    assert setup.tags("qa") == ["1.0"] and "2.0" in str(refused.value)


async def test_the_concurrency_limit_is_created_on_demand_per_target_repository(
    setup: Setup,
) -> None:
    """One limit per target repository (its history and referrer indexes are read-modify-write,
    so promotions into it must not interleave, whatever their tags)."""
    from prefect.client.orchestration import get_client
    from prefect.exceptions import ObjectNotFound

    await push_with_evidence(setup, "limit-1", "1.0")
    await push_with_evidence(setup, "limit-2", "2.0")
    qa_1, qa_2 = (fl._limit_name(parse(setup.ref("qa", tag))) for tag in ("1.0", "2.0"))
    staging = fl._limit_name(parse(setup.ref("staging", "1.0")))
    assert qa_1 == qa_2 and qa_1 != staging
    assert "/" not in qa_1
    async with get_client() as client:
        with pytest.raises(ObjectNotFound):
            await client.read_global_concurrency_limit_by_name(qa_1)
    await hop(setup, setup.ref("dev", "1.0"), "qa")
    await hop(setup, setup.ref("dev", "2.0"), "qa")
    async with get_client() as client:
        limit = await client.read_global_concurrency_limit_by_name(qa_1)
        assert limit.limit == 1 and limit.active_slots == 0


# ---------------------------------------------------------------------------- bad input


def forbid_registry_writes(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """From now on, fail any write airlock's registry client attempts (and list it)."""
    writes: list[str] = []

    def refuse(name: str) -> Any:
        async def write(self: RegistryClient, *args: Any, **kw: Any) -> Any:
            writes.append(name)
            raise AssertionError(f"registry write ({name}) before the input was checked")

        return write

    for name in ("put_manifest", "mount_blob", "start_upload", "upload_blob"):
        monkeypatch.setattr(RegistryClient, name, refuse(name))
    return writes


@pytest.mark.parametrize(
    "image",
    [
        "{host}/dev/App:1.0",  # uppercase repository
        "{host}/dev/app:bad tag",
        "{host}/dev/app@sha256:1234",  # a digest that is not one
        "{host}//app:1.0",
        "",
    ],
)
async def test_a_malformed_reference_fails_before_any_registry_write(
    setup: Setup, monkeypatch: pytest.MonkeyPatch, image: str
) -> None:
    await push_with_evidence(setup, "malformed")
    no_registry_writes = forbid_registry_writes(monkeypatch)
    catalog = setup.catalog()
    ref = image.format(host=setup.host)
    with pytest.raises(BadInputError):
        await hop(setup, ref, "qa")
    with pytest.raises(BadInputError):
        await pipeline(images=[ref], requester=REQUESTER)
    assert no_registry_writes == []
    assert setup.catalog() == catalog


async def test_bad_flow_parameters_are_bad_input(
    setup: Setup, monkeypatch: pytest.MonkeyPatch
) -> None:
    await push_with_evidence(setup, "params")
    no_registry_writes = forbid_registry_writes(monkeypatch)
    with pytest.raises(BadInputError, match="not in any stage"):
        await hop(setup, f"{setup.host}/elsewhere/app:1.0", "qa")
    with pytest.raises(BadInputError, match="unknown stage 'uat'"):
        await hop(setup, setup.ref("dev"), "uat")
    with pytest.raises(BadInputError, match="first stage"):
        await hop(setup, setup.ref("dev"), "dev")
    with pytest.raises(BadInputError, match="unknown stage 'uat'"):
        await pipeline(images=[setup.ref("dev")], until="uat")
    assert no_registry_writes == []


async def test_a_missing_image_is_refused(setup: Setup) -> None:
    setup.push("present", "1.0")
    message = await refused(setup, setup.ref("dev", "9.9"), "qa")
    assert message.startswith("qa:") and "not in dev" in message, message
    assert setup.tags("qa") == []
