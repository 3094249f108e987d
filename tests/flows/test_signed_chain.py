"""Stages that sign: each promotion into qa writes a VSA signed with qa's key; staging accepts a
digest as having passed qa only through such a VSA. The attacks first: a hand-pushed qa record,
a VSA signed by another key, a genuine VSA replayed next to another image — each refused, with
nothing written to staging; then the signed path, and `airlock verify` on all of them."""

from __future__ import annotations

import datetime as dt
import json
import subprocess
from typing import Any

import pytest

from flows.promote import PromotionRefused, promote
from flows.records import PromotionRecord, write_record
from gates import attestations, vsa
from gates.keys import load_private_key
from registry.errors import BadInputError
from registry.manifest import Descriptor
from tests.flows.helpers import Setup, keypair, push_with_evidence
from tests.support.cli import AIRLOCK

pytestmark = [pytest.mark.anyio, pytest.mark.usefixtures("prefect_api")]


@pytest.fixture
def signed(setup: Setup) -> Setup:
    """qa signs its promotions with keys/qa.key and is trusted by keys/qa.pub (paths relative
    to pipeline.yaml); staging and prod trust their own keys."""
    keys = setup.path.parent / "keys"
    keys.mkdir()
    for name in ("qa", "staging", "prod", "forger"):
        keypair(keys, name)
    stages: dict[str, Any] = {
        name: {"signing_key": f"keys/{name}.key", "public_key": f"keys/{name}.pub"}
        for name in ("qa", "staging", "prod")
    }
    setup.write(**stages)
    return setup


def forged_record(setup: Setup, digest: str, tag: str) -> PromotionRecord:
    """A qa record as an insider would write it by hand: well-formed, and unsigned."""
    now = dt.datetime.now(dt.UTC)
    return PromotionRecord(
        stage="qa",
        image="app",
        digest=digest,
        source=setup.at_digest("dev", digest),
        target=setup.at_digest("qa", digest),
        tags=[tag],
        release=tag,
        airlock_version="0.1.0",
        started_at=now,
        finished_at=now,
    )


async def hop(setup: Setup, image: str, to_stage: str) -> dict[str, Any]:
    return await promote(image=image, to_stage=to_stage, requester="ci")


def verify(setup: Setup, ref: str, stage: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [AIRLOCK, "verify", ref, "--stage", stage, "--pipeline", setup.file, "--json"],
        capture_output=True,
        text=True,
        timeout=60,
    )


async def test_a_signed_promotion_is_verified_and_goes_on(signed: Setup) -> None:
    img = await push_with_evidence(signed, "signed", "1.0")
    await hop(signed, signed.ref("dev", "1.0"), "qa")

    result = verify(signed, signed.ref("qa", "1.0"), "qa")
    assert result.returncode == 0, result.stderr
    doc = json.loads(result.stdout)
    assert doc["digest"] == img.digest and doc["verified"] is True
    assert [s["stage"] for s in doc["stages"]] == ["qa"]
    assert doc["stages"][0]["detail"].startswith("PASSED, signed by")

    await hop(signed, signed.ref("qa", "1.0"), "staging")
    assert signed.digest("staging", "1.0") == img.digest
    assert verify(signed, signed.ref("dev", "1.0"), "staging").returncode == 0
    not_yet = verify(signed, signed.ref("dev", "1.0"), "prod")
    assert not_yet.returncode == 1
    prod = json.loads(not_yet.stdout)["stages"][-1]
    assert prod["stage"] == "prod" and not prod["verified"]
    assert prod["detail"] == f"no prod VSA is attached to prod/app@{img.digest}"


async def test_a_hand_pushed_record_does_not_pass_qa(signed: Setup) -> None:
    """The insider with push rights to qa: copy the image there and write a qa record by hand.
    Without qa's VSA, staging refuses it and nothing is written there."""
    img = await push_with_evidence(signed, "forged-record", "1.0")
    signed.push("forged-record", "1.0", stage="qa")
    record = forged_record(signed, img.digest, "1.0")
    subject = Descriptor(img.media_type, img.digest, len(img.raw))
    async with signed.reg.client() as client:
        await write_record(client, "qa/app", subject, record)

    with pytest.raises(PromotionRefused) as e:
        await hop(signed, signed.ref("qa", "1.0"), "staging")
    assert f"has no valid qa VSA (no qa VSA is attached to qa/app@{img.digest})" in str(e.value)
    assert "staging/app" not in signed.catalog()
    assert verify(signed, signed.ref("qa", "1.0"), "qa").returncode == 1


