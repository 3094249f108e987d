"""A registry under test (`Reg`) with its independent pusher, and one behind a fault proxy."""

from __future__ import annotations

from dataclasses import dataclass

from airlock.localregistry import LocalRegistry
from registry.client import RegistryClient, RetryPolicy
from tests.support.faultproxy import FaultProxy
from tests.support.images import Pusher

FAST_RETRY = RetryPolicy(attempts=3, base_delay=0.01, max_delay=0.05, total=10.0)


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


def reg_of(server: LocalRegistry, backdoor: LocalRegistry | None = None) -> Reg:
    """A `Reg` for `server`, its pusher going through `backdoor` when there is one."""
    return Reg(server, Pusher((backdoor or server).url), backdoor)


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
