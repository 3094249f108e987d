"""Digest-exact copies against real registries.

Images are built and pushed with tests/support/images.py (plain httpx, not registry/); every result
is read back with that independent reader and with `skopeo inspect --raw`.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from registry.client import RegistryClient
from registry.copy import CopyResult, copy_image, plan_copy
from registry.errors import BadInputError, NotFound, RefusedError
from registry.reference import parse
from tests.support import images as im
from tests.support.faultproxy import Fault
from tests.support.registries import ProxiedReg, Reg

pytestmark = pytest.mark.anyio

PYTEST_REPORT = "application/vnd.airlock.test-report.pytest+json"
SBOM = "application/spdx+json"


async def copy(src: Reg, source: str, dst: Reg, target: str, **kw: Any) -> CopyResult:
    """copy_image between two test registries, one client each (shared within one registry)."""
    async with src.client() as a:
        if dst is src:
            return await _copy(a, src, source, a, dst, target, **kw)
        async with dst.client() as b:
            return await _copy(a, src, source, b, dst, target, **kw)


async def _copy(
    a: RegistryClient, src: Reg, source: str, b: RegistryClient, dst: Reg, target: str, **kw: Any
) -> CopyResult:
    return await copy_image(
        a, parse(f"{src.host}/{source}"), b, parse(f"{dst.host}/{target}", default_tag=None), **kw
    )


def build(kind: str) -> im.Image:
    return {
        "oci": lambda: im.image("oci"),
        "docker": lambda: im.image("docker", docker=True),
        "oci-index": lambda: im.multi_platform("oci-index"),
        "docker-list": lambda: im.multi_platform("docker-list", docker=True),
    }[kind]()


def manifests_of(img: im.Image) -> list[im.Image]:
    return [img, *(m for c in img.children for m in manifests_of(c))]


def blobs_of(img: im.Image) -> dict[str, bytes]:
    out = {b.digest: b.data for b in img.blobs}
    for c in img.children:
        out.update(blobs_of(c))
    return out


def assert_same_image(reg: Reg, repo: str, ref: str, img: im.Image) -> None:
    """The target serves exactly img's bytes: manifests, children and blobs, by two readers."""
    assert reg.pusher.digest(repo, ref) == img.digest
    assert im.skopeo_digest(reg.host, repo, ref) == img.digest
    for m in manifests_of(img):
        got = reg.pusher.manifest(repo, m.digest)
        assert got is not None and got[0] == m.raw
    for digest, data in blobs_of(img).items():
        assert reg.pusher.blob(repo, digest) == data


@pytest.mark.parametrize("kind", ["oci", "docker", "oci-index", "docker-list"])
async def test_same_registry_copy_mounts_every_blob(registry: Reg, kind: str) -> None:
    img = build(kind)
    registry.pusher.push("dev/app", img, "1.0")
    result = await copy(registry, "dev/app:1.0", registry, "prod/app")
    assert result.digest == img.digest
    assert result.blobs_streamed == 0 and result.bytes_streamed == 0
    assert result.blobs_mounted == len(blobs_of(img))
    assert_same_image(registry, "prod/app", "1.0", img)


@pytest.mark.parametrize("kind", ["oci", "docker", "oci-index", "docker-list"])
async def test_cross_registry_copy_streams_exact_bytes(
    registry: Reg, registry2: Reg, kind: str
) -> None:
    img = build(kind)
    registry.pusher.push("dev/app", img, "1.0")
    result = await copy(registry, "dev/app:1.0", registry2, "prod/app:2.0")
    assert result.digest == img.digest
    assert result.blobs_streamed == len(blobs_of(img))
    assert result.bytes_streamed == sum(len(b) for b in blobs_of(img).values())
    assert_same_image(registry2, "prod/app", "2.0", img)
    assert registry2.pusher.tags("prod/app") == ["2.0"]


async def test_second_copy_is_an_idempotent_no_op(registry: Reg, registry2: Reg) -> None:
    img = im.multi_platform("again")
    registry.pusher.push("dev/app", img, "1.0")
    attach_referrers(registry, "dev/app", img)
    await copy(registry, "dev/app:1.0", registry2, "app:1.0")
    before = len(registry2.server.request_log())
    again = await copy(registry, "dev/app:1.0", registry2, "app:1.0")
    writes = [
        r for r in registry2.server.request_log()[before:] if r["method"] not in ("GET", "HEAD")
    ]
    assert (again.manifests_pushed, again.blobs_streamed, again.bytes_streamed) == (0, 0, 0)
    assert writes == []


