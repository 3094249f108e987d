"""Gates with `signed_by`: only in-toto attestations signed by CI's key count. The attacks of an
insider who can push to dev come first — a plain report, an unsigned attestation, one signed
with their own key, a genuine one replayed next to another image, an older passing one next to a
newer failing one — then the signed paths: cosign-vuln (what `trivy --format cosign-vuln`
writes), test-result v0.1 and a whole pytest-json-report, in both layouts cosign writes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from gates import attested, dsse, intoto
from gates.attestations import attach
from gates.base import GateResult
from gates.keys import PrivateKey, generate, load_private_key
from gates.kinds import Candidate, gate
from gates.scan import ScanPolicy
from gates.tests import TestsPolicy
from registry import mediatypes as mt
from registry.manifest import Descriptor, parse_manifest
from registry.referrers import artifact, push_referrer
from tests.support import images as im
from tests.support.evidence import CRITICAL_SCAN, MEDIUM_SCAN, PASSING_TESTS, scan_of
from tests.support.registries import Reg

pytestmark = pytest.mark.anyio
REPO = "dev/app"


@pytest.fixture
def ci(tmp_path: Path) -> PrivateKey:
    """CI's key pair; the public half is keys/ci.pub next to the (would-be) pipeline.yaml."""
    private, public = generate()
    (tmp_path / "keys").mkdir()
    (tmp_path / "keys" / "ci.pub").write_bytes(public)
    return load_private_key(private, "ci key")


def push(registry: Reg, seed: str) -> im.Image:
    img = im.image(seed)
    registry.pusher.push(REPO, img, seed)
    return img


def subject(img: im.Image) -> Descriptor:
    return Descriptor(img.media_type, img.digest, len(img.raw))


def vuln_predicate(img: im.Image, report: Path = MEDIUM_SCAN) -> dict:
    """What `trivy image --format cosign-vuln` writes: the report under scanner.result."""
    return {
        "invocation": {"uri": "", "event_id": "", "builder.id": ""},
        "scanner": {
            "uri": "pkg:github/aquasecurity/trivy@v0.58.1",
            "version": "0.58.1",
            "result": json.loads(scan_of(img, report)),
        },
        "metadata": {
            "scanStartedOn": "2026-12-04T10:00:00Z",
            "scanFinishedOn": "2026-12-04T10:00:01Z",
        },
    }


async def attest(
    registry: Reg,
    img: im.Image,
    predicate_type: str,
    predicate: dict,
    key: PrivateKey | None,
    about: im.Image | None = None,
) -> None:
    """Attach a statement about `about` (default: img) next to img, signed by key (None: not)."""
    payload = intoto.statement([(f"{REPO}", (about or img).digest)], predicate_type, predicate)
    if key is None:
        envelope = {
            "payload": dsse.b64encode(payload),
            "payloadType": dsse.INTOTO_PAYLOAD_TYPE,
            "signatures": [],
        }
    else:
        envelope = dsse.sign(payload, dsse.INTOTO_PAYLOAD_TYPE, key)
    async with registry.client() as client:
        await attach(client, REPO, subject(img), json.dumps(envelope).encode(), predicate_type)


async def judge(registry: Reg, img: im.Image, kind: str, policy, folder: Path) -> GateResult:
    manifest = parse_manifest(img.raw, img.media_type, img.digest, "test image")
    async with registry.client() as client:
        candidate = Candidate(client, REPO, manifest, folder=folder)
        return await gate(kind).judge(candidate, policy)


def scan_policy() -> ScanPolicy:
    return ScanPolicy(fail_on="HIGH", signed_by=["keys/ci.pub"])


# ---------------------------------------------------------------- attacks (all refused)


async def test_a_plain_attached_report_does_not_count(registry: Reg, tmp_path: Path, ci) -> None:
    img = push(registry, "plain")
    manifest, blobs = artifact(subject(img), mt.SCAN_REPORT_TRIVY, scan_of(img))
    async with registry.client() as client:
        await push_referrer(client, REPO, manifest, blobs)
    result = await judge(registry, img, "scan", scan_policy(), tmp_path)
    assert not result.passed
    assert result.summary == (
        f"refused: no signed attestation of {attested.COSIGN_VULN} or {attested.SARIF_PREDICATE}"
        f" is attached to {img.digest}"
    )


