"""Insider attacks on the promote flow, each written as the attack: someone who may push to dev
(or start runs) tries to get an image into a stage without passing that stage's gates.

The promote flow runs in this process against the Prefect test server and a real registry; what
reached each stage is read back with tests.support.images.Pusher (plain httpx, not airlock).
"""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import pytest

from flows.promote import PromotionRefused, promote
from flows.records import PromotionRecord
from registry import mediatypes as mt
from registry.errors import BadInputError
from registry.manifest import Descriptor
from registry.referrers import merge_fallback
from tests.flows.helpers import (
    Approver,
    Setup,
    alongside,
    attach,
    promote_runs,
    push_with_evidence,
)
from tests.support import images as im

pytestmark = [pytest.mark.anyio, pytest.mark.usefixtures("prefect_api", "fast_approval_polls")]

SBOM = "application/spdx+json"


def forged_record(setup: Setup, stage: str, img: im.Image) -> bytes:
    """A promotion record as airlock writes one, claiming `img` passed `stage`."""
    now = dt.datetime.now(dt.UTC)
    return (
        PromotionRecord(
            stage=stage,
            image="app",
            digest=img.digest,
            source=setup.at_digest("dev", img.digest),
            target=f"{setup.ref(stage)}@{img.digest}",
            tags=["1.0"],
            release="1.0",
            airlock_version="forged",
            started_at=now,
            finished_at=now,
        )
        .model_dump_json()
        .encode()
    )


def built_in_1970(seed: str) -> im.Image:
    """An image whose config says it was created at the epoch, as every reproducible build's
    does (SOURCE_DATE_EPOCH=0) — and as anyone who builds an image may write."""
    img = im.image(seed)
    config = json.loads(img.blobs[0].data)
    config["created"] = "1970-01-01T00:00:00Z"
    blob = im.Blob(json.dumps(config, sort_keys=True).encode(), img.blobs[0].media_type)
    doc = json.loads(img.raw)
    doc["config"] = blob.descriptor()
    return im.Image(json.dumps(doc).encode(), img.media_type, [blob, *img.blobs[1:]])


async def test_an_image_smuggled_as_a_referrer_with_forged_records_stays_in_dev(
    setup: Setup,
) -> None:
    """The critical path: F (never gated) is pushed to dev with `subject` = G (good), with
    forged qa and staging records for F, and under G's cosign signature tag a runnable image.
    G's promotion must carry G's evidence and nothing else; F must stay unpromotable."""
    good = await push_with_evidence(setup, "good-carrier")
    smuggled = im.with_subject(im.image("never-gated"), good)
    setup.reg.pusher.push("dev/app", smuggled)  # by digest
    for stage in ("qa", "staging"):
        forged = forged_record(setup, stage, smuggled)
        await attach(setup.reg, "dev/app", smuggled, mt.PROMOTION_RECORD, forged)
    # F is listed among G's referrers (the fallback index), under an innocent-looking type
    entry = Descriptor(smuggled.media_type, smuggled.digest, len(smuggled.raw), SBOM)
    async with setup.reg.client() as client:
        assert await merge_fallback(client, "dev/app", good.digest, [entry]) == []
    runnable_sig = im.image("runnable-under-the-sig-tag")
    setup.reg.pusher.push("dev/app", runnable_sig, im.fallback_tag_of(good.digest) + ".sig")

    await promote(image=setup.ref("dev"), to_stage="qa", requester="ci")

    assert setup.digest("qa") == good.digest
    assert setup.reg.pusher.manifest("qa/app", smuggled.digest) is None  # F did not travel
    assert setup.reg.pusher.digest("qa/app", im.fallback_tag_of(good.digest) + ".sig") is None
    kinds = {d.artifact_type for d in await setup.referrers("qa", good.digest)}
    assert kinds == {mt.TEST_REPORT_PYTEST, mt.SCAN_REPORT_TRIVY}  # G's evidence did
    assert [r.stage for r in await setup.records("qa", good.digest)] == ["qa"]
    # and F cannot be promoted on: it is not in qa, and no qa record of it counts
    with pytest.raises(PromotionRefused, match="not in qa"):
        await promote(image=setup.at_digest("qa", smuggled.digest), to_stage="staging")


