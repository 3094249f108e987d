"""The tests gate (gates/tests/) on real reports: the shared fixtures and real pytest runs.

Fixture facts asserted here were checked by reading the files (see tests/fixtures/SOURCES.md).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from pydantic import ValidationError

from gates.base import MAX_EVIDENCE_BYTES, Evidence, EvidenceError
from gates.common import MAX_ROWS
from gates.tests import (
    TestReport,
    TestsPolicy,
    detect,
    evaluate,
    junit_id_for_nodeid,
    parse,
)
from registry import mediatypes

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
JUNIT = FIXTURES / "junit"
PYJSON = FIXTURES / "pytest-json-report"


def fixture(path: Path, media_type: str | None = None) -> Evidence:
    return Evidence(data=path.read_bytes(), source=str(path), media_type=media_type)


def ev(data: bytes | str, source: str = "report", media_type: str | None = None) -> Evidence:
    raw = data.encode() if isinstance(data, str) else data
    return Evidence(data=raw, source=source, media_type=media_type)


def counts(r: TestReport) -> tuple[int, int, int, int, int]:
    return (r.total, r.passed, r.failed, r.errors, r.skipped)


def junit(*cases: tuple[str, str], declare: bool = True) -> bytes:
    """A JUnit file with one testcase per (id, outcome); id is "classname::name" or "name"."""
    body = []
    tally = {"failed": 0, "error": 0, "skipped": 0}
    for test_id, outcome in cases:
        classname, _, name = test_id.rpartition("::")
        child = {
            "passed": "",
            "failed": '<failure message="boom">trace</failure>',
            "error": '<error message="setup broke">trace</error>',
            "skipped": '<skipped message="later"/>',
            "xfailed": '<skipped type="pytest.xfail" message="known"/>',
        }[outcome]
        tally[outcome] = tally.get(outcome, 0) + 1
        body.append(
            f'<testcase classname="{classname}" name="{name}" time="0.1">{child}</testcase>'
        )
    attrs = (
        f' tests="{len(cases)}" failures="{tally["failed"]}" errors="{tally["error"]}"'
        f' skipped="{tally["skipped"] + tally.get("xfailed", 0)}"'
        if declare
        else ""
    )
    return (
        f'<?xml version="1.0" encoding="utf-8"?><testsuites><testsuite name="s"{attrs}>'
        + "".join(body)
        + "</testsuite></testsuites>"
    ).encode()


def suite(passed: int = 0, failed: int = 0, errors: int = 0, skipped: int = 0) -> Evidence:
    cases = (
        [(f"m::test_pass_{i}", "passed") for i in range(passed)]
        + [(f"m::test_fail_{i}", "failed") for i in range(failed)]
        + [(f"m::test_error_{i}", "error") for i in range(errors)]
        + [(f"m::test_skip_{i}", "skipped") for i in range(skipped)]
    )
    return ev(junit(*cases), "synthetic.xml")


def pytest_json(cases: list[tuple[str, str]], **extra: object) -> bytes:
    """A pytest-json-report document for (nodeid, outcome) pairs; `extra` overrides keys."""
    summary: dict[str, int] = {}
    for _, outcome in cases:
        summary[outcome] = summary.get(outcome, 0) + 1
    doc = {
        "created": 1767225600.0,
        "duration": 0.5,
        "exitcode": 1 if {"failed", "error"} & set(summary) else 0,
        "root": "/src",
        "environment": {},
        "summary": {**summary, "total": len(cases), "collected": len(cases)},
        "tests": [{"nodeid": n, "lineno": 1, "outcome": o} for n, o in cases],
    }
    doc.update(extra)
    return json.dumps(doc).encode()


# --- the shared fixtures ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "expected", "tool"),
    [
        # total, passed, failed, errors, skipped
        ("pytest-failures.xml", (3, 1, 2, 0, 0), "pytest"),
        ("pytest-skipped.xml", (14, 10, 0, 0, 4), "pytest"),
        ("surefire-errors-failures.xml", (9, 2, 2, 5, 0), "maven-surefire"),
        ("surefire-skipped-failures.xml", (5, 2, 2, 0, 1), "maven-surefire"),
        ("testng-skip-failure.xml", (2, 0, 1, 0, 1), "testng"),
        # 60 testcases (13 <failure>, 5 <skipped>) + the root's errors="1" that no testcase shows
        ("gotestsum-failures-errors-skips.xml", (61, 42, 13, 1, 5), "go"),
    ],
)
def test_junit_fixture_counts(name: str, expected: tuple[int, ...], tool: str) -> None:
    report = parse(fixture(JUNIT / name))
    assert report.format == "junit"
    assert counts(report) == expected
    assert report.tool == tool


def test_junit_ids_are_classname_and_name() -> None:
    report = parse(fixture(JUNIT / "pytest-failures.xml"))
    assert dict(report.outcomes) == {
        "python.test_sample::test_which_succeeds": "passed",
        "python.test_sample::test_which_fails": "failed",
        "python.test_sample::test_with_error": "failed",  # an AttributeError, but a <failure>
    }
    # pytest writes local time without an offset; like every naive time, it is read as UTC
    assert report.created == dt.datetime(2020, 10, 12, 18, 46, 11, 226119, tzinfo=dt.UTC)


def test_junit_surefire_errors_and_non_ascii() -> None:
    report = parse(fixture(JUNIT / "surefire-errors-failures.xml"))
    cls = "action.surefire.report.email.EmailAddressTest"
    assert report.outcomes[f"{cls}::shouldNotContainInternationalizedHostNames"] == "error"
    assert report.outcomes[f"{cls}::shouldBeStricterThanRfc2822"] == "failed"
    assert report.outcomes[f"{cls}::shouldAcceptInternationalizedDomainNamesUsingPunycode"] == (
        "passed"
    )
    assert sum(o == "error" for o in report.outcomes.values()) == 5


def test_junit_gotestsum_unlisted_root_error_is_counted_and_noted() -> None:
    report = parse(fixture(JUNIT / "gotestsum-failures-errors-skips.xml"))
    assert len(report.outcomes) == 60
    assert report.outcomes["TestMain"] == "failed"  # empty classname: the name alone
    assert report.outcomes["gotest.tools/gotestsum/testjson/internal/good::TestSkipped"] == (
        "skipped"
    )
    assert report.tool_version == "go7.7.7"
    assert report.created is None  # 0001-01-01T00:00:00Z is Go's zero time
    assert len(report.notes) == 1 and "1 error" in report.notes[0]
    result = evaluate(fixture(JUNIT / "gotestsum-failures-errors-skips.xml"), TestsPolicy())
    assert result.summary == "refused: 13 failed (max 0); 1 error (max 0)"
    assert {"check": "note", "actual": report.notes[0], "limit": "", "ok": ""} in result.rows


def test_junit_testng_duplicate_id_keeps_worst_outcome() -> None:
    report = parse(fixture(JUNIT / "testng-skip-failure.xml"))
    # two <testcase name="testVersionStrings">: one skipped, one failed
    assert dict(report.outcomes) == {
        "org.apache.pulsar.AddMissingPatchVersionTest::testVersionStrings": "failed"
    }
    assert report.created == dt.datetime(2021, 3, 7, 10, 36, 56, tzinfo=dt.UTC)


@pytest.mark.parametrize(
    ("name", "expected", "version", "exitcode"),
    [
        # passed = 2 passed + 1 xpassed; skipped = 1 skipped + 1 xfailed
        ("sample_report.json", (10, 3, 3, 2, 2), "4.1.1", 1),
        ("all-passed.report.json", (12, 12, 0, 0, 0), None, 0),
        ("ncats-summary-only.report.json", (15, 14, 1, 0, 0), "6.2.2", 1),
        ("no-tests-collected.report.json", (0, 0, 0, 0, 0), "7.1.2", 4),
    ],
)
def test_pytest_json_fixture_counts(
    name: str, expected: tuple[int, ...], version: str | None, exitcode: int
) -> None:
    report = parse(fixture(PYJSON / name))
    assert report.format == "pytest"
    assert counts(report) == expected
    assert report.tool == "pytest"
    assert report.tool_version == version
    assert report.exitcode == exitcode


def test_pytest_json_sample_outcomes_keep_xfail_and_xpass() -> None:
    report = parse(fixture(PYJSON / "sample_report.json"))
    assert report.outcomes["test_create_report.py::test_xfail"] == "xfailed"
    assert report.outcomes["test_create_report.py::test_xfail_but_passing"] == "xpassed"
    assert report.outcomes["test_create_report.py::test_fail_during_setup"] == "error"
    assert report.outcomes["test_create_report.py::test_fail_during_teardown"] == "error"
    assert report.outcomes["test_create_report.py::test_parametrized[2]"] == "failed"
    assert report.created == dt.datetime.fromtimestamp(1548185151.2609472, dt.UTC)


def test_pytest_json_summary_only_has_counts_but_no_ids() -> None:
    evidence = fixture(PYJSON / "ncats-summary-only.report.json")
    report = parse(evidence)
    assert not report.per_test
    assert report.outcomes == {}
    result = evaluate(evidence, TestsPolicy(max_failed=1, required=["test_anything"]))
    assert not result.passed
    assert result.summary == "refused: required test_anything missing"
    row = next(r for r in result.rows if r["check"] == "required test_anything")
    assert row["actual"] == "missing (summary-only report)"
    assert evaluate(evidence, TestsPolicy(max_failed=1)).passed


def test_no_tests_collected_fixture_is_refused_twice_over() -> None:
    result = evaluate(fixture(PYJSON / "no-tests-collected.report.json"), TestsPolicy())
    assert not result.passed and result.error is None
    assert result.summary == (
        "refused: no tests (min 1); pytest exit status 4 (usage error): the run did not complete"
    )


@pytest.mark.parametrize(
    ("name", "passed", "summary"),
    [
        ("all-passed.report.json", True, "passed: 12 tests, 0 failed, 0 errors, 0 skipped"),
        ("pytest-skipped.xml", True, "passed: 14 tests, 0 failed, 0 errors, 4 skipped"),
        ("pytest-failures.xml", False, "refused: 2 failed (max 0)"),
        ("surefire-errors-failures.xml", False, "refused: 2 failed (max 0); 5 errors (max 0)"),
        ("sample_report.json", False, "refused: 3 failed (max 0); 2 errors (max 0)"),
    ],
)
def test_default_policy_on_fixtures(name: str, passed: bool, summary: str) -> None:
    path = (PYJSON if name.endswith(".json") else JUNIT) / name
    evidence = fixture(path)
    result = evaluate(evidence, TestsPolicy())
    assert result.gate == "tests"
    assert result.passed is passed
    assert result.summary == summary
    assert result.error is None
    assert [e.digest for e in result.evidence] == [
        "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest()
    ]
    assert result.evidence[0].source == str(path)


def test_failing_ids_become_rows() -> None:
    result = evaluate(fixture(PYJSON / "sample_report.json"), TestsPolicy())
    failing = [(r["check"], r["actual"]) for r in result.rows if r["check"].endswith(" test")]
    assert failing == [
        ("failed test", "test_create_report.py::test_fail_with_fixture"),
        ("errored test", "test_create_report.py::test_fail_during_setup"),
        ("errored test", "test_create_report.py::test_fail_during_teardown"),
        ("failed test", "test_create_report.py::test_fail_nested"),
        ("failed test", "test_create_report.py::test_parametrized[2]"),
    ]
    checks = {r["check"]: r for r in result.rows}
    assert checks["failed"] == {"check": "failed", "actual": "3", "limit": "<= 0", "ok": "no"}
    assert checks["tests"]["ok"] == "yes"


@pytest.mark.parametrize(
    "path",
    sorted(JUNIT.glob("*.xml")) + sorted(PYJSON.glob("*.json")),
    ids=lambda p: p.name,
)
def test_detect_fixtures(path: Path) -> None:
    assert detect(path.read_bytes()) == ("junit" if path.suffix == ".xml" else "pytest")


@pytest.mark.parametrize(
    "path",
    sorted((FIXTURES / "trivy").glob("*"))
    + sorted((FIXTURES / "grype").glob("*"))
    + sorted((FIXTURES / "sarif").glob("*"))
    + sorted((FIXTURES / "oci").glob("*")),
    ids=lambda p: f"{p.parent.name}/{p.name}",
)
def test_other_reports_are_not_test_reports(path: Path) -> None:
    assert detect(path.read_bytes()) is None
    result = evaluate(fixture(path), TestsPolicy())
    assert not result.passed
    assert result.error


# --- real pytest runs ----------------------------------------------------------------------


SAMPLE_SUITE = """
import pytest

