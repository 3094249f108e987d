"""Releases: several images (or any OCI artifacts) that move through the stages as one (#16).

A release is an immutable, content-addressed set: an OCI index of artifact type
application/vnd.airlock.release.v1+json whose entries are exactly its members' descriptors, each
annotated with the member's repository and tag in the first stage (docs/releases.md).
It is pushed to the first stage's `releases/NAME` repository under the tag VERSION, after its
members are mounted there by digest (a registry holds an index only with its entries, and a
release should keep its members from garbage collection). Its digest is its identity: the index
carries no time, so creating the same release twice gives the same digest, and a VERSION that
names other members is refused — a release never changes.

Creating and reading a release needs no Prefect (the CLI runs this module directly).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError

from flows.config import Pipeline, Stage, validation_problem
from gates.yamlfile import read_mapping_and_bytes
from registry import mediatypes as mt
from registry.client import RegistryClient
from registry.copy import copy_image
from registry.errors import BadInputError, NotFound, RefusedError, UnsupportedContent
from registry.manifest import Descriptor, Manifest, digest_of
from registry.reference import Reference, is_path_component, is_tag, parse

REPOSITORY = "dev.airlock.release.repository"  # a member's repository in the first stage
TAG = "dev.airlock.release.tag"  # its tag there
NAME = "dev.airlock.release.name"  # on the index: the release's name and version
VERSION = "dev.airlock.release.version"
REVISION = "org.opencontainers.image.revision"  # the source commit, for same_revision
RELEASES = "releases/"  # a release's image name in the first stage: releases/NAME
MAX_MEMBERS = 100
MAX_CONFIG_BYTES = 1024 * 1024  # an image config read for its revision label


@dataclass(frozen=True)
class Member:
    name: str  # the image's name in the pipeline (api)
    repository: str  # in the first stage (dev/api)
    tag: str  # its tag there
    descriptor: Descriptor  # of its manifest

    @property
    def digest(self) -> str:
        return self.descriptor.digest


@dataclass(frozen=True)
class Release:
    name: str
    version: str
    members: tuple[Member, ...]
    where: Reference  # the index: first stage, releases/NAME:VERSION@digest

    @property
    def digest(self) -> str:
        assert self.where.digest is not None
        return self.where.digest


class Rules(BaseModel):
    """What the members must share, as Kargo's freight criteria say it."""

    model_config = ConfigDict(extra="forbid")
    same_tag: bool = False
    same_revision: bool = False  # org.opencontainers.image.revision (annotation or label)


class ReleaseFile(BaseModel):
    """release.yaml: `{name: shop, version: "1.0", members: [REF, ...], require: {...}}`."""

    model_config = ConfigDict(extra="forbid")
    name: str
    version: str
    members: list[str]
    require: Rules = Rules()


def read_file(path: str | Path) -> ReleaseFile:
    doc, _ = read_mapping_and_bytes(path, "release file")
    try:
        return ReleaseFile.model_validate(doc)
    except ValidationError as e:
        raise BadInputError(f"{path}: {validation_problem(e, doc, 'release')}") from None


def split_name(text: str) -> tuple[str, str]:
    """NAME:VERSION → (NAME, VERSION), both as a repository component and a tag allow."""
    name, sep, version = text.rpartition(":")
    if not sep or not is_path_component(name) or not is_tag(version):
        raise BadInputError(
            f"{text!r}: expected NAME:VERSION, e.g. shop:1.0 (NAME lowercase letters, digits"
            " and . _ -; VERSION a tag)"
        )
    return name, version


def release_reference(pipeline: Pipeline, name: str, version: str) -> Reference:
    """Where the release's index lives: the first stage's `releases/NAME`, tag VERSION."""
    return pipeline.reference(pipeline.stages[0], RELEASES + name).with_tag(version)


def is_release(name: str) -> bool:
    """Whether an image name of the pipeline is a release's (releases/NAME), not an image's."""
    return name.startswith(RELEASES)


# ---------------------------------------------------------------------------- creating one


