"""The `airlock` command as scripts run it: a subprocess, its exit code, stdout and stderr."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

AIRLOCK = str(Path(sys.executable).parent / "airlock")


def airlock(
    *args: str, env: dict[str, str] | None = None, stdin: str = ""
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [AIRLOCK, *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **(env or {})},
        input=stdin,
    )


async def run_cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """`airlock ARGS` in a thread, so flows in this process keep running meanwhile."""
    return await asyncio.to_thread(airlock, *args, env=env)


def assert_one_line_error(proc: subprocess.CompletedProcess[str], code: int, *needles: str) -> None:
    assert proc.returncode == code, (proc.returncode, proc.stderr)
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("airlock: error: "), proc.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]
    assert proc.stdout == ""


def assert_refusal(proc: subprocess.CompletedProcess[str], code: int, *needles: str) -> str:
    """Exit `code`, one `airlock: error:` line naming the needles, no traceback; Prefect's own
    log lines may be on stderr too."""
    assert proc.returncode == code, (proc.returncode, proc.stdout, proc.stderr)
    errors = [line for line in proc.stderr.splitlines() if line.startswith("airlock: error: ")]
    assert len(errors) == 1, proc.stderr
    for needle in needles:
        assert needle in errors[0], errors[0]
    assert proc.stdout == ""
    assert "Traceback" not in proc.stderr, proc.stderr
    return errors[0]