async def test_a_vsa_signed_by_another_key_does_not_pass_qa(signed: Setup) -> None:
    img = await push_with_evidence(signed, "forged-vsa", "1.0")
    await hop(signed, signed.ref("dev", "1.0"), "qa")
    # the forger's VSA sits next to a second image, copied into qa with a forged record
    other = await push_with_evidence(signed, "other", "2.0")
    signed.push("other", "2.0", stage="qa")
    subject = Descriptor(other.media_type, other.digest, len(other.raw))
    forger = load_private_key((signed.path.parent / "keys/forger.key").read_bytes())
    summary = vsa.predicate(
        stage="qa",
        resource_uri=signed.at_digest("qa", other.digest),
        policy_uri="file:///forged",
        policy_digest=img.digest,
        inputs=[],
        passed=True,
        version="0.1.0",
        verified_at=dt.datetime.now(dt.UTC),
    )
    record = forged_record(signed, other.digest, "2.0")
    async with signed.reg.client() as client:
        await write_record(client, "qa/app", subject, record)
        await vsa.write(client, "qa/app", subject, "qa/app", summary, forger)

    with pytest.raises(PromotionRefused, match="is signed by a key the policy does not name"):
        await hop(signed, signed.ref("qa", "2.0"), "staging")
    assert signed.digest("staging", "2.0") is None
    assert verify(signed, signed.ref("qa", "2.0"), "qa").returncode == 1


async def test_a_genuine_vsa_replayed_next_to_another_image_does_not_pass(signed: Setup) -> None:
    """qa's real VSA for image A, copied (envelope and all) to image B in qa."""
    a = await push_with_evidence(signed, "genuine", "1.0")
    await hop(signed, signed.ref("dev", "1.0"), "qa")
    b = await push_with_evidence(signed, "replayed", "2.0")
    signed.push("replayed", "2.0", stage="qa")
    subject = Descriptor(b.media_type, b.digest, len(b.raw))
    async with signed.reg.client() as client:
        [found, *_] = await attestations.collect(client, "qa/app", a.digest)
        assert found.envelope is not None
        await attestations.attach(client, "qa/app", subject, found.envelope, vsa.PREDICATE_TYPE)
        record = forged_record(signed, b.digest, "2.0")
        await write_record(client, "qa/app", subject, record)

    with pytest.raises(PromotionRefused, match=f"a VSA about another digest, not {b.digest}"):
        await hop(signed, signed.ref("qa", "2.0"), "staging")
    assert signed.digest("staging", "2.0") is None


async def test_a_newer_forged_record_does_not_rename_the_release(signed: Setup) -> None:
    """The digest genuinely passed qa as 1.0. An insider then writes a qa record for it, dated
    tomorrow so it reads as the newest, saying it is release 2.0: staging must not tag it 2.0
    (2.0-anything would then serve 1.0's bytes), nor take its entry time (a future one stops the
    promotion at the soak gate). The hop reads the record qa's signed VSA cites, never the
    newest one."""
    img = await push_with_evidence(signed, "forged-release", "1.0")
    await hop(signed, signed.ref("dev", "1.0"), "qa")
    tomorrow = dt.datetime.now(dt.UTC) + dt.timedelta(days=1)
    forged = forged_record(signed, img.digest, "2.0").model_copy(
        update={"started_at": tomorrow, "finished_at": tomorrow}
    )
    subject = Descriptor(img.media_type, img.digest, len(img.raw))
    async with signed.reg.client() as client:
        await write_record(client, "qa/app", subject, forged)

    await hop(signed, signed.ref("qa", "1.0"), "staging")
    assert signed.tags("staging") == ["1.0"]
    assert signed.digest("staging", "1.0") == img.digest


