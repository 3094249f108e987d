"""Deterministic test images built in Python, and a minimal independent pusher/reader.

The pusher and reader use plain synchronous httpx against the registry, deliberately not
registry/ — so a test that copies with registry/ checks the result with other code.
"""

from __future__ import annotations

import hashlib
import json
import random
import shutil
import subprocess
from dataclasses import dataclass, field
from typing import Any

import httpx

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"
OCI_EMPTY = "application/vnd.oci.empty.v1+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
DOCKER_LAYER = "application/vnd.docker.image.rootfs.diff.tar.gzip"
ACCEPT = ", ".join([OCI_INDEX, DOCKER_LIST, OCI_MANIFEST, DOCKER_MANIFEST])


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


@dataclass
class Blob:
    data: bytes
    media_type: str

    @property
    def digest(self) -> str:
        return sha256(self.data)

    def descriptor(self) -> dict[str, Any]:
        return {"mediaType": self.media_type, "digest": self.digest, "size": len(self.data)}


@dataclass
class Image:
    """A manifest (image, index or artifact) with the blobs and child manifests it needs."""

    raw: bytes
    media_type: str
    blobs: list[Blob] = field(default_factory=list)
    children: list[Image] = field(default_factory=list)

    @property
    def digest(self) -> str:
        return sha256(self.raw)

    def descriptor(self, **extra: Any) -> dict[str, Any]:
        return {"mediaType": self.media_type, "digest": self.digest, "size": len(self.raw), **extra}


def random_bytes(seed: str, size: int) -> bytes:
    return random.Random(seed).randbytes(size)


def image(
    seed: str,
    *,
    docker: bool = False,
    layers: int = 2,
    layer_size: int = 4096,
    arch: str = "amd64",
    shared: list[Blob] | None = None,
    labels: dict[str, str] | None = None,
) -> Image:
    """A single-platform image; `shared` layers come first (to share blobs between platforms);
    `labels` are added to its config's."""
    layer_type = DOCKER_LAYER if docker else OCI_LAYER
    blobs = list(shared or []) + [
        Blob(random_bytes(f"{seed}-layer-{i}", layer_size), layer_type) for i in range(layers)
    ]
    config = {
        "architecture": arch,
        "os": "linux",
        "config": {"Labels": {"seed": seed, **(labels or {})}},
        "rootfs": {"type": "layers", "diff_ids": [b.digest for b in blobs]},
    }
    config_blob = Blob(
        json.dumps(config, sort_keys=True).encode(), DOCKER_CONFIG if docker else OCI_CONFIG
    )
    manifest = {
        "schemaVersion": 2,
        "mediaType": DOCKER_MANIFEST if docker else OCI_MANIFEST,
        "config": config_blob.descriptor(),
        "layers": [b.descriptor() for b in blobs],
    }
    raw = json.dumps(manifest, indent=3).encode()  # unusual formatting: re-serialising would show
    return Image(raw, manifest["mediaType"], [config_blob, *blobs])


def index(children: list[Image], *, docker: bool = False) -> Image:
    archs = ["amd64", "arm64", "ppc64le", "s390x"]
    doc = {
        "schemaVersion": 2,
        "mediaType": DOCKER_LIST if docker else OCI_INDEX,
        "manifests": [
            c.descriptor(platform={"architecture": archs[i % 4], "os": "linux"})
            for i, c in enumerate(children)
        ],
    }
    return Image(json.dumps(doc, indent=1).encode(), doc["mediaType"], children=children)


def multi_platform(seed: str, *, docker: bool = False, layer_size: int = 4096) -> Image:
    """Two platforms sharing a base layer."""
    base = Blob(random_bytes(f"{seed}-base", layer_size), DOCKER_LAYER if docker else OCI_LAYER)
    amd = image(f"{seed}-amd64", docker=docker, layers=1, shared=[base], layer_size=layer_size)
    arm = image(
        f"{seed}-arm64", docker=docker, layers=1, shared=[base], arch="arm64", layer_size=layer_size
    )
    return index([amd, arm], docker=docker)


def artifact(
    subject: Image,
    artifact_type: str,
    payload: bytes,
    payload_type: str,
    created: str = "2026-11-01T00:00:00Z",
) -> Image:
    """An OCI 1.1 artifact manifest referring to `subject`."""
    empty = Blob(b"{}", OCI_EMPTY)
    layer = Blob(payload, payload_type)
    doc = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "artifactType": artifact_type,
        "config": empty.descriptor(),
        "layers": [layer.descriptor()],
        "subject": subject.descriptor(),
        "annotations": {"org.opencontainers.image.created": created},
    }
    return Image(json.dumps(doc).encode(), OCI_MANIFEST, [empty, layer])