async def test_large_blobs_are_uploaded_in_patch_chunks(registry: Reg, registry2: Reg) -> None:
    img = im.image("chunky", layers=2, layer_size=10_000)
    registry.pusher.push("dev/app", img, "1.0")
    before = len(registry2.server.request_log())
    async with registry.client() as src, registry2.client(chunk_size=4096) as dst:
        await copy_image(
            src, parse(f"{registry.host}/dev/app:1.0"), dst, parse(f"{registry2.host}/prod/app:1.0")
        )
    patches = [r for r in registry2.server.request_log()[before:] if r["method"] == "PATCH"]
    assert len(patches) == 2 * 3  # two 10,000-byte layers in chunks of 4096, 4096 and 1808
    assert_same_image(registry2, "prod/app", "1.0", img)


async def test_blobs_already_in_target_are_skipped(registry: Reg, registry2: Reg) -> None:
    base = im.image("v1", layers=3)
    registry.pusher.push("dev/app", base, "1.0")
    registry2.pusher.push("prod/app", base, "1.0")
    # v2 shares v1's layers and adds one of its own; only the new layer and config must travel
    v2 = im.image("v2", layers=1, shared=[b for b in base.blobs[1:]])
    registry.pusher.push("dev/app", v2, "2.0")
    result = await copy(registry, "dev/app:2.0", registry2, "prod/app")
    assert result.blobs_skipped == 3
    assert result.blobs_streamed == 2
    assert_same_image(registry2, "prod/app", "2.0", v2)


async def test_copy_by_digest_pushes_no_tag(registry: Reg, registry2: Reg) -> None:
    img = im.image("bydigest")
    registry.pusher.push("dev/app", img, "1.0")
    result = await copy(registry, f"dev/app@{img.digest}", registry2, "prod/app")
    assert result.digest == img.digest
    assert registry2.pusher.digest("prod/app", img.digest) == img.digest
    assert registry2.pusher.tags("prod/app") == []


async def test_target_digest_must_match_source(registry: Reg) -> None:
    img = im.image("mismatch")
    registry.pusher.push("dev/app", img, "1.0")
    other = "sha256:" + "0" * 64
    async with registry.client() as client:
        with pytest.raises(BadInputError, match="names digest"):
            await copy_image(
                client,
                parse(f"{registry.host}/dev/app:1.0"),
                client,
                parse(f"{registry.host}/prod/app@{other}", default_tag=None),
            )
    assert registry.pusher.tags("prod/app") == []


async def test_no_clobber_refuses_to_move_a_tag_and_leaves_it(registry: Reg) -> None:
    old, new = im.image("old"), im.image("new")
    registry.pusher.push("prod/app", old, "1.0")
    registry.pusher.push("dev/app", new, "1.0")
    async with registry.client() as client:
        with pytest.raises(RefusedError, match="already points at") as e:
            await copy_image(
                client,
                parse(f"{registry.host}/dev/app:1.0"),
                client,
                parse(f"{registry.host}/prod/app:1.0"),
                no_clobber=True,
            )
        assert e.value.exit_code == 1
        assert registry.pusher.digest("prod/app", "1.0") == old.digest
        assert registry.pusher.manifest("prod/app", new.digest) is None  # nothing half-written

        # the same digest is an idempotent success, and without the flag the tag moves
        registry.pusher.push("prod/app", new, "2.0")
        same = await copy_image(
            client,
            parse(f"{registry.host}/dev/app:1.0"),
            client,
            parse(f"{registry.host}/prod/app:2.0"),
            no_clobber=True,
        )
        assert same.manifests_pushed == 0
        moved = await copy_image(
            client,
            parse(f"{registry.host}/dev/app:1.0"),
            client,
            parse(f"{registry.host}/prod/app:1.0"),
        )
    assert moved.tag_moved
    assert registry.pusher.digest("prod/app", "1.0") == new.digest


async def test_missing_tag_and_repository_are_not_found(registry: Reg) -> None:
    registry.pusher.push("dev/app", im.image("exists"), "1.0")
    async with registry.client() as client:
        with pytest.raises(NotFound, match="manifest unknown") as e:
            await copy_image(
                client,
                parse(f"{registry.host}/dev/app:nope"),
                client,
                parse(f"{registry.host}/prod/app", default_tag=None),
            )
        assert e.value.exit_code == 2
        with pytest.raises(NotFound):
            await copy_image(
                client,
                parse(f"{registry.host}/no/such:1.0"),
                client,
                parse(f"{registry.host}/prod/app", default_tag=None),
            )
    assert registry.pusher.tags("prod/app") == []


# ---------------------------------------------------------------------------- referrers


