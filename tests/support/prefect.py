"""The scale-out set-up's servers for the tests: a throw-away PostgreSQL cluster (Debian's
`postgresql`, on a free loopback port) and `prefect server start` (airlock.supervisor's), with
the environment of a process that talks to that server."""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from airlock import supervisor
from airlock.supervisor import Supervisor, free_port


@dataclass
class PrefectServer(supervisor.PrefectServer):
    """`prefect server start` on loopback (no UI), its home (and SQLite database, unless
    `db_url` names another) in `home`, its log in home/server.log."""

    def __post_init__(self) -> None:
        # a webhook receiver keeps the event ids it sent here, not in the home folder
        self.extra_env.setdefault("AIRLOCK_WEBHOOK_STATE", str(self.home / "webhooks.sqlite"))

    def env(self, **extra: str) -> dict[str, str]:
        """The environment of a process that talks to this server (and nothing else)."""
        return self.client_env(**{**self.extra_env, **extra})


def _pg_bin() -> Path:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/postgres"), key=_version)
    if not found:
        pytest.fail("PostgreSQL is not installed: run scripts/bootstrap.sh (apt-get postgresql)")
    return Path(found[-1]).parent


def _version(path: str) -> int:
    return int(Path(path).parts[-3])


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

    def ready(self) -> bool:
        ready = [self.bin / "pg_isready", "-h", "127.0.0.1", "-p", str(self.port), "-q"]
        return subprocess.run(ready, check=False).returncode == 0


@contextmanager
def postgres_cluster() -> Iterator[Postgres]:
    """A PostgreSQL cluster of its own (trust auth, loopback only, no fsync: it is thrown away),
    stopped and removed on the way out."""
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
    cluster = Postgres(free_port(), pg)
    command = [*as_user, pg / "postgres", "-D", data, "-h", "127.0.0.1", "-p", str(cluster.port)]
    command += ["-k", base, "-c", "fsync=off", "-c", "max_connections=200"]
    with Supervisor() as sup:
        sup.on_close(lambda: shutil.rmtree(base, ignore_errors=True))
        sup.start("PostgreSQL", command, log=base / "postgres.log", ready=cluster.ready)

        def stop_postmaster() -> None:
            # runuser may not pass signals on: stop the postmaster itself, by the PID it wrote
            pid_file = data / "postmaster.pid"
            if pid_file.exists():
                os.kill(int(pid_file.read_text().split()[0]), signal.SIGTERM)

        sup.on_close(stop_postmaster)
        yield cluster


def deploy_all(root: Path, env: dict[str, str]) -> None:
    """As docs/deployments.md says: the `airlock` pool from work-pool.json, then `prefect deploy
    --all` in the checkout `root` (PWD as the shell there sets it: prefect.yaml's pull step)."""
    template = str(root / "work-pool.json")
    pool = ["work-pool", "create", "airlock", "--type", "process", "--overwrite"]
    for step in ([*pool, "--base-job-template", template], ["--no-prompt", "deploy", "--all"]):
        done = subprocess.run(
            [sys.executable, "-m", "prefect", *step],
            cwd=root,
            env={**env, "PWD": str(root)},
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert done.returncode == 0, done.stdout + done.stderr
