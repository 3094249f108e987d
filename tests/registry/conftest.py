"""Registries behind a fault-injecting proxy (tests/support/faultproxy.py)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import fields

import pytest

from tests.support.faultproxy import FaultProxy
from tests.support.registries import ProxiedReg, Reg


@pytest.fixture
def proxied_registry(registry: Reg) -> Iterator[ProxiedReg]:
    with FaultProxy(registry.host) as proxy:
        yield ProxiedReg(
            **{f.name: getattr(registry, f.name) for f in fields(registry)}, proxy=proxy
        )
