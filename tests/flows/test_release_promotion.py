"""Promoting a release (#16): all of its members into a stage, or none of them.

A three-member release (a multi-platform image, a single image, a chart-shaped artifact) goes
dev → prod by the one release reference, through signed stages; every stage receives the same
digests, one approval covers the release, and prod's VSA names every member (checked by
securesystemslib, an independent DSSE implementation). A member whose scan refuses stops the
whole release with no tag moved in that stage."""

from __future__ import annotations

import datetime as dt
import json

import pytest

from flows.approvals import read_request, request_markdown
from flows.hops import PromotionRefused
from flows.promote import promote
from flows.records import PromotionRecord
from gates import attestations, vsa
from gates.keys import read_public_key
from tests.flows.helpers import (
    CRITICAL_SCAN,
    Setup,
    alongside,
    attach_evidence,
    keypair,
    promote_runs,
    wait_for_approval_request,
)
from tests.support import images as im
from tests.support.cli import airlock, assert_refusal, run_cli

pytestmark = [pytest.mark.anyio, pytest.mark.usefixtures("fast_approval_polls")]

STAGES = ("qa", "staging", "prod")


async def release_of_three(setup: Setup, seed: str, **evidence: object) -> dict[str, im.Image]:
    """api (two platforms), worker and chart pushed to dev as 1.0 with passing evidence (or, per
    member name, the scan report given), and the release shop:1.0 made of them."""
    members = {"api": im.multi_platform(f"{seed}-api"), "worker": im.image(f"{seed}-worker"),
               "chart": im.chart(f"{seed}-chart")}  # fmt: skip
    for name, img in members.items():
        setup.reg.pusher.push(f"dev/{name}", img, "1.0")
        scan = evidence.get(name)
        await attach_evidence(
            setup.reg, img, repo=f"dev/{name}", **({"scan": scan} if scan else {})
        )  # type: ignore[arg-type]
    refs = [setup.ref("dev", name=name) for name in members]
    made = airlock("release", "create", "shop:1.0", *refs, "--pipeline", setup.file)
    assert made.returncode == 0, made.stderr
    return members


def release_ref(setup: Setup) -> str:
    return setup.ref("dev", name="releases/shop")


def signed(setup: Setup) -> None:
    keys = setup.path.parent / "keys"
    keys.mkdir()
    for name in STAGES:
        keypair(keys, name)
    setup.write(
        **{s: {"signing_key": f"keys/{s}.key", "public_key": f"keys/{s}.pub"} for s in STAGES}
    )


async def test_a_three_member_release_goes_dev_to_prod_with_the_same_digests(
    setup: Setup, cli_env: dict[str, str]
) -> None:
    signed(setup)
    members = await release_of_three(setup, "rel-e2e")
    release = setup.digest("dev", name="releases/shop")
    assert release is not None

    # qa by the CLI, as people do; then staging and prod by the same release reference
    proc = await run_cli(
        "promote", release_ref(setup), "--to", "qa", "--pipeline", setup.file, env=cli_env
    )
    assert proc.returncode == 0, proc.stderr
    await promote(image=release_ref(setup), to_stage="staging", requester="ci")
    started = dt.datetime.now(dt.UTC)
    shown: list[str] = []

    async def approve_once() -> None:
        """What the reviewer reads: the release's digest, every member's, every member's gates."""
        run = await wait_for_approval_request(
            promote_runs(release_ref(setup), "prod"), since=started
        )
        request = await read_request(run.id)
        assert request is not None
        shown.append(request_markdown(request))
        approved = await run_cli("approve", str(run.id), "--by", "alice", env=cli_env)
        assert approved.returncode == 0, approved.stderr

    done = await alongside(
        promote(image=release_ref(setup), to_stage="prod", requester="ci"), approve_once()
    )
    assert done["status"] == "promoted"
    assert [m["image"] for m in done["members"]] == list(members)
    [text] = shown  # one approval for the whole release, of the release's digest
    assert f"```\n{release}\n```" in text and "The release's 3 members, each by digest" in text
    for name, img in members.items():
        assert f"- {name} sha256\\:{img.digest[7:19]}…" in text, text

    for stage in STAGES:
        for name, img in members.items():
            assert setup.digest(stage, name=name) == img.digest, (stage, name)
        assert setup.digest(stage, name="releases/shop") == release

    # every member's prod record says it came as part of the release, with the one approval
    for name, img in members.items():
        [record] = [
            r for r in await setup.records("prod", img.digest, name=name) if r.stage == "prod"
        ]
        assert record.part_of == "shop:1.0"
        assert [a.approver for a in record.approvals] == ["alice"]
        assert {r.gate for r in record.gates} == {"approval"}
    [record] = [r for r in await setup.records("prod", release, name="releases/shop")
                if r.stage == "prod"]  # fmt: skip
    assert isinstance(record, PromotionRecord) and record.image == "releases/shop"

    # prod's VSA of the release names the index and every member, verified independently
    await _check_release_vsa(setup, release, members)

    shown = airlock("release", "show", "shop:1.0", "--pipeline", setup.file)
    assert shown.returncode == 0, shown.stderr
    assert "prod: all 3 members" in shown.stdout, shown.stdout


