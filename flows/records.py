"""Promotion records: the answer to "what is in prod, who let it in, on what evidence".

A record (`application/vnd.airlock.promotion.v1+json`) is attached as an OCI referrer of the
digest in the target repository and read back from the registry itself. Records never travel:
a promotion copies the image's evidence but not its records (registry/manifest.py:
travel_problem), and a record counts for stage S only where airlock writes S's records — in
S's repository, naming that repository as its target (`PromotionRecord.is_for`). Each
repository also keeps its history under the tag `airlock.history`: an OCI index of its records
in order, which rollback reads. Prefect artifacts show the same facts in the UI.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from flows.config import PolicyRef
from gates.base import GateResult
from registry import mediatypes as mt
from registry.client import RegistryClient
from registry.errors import InvalidReference, NotFound, RegistryError
from registry.manifest import Descriptor, Manifest, digest_of, referrer_descriptor
from registry.reference import parse
from registry.referrers import artifact, index_doc, list_referrers, push_referrer

HISTORY_TAG = "airlock.history"
# Tags that are not releases: the referrers fallback tag, cosign's, airlock's own (history).
NOT_A_RELEASE = re.compile(r"^(sha256-[0-9a-f]{64}(\..*)?|airlock\..*)$")
DIGEST_ANNOTATION = "vnd.airlock.record.digest"
KIND_ANNOTATION = "vnd.airlock.record.kind"
MAX_RECORD_BYTES = 4 * 1024 * 1024


class Approval(BaseModel):
    model_config = ConfigDict(frozen=True)

    decision: Literal["approve", "reject"]
    approver: str
    digest: str | None = None  # what the approver decided on
    comment: str = ""
    at: dt.datetime
    # why this approval did not count (the requester's own, a repeat, an outsider…); None when
    # it counted, or is a reject (a reject always counts)
    not_counted: str | None = None
    signed_by: str | None = None  # the approver's key that verified its signature (short id)

    @property
    def shown(self) -> str:
        """`alice`, `bob (rejected)`, `carol: not counted (the requester may not…)`."""
        if self.not_counted:
            return f"{self.approver}: not counted ({self.not_counted})"
        return self.approver if self.decision == "approve" else f"{self.approver} (rejected)"


class PromotionRecord(BaseModel):
    model_config = ConfigDict(frozen=True)

    kind: Literal["promotion", "rollback"] = "promotion"
    stage: str
    image: str  # the pipeline's name for it
    digest: str
    source: str  # registry/repository@digest it came from
    target: str  # registry/repository:tag@digest
    tags: list[str] = Field(default_factory=list)
    release: str | None = None  # the tag it was pushed under in the first stage
    part_of: str | None = None  # NAME:VERSION when promoted as a member of that release
    published: str | None = None  # where customers pull it (the stage's `publish`)
    gates: list[GateResult] = Field(default_factory=list)
    approvals: list[Approval] = Field(default_factory=list)
    requester: str | None = None
    policy: PolicyRef | None = None  # the pipeline file and stage section it was judged under
    flow_run_id: str | None = None
    flow_run_url: str | None = None
    airlock_version: str
    started_at: dt.datetime
    finished_at: dt.datetime

    @property
    def evidence_digests(self) -> list[str]:
        return [e.referrer or e.digest for g in self.gates for e in g.evidence]

    def is_for(self, stage: str, repository: str) -> bool:
        """Whether this is `stage`'s record of a promotion into `repository` (the path, as read
        from that repository: a record written anywhere else — copied, or forged next to an
        image in a lower stage — never counts). The host is not compared: one registry has
        many names (localhost:5000, 127.0.0.1:5000)."""
        try:
            target = parse(self.target, default_tag=None)
        except InvalidReference:
            return False
        return self.stage == stage and target.repository == repository


async def write_record(
    client: RegistryClient, repo: str, subject: Descriptor, record: PromotionRecord
) -> str:
    """Attach the record to the digest and append it to the repository's history; returns the
    record's own digest. Warnings (e.g. a fallback tag in the way) are errors here: a record that
    readers cannot find is no record."""
    payload = record.model_dump_json(indent=2).encode()
    manifest, blobs = artifact(
        subject,
        mt.PROMOTION_RECORD,
        payload,
        title=f"{record.kind}-{record.stage}.json",
        annotations={DIGEST_ANNOTATION: record.digest, KIND_ANNOTATION: record.kind},
        created=record.finished_at,
    )
    problems = await push_referrer(client, repo, manifest, blobs)
    if problems:
        raise RegistryError(f"promotion record written but not listed: {problems[0]}")
    await _append_history(client, repo, manifest)
    return manifest.digest


async def _append_history(client: RegistryClient, repo: str, record: Manifest) -> None:
    entry = referrer_descriptor(record)
    for _ in range(4):  # optimistic: re-read after writing, in case another writer raced us
        doc = await index_doc(client, repo, HISTORY_TAG)
        if isinstance(doc, str):
            raise RegistryError(f"{repo}:{HISTORY_TAG} holds something else ({doc}); remove it")
        doc = doc or {"schemaVersion": 2, "mediaType": mt.OCI_INDEX, "manifests": []}
        if any(e.get("digest") == entry.digest for e in doc["manifests"] if isinstance(e, dict)):
            return
        doc["manifests"].append(entry.to_json())
        raw = json.dumps(doc, separators=(",", ":")).encode()
        await client.put_manifest(repo, HISTORY_TAG, Manifest(raw, mt.OCI_INDEX, digest_of(raw)))
    raise RegistryError(f"could not append to {repo}:{HISTORY_TAG}: it keeps changing; retry")


async def recorded(client: RegistryClient, repo: str, digest: str, stage: str) -> bool:
    """Whether `stage`'s record of `digest` is attached in `repo`. One that is attached but not
    in the history (a promotion cut short between the two writes) is appended to it now: call
    this under the repository's lock."""
    listing = await list_referrers(client, repo, digest)
    doc = await index_doc(client, repo, HISTORY_TAG)
    entries = doc["manifests"] if isinstance(doc, dict) else []
    listed = {e.get("digest") for e in entries if isinstance(e, dict)}
    for d in listing.descriptors:
        if d.artifact_type != mt.PROMOTION_RECORD:
            continue
        record = await _read(client, repo, d.digest, subject=digest)
        if record is None or not record.is_for(stage, repo):
            continue
        if d.digest not in listed:
            await _append_history(client, repo, await client.get_manifest(repo, d.digest))
        return True
    return False