def attach_referrers(reg: Reg, repo: str, subject: im.Image) -> tuple[im.Image, im.Image, im.Image]:
    """A test report and an SBOM under the fallback tag, plus a cosign .sig tag."""
    report = im.artifact(subject, PYTEST_REPORT, b'{"summary": {"passed": 3}}', "application/json")
    sbom = im.artifact(subject, SBOM, b'{"spdxVersion": "SPDX-2.3"}', SBOM)
    sig = im.cosign_signature(subject)
    reg.pusher.push(repo, report)
    reg.pusher.push(repo, sbom)
    reg.pusher.push(
        repo,
        im.fallback_index([report, sbom], [PYTEST_REPORT, SBOM]),
        im.fallback_tag_of(subject.digest),
    )
    reg.pusher.push(repo, sig, im.fallback_tag_of(subject.digest) + ".sig")
    return report, sbom, sig


def fallback_entries(reg: Reg, repo: str, subject: str) -> dict[str, str | None]:
    import json

    got = reg.pusher.manifest(repo, im.fallback_tag_of(subject))
    assert got is not None, "fallback tag missing in target"
    return {d["digest"]: d.get("artifactType") for d in json.loads(got[0])["manifests"]}


@pytest.mark.parametrize("same_registry", [True, False])
async def test_referrers_and_cosign_tags_travel_with_the_image(
    registry: Reg, registry2: Reg, same_registry: bool
) -> None:
    img = im.multi_platform("signed")
    registry.pusher.push("dev/app", img, "1.0")
    report, sbom, sig = attach_referrers(registry, "dev/app", img)
    # a referrer of a platform child, and a signature of the test report (a referrer's referrer)
    child_report = im.artifact(
        img.children[1], PYTEST_REPORT, b'{"arm64": true}', "application/json"
    )
    registry.pusher.push("dev/app", child_report)
    registry.pusher.push(
        "dev/app",
        im.fallback_index([child_report], [PYTEST_REPORT]),
        im.fallback_tag_of(img.children[1].digest),
    )
    report_sig = im.cosign_signature(report)
    registry.pusher.push("dev/app", report_sig, im.fallback_tag_of(report.digest) + ".sig")

    target = registry if same_registry else registry2
    async with registry.client() as src:
        dst = src if same_registry else target.client()
        try:
            result = await copy_image(
                src,
                parse(f"{registry.host}/dev/app:1.0"),
                dst,
                parse(f"{target.host}/prod/app", default_tag=None),
            )
        finally:
            if dst is not src:
                await dst.aclose()

    assert result.referrers_copied == 5
    assert_same_image(target, "prod/app", "1.0", img)
    for r in (report, sbom, child_report):
        got = target.pusher.manifest("prod/app", r.digest)
        assert got is not None and got[0] == r.raw
    assert fallback_entries(target, "prod/app", img.digest) == {
        report.digest: PYTEST_REPORT,
        sbom.digest: SBOM,
    }
    assert fallback_entries(target, "prod/app", img.children[1].digest) == {
        child_report.digest: PYTEST_REPORT
    }
    assert target.pusher.digest("prod/app", im.fallback_tag_of(img.digest) + ".sig") == sig.digest
    assert (
        target.pusher.digest("prod/app", im.fallback_tag_of(report.digest) + ".sig")
        == report_sig.digest
    )
    if same_registry:
        assert result.blobs_streamed == 0


async def test_no_referrers_copies_only_the_image(registry: Reg, registry2: Reg) -> None:
    img = im.image("bare")
    registry.pusher.push("dev/app", img, "1.0")
    attach_referrers(registry, "dev/app", img)
    result = await copy(registry, "dev/app:1.0", registry2, "prod/app", referrers=False)
    assert result.referrers_copied == 0
    assert registry2.pusher.tags("prod/app") == ["1.0"]


async def test_fallback_index_in_target_is_merged_not_overwritten(
    registry: Reg, registry2: Reg
) -> None:
    img = im.image("merge")
    registry.pusher.push("dev/app", img, "1.0")
    report, sbom, _ = attach_referrers(registry, "dev/app", img)
    # the target already knows another referrer of the same digest
    registry2.pusher.push("prod/app", img, "1.0")
    scan = im.artifact(
        img, "application/vnd.airlock.scan-report.trivy+json", b"{}", "application/json"
    )
    registry2.pusher.push("prod/app", scan)
    registry2.pusher.push(
        "prod/app",
        im.fallback_index([scan], ["application/vnd.airlock.scan-report.trivy+json"]),
        im.fallback_tag_of(img.digest),
    )
    await copy(registry, "dev/app:1.0", registry2, "prod/app")
    assert set(fallback_entries(registry2, "prod/app", img.digest)) == {
        scan.digest,
        report.digest,
        sbom.digest,
    }


