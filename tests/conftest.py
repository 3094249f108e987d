"""Shared fixtures: real registries (Debian docker-registry) on free loopback ports.

Each test gets fresh registries with temp storage (they start in ~40 ms) and they are stopped by
PID at the end. Auth registries come with a "backdoor": a second, unauthenticated registry process
on the same storage, which tests use to seed images and read results without going through the
auth code under test.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from airlock.localregistry import LocalRegistry, start_registry
from registry.client import RegistryClient, RetryPolicy
from tests.support.images import Pusher
from tests.support.tokenserver import TokenServer, User

FAST_RETRY = RetryPolicy(attempts=3, base_delay=0.01, max_delay=0.05, total=10.0)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@dataclass
class Reg:
    """A registry under test plus an independent pusher/reader for it (unauthenticated)."""

    server: LocalRegistry
    pusher: Pusher
    backdoor: LocalRegistry | None = None

    @property
    def host(self) -> str:
        return self.server.host

    def client(self, **kw: object) -> RegistryClient:
        kw.setdefault("retry", FAST_RETRY)
        return RegistryClient(self.host, **kw)  # type: ignore[arg-type]


def _reg(server: LocalRegistry, backdoor: LocalRegistry | None = None) -> Reg:
    return Reg(server, Pusher((backdoor or server).url), backdoor)


@pytest.fixture
def docker_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty DOCKER_CONFIG, so the developer's own ~/.docker never leaks into tests."""
    d = tmp_path / "docker-config"
    d.mkdir()
    monkeypatch.setenv("DOCKER_CONFIG", str(d))
    return d


@pytest.fixture
def registry(tmp_path: Path, docker_config: Path) -> Iterator[Reg]:
    server = start_registry(tmp_path / "reg1")
    reg = _reg(server)
    yield reg
    reg.pusher.close()
    server.stop()


@pytest.fixture
def registry2(tmp_path: Path, docker_config: Path) -> Iterator[Reg]:
    server = start_registry(tmp_path / "reg2")
    reg = _reg(server)
    yield reg
    reg.pusher.close()
    server.stop()


@pytest.fixture
def htpasswd_registry(tmp_path: Path, docker_config: Path) -> Iterator[Reg]:
    """Basic auth: alice/wonderland."""
    base = tmp_path / "htpasswd"
    base.mkdir()
    line = subprocess.run(
        ["htpasswd", "-Bbn", "alice", "wonderland"], capture_output=True, text=True, check=True
    ).stdout
    (base / "htpasswd").write_text(line)
    server = start_registry(
        base, auth={"htpasswd": {"realm": "airlock-test", "path": str(base / "htpasswd")}}
    )
    backdoor = start_registry(tmp_path / "htpasswd-backdoor", storage_root=server.root)
    reg = _reg(server, backdoor)
    yield reg
    reg.pusher.close()
    server.stop()
    backdoor.stop()


@pytest.fixture
def token_server(tmp_path: Path) -> Iterator[TokenServer]:
    ts = TokenServer(
        tmp_path / "token",
        users={
            "admin": User("admin-pw", {"*": ["pull", "push", "delete"], "registry:catalog": ["*"]}),
            "dev": User("dev-pw", {"dev/*": ["pull", "push"]}),
            "promoter": User("promoter-pw", {"dev/*": ["pull"], "prod/*": ["pull", "push"]}),
            "reader": User("reader-pw", {"*": ["pull"]}),
        },
    )
    yield ts
    ts.stop()


@pytest.fixture
def token_registry(tmp_path: Path, token_server: TokenServer, docker_config: Path) -> Iterator[Reg]:
    server = start_registry(tmp_path / "tokreg", auth=token_server.registry_auth_config())
    backdoor = start_registry(tmp_path / "tokreg-backdoor", storage_root=server.root)
    reg = _reg(server, backdoor)
    yield reg
    reg.pusher.close()
    server.stop()
    backdoor.stop()
