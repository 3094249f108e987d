"""AIRLOCK_DEBUG=1: airlock's own errors keep their one line and exit code, with the traceback
printed before that line; without it, the one line only."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

AIRLOCK = str(Path(sys.executable).parent / "airlock")
BAD = ["copy", "localhost:5000/Bad Ref:1.0", "localhost:5000/prod/app"]


def _airlock(*args: str, debug: str | None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "AIRLOCK_DEBUG"}
    if debug is not None:
        env["AIRLOCK_DEBUG"] = debug
    return subprocess.run(
        [AIRLOCK, *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        stdin=subprocess.DEVNULL,
    )


def test_debug_prints_the_traceback_then_the_one_line() -> None:
    proc = _airlock(*BAD, debug="1")
    assert proc.returncode == 2, proc.stderr
    assert proc.stdout == ""
    lines = proc.stderr.strip().splitlines()
    assert lines[0] == "Traceback (most recent call last):", proc.stderr
    assert any("registry/reference.py" in line for line in lines), proc.stderr
    assert lines[-2].startswith("registry.errors.InvalidReference: invalid repository name")
    assert lines[-1].startswith("airlock: error: invalid repository name 'Bad Ref'"), lines[-1]
    assert proc.stderr.count("airlock: error:") == 1


@pytest.mark.parametrize("debug", [None, ""])
def test_without_debug_one_line_and_no_traceback(debug: str | None) -> None:
    proc = _airlock(*BAD, debug=debug)
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("airlock: error: invalid repository name")
