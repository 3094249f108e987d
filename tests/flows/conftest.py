"""Fixtures for the Prefect flows: one Prefect test server per test run, pipelines, evidence.

`prefect_api` enters `prefect_test_harness` once per session (~13 s), only when a test under
tests/flows/ asks for it: tests/flows/test_config.py does not, nor does the rest of the suite.
"""

from __future__ import annotations

import atexit
import logging
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.flows.helpers import Setup
from tests.support.registries import Reg

# Prefect reads its settings (and creates PREFECT_HOME) when it is first imported, which is when
# the test modules of this folder are collected; point it at a throw-away home before that, and
# keep it out of analytics. Subprocesses (the CLI tests) inherit these too.
_PREFECT_HOME = tempfile.mkdtemp(prefix="airlock-prefect-home-")
os.environ["PREFECT_HOME"] = _PREFECT_HOME
os.environ["DO_NOT_TRACK"] = "1"
os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
atexit.register(shutil.rmtree, _PREFECT_HOME, ignore_errors=True)


@pytest.fixture(scope="session")
def prefect_api() -> Iterator[str]:
    """A Prefect server (prefect_test_harness) for the whole run; yields its API URL."""
    from prefect.settings import (
        PREFECT_API_URL,
        PREFECT_HOME,
        PREFECT_SERVER_ANALYTICS_ENABLED,
        temporary_settings,
    )
    from prefect.testing.utilities import prefect_test_harness

    prefect_logger = logging.getLogger("prefect")
    level = prefect_logger.level
    prefect_logger.setLevel(logging.WARNING)  # flow and task INFO lines drown failures
    try:
        with (
            temporary_settings(
                updates={
                    PREFECT_HOME: Path(_PREFECT_HOME),
                    PREFECT_SERVER_ANALYTICS_ENABLED: False,
                }
            ),
            prefect_test_harness(),
        ):
            url = PREFECT_API_URL.value()
            assert url, "prefect_test_harness set no PREFECT_API_URL"
            yield url
    finally:
        prefect_logger.setLevel(level)


@pytest.fixture
def setup(registry: Reg, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Setup:
    """The default pipeline (dev → qa → staging → prod) on a fresh registry; the flows run in
    this process read it, as they read the one `airlock promote --pipeline` names."""
    s = Setup(registry, tmp_path / "pipeline.yaml")
    s.write()
    monkeypatch.setenv("AIRLOCK_PIPELINE", s.file)
    return s


@pytest.fixture
def cli_env(prefect_api: str) -> Iterator[dict[str, str]]:
    """The environment of an `airlock` subprocess that talks to the test's Prefect server; every
    stage is unfrozen again afterwards (one server serves the whole session)."""
    from prefect.variables import Variable

    from flows.freeze import variable

    yield {"PREFECT_API_URL": prefect_api}
    for stage in ("dev", "qa", "staging", "prod"):
        Variable.unset(variable(stage))


@pytest.fixture
def fast_approval_polls(monkeypatch: pytest.MonkeyPatch) -> None:
    """A paused promotion notices a resume within 0.2 s instead of 2 s (speed only: the tests
    wait for states, never for time)."""
    import flows.approvals

    monkeypatch.setattr(flows.approvals, "APPROVAL_POLL_SECONDS", 0.2)
