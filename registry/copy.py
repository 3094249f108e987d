"""Digest-exact copies: plan (walk the source, look at the target), then execute.

The walk covers indexes and every child manifest, recursively, and — unless disabled — the
referrers of every manifest in the tree: the OCI referrers API where the source has it, else the
`sha256-<hex>` fallback-tag index, plus cosign's `sha256-<hex>.sig/.att/.sbom` tags. Referrers of
referrers travel too.

Execution order makes the tag the commit point: blobs first (mounted within one registry, streamed
across registries), then child manifests and referrers by digest, then the fallback indexes the
target needs, and the tag last. Finally the target is read back and must name the source digest.
Manifests are pushed as the exact bytes read, never re-serialised.
"""

from __future__ import annotations

import asyncio
import math
import os
import time
from collections.abc import AsyncIterator, Callable, Coroutine, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, Literal

from registry import mediatypes as mt
from registry.client import RegistryClient
from registry.errors import (
    BadInputError,
    NotFound,
    RefusedError,
    RegistryError,
    UnsupportedContent,
)
from registry.manifest import (
    Descriptor,
    Manifest,
    fallback_tag,
    referrer_descriptor,
    travel_problem,
)
from registry.reference import Reference
from registry.referrers import list_referrers, merge_fallback
from registry.retry import retrying

BlobAction = Literal["skip", "mount", "stream"]
MIN_RATE_ENV = "AIRLOCK_MIN_RATE_KIB"  # the slowest transfer allowed, KiB/s (TransferLimits)
Role = Literal["image", "child", "referrer", "cosign"]


@dataclass
class BlobStep:
    descriptor: Descriptor
    action: BlobAction


@dataclass
class ManifestStep:
    manifest: Manifest
    role: Role
    tag: str | None = None  # pushed under this tag (root, cosign); None = by digest
    exists: bool = False  # the target already holds this digest (under `tag`, if given)
    subject: str | None = None  # for referrers: the digest they refer to


@dataclass
class CopyPlan:
    source: Reference  # with the resolved digest
    target: Reference  # with the resolved digest
    same_registry: bool
    manifests: list[ManifestStep]  # push order; the root is last
    blobs: list[BlobStep]
    tag_conflict: str | None = None  # digest the target tag points at now, if another one
    fallback: dict[str, list[Descriptor]] = field(default_factory=dict)  # subject → referrers
    warnings: list[str] = field(default_factory=list)

    @property
    def digest(self) -> str:
        assert self.source.digest is not None
        return self.source.digest

    @property
    def root(self) -> ManifestStep:
        return self.manifests[-1]

    def count(self, action: BlobAction) -> int:
        return sum(1 for b in self.blobs if b.action == action)

    def bytes_to_stream(self) -> int:
        return sum(b.descriptor.size for b in self.blobs if b.action == "stream")

    def to_json(self) -> dict[str, Any]:
        return {
            "source": str(self.source),
            "target": str(self.target),
            "digest": self.digest,
            "same_registry": self.same_registry,
            "tag_conflict": self.tag_conflict,
            "blobs": [
                {"digest": b.descriptor.digest, "size": b.descriptor.size, "action": b.action}
                for b in self.blobs
            ],
            "manifests": [
                {
                    "digest": m.manifest.digest,
                    "media_type": m.manifest.media_type,
                    "role": m.role,
                    "tag": m.tag,
                    "action": "skip" if m.exists else "push",
                    **({"subject": m.subject} if m.subject else {}),
                    **(
                        {"artifact_type": m.manifest.artifact_type}
                        if m.manifest.artifact_type
                        else {}
                    ),
                }
                for m in self.manifests
            ],
            "fallback_tags": sorted(fallback_tag(s) for s in self.fallback),
            "warnings": self.warnings,
        }