async def test_drift_watch_finds_a_tag_moved_with_a_forged_record(
    signed: Setup, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An insider pushes another image over qa/app:1.0 and writes a qa record naming it, so the
    history agrees with the tag. Without qa's VSA for that digest, it is still drift."""
    from flows.watch import DriftDetected, drift_watch

    monkeypatch.setenv("AIRLOCK_PIPELINE", signed.file)
    await push_with_evidence(signed, "watched", "1.0")
    await hop(signed, signed.ref("dev", "1.0"), "qa")
    assert await drift_watch() == []

    intruder = signed.push("intruder", "1.0", stage="qa")
    subject = Descriptor(intruder.media_type, intruder.digest, len(intruder.raw))
    async with signed.reg.client() as client:
        await write_record(client, "qa/app", subject, forged_record(signed, intruder.digest, "1.0"))
    with pytest.raises(DriftDetected) as e:
        await drift_watch()
    assert f"{signed.host}/qa/app:1.0 no valid qa VSA (no qa VSA is attached" in str(e.value)
    assert intruder.digest in str(e.value)


async def test_a_signing_key_in_a_prefect_secret_block_signs(signed: Setup) -> None:
    """`signing_key: {block: NAME}`: the promoter reads its key from a Prefect Secret block
    (where a team keeps it), and the VSA it writes verifies with qa's public key; a block that
    does not exist is one line of bad input, before anything is written."""
    from prefect.blocks.system import Secret

    pem = (signed.path.parent / "keys/qa.key").read_text()
    await Secret(value=pem).asave("airlock-test-qa-signing-key", overwrite=True)
    block = {"block": "airlock-test-qa-signing-key"}
    signed.write(qa={"signing_key": block, "public_key": "keys/qa.pub"})
    img = await push_with_evidence(signed, "block-key", "1.0")
    await hop(signed, signed.ref("dev", "1.0"), "qa")
    result = verify(signed, signed.ref("qa", "1.0"), "qa")
    assert result.returncode == 0, result.stdout + result.stderr
    assert json.loads(result.stdout)["digest"] == img.digest
    records = await signed.history("qa")
    assert records and all("PRIVATE KEY" not in r.model_dump_json() for r in records)

    signed.write(qa={"signing_key": {"block": "no-such-block"}, "public_key": "keys/qa.pub"})
    await push_with_evidence(signed, "block-missing", "2.0")
    with pytest.raises(BadInputError, match="no Secret block named 'no-such-block'"):
        await hop(signed, signed.ref("dev", "2.0"), "qa")
    assert signed.digest("qa", "2.0") is None


async def test_a_signing_key_that_is_not_the_public_keys_refuses_before_anything(
    signed: Setup,
) -> None:
    signed.write(
        qa={"signing_key": "keys/forger.key", "public_key": "keys/qa.pub"},
    )
    await push_with_evidence(signed, "mismatch", "1.0")
    with pytest.raises(
        BadInputError, match=r"stage qa signing_key .* is not the key of its public_key"
    ):
        await hop(signed, signed.ref("dev", "1.0"), "qa")
    assert "qa/app" not in signed.catalog()


def test_verify_bad_input_is_one_line_exit_2(signed: Setup) -> None:
    bad = verify(signed, "not a reference!", "qa")
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and "Traceback" not in bad.stderr
    first = verify(signed, signed.ref("dev", "1.0"), "dev")
    assert first.returncode == 2 and "dev is the first stage" in first.stderr


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            {"public_key": "keys/missing.pub"},
            "stage qa public_key: {folder}/keys/missing.pub: cannot read the public key",
        ),
        (
            {"gates": [{"kind": "tests", "policy": {"signed_by": ["keys/qa.key"]}}]},
            "stage qa tests policy signed_by[0]: ",
        ),
        ({"public_key": "ssh-rsa AAAAB3NzaC1yc2E"}, "stage qa public_key is not a usable OpenSSH"),
    ],
)
def test_keys_that_cannot_be_read_are_said_at_load(
    signed: Setup, change: dict[str, Any], message: str
) -> None:
    from flows.config import load

    signed.write(qa=change)
    with pytest.raises(BadInputError) as e:
        load(signed.file)
    message = message.format(folder=signed.path.parent)
    assert str(e.value).startswith(f"{signed.file}: {message}"), str(e.value)
    assert "\n" not in str(e.value) and "PRIVATE" not in str(e.value)
