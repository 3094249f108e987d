"""Promotion speed against a running Prefect server (issue #4, "Speed").

    uv run python bench/promote_bench.py [--images 20] [--runs 5]

Starts a Debian docker-registry and a real `prefect server start` (SQLite, temporary
PREFECT_HOME) on loopback, then measures, in this process:
  1. one promote hop dev → qa with a tests gate and a scan gate and a same-registry copy, no
     approval wait (target ≤ 2 s wall) — median over --runs fresh images;
  2. --images images through two hops (dev → qa → staging) with the pipeline flow at concurrency
     4: the total, and per image.
Prints a markdown table. Timings are reported, never asserted.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from airlock.localregistry import free_port, start_registry  # noqa: E402
from registry import mediatypes as mt  # noqa: E402
from registry.client import RegistryClient  # noqa: E402
from registry.manifest import Descriptor  # noqa: E402
from registry.referrers import artifact, push_referrer  # noqa: E402

FIXTURES = ROOT / "tests" / "fixtures"


def start_prefect(home: Path) -> tuple[subprocess.Popen, str]:
    port = free_port()
    env = {
        **os.environ,
        "PREFECT_HOME": str(home),
        "DO_NOT_TRACK": "1",
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_UI_ENABLED": "false",
    }
    log = (home / "server.log").open("wb")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "prefect",
            "server",
            "start",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--no-ui",
        ],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}/api"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            tail = (home / "server.log").read_text()[-2000:]
            raise RuntimeError(f"prefect server exited: {tail}")
        try:
            if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                return proc, url
        except httpx.TransportError:
            time.sleep(0.2)  # polling until the server listens
    raise RuntimeError("prefect server did not start in 120 s")


def pipeline_yaml(host: str) -> str:
    return f"""
registries:
  local: {{url: "{host}"}}
stages:
  - {{name: dev, registry: local, repository: "dev/{{name}}"}}
  - name: qa
    registry: local
    repository: "qa/{{name}}"
    gates: [{{kind: tests}}, {{kind: scan}}]
  - name: staging
    registry: local
    repository: "staging/{{name}}"
    gates: [{{kind: tests}}, {{kind: scan}}]
"""


async def push_image(host: str, name: str) -> None:
    """A small image with passing test and scan reports bound to its digest."""
    from airlock.demo import push, sample_image

    manifest, blobs = sample_image(version=name)
    async with RegistryClient(host) as client:
        await push(client, f"dev/{name}", "1.0", manifest, blobs)
        subject = Descriptor(manifest.media_type, manifest.digest, len(manifest.raw))
        report = (FIXTURES / "pytest-json-report" / "all-passed.report.json").read_bytes()
        scan = json.loads((FIXTURES / "trivy" / "sl-micro-rancher5.4-no-vulns.json").read_bytes())
        assert manifest.config is not None
        scan["Metadata"]["ImageID"] = manifest.config.digest
        for kind, data in (
            (mt.TEST_REPORT_PYTEST, report),
            (mt.SCAN_REPORT_TRIVY, json.dumps(scan).encode()),
        ):
            art, art_blobs = artifact(subject, kind, data)
            await push_referrer(client, f"dev/{name}", art, art_blobs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=20)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="airlock-promote-bench-"))
    registry = start_registry(work / "registry")
    server, url = start_prefect(work)
    os.environ.update(
        {
            "PREFECT_API_URL": url,
            "PREFECT_HOME": str(work),
            "DO_NOT_TRACK": "1",
            "PREFECT_LOGGING_LEVEL": "WARNING",
            "AIRLOCK_PIPELINE": str(work / "pipeline.yaml"),  # what the flows read
        }
    )
    try:
        pipe = work / "pipeline.yaml"
        pipe.write_text(pipeline_yaml(registry.host))
        from flows.promote import pipeline, promote

        names = [f"hop{i}" for i in range(args.runs + 1)]
        for name in names:
            asyncio.run(push_image(registry.host, name))
        hop_times = []
        for i, name in enumerate(names):
            start = time.perf_counter()
            asyncio.run(promote(f"{registry.host}/dev/{name}:1.0", "qa"))
            if i:  # the first run pays this process's one-off Prefect client set-up
                hop_times.append(time.perf_counter() - start)

        batch = [f"img{i}" for i in range(args.images)]
        for name in batch:
            asyncio.run(push_image(registry.host, name))
        start = time.perf_counter()
        asyncio.run(
            pipeline(
                [f"{registry.host}/dev/{n}:1.0" for n in batch],
                until="staging",
                max_concurrency=4,
            )
        )
        total = time.perf_counter() - start
    finally:
        server.terminate()
        server.wait(timeout=30)
        registry.stop()
        shutil.rmtree(work, ignore_errors=True)

    hop = statistics.median(hop_times)
    print("| scenario | time | target | met? |")
    print("|---|---|---|---|")
    print(
        f"| one hop dev→qa (tests + scan gates, same-registry copy), median of {len(hop_times)}"
        f" | {hop:.2f} s | ≤ 2 s | {'yes' if hop <= 2 else 'no'} |"
    )
    print(
        f"| {args.images} images x 2 hops, pipeline flow, concurrency 4: total | {total:.1f} s"
        " | report | — |"
    )
    print(f"| … per image | {total / args.images:.2f} s | report | — |")


if __name__ == "__main__":
    main()
