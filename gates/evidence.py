"""Load evidence: from a local file, an http(s) URL, or the OCI referrers of an image digest.

Loading is the only I/O a gate needs; gate modules stay pure. Evidence from the registry is bound
to the digest it is attached to (the referrer's own `subject`, not the listing's word for it), and
the newest referrer of the wanted artifact types wins (by `org.opencontainers.image.created`) —
among those not dated in the future: whoever attaches a report sets that annotation, and a
report dated 2099 would otherwise stay "newest" forever and hide every real report attached
after it. Such a referrer is passed over (more than 5 minutes ahead: the clock skew allowed); the
gates refuse a report whose own time is in the future.
For an index, evidence can be required for the index itself or for every platform manifest.
Every size is capped before reading, and anything missing or unreadable is an EvidenceError.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from gates.base import MAX_EVIDENCE_BYTES, Evidence, EvidenceError
from gates.common import CLOCK_SKEW
from registry import mediatypes as mt
from registry.client import RegistryClient
from registry.errors import NotFound, RegistryError
from registry.manifest import Descriptor, Manifest, referrer_descriptor
from registry.referrers import CREATED, list_referrers

# The artifact types airlock writes for each report format (docs/design.md); which of them each gate
# kind reads, it declares (gates/kinds.py).
FORMATS: dict[str, str] = {
    "pytest": mt.TEST_REPORT_PYTEST,
    "junit": mt.TEST_REPORT_JUNIT,
    "trivy": mt.SCAN_REPORT_TRIVY,
    "grype": mt.SCAN_REPORT_GRYPE,
    "sarif": mt.SARIF,
}


def from_file(
    path: str | Path, *, subject: str | None = None, limit: int = MAX_EVIDENCE_BYTES
) -> Evidence:
    """A report on disk; `subject` is the digest it must be about, if known. At most `limit`
    bytes are ever read (a pipe or /dev/zero has no size to check first)."""
    p = Path(path)
    try:
        with p.open("rb") as f:
            data = f.read(limit + 1)
    except FileNotFoundError:
        raise EvidenceError(f"{p}: no such file") from None
    except IsADirectoryError:
        raise EvidenceError(f"{p}: is a directory, not a report") from None
    except OSError as e:
        raise EvidenceError(f"{p}: cannot read it ({e.strerror})") from None
    if len(data) > limit:
        raise EvidenceError(f"{p}: over the {limit} byte cap for a report")
    return Evidence(data, source=str(p), subject=subject)


def shown(url: str) -> str:
    """A URL as it may be printed or recorded: no user:password@, no query (signed URLs carry
    their credentials there)."""
    parts = httpx.URL(url)
    return str(parts.copy_with(userinfo=b"", query=None, fragment=None))


async def from_url(
    url: str, *, subject: str | None = None, limit: int = MAX_EVIDENCE_BYTES, deadline: float = 120
) -> Evidence:
    """A report served over http(s): at most `limit` bytes after content decoding (so a gzip
    bomb is cut off too), within `deadline` seconds overall (a server that trickles is cut off).
    Connection failures are network errors (exit 3); a non-200 answer is bad evidence."""
    if not url.startswith(("https://", "http://")):
        raise EvidenceError(f"{url.split(':', 1)[0]}: only http(s) URLs can be read")
    name = shown(url)
    data = bytearray()
    try:
        async with (
            asyncio.timeout(deadline),
            httpx.AsyncClient(timeout=30, follow_redirects=True) as http,
            http.stream("GET", url) as response,
        ):
            if response.status_code != 200:
                raise EvidenceError(f"{name}: answered {response.status_code}, expected 200")
            async for chunk in response.aiter_bytes():
                data += chunk
                if len(data) > limit:
                    raise EvidenceError(f"{name}: over the {limit} byte cap for a report")
    except TimeoutError:
        raise RegistryError(f"{name}: no complete answer within {deadline:.0f} s") from None
    except httpx.DecodingError:
        raise EvidenceError(f"{name}: the body cannot be decoded") from None
    except httpx.HTTPError as e:
        raise RegistryError(f"{name}: cannot fetch it ({type(e).__name__})") from None
    return Evidence(bytes(data), source=name, subject=subject)


@dataclass(frozen=True, slots=True)
class Target:
    """The image evidence must be about: its digest, its platform manifests (for an index) and
    the config blob of each image manifest (what Trivy calls ImageID)."""

    digest: str
    platforms: tuple[str, ...] = ()
    configs: dict[str, str] = field(default_factory=dict)  # image manifest → config digest

    def binding(self, digest: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
        """The digests a report about `digest` may name, and the config digests it may name:
        the whole family for the image, a platform and its index for a platform."""
        if digest == self.digest:
            return (self.digest, *self.platforms), tuple(self.configs.values())
        return (digest, self.digest), tuple(c for m, c in self.configs.items() if m == digest)

    def evidence(
        self,
        data: bytes,
        subject: str,
        *,
        source: str,
        media_type: str,
        referrer: str,
        created: dt.datetime | None = None,
    ) -> Evidence:
        """A report about `subject` (this image or one of its platforms), bound to the digests
        it may name: one constructor for attached and attested reports alike."""
        accepted, configs = self.binding(subject)
        return Evidence(
            data,
            source=source,
            media_type=media_type,
            subject=subject,
            accepted=accepted,
            config_digests=configs,
            referrer=referrer,
            created=created,
        )


async def target_of(client: RegistryClient, repo: str, image: Manifest | str) -> Target:
    """Describe the image at `image` (a digest, or its manifest when the caller has it)."""
    manifest = image if isinstance(image, Manifest) else await client.get_manifest(repo, image)
    if not manifest.is_index:
        configs = {manifest.digest: manifest.config.digest} if manifest.config else {}
        return Target(manifest.digest, configs=configs)
    children = [await client.get_manifest(repo, d.digest) for d in manifest.children()]
    return Target(
        manifest.digest,
        platforms=tuple(c.digest for c in children),
        configs={c.digest: c.config.digest for c in children if c.config},
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
    # one listed later — appended later — wins. Dated in the future: passed over.
    oldest = dt.datetime.min.replace(tzinfo=dt.UTC)
    order = sorted(
        enumerate(candidates), key=lambda p: (_created(p[1].annotations) or oldest, p[0])
    )
    candidates = [d for _, d in reversed(order) if not _future(_created(d.annotations))]
    for desc in candidates:
        evidence = await _read(client, repo, digest, desc, target, artifact_types, limit)
        if evidence is not None and not _future(evidence.created):
            return evidence
    return None


def _future(when: dt.datetime | None) -> bool:
    return when is not None and when - dt.datetime.now(dt.UTC) > CLOCK_SKEW


async def _read(
    client: RegistryClient,
    repo: str,
    subject: str,
    desc: Descriptor,
    target: Target,
    artifact_types: tuple[str, ...],
    limit: int,
) -> Evidence | None:
    """The report inside one referrer, or None if it is gone or names another subject."""
    try:
        manifest = await client.get_manifest(repo, desc.digest)
    except NotFound:
        return None
    if manifest.subject is None or manifest.subject.digest != subject:
        return None  # a listing is a hint; the referrer's own subject is the binding
    own_type = referrer_descriptor(manifest).artifact_type
    if own_type not in artifact_types:
        return None  # nor is the listing's word for its type
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
    return target.evidence(
        await client.read_blob(repo, layer),
        subject,
        source=f"{client.registry}/{repo}@{manifest.digest}",
        media_type=own_type,
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
