"""A virtual registry gateway (`airlock virtual serve`, a process of its own) over a real
registry, for the tests of this folder (tests/support/gateway.py)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from airlock.supervisor import Supervisor
from tests.support.gateway import Gw, start_gateway


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gw]:
    with Supervisor() as sup:
        yield start_gateway(tmp_path_factory.mktemp("virtual"), sup)
