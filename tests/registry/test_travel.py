"""What may travel with a promoted image as its referrer (registry/manifest.py: travel_problem):
evidence about it — signatures, attestations, SBOMs, reports — and nothing that could be run or
promoted on its own."""

from __future__ import annotations

import json
from typing import Any

import pytest

from registry import mediatypes as mt
from registry.manifest import digest_of, parse_manifest, travel_problem

EMPTY = {"mediaType": mt.OCI_EMPTY, "digest": mt.OCI_EMPTY_DIGEST, "size": 2}
IMAGE_CONFIG = "application/vnd.oci.image.config.v1+json"
SUBJECT = {"mediaType": mt.OCI_MANIFEST, "digest": "sha256:" + "a" * 64, "size": 10}


def layer(media_type: str) -> dict[str, Any]:
    return {"mediaType": media_type, "digest": "sha256:" + "b" * 64, "size": 5}


def manifest(
    layers: list[str], *, artifact_type: str | None = None, config: str = mt.OCI_EMPTY
) -> Any:
    doc: dict[str, Any] = {
        "schemaVersion": 2,
        "mediaType": mt.OCI_MANIFEST,
        "config": {**EMPTY, "mediaType": config},
        "layers": [layer(t) for t in layers],
        "subject": SUBJECT,
    }
    if artifact_type:
        doc["artifactType"] = artifact_type
    raw = json.dumps(doc).encode()
    return parse_manifest(raw, mt.OCI_MANIFEST, digest_of(raw), "test")


TRAVELS = {
    "cosign .sig (image config, simplesigning layer)": manifest(
        ["application/vnd.dev.cosign.simplesigning.v1+json"],
        config=IMAGE_CONFIG,
    ),
    "cosign .att (DSSE layers)": manifest(["application/vnd.dsse.envelope.v1+json"]),
    "cosign .sbom": manifest(["text/spdx"]),
    "sigstore bundle v0.3": manifest(
        ["application/vnd.dev.sigstore.bundle.v0.3+json"],
        artifact_type="application/vnd.dev.sigstore.bundle.v0.3+json",
    ),
    "Notation signature": manifest(
        ["application/jose+json"], artifact_type="application/vnd.cncf.notary.signature"
    ),
    "airlock's Trivy report": manifest([mt.SCAN_REPORT_TRIVY], artifact_type=mt.SCAN_REPORT_TRIVY),
    "SARIF": manifest([mt.SARIF], artifact_type=mt.SARIF),
    "CycloneDX SBOM": manifest(
        ["application/vnd.cyclonedx+json"], artifact_type="application/vnd.cyclonedx+json"
    ),
}

STAYS = {
    "a runnable image": (
        manifest(["application/vnd.oci.image.layer.v1.tar+gzip"], config=IMAGE_CONFIG),
        "runnable",
    ),
    "a runnable image claiming to be an SBOM": (
        manifest(["application/vnd.oci.image.layer.v1.tar+gzip"], artifact_type="text/spdx"),
        "runnable",
    ),
    "a Docker image": (
        manifest(["application/vnd.docker.image.rootfs.diff.tar.gzip"]),
        "runnable",
    ),
    "an airlock promotion record": (
        manifest([mt.PROMOTION_RECORD], artifact_type=mt.PROMOTION_RECORD),
        "promotion record",
    ),
    "a Helm chart": (
        manifest(
            ["application/vnd.cncf.helm.chart.content.v1.tar+gzip"],
            config="application/vnd.cncf.helm.config.v1+json",
        ),
        "not a signature",
    ),
    "an unknown artifact": (
        manifest(["application/octet-stream"], artifact_type="application/vnd.example.thing"),
        "not a signature",
    ),
}


@pytest.mark.parametrize("name", sorted(TRAVELS))
def test_evidence_travels(name: str) -> None:
    assert travel_problem(TRAVELS[name]) is None


@pytest.mark.parametrize("name", sorted(STAYS))
def test_anything_else_stays(name: str) -> None:
    found, why = STAYS[name]
    problem = travel_problem(found)
    assert problem is not None and why in problem, problem


def test_an_index_stays() -> None:
    doc = {"schemaVersion": 2, "mediaType": mt.OCI_INDEX, "manifests": [], "subject": SUBJECT}
    raw = json.dumps(doc).encode()
    index = parse_manifest(raw, mt.OCI_INDEX, digest_of(raw), "test")
    assert "index" in (travel_problem(index) or "")
