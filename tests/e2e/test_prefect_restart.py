"""The Prefect server is restarted while a promotion waits for its approval: `airlock promote`
(a process of its own, paused) rides through the outage, the approval given after the restart
reaches it, and the promotion completes. The server is a real `prefect server` on SQLite, its
own for this test so that restarting it disturbs no other test."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from airlock.demo import Api
from airlock.supervisor import stop
from tests.flows.helpers import Setup
from tests.support.cli import AIRLOCK
from tests.support.prefect import PrefectServer
from tests.support.registries import Reg

WAIT = 120.0


@pytest.fixture
def own_server(tmp_path: Path) -> Iterator[PrefectServer]:
    home = tmp_path / "prefect"
    home.mkdir()
    server = PrefectServer(home)
    server.start()
    yield server
    server.stop()


def test_a_waiting_promotion_survives_a_prefect_server_restart(
    own_server: PrefectServer, registry: Reg, tmp_path: Path
) -> None:
    setup = Setup(registry, tmp_path / "pipeline.yaml")
    setup.write(gates={"qa": [{"kind": "approval", "policy": {"required": 1}, "timeout": "5m"}]})
    img = setup.push("prefect-restart")
    env = own_server.env()
    log = (tmp_path / "promote.log").open("wb")
    command = [AIRLOCK, "promote", setup.ref("dev"), "--to", "qa", "--pipeline", setup.file]
    promoting = subprocess.Popen(
        [*command, "--by", "ci"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=log,
        text=True,
    )
    try:
        deadline = time.monotonic() + WAIT
        requests = Api(own_server.api)
        while (run := requests.waiting_approval("dev/app", stage="qa")) is None:
            assert promoting.poll() is None, (tmp_path / "promote.log").read_text()
            assert time.monotonic() < deadline, "the promotion never paused for its approval"
            time.sleep(0.2)

        first_pid = own_server.proc.pid if own_server.proc else None
        own_server.restart()  # the paused promotion polls a server that is gone, then back
        assert own_server.proc is not None and own_server.proc.pid != first_pid
        assert setup.digest("qa") is None

        approved = subprocess.run(
            [AIRLOCK, "approve", run["id"], "--by", "bob"],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert approved.returncode == 0, approved.stderr
        out, _ = promoting.communicate(timeout=WAIT)
    finally:
        stop(promoting)
        log.close()
    assert promoting.returncode == 0, (tmp_path / "promote.log").read_text()[-3000:]
    assert img.digest in out, out
    assert setup.digest("qa") == img.digest