def cosign_signature(subject: Image) -> Image:
    """The shape cosign pushes under sha256-<hex>.sig (the signature value here is fake)."""
    payload = json.dumps(
        {
            "critical": {
                "identity": {"docker-reference": "example/app"},
                "image": {"docker-manifest-digest": subject.digest},
                "type": "cosign container image signature",
            },
            "optional": None,
        }
    ).encode()
    layer = Blob(payload, "application/vnd.dev.cosign.simplesigning.v1+json")
    config = Blob(
        json.dumps(
            {
                "architecture": "",
                "os": "",
                "rootfs": {"type": "layers", "diff_ids": [layer.digest]},
                "config": {},
            }
        ).encode(),
        OCI_CONFIG,
    )
    doc = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": config.descriptor(),
        "layers": [
            {
                **layer.descriptor(),
                "annotations": {"dev.cosignproject.cosign/signature": "MEUCIQDfakeQ=="},
            }
        ],
    }
    return Image(json.dumps(doc).encode(), OCI_MANIFEST, [config, layer])


def with_subject(img: Image, subject: Image) -> Image:
    """`img` naming `subject` as its subject: a runnable image listed among `subject`'s
    referrers (what an insider pushes to have it carried along)."""
    doc = json.loads(img.raw)
    doc["subject"] = subject.descriptor()
    return Image(json.dumps(doc).encode(), img.media_type, img.blobs)


def fallback_index(referrers: list[Image], artifact_types: list[str]) -> Image:
    doc = {
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": [
            r.descriptor(artifactType=t) for r, t in zip(referrers, artifact_types, strict=True)
        ],
    }
    return Image(json.dumps(doc).encode(), OCI_INDEX)


def fallback_tag_of(digest: str) -> str:
    return digest.replace(":", "-")


# ---------------------------------------------------------------------------- push and read back


class Pusher:
    """Minimal independent OCI push/read over plain HTTP (optionally with Authorization)."""

    def __init__(self, base_url: str, headers: dict[str, str] | None = None):
        self.http = httpx.Client(base_url=base_url, headers=headers or {}, timeout=30)

    def close(self) -> None:
        self.http.close()

    def push_blob(self, repo: str, blob: Blob) -> None:
        if self.http.head(f"/v2/{repo}/blobs/{blob.digest}").status_code == 200:
            return
        r = self.http.post(f"/v2/{repo}/blobs/uploads/")
        assert r.status_code == 202, r.text
        location = httpx.URL(r.headers["location"])
        sep = "&" if location.query else "?"
        r = self.http.put(
            f"{location}{sep}digest={blob.digest}",
            content=blob.data,
            headers={"Content-Type": "application/octet-stream"},
        )
        assert r.status_code == 201, r.text

    def push(self, repo: str, img: Image, ref: str | None = None) -> str:
        for child in img.children:
            self.push(repo, child)
        for blob in img.blobs:
            self.push_blob(repo, blob)
        r = self.http.put(
            f"/v2/{repo}/manifests/{ref or img.digest}",
            content=img.raw,
            headers={"Content-Type": img.media_type},
        )
        assert r.status_code == 201, r.text
        return img.digest

    def manifest(self, repo: str, ref: str) -> tuple[bytes, str] | None:
        r = self.http.get(f"/v2/{repo}/manifests/{ref}", headers={"Accept": ACCEPT})
        if r.status_code == 404:
            return None
        assert r.status_code == 200, r.text
        return r.content, r.headers["content-type"]

    def digest(self, repo: str, ref: str) -> str | None:
        """sha256 of the manifest bytes the registry serves for repo:ref (computed here)."""
        got = self.manifest(repo, ref)
        return sha256(got[0]) if got else None

    def blob(self, repo: str, digest: str) -> bytes | None:
        r = self.http.get(f"/v2/{repo}/blobs/{digest}", follow_redirects=True)
        return r.content if r.status_code == 200 else None

    def tags(self, repo: str) -> list[str]:
        r = self.http.get(f"/v2/{repo}/tags/list")
        if r.status_code == 404:
            return []
        return sorted(r.json().get("tags") or [])


def skopeo_digest(host: str, repo: str, ref: str) -> str:
    """The digest as skopeo sees it: sha256 of `skopeo inspect --raw` (make test installs it)."""
    assert shutil.which("skopeo"), "skopeo is missing: run `make test`, which installs it"
    sep = "@" if ref.startswith("sha256:") else ":"
    out = subprocess.run(
        ["skopeo", "inspect", "--raw", "--tls-verify=false", f"docker://{host}/{repo}{sep}{ref}"],
        capture_output=True,
        check=True,
        timeout=60,
    ).stdout
    return sha256(out)


HELM_CONFIG = "application/vnd.cncf.helm.config.v1+json"
HELM_CHART = "application/vnd.cncf.helm.chart.content.v1.tar+gzip"


def chart(seed: str) -> Image:
    """Shaped as `helm push` writes a chart: an OCI manifest, Helm's config and one chart layer."""
    config = Blob(json.dumps({"name": seed, "version": "1.0.0"}).encode(), HELM_CONFIG)
    layer = Blob(random_bytes(f"{seed}-chart", 2048), HELM_CHART)
    doc = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": config.descriptor(),
        "layers": [layer.descriptor()],
    }
    return Image(json.dumps(doc).encode(), OCI_MANIFEST, [config, layer])
