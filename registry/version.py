"""airlock's version, from one place: the installed distribution's metadata, or pyproject.toml
beside the sources when airlock is not installed. Everything that names the version (the
User-Agent, `airlock --version`, promotion records) reads it here.

Read once, on first use. The installed version is read from the name of airlock's .dist-info
directory, found on sys.path as importlib.metadata finds it; importlib.metadata itself (~40 ms of
imports, as much again as the rest of `airlock --version`) is asked only when there is no such
directory (an egg, a zip).
"""

from __future__ import annotations

import functools
import os
import sys
from pathlib import Path

UNKNOWN = "0+unknown"


@functools.cache
def version() -> str:
    return (
        _dist_info()
        or _metadata()
        or _from_pyproject(Path(__file__).resolve().parent.parent / "pyproject.toml")
    )


def _dist_info() -> str | None:
    """`0.1.0` from the first `airlock-0.1.0.dist-info` on sys.path, if any."""
    for entry in sys.path:
        try:
            names = os.listdir(entry or ".")
        except OSError:  # a missing directory, a zip file
            continue
        for name in names:
            lowered = name.lower()
            if lowered.startswith("airlock-") and lowered.endswith(".dist-info"):
                return name[len("airlock-") : -len(".dist-info")]
    return None


def _metadata() -> str | None:
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as installed

    try:
        return installed("airlock")
    except PackageNotFoundError:
        return None


def _from_pyproject(path: Path) -> str:
    import tomllib

    try:
        project = tomllib.loads(path.read_text(encoding="utf-8")).get("project", {})
    except (OSError, ValueError):
        return UNKNOWN
    if project.get("name") != "airlock" or not isinstance(project.get("version"), str):
        return UNKNOWN
    return project["version"]


def __getattr__(name: str) -> str:
    """`from registry.version import __version__` (PEP 562): read when first asked for."""
    if name == "__version__":
        return version()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
