"""Where a hop lands, shared by a single promotion and a batch: the repository locks, the
copy-record-VSA step under them, and what the run shows (summary, stage board).

A hop lands only under its target repository's lock (a Prefect global concurrency limit of 1):
a repository's history and its referrers' fallback indexes are read-modify-write, and registries
offer no conditional writes. A batch takes the locks of all its repositories in one atomic
acquisition (Prefect grants several limits all or none), so batches cannot deadlock each other.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import json
import re
import ssl
import types
from collections.abc import AsyncIterator, Iterable, Sequence
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass
from typing import Any

from prefect import get_run_logger
from prefect.artifacts import Artifact, create_table_artifact
from prefect.concurrency.asyncio import concurrency
from prefect.runtime import flow_run

from flows.config import Pipeline, Stage
from flows.freeze import refuse_if_frozen, refuse_if_window_closed, wait_for_window
from flows.hops import Hop, PromotionRefused, clients
from flows.records import Approval, PromotionRecord, recorded, write_record
from gates import vsa
from gates.base import GateResult
from gates.keys import PrivateKey
from registry.client import RegistryClient
from registry.copy import copy_image
from registry.errors import AirlockError, RegistryError
from registry.http import lazy_default_context
from registry.manifest import Descriptor
from registry.reference import Reference
from registry.version import __version__

BOARD_KEY = "airlock-stage-board"
# How long a lock (a repository's, the board's) outlives a holder that died (a worker killed
# mid-promotion): Prefect renews the lease while the holder lives, and frees it this long after
# the renewals stop. Its default, 300 s, would stall the repository's promotions for five
# minutes; 60 s is the server's minimum.
LOCK_LEASE_SECONDS = 60.0


def lazy_prefect_tls() -> None:
    """Prefect builds an SSL context from certifi for every API client it opens — about four
    per flow run, ~55 ms each here — even when the API is plain HTTP on loopback. Its clients get
    the same context with the CA file read at the first TLS handshake instead. Idempotent."""
    import prefect.client.orchestration as orchestration

    if isinstance(orchestration.ssl, types.ModuleType):
        shim = types.SimpleNamespace(**vars(ssl))
        shim.create_default_context = lazy_default_context
        orchestration.ssl = shim  # type: ignore[assignment]


# ---------------------------------------------------------------------------- locks


def _limit_name(target: Reference) -> str:
    """A global concurrency limit per target repository (no '/' allowed in names).

    Per repository, not only per tag: two promotions into one repository — even under different
    tags — must not interleave their writes.
    """
    readable = re.sub(r"[^a-zA-Z0-9_-]+", "_", target.repository)[:60]
    return f"airlock-{readable}-{hashlib.sha256(target.name.encode()).hexdigest()[:10]}"


async def _ensure_limits(names: Iterable[str]) -> None:
    """Each limit exists, active, with one slot (an inactive limit admits everyone:
    serialisation would silently disappear). One read of all limits, then only the writes that
    are missing."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import (
        GlobalConcurrencyLimitCreate,
        GlobalConcurrencyLimitUpdate,
    )
    from prefect.exceptions import ObjectAlreadyExists, ObjectNotFound

    wanted = set(names)
    async with get_client() as client:
        found: list[Any] = []
        if len(wanted) == 1:
            with suppress(ObjectNotFound):
                found = [await client.read_global_concurrency_limit_by_name(next(iter(wanted)))]
        else:
            page = 200
            while batch := await client.read_global_concurrency_limits(page, len(found)):
                found += batch
                if len(batch) < page:
                    break
        known = {str(limit.name): limit for limit in found if limit.name in wanted}
        for name in sorted(wanted):
            limit = known.get(name)
            if limit is None:
                with suppress(ObjectAlreadyExists):  # another promotion created it meanwhile
                    await client.create_global_concurrency_limit(
                        GlobalConcurrencyLimitCreate(name=name, limit=1)
                    )
            elif not limit.active or limit.limit != 1:
                await client.update_global_concurrency_limit(
                    name, GlobalConcurrencyLimitUpdate(limit=1, active=True)
                )


