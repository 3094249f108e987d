"""Registries behind a fault-injecting proxy (tests/support/faultproxy.py)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, fields

import pytest

from tests.conftest import Reg
from tests.support.faultproxy import FaultProxy


@dataclass
class ProxiedReg(Reg):
    """A `Reg` whose host is the proxy: clients go through the faults, `pusher` goes direct."""

    proxy: FaultProxy | None = None

    @property
    def host(self) -> str:
        assert self.proxy is not None
        return self.proxy.host

    @property
    def direct_host(self) -> str:
        return self.server.host

    @property
    def faults(self) -> FaultProxy:
        assert self.proxy is not None
        return self.proxy


@pytest.fixture
def proxied_registry(registry: Reg) -> Iterator[ProxiedReg]:
    with FaultProxy(registry.host) as proxy:
        yield ProxiedReg(
            **{f.name: getattr(registry, f.name) for f in fields(registry)}, proxy=proxy
        )
