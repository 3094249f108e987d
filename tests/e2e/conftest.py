"""The scale-out set-up, for real: PostgreSQL (Debian's `postgresql`, a throw-away cluster on a
free loopback port), a `prefect server` on it, and airlock's processes talking to that server.

Everything here is a subprocess stopped by PID at the end of the session; nothing is mocked.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from airlock.localregistry import free_port

READY = 60.0  # seconds a server may take to come up


def _pg_bin() -> Path:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/postgres"), key=_version)
    if not found:
        pytest.fail("PostgreSQL is not installed: run scripts/bootstrap.sh (apt-get postgresql)")
    return Path(found[-1]).parent


def _version(path: str) -> int:
    return int(Path(path).parts[-3])


def stop(proc: subprocess.Popen, timeout: float = 20) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@dataclass(frozen=True)
class Postgres:
    port: int
    bin: Path

    @property
    def url(self) -> str:
        return f"postgresql+asyncpg://postgres@127.0.0.1:{self.port}/postgres"

    def connect(self, tool: str) -> list[str]:
        return [str(self.bin / tool), "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres"]

    def query(self, sql: str) -> str:
        """One value, read with psql (independently of Prefect)."""
        out = subprocess.run(
            [*self.connect("psql"), "-d", "postgres", "-tAc", sql],
            capture_output=True,
            text=True,
            check=True,
        )
        return out.stdout.strip()


@pytest.fixture(scope="session")
def postgres() -> Iterator[Postgres]:
    """A PostgreSQL cluster of its own (trust auth, loopback only, no fsync: it is thrown away)."""
    pg = _pg_bin()
    base = Path(tempfile.mkdtemp(prefix="airlock-pg-"))
    data = base / "data"
    # PostgreSQL refuses to run as root: as root (CI here), run it as the package's user.
    as_user: list[str] = []
    if os.geteuid() == 0:
        pw = pwd.getpwnam("postgres")
        os.chown(base, pw.pw_uid, pw.pw_gid)
        as_user = ["runuser", "-u", "postgres", "--"]
    subprocess.run(
        [*as_user, pg / "initdb", "-D", data, "-A", "trust", "-U", "postgres", "--no-sync"],
        check=True,
        capture_output=True,
    )
    port = free_port()
    log = (base / "postgres.log").open("wb")
    command = [*as_user, pg / "postgres", "-D", data, "-h", "127.0.0.1", "-p", str(port)]
    command += ["-k", base, "-c", "fsync=off", "-c", "max_connections=200"]
    proc = subprocess.Popen(
        command,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + READY
        while subprocess.run(
            [pg / "pg_isready", "-h", "127.0.0.1", "-p", str(port), "-q"], check=False
        ).returncode:
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"PostgreSQL did not start: {(base / 'postgres.log').read_text()}")
            time.sleep(0.1)
        yield Postgres(port, pg)
    finally:
        # runuser may not pass signals on: stop the postmaster itself, by the PID it wrote
        pid_file = data / "postmaster.pid"
        if pid_file.exists():
            os.kill(int(pid_file.read_text().split()[0]), signal.SIGTERM)
        stop(proc)
        log.close()
        shutil.rmtree(base, ignore_errors=True)


@dataclass
class PrefectServer:
    """`prefect server start` on loopback, with its home (and SQLite database, unless `db_url`
    names another) in `home`; start, stop and restart keep the port and the data."""

    home: Path
    port: int = field(default_factory=free_port)
    db_url: str | None = None
    proc: subprocess.Popen | None = None

    @property
    def api(self) -> str:
        return f"http://127.0.0.1:{self.port}/api"

    def env(self, **extra: str) -> dict[str, str]:
        """The environment of a process that talks to this server (and nothing else)."""
        env = {
            **os.environ,
            "PREFECT_API_URL": self.api,
            "PREFECT_HOME": str(self.home),
            "DO_NOT_TRACK": "1",
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            # a webhook receiver keeps the event ids it sent here, not in the home folder
            "AIRLOCK_WEBHOOK_STATE": str(self.home / "webhooks.sqlite"),
        }
        env.update(extra)
        return env

    def start(self) -> None:
        env = self.env()
        env.pop("PREFECT_API_URL")
        if self.db_url:
            env["PREFECT_SERVER_DATABASE_CONNECTION_URL"] = self.db_url
        command = [sys.executable, "-m", "prefect", "server", "start", "--no-ui"]
        command += ["--host", "127.0.0.1", "--port", str(self.port)]
        with (self.home / "server.log").open("ab") as log:
            self.proc = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)
        wait_http(f"{self.api}/health", self.proc, self.home / "server.log")

    def stop(self) -> None:
        if self.proc is not None:
            stop(self.proc)

    def restart(self) -> None:
        self.stop()
        self.start()


@pytest.fixture(scope="session")
def prefect_server(postgres: Postgres) -> Iterator[PrefectServer]:
    """`prefect server start` on the PostgreSQL above, services (triggers, automations) on."""
    server = PrefectServer(
        Path(tempfile.mkdtemp(prefix="airlock-e2e-prefect-")), db_url=postgres.url
    )
    try:
        server.start()
        yield server
    finally:
        server.stop()
        shutil.rmtree(server.home, ignore_errors=True)


def wait_http(
    url: str, proc: subprocess.Popen, log: Path, timeout: float = READY, status: int = 200
) -> None:
    """Until `url` answers `status` (the process's own readiness, not a sleep)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"{url}: the process exited: {log.read_text()[-3000:]}")
        try:
            if httpx.get(url, timeout=2).status_code == status:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    pytest.fail(f"{url} did not come up in {timeout:.0f} s: {log.read_text()[-3000:]}")
