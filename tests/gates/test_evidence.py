"""Loading evidence: files, URLs, and OCI referrers of a digest in a real registry."""

from __future__ import annotations

import datetime as dt
import json
import threading
from collections.abc import AsyncIterator, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from gates.base import EvidenceError
from gates.evidence import from_file, from_referrers, from_url, target_of
from gates.kinds import gate
from registry import mediatypes as mt
from registry.manifest import Descriptor
from registry.referrers import artifact, merge_fallback, push_referrer
from tests.support import images as im
from tests.support.registries import Reg

pytestmark = pytest.mark.anyio

TESTS = gate("tests").media_types
REPORT = b'{"summary": {"passed": 1, "total": 1}, "tests": []}'


def subject_of(img: im.Image) -> Descriptor:
    return Descriptor(img.media_type, img.digest, len(img.raw))


async def attach(
    reg: Reg,
    repo: str,
    img: im.Image,
    payload: bytes,
    *,
    when: str,
    artifact_type: str = mt.TEST_REPORT_PYTEST,
) -> str:
    created = dt.datetime.fromisoformat(when)
    manifest, blobs = artifact(subject_of(img), artifact_type, payload, created=created)
    async with reg.client() as client:
        assert await push_referrer(client, repo, manifest, blobs) == []
    return manifest.digest


async def test_attached_report_is_read_back_bound_to_its_digest(registry: Reg) -> None:
    img, other = im.image("bound"), im.image("unrelated")
    registry.pusher.push("dev/app", img, "1.0")
    registry.pusher.push("dev/app", other, "2.0")
    referrer = await attach(registry, "dev/app", img, REPORT, when="2026-11-01T10:00:00+00:00")
    async with registry.client() as client:
        target = await target_of(client, "dev/app", img.digest)
        [(digest, evidence)] = await from_referrers(client, "dev/app", target, TESTS)
        [(_, elsewhere)] = await from_referrers(
            client, "dev/app", await target_of(client, "dev/app", other.digest), TESTS
        )
    assert digest == img.digest and evidence is not None
    assert evidence.data == REPORT
    assert evidence.subject == img.digest and evidence.referrer == referrer
    assert evidence.source == f"{registry.host}/dev/app@{referrer}"
    assert evidence.created == dt.datetime(2026, 11, 1, 10, tzinfo=dt.UTC)
    assert json.loads(img.blobs[0].data)  # the config digest is what Trivy calls ImageID
    assert evidence.config_digests == (img.blobs[0].digest,)
    assert elsewhere is None  # evidence attached to another digest is not found


async def test_the_newest_report_wins_and_other_types_are_ignored(registry: Reg) -> None:
    img = im.image("newest")
    registry.pusher.push("dev/app", img, "1.0")
    await attach(registry, "dev/app", img, b'{"old": 1}', when="2026-11-01T00:00:00+00:00")
    newest = await attach(registry, "dev/app", img, b'{"new": 2}', when="2026-11-03T00:00:00+00:00")
    await attach(registry, "dev/app", img, b'{"mid": 3}', when="2026-11-02T00:00:00+00:00")
    await attach(
        registry,
        "dev/app",
        img,
        b"{}",
        when="2026-11-09T00:00:00+00:00",
        artifact_type=mt.SCAN_REPORT_TRIVY,
    )
    async with registry.client() as client:
        target = await target_of(client, "dev/app", img.digest)
        [(_, evidence)] = await from_referrers(client, "dev/app", target, TESTS)
    assert evidence is not None and evidence.referrer == newest and evidence.data == b'{"new": 2}'


async def test_a_report_dated_in_the_future_cannot_pin_the_verdict(registry: Reg) -> None:
    """Insider attack: a passing report annotated 2099 would stay "newest" forever, hiding the
    real reports attached after it. Dated in the future, it is passed over."""
    img = im.image("future-pin")
    registry.pusher.push("dev/app", img, "1.0")
    now = dt.datetime.now(dt.UTC)
    await attach(registry, "dev/app", img, b'{"forged": 1}', when="2099-01-01T00:00:00+00:00")
    real = await attach(registry, "dev/app", img, b'{"real": 2}', when=now.isoformat())
    # just inside the clock skew is still believed (and, being newest, wins for now)
    skew = (now + dt.timedelta(minutes=4)).isoformat()
    async with registry.client() as client:
        target = await target_of(client, "dev/app", img.digest)
        [(_, evidence)] = await from_referrers(client, "dev/app", target, TESTS)
        assert evidence is not None and evidence.referrer == real
        skewed = await attach(registry, "dev/app", img, b'{"skew": 3}', when=skew)
        [(_, evidence)] = await from_referrers(client, "dev/app", target, TESTS)
        assert evidence is not None and evidence.referrer == skewed


