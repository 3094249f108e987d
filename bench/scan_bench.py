"""Benchmark the scan gate on a Trivy report with 20,000 vulnerabilities (docs/benchmarks.md).

Run from the repository root:

    uv run python bench/scan_bench.py [--count 20000] [--runs 5] [--keep]

It builds the report in a temp dir from the real Trivy goldens in ../shared/fixtures/trivy/
(every vulnerability entry there, repeated with a distinct id, package and fixed/unfixed state per
copy, severities as in the originals), then times reading the file + `gates.scan.evaluate` (the
whole gate: size check, JSON parse, one pass over the findings, policy) and prints a markdown
table with the median of several runs. Nothing is asserted: the target is reported as met or not.

Two encodings of the same report are measured: compact JSON, and Trivy's own `-f json` layout
(2-space indent), which is larger than gates.base.MAX_EVIDENCE_BYTES at this size. For that one
the gate refuses before parsing, so its parse is also timed with the cap lifted.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import platform
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from gates.base import MAX_EVIDENCE_BYTES, Evidence, GateResult
from gates.scan import AllowEntry, ScanPolicy, evaluate, judge, parse

FIXTURES = Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "trivy"
TARGET_S = 1.0
NOW = dt.datetime(2021, 8, 26, tzinfo=dt.UTC)  # a day after the goldens' pinned CreatedAt


def build_report(count: int) -> dict[str, Any]:
    """A Trivy SchemaVersion 2 report with `count` vulnerabilities varied from real entries."""
    real: list[dict[str, Any]] = []
    for path in sorted(FIXTURES.glob("*.json")):
        for result in json.loads(path.read_bytes()).get("Results") or []:
            real.extend(result.get("Vulnerabilities") or [])
    if not real:
        raise SystemExit(f"no Trivy vulnerabilities found under {FIXTURES}")
    report = json.loads((FIXTURES / "alpine-39.json").read_bytes())
    vulns = []
    for i in range(count):
        v = dict(real[i % len(real)])
        v["VulnerabilityID"] = f"CVE-{2000 + i % 25}-{100000 + i}"
        v["PkgName"] = f"{v['PkgName']}-{i % 211}"
        v["PkgID"] = f"{v['PkgName']}@{v.get('InstalledVersion', '')}"
        if i % 7 == 0:  # some without a fix, as real reports have
            v.pop("FixedVersion", None)
            v["Status"] = "affected"
        vulns.append(v)
    # Spread them over several results, as an image with OS and language packages has.
    template = report["Results"][0]
    report["Results"] = [
        {**template, "Target": f"{template['Target']} #{k}", "Vulnerabilities": vulns[k::4]}
        for k in range(4)
        if vulns[k::4]
    ]
    return report


def median_time(fn: Callable[[], GateResult], runs: int) -> tuple[float, list[float], GateResult]:
    samples = []
    for _ in range(runs):
        start = time.perf_counter()
        out = fn()
        samples.append(time.perf_counter() - start)
    return statistics.median(samples), samples, out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--count", type=int, default=20_000)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--keep", action="store_true", help="keep the temp dir with the reports")
    args = ap.parse_args(argv)

    tmp = Path(tempfile.mkdtemp(prefix="airlock-scan-bench-"))
    try:
        report = build_report(args.count)
        files = {
            "compact JSON": tmp / "trivy-compact.json",
            "Trivy layout (indent 2)": tmp / "trivy-indent2.json",
        }
        files["compact JSON"].write_bytes(json.dumps(report, separators=(",", ":")).encode())
        files["Trivy layout (indent 2)"].write_bytes(json.dumps(report, indent=2).encode())

        allow = [
            AllowEntry(id=f"CVE-2003-{100000 + i}", reason="bench", expires=dt.date(2030, 1, 1))
            for i in range(3, 3000, 25)
        ]
        policies = {
            "default (fail at HIGH)": ScanPolicy(),
            "fail at CRITICAL, max 10k MEDIUM, ignore unfixed, 120 allow entries": ScanPolicy(
                fail_on="CRITICAL",
                max_counts={"MEDIUM": 10_000},
                ignore_unfixed=True,
                allow=allow,
            ),
        }

        rows = []
        for label, path in files.items():
            size = path.stat().st_size
            for pname, policy in policies.items():

                def run(path: Path = path, policy: ScanPolicy = policy) -> GateResult:
                    ev = Evidence(data=path.read_bytes(), source=str(path))
                    return evaluate(ev, policy, now=NOW)

                med, samples, result = median_time(run, args.runs)
                met = "yes" if med <= TARGET_S else "no"
                if result.error is not None:
                    met = "n/a (refused before parsing)"
                name = f"{label}, {size / 1e6:.1f} MB"
                rows.append((name, pname, med, samples, result.summary, met))
            if size > MAX_EVIDENCE_BYTES:

                def run_uncapped(path: Path = path, size: int = size) -> GateResult:
                    ev = Evidence(data=path.read_bytes(), source=str(path))
                    return judge(parse(ev, limit=size + 1), ev, ScanPolicy(), NOW)

                med, samples, result = median_time(run_uncapped, args.runs)
                rows.append(
                    (
                        f"{label}, {size / 1e6:.1f} MB",
                        "default, size cap lifted (parse(limit=…) + judge)",
                        med,
                        samples,
                        result.summary,
                        "yes" if med <= TARGET_S else "no",
                    )
                )

        print(f"## scan gate: Trivy report with {args.count:,} vulnerabilities\n")
        print(
            f"{platform.python_implementation()} {platform.python_version()}, "
            f"{platform.machine()}, median of {args.runs} runs; read file + evaluate; "
            f"target ≤ {TARGET_S:.0f} s; size cap {MAX_EVIDENCE_BYTES / 2**20:.0f} MiB\n"
        )
        print("| report | policy | median | runs (s) | result | ≤ 1 s |")
        print("|---|---|---:|---|---|---|")
        for report_label, pname, med, samples, summary, met in rows:
            runs = " ".join(f"{s:.3f}" for s in samples)
            short = summary if len(summary) < 70 else summary[:67] + "…"
            print(f"| {report_label} | {pname} | {med:.3f} s | {runs} | {short} | {met} |")
        if args.keep:
            print(f"\nreports kept in {tmp}", file=sys.stderr)
    finally:
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
