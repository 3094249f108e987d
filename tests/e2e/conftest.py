"""The scale-out set-up, for real: PostgreSQL (Debian's `postgresql`, a throw-away cluster on a
free loopback port), a `prefect server` on it, and airlock's processes talking to that server.

Everything here is a subprocess stopped by PID at the end of the session; nothing is mocked.
The servers themselves are tests/support/prefect.py's.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.prefect import Postgres, PrefectServer, postgres_cluster


@pytest.fixture(scope="session")
def postgres() -> Iterator[Postgres]:
    """A PostgreSQL cluster of its own (trust auth, loopback only, no fsync: it is thrown away)."""
    with postgres_cluster() as cluster:
        yield cluster


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