@dataclass
class CopyResult:
    source: str
    target: str
    digest: str
    blobs_mounted: int = 0
    blobs_streamed: int = 0
    blobs_skipped: int = 0
    bytes_streamed: int = 0
    manifests_pushed: int = 0
    referrers_copied: int = 0
    tag_moved: bool = False
    seconds: float = 0.0
    warnings: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}

    def summary(self) -> str:
        return (
            f"{self.blobs_mounted} blobs mounted, {self.blobs_streamed} streamed"
            f" ({human_size(self.bytes_streamed)}), {self.blobs_skipped} already there,"
            f" {self.manifests_pushed} manifests pushed, {self.referrers_copied} referrers copied"
            f" in {self.seconds:.2f} s"
        )


def human_size(n: int) -> str:
    """1536 → '1.5 KiB'."""
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} B"


def resolve_target(source: Reference, target: Reference) -> Reference:
    """A target without tag or digest takes the source's tag (none if copying by digest)."""
    if target.tag is None and target.digest is None and source.tag:
        return target.with_tag(source.tag)
    return target


# ---------------------------------------------------------------------------- planning


class _Planner:
    def __init__(
        self,
        src: RegistryClient,
        src_repo: str,
        dst: RegistryClient,
        dst_repo: str,
        referrers: bool,
        evidence_only: bool = False,
    ):
        self.src, self.src_repo, self.dst, self.dst_repo = src, src_repo, dst, dst_repo
        self.with_referrers = referrers
        self.evidence_only = evidence_only
        self.same_registry = src.registry == dst.registry
        self.blobs: dict[str, BlobStep] = {}
        self.seen: set[str] = set()
        self.referrer_edges: dict[str, list[Descriptor]] = {}
        self.warnings: list[str] = []

    async def add_blobs(self, manifest: Manifest) -> None:
        new = [d for d in manifest.blobs() if d.digest not in self.blobs]
        for d in new:
            self.blobs[d.digest] = BlobStep(d, "mount" if self.same_registry else "stream")
        if not self.same_registry:
            sizes = await asyncio.gather(
                *(self.dst.blob_size(self.dst_repo, d.digest) for d in new)
            )
            for d, size in zip(new, sizes, strict=True):
                if size is not None:
                    self.blobs[d.digest].action = "skip"

    async def visit(
        self,
        manifest: Manifest,
        role: Role,
        *,
        tag: str | None = None,
        exists: bool | None = None,
        subject: str | None = None,
    ) -> list[ManifestStep]:
        """Plan `manifest` and everything below it, in push order (children first).

        Siblings are planned concurrently; the root's own step comes after its referrers, so the
        tag moves last.
        """
        if manifest.digest in self.seen:
            # Walked already (or a cycle of cosign tags): only a tag may still need pushing.
            return [ManifestStep(manifest, role, tag=tag, exists=bool(exists))] if tag else []
        self.seen.add(manifest.digest)
        if exists is None:
            exists = await self._exists(manifest.digest, tag)
        children = await asyncio.gather(*(self._child(manifest, d) for d in manifest.children()))
        # A manifest the target holds implies its children are there (registries check).
        below = await asyncio.gather(
            *(self.visit(c, "child", exists=True if exists else None) for c in children)
        )
        if not exists and not manifest.is_index:
            await self.add_blobs(manifest)
        step = ManifestStep(manifest, role, tag=tag, exists=exists, subject=subject)
        referrers = await self.visit_referrers(manifest.digest) if self.with_referrers else []
        steps = [s for group in below for s in group]
        return [*steps, *referrers, step] if role == "image" else [*steps, step, *referrers]

    async def _exists(self, digest: str, tag: str | None) -> bool:
        desc = await self.dst.head_manifest(self.dst_repo, tag or digest)
        return desc is not None and desc.digest == digest

    async def _child(self, parent: Manifest, desc: Descriptor) -> Manifest:
        child = await self.src.get_manifest(self.src_repo, desc.digest)
        if child.media_type != desc.media_type:
            raise UnsupportedContent(
                f"{self.src.registry}/{self.src_repo}@{parent.digest}: entry {desc.digest} says"
                f" {desc.media_type} but the manifest is {child.media_type}"
            )
        return child

    async def visit_referrers(self, digest: str) -> list[ManifestStep]:
        found, *cosign = await asyncio.gather(
            self._source_referrers(digest),
            *(self._cosign(fallback_tag(digest) + suffix) for suffix in mt.COSIGN_TAG_SUFFIXES),
        )
        if found:
            self.referrer_edges.setdefault(digest, []).extend(map(referrer_descriptor, found))
        groups = await asyncio.gather(
            *(self.visit(m, "referrer", subject=digest) for m in found),
            *(
                self.visit(m, "cosign", tag=m_tag, exists=ex)
                for m, m_tag, ex in filter(None, cosign)
            ),
        )
        return [s for group in groups for s in group]

    async def _cosign(self, tag: str) -> tuple[Manifest, str, bool] | None:
        """The manifest under a cosign tag, and whether the target has it under that tag."""
        if await self.src.head_manifest(self.src_repo, tag) is None:
            return None
        manifest, current = await asyncio.gather(
            self.src.get_manifest(self.src_repo, tag), self.dst.head_manifest(self.dst_repo, tag)
        )
        if self._stays(manifest, f"{manifest.digest} under the tag {tag}"):
            return None
        return manifest, tag, current is not None and current.digest == manifest.digest

    def _stays(self, manifest: Manifest, what: str) -> bool:
        """With `evidence_only` (a promotion), whether this referrer stays behind — with a
        warning, unless it is one of airlock's records (which never travel, by design)."""
        problem = travel_problem(manifest) if self.evidence_only else None
        record = referrer_descriptor(manifest).artifact_type == mt.PROMOTION_RECORD
        if problem and not record:
            self.warnings.append(f"referrer {what} not copied: {problem}")
        return problem is not None

    async def _source_referrers(self, digest: str) -> list[Manifest]:
        listing = await list_referrers(self.src, self.src_repo, digest)
        self.warnings.extend(f"referrer of {digest} skipped: {p}" for p in listing.problems)
        wanted = [d for d in listing.descriptors if d.digest not in self.seen and d.is_manifest]
        fetched = await asyncio.gather(*(self._referrer(digest, d) for d in wanted))
        return [m for m in fetched if m is not None]

    async def _referrer(self, subject: str, desc: Descriptor) -> Manifest | None:
        """A listed referrer's manifest, or None (with a warning) if it is gone or not about
        `subject`: the listing is a hint, the manifest's own `subject` field is the truth."""
        try:
            manifest = await self.src.get_manifest(self.src_repo, desc.digest)
        except NotFound:
            self.warnings.append(
                f"referrer {desc.digest} of {subject} is listed but missing; skipped"
            )
            return None
        if manifest.subject is None or manifest.subject.digest != subject:
            self.warnings.append(
                f"referrer {desc.digest} is listed for {subject} but names another subject; skipped"
            )
            return None
        if self._stays(manifest, f"{desc.digest} of {subject}"):
            return None
        return manifest


