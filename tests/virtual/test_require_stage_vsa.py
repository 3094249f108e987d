"""Pull-time enforcement by signed VSAs: the `signed` view (`require_stage: {stage: prod,
public_key: keys/prod.pub}`) serves a digest only if prod's VSA, signed by prod's key, says it
passed prod. The attacks of someone who can push to prod's repository come first — a hand-written
record, a VSA signed with another key, a genuine VSA copied next to another image, qa's VSA —
each answered as absent (its blobs too), while the records-only `shop` view is fooled by the
first. Then the signed path, by tag and by digest."""

from __future__ import annotations

import asyncio
import datetime as dt
from pathlib import Path

import httpx
import pytest

from flows.config import load as load_pipeline
from gates import attestations, vsa
from gates.keys import generate, load_private_key, read_private_key
from registry.client import RegistryClient
from registry.errors import BadInputError
from registry.manifest import Descriptor
from tests.support import images as im
from tests.support.cli import airlock, assert_one_line_error
from tests.support.gateway import Gw
from virtual.config import load

ACCEPT = {"Accept": im.ACCEPT}


def sign_vsa(gw: Gw, repo: str, img: im.Image, *, stage: str = "prod", key: str = "prod") -> None:
    """What a signed promotion into `stage` leaves next to the image: its VSA."""
    summary = vsa.predicate(
        stage=stage,
        resource_uri=f"{gw.local.host}/{repo}@{img.digest}",
        policy_uri="file:///pipeline.yaml#stages.prod",
        policy_digest=img.digest,  # any sha256: the view does not read it
        inputs=[],
        passed=True,
        version="test",
        verified_at=dt.datetime.now(dt.UTC),
    )
    private = read_private_key(gw.keys / f"{key}.key")

    async def write() -> None:
        async with RegistryClient(gw.local.host) as client:
            await vsa.write(client, repo, _subject(img), repo, summary, private)

    asyncio.run(write())


def _subject(img: im.Image) -> Descriptor:
    return Descriptor(img.media_type, img.digest, len(img.raw))


def get(gw: Gw, view: str, name: str, kind: str, ref: str) -> int:
    return httpx.get(f"{gw.url}/v2/{view}/{name}/{kind}/{ref}", headers=ACCEPT).status_code


def served(gw: Gw, view: str, name: str, img: im.Image, tag: str) -> tuple[int, int, int]:
    """(by tag, by digest, its layer blob) through `view`."""
    layer = img.blobs[-1].digest
    return (
        get(gw, view, name, "manifests", tag),
        get(gw, view, name, "manifests", img.digest),
        get(gw, view, name, "blobs", layer),
    )


NOT_SERVED = (404, 404, 404)
SERVED = (200, 200, 200)


def test_a_hand_written_record_fools_records_but_not_the_signed_view(gw: Gw) -> None:
    img = im.image("vsa-forged-record")
    gw.promote_by_record("prod/forgedrec", img, "1.0")
    assert served(gw, "shop", "forgedrec", img, "1.0") == SERVED  # records only: fooled
    assert served(gw, "signed", "forgedrec", img, "1.0") == NOT_SERVED


def test_a_vsa_signed_with_another_key_is_not_enough(gw: Gw) -> None:
    img = im.image("vsa-other-key")
    gw.promote_by_record("prod/otherkey", img, "1.0")
    sign_vsa(gw, "prod/otherkey", img, key="other")
    assert served(gw, "signed", "otherkey", img, "1.0") == NOT_SERVED


def test_qa_s_vsa_does_not_admit_into_a_prod_view(gw: Gw) -> None:
    img = im.image("vsa-qa-only")
    gw.promote_by_record("prod/qaonly", img, "1.0")
    sign_vsa(gw, "prod/qaonly", img, stage="qa")
    assert served(gw, "signed", "qaonly", img, "1.0") == NOT_SERVED


def test_a_genuine_vsa_copied_next_to_another_image_does_not_admit_it(gw: Gw) -> None:
    good, smuggled = im.image("vsa-genuine"), im.image("vsa-smuggled")
    gw.promote_by_record("prod/replay", good, "1.0")
    sign_vsa(gw, "prod/replay", good)
    gw.promote_by_record("prod/replay", smuggled, "2.0")

    async def replay() -> None:
        async with RegistryClient(gw.local.host) as client:
            [found, *_] = await attestations.collect(client, "prod/replay", good.digest)
            assert found.envelope is not None
            await attestations.attach(
                client, "prod/replay", _subject(smuggled), found.envelope, vsa.PREDICATE_TYPE
            )

    asyncio.run(replay())
    assert served(gw, "signed", "replay", good, "1.0") == SERVED
    assert served(gw, "signed", "replay", smuggled, "2.0") == NOT_SERVED


def test_a_signed_promotion_is_served_by_tag_and_digest(gw: Gw) -> None:
    img = im.image("vsa-signed")
    gw.promote_by_record("prod/signedapp", img, "1.0")
    sign_vsa(gw, "prod/signedapp", img)
    assert served(gw, "signed", "signedapp", img, "1.0") == SERVED


def test_the_pipeline_names_the_key_of_a_stage_named_alone(gw: Gw, tmp_path: Path) -> None:
    """`airlock virtual serve --pipeline FILE`: `require_stage: prod` trusts prod's public_key."""
    private, public = generate()
    (tmp_path / "prod.pub").write_bytes(public)
    (tmp_path / "pipeline.yaml").write_text(
        "registries: {local: {url: '127.0.0.1:5000'}}\n"
        "stages:\n"
        "  - {name: dev, registry: local, repository: 'dev/{name}'}\n"
        "  - {name: prod, registry: local, repository: 'prod/{name}', public_key: prod.pub}\n"
    )
    config = load(gw.config)
    assert config.stage_keys("shop") == []
    config.trust_pipeline(load_pipeline(tmp_path / "pipeline.yaml"))
    assert config.stage_keys("shop") == [load_private_key(private).public]
    assert config.stage_keys("signed") == [read_private_key(gw.keys / "prod.key").public]


def test_a_pipeline_stage_without_public_key_refuses_to_serve(gw: Gw, tmp_path: Path) -> None:
    """--pipeline asks for signed views: a stage with no key would leave `shop` served from
    records alone, which anyone who can push to prod can write. Refused before serving."""
    (tmp_path / "pipeline.yaml").write_text(
        "registries: {local: {url: '127.0.0.1:5000'}}\n"
        "stages:\n"
        "  - {name: dev, registry: local, repository: 'dev/{name}'}\n"
        "  - {name: prod, registry: local, repository: 'prod/{name}'}\n"
    )
    config = load(gw.config)
    with pytest.raises(BadInputError, match="shop: require_stage 'prod' has no public_key"):
        config.trust_pipeline(load_pipeline(tmp_path / "pipeline.yaml"))


@pytest.mark.parametrize(
    ("public_key", "needle"),
    [
        ("keys/missing.pub", "signed: require_stage.public_key"),
        ("ssh-rsa AAAAB3NzaC1yc2E", "OpenSSH"),
    ],
)
def test_a_bad_public_key_is_one_line_exit_2(gw: Gw, public_key: str, needle: str) -> None:
    text = gw.config.read_text().replace("keys/prod.pub", public_key)
    bad = gw.config.with_name("bad-virtual.yaml")
    bad.write_text(text)
    assert_one_line_error(airlock("virtual", "nginx", "--config", str(bad)), 2, needle)
