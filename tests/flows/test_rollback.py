"""The rollback flow: re-point a stage's tag to a digest that passed the stage before."""

from __future__ import annotations

from typing import Any

import pytest

from flows.promote import PromotionRefused, promote, rollback
from registry.errors import BadInputError
from tests.flows.helpers import Setup, push_with_evidence
from tests.support import images as im

pytestmark = [pytest.mark.anyio, pytest.mark.usefixtures("prefect_api")]


async def release(setup: Setup, seed: str) -> im.Image:
    """A new build under dev/app:1.0 with passing evidence, promoted into qa:1.0 (qa is not
    immutable, so its tag moves)."""
    img = await push_with_evidence(setup, seed)
    await promote(image=setup.ref("dev"), to_stage="qa", requester="ci")
    assert setup.digest("qa") == img.digest
    return img


async def roll(setup: Setup, **kw: Any) -> dict[str, Any]:
    kw.setdefault("requester", "oncall")
    return await rollback(stage="qa", image="app", **kw)


async def test_rollback_returns_the_tag_to_the_previous_digest(setup: Setup) -> None:
    v1 = await release(setup, "v1")
    v2 = await release(setup, "v2")

    done = await roll(setup)

    assert done["status"] == "rolled back"
    assert (done["digest"], done["from"]) == (v1.digest, v2.digest)
    assert done["target"] == setup.ref("qa")
    assert done["record"] and done["record"].startswith("sha256:")
    assert setup.digest("qa") == v1.digest  # read back without airlock
    *_, last = await setup.history("qa")
    assert last.kind == "rollback" and last.stage == "qa"
    assert last.digest == v1.digest and last.tags == ["1.0"]
    assert last.requester == "oncall" and last.flow_run_id
    assert last.target == f"{setup.ref('qa')}@{v1.digest}"
    assert last.started_at <= last.finished_at
    kinds = [r.kind for r in await setup.records("qa", v1.digest)]
    assert kinds == ["promotion", "rollback"]


async def test_rollback_to_a_digest_that_passed(setup: Setup) -> None:
    v1 = await release(setup, "to-v1")
    await release(setup, "to-v2")
    v3 = await release(setup, "to-v3")
    done = await roll(setup, to=v1.digest)
    assert (done["digest"], done["from"]) == (v1.digest, v3.digest)
    assert setup.digest("qa") == v1.digest


async def test_rollback_to_a_digest_that_never_passed_is_refused(setup: Setup) -> None:
    await release(setup, "passed-1")
    v2 = await release(setup, "passed-2")
    stranger = im.image("never-passed")
    setup.reg.pusher.push("qa/app", stranger)  # present in qa, but never promoted there
    history = await setup.history("qa")

    with pytest.raises(PromotionRefused) as info:
        await roll(setup, to=stranger.digest)

    assert str(info.value).startswith("qa:") and "never passed" in str(info.value)
    assert stranger.digest in str(info.value)
    assert setup.digest("qa") == v2.digest  # untouched
    assert len(await setup.history("qa")) == len(history)


async def test_rolling_back_twice_goes_back_two_releases(setup: Setup) -> None:
    """v1, v2, v3 promoted; rollback → v2; rollback again → v1 (never forward to v3, the release
    that was rolled back)."""
    v1 = await release(setup, "twice-1")
    v2 = await release(setup, "twice-2")
    v3 = await release(setup, "twice-3")
    first = await roll(setup)
    assert (first["from"], first["digest"]) == (v3.digest, v2.digest)
    second = await roll(setup)
    assert second["from"] == v2.digest
    assert second["digest"] == v1.digest, "the second rollback went forward to the bad release"
    assert setup.digest("qa") == v1.digest


async def test_nothing_to_roll_back(setup: Setup) -> None:
    with pytest.raises(PromotionRefused, match="nothing was ever promoted"):
        await roll(setup)
    await release(setup, "only-one")
    with pytest.raises(PromotionRefused, match="no earlier promotion"):
        await roll(setup)


async def test_rollback_without_an_image_name_is_bad_input(setup: Setup) -> None:
    """The pipeline's repositories are per image (`qa/{name}`): no name, no repository."""
    await release(setup, "unnamed")
    with pytest.raises(BadInputError):
        await rollback(stage="qa")
    with pytest.raises(BadInputError, match="unknown stage"):
        await rollback(stage="uat", image="app")
