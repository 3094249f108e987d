"""`airlock release create|show`: releases, several images promoted as one (flows/releases.py).

`create NAME:VERSION REF...` (or `--file release.yaml`) prints the release's digest alone on the
first line of stdout: CI captures it. Exit 1 when a creation rule is broken or VERSION exists
with other members (nothing pushed), 2 for bad input, 3 for a registry failure. No Prefect is
imported.
"""

from __future__ import annotations

import argparse
import asyncio
import json
from typing import TYPE_CHECKING, Any

from registry.errors import AirlockError, BadInputError

if TYPE_CHECKING:
    from flows.config import Pipeline
    from flows.releases import Release


def add_parsers(sub: Any) -> None:
    p = sub.add_parser(
        "release",
        help="releases: several images (and artifacts) promoted as one",
        description="Create a release — an immutable, content-addressed set of images in the"
        " first stage — or show one and where it is.",
    )
    action = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    c = action.add_parser(
        "create",
        help="resolve the members in the first stage and push the release index",
        description="Resolve every member to its digest in the first stage, check the rules,"
        " and push an OCI index of artifact type application/vnd.airlock.release.v1+json to the"
        " first stage's releases/NAME:VERSION. Prints the release digest on the first line.",
    )
    c.add_argument("release", metavar="NAME:VERSION", nargs="?", help="e.g. shop:1.0")
    c.add_argument("refs", metavar="REF", nargs="*", help="members by tag in the first stage")
    c.add_argument("--file", metavar="FILE", help="release.yaml: name, version, members, require")
    c.add_argument("--same-tag", action="store_true", help="refuse unless all tags are equal")
    c.add_argument(
        "--same-revision",
        action="store_true",
        help="refuse unless all members name the same org.opencontainers.image.revision",
    )
    c.add_argument("--pipeline", metavar="FILE", help="pipeline.yaml (default $AIRLOCK_PIPELINE)")
    c.add_argument("--json", action="store_true", help="print one JSON object")
    c.set_defaults(func=cmd_create)
    s = action.add_parser(
        "show",
        help="a release's members and the stages that hold all of them",
        description="Print the members of NAME:VERSION (name, digest) and, per stage, which of"
        " them are under their tag there: all, some (named) or none.",
    )
    s.add_argument("release", metavar="NAME:VERSION")
    s.add_argument("--pipeline", metavar="FILE", help="pipeline.yaml (default $AIRLOCK_PIPELINE)")
    s.add_argument("--json", action="store_true", help="print one JSON object")
    s.set_defaults(func=cmd_show)


def cmd_create(args: argparse.Namespace) -> int:
    from flows import releases
    from flows.config import load
    from flows.hops import clients

    if args.file:
        if args.release or args.refs:
            raise BadInputError("give the members either on the command line or in --file")
        given = releases.read_file(args.file)
        name, version = releases.split_name(f"{given.name}:{given.version}")
        refs, required = given.members, given.require
    elif args.release:
        name, version = releases.split_name(args.release)
        refs, required = args.refs, releases.Rules()
    else:
        raise BadInputError("name the release (NAME:VERSION) and its members, or --file")
    rules = releases.Rules(  # the file's rules, and the flags' on top
        same_tag=required.same_tag or args.same_tag,
        same_revision=required.same_revision or args.same_revision,
    )
    pipeline = load(args.pipeline)

    async def run() -> Release:
        first = pipeline.stages[0]
        async with clients(pipeline, first) as opened:
            return await releases.create(
                pipeline, opened[first.registry], name, version, refs, rules
            )

    release = asyncio.run(run())
    if args.json:
        print(json.dumps(_json(release), indent=2))
        return 0
    print(release.digest)
    print(f"{release.where.name}:{version}: {len(release.members)} members")
    for m in release.members:
        print(f"  {m.name:<20} {m.repository}:{m.tag}@{m.digest}")
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    from flows import releases
    from flows.config import load

    name, version = releases.split_name(args.release)
    pipeline = load(args.pipeline)
    release, where = asyncio.run(_show(pipeline, name, version))
    if args.json:
        print(json.dumps({**_json(release), "stages": where}, indent=2))
        return 0
    print(f"{release.where.name}:{version}@{release.digest}")
    for m in release.members:
        print(f"  {m.name:<20} {m.digest}  ({m.repository}:{m.tag})")
    for stage, held in where.items():
        if held is None:
            shown = "? (no credentials for its registry here)"
        elif len(held) == len(release.members):
            shown = f"all {len(held)} members"
        else:
            n = len(release.members)
            shown = f"{', '.join(held)} ({len(held)} of {n} members)" if held else "none"
        print(f"{stage}: {shown}")
    return 0


async def _show(
    pipeline: Pipeline, name: str, version: str
) -> tuple[Release, dict[str, list[str] | None]]:
    from flows import releases
    from flows.hops import clients

    async with clients(pipeline, *pipeline.stages) as opened:
        first = pipeline.stages[0]
        release = await releases.read(pipeline, opened[first.registry], name, version)
        where: dict[str, list[str] | None] = {}
        for stage in pipeline.stages:
            try:
                where[stage.name] = await releases.holds(
                    pipeline, opened[stage.registry], stage, release
                )
            except AirlockError:  # a stage's registry that cannot be read from here
                where[stage.name] = None
        return release, where


def _json(release: Release) -> dict[str, Any]:
    return {
        "release": f"{release.name}:{release.version}",
        "digest": release.digest,
        "reference": str(release.where),
        "members": [
            {
                "name": m.name,
                "repository": m.repository,
                "tag": m.tag,
                "digest": m.digest,
                "media_type": m.descriptor.media_type,
            }
            for m in release.members
        ],
    }
