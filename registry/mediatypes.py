"""Media types airlock reads, and the artifact types it writes."""

from __future__ import annotations

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_MANIFEST_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"

IMAGE_MANIFESTS = frozenset({OCI_MANIFEST, DOCKER_MANIFEST})
INDEXES = frozenset({OCI_INDEX, DOCKER_MANIFEST_LIST})
MANIFESTS = IMAGE_MANIFESTS | INDEXES

# Always send all four: with fewer, distribution 2.8 silently answers with schema1 or a single
# platform, i.e. with other bytes and another digest.
ACCEPT = ", ".join([OCI_INDEX, DOCKER_MANIFEST_LIST, OCI_MANIFEST, DOCKER_MANIFEST])

OCI_EMPTY = "application/vnd.oci.empty.v1+json"
OCI_EMPTY_DIGEST = "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a"

# Layers a registry may not hold (Windows base layers): docker and skopeo skip them by default.
NON_DISTRIBUTABLE = frozenset(
    {
        "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip",
        "application/vnd.oci.image.layer.nondistributable.v1.tar",
        "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
        "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd",
    }
)

# Artifact types airlock attaches as OCI 1.1 referrers (docs/design.md).
TEST_REPORT_PYTEST = "application/vnd.airlock.test-report.pytest+json"
TEST_REPORT_JUNIT = "application/vnd.airlock.test-report.junit+xml"
SCAN_REPORT_TRIVY = "application/vnd.airlock.scan-report.trivy+json"
SCAN_REPORT_GRYPE = "application/vnd.airlock.scan-report.grype+json"
SARIF = "application/sarif+json"
PROMOTION_RECORD = "application/vnd.airlock.promotion.v1+json"
RELEASE = "application/vnd.airlock.release.v1+json"  # the artifactType of a release's index

# Signed attestations, in the two layouts cosign writes: DSSE envelopes as the layers of the
# `sha256-<hex>.att` tag, and sigstore bundles as referrers (gates/attestations.py).
DSSE_ENVELOPE = "application/vnd.dsse.envelope.v1+json"
SIGSTORE_BUNDLE_V03 = "application/vnd.dev.sigstore.bundle.v0.3+json"
IN_TOTO = "application/vnd.in-toto+json"  # a DSSE payloadType: an in-toto Statement

# cosign stores signatures, attestations and SBOMs under tags derived from the subject digest.
COSIGN_TAG_SUFFIXES = (".sig", ".att", ".sbom")

# What may travel with a promoted image as its referrers (or cosign tags): signatures,
# attestations, SBOMs and reports about it, by artifact type (or, without one, every layer's
# type). Anything else — another image, a Helm chart, an unknown artifact — is a deliverable of
# its own that never passed the gates, and stays behind (registry/manifest.py: travel_problem).
EVIDENCE_TYPE_PREFIXES = (
    "application/vnd.dev.cosign.",  # simplesigning, artifact.sig/.sbom, attestations
    "application/vnd.dev.sigstore.bundle",  # sigstore bundles, v0.1 to v0.3
    "application/vnd.cncf.notary.",  # Notation signatures
    "application/jose+json",  # Notation's envelopes, as layer types
    "application/cose",
    "application/vnd.dsse.envelope",
    "application/vnd.in-toto",
    "application/spdx",
    "text/spdx",
    "application/vnd.cyclonedx",
    "application/vnd.syft+json",
    "application/vnd.openvex",
    "application/sarif+json",
    "application/vnd.airlock.test-report.",
    "application/vnd.airlock.scan-report.",
)
# Layers a container runtime unpacks: a manifest with one of these is runnable, never evidence.
FILESYSTEM_LAYER_PREFIXES = (
    "application/vnd.oci.image.layer.",
    "application/vnd.docker.image.rootfs.",
)
