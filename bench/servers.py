"""What the benches share: a temporary work directory with a Debian docker-registry in it,
and a Supervisor that stops every process started there (newest first) and removes the
directory."""

from __future__ import annotations

import argparse
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from airlock.localregistry import LocalRegistry, start_registry
from airlock.supervisor import Supervisor


@contextmanager
def workspace(prefix: str) -> Iterator[tuple[Path, LocalRegistry, Supervisor]]:
    """(work directory, its registry, the supervisor of both); all gone on the way out."""
    work = Path(tempfile.mkdtemp(prefix=prefix))
    with Supervisor() as sup:
        sup.on_close(lambda: shutil.rmtree(work, ignore_errors=True))
        registry = sup.adopt(start_registry(work / "registry"))
        yield work, registry, sup


def arguments(doc: str, **counts: int) -> argparse.Namespace:
    """The command line of a bench: `--NAME N` for each count (its default given here)."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    for name, default in counts.items():
        parser.add_argument(f"--{name}", type=int, default=default)
    return parser.parse_args()
