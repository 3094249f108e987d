"""parse_manifest, Descriptor, verify_digest, fallback_tag, index_entries, referrer_descriptor.

Hand-made documents exercise each rule; the byte-exact public OCI fixtures in
tests/fixtures/oci (see tests/fixtures/SOURCES.md) check that real manifests written by regctl and
notation parse, and that the digests and sizes they record for each other line up.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pytest

from registry import mediatypes as mt
from registry.errors import (
    EXIT_BAD_INPUT,
    EXIT_REGISTRY,
    AirlockError,
    DigestMismatch,
    UnsupportedContent,
)
from registry.manifest import (
    MAX_INDEX_CHILDREN,
    MAX_MANIFEST_SIZE,
    MAX_REFERRERS,
    Descriptor,
    Manifest,
    digest_of,
    fallback_tag,
    index_entries,
    parse_manifest,
    referrer_descriptor,
    verify_digest,
)
from registry.reference import validate_tag

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "oci"

# sha256 of b"" and b"{}", as published (the latter is the OCI empty descriptor's digest)
EMPTY_SHA256 = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
EMPTY_JSON_SHA256 = "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a"

D1 = "sha256:" + "11" * 32
D2 = "sha256:" + "22" * 32
D3 = "sha256:" + "33" * 32
D4 = "sha256:" + "44" * 32

LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"
DOCKER_LAYER = "application/vnd.docker.image.rootfs.diff.tar.gzip"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"


def desc(media_type: str, digest: str, size: int, **extra: Any) -> dict[str, Any]:
    return {"mediaType": media_type, "digest": digest, "size": size, **extra}


def oci_manifest(**extra: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "schemaVersion": 2,
        "mediaType": mt.OCI_MANIFEST,
        "config": desc(OCI_CONFIG, D1, 100),
        "layers": [desc(LAYER, D2, 2000), desc(LAYER, D3, 3000)],
    }
    doc.update(extra)
    return doc


def oci_index(**extra: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "schemaVersion": 2,
        "mediaType": mt.OCI_INDEX,
        "manifests": [
            desc(mt.OCI_MANIFEST, D1, 500, platform={"architecture": "amd64", "os": "linux"}),
            desc(mt.OCI_MANIFEST, D2, 501, platform={"architecture": "arm64", "os": "linux"}),
        ],
    }
    doc.update(extra)
    return doc


def encode(doc: Any) -> bytes:
    return json.dumps(doc, indent=3).encode()


def parse(doc: Any, content_type: str | None = None) -> Manifest:
    raw = doc if isinstance(doc, bytes) else encode(doc)
    return parse_manifest(raw, content_type, digest_of(raw), "test")


def refused(doc: Any, content_type: str | None = None) -> str:
    with pytest.raises(UnsupportedContent) as info:
        parse(doc, content_type)
    assert info.value.exit_code == EXIT_BAD_INPUT
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith("test"), "the message names what was being read"
    return message


# ----------------------------------------------------------------------------- digests


def test_digest_of_known_values() -> None:
    assert digest_of(b"") == EMPTY_SHA256
    assert digest_of(b"{}") == EMPTY_JSON_SHA256 == mt.OCI_EMPTY_DIGEST
    assert digest_of(b"", "sha512") == (
        "sha512:cf83e1357eefb8bdf1542850d66d8007d620e4050b5715dc83f4a921d36ce9ce"
        "47d0d13c5d85f2b0ff8318d2877eec2f63b931bd47417a81a538327af927da3e"
    )


def test_verify_digest_accepts_matching_bytes() -> None:
    verify_digest(b"{}", EMPTY_JSON_SHA256, "config")
    verify_digest(b"", "sha512:" + hashlib.sha512(b"").hexdigest(), "empty")


def test_verify_digest_mismatch_raises() -> None:
    with pytest.raises(DigestMismatch) as info:
        verify_digest(b"{} ", EMPTY_JSON_SHA256, "manifest localhost:5000/app@x")
    err = info.value
    assert err.exit_code == EXIT_REGISTRY
    message = str(err)
    assert message.startswith("manifest localhost:5000/app@x")
    assert EMPTY_JSON_SHA256 in message
    assert digest_of(b"{} ") in message
    assert "\n" not in message


def test_verify_digest_mismatch_in_sha512() -> None:
    with pytest.raises(DigestMismatch):
        verify_digest(b"x", "sha512:" + hashlib.sha512(b"y").hexdigest(), "blob")


def test_verify_digest_with_an_unknown_algorithm_is_an_airlock_error() -> None:
    # The client passes the registry's Docker-Content-Digest header here; a bogus one must end
    # as a reported error (exit code), not as a ValueError traceback.
    with pytest.raises(AirlockError):
        verify_digest(b"x", "foo:" + "0" * 64, "manifest")


# ----------------------------------------------------------------------------- the four kinds


def test_oci_image_manifest() -> None:
    raw = encode(oci_manifest(annotations={"org.example": "yes"}))
    m = parse_manifest(raw, mt.OCI_MANIFEST, digest_of(raw), "test")
    assert m.media_type == mt.OCI_MANIFEST
    assert m.raw == raw
    assert m.digest == digest_of(raw)
    assert not m.is_index
    assert m.config == Descriptor(OCI_CONFIG, D1, 100)
    assert m.layers == (Descriptor(LAYER, D2, 2000), Descriptor(LAYER, D3, 3000))
    assert m.blobs() == [Descriptor(OCI_CONFIG, D1, 100), *m.layers]
    assert m.children() == []
    assert m.manifests == ()
    assert m.subject is None
    assert m.artifact_type is None
    assert m.annotations == {"org.example": "yes"}
    assert m.descriptor == Descriptor(mt.OCI_MANIFEST, digest_of(raw), len(raw))


def test_oci_image_manifest_without_layers() -> None:
    doc = oci_manifest()
    del doc["layers"]
    m = parse(doc)
    assert m.layers == ()
    assert m.blobs() == [Descriptor(OCI_CONFIG, D1, 100)]


def test_oci_index() -> None:
    raw = encode(oci_index(annotations={"a": "b"}))
    m = parse_manifest(raw, None, digest_of(raw), "test")
    assert m.media_type == mt.OCI_INDEX
    assert m.is_index
    assert m.config is None
    assert m.blobs() == []
    children = m.children()
    assert [c.digest for c in children] == [D1, D2]
    assert [c.size for c in children] == [500, 501]
    assert all(c.is_manifest for c in children)
    assert children[0].platform == {"architecture": "amd64", "os": "linux"}
    assert children[1].platform == {"architecture": "arm64", "os": "linux"}
    assert m.annotations == {"a": "b"}


def test_nested_index() -> None:
    doc = oci_index()
    doc["manifests"].append(desc(mt.OCI_INDEX, D3, 700))
    m = parse(doc)
    assert [c.media_type for c in m.children()] == [mt.OCI_MANIFEST, mt.OCI_MANIFEST, mt.OCI_INDEX]


def test_docker_v2_schema2_manifest() -> None:
    doc = {
        "schemaVersion": 2,
        "mediaType": mt.DOCKER_MANIFEST,
        "config": desc(DOCKER_CONFIG, D1, 1469),
        "layers": [desc(DOCKER_LAYER, D2, 2811478)],
    }
    m = parse(doc, mt.DOCKER_MANIFEST)
    assert m.media_type == mt.DOCKER_MANIFEST
    assert not m.is_index
    assert m.blobs() == [Descriptor(DOCKER_CONFIG, D1, 1469), Descriptor(DOCKER_LAYER, D2, 2811478)]


def test_docker_manifest_list() -> None:
    doc = {
        "schemaVersion": 2,
        "mediaType": mt.DOCKER_MANIFEST_LIST,
        "manifests": [
            desc(mt.DOCKER_MANIFEST, D1, 528, platform={"architecture": "amd64", "os": "linux"}),
            desc(
                mt.DOCKER_MANIFEST,
                D2,
                528,
                platform={"architecture": "arm", "os": "linux", "variant": "v6"},
            ),
        ],
    }
    m = parse(doc, mt.DOCKER_MANIFEST_LIST)
    assert m.media_type == mt.DOCKER_MANIFEST_LIST
    assert m.is_index
    assert [c.digest for c in m.children()] == [D1, D2]
    assert m.children()[1].platform == {"architecture": "arm", "os": "linux", "variant": "v6"}
    assert m.blobs() == []


# ----------------------------------------------------------------------------- media type


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (mt.DOCKER_MANIFEST_LIST, mt.DOCKER_MANIFEST_LIST),
        (mt.OCI_INDEX, mt.OCI_INDEX),
        (f"{mt.DOCKER_MANIFEST_LIST}; charset=utf-8", mt.DOCKER_MANIFEST_LIST),
        (f"  {mt.OCI_INDEX} ;charset=utf-8", mt.OCI_INDEX),
    ],
)
def test_index_without_media_type_uses_the_header(header: str, expected: str) -> None:
    doc = oci_index()
    del doc["mediaType"]
    m = parse(doc, header)
    assert m.media_type == expected
    assert m.is_index


def test_image_without_media_type_uses_the_header() -> None:
    doc = oci_manifest()
    del doc["mediaType"]
    assert parse(doc, mt.DOCKER_MANIFEST).media_type == mt.DOCKER_MANIFEST


@pytest.mark.parametrize("header", [None, "", "  ", ";charset=utf-8"])
def test_without_media_type_or_header_the_shape_decides(header: str | None) -> None:
    index = oci_index()
    del index["mediaType"]
    image = oci_manifest()
    del image["mediaType"]
    assert parse(index, header).media_type == mt.OCI_INDEX
    assert parse(image, header).media_type == mt.OCI_MANIFEST
    assert parse(index, header).children()
    assert parse(image, header).blobs()


def test_media_type_in_the_document_wins_over_the_header() -> None:
    m = parse(oci_manifest(), "application/json")
    assert m.media_type == mt.OCI_MANIFEST
    m = parse(oci_index(), mt.DOCKER_MANIFEST)
    assert m.media_type == mt.OCI_INDEX


@pytest.mark.parametrize(
    "media_type",
    [
        "application/vnd.oci.artifact.manifest.v1+json",
        "application/vnd.docker.distribution.manifest.v1+prettyjws",
        "application/json",
        "application/vnd.example+json",
    ],
)
def test_unknown_media_type_in_the_document_is_refused(media_type: str) -> None:
    message = refused(oci_manifest(mediaType=media_type))
    assert repr(media_type) in message


def test_unknown_media_type_in_the_header_is_refused() -> None:
    doc = oci_manifest()
    del doc["mediaType"]
    message = refused(doc, "application/vnd.example.thing+json")
    assert "application/vnd.example.thing+json" in message


# ----------------------------------------------------------------------------- refusals


def test_schema1_is_refused_with_its_message() -> None:
    doc = {
        "schemaVersion": 1,
        "name": "library/alpine",
        "tag": "latest",
        "architecture": "amd64",
        "fsLayers": [{"blobSum": D1}],
        "history": [{"v1Compatibility": "{}"}],
    }
    message = refused(doc, "application/vnd.docker.distribution.manifest.v1+prettyjws")
    assert "schema 1" in message
    assert "re-push" in message


@pytest.mark.parametrize("version", [3, 0, "2", None])
def test_other_schema_versions_are_refused(version: object) -> None:
    doc = oci_manifest(schemaVersion=version)
    message = refused(doc)
    assert "schemaVersion" in message
    assert repr(version) in message


def test_missing_schema_version_is_refused() -> None:
    doc = oci_manifest()
    del doc["schemaVersion"]
    assert "schemaVersion" in refused(doc)


@pytest.mark.parametrize(
    "raw",
    [b"", b"not json", b"{", b"\xff\xfe\xfd", b"{'single': 'quotes'}", b"<html></html>"],
)
def test_non_json_is_refused(raw: bytes) -> None:
    assert "not valid JSON" in refused(raw)


@pytest.mark.parametrize("raw", [b"[]", b"[{}]", b'"manifest"', b"2", b"null", b"true"])
def test_json_that_is_not_an_object_is_refused(raw: bytes) -> None:
    assert "not a JSON object" in refused(raw)


def _padded(size: int) -> bytes:
    body = json.dumps(oci_manifest()).encode()
    # trailing whitespace is valid JSON, so only the size can be the reason for a refusal
    return body + b" " * (size - len(body))


def test_manifest_of_exactly_the_limit_is_accepted() -> None:
    raw = _padded(MAX_MANIFEST_SIZE)
    assert len(raw) == 4 * 1024 * 1024
    assert parse(raw).media_type == mt.OCI_MANIFEST


def test_oversized_manifest_is_refused() -> None:
    raw = _padded(MAX_MANIFEST_SIZE + 1)
    message = refused(raw)
    assert str(MAX_MANIFEST_SIZE + 1) in message
    assert "limit" in message


@pytest.mark.parametrize(
    "media_type",
    [LAYER, OCI_CONFIG, mt.OCI_EMPTY, DOCKER_LAYER, "application/octet-stream"],
)
def test_index_entry_with_a_blob_media_type_is_refused(media_type: str) -> None:
    doc = oci_index()
    doc["manifests"].append(desc(media_type, D3, 10))
    message = refused(doc)
    assert D3 in message
    assert media_type in message


def test_index_without_manifests_list_is_refused() -> None:
    doc = oci_index()
    del doc["manifests"]
    assert "manifests" in refused(doc, mt.OCI_INDEX)
    assert "manifests" in refused(oci_index(manifests={"a": 1}))


def test_empty_index_is_accepted() -> None:
    assert parse(oci_index(manifests=[])).children() == []


def _entries(count: int) -> list[dict[str, Any]]:
    return [desc(mt.OCI_MANIFEST, f"sha256:{i:064x}", 10) for i in range(count)]


def test_an_index_with_more_children_than_the_cap_is_refused() -> None:
    """10,000 children cost a copy 76 s and 178 MB; real multi-platform indexes have tens."""
    assert len(parse(oci_index(manifests=_entries(MAX_INDEX_CHILDREN))).children()) == 1000
    message = refused(oci_index(manifests=_entries(MAX_INDEX_CHILDREN + 1)))
    assert f"{MAX_INDEX_CHILDREN + 1} entries" in message and "limit of 1000" in message


def test_a_referrer_listing_over_the_cap_is_refused() -> None:
    found, _ = index_entries({"manifests": _entries(MAX_REFERRERS)}, "listing")
    assert len(found) == MAX_REFERRERS
    with pytest.raises(UnsupportedContent, match=r"listing: .* over the limit of 1000") as info:
        index_entries({"manifests": _entries(MAX_REFERRERS + 1)}, "listing")
    assert info.value.exit_code == EXIT_BAD_INPUT


def test_image_manifest_without_config_is_refused() -> None:
    doc = oci_manifest()
    del doc["config"]
    assert "config" in refused(doc)


def test_image_manifest_with_non_list_layers_is_refused() -> None:
    assert "layers" in refused(oci_manifest(layers={"0": desc(LAYER, D2, 1)}))


# ----------------------------------------------------------------------------- descriptors


BAD_DESCRIPTORS = [
    pytest.param(desc(LAYER, "sha256:" + "AB" * 32, 1), id="uppercase-hex"),
    pytest.param(desc(LAYER, "sha256:" + "ab" * 31, 1), id="short-digest"),
    pytest.param(desc(LAYER, "md5:" + "ab" * 16, 1), id="md5"),
    pytest.param(desc(LAYER, "sha256" + "ab" * 32, 1), id="no-colon"),
    pytest.param(desc(LAYER, 12345, 1), id="digest-not-string"),
    pytest.param({"mediaType": LAYER, "size": 1}, id="no-digest"),
    pytest.param(desc(LAYER, D4, -1), id="negative-size"),
    pytest.param(desc(LAYER, D4, True), id="bool-size"),
    pytest.param(desc(LAYER, D4, False), id="bool-size-false"),
    pytest.param(desc(LAYER, D4, 1.0), id="float-size"),
    pytest.param(desc(LAYER, D4, "1"), id="string-size"),
    pytest.param({"mediaType": LAYER, "digest": D4}, id="no-size"),
    pytest.param({"digest": D4, "size": 1}, id="no-media-type"),
    pytest.param(desc("", D4, 1), id="empty-media-type"),
    pytest.param(desc(7, D4, 1), id="media-type-not-string"),
    pytest.param([LAYER, D4, 1], id="not-an-object"),
    pytest.param(None, id="null"),
]


@pytest.mark.parametrize("bad", BAD_DESCRIPTORS)
def test_bad_layer_descriptor_is_refused(bad: Any) -> None:
    doc = oci_manifest()
    doc["layers"].append(bad)
    assert "layers[2]" in refused(doc)


@pytest.mark.parametrize("bad", BAD_DESCRIPTORS)
def test_bad_config_descriptor_is_refused(bad: Any) -> None:
    assert "config" in refused(oci_manifest(config=bad))


@pytest.mark.parametrize("bad", BAD_DESCRIPTORS)
def test_bad_index_entry_is_refused(bad: Any) -> None:
    doc = oci_index()
    doc["manifests"].insert(0, bad)
    assert "manifests[0]" in refused(doc)


@pytest.mark.parametrize("bad", BAD_DESCRIPTORS)
def test_bad_subject_is_refused(bad: Any) -> None:
    assert "subject" in refused(oci_manifest(subject=bad))


def test_size_zero_and_sha512_are_valid() -> None:
    sha512 = "sha512:" + "ab" * 64
    m = parse(oci_manifest(layers=[desc(LAYER, sha512, 0)]))
    assert m.layers == (Descriptor(LAYER, sha512, 0),)


def test_descriptor_optional_fields_are_read() -> None:
    layer = desc(
        LAYER,
        D2,
        5,
        annotations={"org.opencontainers.image.title": "file.txt"},
        urls=["https://example.com/layer", 7],
        artifactType="application/example",
    )
    m = parse(oci_manifest(layers=[layer]))
    (d,) = m.layers
    assert d.annotations == {"org.opencontainers.image.title": "file.txt"}
    assert d.urls == ("https://example.com/layer",)
    assert d.artifact_type == "application/example"
    assert d.platform is None


def test_descriptor_ignores_ill_typed_optional_fields() -> None:
    layer = desc(
        LAYER, D2, 5, annotations=["x"], urls="https://x", platform="linux", artifactType=3
    )
    (d,) = parse(oci_manifest(layers=[layer])).layers
    assert (d.annotations, d.urls, d.platform, d.artifact_type) == (None, (), None, None)


def test_descriptor_to_json_round_trip() -> None:
    obj = desc(
        mt.OCI_MANIFEST,
        D1,
        42,
        artifactType="application/vnd.airlock.promotion.v1+json",
        annotations={"k": "v"},
        platform={"os": "linux", "architecture": "amd64"},
    )
    d = Descriptor.from_json(obj, "x")
    assert d.to_json() == obj
    assert Descriptor.from_json(d.to_json(), "y") == d


# ----------------------------------------------------------------------------- blobs()


@pytest.mark.parametrize("foreign", sorted(mt.NON_DISTRIBUTABLE))
def test_non_distributable_layers_are_excluded_from_blobs(foreign: str) -> None:
    doc = oci_manifest()
    doc["layers"].insert(0, desc(foreign, D4, 99, urls=["https://mcr.microsoft.com/l/x"]))
    m = parse(doc)
    assert len(m.layers) == 3, "the manifest still lists the layer"
    assert m.layers[0].media_type == foreign
    assert not m.layers[0].distributable
    assert m.layers[0].urls == ("https://mcr.microsoft.com/l/x",)
    assert [b.digest for b in m.blobs()] == [D1, D2, D3]


def test_docker_windows_image_blobs() -> None:
    foreign = "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip"
    doc = {
        "schemaVersion": 2,
        "mediaType": mt.DOCKER_MANIFEST,
        "config": desc(DOCKER_CONFIG, D1, 1000),
        "layers": [desc(foreign, D2, 10**9), desc(DOCKER_LAYER, D3, 5000)],
    }
    m = parse(doc)
    assert m.blobs() == [Descriptor(DOCKER_CONFIG, D1, 1000), Descriptor(DOCKER_LAYER, D3, 5000)]


# ----------------------------------------------------------------------------- OCI 1.1 referrers


def test_subject_and_artifact_type_are_read() -> None:
    doc = oci_manifest(
        artifactType=mt.SCAN_REPORT_TRIVY,
        config=desc(mt.OCI_EMPTY, mt.OCI_EMPTY_DIGEST, 2),
        layers=[desc("application/json", D2, 1234)],
        subject=desc(mt.OCI_MANIFEST, D4, 900),
    )
    m = parse(doc)
    assert m.artifact_type == mt.SCAN_REPORT_TRIVY
    assert m.subject == Descriptor(mt.OCI_MANIFEST, D4, 900)
    assert m.descriptor.artifact_type == mt.SCAN_REPORT_TRIVY
    assert m.config == Descriptor(mt.OCI_EMPTY, mt.OCI_EMPTY_DIGEST, 2)


def test_index_with_subject_and_artifact_type() -> None:
    m = parse(oci_index(artifactType="application/example", subject=desc(mt.OCI_INDEX, D4, 9)))
    assert m.artifact_type == "application/example"
    assert m.subject == Descriptor(mt.OCI_INDEX, D4, 9)


def test_non_string_artifact_type_is_ignored() -> None:
    assert parse(oci_manifest(artifactType=["x"])).artifact_type is None
    assert parse(oci_manifest(artifactType="")).artifact_type is None


def test_fallback_tag_for_sha256() -> None:
    hex_ = "dfae8f425735a5e3a72e40d6609e03079995511d48157c74d54801ff4430491e"
    tag = fallback_tag("sha256:" + hex_)
    assert tag == "sha256-" + hex_
    assert validate_tag(tag) == tag


def test_fallback_tag_for_sha512_is_truncated_to_64_characters() -> None:
    # OCI distribution-spec 1.1, "Referrers Tag Schema": <alg>-<ref>, <ref> limited to 64
    # characters; a 128-hex <ref> would also exceed the 128-character tag limit.
    hex_ = "0123456789abcdef" * 8
    tag = fallback_tag("sha512:" + hex_)
    assert tag == "sha512-" + hex_[:64]
    assert validate_tag(tag) == tag


def test_index_entries_keeps_good_entries_and_names_bad_ones() -> None:
    doc = {
        "manifests": [
            {"mediaType": mt.OCI_MANIFEST, "digest": D1, "size": 583, "artifactType": "a/b"},
            {"mediaType": mt.OCI_MANIFEST, "digest": "sha256:nothex", "size": 1},
            {"mediaType": "application/vnd.oci.artifact.manifest.v1+json", "digest": D2, "size": 9},
        ]
    }
    found, problems = index_entries(doc, "listing")
    assert [d.digest for d in found] == [D1, D2]
    assert found[0].artifact_type == "a/b"
    assert len(problems) == 1 and "manifests[1]" in problems[0]
    with pytest.raises(UnsupportedContent, match="not an index"):
        index_entries({"layers": []}, "listing")


# ----------------------------------------------------------------------------- real fixtures

# file name → sha256, from SOURCES.md (each file is the blob of that name in an OCI layout)
FIXTURE_DIGESTS = {
    "regclient-a1-sbom-referrer-manifest.json": (
        "sha256:0484e93c23cddf24a8400547119558312023295af241d4cd1eaf1b27145c5026"
    ),
    "regclient-a2-signature-referrer-manifest.json": (
        "sha256:741132f956e196c3858dab17e50ea977056f2f1ce1ad2900f11f4c8ff2d4203b"
    ),
    "regclient-v2-subject-index.json": (
        "sha256:dfae8f425735a5e3a72e40d6609e03079995511d48157c74d54801ff4430491e"
    ),
    "regclient-referrers-tag-index.json": (
        "sha256:955b8a891713a806107edb6dd09410233a9e7926584b1d6fd8b7b5342296188b"
    ),
    "notation-signature-manifest.json": (
        "sha256:90ceaff260d657d797c408ac73564a9c7bb9d86055877c2a811f0e63b8c6524f"
    ),
    "notation-subject-manifest.json": (
        "sha256:b8479de3f88fb259a0a9ea82a5b2a052a1ef3c4ebbcfc61482d5ae4c831f8af9"
    ),
    "notation-referrers-tag-index.json": (
        "sha256:13e107e0dd246f07ff18998a3d39e226965c41477a1bc1765f7617632ff3f283"
    ),
}


def fixture(name: str, content_type: str | None = None) -> Manifest:
    raw = (FIXTURES / name).read_bytes()
    return parse_manifest(raw, content_type, digest_of(raw), name)


@pytest.mark.parametrize(("name", "digest"), sorted(FIXTURE_DIGESTS.items()))
def test_fixture_digest_and_parse(name: str, digest: str) -> None:
    raw = (FIXTURES / name).read_bytes()
    assert digest_of(raw) == digest
    verify_digest(raw, digest, name)
    m = parse_manifest(raw, None, digest, name)
    assert m.raw == raw
    assert m.digest == digest
    assert m.descriptor.size == len(raw)
    # the document carries its own mediaType, so a misleading header changes nothing
    assert parse_manifest(raw, "application/octet-stream", digest, name).media_type == m.media_type


def test_fixture_set_is_complete() -> None:
    assert sorted(p.name for p in FIXTURES.glob("*.json")) == sorted(FIXTURE_DIGESTS)


def test_regclient_subject_index() -> None:
    m = fixture("regclient-v2-subject-index.json")
    assert m.media_type == mt.OCI_INDEX
    assert m.is_index
    assert m.blobs() == []
    assert m.subject is None
    platforms = [(c.platform or {}) for c in m.children()]
    assert [(p["os"], p["architecture"], p.get("variant")) for p in platforms] == [
        ("linux", "amd64", None),
        ("linux", "arm64", None),
        ("linux", "arm", "v7"),
    ]
    assert all(c.media_type == mt.OCI_MANIFEST and c.size == 710 for c in m.children())
    assert m.annotations["org.example.version"] == "v2"
    assert m.annotations["org.opencontainers.image.base.name"] == "registry.example.org/testrepo:b2"


@pytest.mark.parametrize(
    ("name", "artifact_type", "layer_type", "layer_size"),
    [
        (
            "regclient-a1-sbom-referrer-manifest.json",
            "application/example.sbom",
            "application/example.sbom.breakfast",
            5,
        ),
        (
            "regclient-a2-signature-referrer-manifest.json",
            "application/example.signature",
            "application/example.signature.text",
            7,
        ),
    ],
)
def test_regclient_referrers(
    name: str, artifact_type: str, layer_type: str, layer_size: int
) -> None:
    m = fixture(name)
    subject = fixture("regclient-v2-subject-index.json")
    assert m.media_type == mt.OCI_MANIFEST
    assert m.artifact_type == artifact_type
    assert m.config == Descriptor(mt.OCI_EMPTY, mt.OCI_EMPTY_DIGEST, 2)
    assert [(d.media_type, d.size) for d in m.layers] == [(layer_type, layer_size)]
    assert m.blobs() == [m.config, *m.layers]
    # the subject recorded in the referrer is exactly the index file's descriptor
    assert m.subject == subject.descriptor
    assert m.subject is not None
    assert fallback_tag(m.subject.digest) == (
        "sha256-dfae8f425735a5e3a72e40d6609e03079995511d48157c74d54801ff4430491e"
    )


def test_regclient_referrers_tag_index_lists_both_referrers() -> None:
    tag_index = fixture("regclient-referrers-tag-index.json")
    a1 = fixture("regclient-a1-sbom-referrer-manifest.json")
    a2 = fixture("regclient-a2-signature-referrer-manifest.json")
    assert tag_index.is_index
    assert tag_index.children() == [a1.descriptor, a2.descriptor]


def test_referrer_descriptors_match_what_regctl_listed() -> None:
    a1 = fixture("regclient-a1-sbom-referrer-manifest.json")
    a2 = fixture("regclient-a2-signature-referrer-manifest.json")
    ours = [referrer_descriptor(a1).to_json(), referrer_descriptor(a2).to_json()]
    theirs = json.loads((FIXTURES / "regclient-referrers-tag-index.json").read_bytes())
    assert ours == theirs["manifests"]


def test_referrer_descriptor_falls_back_to_the_config_media_type() -> None:
    sig = fixture("notation-signature-manifest.json")
    assert referrer_descriptor(sig).artifact_type == "application/vnd.cncf.notary.signature"


def test_notation_signature() -> None:
    sig = fixture("notation-signature-manifest.json")
    subject = fixture("notation-subject-manifest.json")
    assert sig.media_type == mt.OCI_MANIFEST
    assert sig.artifact_type is None, "notation carries the type in config.mediaType"
    assert sig.config is not None
    assert sig.config.media_type == "application/vnd.cncf.notary.signature"
    assert sig.config.digest == mt.OCI_EMPTY_DIGEST
    assert [(d.media_type, d.size) for d in sig.layers] == [("application/jose+json", 2070)]
    assert sig.subject == subject.descriptor
    assert sig.annotations["org.opencontainers.image.created"] == "2023-06-27T05:30:33Z"
    assert "io.cncf.notary.x509chain.thumbprint#S256" in sig.annotations


def test_notation_subject() -> None:
    m = fixture("notation-subject-manifest.json")
    assert m.subject is None
    assert m.config is not None
    assert m.config.media_type == "application/vnd.notation.config"
    (layer,) = m.layers
    assert layer.media_type == "application/vnd.oci.image.layer.v1.tar"
    assert layer.size == 17
    assert layer.annotations == {"org.opencontainers.image.title": "e2e.txt"}


def test_notation_referrers_tag_index() -> None:
    tag_index = fixture("notation-referrers-tag-index.json")
    sig = fixture("notation-signature-manifest.json")
    (entry,) = tag_index.children()
    assert (entry.media_type, entry.digest, entry.size) == (
        sig.media_type,
        sig.digest,
        len(sig.raw),
    )
    assert entry.artifact_type == "application/vnd.cncf.notary.signature"
    assert entry.annotations == sig.annotations
    assert sig.subject is not None
    assert fallback_tag(sig.subject.digest) == (
        "sha256-b8479de3f88fb259a0a9ea82a5b2a052a1ef3c4ebbcfc61482d5ae4c831f8af9"
    )


def test_fixture_tampered_by_one_byte_fails_verification() -> None:
    raw = bytearray((FIXTURES / "notation-subject-manifest.json").read_bytes())
    raw[-2:-1] = b" "
    with pytest.raises(DigestMismatch):
        verify_digest(bytes(raw), FIXTURE_DIGESTS["notation-subject-manifest.json"], "subject")
