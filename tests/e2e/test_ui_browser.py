"""A person approves prod in the Prefect UI, in a real (headless) browser.

`airlock demo --keep --interactive` runs the whole story on loopback: a push promotes app:1.0
dev → qa → staging by itself, and prod waits for an approval. Here Chromium (Debian's, driven by
selenium) opens the URL the demo prints, reads the request, presses Resume, fills in the form —
decision "approve", approver "release-manager" (the push's requester is "registry"), the digest
copied from the request — and submits it; the demo then ends with app:1.0's digest in prod,
approved by release-manager. On the same running demo, a person reads why app:1.1 was refused
at qa and finds the stage board among the artifacts.

Screenshots of every step go to $AIRLOCK_TEST_ARTIFACTS/ui/ (default: pytest's tmp dir). The
Resume form's screenshot is also copied to docs/img/approval-request.png when
AIRLOCK_UPDATE_SCREENSHOTS=1. Every process the demo started is stopped by PID at the end.
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
from selenium.webdriver.common.by import By

from tests.support import browser
from tests.support.browser import DIGEST, step
from tests.support.cli import airlock
from tests.support.demo import ROOT, Demo, alive

APPROVER = "release-manager"
TO_WAITING = 240.0  # seconds from the start to prod's request (the demo takes ~70 s here)
TO_END = 180.0  # seconds from the approval to the demo's last line
WAITING = re.compile(r"prod is waiting for an approval: open (\S+/runs/flow-run/([0-9a-f-]{36}))")
PUSHED = re.compile(r"CI pushed\s+\S+/dev/app:(\S+)\s+(sha256:[0-9a-f]{64})")
LEFT_RUNNING = re.compile(r"^left running \(--keep\): .*; stop with: kill ([\d ]+)$")


@dataclass
class Waiting:
    """What the demo says while prod waits: where to approve, and what CI pushed."""

    demo: Demo
    url: str  # the waiting run's page in the UI
    run_id: str
    pushed: dict[str, str]  # version → digest

    @property
    def root(self) -> str:
        parts = urlsplit(self.url)
        return f"{parts.scheme}://{parts.netloc}"

    @property
    def api(self) -> str:
        return f"{self.root}/api"


@pytest.fixture(scope="module")
def waiting(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Waiting]:
    """The demo, up to prod's approval request; stopped (every PID) when the module is done."""
    browser.require_chromium()  # before a minute of demo, not after
    demo = Demo.start(tmp_path_factory.mktemp("ui-demo") / "state")
    try:
        pushed: dict[str, str] = {}
        while True:
            match = demo.expect(re.compile(f"{PUSHED.pattern}|{WAITING.pattern}"), TO_WAITING)
            if match.group(1):
                pushed[match.group(1)] = match.group(2)
            else:
                break
        assert {"1.0", "1.1"} <= set(pushed), demo.output()
        yield Waiting(demo, match.group(3), match.group(4), pushed)
    finally:
        demo.stop()
    leftover = [p for p in {*demo.started, *demo.printed} if alive(p, demo.started.get(p))]
    assert not leftover, f"still running after the demo was stopped: {leftover}"


# ---------------------------------------------------------------------------- the browser


@pytest.fixture(scope="module")
def shots(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest) -> Path:
    """Where the screenshots go (kept as a test artifact, never in git)."""
    base = os.environ.get("AIRLOCK_TEST_ARTIFACTS")
    where = (Path(base).resolve() if base else tmp_path_factory.mktemp("ui-browser")) / "ui"
    where.mkdir(parents=True, exist_ok=True)
    for old in where.glob("*.png"):  # an earlier run's, in a kept directory
        old.unlink()
    message = f"\nbrowser test screenshots: {where}"
    capture = request.config.pluginmanager.get_plugin("capturemanager")
    if capture is not None:
        with capture.global_and_fixture_disabled():  # shown on the terminal, pass or fail
            print(message)
    else:
        print(message)
    return where


@pytest.fixture(scope="module")
def driver() -> Iterator[browser.WebDriver]:
    with browser.chromium() as d:
        yield d