@asynccontextmanager
async def repository_lock(*refs: Reference) -> AsyncIterator[None]:
    """Hold the repositories' limits: no promotion or rollback writes to them meanwhile (and a
    reader — drift-watch — never sees a tag moved before its record is written). Several are
    taken at once, all or none."""
    names = sorted({_limit_name(ref) for ref in refs})
    await _ensure_limits(names)
    async with concurrency(names, occupy=1, strict=True, lease_duration=LOCK_LEASE_SECONDS):
        yield


# ---------------------------------------------------------------------------- landing


@dataclass(frozen=True)
class Landed:
    record: PromotionRecord
    digest: str  # the record's


async def land(
    hop: Hop,
    src: RegistryClient,
    dst: RegistryClient,
    results: list[GateResult],
    approvals: list[Approval],
    requester: str | None,
    signer: PrivateKey | None,
    started: dt.datetime,
    *,
    copied: bool = False,
    part_of: str | None = None,
    members: Sequence[Hop] = (),
) -> Landed | None:
    """Under the target repository's lock (the caller holds it): copy the digest (unless it was
    `copied` by digest already, the stop switch and windows checked by the caller: a release's
    members, all at once), move the tag, write the record — `part_of` the release NAME:VERSION
    it was promoted in — and, where the stage signs, the VSA, which names every one of a
    release index's `members` as a subject too. None when the hop was done already."""
    logger = get_run_logger()
    stage = hop.stage
    current = await dst.head_manifest(hop.target.repository, hop.target.reference)
    if await done_before(dst, hop, current):
        return None
    refuse_immutable(hop, current)
    if not copied:
        await refuse_if_frozen(stage.name)  # again, under the lock: frozen since the gates ran?
        refuse_if_window_closed(stage)
        done = await copy_image(
            src, hop.source, dst, hop.target, no_clobber=stage.immutable, evidence_only=True
        )
        for warning in done.warnings:
            logger.warning("%s", warning)
    else:
        await move_tag(dst, hop)
    record = PromotionRecord(
        stage=stage.name,
        image=hop.name,
        digest=hop.digest,
        source=str(hop.source),
        target=str(hop.target.with_digest(hop.digest)),
        tags=[hop.target.tag or ""],
        release=hop.release,
        part_of=part_of,
        published=stage.published(hop.name, hop.target.tag),
        gates=results,
        approvals=approvals,
        requester=requester,
        policy=hop.pipeline.policy(stage),
        flow_run_id=flow_run.id,
        flow_run_url=flow_run.ui_url,
        airlock_version=__version__,
        started_at=started,
        finished_at=dt.datetime.now(dt.UTC),
    )
    subject = Descriptor(hop.manifest.media_type, hop.digest, len(hop.manifest.raw))
    record_digest = await write_record(dst, hop.target.repository, subject, record)
    if signer is not None:
        written = await vsa.write(
            dst,
            hop.target.repository,
            subject,
            hop.target.name,
            _vsa_predicate(hop, results, record_digest),
            signer,
            also=[(m.target.name, m.digest) for m in members],
        )
        logger.info("%s VSA signed by %s: %s", stage.name, signer.short_id, written.bundle)
    return Landed(record, record_digest)


async def put_back(
    pipeline: Pipeline,
    client: RegistryClient,
    stage: Stage,
    ref: Reference,
    name: str,
    digest: str,
    tag: str,
    requester: str | None,
    started: dt.datetime,
    part_of: str | None = None,
) -> str:
    """A rollback, under the repository's lock (the caller holds it): point `tag` at `digest`
    (in the repository already: it was promoted there) and record it."""
    source, target = ref.with_digest(digest), ref.with_tag(tag)
    await copy_image(client, source, client, target, evidence_only=True)
    manifest = await client.get_manifest(ref.repository, digest)
    record = PromotionRecord(
        kind="rollback",
        stage=stage.name,
        image=name,
        digest=digest,
        source=str(source),
        target=str(target.with_digest(digest)),
        tags=[tag],
        part_of=part_of,
        requester=requester,
        policy=pipeline.policy(stage),
        flow_run_id=flow_run.id,
        flow_run_url=flow_run.ui_url,
        airlock_version=__version__,
        started_at=started,
        finished_at=dt.datetime.now(dt.UTC),
    )
    subject = Descriptor(manifest.media_type, digest, len(manifest.raw))
    return await write_record(client, ref.repository, subject, record)


