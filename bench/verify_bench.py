"""Benchmark `airlock verify` as a deploy step runs it (docs/benchmarks.md): the whole process,
four stages (dev → qa → staging → prod, each after dev with its key and a signed VSA attached),
on loopback — against `skopeo inspect` of the same image in the same run, for scale.

Prints a markdown table and where the start-up time goes (-X importtime). Nothing is asserted.
Usage: uv run python bench/verify_bench.py [--runs N]
"""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.copy_bench import Pusher
from bench.servers import arguments, workspace
from gates import vsa
from gates.keys import generate, load_private_key
from registry.client import RegistryClient

TARGET_S = 0.5
AIRLOCK = str(Path(sys.executable).parent / "airlock")
STAGES = ("dev", "qa", "staging", "prod")


def timed(command: list[str], env: dict[str, str], expect: int = 0) -> float:
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, env=env)
    took = time.perf_counter() - started
    assert done.returncode == expect, (command, done.stdout, done.stderr)
    return took


async def sign_all(host: str, work: Path) -> None:
    """Each stage after dev: its VSA about the image, signed with its key, in its repository."""
    async with RegistryClient(host) as client:
        for stage in STAGES[1:]:
            key = load_private_key((work / f"{stage}.key").read_bytes())
            repo = f"{stage}/app"
            subject = await client.head_manifest(repo, "1.0")
            assert subject is not None
            summary = vsa.predicate(
                stage=stage,
                resource_uri=f"{host}/{repo}@{subject.digest}",
                policy_uri="file:///bench/pipeline.yaml",
                policy_digest=subject.digest,
                inputs=[],
                passed=True,
                version="bench",
                verified_at=dt.datetime.now(dt.UTC),
            )
            await vsa.write(client, repo, subject, repo, summary, key)


def importtime(command: list[str], env: dict[str, str]) -> list[tuple[int, str]]:
    """The largest cumulative import times of one run (microseconds, module)."""
    done = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "airlock.cli", *command[1:]],
        capture_output=True,
        text=True,
        env=env,
    )
    rows = []
    for line in done.stderr.splitlines():
        if line.startswith("import time:") and "|" in line:
            _, cumulative, name = line.split("|")
            if cumulative.strip().isdigit() and not name.startswith("   "):  # top level only
                rows.append((int(cumulative.strip()), name.strip()))
    return sorted(rows, reverse=True)[:6]


def main() -> None:
    args = arguments(__doc__, runs=11)
    with workspace("airlock-verify-bench-") as (work, registry, _):
        pusher = Pusher(registry)
        pusher.push_image("dev/app", "1.0", [1024] * 2)
        pusher.close()
        for stage in STAGES[1:]:  # the same digest in every stage, as promotions leave it
            src, dst = f"{registry.host}/dev/app:1.0", f"{registry.host}/{stage}/app:1.0"
            subprocess.run([AIRLOCK, "copy", src, dst], check=True, capture_output=True)
        stages = []
        for stage in STAGES:
            entry = {"name": stage, "registry": "local", "repository": f"{stage}/{{name}}"}
            if stage != "dev":
                private, public = generate()
                (work / f"{stage}.key").write_bytes(private)
                (work / f"{stage}.pub").write_bytes(public)
                entry["public_key"] = f"{stage}.pub"
            stages.append(entry)
        pipeline = work / "pipeline.yaml"
        doc = {"registries": {"local": {"url": registry.host}}, "stages": stages}
        pipeline.write_text(yaml.safe_dump(doc))
        asyncio.run(sign_all(registry.host, work))

        # bytecode cached (in the work dir), as an installed tool has it after its first run:
        # this machine's PYTHONDONTWRITEBYTECODE=1 would make every run compile every module
        env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
        env |= {"DOCKER_CONFIG": str(work), "PYTHONPYCACHEPREFIX": str(work / "pycache")}
        ref = f"{registry.host}/dev/app:1.0"
        verify = [AIRLOCK, "verify", ref, "--stage", "prod", "--pipeline", str(pipeline)]
        inspect = [
            "skopeo",
            "inspect",
            "--tls-verify=false",
            f"docker://{registry.host}/prod/app:1.0",
        ]
        timed(verify, env)  # bytecode compiled once
        ours, theirs = [], []
        for _ in range(args.runs):  # alternating, so load on the machine hits both alike
            ours.append(timed(verify, env))
            theirs.append(timed(inspect, env))
        top = importtime(verify, env)

    median, p90 = statistics.median(ours), sorted(ours)[int(0.9 * (len(ours) - 1))]
    skopeo = statistics.median(theirs)
    print("# airlock verify (whole process, 4 stages, loopback)\n")
    print(f"- runs: {args.runs}, alternating with skopeo inspect; load: {os.getloadavg()[0]:.2f}")
    print("\n| measure | airlock verify | skopeo inspect | ratio | target | met? |")
    print("|---|---|---|---|---|---|")
    met = "yes" if median <= TARGET_S else "**no**"
    print(
        f"| median | {median:.3f} s | {skopeo:.3f} s | {median / skopeo:.2f}x"
        f" | ≤ {TARGET_S} s | {met} |"
    )
    print(f"| p90 | {p90:.3f} s | — | — | — | — |")
    print("\nLargest top-level imports of one run (-X importtime, cumulative):\n")
    for micros, name in top:
        print(f"- {name}: {micros / 1e6:.3f} s")


if __name__ == "__main__":
    main()