async def test_a_fallback_tag_that_is_not_an_index_is_ignored_with_a_warning(
    registry: Reg, registry2: Reg
) -> None:
    img = im.image("odd")
    registry.pusher.push("dev/app", img, "1.0")
    # some registries answer the fallback tag with the subject itself
    registry.pusher.push("dev/app", img, im.fallback_tag_of(img.digest))
    result = await copy(registry, "dev/app:1.0", registry2, "prod/app")
    assert result.referrers_copied == 0
    assert any("not an index" in w for w in result.warnings)
    assert registry2.pusher.tags("prod/app") == ["1.0"]


async def test_listed_referrer_with_another_subject_is_skipped(
    registry: Reg, registry2: Reg
) -> None:
    img, other = im.image("subject"), im.image("stranger")
    registry.pusher.push("dev/app", img, "1.0")
    registry.pusher.push("dev/app", other, "other")
    foreign = im.artifact(other, PYTEST_REPORT, b"{}", "application/json")
    registry.pusher.push("dev/app", foreign)
    registry.pusher.push(
        "dev/app", im.fallback_index([foreign], [PYTEST_REPORT]), im.fallback_tag_of(img.digest)
    )
    result = await copy(registry, "dev/app:1.0", registry2, "prod/app")
    assert result.referrers_copied == 0
    assert registry2.pusher.manifest("prod/app", foreign.digest) is None
    assert any("another subject" in w for w in result.warnings)


# ------------------------------------------------------------------ plan and request budget


async def test_plan_writes_nothing_and_says_what_copy_would_do(
    registry: Reg, registry2: Reg
) -> None:
    img = im.multi_platform("planned")
    registry.pusher.push("dev/app", img, "1.0")
    attach_referrers(registry, "dev/app", img)
    async with registry.client() as src, registry2.client() as dst:
        plan = await plan_copy(
            src,
            parse(f"{registry.host}/dev/app:1.0"),
            dst,
            parse(f"{registry2.host}/prod/app", default_tag=None),
        )
        assert {m for m in dst.requests} <= {"GET", "HEAD"}
    assert plan.digest == img.digest
    assert plan.count("stream") == len(blobs_of(img)) + 5  # + report, SBOM, signature blobs
    assert plan.root.tag == "1.0" and not plan.root.exists
    assert [m.role for m in plan.manifests].count("child") == 2
    assert registry2.pusher.tags("prod/app") == []


async def test_fifty_layer_same_registry_copy_stays_within_request_budget(registry: Reg) -> None:
    layers = 50
    img = im.image("fifty", layers=layers, layer_size=256)
    registry.pusher.push("dev/big", img, "1.0")
    seen_before = len(registry.server.request_log())
    await copy(registry, "dev/big:1.0", registry, "prod/big")
    log = registry.server.request_log()[seen_before:]
    to_target = [r for r in log if r["uri"] == "/v2/" or r["uri"].startswith("/v2/prod/big/")]
    assert len(to_target) <= layers + 6, [f"{r['method']} {r['uri']}" for r in to_target]
    assert not any(r["method"] == "PATCH" for r in log)
    assert registry.pusher.digest("prod/big", "1.0") == img.digest


# ----------------------------------------------------- declined mounts, cycles, odd indexes


async def test_declined_mounts_stream_into_the_sessions_the_registry_opened(
    proxied_registry: ProxiedReg,
) -> None:
    """Registries may answer a mount with 202 and an upload session (ECR does, and so does any
    registry when the source is out of reach): the copy must stream into that session."""
    img = im.multi_platform("declined")
    proxied_registry.pusher.push("dev/app", img, "1.0")
    proxied_registry.faults.add(Fault("POST", "mount=", times=None, strip_query=True))
    result = await copy(proxied_registry, "dev/app:1.0", proxied_registry, "prod/app")
    n = len(blobs_of(img))
    assert (result.blobs_mounted, result.blobs_streamed) == (0, n)
    assert len(proxied_registry.faults.requests("POST", "/blobs/uploads/")) == n  # no new sessions
    assert len(proxied_registry.faults.requests("PUT", "/blobs/uploads/")) == n
    assert_same_image(proxied_registry, "prod/app", "1.0", img)


