"""Benchmark the virtual registry gateway against the registry it fronts (docs/benchmarks.md).

1. A 5 x 20 MiB image pulled with `skopeo copy` to an OCI layout, through the gateway and direct
   from the registry, alternating, in the same run: the ratio of medians (target <= 1.5x).
2. A manifest HEAD through the gateway and direct, on one keep-alive connection each: the
   difference of medians (target <= 5 ms added).

Prints a markdown table. Usage: uv run python bench/virtual_bench.py [--runs N] [--heads N]
"""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import httpx
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from airlock.supervisor import free_port
from bench.copy_bench import ACCEPT, MiB, Pusher
from bench.servers import arguments, workspace

SKOPEO = ["skopeo", "--insecure-policy", "copy", "--src-tls-verify=false", "--preserve-digests"]


def pull(ref: str, into: Path) -> float:
    shutil.rmtree(into, ignore_errors=True)
    started = time.perf_counter()
    subprocess.run([*SKOPEO, f"docker://{ref}", f"oci:{into}"], check=True, capture_output=True)
    return time.perf_counter() - started


def heads(url: str, n: int) -> list[float]:
    out = []
    with httpx.Client() as client:
        client.head(url, headers={"Accept": ACCEPT})  # connect once, outside the timing
        for _ in range(n):
            started = time.perf_counter()
            r = client.head(url, headers={"Accept": ACCEPT})
            out.append(time.perf_counter() - started)
            assert r.status_code == 200, r.status_code
    return out


def main() -> None:
    args = arguments(__doc__, runs=5, heads=300)

    with workspace("airlock-virtual-bench-") as (work, registry, sup):
        pusher = Pusher(registry)
        image = pusher.push_image("prod/app", "1.0", [20 * MiB] * 5)
        pusher.close()
        config = {
            "registries": {"local": {"url": registry.host}},
            "repositories": {
                "customers": {
                    "members": [{"registry": "local", "prefix": "prod"}],
                    "read": ["anonymous"],
                }
            },
        }
        (work / "virtual.yaml").write_text(yaml.safe_dump(config))
        port = free_port()
        airlock = str(Path(sys.executable).parent / "airlock")
        command = [airlock, "virtual", "serve", "--config", str(work / "virtual.yaml")]
        sup.start(
            "gateway",
            [*command, "--port", str(port)],
            env={**os.environ, "DOCKER_CONFIG": str(work)},
            ready=f"http://127.0.0.1:{port}/healthz",
            timeout=30,
        )
        direct_ref = f"{registry.host}/prod/app:1.0"
        via_ref = f"127.0.0.1:{port}/customers/app:1.0"
        pull(direct_ref, work / "warm")  # first pulls warm the page cache and the processes
        pull(via_ref, work / "warm")
        direct, via = [], []
        for _ in range(args.runs):
            direct.append(pull(direct_ref, work / "direct"))
            via.append(pull(via_ref, work / "via"))
        head_direct = heads(f"{registry.url}/v2/prod/app/manifests/1.0", args.heads)
        head_via = heads(f"http://127.0.0.1:{port}/v2/customers/app/manifests/1.0", args.heads)

    ratio = statistics.median(via) / statistics.median(direct)
    added_ms = (statistics.median(head_via) - statistics.median(head_direct)) * 1000
    print(f"image {image.digest[:19]}…, 5 x 20 MiB; {args.runs} pulls each way, alternating\n")
    print("| measure | direct | via gateway | result | target | met |")
    print("|---|---|---|---|---|---|")
    met = "yes" if ratio <= 1.5 else "no"
    print(
        f"| skopeo pull to an OCI layout, median | {statistics.median(direct):.2f} s"
        f" | {statistics.median(via):.2f} s | {ratio:.2f}x | <= 1.5x | {met} |"
    )
    print(
        f"| manifest HEAD, median of {args.heads} | {statistics.median(head_direct) * 1000:.2f} ms"
        f" | {statistics.median(head_via) * 1000:.2f} ms | +{added_ms:.2f} ms | <= +5 ms"
        f" | {'yes' if added_ms <= 5 else 'no'} |"
    )


if __name__ == "__main__":
    main()