@pytest.fixture
def broken():
    raise RuntimeError("fixture broke")

def test_pass():
    assert 1 + 1 == 2

def test_fail():
    assert 1 + 1 == 3

def test_error(broken):
    pass

def test_skip():
    pytest.skip("not today")
"""

MORE_SUITE = {
    "test_more.py": """
import pytest

@pytest.mark.xfail(reason="known bug")
def test_xfail():
    assert False

@pytest.mark.xfail(reason="known bug")
def test_xpass():
    pass

@pytest.mark.xfail(reason="known bug", strict=True)
def test_xpass_strict():
    pass

@pytest.mark.parametrize("n", [1, 2])
def test_param(n):
    assert n == 1

class TestGroup:
    def test_method(self):
        pass
""",
    "pkg/test_broken.py": (
        "import no_such_module_for_airlock_tests\n\ndef test_never():\n    pass\n"
    ),
    "test_modskip.py": (
        "import pytest\n\npytest.skip('whole module', allow_module_level=True)\n\n"
        "def test_never():\n    pass\n"
    ),
}


def run_pytest(root: Path, files: dict[str, str], *args: str) -> tuple[Evidence, Evidence]:
    """Run real pytest on `files` with both reporters; return (json, junit) evidence."""
    (root / "pytest.ini").write_text("[pytest]\n")  # rootdir here, no outside config
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(textwrap.dedent(text))
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")}
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-p",
            "no:cacheprovider",
            "--json-report",
            f"--json-report-file={root / 'report.json'}",
            f"--junitxml={root / 'report.xml'}",
            *args,
        ],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 1, proc.stdout + proc.stderr  # 1: tests ran, some failed
    return (
        ev((root / "report.json").read_bytes(), str(root / "report.json")),
        ev((root / "report.xml").read_bytes(), str(root / "report.xml")),
    )


@pytest.fixture(scope="module")
def sample_reports(tmp_path_factory: pytest.TempPathFactory) -> tuple[Evidence, Evidence]:
    return run_pytest(tmp_path_factory.mktemp("sample"), {"test_sample.py": SAMPLE_SUITE})


@pytest.fixture(scope="module")
def more_reports(tmp_path_factory: pytest.TempPathFactory) -> tuple[Evidence, Evidence]:
    root = tmp_path_factory.mktemp("more")
    return run_pytest(root, MORE_SUITE, "--continue-on-collection-errors")


def test_real_pytest_run_both_formats_agree(sample_reports: tuple[Evidence, Evidence]) -> None:
    as_json, as_junit = sample_reports
    assert detect(as_json.data) == "pytest" and detect(as_junit.data) == "junit"
    j, x = parse(as_json), parse(as_junit)
    assert counts(j) == counts(x) == (4, 1, 1, 1, 1)
    assert dict(j.outcomes) == {
        "test_sample.py::test_pass": "passed",
        "test_sample.py::test_fail": "failed",
        "test_sample.py::test_error": "error",
        "test_sample.py::test_skip": "skipped",
    }
    assert {junit_id_for_nodeid(k): v for k, v in j.outcomes.items()} == dict(x.outcomes)
    assert j.tool == x.tool == "pytest"
    assert j.exitcode == 1
    for report in (j, x):
        assert report.created is not None
        age = dt.datetime.now(dt.UTC) - report.created
        assert dt.timedelta(0) <= age < dt.timedelta(minutes=10)


def test_real_pytest_run_same_verdicts(sample_reports: tuple[Evidence, Evidence]) -> None:
    for evidence in sample_reports:
        refused = evaluate(evidence, TestsPolicy())
        assert not refused.passed and refused.error is None
        assert refused.summary == "refused: 1 failed (max 0); 1 error (max 0)"

        # a pytest node id works for JUnit too (pytest's junitxml naming, see docs/formats.md)
        lenient = TestsPolicy(max_failed=1, max_errors=1, required=["test_sample.py::test_pass"])
        result = evaluate(evidence, lenient)
        assert result.passed, result.summary
        assert result.summary == "passed: 4 tests, 1 failed, 1 error, 1 skipped"

        skipped = TestsPolicy(max_failed=1, max_errors=1, required=["test_sample.py::test_skip"])
        result = evaluate(evidence, skipped)
        assert not result.passed
        assert "skipped" in result.summary and "test_skip" in result.summary


def test_real_pytest_xfail_xpass_collection_errors_agree(
    more_reports: tuple[Evidence, Evidence],
) -> None:
    j, x = (parse(e) for e in more_reports)
    # passed: param[1], TestGroup::test_method, xpass; failed: param[2], strict xpass;
    # errors: the module that fails to import; skipped: xfail and the module-level skip
    assert counts(j) == counts(x) == (8, 3, 2, 1, 2)
    assert (
        j.outcomes["test_more.py::test_xfail"] == x.outcomes["test_more::test_xfail"] == "xfailed"
    )
    assert j.outcomes["test_more.py::test_xpass_strict"] == "failed"
    assert j.outcomes["pkg/test_broken.py"] == x.outcomes["pkg.test_broken"] == "error"
    # JUnit cannot tell a (non-strict) xpass from a pass; otherwise the outcomes are the same
    from_json = {
        junit_id_for_nodeid(k): "passed" if v == "xpassed" else v for k, v in j.outcomes.items()
    }
    assert from_json == dict(x.outcomes)


def test_real_pytest_xfail_is_not_a_required_pass(more_reports: tuple[Evidence, Evidence]) -> None:
    for evidence in more_reports:
        policy = TestsPolicy(max_failed=9, max_errors=9, required=["test_more.py::test_xfail"])
        assert not evaluate(evidence, policy).passed
        policy = TestsPolicy(max_failed=9, max_errors=9, required=["test_more.py::test_xpass"])
        assert evaluate(evidence, policy).passed


# --- policy ------------------------------------------------------------------------------------


def test_policy_defaults() -> None:
    p = TestsPolicy()
    assert (p.min_tests, p.max_failed, p.max_errors) == (1, 0, 0)
    assert (p.max_skipped_ratio, p.min_pass_rate, p.required) == (None, None, [])


@pytest.mark.parametrize(
    "bad",
    [
        {"max_failures": 1},  # unknown key (a typo of max_failed)
        {"min_tests": -1},
        {"max_failed": -1},
        {"max_errors": 1.5},
        {"max_failed": True},
        {"max_skipped_ratio": 1.01},
        {"max_skipped_ratio": -0.1},
        {"min_pass_rate": 2},
        {"min_pass_rate": float("nan")},
        {"required": [""]},
        {"required": "test_a"},
    ],
)
def test_policy_rejects_bad_values(bad: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        TestsPolicy(**bad)


def test_zero_tests_refused_by_default() -> None:
    result = evaluate(ev("<testsuites/>"), TestsPolicy())
    assert not result.passed and result.error is None
    assert result.summary == "refused: no tests (min 1)"
    assert evaluate(ev("<testsuites/>"), TestsPolicy(min_tests=0)).passed


def test_min_tests_limit() -> None:
    assert evaluate(suite(passed=3), TestsPolicy(min_tests=3)).passed
    result = evaluate(suite(passed=3), TestsPolicy(min_tests=4))
    assert result.summary == "refused: 3 tests (min 4)"


def test_max_failed_limit() -> None:
    assert evaluate(suite(passed=1, failed=2), TestsPolicy(max_failed=2)).passed
    result = evaluate(suite(passed=1, failed=3), TestsPolicy(max_failed=2))
    assert result.summary == "refused: 3 failed (max 2)"


def test_max_errors_limit() -> None:
    assert evaluate(suite(passed=1, errors=1), TestsPolicy(max_errors=1)).passed
    result = evaluate(suite(passed=1, errors=2), TestsPolicy(max_errors=1))
    assert result.summary == "refused: 2 errors (max 1)"


def test_max_skipped_ratio() -> None:
    evidence = suite(passed=3, skipped=1)
    assert evaluate(evidence, TestsPolicy(max_skipped_ratio=0.25)).passed
    result = evaluate(evidence, TestsPolicy(max_skipped_ratio=0.2))
    assert result.summary == "refused: skipped ratio 0.25 (max 0.2)"
    # exactly at a limit that binary floats cannot represent still passes
    assert evaluate(suite(passed=9, skipped=1), TestsPolicy(max_skipped_ratio=0.1)).passed


def test_xfail_counts_as_skipped() -> None:
    evidence = ev(junit(("m::a", "passed"), ("m::b", "xfailed")))
    report = parse(evidence)
    assert (report.passed, report.skipped) == (1, 1)
    assert report.outcomes["m::b"] == "xfailed"
    assert not evaluate(evidence, TestsPolicy(max_skipped_ratio=0.4)).passed


def test_min_pass_rate() -> None:
    evidence = suite(passed=7, failed=3)
    assert evaluate(evidence, TestsPolicy(max_failed=3, min_pass_rate=0.7)).passed
    result = evaluate(evidence, TestsPolicy(max_failed=3, min_pass_rate=0.71))
    assert result.summary == "refused: pass rate 0.7 (min 0.71)"
    # skipped tests are not in the denominator: 3 / (10 - 6)
    rate = TestsPolicy(max_failed=1, min_pass_rate=0.75)
    assert evaluate(suite(passed=3, failed=1, skipped=6), rate).passed
    # nothing ran: the rate is undefined, which is not good enough
    result = evaluate(suite(skipped=2), TestsPolicy(min_pass_rate=0.5))
    assert not result.passed and "no test ran" in result.summary


def test_required_exact_ids_and_patterns() -> None:
    evidence = ev(
        junit(
            ("tests.test_api::test_get[v1]", "passed"),
            ("tests.test_api::test_get[v2]", "passed"),
            ("tests.test_api::test_post", "failed"),
            ("tests.test_db::test_migrate", "passed"),
        )
    )
    lenient = {"max_failed": 1}

    def verdict(*required: str) -> tuple[bool, str]:
        result = evaluate(evidence, TestsPolicy(**lenient, required=list(required)))
        return result.passed, result.summary

    assert verdict("tests.test_db::test_migrate")[0]
    assert verdict("tests.test_api::test_get[v1]")[0]  # brackets: exact id first
    assert verdict("tests.test_api::test_get*")[0]  # both parametrizations passed
    assert verdict("tests/test_db.py::test_migrate")[0]  # pytest node id, JUnit naming
    assert verdict("tests.test_api::test_post") == (
        False,
        "refused: required tests.test_api::test_post failed",
    )
    assert verdict("tests.test_api::*") == (
        False,
        "refused: required tests.test_api::test_post failed",
    )
    assert verdict("tests.test_db::test_rollback") == (
        False,
        "refused: required tests.test_db::test_rollback missing",
    )
    assert verdict("*::test_nothing_like_this*") == (
        False,
        "refused: required *::test_nothing_like_this* missing",
    )


def test_required_rows_say_what_happened() -> None:
    evidence = ev(junit(("m::a", "passed"), ("m::b", "passed"), ("m::c", "skipped")))
    result = evaluate(evidence, TestsPolicy(required=["m::*", "m::?", "m::[ab]", "m::z"]))
    rows = {r["check"]: r for r in result.rows}
    assert rows["required m::*"]["actual"] == "skipped: m::c"
    assert rows["required m::*"]["ok"] == "no"
    assert rows["required m::?"]["actual"] == "skipped: m::c"
    assert rows["required m::[ab]"] == {  # brackets are literal, not a character class
        "check": "required m::[ab]",
        "actual": "missing",
        "limit": "present, passed",
        "ok": "no",
    }
    assert rows["required m::z"]["actual"] == "missing"


def test_rows_are_capped() -> None:
    evidence = suite(passed=1, failed=120)
    result = evaluate(evidence, TestsPolicy())
    failing = [r for r in result.rows if r["check"] == "failed test"]
    assert len(failing) == MAX_ROWS
    assert failing[0]["actual"] == "m::test_fail_0"
    assert result.rows[-1]["check"] == f"… {120 - MAX_ROWS} more"
    assert len(result.rows) == 3 + MAX_ROWS + 1


def test_evaluate_is_pure_and_records_the_evidence() -> None:
    now = dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.UTC)
    evidence = Evidence(
        data=suite(passed=2).data,
        source="registry.local/app@sha256:abc",
        subject="sha256:" + "1" * 64,
        referrer="sha256:" + "2" * 64,
        media_type=mediatypes.TEST_REPORT_JUNIT,
    )
    first = evaluate(evidence, TestsPolicy(), now=now)
    assert first == evaluate(evidence, TestsPolicy(), now=now)
    assert first.evaluated_at == now
    ref = first.evidence[0]
    assert (ref.subject, ref.referrer) == (evidence.subject, evidence.referrer)
    assert ref.digest == evidence.digest


def test_nested_suites_and_googletest_notrun() -> None:
    xml = """<testsuites tests="4">
      <testsuite name="outer" tests="3" failures="1">
        <testsuite name="inner" tests="2">
          <testcase classname="a" name="one"/>
          <testcase classname="a" name="two"><failure/></testcase>
        </testsuite>
        <testcase classname="b" name="three" status="notrun" result="suppressed"/>
      </testsuite>
      <testsuite name="other"><testcase classname="c" name="four"/></testsuite>
    </testsuites>"""
    report = parse(ev(xml))
    assert counts(report) == (4, 2, 1, 0, 1)
    assert report.outcomes["b::three"] == "skipped"
    assert report.notes == ()


def test_pytest_json_rerun_counts_as_passed() -> None:
    report = parse(ev(pytest_json([("t.py::a", "rerun"), ("t.py::b", "passed")])))
    assert counts(report) == (2, 2, 0, 0, 0)


# --- bad input ---------------------------------------------------------------------------------

BILLION_LAUGHS = """<?xml version="1.0"?>
<!DOCTYPE lolz [
 <!ENTITY lol "lol">
 <!ENTITY lol1 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
 <!ENTITY lol2 "&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;">
 <!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">
 <!ENTITY lol4 "&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;">
 <!ENTITY lol5 "&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;">
 <!ENTITY lol6 "&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;">
 <!ENTITY lol7 "&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;">
 <!ENTITY lol8 "&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;">
 <!ENTITY lol9 "&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;">
]>
<testsuite name="&lol9;"><testcase classname="m" name="test_ok"/></testsuite>
"""

MALFORMED: dict[str, tuple[bytes, str]] = {
    # name: (bytes, a phrase the one-line error must contain)
    "empty": (b"", "empty"),
    "blank": (b" \n\t\n", "empty"),
    "plain text": (b"all tests passed!", "not a test report"),
    "json list": (b"[1, 2, 3]", "not a pytest-json-report"),
    "json without summary": (b'{"tests": []}', 'no "summary"'),
    "json too deep": (b"[" * 100_000 + b"]" * 100_000, "invalid JSON"),
    "json bad utf-8": (b'{"summary": {"passed": 1, "note": "\xff"}}', "invalid JSON"),
    "xml wrong root": (b"<html><body>ok</body></html>", "not a JUnit report"),
    "xml junk after root": (b"<testsuite/><testsuite/>", "invalid XML"),
    "billion laughs": (BILLION_LAUGHS.encode(), "has a DOCTYPE"),
    "internal entity": (
        b'<!DOCTYPE t [<!ENTITY x "y">]><testsuite><testcase name="&x;"/></testsuite>',
        "has a DOCTYPE",
    ),
    "junit negative count": (b'<testsuite tests="-1"/>', "negative"),
    "junit non-integer count": (
        b'<testsuite failures="two"><testcase name="a"/></testsuite>',
        "not a count",
    ),
    "junit fractional count": (
        b'<testsuite tests="1.5"><testcase name="a"/></testsuite>',
        "not a count",
    ),
    "junit declares more tests than listed": (
        b'<testsuites><testsuite tests="5"><testcase name="a"/></testsuite></testsuites>',
        "inconsistent totals",
    ),
    "junit testcase without name": (b'<testsuite><testcase classname="m"/></testsuite>', "no name"),
    "json negative count": (pytest_json([], summary={"passed": -1, "total": -1}), "negative"),
    "json float count": (pytest_json([], summary={"passed": 1.5}), "not a count"),
    "json bool count": (pytest_json([], summary={"passed": True}), "not a count"),
    "json total disagrees with summary": (
        pytest_json([], summary={"passed": 2, "failed": 1, "total": 5}),
        "inconsistent totals",
    ),
    "json summary disagrees with tests": (
        pytest_json([("t.py::a", "failed")], summary={"passed": 1, "total": 1}),
        "inconsistent totals",
    ),
    "json unknown outcome": (pytest_json([("t.py::a", "sort-of")]), "unknown outcome"),
    "json tests not a list": (pytest_json([], tests={"t.py::a": "passed"}), "not a list"),
    "json test without nodeid": (pytest_json([], tests=[{"outcome": "passed"}]), "nodeid"),
    "json bad exitcode": (pytest_json([("t.py::a", "passed")], exitcode="0"), "exitcode"),
    "json bad created": (pytest_json([("t.py::a", "passed")], created="yesterday"), "created"),
}


def _truncated() -> dict[str, tuple[bytes, str]]:
    sample = (PYJSON / "sample_report.json").read_bytes()
    surefire = (JUNIT / "surefire-errors-failures.xml").read_bytes()
    return {
        "truncated json": (sample[: len(sample) // 2], "invalid JSON"),
        "truncated xml": (surefire[: len(surefire) // 2], "invalid XML"),
        "truncated xml, root only": (b"<testsuite><testcase name='a'/>", "invalid XML"),
    }


@pytest.mark.parametrize(
    ("data", "phrase"),
    list(MALFORMED.values()) + list(_truncated().values()),
    ids=list(MALFORMED) + list(_truncated()),
)
def test_malformed_evidence_refuses_with_one_line(data: bytes, phrase: str) -> None:
    evidence = ev(data, "bad/report.file")
    with pytest.raises(EvidenceError) as caught:
        parse(evidence)
    message = str(caught.value)
    assert message.startswith("bad/report.file: ")
    assert "\n" not in message
    assert phrase in message

    for policy in (TestsPolicy(), TestsPolicy(min_tests=0, max_failed=10**6, max_errors=10**6)):
        result = evaluate(evidence, policy)
        assert result.passed is False
        assert result.error == message
        assert result.summary == f"refused: {message}"
        assert result.evidence[0].digest == evidence.digest


def test_over_the_size_cap_is_refused_unread() -> None:
    head = b'<testsuite><testcase name="a"/>'
    data = head + b" " * (MAX_EVIDENCE_BYTES - len(head)) + b"</testsuite>"
    result = evaluate(ev(data, "huge.xml"), TestsPolicy())
    assert not result.passed
    assert result.error == (
        f"huge.xml: the report is {len(data)} bytes, over the {MAX_EVIDENCE_BYTES} cap"
    )


def test_wrong_kind_of_report_for_the_gate() -> None:
    trivy = fixture(FIXTURES / "trivy" / "alpine-39.json")
    result = evaluate(trivy, TestsPolicy())
    assert not result.passed
    assert result.error == f"{trivy.source}: it looks like a Trivy scan report, not a test report"

    junit_as_pytest = fixture(JUNIT / "pytest-skipped.xml", mediatypes.TEST_REPORT_PYTEST)
    result = evaluate(junit_as_pytest, TestsPolicy())
    assert not result.passed and "content is XML" in (result.error or "")

    as_scan = fixture(PYJSON / "all-passed.report.json", mediatypes.SCAN_REPORT_TRIVY)
    result = evaluate(as_scan, TestsPolicy())
    assert not result.passed and "not a test report" in (result.error or "")

    # the right artifact type is fine
    right = fixture(PYJSON / "all-passed.report.json", mediatypes.TEST_REPORT_PYTEST)
    assert evaluate(right, TestsPolicy()).passed


# External entities: the file must never be opened. An audit hook (cannot be removed, so it only
# records paths the tests ask it to watch) catches any open() of it during parsing.
_WATCHED: set[str] = set()
_OPENED: list[str] = []


def _audit(event: str, args: tuple[object, ...]) -> None:
    if event == "open" and _WATCHED and args and str(args[0]) in _WATCHED:
        _OPENED.append(str(args[0]))


sys.addaudithook(_audit)


@pytest.fixture
def secret(tmp_path: Path) -> Path:
    path = tmp_path / "secret.txt"
    path.write_text("AIRLOCK-SECRET-7f3a9c\n")
    _WATCHED.add(str(path))
    _OPENED.clear()
    yield path
    _WATCHED.discard(str(path))


@pytest.mark.parametrize(
    "template",
    [
        # a general external entity used in an attribute
        '<?xml version="1.0"?><!DOCTYPE testsuite [<!ENTITY xxe SYSTEM "file://{p}">]>'
        '<testsuite name="&xxe;"><testcase classname="m" name="ok"/></testsuite>',
        # ... and in text
        '<?xml version="1.0"?><!DOCTYPE testsuite [<!ENTITY xxe SYSTEM "file://{p}">]>'
        '<testsuite><testcase classname="m" name="ok"><skipped message="x">&xxe;</skipped>'
        "</testcase></testsuite>",
        # a parameter entity
        '<?xml version="1.0"?><!DOCTYPE testsuite [<!ENTITY % xxe SYSTEM "file://{p}"> %xxe;]>'
        '<testsuite><testcase classname="m" name="ok"/></testsuite>',
    ],
    ids=["attribute", "text", "parameter-entity"],
)
def test_external_entity_is_refused_and_never_read(secret: Path, template: str) -> None:
    evidence = ev(template.format(p=secret), "xxe.xml")
    result = evaluate(evidence, TestsPolicy())
    assert not result.passed
    assert result.error and "has a DOCTYPE" in result.error
    assert "AIRLOCK-SECRET" not in result.model_dump_json()
    assert _OPENED == []
    assert detect(evidence.data) is None
    assert _OPENED == []


def test_external_dtd_is_refused_and_never_read(secret: Path) -> None:
    secret.write_text('<!ENTITY leak "AIRLOCK-SECRET-7f3a9c">')
    _OPENED.clear()  # that write was us
    xml = (
        f'<?xml version="1.0"?><!DOCTYPE testsuite SYSTEM "file://{secret}">'
        '<testsuite><testcase classname="m" name="&leak;"/></testsuite>'
    )
    result = evaluate(ev(xml, "dtd.xml"), TestsPolicy())
    assert not result.passed
    assert result.error == (
        f"dtd.xml: refused XML: it has a DOCTYPE referencing 'file://{secret}'; DTDs, entities "
        "and external references are not allowed in a test report (entity-expansion bombs, "
        "external-entity reads)"
    )
    assert "AIRLOCK-SECRET" not in result.model_dump_json()
    assert _OPENED == []


def test_the_audit_hook_would_see_a_read(secret: Path) -> None:
    """The hook the XXE tests rely on does notice an open() of the watched file."""
    secret.read_text()
    opened = list(_OPENED)
    assert opened == [str(secret)]


# --- review fixes ------------------------------------------------------------------------------


def test_duplicate_summary_and_tests_pair_refuses() -> None:
    failing = pytest_json([("t.py::a", "failed")]).decode()
    second = ', "summary": {"passed": 1, "total": 1}, "tests": [{"nodeid": "t.py::a", '
    second += '"outcome": "passed"}]}'
    evidence = ev(failing[:-1] + second)
    assert detect(evidence.data) == "pytest"  # so `attach --kind pytest` reports the real problem
    with pytest.raises(EvidenceError, match="duplicate key 'summary'"):
        parse(evidence)
    result = evaluate(evidence, TestsPolicy())
    assert not result.passed and result.error


def test_utf16_pytest_report_is_read() -> None:
    data = (PYJSON / "all-passed.report.json").read_bytes()
    utf16 = data.decode().encode("utf-16")  # with a BOM, as PowerShell 5 `>` writes
    assert detect(utf16) == "pytest"
    assert counts(parse(ev(utf16))) == counts(parse(ev(data)))


def test_utf16_junit_report_is_read() -> None:
    text = (
        (JUNIT / "pytest-failures.xml").read_text().replace('encoding="utf-8"', 'encoding="utf-16"')
    )
    utf16 = text.encode("utf-16")
    assert detect(utf16) == "junit"
    assert counts(parse(ev(utf16))) == (3, 1, 2, 0, 0)


def test_nan_in_a_pytest_report_is_invalid_json() -> None:
    with pytest.raises(EvidenceError, match="invalid JSON"):
        parse(ev(pytest_json([("t.py::a", "passed")], duration=float("nan"))))


def test_required_parametrised_id_is_literal() -> None:
    evidence = ev(pytest_json([("tests/test_a.py::test_x1", "passed")]))
    result = evaluate(evidence, TestsPolicy(required=["tests/test_a.py::test_x[1]"]))
    assert result.summary == "refused: required tests/test_a.py::test_x[1] missing"


def test_required_pattern_brackets_are_literal() -> None:
    evidence = ev(
        pytest_json(
            [
                ("t.py::test_x[1]", "passed"),
                ("t.py::test_x[2]", "passed"),
                ("t.py::test_x*", "failed"),  # would match "test_x[*]" as a character class
            ]
        )
    )
    policy = TestsPolicy(max_failed=1, required=["t.py::test_x[*]"])
    result = evaluate(evidence, policy)
    assert result.passed, result.summary
    row = next(r for r in result.rows if r["check"] == "required t.py::test_x[*]")
    assert row["actual"] == "passed (2 tests)"


# ---------------------------------------------------------------------------- dates


def test_a_report_dated_in_the_future_refuses() -> None:
    """Its time was set by whoever made it: a report from 2099 is a lie (or a broken clock)
    and must never count — it would otherwise look newer than every real report."""
    now = dt.datetime(2026, 12, 1, tzinfo=dt.UTC)
    future = ev(pytest_json([("t::a", "passed")], created=4070908800.0))  # 2099-01-01
    result = evaluate(future, TestsPolicy(), now=now)
    assert not result.passed and result.error is None
    assert result.summary.startswith("refused: report is dated in the future (")
    within_skew = (now + dt.timedelta(minutes=4)).timestamp()
    assert evaluate(
        ev(pytest_json([("t::a", "passed")], created=within_skew)), TestsPolicy(), now=now
    ).passed
    # a report without a time of its own, on a referrer dated in the future, too
    referrer = Evidence(
        data=pytest_json([("t::a", "passed")], created=None),
        source="r",
        created=now + dt.timedelta(days=1),
    )
    assert "in the future" in evaluate(referrer, TestsPolicy(), now=now).summary