async def test_many_declined_mounts_at_high_concurrency_do_not_exhaust_the_pool(
    proxied_registry: ProxiedReg,
) -> None:
    img = im.image("crowd", layers=40, layer_size=2048)
    proxied_registry.pusher.push("dev/app", img, "1.0")
    proxied_registry.faults.add(Fault("POST", "mount=", times=None, strip_query=True))
    async with proxied_registry.client(max_connections=8) as client:
        # A hang here (every connection held by a GET waiting for a PUT) becomes a failure.
        result = await asyncio.wait_for(
            copy_image(
                client,
                parse(f"{proxied_registry.host}/dev/app:1.0"),
                client,
                parse(f"{proxied_registry.host}/prod/app", default_tag=None),
                concurrency=32,
            ),
            timeout=120,
        )
    assert result.blobs_streamed == len(img.blobs)
    assert proxied_registry.pusher.digest("prod/app", "1.0") == img.digest


async def test_a_cycle_of_cosign_tags_ends(registry: Reg, registry2: Reg) -> None:
    img = im.image("cycle")
    sig = im.cosign_signature(img)
    registry.pusher.push("dev/app", img, "1.0")
    registry.pusher.push("dev/app", sig, im.fallback_tag_of(img.digest) + ".sig")
    # the signature's own .sig tag points back at the image: a cycle
    registry.pusher.push("dev/app", img, im.fallback_tag_of(sig.digest) + ".sig")
    result = await asyncio.wait_for(copy(registry, "dev/app:1.0", registry2, "prod/app"), 60)
    assert result.digest == img.digest
    assert (
        registry2.pusher.digest("prod/app", im.fallback_tag_of(img.digest) + ".sig") == sig.digest
    )
    assert (
        registry2.pusher.digest("prod/app", im.fallback_tag_of(sig.digest) + ".sig") == img.digest
    )


async def test_target_fallback_entries_airlock_cannot_parse_survive_the_merge(
    registry: Reg, registry2: Reg
) -> None:
    img = im.image("keep")
    registry.pusher.push("dev/app", img, "1.0")
    report, sbom, _ = attach_referrers(registry, "dev/app", img)
    # The target lists a referrer under a media type airlock does not read (ORAS-rc wrote these).
    notary = im.artifact(img, "application/vnd.cncf.notary.signature", b"sig", "application/jose")
    registry2.pusher.push("prod/app", notary)
    odd = {
        **notary.descriptor(),
        "mediaType": "application/vnd.oci.artifact.manifest.v1+json",
        "artifactType": "application/vnd.cncf.notary.signature",
        "annotations": {"io.example": "kept"},
    }
    doc = {
        "schemaVersion": 2,
        "mediaType": im.OCI_INDEX,
        "manifests": [odd],
        "annotations": {"io.example.index": "kept too"},
    }
    registry2.pusher.push(
        "prod/app", im.Image(json.dumps(doc).encode(), im.OCI_INDEX), im.fallback_tag_of(img.digest)
    )
    result = await copy(registry, "dev/app:1.0", registry2, "prod/app")
    got = registry2.pusher.manifest("prod/app", im.fallback_tag_of(img.digest))
    assert got is not None
    merged = json.loads(got[0])
    assert merged["manifests"][0] == odd
    assert merged["annotations"] == {"io.example.index": "kept too"}
    assert {e["digest"] for e in merged["manifests"]} == {notary.digest, report.digest, sbom.digest}
    assert result.warnings == []


async def test_one_bad_entry_in_a_source_listing_does_not_hide_the_others(
    registry: Reg, registry2: Reg
) -> None:
    img = im.image("partly")
    report = im.artifact(img, PYTEST_REPORT, b"{}", "application/json")
    registry.pusher.push("dev/app", img, "1.0")
    registry.pusher.push("dev/app", report)
    listing = json.loads(im.fallback_index([report], [PYTEST_REPORT]).raw)
    # a listing that lies about the size, and an entry airlock cannot read (a negative size)
    listing["manifests"][0]["size"] = 1
    listing["manifests"].append({"mediaType": im.OCI_MANIFEST, "digest": img.digest, "size": -1})
    registry.pusher.http.put(
        f"/v2/dev/app/manifests/{im.fallback_tag_of(img.digest)}",
        content=json.dumps(listing).encode(),
        headers={"Content-Type": im.OCI_INDEX},
    ).raise_for_status()
    result = await copy(registry, "dev/app:1.0", registry2, "prod/app")
    assert result.referrers_copied == 1
    assert any("no valid size" in w for w in result.warnings)
    # the target lists the referrer as it really is, not as the source's listing claimed
    entries = fallback_entries(registry2, "prod/app", img.digest)
    assert entries == {report.digest: PYTEST_REPORT}
    got = registry2.pusher.manifest("prod/app", im.fallback_tag_of(img.digest))
    assert got is not None and json.loads(got[0])["manifests"][0]["size"] == len(report.raw)
