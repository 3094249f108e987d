"""A release's hop against one image's hop (#16; docs/benchmarks.md).

    uv run python bench/release_bench.py [--members 10] [--runs 5]

Starts a Debian docker-registry and a real `prefect server start` on loopback (as
promote_bench.py), then measures, in this process, promote dev → qa (a tests gate and a scan gate
per image, same-registry copies):
  1. one image's hop — median over --runs fresh images;
  2. a release of --members fresh images through the same hop (each member's gates, the copy of
     every member by digest, then the tags, records and the release's own record) — median over
     --runs fresh releases (target ≤ 2x the single hop);
  3. for scale, the loop people write instead: `skopeo copy` of the same number of images, one
     after another, no gates.
Prints a markdown table. Timings are reported, never asserted.
"""

from __future__ import annotations

import asyncio
import os
import statistics
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from airlock.localregistry import LocalRegistry  # noqa: E402
from bench.promote_bench import pipeline_yaml, push_image, start_prefect  # noqa: E402
from bench.servers import arguments, workspace  # noqa: E402
from registry.client import RegistryClient  # noqa: E402

Timed = tuple[list[float], int]  # times, and the registry requests of the last one


def main() -> None:
    args = arguments(__doc__, members=10, runs=5)
    with workspace("airlock-release-bench-") as (work, registry, sup):
        url = start_prefect(work, sup)
        os.environ.update(
            {
                "PREFECT_API_URL": url,
                "PREFECT_HOME": str(work),
                "DO_NOT_TRACK": "1",
                "PREFECT_LOGGING_LEVEL": "WARNING",
                "AIRLOCK_PIPELINE": str(work / "pipeline.yaml"),
            }
        )
        (work / "pipeline.yaml").write_text(pipeline_yaml(registry.host))
        single, release = measure(registry, args.members, args.runs)
        loop = skopeo_loop(registry.host, args.members)
    report(single, release, loop, args.members)


def measure(registry: LocalRegistry, members: int, runs: int) -> tuple[Timed, Timed]:
    """The single hops, then the releases' hops: (times, registry requests of the last)."""
    from flows import releases
    from flows.config import load
    from flows.promote import promote

    host = registry.host

    def timed(ref: str) -> tuple[float, int]:
        seen = len(registry.request_log())
        start = time.perf_counter()
        done = asyncio.run(promote(ref, "qa"))
        took = time.perf_counter() - start
        assert done["status"] == "promoted", done
        return took, len(registry.request_log()) - seen

    single: list[float] = []
    for i in range(runs + 1):
        asyncio.run(push_image(host, f"one{i}"))
        took, one_requests = timed(f"{host}/dev/one{i}:1.0")
        if i:  # the first run pays this process's one-off Prefect client set-up
            single.append(took)

    async def make(run: int) -> None:
        # the same repositories each time, a new build of each: as a product's releases are
        names = [f"member{m}" for m in range(members)]
        for name in names:
            await push_image(host, name, tag=f"v{run}")
        refs = [f"{host}/dev/{name}:v{run}" for name in names]
        async with RegistryClient(host) as client:
            await releases.create(load(), client, "shop", f"v{run}", refs, releases.Rules())

    release: list[float] = []
    for run in range(runs):
        asyncio.run(make(run))
        seen = len(registry.request_log())
        took, release_requests = timed(f"{host}/dev/releases/shop:v{run}")
        release.append(took)
    kinds = Counter(_kind(r) for r in registry.request_log()[seen:])
    print(
        "requests of the last release hop:", ", ".join(f"{k} {n}" for k, n in kinds.most_common())
    )
    return (single, one_requests), (release, release_requests)


def _kind(request: dict) -> str:
    """`HEAD manifests`, `PUT manifests (tag)`, `POST uploads`…: what a request was for."""
    path = request["uri"].split("?", 1)[0]
    kinds = ("manifests", "uploads", "blobs", "referrers", "tags")
    part = next((k for k in kinds if f"/{k}/" in path), "other")
    tagged = part == "manifests" and ":" not in path.rsplit("/", 1)[-1]
    return f"{request['method']} {part}{' (by tag)' if tagged else ''}"


def skopeo_loop(host: str, count: int) -> float:
    names = [f"sk{i}" for i in range(count)]
    for name in names:
        asyncio.run(push_image(host, name))
    start = time.perf_counter()
    for name in names:
        subprocess.run(
            [
                "skopeo", "copy", "--quiet", "--all", "--preserve-digests",
                "--src-tls-verify=false", "--dest-tls-verify=false",
                f"docker://{host}/dev/{name}:1.0", f"docker://{host}/qa/{name}:1.0",
            ],
            check=True,
        )  # fmt: skip
    return time.perf_counter() - start


def report(single: Timed, release: Timed, loop: float, members: int) -> None:
    (singles, one_requests), (releases_, release_requests) = single, release
    one, many = statistics.median(singles), statistics.median(releases_)
    ratio = many / one
    met = "yes" if ratio <= 2 else "no"
    print("| scenario | time | registry requests | target | met? |")
    print("|---|---|---|---|---|")
    print(
        f"| one image's hop dev→qa (tests + scan), median of {len(singles)} | {one:.2f} s"
        f" | {one_requests} | — | — |"
    )
    print(
        f"| a {members}-member release's hop dev→qa, median of {len(releases_)} | {many:.2f} s"
        f" | {release_requests} | ≤ 2x one hop | {met} |"
    )
    print(f"| release / one image | {ratio:.2f}x | — | ≤ 2.0x | {met} |")
    print(f"| `skopeo copy` loop of {members} images, no gates | {loop:.2f} s | — | report | — |")
    print(f"| release / skopeo loop | {many / loop:.2f}x | — | report | — |")


if __name__ == "__main__":
    main()
