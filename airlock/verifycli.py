"""`airlock verify REF --stage STAGE`: did the digest pass STAGE and every stage before it?

Offline but for the registry: each stage after the first must hold a PASSED VSA about the digest,
attached in that stage's repository and signed by the stage's `public_key` from pipeline.yaml
(gates/vsa.py). Exit 0 verified, 1 not (saying which stage and why), 2 bad input (a malformed
reference, a stage without public_key), 3 registry failure. No Prefect is imported: a deploy step
can run it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
from typing import TYPE_CHECKING, Any

from registry.errors import EXIT_REFUSED, BadInputError

if TYPE_CHECKING:  # loaded when the command runs, not by every `airlock` start
    from flows.config import Pipeline, Stage
    from gates import vsa
    from registry.client import RegistryClient


def add_parsers(sub: Any) -> None:
    p = sub.add_parser(
        "verify",
        help="check that a digest passed a stage (and every stage before it), by signed VSAs",
        description="Exit 0 when REF's digest holds, for STAGE and each stage before it (after"
        " the first), a PASSED SLSA VSA signed by that stage's public_key; 1 when not, saying"
        " which stage and why.",
    )
    p.add_argument("ref", metavar="REF", help="the image in any stage, by tag or digest")
    p.add_argument("--stage", required=True, help="the stage it must have passed")
    p.add_argument("--pipeline", metavar="FILE", help="pipeline.yaml (default $AIRLOCK_PIPELINE)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=cmd_verify)


def cmd_verify(args: argparse.Namespace) -> int:
    from flows.config import load

    pipeline = load(args.pipeline)
    target = pipeline.stage(args.stage)
    stages = pipeline.stages[1 : pipeline.stages.index(target) + 1]
    if not stages:
        raise BadInputError(f"{target.name} is the first stage: images arrive there by push")
    unkeyed = [s.name for s in stages if s.public_key is None]
    if unkeyed:
        raise BadInputError(
            f"stage {unkeyed[0]} has no public_key in the pipeline: nothing can be verified"
            " for it (give each stage after the first a public_key)"
        )
    digest, verdicts = asyncio.run(_verify(pipeline, args.ref, stages))
    ok = all(v.verified for v in verdicts)
    if args.json:
        print(json.dumps(_json(args.ref, digest, target.name, ok, verdicts), indent=2))
    else:
        for v in verdicts:
            print(f"{v.stage}: {'verified' if v.verified else 'NOT verified'}: {v.detail}")
        print(f"{digest}: {'verified' if ok else 'not verified'} for {target.name}")
    return 0 if ok else EXIT_REFUSED


async def _verify(
    pipeline: Pipeline, image: str, stages: list[Stage]
) -> tuple[str, list[vsa.Verdict]]:
    from gates import vsa
    from registry.reference import parse

    ref = parse(image)
    here, name = pipeline.locate(ref)
    opened: dict[str, RegistryClient] = {}
    try:
        for stage in [here, *stages]:
            if stage.registry not in opened:
                settings = pipeline.registries[stage.registry]
                opened[stage.registry] = settings.client(await settings.resolve_credentials())
        digest = (
            ref.digest
            or (await opened[here.registry].get_manifest(ref.repository, ref.reference)).digest
        )
        verdicts = await asyncio.gather(
            *(
                vsa.check(
                    opened[s.registry],
                    pipeline.reference(s, name).repository,
                    digest,
                    s.name,
                    pipeline.public_keys(s),
                )
                for s in stages
            )
        )
        return digest, list(verdicts)
    finally:
        for client in opened.values():
            await client.aclose()


def _json(
    image: str, digest: str, stage: str, ok: bool, verdicts: list[vsa.Verdict]
) -> dict[str, Any]:
    return {
        "image": image,
        "digest": digest,
        "stage": stage,
        "verified": ok,
        "stages": [
            {
                "stage": v.stage,
                "verified": v.verified,
                "detail": v.detail,
                "vsa": v.vsa,
                "time_verified": v.time_verified.isoformat() if v.time_verified else None,
            }
            for v in verdicts
        ],
    }
