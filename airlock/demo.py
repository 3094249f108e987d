"""`airlock demo`: the smallest true story — build once, promote by digest.

Starts a throw-away registry on loopback, builds a small but real OCI image in Python (a gzip'd
tar layer and a config whose diff_ids match), pushes it to dev/app, attaches a cosign-style
signature, copies dev/app → prod/app with the copy engine, and prints the digest each repository
serves, read back independently. Issue #5 grows this into the whole gated pipeline.
"""

from __future__ import annotations

import asyncio
import gzip
import io
import json
import shutil
import tarfile
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path

from registry import mediatypes as mt
from registry.client import RegistryClient
from registry.copy import copy_image
from registry.manifest import Descriptor, Manifest, digest_of, parse_manifest
from registry.reference import parse


def _layer(files: dict[str, bytes]) -> tuple[bytes, str]:
    """A reproducible gzip'd tar layer; returns (blob, diff_id of the uncompressed tar)."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, data in sorted(files.items()):
            info = tarfile.TarInfo(name)
            info.size, info.mtime, info.mode = len(data), 0, 0o644
            tar.addfile(info, io.BytesIO(data))
    tar_bytes = raw.getvalue()
    return gzip.compress(tar_bytes, mtime=0), digest_of(tar_bytes)


def sample_image(version: str = "1.0") -> tuple[Manifest, dict[str, bytes]]:
    """An OCI image of one layer holding /app/hello.txt; returns the manifest and its blobs."""
    layer, diff_id = _layer({"app/hello.txt": f"hello from airlock {version}\n".encode()})
    config = json.dumps(
        {
            "architecture": "amd64",
            "os": "linux",
            "created": "2026-01-01T00:00:00Z",
            "config": {
                "Cmd": ["cat", "/app/hello.txt"],
                "Labels": {"org.opencontainers.image.version": version},
            },
            "rootfs": {"type": "layers", "diff_ids": [diff_id]},
        },
        sort_keys=True,
    ).encode()
    return _image(config, [(layer, "application/vnd.oci.image.layer.v1.tar+gzip", None)])


def _image(
    config: bytes, layers: list[tuple[bytes, str, dict[str, str] | None]]
) -> tuple[Manifest, dict[str, bytes]]:
    """An OCI image manifest over these blobs; returns the manifest and the blobs by digest."""

    def descriptor(data: bytes, media_type: str, annotations: dict[str, str] | None) -> dict:
        d = {"mediaType": media_type, "digest": digest_of(data), "size": len(data)}
        return {**d, "annotations": annotations} if annotations else d

    doc = {
        "schemaVersion": 2,
        "mediaType": mt.OCI_MANIFEST,
        "config": descriptor(config, "application/vnd.oci.image.config.v1+json", None),
        "layers": [descriptor(*layer) for layer in layers],
    }
    raw = json.dumps(doc, indent=2).encode()
    blobs = {digest_of(data): data for data in [config, *(layer[0] for layer in layers)]}
    return parse_manifest(raw, mt.OCI_MANIFEST, digest_of(raw), "demo image"), blobs


async def push(
    client: RegistryClient, repo: str, tag: str, manifest: Manifest, blobs: dict[str, bytes]
) -> None:
    async def chunks(data: bytes) -> AsyncIterator[bytes]:
        yield data

    for desc in manifest.blobs():
        if await client.blob_size(repo, desc.digest) is None:
            await client.upload_blob(repo, desc, chunks(blobs[desc.digest]))
    await client.put_manifest(repo, tag, manifest)


async def _run(workdir: Path) -> int:
    from airlock.localregistry import start_registry

    server = start_registry(workdir / "registry")
    try:
        host = server.host
        print(f"registry   {server.url} (storage {server.root})")
        manifest, blobs = sample_image()
        async with RegistryClient(host) as client:
            await push(client, "dev/app", "1.0", manifest, blobs)
            print(f"built      {host}/dev/app:1.0  {manifest.digest}")
            sig, sig_blobs = _signature(manifest.descriptor)
            await push(
                client, "dev/app", f"sha256-{manifest.digest.split(':')[1]}.sig", sig, sig_blobs
            )
            result = await copy_image(
                client,
                parse(f"{host}/dev/app:1.0"),
                client,
                parse(f"{host}/prod/app", default_tag=None),
            )
            print(f"promoted   {result.target}: {result.summary()}")
            dev = await client.head_manifest("dev/app", "1.0")
            prod = await client.head_manifest("prod/app", "1.0")
        if dev is None or prod is None:
            print("demo failed: the image is missing after the copy")
            return 3
        print()
        print(f"{'stage':<6} {'reference':<40} digest")
        print(f"{'dev':<6} {host + '/dev/app:1.0':<40} {dev.digest}")
        print(f"{'prod':<6} {host + '/prod/app:1.0':<40} {prod.digest}")
        same = dev.digest == prod.digest == manifest.digest
        print("\nidentical bytes in dev and prod: " + ("yes" if same else "NO"))
        return 0 if same else 3
    finally:
        server.stop()


def _signature(subject: Descriptor) -> tuple[Manifest, dict[str, bytes]]:
    """A cosign-shaped signature manifest (the signature itself is a placeholder here)."""
    payload = json.dumps(
        {
            "critical": {
                "identity": {"docker-reference": "dev/app"},
                "image": {"docker-manifest-digest": subject.digest},
                "type": "cosign container image signature",
            },
            "optional": None,
        }
    ).encode()
    config = b'{"architecture":"","os":"","config":{},"rootfs":{"type":"layers","diff_ids":[]}}'
    annotations = {"dev.cosignproject.cosign/signature": "demo-placeholder"}
    return _image(
        config, [(payload, "application/vnd.dev.cosign.simplesigning.v1+json", annotations)]
    )


def run_demo(keep_dir: Path | None = None) -> int:
    workdir = keep_dir or Path(tempfile.mkdtemp(prefix="airlock-demo-"))
    try:
        return asyncio.run(_run(workdir))
    finally:
        if keep_dir is None:
            shutil.rmtree(workdir, ignore_errors=True)
