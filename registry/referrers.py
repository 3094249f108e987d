"""OCI 1.1 referrers: list them, attach one, keep the fallback tag when a registry lacks the API.

Where a registry has the referrers API it is used; where it answers 404 (distribution 2.8 and
others), the `sha256-<hex>` fallback tag holds an OCI index of referrers. Listings are hints: a
referrer counts only if its own manifest names the subject. Fallback indexes are merged at the
JSON level, so entries airlock cannot parse survive, and something under the fallback tag that is
not an index is reported, never overwritten.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from registry import mediatypes as mt
from registry.client import RegistryClient
from registry.errors import NotFound, RegistryError, UnsupportedContent
from registry.manifest import (
    MAX_REFERRERS,
    Descriptor,
    Manifest,
    digest_of,
    fallback_tag,
    index_entries,
    parse_manifest,
    referrer_descriptor,
)

CREATED = "org.opencontainers.image.created"


@dataclass(frozen=True, slots=True)
class Listing:
    descriptors: list[Descriptor]
    problems: list[str]  # entries that could not be read, or why the fallback tag was ignored
    via_api: bool


async def list_referrers(client: RegistryClient, repo: str, digest: str) -> Listing:
    """The referrers listed for `digest`: the API where the registry has it, else the fallback
    tag (the client remembers which, so later lookups cost one request)."""
    api = await client.get_referrers(repo, digest)
    if api is not None:
        return Listing(api[0], api[1], via_api=True)
    tag = fallback_tag(digest)
    doc = await index_doc(client, repo, tag)
    if doc is None:
        return Listing([], [], via_api=False)
    if isinstance(doc, str):
        return Listing([], [f"fallback tag {tag} in {repo} ignored: {doc}"], via_api=False)
    descriptors, problems = index_entries(doc, f"fallback tag {tag} in {repo}")
    return Listing(descriptors, problems, via_api=False)


async def index_doc(client: RegistryClient, repo: str, tag: str) -> dict[str, Any] | str | None:
    """The JSON of an index under `tag`; None if the tag does not exist, else a string saying
    why what is there is not an index (some registries answer the fallback tag with the subject
    itself)."""
    try:
        raw, _, _ = await client.get_manifest_bytes(repo, tag)
    except NotFound:
        return None
    try:
        doc = json.loads(raw)
    except ValueError:
        return "not valid JSON"
    if not isinstance(doc, dict) or not isinstance(doc.get("manifests"), list):
        return "not an index"
    return doc


async def merge_fallback(
    client: RegistryClient, repo: str, subject: str, descriptors: list[Descriptor]
) -> list[str]:
    """Add descriptors to the fallback-tag index of `subject`; entries already there are kept as
    they are. Returns warnings (e.g. the tag holds something that is not an index)."""
    tag = fallback_tag(subject)
    for attempt in range(4):  # optimistic: re-read after writing, in case another writer raced us
        doc = await index_doc(client, repo, tag)
        if isinstance(doc, str):
            return [
                f"fallback tag {tag} in {repo} left as it is ({doc}); referrers not listed there"
            ]
        doc = doc or {"schemaVersion": 2, "mediaType": mt.OCI_INDEX, "manifests": []}
        have = {e.get("digest") for e in doc["manifests"] if isinstance(e, dict)}
        missing = [d for d in descriptors if d.digest not in have]
        if not missing:
            return []
        if attempt == 3:
            break
        if len(doc["manifests"]) + len(missing) > MAX_REFERRERS:  # readers would refuse it
            raise UnsupportedContent(
                f"fallback tag {tag} in {client.registry}/{repo} would list"
                f" {len(doc['manifests']) + len(missing)} referrers, over the limit of"
                f" {MAX_REFERRERS} per digest; delete old ones (reports, signatures) first"
            )
        doc["manifests"] = [*doc["manifests"], *(d.to_json() for d in missing)]
        raw = json.dumps(doc, separators=(",", ":")).encode()
        # Not parsed: entries airlock cannot read must survive the merge as they were.
        await client.put_manifest(repo, tag, Manifest(raw, mt.OCI_INDEX, digest_of(raw)))
    raise RegistryError(
        f"could not update the referrers fallback tag {tag} in {client.registry}/{repo}: it keeps"
        " changing under us; retry"
    )


def artifact(
    subject: Descriptor,
    artifact_type: str,
    payload: bytes,
    *,
    title: str | None = None,
    annotations: dict[str, str] | None = None,
    created: dt.datetime | None = None,
) -> tuple[Manifest, dict[str, bytes]]:
    """An OCI 1.1 artifact: image manifest with artifactType, empty config, one layer holding
    `payload` (typed as the artifact), subject = the image. Returns it and its blobs."""
    empty = b"{}"
    layer: dict[str, Any] = {
        "mediaType": artifact_type,
        "digest": digest_of(payload),
        "size": len(payload),
    }
    if title:
        layer["annotations"] = {"org.opencontainers.image.title": title}
    when = (created or dt.datetime.now(dt.UTC)).astimezone(dt.UTC)
    doc = {
        "schemaVersion": 2,
        "mediaType": mt.OCI_MANIFEST,
        "artifactType": artifact_type,
        "config": {"mediaType": mt.OCI_EMPTY, "digest": mt.OCI_EMPTY_DIGEST, "size": 2},
        "layers": [layer],
        "subject": subject.to_json(),
        "annotations": {
            CREATED: when.isoformat(timespec="microseconds").replace("+00:00", "Z"),
            **(annotations or {}),
        },
    }
    raw = json.dumps(doc, separators=(",", ":")).encode()
    manifest = parse_manifest(raw, mt.OCI_MANIFEST, digest_of(raw), f"{artifact_type} artifact")
    return manifest, {mt.OCI_EMPTY_DIGEST: empty, digest_of(payload): payload}


async def push_referrer(
    client: RegistryClient, repo: str, manifest: Manifest, blobs: dict[str, bytes]
) -> list[str]:
    """Push an artifact that has a subject, and list it where readers will look: the registry
    indexes it itself if it has the referrers API, else the fallback tag is merged."""
    if manifest.subject is None:
        raise ValueError("push_referrer needs a manifest with a subject")
    await push_blobs(client, repo, manifest, blobs)
    headers = await client.put_manifest(repo, manifest.digest, manifest)
    if headers.get("oci-subject"):
        return []
    return await merge_fallback(
        client, repo, manifest.subject.digest, [referrer_descriptor(manifest)]
    )


async def push_blobs(
    client: RegistryClient, repo: str, manifest: Manifest, blobs: dict[str, bytes]
) -> None:
    """Upload the manifest's blobs given in `blobs` (by digest) that the repository lacks; the
    others must be there already (else the manifest PUT says which is unknown)."""
    for desc in manifest.blobs():
        if desc.digest in blobs and await client.blob_size(repo, desc.digest) is None:
            await client.upload_blob(repo, desc, _once(blobs[desc.digest]))


async def _once(data: bytes) -> AsyncIterator[bytes]:
    yield data
