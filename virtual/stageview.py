"""A stage view: what a virtual repository with `require_stage: S` may serve from a member.

Only what airlock promoted into stage S: a manifest is served if its digest is named by one of
S's promotion (or rollback) records in the member repository's history (`airlock.history`) — and,
when the view has S's public key, holds a PASSED VSA of S signed by it (gates/vsa.py: a record
anyone who can push there could write, the VSA only S's key) — or is a platform manifest of such
an index; a blob, if such a manifest holds it. Evidence about a
served digest is served too — signatures, attestations, SBOMs, reports (registry/manifest.py:
travel_problem), found by their `subject`, by cosign's `sha256-<hex>.sig/.att/.sbom` tags and the
`sha256-<hex>` referrers fallback tag — with its blobs. Anything else in the repository (an image
pushed there by hand, or one smuggled in as a referrer before airlock refused to carry such
things) is answered as if it were not there.

What the history promotes is read once per history version (one HEAD of `airlock.history` per
request says whether it changed) and kept at most a minute, so evidence attached later is found.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from flows.records import HISTORY_TAG, history
from gates import vsa
from gates.keys import PublicKey
from registry import mediatypes as mt
from registry.client import RegistryClient
from registry.errors import NotFound
from registry.manifest import Manifest, fallback_tag, travel_problem
from registry.referrers import list_referrers

log = logging.getLogger(__name__)
MAX_AGE = 60.0  # seconds a view of one history version is kept
MAX_DEPTH = 4  # evidence about evidence about …: a signature of an attestation is two
_SUFFIXES = "|".join(re.escape(s) for s in mt.COSIGN_TAG_SUFFIXES)
_TAG_OF_SUBJECT = re.compile(rf"^sha256-([0-9a-f]{{64}})({_SUFFIXES})?$")


@dataclass
class _View:
    version: str | None  # the history's digest
    built: float
    manifests: set[str] = field(default_factory=set)  # promoted, and their platform manifests
    blobs: set[str] = field(default_factory=set)  # of those, and of evidence admitted so far
    evidence: set[str] = field(default_factory=set)  # evidence manifests admitted so far
    walked: bool = False  # the referrers of every promoted digest have been read


class StageView:
    """What stage `stage` holds in one member repository; one per (registry, repository)."""

    def __init__(
        self, client: RegistryClient, repo: str, stage: str, keys: Sequence[PublicKey] = ()
    ):
        self.client, self.repo, self.stage, self.keys = client, repo, stage, keys
        self._view: _View | None = None
        self._lock = asyncio.Lock()

    async def _current(self) -> _View:
        head = await self.client.head_manifest(self.repo, HISTORY_TAG)
        version = head.digest if head else None
        async with self._lock:
            view = self._view
            fresh = view is not None and time.monotonic() - view.built < MAX_AGE
            if view is None or view.version != version or not fresh:
                view = self._view = await self._build(version)
            return view

    async def _build(self, version: str | None) -> _View:
        view = _View(version, time.monotonic())
        if version is None:
            return view
        records = await history(self.client, self.repo)
        for digest in {r.digest for r in records if r.is_for(self.stage, self.repo)}:
            if self.keys and not await self._signed(digest):
                continue
            try:
                manifest = await self.client.get_manifest(self.repo, digest)
            except NotFound:
                continue  # deleted since: nothing to serve
            await self._hold(view, manifest)
        return view

    async def _signed(self, digest: str) -> bool:
        verdict = await vsa.check(self.client, self.repo, digest, self.stage, self.keys)
        if not verdict.verified:
            log.warning("%s@%s not served: %s", self.repo, digest, verdict.detail)
        return verdict.verified

    async def _hold(self, view: _View, manifest: Manifest) -> None:
        view.manifests.add(manifest.digest)
        view.blobs.update(d.digest for d in manifest.blobs())
        for child in manifest.children():
            await self._hold(view, await self.client.get_manifest(self.repo, child.digest))

    async def manifest(self, digest: str, tag: str | None) -> bool:
        """Whether the manifest `digest` (asked for under `tag`, if by tag) may be served."""
        return await self._manifest(await self._current(), digest, tag, 0)

    async def _manifest(self, view: _View, digest: str, tag: str | None, depth: int) -> bool:
        if digest in view.manifests or digest in view.evidence:
            return True
        if depth >= MAX_DEPTH:
            return False
        try:
            manifest = await self.client.get_manifest(self.repo, digest)
        except NotFound:
            return False  # e.g. evidence about a digest that is not here
        about = _TAG_OF_SUBJECT.match(tag or "")
        if about and not about.group(2) and manifest.is_index:
            subject = f"sha256:{about.group(1)}"  # the fallback tag: a listing, not content
        elif travel_problem(manifest) is not None:
            return False  # not evidence: a deliverable that was never promoted here
        elif about:
            subject = f"sha256:{about.group(1)}"  # cosign's tag names the subject
        elif manifest.subject is not None:
            subject = manifest.subject.digest
        else:
            return False
        if not await self._manifest(view, subject, None, depth + 1):
            return False
        view.evidence.add(digest)
        view.blobs.update(d.digest for d in manifest.blobs())
        return True

    async def blob(self, digest: str) -> bool:
        """Whether the blob may be served: part of a promoted image or of admitted evidence."""
        view = await self._current()
        if digest not in view.blobs and not view.walked:
            await self._walk(view)
        return digest in view.blobs

    async def _walk(self, view: _View) -> None:
        """Admit the evidence of every promoted digest (once per view): a blob may be asked for
        without its manifest having been asked of this process (another replica served it)."""
        view.walked = True
        for digest in list(view.manifests):
            listing = await list_referrers(self.client, self.repo, digest)
            for d in listing.descriptors:
                await self._quietly(view, d.digest, None)
            for suffix in mt.COSIGN_TAG_SUFFIXES:
                await self._quietly(view, None, fallback_tag(digest) + suffix)

    async def _quietly(self, view: _View, digest: str | None, tag: str | None) -> None:
        if digest is None:
            assert tag is not None
            found = await self.client.head_manifest(self.repo, tag)
            if found is None:
                return
            digest = found.digest
        await self._manifest(view, digest, tag, 0)