async def move_tag(dst: RegistryClient, hop: Hop) -> None:
    """Point the hop's target tag at its digest, which the target repository holds already
    (copied by digest), then read it back: it must name that digest."""
    repo, tag = hop.target.repository, hop.target.tag or hop.digest
    await dst.put_manifest(repo, tag, hop.manifest)
    landed = await dst.head_manifest(repo, tag)
    if landed is None or landed.digest != hop.digest:
        raise RegistryError(
            f"{hop.target} resolves to {landed.digest if landed else 'nothing'} after it was"
            f" pointed at {hop.digest}: another writer moved it"
        )


def _vsa_predicate(hop: Hop, results: list[GateResult], record_digest: str) -> dict[str, Any]:
    """What the stage verified, as a VSA: every piece of evidence its gates read and the
    promotion record (which holds the approvals), by digest."""
    policy = hop.pipeline.policy(hop.stage)
    target = hop.target.with_digest(hop.digest)
    inputs = [(e.source, e.digest) for r in results for e in r.evidence]
    inputs.append((f"{target.name}@{record_digest}", record_digest))
    return vsa.predicate(
        stage=hop.stage.name,
        resource_uri=str(target),
        policy_uri=f"file://{policy.file}#stages.{hop.stage.name}",
        policy_digest=f"sha256:{policy.sha256}",
        inputs=inputs,
        passed=True,
        version=__version__,
        verified_at=dt.datetime.now(dt.UTC),
    )


async def done_before(dst: RegistryClient, hop: Hop, current: Descriptor | None) -> bool:
    """Whether this hop was promoted already: the tag holds the digest *and* this stage's record
    of it exists (under the repository's lock: a record missing from the history is added).
    A tag moved by a promotion that failed before writing its record is not done: the hop runs
    again (its copy finds everything there) and writes the record."""
    if current is None or current.digest != hop.digest:
        return False
    if await recorded(dst, hop.target.repository, hop.digest, hop.stage.name) and (
        await _vsa_written(dst, hop)
    ):
        return True
    get_run_logger().warning(
        "%s holds %s but has no %s record of it (an earlier promotion failed after moving the"
        " tag): judging the gates again and writing the record",
        hop.target,
        hop.digest,
        hop.stage.name,
    )
    return False


async def _vsa_written(dst: RegistryClient, hop: Hop) -> bool:
    """Whether the stage's VSA is there, where the stage signs and names its public key (a hop
    whose VSA write failed after its record is not done: it runs again)."""
    trusted = hop.pipeline.public_keys(hop.stage)
    if hop.stage.signing_key is None or not trusted:
        return True
    repo = hop.target.repository
    return (await vsa.check(dst, repo, hop.digest, hop.stage.name, trusted)).verified


def refuse_immutable(hop: Hop, current: Descriptor | None) -> None:
    if current is not None and current.digest != hop.digest and hop.stage.immutable:
        raise PromotionRefused(
            f"{hop.stage.name}: {hop.target} already points at {current.digest} and the stage is"
            " immutable; tags there never move (promote under a new tag)"
        )


async def refuse_if_frozen_on_board(
    pipeline: Pipeline, opened: dict[str, RegistryClient], hop: Hop
) -> None:
    """The stop switch, before a hop's gates; a refusal is the hop's row on the stage board too."""
    try:
        await refuse_if_frozen(hop.stage.name)
    except PromotionRefused as e:
        await board(pipeline, opened, Event(hop, f"refused: {e}"))
        raise


async def wait_for_window_on_board(
    pipeline: Pipeline, opened: dict[str, RegistryClient], hop: Hop
) -> None:
    """The stage's windows (flows/freeze.py: wait_for_window); waiting, or a refusal, is the
    hop's row on the stage board too."""

    async def shown(status: str) -> None:
        await board(pipeline, opened, Event(hop, status))

    try:
        await wait_for_window(hop.stage, shown)
    except PromotionRefused as e:
        await shown(f"refused: {e}")
        raise


def gate_row(result: GateResult) -> dict[str, Any]:
    """A gate's row in a gate table (a hop's, a batch's): its outcome and the evidence read."""
    return {
        "gate": result.label,
        "passed": result.passed,
        "summary": result.summary,
        "evidence": ", ".join(e.source for e in result.evidence),
    }


