"""Promotion speed against a running Prefect server (docs/benchmarks.md).

    uv run python bench/promote_bench.py [--images 50] [--runs 5] [--concurrency 8]

Starts a Debian docker-registry and a real `prefect server start` (SQLite, temporary
PREFECT_HOME) on loopback, then measures, in this process:
  1. one promote hop dev → qa with a tests gate and a scan gate and a same-registry copy, no
     approval wait (target ≤ 0.25 s wall) — median over --runs fresh images — and the registry
     requests of the last one (from the registry's log);
  2. the batch: --images images through two gated hops (dev → qa → staging) with the pipeline
     flow, against the loop people write instead — `skopeo copy` per image per hop, no gates —
     over as many other fresh images on the same registry, in the same run (target ≤ 1.0x).
Prints a markdown table. Timings are reported, never asserted.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from airlock.localregistry import LocalRegistry  # noqa: E402
from airlock.supervisor import PrefectServer, Supervisor  # noqa: E402
from bench.servers import arguments, workspace  # noqa: E402
from registry import mediatypes as mt  # noqa: E402
from registry.client import RegistryClient  # noqa: E402

FIXTURES = ROOT / "tests" / "fixtures"


def start_prefect(home: Path, sup: Supervisor) -> str:
    """`prefect server start` (no UI, SQLite in `home`), stopped by `sup`; returns its API URL."""
    server = PrefectServer(
        home, extra_env={"PREFECT_UI_ENABLED": "false"}, append=False, timeout=120
    )
    sup.adopt(server.start())
    return server.api


def pipeline_yaml(host: str) -> str:
    """dev → qa → staging on one registry, a tests gate and a scan gate on each hop."""
    stages = [{"name": "dev", "registry": "local", "repository": "dev/{name}"}] + [
        {
            "name": stage,
            "registry": "local",
            "repository": f"{stage}/{{name}}",
            "gates": [{"kind": "tests"}, {"kind": "scan"}],
        }
        for stage in ("qa", "staging")
    ]
    doc = {"registries": {"local": {"url": host}}, "stages": stages}
    return yaml.safe_dump(doc, sort_keys=False)


async def push_image(host: str, name: str, tag: str = "1.0") -> None:
    """A small image with passing test and scan reports bound to its digest."""
    from airlock.demo import push_with_evidence, sample_image

    manifest, blobs = sample_image(version=f"{name}-{tag}")
    report = (FIXTURES / "pytest-json-report" / "all-passed.report.json").read_bytes()
    scan = json.loads((FIXTURES / "trivy" / "sl-micro-rancher5.4-no-vulns.json").read_bytes())
    assert manifest.config is not None
    scan["Metadata"]["ImageID"] = manifest.config.digest
    reports = [(mt.TEST_REPORT_PYTEST, report), (mt.SCAN_REPORT_TRIVY, json.dumps(scan).encode())]
    async with RegistryClient(host) as client:
        await push_with_evidence(client, f"dev/{name}", manifest, blobs, reports, tag=tag)


def main() -> None:
    args = arguments(__doc__, images=50, runs=5, concurrency=8)

    with workspace("airlock-promote-bench-") as (work, registry, sup):
        url = start_prefect(work, sup)
        hop_times, requests, total = measure(work, registry, url, args)
        loop = skopeo_loop(registry, args.images)
    report(hop_times, requests, total, loop, args)


def skopeo_loop(registry: LocalRegistry, count: int) -> float:
    """What the pipeline replaces: `skopeo copy` per image per hop, one after another."""
    names = [f"sk{i}" for i in range(count)]
    for name in names:
        asyncio.run(push_image(registry.host, name))
    start = time.perf_counter()
    for name in names:
        for src, dst in (("dev", "qa"), ("qa", "staging")):
            subprocess.run(
                [
                    "skopeo", "copy", "--quiet", "--all", "--preserve-digests",
                    "--src-tls-verify=false", "--dest-tls-verify=false",
                    f"docker://{registry.host}/{src}/{name}:1.0",
                    f"docker://{registry.host}/{dst}/{name}:1.0",
                ],
                check=True,
            )  # fmt: skip
    return time.perf_counter() - start


def measure(
    work: Path, registry: LocalRegistry, url: str, args: argparse.Namespace
) -> tuple[list[float], Counter[str], float]:
    """The single hops (each timed; the last one's registry requests counted), then the batch
    through two hops (timed as a whole)."""
    os.environ.update(
        {
            "PREFECT_API_URL": url,
            "PREFECT_HOME": str(work),
            "DO_NOT_TRACK": "1",
            "PREFECT_LOGGING_LEVEL": "WARNING",
            "AIRLOCK_PIPELINE": str(work / "pipeline.yaml"),  # what the flows read
        }
    )
    pipe = work / "pipeline.yaml"
    pipe.write_text(pipeline_yaml(registry.host))
    from flows.promote import pipeline, promote

    names = [f"hop{i}" for i in range(args.runs + 1)]
    for name in names:
        asyncio.run(push_image(registry.host, name))
    hop_times = []
    for i, name in enumerate(names):
        seen = len(registry.request_log())
        start = time.perf_counter()
        asyncio.run(promote(f"{registry.host}/dev/{name}:1.0", "qa"))
        if i:  # the first run pays this process's one-off Prefect client set-up
            hop_times.append(time.perf_counter() - start)
    requests = Counter(r["method"] for r in registry.request_log()[seen:])

    batch = [f"img{i}" for i in range(args.images)]
    for name in batch:
        asyncio.run(push_image(registry.host, name))
    start = time.perf_counter()
    asyncio.run(
        pipeline(
            [f"{registry.host}/dev/{n}:1.0" for n in batch],
            until="staging",
            max_concurrency=args.concurrency,
        )
    )
    total = time.perf_counter() - start
    return hop_times, requests, total


def report(
    hop_times: list[float],
    requests: Counter[str],
    total: float,
    loop: float,
    args: argparse.Namespace,
) -> None:
    hop = statistics.median(hop_times)
    ratio = total / loop
    print("| scenario | time | target | met? |")
    print("|---|---|---|---|")
    print(
        f"| one hop dev→qa (tests + scan gates, same-registry copy), median of {len(hop_times)}"
        f" | {hop:.2f} s | ≤ 0.25 s | {'yes' if hop <= 0.25 else 'no'} |"
    )
    methods = ", ".join(f"{m} {n}" for m, n in requests.most_common())
    print(f"| … its registry requests | {requests.total()} ({methods}) | report | — |")
    print(
        f"| batch: {args.images} images x 2 gated hops, pipeline flow, concurrency"
        f" {args.concurrency} | {total:.2f} s | report | — |"
    )
    print(f"| batch: `skopeo copy` loop, same count, no gates | {loop:.2f} s | report | — |")
    met = "yes" if ratio <= 1 else "no"
    print(f"| batch: airlock / skopeo loop | {ratio:.2f}x | ≤ 1.0x | {met} |")
    print(f"| … airlock per image | {total / args.images:.3f} s | report | — |")


if __name__ == "__main__":
    main()
