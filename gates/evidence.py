"""Load evidence: from a local file, an http(s) URL, or the OCI referrers of an image digest.

Loading is the only I/O a gate needs; gate modules stay pure. Evidence from the registry is bound
to the digest it is attached to (the referrer's own `subject`, not the listing's word for it), and
the newest referrer of the wanted artifact types wins (by `org.opencontainers.image.created`).
For an index, evidence can be required for the index itself or for every platform manifest.
Every size is capped before reading, and anything missing or unreadable is an EvidenceError.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path

import httpx

from gates.base import MAX_EVIDENCE_BYTES, Evidence, EvidenceError, GateKind
from registry import mediatypes as mt
from registry.client import RegistryClient
from registry.errors import NotFound
from registry.manifest import Descriptor, Manifest
from registry.referrers import CREATED, list_referrers

# The artifact types airlock writes for each report format (DESIGN.md), and what each gate reads.
FORMATS: dict[str, str] = {
    "pytest": mt.TEST_REPORT_PYTEST,
    "junit": mt.TEST_REPORT_JUNIT,
    "trivy": mt.SCAN_REPORT_TRIVY,
    "grype": mt.SCAN_REPORT_GRYPE,
    "sarif": mt.SARIF,
}
GATE_TYPES: dict[GateKind, tuple[str, ...]] = {
    "tests": (mt.TEST_REPORT_PYTEST, mt.TEST_REPORT_JUNIT),
    "scan": (mt.SCAN_REPORT_TRIVY, mt.SCAN_REPORT_GRYPE, mt.SARIF),
}


def from_file(
    path: str | Path, *, subject: str | None = None, limit: int = MAX_EVIDENCE_BYTES
) -> Evidence:
    """A report on disk; `subject` is the digest it must be about, if known."""
    p = Path(path)
    try:
        size = p.stat().st_size
        if size > limit:
            raise EvidenceError(f"{p}: {size} bytes, over the {limit} byte cap for a report")
        data = p.read_bytes()
    except FileNotFoundError:
        raise EvidenceError(f"{p}: no such file") from None
    except IsADirectoryError:
        raise EvidenceError(f"{p}: is a directory, not a report") from None
    except OSError as e:
        raise EvidenceError(f"{p}: cannot read it ({e.strerror})") from None
    return Evidence(data, source=str(p), subject=subject)


async def from_url(
    url: str, *, subject: str | None = None, limit: int = MAX_EVIDENCE_BYTES
) -> Evidence:
    """A report served over http(s), read up to `limit` bytes (the rest is never downloaded)."""
    if not url.startswith(("https://", "http://")):
        raise EvidenceError(f"{url}: only http(s) URLs can be read")
    data = bytearray()
    try:
        async with (
            httpx.AsyncClient(timeout=30, follow_redirects=True) as http,
            http.stream("GET", url) as response,
        ):
            if response.status_code != 200:
                raise EvidenceError(f"{url}: answered {response.status_code}, expected 200")
            async for chunk in response.aiter_raw():
                data += chunk
                if len(data) > limit:
                    raise EvidenceError(f"{url}: over the {limit} byte cap for a report")
    except httpx.HTTPError as e:
        raise EvidenceError(f"{url}: cannot fetch it ({type(e).__name__})") from None
    return Evidence(bytes(data), source=url, subject=subject)


@dataclass(frozen=True, slots=True)
class Target:
    """The image evidence must be about: its digest, platform manifests and config blobs."""

    digest: str
    platforms: tuple[str, ...] = ()  # the child manifests of an index
    configs: tuple[str, ...] = ()  # config blob digests of the image manifest(s)

    @property
    def family(self) -> tuple[str, ...]:
        return (self.digest, *self.platforms)


async def target_of(client: RegistryClient, repo: str, image: Manifest | str) -> Target:
    """Describe the image at `image` (a digest, or its manifest when the caller has it)."""
    manifest = image if isinstance(image, Manifest) else await client.get_manifest(repo, image)
    if not manifest.is_index:
        configs = (manifest.config.digest,) if manifest.config else ()
        return Target(manifest.digest, configs=configs)
    children = [await client.get_manifest(repo, d.digest) for d in manifest.children()]
    return Target(
        manifest.digest,
        platforms=tuple(c.digest for c in children),
        configs=tuple(c.config.digest for c in children if c.config),
    )


async def from_referrers(
    client: RegistryClient,
    repo: str,
    target: Target,
    artifact_types: tuple[str, ...],
    *,
    per_platform: bool = False,
    limit: int = MAX_EVIDENCE_BYTES,
) -> list[tuple[str, Evidence | None]]:
    """The newest referrer of the given types for the image — or, with `per_platform`, for each
    platform manifest of an index — as (digest, evidence or None when there is none).

    With the listing known (the fallback tag on registries without the referrers API), each
    lookup costs three requests: the listing, the referrer manifest, its one blob.
    """
    digests = target.platforms if per_platform and target.platforms else (target.digest,)
    return [(d, await _newest(client, repo, d, target, artifact_types, limit)) for d in digests]


async def _newest(
    client: RegistryClient,
    repo: str,
    digest: str,
    target: Target,
    artifact_types: tuple[str, ...],
    limit: int,
) -> Evidence | None:
    listing = await list_referrers(client, repo, digest)
    candidates = [d for d in listing.descriptors if d.artifact_type in artifact_types]
    # Newest first by the listing's created annotation (entries without one last); on a tie the
    # one listed later — appended later — wins.
    oldest = dt.datetime.min.replace(tzinfo=dt.UTC)
    order = sorted(
        enumerate(candidates), key=lambda p: (_created(p[1].annotations) or oldest, p[0])
    )
    candidates = [d for _, d in reversed(order)]
    for desc in candidates:
        evidence = await _read(client, repo, digest, desc, target, limit)
        if evidence is not None:
            return evidence
    return None


async def _read(
    client: RegistryClient, repo: str, subject: str, desc: Descriptor, target: Target, limit: int
) -> Evidence | None:
    """The report inside one referrer, or None if it is gone or names another subject."""
    try:
        manifest = await client.get_manifest(repo, desc.digest)
    except NotFound:
        return None
    if manifest.subject is None or manifest.subject.digest != subject:
        return None  # a listing is a hint; the referrer's own subject is the binding
    layers = [layer for layer in manifest.layers if layer.digest != mt.OCI_EMPTY_DIGEST]
    if len(layers) != 1:
        raise EvidenceError(
            f"{client.registry}/{repo}@{manifest.digest}: expected one layer holding the report,"
            f" found {len(layers)}"
        )
    layer = layers[0]
    if layer.size > limit:
        raise EvidenceError(
            f"{client.registry}/{repo}@{manifest.digest}: report of {layer.size} bytes is over the"
            f" {limit} byte cap"
        )
    data = bytearray()
    async with client.open_blob(repo, layer) as chunks:
        async for chunk in chunks:
            data += chunk
    return Evidence(
        bytes(data),
        source=f"{client.registry}/{repo}@{manifest.digest}",
        media_type=desc.artifact_type or manifest.artifact_type,
        subject=subject,
        accepted=target.family,
        config_digests=target.configs,
        referrer=manifest.digest,
        created=_created(manifest.annotations) or _created(desc.annotations),
    )


def _created(annotations: dict[str, str] | None) -> dt.datetime | None:
    value = (annotations or {}).get(CREATED)
    if not value:
        return None
    try:
        when = dt.datetime.fromisoformat(value)
    except ValueError:
        return None
    return when if when.tzinfo else when.replace(tzinfo=dt.UTC)