async def create(
    pipeline: Pipeline,
    client: RegistryClient,
    name: str,
    version: str,
    refs: list[str],
    rules: Rules,
) -> Release:
    """Resolve every member in the first stage, check the rules, mount the members into the
    releases repository and push the index. Nothing is pushed when a rule is broken."""
    if not refs:
        raise BadInputError("a release needs at least one member (REF ...)")
    if len(refs) > MAX_MEMBERS:
        raise BadInputError(f"{len(refs)} members: at most {MAX_MEMBERS} per release")
    where = release_reference(pipeline, name, version)
    members = [await _member(pipeline, client, ref) for ref in refs]
    seen: dict[str, str] = {}
    for ref, m in zip(refs, members, strict=True):
        if m.repository in seen:
            raise BadInputError(
                f"{ref} and {seen[m.repository]} are both {m.repository}: a release holds one"
                " version of each image"
            )
        seen[m.repository] = ref
    await _check_rules(client, members, rules)

    raw = _index(name, version, members)
    digest = digest_of(raw)
    current = await client.head_manifest(where.repository, version)
    if current is not None and current.digest != digest:
        raise RefusedError(
            f"release {name}:{version} exists already as {current.digest}, with other members;"
            " a release never changes: create a new version"
        )
    for m in members:  # by digest, no tag moved; same registry: mounted, never streamed
        source = Reference(where.registry, m.repository, digest=m.digest)
        target = Reference(where.registry, where.repository, digest=m.digest)
        await copy_image(client, source, client, target, referrers=False)
    await client.put_manifest(where.repository, version, Manifest(raw, mt.OCI_INDEX, digest))
    return Release(name, version, tuple(members), where.with_digest(digest))


async def _member(pipeline: Pipeline, client: RegistryClient, text: str) -> Member:
    """A member named by tag in the first stage. With tag@digest, the tag must name that digest
    now: a tag claimed for another build would defeat same_tag."""
    ref = parse(text, default_tag=None)
    stage, name = pipeline.locate(ref)
    first = pipeline.stages[0]
    if stage is not first:
        raise BadInputError(
            f"{text} is in {stage.name}: a release is made of what was pushed to {first.name}"
        )
    if is_release(name):
        raise BadInputError(f"{text} is a release: a release's members are images or artifacts")
    if not ref.tag:
        raise BadInputError(f"{text}: name each member by its tag in {first.name} (e.g. :1.0)")
    try:
        manifest = await client.get_manifest(ref.repository, ref.tag)
    except NotFound:
        raise BadInputError(f"{text}: no such tag in {first.name}") from None
    if ref.digest and ref.digest != manifest.digest:
        raise BadInputError(
            f"{text}: {ref.tag} names {manifest.digest} now, not {ref.digest}; name the member"
            " by the tag that holds it"
        )
    return Member(name, ref.repository, ref.tag, manifest.descriptor)


async def _check_rules(client: RegistryClient, members: list[Member], rules: Rules) -> None:
    if rules.same_tag:
        _same("tag", {m.name: m.tag for m in members})
    if rules.same_revision:
        revisions = {m.name: await revision(client, m) for m in members}
        missing = [n for n, r in revisions.items() if r is None]
        if missing:
            raise RefusedError(
                f"same_revision: {', '.join(missing)} name no source revision ({REVISION},"
                " as an annotation or a label); nothing was pushed"
            )
        _same("revision", revisions)


def _same(what: str, values: dict[str, Any]) -> None:
    if len(set(values.values())) > 1:
        shown = ", ".join(f"{name} {value}" for name, value in values.items())
        raise RefusedError(
            f"same_{what}: the members' {what}s differ ({shown}); nothing was pushed"
        )


async def revision(client: RegistryClient, member: Member) -> str | None:
    """The source commit a member was built from: its manifest's annotation, else its image
    config's label; for an index, the one all its platforms agree on."""
    manifest = await client.get_manifest(member.repository, member.digest)
    return await _revision_of(client, member.repository, manifest)