async def history(client: RegistryClient, repo: str) -> list[PromotionRecord]:
    """Every record in the repository's history, oldest first."""
    doc = await index_doc(client, repo, HISTORY_TAG)
    if not isinstance(doc, dict):
        return []
    out = []
    for entry in doc["manifests"]:
        if isinstance(entry, dict) and isinstance(entry.get("digest"), str):
            record = await _read(client, repo, entry["digest"])
            if record is not None:
                out.append(record)
    return out


async def records_for(client: RegistryClient, repo: str, digest: str) -> list[PromotionRecord]:
    """The records attached to `digest` in `repo`, oldest first."""
    listing = await list_referrers(client, repo, digest)
    found = [
        r
        for d in listing.descriptors
        if d.artifact_type == mt.PROMOTION_RECORD
        and (r := await _read(client, repo, d.digest, subject=digest)) is not None
    ]
    return sorted(found, key=lambda r: r.finished_at)


async def read_record(
    client: RegistryClient, repo: str, digest: str, subject: str | None = None
) -> PromotionRecord | None:
    """The record whose own digest is `digest` (about `subject`, when given), or None."""
    return await _read(client, repo, digest, subject)


async def _read(
    client: RegistryClient, repo: str, digest: str, subject: str | None = None
) -> PromotionRecord | None:
    try:
        manifest = await client.get_manifest(repo, digest)
    except NotFound:
        return None
    if manifest.artifact_type != mt.PROMOTION_RECORD or manifest.subject is None:
        return None
    if subject is not None and manifest.subject.digest != subject:
        return None
    layers = [d for d in manifest.layers if d.media_type == mt.PROMOTION_RECORD]
    if len(layers) != 1 or layers[0].size > MAX_RECORD_BYTES:
        return None
    data = await client.read_blob(repo, layers[0])
    try:
        record = PromotionRecord.model_validate_json(data)
    except ValueError:
        return None
    return record if record.digest == manifest.subject.digest else None


def previous_digest(promoted: list[str], current: str | None) -> str | None:
    """The digest promoted before `current` was (last) promoted: repeated rollbacks keep going
    back, never forward to a release that was rolled away from."""
    if current in promoted:
        before = promoted[: len(promoted) - 1 - promoted[::-1].index(current)]
    else:
        before = promoted
    earlier = [d for d in before if d != current]
    return earlier[-1] if earlier else None