async def _check_release_vsa(setup: Setup, release: str, members: dict[str, im.Image]) -> None:
    from securesystemslib.dsse import Envelope
    from securesystemslib.exceptions import VerificationError
    from securesystemslib.signer import SSlibKey

    public = read_public_key(setup.path.parent / "keys" / "prod.pub")
    key = SSlibKey.from_crypto(public.crypto, public.key_id, "ecdsa-sha2-nistp256")
    async with setup.reg.client() as client:
        found = await attestations.collect(client, "prod/releases/shop", release)
    ours = []  # qa's and staging's VSAs travel with the index: prod's verify with prod's key
    for item in found:
        envelope = Envelope.from_dict(json.loads(item.envelope or b""))
        try:
            envelope.verify([key], threshold=1)
        except VerificationError:
            continue
        ours.append(json.loads(envelope.payload))
    assert len(ours) == 2, found  # the cosign .att layout and the sigstore bundle referrer
    for statement in ours:
        assert statement["predicateType"] == vsa.PREDICATE_TYPE
        assert statement["predicate"]["verifiedLevels"] == [vsa.level("prod")]
        subjects = {s["digest"]["sha256"] for s in statement["subject"]}
        assert subjects == {d[7:] for d in [release, *(m.digest for m in members.values())]}


async def test_a_member_whose_scan_refuses_stops_the_whole_release_with_no_tag_moved(
    setup: Setup,
) -> None:
    members = await release_of_three(setup, "rel-refused", worker=CRITICAL_SCAN)
    # `airlock plan` says so beforehand, member by member (no Prefect, nothing written)
    planned = airlock("plan", release_ref(setup), "--to", "qa", "--json", "--pipeline", setup.file)
    assert planned.returncode == 0, planned.stderr
    plan = json.loads(planned.stdout)
    assert plan["members"] == list(members)
    verdicts = {g["gate"]: g["passed"] for g in plan["gates"]}
    expected = {
        f"{m}: {g}": (m, g) != ("worker", "scan") for m in members for g in ("tests", "scan")
    }
    assert verdicts == expected

    state = await promote(image=release_ref(setup), to_stage="qa", return_state=True)
    with pytest.raises(PromotionRefused, match=r"release shop:1\.0: worker: scan gate") as e:
        await state.result()
    assert "no member moved" in str(e.value)
    for name in members:  # api and chart passed their gates: still nothing of them moved
        assert setup.tags("qa", name=name) == [], name
        assert await setup.history("qa", name=name) == []
    assert setup.tags("qa", name="releases/shop") == []

    # in the UI, the run's task says whose gates it judged, and is red
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    this_run = FlowRunFilter(id=FlowRunFilterId(any_=[state.state_details.flow_run_id]))
    async with get_client() as client:
        runs = await client.read_task_runs(flow_run_filter=this_run)
    gates = [r for r in runs if r.name == "gates of api, worker, chart"]
    assert [r.state.type.value for r in gates if r.state] == ["FAILED"]


