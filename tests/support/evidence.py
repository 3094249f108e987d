"""Evidence about test images (real pytest and Trivy reports from tests/fixtures, re-pointed at
the image), and CI's push: the image, its reports, then its tag — the demo's own
`push_with_evidence`, fed a test image."""

from __future__ import annotations

import json
from pathlib import Path

from airlock.demo import push_with_evidence
from registry import mediatypes as mt
from registry.manifest import Manifest, parse_manifest
from tests.support import images as im
from tests.support.registries import Reg

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
PASSING_TESTS = FIXTURES / "pytest-json-report" / "all-passed.report.json"  # 12 passed
FAILING_TESTS = FIXTURES / "pytest-json-report" / "sample_report.json"  # 3 failed, 2 errors
CRITICAL_SCAN = FIXTURES / "trivy" / "alpine-39.json"  # 2 CRITICAL, 4 MEDIUM
MEDIUM_SCAN = FIXTURES / "trivy" / "alpine-310-registry.json"  # 4 MEDIUM, nothing above


def scan_of(img: im.Image, report: Path = MEDIUM_SCAN, repo: str = "dev/app") -> bytes:
    """A real Trivy report re-pointed at img (RepoDigests and ImageID), as in
    tests/airlock/test_gatecli.py."""
    doc = json.loads(report.read_bytes())
    doc["Metadata"]["RepoDigests"] = [f"{repo}@{img.digest}"]
    if img.blobs:  # an image: its config blob (an index has none; Trivy names the platform's)
        doc["Metadata"]["ImageID"] = img.blobs[0].digest
    else:
        doc["Metadata"].pop("ImageID", None)
    return json.dumps(doc, indent=2).encode()


def reports_of(
    img: im.Image, *, tests: Path = PASSING_TESTS, scan: Path = MEDIUM_SCAN, repo: str = "dev/app"
) -> list[tuple[str, bytes]]:
    """A pytest report and a Trivy report about img (passing by default)."""
    return [
        (mt.TEST_REPORT_PYTEST, tests.read_bytes()),
        (mt.SCAN_REPORT_TRIVY, scan_of(img, scan, repo)),
    ]


def manifest_of(img: im.Image) -> tuple[Manifest, dict[str, bytes]]:
    """A single-platform test image as airlock's client pushes it: manifest and blobs."""
    manifest = parse_manifest(img.raw, img.media_type, img.digest, "test image")
    return manifest, {b.digest: b.data for b in img.blobs}


async def push_after_evidence(
    reg: Reg,
    seed: str,
    tag: str,
    *,
    tests: Path = PASSING_TESTS,
    scan: Path = MEDIUM_SCAN,
    repo: str = "dev/app",
) -> im.Image:
    """CI's order: the image by digest, its reports attached, and only then the tag — whose
    push is the event that starts the pipeline, so the gates find the evidence."""
    img = im.image(seed)
    async with reg.client() as client:
        await push_with_evidence(
            client,
            repo,
            *manifest_of(img),
            reports_of(img, tests=tests, scan=scan, repo=repo),
            tag=tag,
        )
    return img