async def test_an_unsigned_attestation_does_not_count(registry: Reg, tmp_path: Path, ci) -> None:
    img = push(registry, "unsigned")
    await attest(registry, img, attested.COSIGN_VULN, vuln_predicate(img), None)
    result = await judge(registry, img, "scan", scan_policy(), tmp_path)
    assert not result.passed and "is unsigned: the envelope holds no signature" in result.summary


async def test_an_attestation_signed_by_another_key_does_not_count(
    registry: Reg, tmp_path: Path, ci
) -> None:
    developer = load_private_key(generate()[0], "developer key")
    img = push(registry, "forged")
    await attest(registry, img, attested.COSIGN_VULN, vuln_predicate(img), developer)
    result = await judge(registry, img, "scan", scan_policy(), tmp_path)
    assert not result.passed
    assert "is signed by a key the policy does not name" in result.summary


async def test_a_genuine_attestation_about_another_image_does_not_count(
    registry: Reg, tmp_path: Path, ci
) -> None:
    clean, vulnerable = push(registry, "clean"), push(registry, "vulnerable")
    # CI's real, signed statement about the clean image, attached next to the vulnerable one
    await attest(registry, vulnerable, attested.COSIGN_VULN, vuln_predicate(clean), ci, about=clean)
    result = await judge(registry, vulnerable, "scan", scan_policy(), tmp_path)
    assert not result.passed
    assert result.summary.endswith(
        f"a signed attestation about another digest, not {vulnerable.digest}"
    )


async def test_an_old_passing_scan_cannot_outvote_a_new_failing_one(
    registry: Reg, tmp_path: Path, ci
) -> None:
    img = push(registry, "rescanned")
    await attest(registry, img, attested.COSIGN_VULN, vuln_predicate(img, MEDIUM_SCAN), ci)
    await attest(registry, img, attested.COSIGN_VULN, vuln_predicate(img, CRITICAL_SCAN), ci)
    result = await judge(registry, img, "scan", scan_policy(), tmp_path)
    assert not result.passed and "CRITICAL" in result.summary


# ---------------------------------------------------------------- the signed paths


async def test_a_signed_cosign_vuln_attestation_passes(registry: Reg, tmp_path: Path, ci) -> None:
    img = push(registry, "signed-scan")
    await attest(registry, img, attested.COSIGN_VULN, vuln_predicate(img), ci)
    result = await judge(registry, img, "scan", scan_policy(), tmp_path)
    assert result.passed, result.summary
    # both layouts hold the same statement: each is judged, each passes
    assert len(result.evidence) == 2
    assert all(f"signed by {ci.short_id}" in e.source for e in result.evidence)


async def test_a_signed_test_result_predicate_is_counted(registry: Reg, tmp_path: Path, ci) -> None:
    img = push(registry, "test-result")
    predicate = {
        "result": "FAILED",
        "configuration": [],
        "passedTests": ["t1", "t2"],
        "warnedTests": [],
        "failedTests": ["t3"],
    }
    await attest(registry, img, attested.TEST_RESULT, predicate, ci)
    strict = TestsPolicy(signed_by=["keys/ci.pub"])
    lenient = TestsPolicy(signed_by=["keys/ci.pub"], max_failed=1)
    refused = await judge(registry, img, "tests", strict, tmp_path)
    assert not refused.passed and "1 failed" in refused.summary
    assert (await judge(registry, img, "tests", lenient, tmp_path)).passed


async def test_a_signed_pytest_report_keeps_todays_policies(
    registry: Reg, tmp_path: Path, ci
) -> None:
    img = push(registry, "pytest")
    await attest(
        registry, img, attested.PYTEST_PREDICATE, json.loads(PASSING_TESTS.read_bytes()), ci
    )
    policy = TestsPolicy(signed_by=["keys/ci.pub"], min_tests=12)
    result = await judge(registry, img, "tests", policy, tmp_path)
    assert result.passed, result.summary
    too_many = TestsPolicy(signed_by=["keys/ci.pub"], min_tests=13)
    assert not (await judge(registry, img, "tests", too_many, tmp_path)).passed


async def test_a_key_named_inline_works_like_a_file(registry: Reg, tmp_path: Path, ci) -> None:
    img = push(registry, "inline")
    await attest(registry, img, attested.COSIGN_VULN, vuln_predicate(img), ci)
    policy = ScanPolicy(fail_on="HIGH", signed_by=[ci.public.pem()])
    assert (await judge(registry, img, "scan", policy, tmp_path / "elsewhere")).passed