# ---------------------------------------------------------------------------- what a person reads


def full_digests(text: str) -> set[str]:
    return set(DIGEST.findall(text))


def assert_shows_full_digest(text: str, digest: str, where: str) -> None:
    """The request names the digest whole (sha256 and 64 hex digits), not an abbreviation."""
    assert digest in full_digests(text), f"{where} does not show {digest} in full:\n{text}"


def requested_digest(text: str) -> str:
    """The digest a request asks about: the first one it shows in full (it leads with it)."""
    found = DIGEST.search(text)
    assert found, f"the request shows no full digest:\n{text}"
    return found.group(0)


def check_request(text: str, digest: str) -> None:
    """The request in the Resume dialog's description is self-contained: the full digest, who
    asked (a push: "registry"), what is needed, the deadline, the policy, and every earlier
    stage's gates with their evidence (qa: tests and scan; staging: the verified signature)."""
    assert_shows_full_digest(text, digest, "the Resume dialog's description")
    hexes = digest.split(":", 1)[1]
    groups = " ".join(hexes[i : i + 8] for i in range(0, len(hexes), 8))
    assert groups in text, "the digest is not also shown in groups that wrap"
    for needle in (
        "requested by registry",
        "needs 1 signed approval from release-manager but the requester (registry)",
        "deadline",
        "policy",
        "Passed qa",
        "tests passed: 12 tests, 0 failed",
        "scan passed",
        "Passed staging",
        "signature verified: cosign signature",
        "verifies with public key 1 (sha256:",
        "evidence:",
    ):
        assert needle in text, f"the request does not show {needle!r}:\n{text}"


def check_digest_field(initial: str, digest: str) -> None:
    """A prefilled digest field, if any, names the requested digest."""
    assert initial in ("", digest), f"the form's digest field is prefilled with {initial!r}"


def check_refusal(text: str) -> None:
    """A refused run's page says it failed and why: its scan gate."""
    assert re.search(r"scan gate refused", text), f"no scan refusal on the run's page:\n{text}"


def stage_rows(lines: list[str]) -> dict[str, list[str]]:
    """The demo's table: stage → its columns (split on whitespace)."""
    stages = ("dev ", "qa ", "staging ", "prod ")
    return {line.split()[0]: line.split() for line in lines if line.startswith(stages)}


def find_run(api: str, version: str) -> dict | None:
    """The pipeline run of app:`version` (its `images` parameter names it)."""
    runs = httpx.post(f"{api}/flow_runs/filter", json={}, timeout=30).json()
    for run in runs:
        images = (run.get("parameters") or {}).get("images") or []
        if any(f"/app:{version}@" in image for image in images):
            return run
    return None


def sign_for(waiting: Waiting) -> str:
    """What `airlock approve RUN --by release-manager --key KEY --print-signature` prints for
    the waiting run (the demo made the key; the command sends nothing)."""
    key = waiting.demo.state / "keys" / f"{APPROVER}.key"
    args = ("approve", waiting.run_id, "--by", APPROVER, "--key", str(key), "--print-signature")
    printed = airlock(*args, env={"PREFECT_API_URL": waiting.api})
    assert printed.returncode == 0, printed.stderr
    [signature] = printed.stdout.split()
    return signature


def until(driver: browser.WebDriver, what: str, check: Callable[[], object], timeout: float):
    """An explicit wait on something other than the page (the Prefect API)."""
    return browser.wait(driver, timeout).until(lambda _: check(), f"timed out: {what}")


# ---------------------------------------------------------------------------- the tests


