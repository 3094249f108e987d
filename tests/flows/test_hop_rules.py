"""What counts as having passed a stage, which tag a hop writes, and who may serialise what."""

from __future__ import annotations

import json
from typing import Any

import pytest

import flows.landing as fl
import flows.promote as fp
from flows.config import RegistrySettings
from flows.promote import PromotionRefused, pipeline, promote, rollback
from registry.client import RegistryClient
from registry.copy import copy_image
from registry.errors import BadInputError
from registry.reference import parse
from tests.flows.helpers import Setup, attach_evidence, push_with_evidence
from tests.support import images as im
from tests.support.registries import Reg

pytestmark = [pytest.mark.anyio, pytest.mark.usefixtures("prefect_api", "fast_approval_polls")]


async def hop(setup: Setup, image: str, to_stage: str, **kw: Any) -> dict[str, Any]:
    kw.setdefault("requester", "ci")
    return await promote(image=image, to_stage=to_stage, **kw)


async def test_present_in_the_previous_stage_is_not_passed(setup: Setup) -> None:
    """A digest copied into qa by hand (not promoted: no qa record) may not go on to staging,
    even though qa's promotion records of other stages would travel with a copy."""
    img = await push_with_evidence(setup, "bypass", "1.0")
    async with RegistryClient(setup.host) as client:
        await copy_image(
            client, parse(setup.ref("dev", "1.0")), client, parse(setup.ref("qa", "1.0"))
        )
    with pytest.raises(PromotionRefused, match="never promoted there") as e:
        await hop(setup, setup.ref("qa", "1.0"), "staging")
    assert img.digest in str(e.value)
    assert setup.digest("staging", "1.0") is None


async def test_every_stage_tag_is_made_from_the_release_tag(setup: Setup) -> None:
    setup.write(qa={"tag": "{tag}-{stage}"}, staging={"tag": "{tag}-{stage}"})
    img = await push_with_evidence(setup, "release", "1.0")
    await hop(setup, setup.ref("dev", "1.0"), "qa")
    done = await hop(setup, setup.ref("qa", "1.0-qa"), "staging")
    assert setup.digest("qa", "1.0-qa") == img.digest
    assert setup.digest("staging", "1.0-staging") == img.digest  # not 1.0-qa-staging
    assert done["source"].startswith(f"{setup.host}/qa/app:1.0-qa@")  # the tag that exists
    [record] = [r for r in await setup.records("staging", img.digest) if r.stage == "staging"]
    assert record.release == "1.0" and record.tags == ["1.0-staging"]


async def test_a_digest_reference_cannot_pick_a_tag(setup: Setup) -> None:
    img = await push_with_evidence(setup, "untagged", "1.0")
    with pytest.raises(BadInputError, match="name the image by the tag"):
        await hop(setup, setup.at_digest("dev", img.digest), "qa")
    assert setup.tags("qa") == []


async def test_the_board_keeps_every_image_of_a_concurrent_pipeline(setup: Setup) -> None:
    from prefect.artifacts import Artifact

    names = ["web", "api", "worker"]
    for name in names:
        img = setup.push(f"board-{name}", "1.0", name=name)
        await attach_evidence(setup.reg, img, repo=f"dev/{name}")
    await pipeline(
        [setup.ref("dev", "1.0", name=n) for n in names],
        until="qa",
        requester="ci",
    )
    board = json.loads((await Artifact.aget(fp.BOARD_KEY)).data)
    # (other tests' rows of these names, under other releases, share the session's board)
    qa_rows = {
        r["image"]: r["digest"] for r in board if (r["stage"], r["release"]) == ("qa", "1.0")
    }
    assert set(qa_rows) >= set(names)
    for name in names:
        assert qa_rows[name] == setup.digest("qa", "1.0", name=name)


async def test_an_inactive_limit_is_switched_back_on(setup: Setup) -> None:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate

    name = fl._limit_name(parse(setup.ref("qa", "1.0")))
    async with get_client() as client:
        await client.create_global_concurrency_limit(
            GlobalConcurrencyLimitCreate(name=name, limit=5, active=False)
        )
    await push_with_evidence(setup, "inactive", "1.0")
    await hop(setup, setup.ref("dev", "1.0"), "qa")
    async with get_client() as client:
        limit = await client.read_global_concurrency_limit_by_name(name)
    assert limit.active and limit.limit == 1


async def test_a_batch_switches_inactive_limits_back_on(setup: Setup) -> None:
    """A pipeline batch into two repositories reads all limits at once: a limit someone made
    inactive (it would admit everyone) is switched back to one slot there too."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate

    names = [fl._limit_name(parse(setup.ref("qa", "1.0", name))) for name in ("app", "other")]
    async with get_client() as client:
        await client.create_global_concurrency_limit(
            GlobalConcurrencyLimitCreate(name=names[0], limit=5, active=False)
        )
    await push_with_evidence(setup, "inactive-batch", "1.0")
    other = setup.push("inactive-other", "1.0", name="other")
    await attach_evidence(setup.reg, other, repo="dev/other")
    await pipeline(images=[setup.ref("dev", "1.0"), setup.ref("dev", "1.0", "other")], until="qa")
    async with get_client() as client:
        for name in names:
            limit = await client.read_global_concurrency_limit_by_name(name)
            assert limit.active and limit.limit == 1 and limit.active_slots == 0, name
    assert setup.digest("qa", "1.0", "other") == other.digest


async def test_rolling_to_the_digest_already_there_is_refused(setup: Setup) -> None:
    img = await push_with_evidence(setup, "already", "1.0")
    await hop(setup, setup.ref("dev", "1.0"), "qa")
    with pytest.raises(PromotionRefused, match="already points at"):
        await rollback(stage="qa", image="app", to=img.digest)
    assert [r.kind for r in await setup.history("qa")] == ["promotion"]


async def test_a_stage_with_approvals_needs_a_requester(setup: Setup) -> None:
    with pytest.raises(BadInputError, match="say who asks"):
        await promote(
            image=setup.ref("staging", "1.0"),
            to_stage="prod",
            requester=None,
        )


async def test_credentials_from_a_prefect_block(htpasswd_registry: Reg) -> None:
    from flows.blocks import RegistryCredentials

    await RegistryCredentials(username="alice", password="wonderland").save(
        "test-registry", overwrite=True
    )
    await RegistryCredentials(username="<token>", password="refresh-me").save(
        "test-token", overwrite=True
    )
    settings = RegistrySettings(url=htpasswd_registry.host, credentials={"block": "test-registry"})
    creds = await settings.resolve_credentials()
    assert creds is not None and creds.username == "alice" and creds.password == "wonderland"
    assert "wonderland" not in repr(creds)
    token = await RegistrySettings(
        url="r.example", credentials={"block": "test-token"}
    ).resolve_credentials()
    assert token is not None and token.identity_token == "refresh-me" and token.username is None
    with pytest.raises(BadInputError, match="no Registry Credentials block named 'missing'"):
        await RegistrySettings(
            url="r.example", credentials={"block": "missing"}
        ).resolve_credentials()
    # and it works against the registry
    htpasswd_registry.pusher.push("dev/app", im.image("blocked"), "1.0")
    async with RegistryClient(htpasswd_registry.host, credentials=creds) as client:
        assert await client.head_manifest("dev/app", "1.0") is not None
