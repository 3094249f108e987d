"""Shared fixtures: real registries (Debian docker-registry) on free loopback ports.

Each test gets fresh registries with temp storage (they start in ~40 ms) and they are stopped by
PID at the end. Auth registries come with a "backdoor": a second, unauthenticated registry process
on the same storage, which tests use to seed images and read results without going through the
auth code under test.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from airlock.localregistry import LocalRegistry, start_registry
from airlock.supervisor import Supervisor
from tests.support.registries import Reg
from tests.support.registries import reg_of as _reg
from tests.support.tokenserver import TokenServer, User


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def docker_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty DOCKER_CONFIG, so the developer's own ~/.docker never leaks into tests."""
    d = tmp_path / "docker-config"
    d.mkdir()
    monkeypatch.setenv("DOCKER_CONFIG", str(d))
    return d


def _serving(server: LocalRegistry, backdoor: LocalRegistry | None = None) -> Iterator[Reg]:
    """A `Reg` over started registries; its pusher closed and the registries stopped after."""
    with Supervisor() as sup:
        sup.adopt(server)
        if backdoor is not None:
            sup.adopt(backdoor)
        reg = _reg(server, backdoor)
        sup.on_close(reg.pusher.close)
        yield reg


def _with_backdoor(base: Path, **kw: Any) -> Iterator[Reg]:
    """A registry under `base` (with auth) and an unauthenticated one on the same storage."""
    server = start_registry(base, **kw)
    yield from _serving(
        server, start_registry(base.parent / f"{base.name}-backdoor", storage_root=server.root)
    )


@pytest.fixture
def registry(tmp_path: Path, docker_config: Path) -> Iterator[Reg]:
    yield from _serving(start_registry(tmp_path / "reg1"))


@pytest.fixture
def registry2(tmp_path: Path, docker_config: Path) -> Iterator[Reg]:
    yield from _serving(start_registry(tmp_path / "reg2"))


@pytest.fixture
def htpasswd_registry(tmp_path: Path, docker_config: Path) -> Iterator[Reg]:
    """Basic auth: alice/wonderland."""
    base = tmp_path / "htpasswd"
    base.mkdir()
    line = subprocess.run(
        ["htpasswd", "-Bbn", "alice", "wonderland"], capture_output=True, text=True, check=True
    ).stdout
    (base / "htpasswd").write_text(line)
    auth = {"htpasswd": {"realm": "airlock-test", "path": str(base / "htpasswd")}}
    yield from _with_backdoor(base, auth=auth)


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
    yield from _with_backdoor(tmp_path / "tokreg", auth=token_server.registry_auth_config())