async def plan_copy(
    src: RegistryClient,
    source: Reference,
    dst: RegistryClient,
    target: Reference,
    *,
    referrers: bool = True,
    evidence_only: bool = False,
) -> CopyPlan:
    """Walk the source and look at the target; write nothing. With `evidence_only` (promotions),
    only referrers that are evidence about the image travel (registry/manifest.py:
    travel_problem); the others stay behind with a warning."""
    target = resolve_target(source, target)
    dst.auth.want(target.repository, "pull", "push")
    # The target tag is looked at while the source is read (one round trip less); by digest the
    # target can only be checked once the source digest is known.
    root, current = await asyncio.gather(
        src.get_manifest(source.repository, source.reference),
        dst.head_manifest(target.repository, target.tag) if target.tag else _none(),
    )
    if target.digest and target.digest != root.digest:
        raise BadInputError(
            f"target {target} names digest {target.digest} but the source is {root.digest};"
            " drop the digest from the target or fix it"
        )
    planner = _Planner(src, source.repository, dst, target.repository, referrers, evidence_only)
    if not target.tag:
        current = await dst.head_manifest(target.repository, root.digest)
    conflict = current.digest if current is not None and current.digest != root.digest else None
    steps = await planner.visit(
        root, "image", tag=target.tag, exists=current is not None and conflict is None
    )
    plan = CopyPlan(
        source=source.with_digest(root.digest),
        target=target.with_digest(root.digest),
        same_registry=planner.same_registry,
        manifests=steps,
        blobs=list(planner.blobs.values()),
        tag_conflict=conflict,
        warnings=planner.warnings,
    )
    if planner.referrer_edges and await dst.get_referrers(target.repository, root.digest) is None:
        plan.fallback = planner.referrer_edges
    return plan


