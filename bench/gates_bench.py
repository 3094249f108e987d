"""Benchmark the tests gate: parse + evaluate a 10,000-test report (docs/benchmarks.md).

Run from the repository root:

    uv run python bench/gates_bench.py              # median of 5 runs, 10,000 tests
    uv run python bench/gates_bench.py --runs 9 --tests 50000

It generates, in a temp dir, a JUnit XML file and a pytest-json-report file that look like real
ones (several suites, ~2 % failures with multi-line tracebacks, ~3 % skips, setup/call/teardown
stages in the JSON), reads each back from disk and times `gates.tests.evaluate` (which parses and
judges) with a policy that exercises every check, including required patterns. It prints a small
markdown table; nothing is asserted and nothing is written outside the temp dir.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path
from xml.sax.saxutils import escape, quoteattr

from gates.base import Evidence
from gates.tests import TestsPolicy, evaluate

TARGET_S = 1.0
SUITES = 40
TRACEBACK = "\n".join(
    [
        "def test_thing():",
        "        payload = build(42)",
        ">       assert payload['status'] == 'ok'",
        "E       AssertionError: assert 'failed' == 'ok'",
        "E         - ok",
        "E         + failed",
        "",
        "tests/test_module.py:17: AssertionError",
    ]
    * 4
)


def outcome_of(i: int) -> str:
    if i % 50 == 7:
        return "failed"
    if i % 33 == 5:
        return "skipped"
    return "passed"


def module_of(i: int, n: int) -> tuple[int, int]:
    """(package, module) of test i: the same in both formats, so their ids correspond."""
    return i // -(-n // SUITES), i % 20


def junit_report(n: int) -> bytes:
    parts = ['<?xml version="1.0" encoding="utf-8"?>\n<testsuites name="bench">\n']
    per_suite = -(-n // SUITES)
    for s in range(SUITES):
        ids = range(s * per_suite, min(n, (s + 1) * per_suite))
        outcomes = [outcome_of(i) for i in ids]
        parts.append(
            f'  <testsuite name="pkg{s}" tests="{len(outcomes)}" '
            f'failures="{outcomes.count("failed")}" errors="0" '
            f'skipped="{outcomes.count("skipped")}" time="1.0" '
            'timestamp="2026-01-01T00:00:00+00:00">\n'
        )
        for i, outcome in zip(ids, outcomes, strict=True):
            pkg, mod = module_of(i, n)
            head = (
                f'    <testcase classname="tests.pkg{pkg}.test_mod{mod}" name="test_{i}" '
                'time="0.001"'
            )
            if outcome == "passed":
                parts.append(head + "/>\n")
            elif outcome == "failed":
                parts.append(
                    head + "><failure message=\"AssertionError: assert 'failed' == 'ok'\">"
                    f"{escape(TRACEBACK)}</failure></testcase>\n"
                )
            else:
                parts.append(
                    head + f'><skipped type="pytest.skip" message={quoteattr("not here")}>'
                    "tests/test_mod.py:3: not here</skipped></testcase>\n"
                )
        parts.append("  </testsuite>\n")
    parts.append("</testsuites>\n")
    return "".join(parts).encode()


def pytest_report(n: int) -> bytes:
    tests = []
    for i in range(n):
        outcome = outcome_of(i)
        stage = {"duration": 0.0001, "outcome": "passed"}
        test = {
            "nodeid": "tests/pkg{}/test_mod{}.py::test_{}".format(*module_of(i, n), i),
            "lineno": 10,
            "outcome": outcome,
            "keywords": [f"test_{i}", "tests"],
            "setup": stage,
        }
        if outcome == "skipped":
            test["setup"] = {
                "duration": 0.0001,
                "outcome": "skipped",
                "longrepr": "('tests/test_mod.py', 3, 'Skipped: not here')",
            }
        else:
            call = {"duration": 0.001, "outcome": outcome}
            if outcome == "failed":
                call["crash"] = {"path": "tests/test_mod.py", "lineno": 17, "message": "assert"}
                call["longrepr"] = TRACEBACK
            test["call"] = call
        test["teardown"] = stage
        tests.append(test)
    counts: dict[str, int] = {}
    for t in tests:
        counts[t["outcome"]] = counts.get(t["outcome"], 0) + 1
    doc = {
        "created": 1767225600.0,
        "duration": 12.5,
        "exitcode": 1,
        "root": "/src",
        "environment": {"Python": "3.11.7", "Packages": {"pytest": "9.2.0"}},
        "summary": {**counts, "total": n, "collected": n},
        "tests": tests,
    }
    return json.dumps(doc).encode()


def time_it(path: Path, policy: TestsPolicy, runs: int) -> tuple[float, bool, str]:
    samples = []
    result = None
    for _ in range(runs):
        start = time.perf_counter()
        evidence = Evidence(data=path.read_bytes(), source=str(path))
        result = evaluate(evidence, policy)
        samples.append(time.perf_counter() - start)
    assert result is not None
    return statistics.median(samples), result.error is None, result.summary


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tests", type=int, default=10_000)
    ap.add_argument("--runs", type=int, default=5)
    args = ap.parse_args()

    policy = TestsPolicy(
        max_failed=10**6,
        max_skipped_ratio=0.5,
        min_pass_rate=0.9,
        # a glob over all 10,000 ids, a pytest node id (tried in JUnit's dotted form too), a glob
        required=["*::test_1", "tests/pkg0/test_mod1.py::test_1", "*::test_2?"],
    )
    with tempfile.TemporaryDirectory(prefix="airlock-gates-bench-") as tmp:
        files = {
            "JUnit XML": Path(tmp, "report.xml"),
            "pytest-json-report": Path(tmp, "report.json"),
        }
        files["JUnit XML"].write_bytes(junit_report(args.tests))
        files["pytest-json-report"].write_bytes(pytest_report(args.tests))
        rows = []
        for label, path in files.items():
            median, parsed, summary = time_it(path, policy, args.runs)
            size = path.stat().st_size / 1e6
            met = "yes" if parsed and median <= TARGET_S else "no"
            rows.append((label, size, median, met, summary))

    print(
        f"tests gate, {args.tests:,} tests, median of {args.runs} "
        f"({platform.python_implementation()} {platform.python_version()}, "
        f"{os.cpu_count()} CPUs)\n"
    )
    print("| report | size | parse + evaluate | target | met | verdict |")
    print("|---|---|---|---|---|---|")
    for label, size, median, met, summary in rows:
        print(
            f"| {label} | {size:.1f} MB | {median * 1000:.0f} ms | ≤ {TARGET_S:g} s | {met} "
            f"| {summary} |"
        )


if __name__ == "__main__":
    main()