async def _revision_of(client: RegistryClient, repo: str, manifest: Manifest) -> str | None:
    if manifest.annotations.get(REVISION):
        return manifest.annotations[REVISION]
    if manifest.is_index:
        children = [await client.get_manifest(repo, d.digest) for d in manifest.children()]
        found = {await _revision_of(client, repo, c) for c in children}
        return found.pop() if len(found) == 1 else None
    config = manifest.config
    if config is None or config.size > MAX_CONFIG_BYTES or "json" not in config.media_type:
        return None
    try:
        labels = json.loads(await client.read_blob(repo, config)).get("config", {}).get("Labels")
    except (ValueError, AttributeError):
        return None
    value = labels.get(REVISION) if isinstance(labels, dict) else None
    return value if isinstance(value, str) and value else None


def _index(name: str, version: str, members: list[Member]) -> bytes:
    entries = [
        {**m.descriptor.to_json(), "annotations": {REPOSITORY: m.repository, TAG: m.tag}}
        for m in members
    ]
    doc = {
        "schemaVersion": 2,
        "mediaType": mt.OCI_INDEX,
        "artifactType": mt.RELEASE,
        "manifests": entries,
        "annotations": {NAME: name, VERSION: version},
    }
    return json.dumps(doc, separators=(",", ":")).encode()


# ---------------------------------------------------------------------------- reading one


async def read(pipeline: Pipeline, client: RegistryClient, name: str, version: str) -> Release:
    """The release NAME:VERSION as pushed: refused unless it is a release index whose members
    are all in the first stage's repositories of the pipeline."""
    where = release_reference(pipeline, name, version)
    try:
        manifest = await client.get_manifest(where.repository, version)
    except NotFound:
        raise BadInputError(f"no release {name}:{version} ({where} does not exist)") from None
    return of_index(pipeline, where, manifest)


def of_index(pipeline: Pipeline, where: Reference, manifest: Manifest) -> Release:
    """The release a pushed index says it is (`where`: its releases/NAME:VERSION), refused
    unless it is a release index whose entries each name a repository of the first stage and a
    tag there. An index may have been pushed by hand: promoting it judges every member by its
    own gates, and at its first hop each member's tag must still name its digest
    (flows/release_hop.py)."""
    first = pipeline.stages[0]
    name = (first.name_in(where.repository) or "").removeprefix(RELEASES)
    version = where.tag or ""
    if not manifest.is_index or manifest.artifact_type != mt.RELEASE:
        raise UnsupportedContent(f"{where} is not an airlock release (artifactType {mt.RELEASE})")
    members = []
    for entry in manifest.children():
        notes = entry.annotations or {}
        repository, tag = notes.get(REPOSITORY), notes.get(TAG)
        member_name = first.name_in(repository) if isinstance(repository, str) else None
        if member_name is None or is_release(member_name) or not is_tag(tag):
            raise UnsupportedContent(
                f"{where}: entry {entry.digest} does not name a repository of {first.name} and"
                " its tag"
            )
        bare = Descriptor(entry.media_type, entry.digest, entry.size, entry.artifact_type)
        if any(m.repository == repository for m in members):
            raise UnsupportedContent(f"{where}: {repository} is in it twice")
        members.append(Member(member_name, repository, str(tag), bare))
    if not 0 < len(members) <= MAX_MEMBERS:
        raise UnsupportedContent(f"{where}: {len(members)} members (1 to {MAX_MEMBERS})")
    return Release(name, version, tuple(members), where.with_digest(manifest.digest))


async def holds(
    pipeline: Pipeline, client: RegistryClient, stage: Stage, release: Release
) -> list[str]:
    """The members whose digest is under their tag in `stage` (its tag rule applied)."""
    there = []
    for m in release.members:
        repo = pipeline.reference(stage, m.name).repository
        current = await client.head_manifest(repo, stage.tag_for(m.tag, m.digest))
        if current is not None and current.digest == m.digest:
            there.append(m.name)
    return there
