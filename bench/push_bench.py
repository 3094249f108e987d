"""Push to promotion, cold (issue #15): how long after CI's push an image is in qa and staging,
through everything a team runs — registry notifications, the webhook receiver, Prefect's
trigger, the served deployments (a new Python process per flow run), the gates and the copy.

Runs `airlock demo` --runs times (each starts its own registry and Prefect server, so every run
is cold) and reports the medians of what it prints for app:1.0: push → flow run start, → qa,
→ staging (target ≤ 2 s). The demo pushes three images at once, so app:1.0's run competes with
two others for the two cores; which of the three the runner starts first varies, and so do the
times. Nothing is asserted; a failed demo stops the bench.
Usage: uv run python bench/push_bench.py [--runs N]
"""

from __future__ import annotations

import re
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.servers import arguments

AIRLOCK = str(Path(sys.executable).parent / "airlock")
TARGET_S = 2.0
DONE = re.compile(
    r"done: push → flow start ([\d.]+) s, → qa ([\d.]+) s, → staging ([\d.]+) s,"
    r" whole demo ([\d.]+) s"
)


def one_demo() -> tuple[float, float, float, float]:
    with tempfile.TemporaryDirectory(prefix="airlock-push-bench-") as state:
        done = subprocess.run(
            [AIRLOCK, "demo", "--state-dir", state], capture_output=True, text=True, timeout=300
        )
    found = DONE.search(done.stdout)
    if done.returncode != 0 or found is None:
        sys.exit(f"the demo failed (exit {done.returncode}):\n{done.stdout[-2000:]}{done.stderr}")
    start, qa, staging, whole = (float(x) for x in found.groups())
    return start, qa, staging, whole


def main() -> None:
    args = arguments(__doc__, runs=3)
    runs = []
    for i in range(args.runs):
        print(f"[bench] demo {i + 1}/{args.runs}", file=sys.stderr)
        runs.append(one_demo())
    start, qa, staging, whole = (statistics.median(column) for column in zip(*runs, strict=True))
    shown = "; ".join("/".join(f"{x:.1f}" for x in run[:3]) for run in runs)
    print("| push → (app:1.0, `airlock demo`) | median | target | met? |")
    print("|---|---|---|---|")
    print(f"| flow run start | {start:.1f} s | — | — |")
    print(f"| image in qa | {qa:.1f} s | report | — |")
    met = "yes" if staging <= TARGET_S else "no"
    print(f"| image in staging | {staging:.1f} s | ≤ {TARGET_S:.0f} s | {met} |")
    print(f"| the whole demo | {whole:.1f} s | ≤ 120 s | {'yes' if whole <= 120 else 'no'} |")
    print(f"\nruns (start/qa/staging, s): {shown}")


if __name__ == "__main__":
    main()