# ---------------------------------------------------------------------------- execution


async def _none() -> None:
    return None


@dataclass(frozen=True, slots=True)
class TransferLimits:
    """How slow a copy may be before it is stopped. Per-read timeouts cannot catch a source that
    drips a byte a second, which would hold a copy — and a promotion's repository lock — for
    ever. A blob gets `blob_allowance` + its size at `min_rate` (all its attempts together); a
    whole copy `copy_allowance` + the bytes it streams at `min_rate`, up to moving the tag, which
    is never cut off midway."""

    min_rate: float = 64 * 1024  # bytes/s: 1 GiB may take 4.6 h, 6 blobs at once at ~3 Mbit/s
    blob_allowance: float = 60.0  # s: connections, retries and the registry's own work per blob
    copy_allowance: float = 600.0  # s: the walk, mounts and manifests of a 1,000-child index

    @classmethod
    def from_env(cls) -> TransferLimits:
        """The defaults, with min_rate from AIRLOCK_MIN_RATE_KIB (KiB/s) when it is set."""
        text = os.environ.get(MIN_RATE_ENV, "").strip()
        if not text:
            return cls()
        try:
            kib = float(text)
        except ValueError:
            kib = 0.0
        if not (math.isfinite(kib) and kib > 0):
            raise BadInputError(
                f"{MIN_RATE_ENV}={text!r}: expected a positive number of KiB/s, e.g. 64"
            )
        return cls(min_rate=kib * 1024)

    def blob_seconds(self, size: int) -> float:
        return self.blob_allowance + size / self.min_rate

    @property
    def rate(self) -> str:
        return f"{self.min_rate / 1024:g} KiB/s"


async def copy_image(
    src: RegistryClient,
    source: Reference,
    dst: RegistryClient,
    target: Reference,
    *,
    referrers: bool = True,
    evidence_only: bool = False,
    no_clobber: bool = False,
    concurrency: int = 6,
    on_plan: Callable[[CopyPlan], None] | None = None,
    on_bytes: Callable[[int], None] | None = None,
    limits: TransferLimits | None = None,
) -> CopyResult:
    """Plan and copy within the copy's deadline (see TransferLimits), then move the tag."""
    limits = limits or TransferLimits.from_env()
    started = time.monotonic()
    streamed = 0  # bytes the plan streams, once known

    def too_slow(seconds: float) -> RegistryError:
        return RegistryError(
            f"copy {source} to {target} did not finish within its deadline of"
            f" {_seconds(seconds)} ({_seconds(limits.copy_allowance)} plus"
            f" {human_size(streamed)} streamed at {limits.rate}, the slowest transfer allowed):"
            f" a registry is too slow or stalled; the tag was not moved — retry, or set"
            f" {MIN_RATE_ENV} lower for a slow link"
        )

    async with _deadline(limits.copy_allowance, too_slow) as deadline:
        await reach(src, dst)
        plan = await plan_copy(
            src, source, dst, target, referrers=referrers, evidence_only=evidence_only
        )
        if no_clobber:
            _refuse_clobber(plan)
        if on_plan:
            on_plan(plan)
        streamed = plan.bytes_to_stream()
        deadline.reschedule(_when(deadline) + streamed / limits.min_rate)
        result = await _transfer(plan, src, dst, concurrency, on_bytes, limits)
    await _commit(plan, dst, result)
    result.seconds = round(time.monotonic() - started, 3)
    return result