async def test_a_release_is_promoted_only_from_where_it_passed(setup: Setup) -> None:
    """Straight from dev to staging (skipping qa) is refused for the release as for an image;
    so is a release an insider pushed into qa by hand, index and members: it has no qa record."""
    members = await release_of_three(setup, "rel-skip")
    with pytest.raises(PromotionRefused, match=r"is not in qa"):
        await promote(image=release_ref(setup), to_stage="staging")

    raw, media_type = setup.reg.pusher.manifest("dev/releases/shop", "1.0")
    for name, img in members.items():
        setup.reg.pusher.push(f"qa/{name}", img, "1.0")
    index = im.Image(raw, media_type, children=list(members.values()))
    setup.reg.pusher.push("qa/releases/shop", index, "1.0")
    with pytest.raises(PromotionRefused, match=r"in qa but was never promoted there"):
        await promote(image=release_ref(setup), to_stage="staging")
    assert setup.tags("staging", name="releases/shop") == []
    assert all(setup.tags("staging", name=name) == [] for name in members)


async def test_a_frozen_stage_refuses_a_release_with_its_reason(
    setup: Setup, cli_env: dict[str, str]
) -> None:
    members = await release_of_three(setup, "rel-frozen")
    frozen = await run_cli(
        "freeze", "qa", "--reason", "release train", "--pipeline", setup.file, env=cli_env
    )
    assert frozen.returncode == 0, frozen.stderr
    with pytest.raises(PromotionRefused, match=r"qa: frozen by .*release train"):
        await promote(image=release_ref(setup), to_stage="qa")
    assert all(setup.tags("qa", name=name) == [] for name in members)
    assert setup.tags("qa", name="releases/shop") == []


async def test_rollback_of_a_release_puts_every_member_back(
    setup: Setup, cli_env: dict[str, str]
) -> None:
    """qa moves one tag per image (`tag: current`): release 1.1 replaces 1.0's api and worker;
    `airlock rollback qa --release shop` puts both back, and the release's own tag with them."""
    setup.write(qa={"tag": "current"})
    versions = {}
    for version in ("1.0", "1.1"):
        built = {name: im.image(f"rel-rollback-{name}-{version}") for name in ("api", "worker")}
        for name, img in built.items():
            setup.reg.pusher.push(f"dev/{name}", img, version)
            await attach_evidence(setup.reg, img, repo=f"dev/{name}")
        refs = [setup.ref("dev", version, name=name) for name in built]
        made = airlock("release", "create", f"shop:{version}", *refs, "--pipeline", setup.file)
        assert made.returncode == 0, made.stderr
        await promote(image=setup.ref("dev", version, name="releases/shop"), to_stage="qa")
        versions[version] = (built, setup.digest("dev", version, name="releases/shop"))
    assert setup.digest("qa", "current", name="api") == versions["1.1"][0]["api"].digest

    proc = await run_cli(
        "rollback", "qa", "--release", "shop", "--pipeline", setup.file, env=cli_env
    )
    assert proc.returncode == 0, proc.stderr
    built, release = versions["1.0"]
    for name, img in built.items():
        assert setup.digest("qa", "current", name=name) == img.digest, name
        [last] = (await setup.history("qa", name=name))[-1:]
        assert (last.kind, last.part_of) == ("rollback", "shop:1.0")
    assert setup.digest("qa", "current", name="releases/shop") == release

    again = await run_cli(
        "rollback", "qa", "--release", "shop", "--pipeline", setup.file, env=cli_env
    )
    assert_refusal(again, 1, "qa: release shop has no earlier release here to go back to")


