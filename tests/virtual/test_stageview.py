"""The production view (`require_stage: prod`): what airlock never promoted into prod is not
served, whatever sits in prod's repository — an image pushed there by hand, or one smuggled in
as a referrer of a good image. Promoted images, their platforms, their blobs and their evidence
are served, digests unchanged."""

from __future__ import annotations

from pathlib import Path

import httpx

from registry import mediatypes as mt
from tests.support import images as im
from tests.support.gateway import PASSWORD, TOKEN, Gw
from tests.support.skopeo import push_through

ACCEPT = {"Accept": im.ACCEPT}


def shop(gw: Gw, path: str, method: str = "GET") -> httpx.Response:
    return httpx.request(method, f"{gw.url}/v2/shop/{path}", headers=ACCEPT)


def test_a_digest_never_promoted_to_prod_is_not_served(gw: Gw) -> None:
    by_hand = im.image("pushed-to-prod-by-hand")
    gw.pusher.push("prod/shopapp", by_hand, "hand")
    # the plain view serves it (it is in prod's repository) …
    plain = httpx.get(f"{gw.url}/v2/customers/shopapp/manifests/hand", headers=ACCEPT)
    assert plain.status_code == 200
    # … the production view does not: no prod record names it
    for ref in ("hand", by_hand.digest):
        for method in ("GET", "HEAD"):
            r = shop(gw, f"shopapp/manifests/{ref}", method)
            assert r.status_code == 404, (ref, method, r.status_code)
    assert shop(gw, f"shopapp/blobs/{by_hand.blobs[-1].digest}").status_code == 404
    assert "never promoted to prod: not served" in gw.log.read_text()


def test_a_promoted_image_its_platforms_blobs_and_evidence_are_served(gw: Gw) -> None:
    released = im.multi_platform("promoted-release")
    gw.promote_by_record("prod/shopapp", released, "1.0")
    signature = im.cosign_signature(released)
    gw.pusher.push("prod/shopapp", signature, im.fallback_tag_of(released.digest) + ".sig")
    report = im.artifact(
        released, mt.SCAN_REPORT_TRIVY, b'{"SchemaVersion": 2}', mt.SCAN_REPORT_TRIVY
    )
    gw.pusher.push("prod/shopapp", report)

    by_tag = shop(gw, "shopapp/manifests/1.0", "HEAD")
    assert by_tag.status_code == 200 and by_tag.headers["docker-content-digest"] == released.digest
    got = shop(gw, f"shopapp/manifests/{released.digest}")
    assert got.status_code == 200 and im.sha256(got.content) == released.digest
    for platform in released.children:
        assert shop(gw, f"shopapp/manifests/{platform.digest}").status_code == 200
        for blob in platform.blobs:
            served = shop(gw, f"shopapp/blobs/{blob.digest}")
            assert served.status_code == 200 and served.content == blob.data
    # its evidence: cosign's signature tag and an OCI referrer, with their blobs
    sig_tag = im.fallback_tag_of(released.digest) + ".sig"
    assert shop(gw, f"shopapp/manifests/{sig_tag}").status_code == 200
    assert shop(gw, f"shopapp/manifests/{report.digest}").status_code == 200
    assert shop(gw, f"shopapp/blobs/{report.blobs[-1].digest}").content == report.blobs[-1].data


def test_an_image_smuggled_in_as_a_referrer_is_not_served(gw: Gw) -> None:
    """The critical insider path: a never-gated image whose `subject` is a good image. Even if
    it sits in prod's repository (put there before airlock stopped carrying such referrers),
    the production view does not serve it, nor its layers."""
    good = im.image("good-release")
    gw.promote_by_record("prod/smuggle", good, "1.0")
    bad = im.with_subject(im.image("never-gated"), good)
    gw.pusher.push("prod/smuggle", bad)
    assert gw.pusher.digest("prod/smuggle", bad.digest) == bad.digest  # it is there
    assert shop(gw, f"smuggle/manifests/{good.digest}").status_code == 200
    assert shop(gw, f"smuggle/manifests/{bad.digest}").status_code == 404
    assert shop(gw, f"smuggle/blobs/{bad.blobs[-1].digest}").status_code == 404
    # a record of another stage (or a forged one) does not admit anything either
    other = im.image("qa-record-only")
    gw.promote_by_record("prod/smuggle", other, "2.0", stage="qa")
    assert shop(gw, "smuggle/manifests/2.0").status_code == 404


def test_a_push_through_the_virtual_repository_uploads_what_the_deploy_target_lacks(
    gw: Gw, tmp_path: Path
) -> None:
    """skopeo pushing docker/held:1.0 asks HEAD for each blob: prod/held has them, dev/held (the
    deploy target) does not. Answered from any member, skopeo would skip the uploads and the
    manifest push would fail ("manifest blob unknown")."""
    img = im.image("held-in-prod")
    gw.pusher.push("prod/held", img, "0.9")
    layout = tmp_path / "layout"
    push_through(
        f"{gw.local.host}/prod/held:0.9", f"{gw.host}/docker/held:1.0", layout, f"alice:{PASSWORD}"
    )
    assert gw.pusher.digest("dev/held", "1.0") == img.digest
    for blob in img.blobs:  # the deploy target holds every blob (mounted, not uploaded)
        assert gw.pusher.blob("dev/held", blob.digest) == blob.data


def test_a_pusher_head_is_answered_by_the_deploy_target_a_reader_head_by_any_member(
    gw: Gw,
) -> None:
    img = im.image("only-in-prod-head")
    gw.pusher.push("prod/heads", img, "1.0")
    blob = img.blobs[-1].digest
    reader = httpx.head(
        f"{gw.url}/v2/docker/heads/blobs/{blob}", headers={"Authorization": f"Bearer {TOKEN}"}
    )
    assert reader.status_code == 200  # ci may read, not push: any member answers
    assert gw.pusher.blob("dev/heads", blob) is None  # and nothing was written
    pusher = httpx.head(f"{gw.url}/v2/docker/heads/blobs/{blob}", auth=("alice", PASSWORD))
    assert pusher.status_code == 200
    assert gw.pusher.blob("dev/heads", blob) == img.blobs[-1].data  # mounted for the push
    unknown = "sha256:" + "0" * 64
    missing = httpx.head(f"{gw.url}/v2/docker/heads/blobs/{unknown}", auth=("alice", PASSWORD))
    assert missing.status_code == 404
