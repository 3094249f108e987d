"""`airlock demo --keep --interactive` as a process of the tests: its stdout read line by line
as it comes, and everything it started stopped by PID at the end (never by name)."""

from __future__ import annotations

import contextlib
import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from airlock.supervisor import stop

ROOT = Path(__file__).resolve().parents[2]
STOP_WAIT = 20.0  # seconds a stopped process may take to exit before it is killed


def _stat(pid: int) -> tuple[int, str, int] | None:
    """(parent PID, state, start time) of a live process, from /proc (None if gone)."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text[text.rindex(")") + 2 :].split()  # after "pid (comm) "
    return int(fields[1]), fields[0], int(fields[19])


def descendants(pid: int) -> dict[int, int]:
    """Every process below `pid`, with its start time (to never signal a reused PID)."""
    children: dict[int, list[tuple[int, int]]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and (stat := _stat(int(entry.name))):
            children.setdefault(stat[0], []).append((int(entry.name), stat[2]))
    found: dict[int, int] = {}
    todo = [pid]
    while todo:
        for child, started in children.get(todo.pop(), []):
            if child not in found:
                found[child] = started
                todo.append(child)
    return found


def alive(pid: int, started: int | None) -> bool:
    stat = _stat(pid)
    return stat is not None and stat[1] != "Z" and started in (None, stat[2])


def stop_pid(pid: int, started: int | None) -> None:
    """SIGTERM, wait for the exit, SIGKILL if it does not come (by PID, never by name)."""
    if not alive(pid, started):
        return
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + STOP_WAIT
    while alive(pid, started) and time.monotonic() < deadline:
        time.sleep(0.1)  # polling a process's exit, not hiding a race
    if alive(pid, started):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


@dataclass
class Demo:
    """`airlock demo --keep --interactive`, its stdout read line by line as it comes."""

    proc: subprocess.Popen
    state: Path
    lines: list[str] = field(default_factory=list)
    started: dict[int, int] = field(default_factory=dict)  # every process below it, ever seen
    printed: list[int] = field(default_factory=list)  # the PIDs of its `left running` line
    _queue: queue.Queue[str | None] = field(default_factory=queue.Queue)

    @classmethod
    def start(cls, state: Path) -> Demo:
        command = [sys.executable, "-m", "airlock.cli", "demo", "--keep", "--interactive"]
        proc = subprocess.Popen(
            [*command, "--state-dir", str(state)],
            cwd=ROOT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            bufsize=1,
        )
        demo = cls(proc, state)
        threading.Thread(target=demo._read, daemon=True).start()
        return demo

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.started.update(descendants(self.proc.pid))  # while they are still below it
            self._queue.put(line.rstrip("\n"))
        self._queue.put(None)

    def expect(self, pattern: re.Pattern[str], timeout: float) -> re.Match[str]:
        """Read lines until one matches (fails with everything printed so far otherwise)."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            try:
                line = self._queue.get(timeout=max(left, 0.01))
            except queue.Empty:
                pytest.fail(
                    f"the demo never printed {pattern.pattern!r} in {timeout:.0f} s:\n"
                    f"{self.output()}"
                )
            if line is None:
                pytest.fail(
                    f"the demo exited ({self.proc.wait()}) before {pattern.pattern!r}:"
                    f"\n{self.output()}"
                )
            self.lines.append(line)
            if match := pattern.search(line):
                return match

    def output(self) -> str:
        logs = self.state / "logs"
        return "\n".join(self.lines) + f"\n(the services' logs: {logs})"

    def stop(self) -> None:
        """Everything it started, by PID: the ones it printed newest first (the Prefect server
        last: the runner pauses its deployments through it on the way out), then itself, then
        whatever else was seen below it (the server's uvicorn, a run's process)."""
        if self.proc.poll() is None:
            self.started.update(descendants(self.proc.pid))
        for pid in reversed(self.printed):
            stop_pid(pid, self.started.get(pid))
        stop(self.proc, STOP_WAIT)
        for pid in sorted(self.started, reverse=True):
            stop_pid(pid, self.started[pid])