async def test_the_pipeline_takes_a_release_through_every_stage_without_approval(
    setup: Setup, cli_env: dict[str, str]
) -> None:
    """`airlock pipeline RELEASE --until staging`: the release's hops in the pipeline run (qa and
    staging have no approval gate, so images would go in a batch; a release never does)."""
    members = await release_of_three(setup, "rel-pipeline")
    proc = await run_cli(
        "pipeline", release_ref(setup), "--until", "staging", "--pipeline", setup.file,
        env=cli_env,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    for stage in ("qa", "staging"):
        for name, img in members.items():
            assert setup.digest(stage, name=name) == img.digest, (stage, name)
            [record] = [r for r in await setup.records(stage, img.digest, name=name)
                        if r.stage == stage]  # fmt: skip
            assert record.part_of == "shop:1.0", (stage, name)  # as the release, not a batch
        assert setup.digest(stage, name="releases/shop") == setup.digest(
            "dev", name="releases/shop"
        )
    assert setup.tags("prod", name="api") == []


async def _pushed_release(
    setup: Setup, version: str, builds: dict[str, tuple[im.Image, str]]
) -> str:
    """`airlock release create shop:VERSION` of the builds, each pushed to dev/NAME under its
    tag with passing evidence; returns the release's digest."""
    for name, (img, tag) in builds.items():
        setup.reg.pusher.push(f"dev/{name}", img, tag)
        await attach_evidence(setup.reg, img, repo=f"dev/{name}")
    refs = [setup.ref("dev", tag, name=name) for name, (_, tag) in builds.items()]
    made = airlock("release", "create", f"shop:{version}", *refs, "--pipeline", setup.file)
    assert made.returncode == 0, made.stderr
    return made.stdout.splitlines()[0]


async def test_another_release_cannot_choose_the_tags_a_members_next_hop_moves(
    setup: Setup,
) -> None:
    """The insider tags api's build a second time in dev (`evil`) and makes a release of it:
    legitimate, gated, and in qa under `evil`. The next hop of the real release still moves
    api's own tag (the release's), not the tag of the newest qa record of that digest."""
    api, worker = im.image("rel-tags-api"), im.image("rel-tags-worker")
    await _pushed_release(setup, "1.0", {"api": (api, "1.0"), "worker": (worker, "1.0")})
    await promote(image=release_ref(setup), to_stage="qa")
    setup.reg.pusher.push("dev/api", api, "evil")
    await _pushed_release(setup, "2.0", {"api": (api, "evil"), "worker": (worker, "1.0")})
    await promote(image=setup.ref("dev", "2.0", name="releases/shop"), to_stage="qa")
    assert setup.digest("qa", "evil", name="api") == api.digest  # the newest qa record of api

    await promote(image=release_ref(setup), to_stage="staging")
    assert setup.tags("staging", name="api") == ["1.0"]


async def test_a_hand_pushed_index_cannot_give_a_build_another_images_tag(setup: Setup) -> None:
    """An index pushed by hand (no `release create` checks) lists api's new build under the tag
    of its old one: refused at the first hop — the tag must name the digest — and nothing moves."""
    old, new = im.image("rel-hand-old"), im.image("rel-hand-new")
    worker = im.image("rel-hand-worker")
    await _pushed_release(setup, "1.0", {"api": (old, "1.0"), "worker": (worker, "1.0")})
    setup.reg.pusher.push("dev/api", new, "1.1")
    await attach_evidence(setup.reg, new, repo="dev/api")
    raw, _ = setup.reg.pusher.manifest("dev/releases/shop", "1.0")
    doc = json.loads(raw)
    doc["manifests"][0].update({k: v for k, v in new.descriptor().items() if k != "annotations"})
    forged = im.Image(json.dumps(doc).encode(), im.OCI_INDEX, [], [new, worker])
    setup.reg.pusher.push("dev/releases/shop", forged, "1.2")

    with pytest.raises(PromotionRefused, match=r"lists .*/dev/api:1\.0 as sha256:.*but that tag"):
        await promote(image=setup.ref("dev", "1.2", name="releases/shop"), to_stage="qa")
    assert setup.tags("qa", name="api") == [] and setup.tags("qa", name="worker") == []


async def test_a_version_pushed_again_by_hand_never_replaces_the_release_in_a_stage(
    setup: Setup,
) -> None:
    """shop:1.0 is in qa (a stage whose tags may move); someone re-points dev/releases/shop:1.0
    at another release's index: promoting it is refused, and qa keeps the release it had."""
    first = await _pushed_release(
        setup,
        "1.0",
        {"api": (im.image("rel-again-a"), "1.0"), "worker": (im.image("rel-again-w"), "1.0")},
    )
    await promote(image=release_ref(setup), to_stage="qa")
    await _pushed_release(
        setup,
        "1.1",
        {"api": (im.image("rel-again-a2"), "1.1"), "worker": (im.image("rel-again-w2"), "1.1")},
    )
    raw, media_type = setup.reg.pusher.manifest("dev/releases/shop", "1.1")
    setup.reg.pusher.push("dev/releases/shop", im.Image(raw, media_type), "1.0")
    with pytest.raises(PromotionRefused, match=r"is release sha256:\w+ already; a release never"):
        await promote(image=release_ref(setup), to_stage="qa")
    assert setup.digest("qa", name="releases/shop") == first
    assert setup.tags("qa", name="api") == ["1.0"]