async def test_a_future_date_only_in_the_manifest_is_passed_over_too(registry: Reg) -> None:
    """The listing (a fallback index anyone with push can rewrite) may say one time and the
    referrer's own manifest another: either in the future and the report is passed over."""
    img = im.image("future-manifest")
    registry.pusher.push("dev/app", img, "1.0")
    real = await attach(registry, "dev/app", img, b'{"real": 1}', when="2026-11-01T00:00:00+00:00")
    forged, blobs = artifact(
        subject_of(img),
        mt.TEST_REPORT_PYTEST,
        b'{"forged": 2}',
        created=dt.datetime(2099, 1, 1, tzinfo=dt.UTC),
    )
    async with registry.client() as client:
        for digest, data in blobs.items():
            await client.upload_blob("dev/app", Descriptor("x", digest, len(data)), _once(data))
        await client.put_manifest("dev/app", forged.digest, forged)
        listed = Descriptor(
            forged.media_type,
            forged.digest,
            len(forged.raw),
            artifact_type=mt.TEST_REPORT_PYTEST,
            annotations={"org.opencontainers.image.created": dt.datetime.now(dt.UTC).isoformat()},
        )
        assert await merge_fallback(client, "dev/app", img.digest, [listed]) == []
        target = await target_of(client, "dev/app", img.digest)
        [(_, evidence)] = await from_referrers(client, "dev/app", target, TESTS)
    assert evidence is not None and evidence.referrer == real


async def _once(data: bytes) -> AsyncIterator[bytes]:
    yield data


async def test_per_platform_evidence_for_an_index(registry: Reg) -> None:
    idx = im.multi_platform("platforms")
    registry.pusher.push("dev/app", idx, "1.0")
    amd, arm = idx.children
    await attach(registry, "dev/app", amd, REPORT, when="2026-11-01T00:00:00+00:00")
    async with registry.client() as client:
        target = await target_of(client, "dev/app", idx.digest)
        per_platform = await from_referrers(client, "dev/app", target, TESTS, per_platform=True)
        for_index = await from_referrers(client, "dev/app", target, TESTS)
    assert target.platforms == (amd.digest, arm.digest)
    assert [(d, e is not None) for d, e in per_platform] == [
        (amd.digest, True),
        (arm.digest, False),
    ]
    evidence = per_platform[0][1]
    # a platform's report binds to that platform (and its index), never to a sibling
    assert evidence is not None and set(evidence.accepted) == {idx.digest, amd.digest}
    assert evidence.config_digests == (amd.blobs[0].digest,)
    assert for_index == [(idx.digest, None)]


async def test_a_listing_that_names_the_wrong_subject_is_not_trusted(registry: Reg) -> None:
    img, other = im.image("trusted"), im.image("impostor")
    registry.pusher.push("dev/app", img, "1.0")
    registry.pusher.push("dev/app", other, "2.0")
    # a report about `other`, listed (wrongly) under img's fallback tag
    foreign = im.artifact(other, mt.TEST_REPORT_PYTEST, REPORT, mt.TEST_REPORT_PYTEST)
    registry.pusher.push("dev/app", foreign)
    registry.pusher.push(
        "dev/app",
        im.fallback_index([foreign], [mt.TEST_REPORT_PYTEST]),
        im.fallback_tag_of(img.digest),
    )
    async with registry.client() as client:
        target = await target_of(client, "dev/app", img.digest)
        assert await from_referrers(client, "dev/app", target, TESTS) == [(img.digest, None)]


async def test_lookup_costs_three_requests_once_the_registry_is_known(registry: Reg) -> None:
    """And two for a second gate reading the same image: the referrer manifest, read by digest,
    is kept by the client; the listing (a tag) and the report are read again."""
    img, other = im.image("cheap"), im.image("cheap-other")
    registry.pusher.push("dev/app", img, "1.0")
    registry.pusher.push("dev/app", other, "2.0")
    await attach(registry, "dev/app", img, REPORT, when="2026-11-01T00:00:00+00:00")
    async with registry.client() as client:
        learning = await target_of(client, "dev/app", other.digest)
        await from_referrers(client, "dev/app", learning, TESTS)  # learns: no referrers API
        target = await target_of(client, "dev/app", img.digest)
        spent = []
        for _ in range(2):
            before = sum(client.requests.values())
            [(_, evidence)] = await from_referrers(client, "dev/app", target, TESTS)
            assert evidence is not None
            spent.append(sum(client.requests.values()) - before)
    assert spent == [3, 2]  # fallback tag, referrer manifest, report blob; then no manifest


