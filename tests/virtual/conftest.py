"""A virtual registry gateway (`airlock virtual serve`, a process of its own) over a real
registry, for the tests of this folder."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import yaml

from airlock.localregistry import LocalRegistry, free_port, start_registry
from tests.airlock.test_cli import AIRLOCK
from tests.e2e.conftest import stop, wait_http
from tests.support.images import Pusher

PASSWORD = "alice-gw-pw"
TOKEN = "ci-gw-token-9b1e"


@dataclass
class Gw:
    url: str  # http://127.0.0.1:PORT
    host: str
    local: LocalRegistry
    pusher: Pusher  # straight to the member registry
    log: Path
    config: Path  # virtual.yaml
    upstream: Pusher  # the registry behind the pull-through cache (a stand-in for Docker Hub)

    def get(self, path: str, *, auth: bool = False, **kw: object) -> httpx.Response:
        return httpx.get(f"{self.url}{path}", auth=("alice", PASSWORD) if auth else None, **kw)


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gw]:
    base = tmp_path_factory.mktemp("virtual")
    local = start_registry(base / "local")
    # a remote: distribution as a pull-through cache of an upstream registry
    upstream = start_registry(base / "upstream")
    cache = start_registry(base / "cache", extra={"proxy": {"remoteurl": upstream.url}})
    config = {
        "registries": {"local": {"url": local.host}, "hub": {"url": cache.host}},
        "users": {
            "alice": {"password_env": "GW_ALICE_PASSWORD"},
            "ci": {"token_env": "GW_CI_TOKEN"},
        },
        "repositories": {
            "docker": {
                "members": [
                    {"registry": "local", "prefix": "dev"},
                    {"registry": "local", "prefix": "prod"},
                    {"registry": "hub", "prefix": "library"},
                ],
                "deploy": {"registry": "local", "prefix": "dev"},
                "read": ["alice", "ci"],
                "write": ["alice"],
            },
            "customers": {
                "members": [{"registry": "local", "prefix": "prod"}],
                "read": ["anonymous"],
            },
            "shop": {  # the production view: only what airlock promoted into prod
                "members": [{"registry": "local", "prefix": "prod"}],
                "read": ["anonymous"],
                "require_stage": "prod",
            },
            "secret": {  # alice may not see it (only ci may read)
                "members": [{"registry": "local", "prefix": "secret"}],
                "deploy": {"registry": "local", "prefix": "secret"},
                "read": ["ci"],
            },
        },
    }
    (base / "virtual.yaml").write_text(yaml.safe_dump(config))
    port = free_port()
    env = {
        **os.environ,
        "GW_ALICE_PASSWORD": PASSWORD,
        "GW_CI_TOKEN": TOKEN,
        "DOCKER_CONFIG": str(base),
    }
    log = base / "gateway.log"
    command = [AIRLOCK, "virtual", "serve", "--config", str(base / "virtual.yaml")]
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [*command, "--port", str(port)],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    pusher, upstream_pusher = Pusher(local.url), Pusher(upstream.url)
    try:
        wait_http(f"http://127.0.0.1:{port}/healthz", proc, log)
        yield Gw(
            f"http://127.0.0.1:{port}",
            f"127.0.0.1:{port}",
            local,
            pusher,
            log,
            base / "virtual.yaml",
            upstream_pusher,
        )
    finally:
        stop(proc)
        pusher.close()
        upstream_pusher.close()
        for registry in (local, cache, upstream):
            registry.stop()