def summary(hop: Hop, status: str, record: str | None) -> dict[str, Any]:
    return {
        "status": status,
        "stage": hop.stage.name,
        "image": hop.name,
        "digest": hop.digest,
        "source": str(hop.source),
        "target": str(hop.target.with_digest(hop.digest)),
        "record": record,
        "published": hop.stage.published(hop.name, hop.target.tag),
    }


# ---------------------------------------------------------------------------- the stage board


@dataclass(frozen=True)
class Event:
    """What happened to one hop, for its row on the stage board."""

    hop: Hop
    status: str
    approvals: tuple[Approval, ...] = ()


async def board(pipeline: Pipeline, opened: dict[str, RegistryClient], *events: Event) -> None:
    """The stage board (a stable artifact key): one row per image, release and stage — the
    digest really under the stage's tag, and for each event's stage what happened (promoted,
    waiting for approval, refused: why), when, who approved, and the run. Other rows are kept
    (a row of another stage keeps its story while its tag holds the same digest); the board is
    read-modify-write, so concurrent runs take turns, and a batch writes it once for all its
    hops. The run's clients (`opened`) are reused; a stage whose registry this process cannot
    read (no credentials here) shows "?"."""
    now = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    fresh = await asyncio.gather(*(_rows(pipeline, opened, e, now) for e in events))
    order = {s.name: i for i, s in enumerate(pipeline.stages)}
    await _ensure_limits([BOARD_KEY])
    async with concurrency(BOARD_KEY, occupy=1, strict=True, lease_duration=LOCK_LEASE_SECONDS):
        latest = await Artifact.aget(BOARD_KEY)
        try:
            rows = [r for r in (json.loads(latest.data) if latest else []) if _row_ok(r)]
        except (TypeError, ValueError, AttributeError):
            rows = []  # an unreadable board is rebuilt from these images on
        for rows_of_image in fresh:
            some = next(iter(rows_of_image.values()))
            key = (some["image"], some["release"])
            mine = {r["stage"]: r for r in rows if (r["image"], r.get("release", "")) == key}
            for name, row in rows_of_image.items():
                before = mine.get(name)
                if not row["status"] and before and before.get("digest") == row["digest"]:
                    rows_of_image[name] = {**row, **{k: before.get(k, "") for k in _STORY}}
            rows = [r for r in rows if (r["image"], r.get("release", "")) != key]
            rows += rows_of_image.values()
        await create_table_artifact(
            table=sorted(
                rows,
                key=lambda r: (str(r["image"]), str(r.get("release")), order.get(r["stage"], 99)),
            ),
            key=BOARD_KEY,
            description="Every image's release in every stage: the digest under the stage's tag,"
            " the last promotion's outcome, when, who approved, the run",
        )


async def _rows(
    pipeline: Pipeline, opened: dict[str, RegistryClient], event: Event, now: str
) -> dict[str, dict[str, str]]:
    """One image's rows, every stage's digest read now; the event's stage tells its story."""
    hop = event.hop
    release = hop.release or hop.target.tag or ""
    fresh = {}
    for stage in pipeline.stages:
        ref = pipeline.reference(stage, hop.name)
        tag = stage.tag_for(hop.release, hop.digest)
        try:
            if stage.registry in opened:
                current = await opened[stage.registry].head_manifest(ref.repository, tag)
            else:
                async with clients(pipeline, stage) as other:
                    current = await other[stage.registry].head_manifest(ref.repository, tag)
            digest = current.digest if current else "—"
        except AirlockError:
            digest = "?"
        fresh[stage.name] = {
            "image": hop.name,
            "release": release,
            "stage": stage.name,
            "tag": tag,
            "digest": digest,
            "status": "",
            "when": "",
            "approved by": "",
            "run": "",
        }
    fresh[hop.stage.name].update(
        {
            "status": event.status,
            "when": now,
            "approved by": ", ".join(a.shown for a in event.approvals),
            "run": flow_run.ui_url or "",
        }
    )
    return fresh


_STORY = ("status", "when", "approved by", "run")  # what a board row says of its last event


def _row_ok(row: Any) -> bool:
    return isinstance(row, dict) and {"image", "stage"} <= row.keys()