async def test_an_oversized_attached_report_is_refused_unread(registry: Reg) -> None:
    img = im.image("huge")
    registry.pusher.push("dev/app", img, "1.0")
    await attach(registry, "dev/app", img, b"x" * 5000, when="2026-11-01T00:00:00+00:00")
    async with registry.client() as client:
        target = await target_of(client, "dev/app", img.digest)
        with pytest.raises(EvidenceError, match="over the 1000 byte cap"):
            await from_referrers(client, "dev/app", target, TESTS, limit=1000)


# ---------------------------------------------------------------------------- files and URLs


def test_files_missing_directories_and_oversized_are_refused(tmp_path: Path) -> None:
    report = tmp_path / "report.json"
    report.write_bytes(REPORT)
    assert from_file(report, subject="sha256:" + "a" * 64).data == REPORT
    for path, message in [(tmp_path / "nope.json", "no such file"), (tmp_path, "is a directory")]:
        with pytest.raises(EvidenceError, match=message):
            from_file(path)
    with pytest.raises(EvidenceError, match="over the 10 byte cap"):
        from_file(report, limit=10)


@pytest.fixture
def web(tmp_path: Path) -> Iterator[str]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0]
            body = REPORT if path == "/report.json" else b"x" * 100_000
            status = 404 if path == "/missing" else 200
            self.send_response(status)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


async def test_urls_are_read_with_a_cap(web: str) -> None:
    assert (await from_url(f"{web}/report.json")).data == REPORT
    with pytest.raises(EvidenceError, match="answered 404"):
        await from_url(f"{web}/missing")
    with pytest.raises(EvidenceError, match="over the 1000 byte cap"):
        await from_url(f"{web}/big", limit=1000)
    with pytest.raises(EvidenceError, match="only http"):
        await from_url("file:///etc/passwd")


async def test_on_a_created_tie_the_report_attached_last_wins(registry: Reg) -> None:
    img = im.image("tie")
    registry.pusher.push("dev/app", img, "1.0")
    same = "2026-11-05T12:00:00+00:00"
    await attach(registry, "dev/app", img, b'{"first": 1}', when=same)
    last = await attach(registry, "dev/app", img, b'{"second": 2}', when=same)
    async with registry.client() as client:
        target = await target_of(client, "dev/app", img.digest)
        [(_, evidence)] = await from_referrers(client, "dev/app", target, TESTS)
    assert evidence is not None and evidence.referrer == last


async def test_a_listing_that_names_the_wrong_type_is_not_trusted(registry: Reg) -> None:
    img = im.image("typed")
    registry.pusher.push("dev/app", img, "1.0")
    sbom = im.artifact(img, "application/spdx+json", b"{}", "application/spdx+json")
    registry.pusher.push("dev/app", sbom)
    # listed as a test report, but the manifest itself says it is an SBOM
    registry.pusher.push(
        "dev/app",
        im.fallback_index([sbom], [mt.TEST_REPORT_PYTEST]),
        im.fallback_tag_of(img.digest),
    )
    async with registry.client() as client:
        target = await target_of(client, "dev/app", img.digest)
        assert await from_referrers(client, "dev/app", target, TESTS) == [(img.digest, None)]


def test_reading_stops_at_the_cap_even_without_a_size(tmp_path: Path) -> None:
    with pytest.raises(EvidenceError, match="over the 4096 byte cap"):
        from_file("/dev/zero", limit=4096)


async def test_url_credentials_are_never_shown(web: str) -> None:
    secret_url = web.replace("http://", "http://bob:Hunter2pw@") + "/report.json?sig=Hunter2sig"
    evidence = await from_url(secret_url)
    assert evidence.data == REPORT
    assert "Hunter2" not in evidence.source and evidence.source.endswith("/report.json")
    with pytest.raises(EvidenceError) as e:
        await from_url(secret_url.replace("/report.json", "/missing"))
    assert "Hunter2" not in str(e.value)