async def reach(*clients: RegistryClient) -> None:
    """Ping the registries at once; the first that fails (not a registry, unreachable) stops the
    others here and now, rather than leaving their connections half made when the loop ends."""

    async def ping(client: RegistryClient) -> None:
        await client.base_url()

    await _all(ping(client) for client in {id(c): c for c in clients}.values())


@asynccontextmanager
async def _deadline(
    seconds: float, too_slow: Callable[[float], RegistryError]
) -> AsyncIterator[asyncio.Timeout]:
    """Run the body for at most `seconds` (the Timeout yielded may move that); past it, raise
    too_slow(the seconds it had) instead of TimeoutError."""
    start = asyncio.get_running_loop().time()
    scope = asyncio.timeout(seconds)
    try:
        async with scope:
            yield scope
    except TimeoutError:
        if not scope.expired():
            raise
        raise too_slow(_when(scope) - start) from None


def _when(scope: asyncio.Timeout) -> float:
    when = scope.when()
    assert when is not None  # every deadline here is set when it is made
    return when


def _seconds(seconds: float) -> str:
    return f"{seconds:.3g} s" if seconds < 100 else f"{seconds:,.0f} s"


def _refuse_clobber(plan: CopyPlan) -> None:
    if plan.tag_conflict:
        raise RefusedError(
            f"{plan.target.name}:{plan.target.tag} already points at {plan.tag_conflict}, not"
            f" {plan.digest}; --no-clobber leaves it as it is (drop the flag to move the tag)"
        )


async def execute(
    plan: CopyPlan,
    src: RegistryClient,
    dst: RegistryClient,
    *,
    concurrency: int = 6,
    on_bytes: Callable[[int], None] | None = None,
    limits: TransferLimits | None = None,
) -> CopyResult:
    """Carry out a plan: blobs (each within its deadline), manifests and referrers by digest,
    fallback indexes, and the tag last."""
    limits = limits or TransferLimits.from_env()
    result = await _transfer(plan, src, dst, concurrency, on_bytes, limits)
    await _commit(plan, dst, result)
    return result