async def test_a_forged_record_pushed_next_to_an_image_in_a_lower_stage_never_counts(
    setup: Setup,
) -> None:
    """Even where a forged record sits in the right repository (here: qa, as if it had been
    carried there), it counts only if it names that repository as its target."""
    img = await push_with_evidence(setup, "forged-qa")
    setup.reg.pusher.push("qa/app", img, "1.0")  # copied to qa by hand, not promoted
    record = json.loads(forged_record(setup, "qa", img))
    record["target"] = f"{setup.ref('dev')}@{img.digest}"  # a record of somewhere else
    await attach(setup.reg, "qa/app", img, mt.PROMOTION_RECORD, json.dumps(record).encode())
    with pytest.raises(PromotionRefused, match="never promoted there"):
        await promote(image=setup.ref("qa"), to_stage="staging")
    assert setup.tags("staging") == []


async def test_a_requester_name_with_invisible_characters_is_refused(setup: Setup) -> None:
    await push_with_evidence(setup, "invisible-requester")
    with pytest.raises(BadInputError, match="invisible or control character"):
        await promote(image=setup.ref("dev"), to_stage="qa", requester="ci\u200b")
    assert setup.tags("qa") == []


async def test_a_fullwidth_requester_cannot_approve_their_own_promotion(setup: Setup) -> None:
    setup.write(gates={"qa": [{"kind": "approval", "timeout": "5s"}]})
    img = setup.push("fullwidth")
    approver = Approver(promote_runs(setup.ref("dev"), "qa"), [("approve", "\uff43\uff49", "me")])
    with pytest.raises(PromotionRefused, match="approval timed out") as info:
        await alongside(
            promote(image=setup.ref("dev"), to_stage="qa", requester="ci"), approver.run()
        )
    assert "not counted (the requester may not approve" in str(info.value)
    assert setup.digest("qa", img.digest) is None


# ---------------------------------------------------------------------------- soak in dev


async def _push_event(setup: Setup, img: im.Image, tag: str = "1.0") -> None:
    """What the webhook receiver sends Prefect when the registry reports the push."""
    from prefect.client.orchestration import get_client

    from flows.config import load
    from webhooks.events import registry_pushes

    envelope = {
        "events": [
            {
                "id": f"push-{img.digest[7:19]}",
                "action": "push",
                "target": {
                    "mediaType": img.media_type,
                    "digest": img.digest,
                    "repository": "dev/app",
                    "tag": tag,
                },
                "actor": {"name": "dev-user"},
            }
        ]
    }
    [push], _, _ = registry_pushes(envelope, load(setup.file))
    async with get_client() as client:
        response = await client._client.post("/events", json=[push.event()])
        response.raise_for_status()


async def _first_pushed(setup: Setup, img: im.Image) -> Any:
    """Wait until Prefect has stored the push event (events are persisted asynchronously)."""
    import asyncio

    from flows import pushes
    from registry.reference import parse

    for _ in range(200):
        when = await pushes.first_received(parse(setup.ref("dev")), img.digest)
        if when is not None:
            return when
        await asyncio.sleep(0.1)  # polls a state, not a wait for time to pass
    raise AssertionError("the push event was never stored")


async def test_soak_in_dev_is_not_the_build_date(setup: Setup) -> None:
    """A 1h soak in dev (qa's gate) must not pass because the image says it was built in
    1970: time in the first stage counts from the registry's push event."""
    setup.write(gates={"qa": [{"kind": "soak", "policy": {"min": "1h"}}]})
    img = built_in_1970("reproducible")
    setup.reg.pusher.push("dev/app", img, "1.0")
    with pytest.raises(PromotionRefused, match="nothing airlock or the registry recorded"):
        await promote(image=setup.ref("dev"), to_stage="qa")
    await _push_event(setup, img)
    pushed = await _first_pushed(setup, img)
    with pytest.raises(PromotionRefused, match=r"in dev, needs 1h"):
        await promote(image=setup.ref("dev"), to_stage="qa")
    assert setup.tags("qa") == []
    # the same gate passes once the event is old enough: a 0s soak counts from it
    setup.write(gates={"qa": [{"kind": "soak", "policy": {"min": "0s"}}]})
    await promote(image=setup.ref("dev"), to_stage="qa")
    [record] = await setup.records("qa", img.digest)
    [soak] = record.gates
    assert soak.evidence[0].created == pushed
    assert soak.evidence[0].source.endswith("push event")