def test_a_person_approves_prod_in_the_prefect_ui(
    shots: Path, driver: browser.WebDriver, waiting: Waiting
) -> None:
    digest = waiting.pushed["1.0"]
    assert "/v2/" in waiting.url, f"the demo does not point at the V2 UI: {waiting.url}"

    with step(driver, shots, "01-waiting-run"):
        driver.get(waiting.url)
        # the pipeline run itself waits (prod's approval is an hour): suspended, no process held
        browser.wait_for_state(driver, "Suspended")
        browser.wait_for_text(driver, digest)  # the run's log names it
        assert_shows_full_digest(browser.page_text(driver), digest, "the waiting run's page")

    with step(driver, shots, "02-resume-dialog"):
        dialog = browser.open_resume_dialog(driver)
        request = browser.request_text(driver, dialog)
        check_request(request, digest)
        shown = requested_digest(request)  # what a person copies into the form
        assert shown == digest, f"the request names {shown}, CI pushed {digest}"

    with step(driver, shots, "03-form-filled"):
        # approving is a choice: nothing is chosen for the reviewer
        decision = browser.field(dialog, "Decision")
        assert decision.text.strip() == "Select", f"the decision starts as {decision.text!r}"
        browser.choose(driver, dialog, "Decision", "approve")
        browser.type_into(browser.field(dialog, "Approver"), APPROVER)
        digest_field = browser.field(dialog, "Digest")
        initial = digest_field.get_attribute("value") or ""
        check_digest_field(initial, digest)
        if initial != shown:
            browser.type_into(digest_field, shown)
        browser.type_into(browser.field(dialog, "Comment"), "approved in the Prefect UI")
        # prod's approvers sign: the release manager pastes what their key signs for this run
        signature = sign_for(waiting)
        browser.paste_into(driver, browser.field(dialog, "Signature"), signature)
        assert browser.field(dialog, "Approver").get_attribute("value") == APPROVER
        assert digest_field.get_attribute("value") == digest
        assert browser.field(dialog, "Signature").get_attribute("value") == signature

    # the whole form, the request above it: for docs/approvals.md
    form_png = shots / "approval-request.png"
    browser.screenshot_whole_dialog(driver, dialog, form_png)
    if os.environ.get("AIRLOCK_UPDATE_SCREENSHOTS") == "1":
        docs = ROOT / "docs" / "img" / "approval-request.png"
        docs.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(form_png, docs)

    with step(driver, shots, "04-resumed"):
        browser.submit(driver, dialog)
        browser.wait(driver).until(
            lambda d: d.find_elements(
                By.XPATH,
                "//*[@data-slot='badge'][normalize-space()='Resuming' or "
                "normalize-space()='Pending' or normalize-space()='Running' or "
                "normalize-space()='Completed']",
            ),
            "the run did not leave Suspended",
        )

    # the demo goes on: prod gets app:1.0, then the table and the PIDs it left running
    demo = waiting.demo
    left = demo.expect(LEFT_RUNNING, TO_END)
    demo.printed = [int(pid) for pid in left.group(1).split()]
    rows = stage_rows(demo.lines)
    assert set(rows) == {"dev", "qa", "staging", "prod"}, demo.output()
    assert {row[1] for row in rows.values()} == {digest}, demo.output()
    assert rows["prod"][-1] == APPROVER, demo.output()
    assert "$ airlock verify" in demo.output() and "verified for prod" in demo.output()
    assert "app:1.0 pipeline run: Completed" in demo.output()


def test_a_person_reads_why_app_1_1_was_refused_and_finds_the_stage_board(
    shots: Path, driver: browser.WebDriver, waiting: Waiting
) -> None:
    refused = until(
        driver,
        "app:1.1's pipeline run to fail",
        lambda: (run := find_run(waiting.api, "1.1")) and run["state"]["type"] == "FAILED" and run,
        browser.WAIT,
    )
    with step(driver, shots, "05-refused-run"):
        driver.get(f"{waiting.root}/v2/runs/flow-run/{refused['id']}")
        browser.wait_for_state(driver, "Failed")
        browser.wait_for_text(driver, "scan gate refused")  # the run's log (the first tab)
        check_refusal(browser.page_text(driver))

    with step(driver, shots, "06-refused-run-details"):
        browser.open_tab(driver, "Details")
        check_refusal(browser.detail(driver, "State Message").text)

    with step(driver, shots, "07-artifacts"):
        driver.get(f"{waiting.root}/v2/artifacts")
        browser.wait_for_text(driver, "airlock-stage-board")