async def _transfer(
    plan: CopyPlan,
    src: RegistryClient,
    dst: RegistryClient,
    concurrency: int,
    on_bytes: Callable[[int], None] | None,
    limits: TransferLimits,
) -> CopyResult:
    """Everything but the tag: blobs, manifests and referrers by digest, fallback indexes."""
    src_repo, dst_repo = plan.source.repository, plan.target.repository
    result = CopyResult(
        str(plan.source), str(plan.target), plan.digest, warnings=list(plan.warnings)
    )
    result.blobs_skipped = plan.count("skip")
    if src is dst:
        # One pool serves both ends: each streamed blob holds a GET and a PUT connection.
        concurrency = max(1, min(concurrency, (dst.max_connections - 2) // 2))
    limit = asyncio.Semaphore(concurrency)
    mounts_refused = False  # these credentials may not mount from the source: stop asking

    def too_slow(desc: Descriptor) -> Callable[[float], RegistryError]:
        return lambda seconds: RegistryError(
            f"blob {desc.digest} ({human_size(desc.size)}) was not copied from"
            f" {src.registry}/{src_repo} within its deadline of {_seconds(seconds)}"
            f" ({_seconds(limits.blob_allowance)} plus its size at {limits.rate}, the slowest"
            f" transfer allowed): the source or target is too slow or stalled; the tag was not"
            f" moved — retry, or set {MIN_RATE_ENV} lower for a slow link"
        )

    async def one_blob(step: BlobStep) -> None:
        nonlocal mounts_refused
        desc = step.descriptor
        async with limit, _deadline(limits.blob_seconds(desc.size), too_slow(desc)):
            location = None
            if step.action == "mount" and not mounts_refused:
                mount = await dst.mount_blob(dst_repo, desc.digest, src_repo)
                if mount.mounted:
                    result.blobs_mounted += 1
                    return
                location = mount.location  # 202: the registry opened a session; use it
                mounts_refused = location is None
            elif step.action == "skip":
                return
            await _stream_blob(src, src_repo, dst, dst_repo, desc, location, on_bytes)
            result.blobs_streamed += 1
            result.bytes_streamed += desc.size

    await _all(one_blob(step) for step in plan.blobs)

    root = plan.root
    fallback = dict(plan.fallback)
    for step in plan.manifests:
        if step is root or step.exists:
            continue
        headers = await dst.put_manifest(dst_repo, step.tag or step.manifest.digest, step.manifest)
        result.manifests_pushed += 1
        if step.role in ("referrer", "cosign"):
            result.referrers_copied += 1
        if step.subject and headers.get("oci-subject"):
            fallback.pop(step.subject, None)  # the target indexed it itself

    for subject, descriptors in fallback.items():
        result.warnings.extend(await merge_fallback(dst, dst_repo, subject, descriptors))
    return result


async def _commit(plan: CopyPlan, dst: RegistryClient, result: CopyResult) -> None:
    """Move the tag (push the root), then read it back: it must name the source digest."""
    root, dst_repo = plan.root, plan.target.repository
    ref = root.tag or plan.digest
    if not root.exists:
        await dst.put_manifest(dst_repo, ref, root.manifest)
        result.manifests_pushed += 1
        result.tag_moved = root.tag is not None
    landed = await dst.head_manifest(dst_repo, ref)
    if landed is None or landed.digest != plan.digest:
        raise RegistryError(
            f"after the copy {plan.target.name}:{ref} resolves to"
            f" {landed.digest if landed else 'nothing'}, not {plan.digest}; another writer moved"
            " it, or the registry rewrote the manifest — check before relying on it"
        )


async def _all(coroutines: Iterable[Coroutine[Any, Any, None]]) -> None:
    """Run concurrently; on the first failure cancel the rest and raise that failure itself."""
    try:
        async with asyncio.TaskGroup() as group:
            for coroutine in coroutines:
                group.create_task(coroutine)
    except BaseExceptionGroup as group_error:
        raise _first_leaf(group_error) from None


def _first_leaf(error: BaseException) -> BaseException:
    while isinstance(error, BaseExceptionGroup):
        error = error.exceptions[0]
    return error


async def _stream_blob(
    src: RegistryClient,
    src_repo: str,
    dst: RegistryClient,
    dst_repo: str,
    desc: Descriptor,
    location: str | None,
    on_bytes: Callable[[int], None] | None,
) -> None:
    """GET from the source and PUT to the target, retrying the whole blob on failure.

    A broken stream, a digest mismatch, a refused upload PUT and an expired session are
    temporary (registry/errors.py), worth another full attempt; the GET had its own retries."""

    async def attempt() -> None:
        nonlocal location
        sent = 0

        async def counted(it: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
            nonlocal sent
            async for chunk in it:
                sent += len(chunk)
                if on_bytes:
                    on_bytes(len(chunk))
                yield chunk

        try:
            async with src.open_blob(src_repo, desc) as chunks:
                await dst.upload_blob(dst_repo, desc, counted(chunks), location=location)
        except RegistryError:  # DigestMismatch included
            if location:  # a session from a declined mount that the failure left open
                await dst.cancel_upload(location)
                location = None
            if on_bytes and sent:
                on_bytes(-sent)
            raise

    await retrying(dst.retry, attempt)
