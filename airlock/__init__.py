"""airlock: promote container images by digest through gated stages."""

from __future__ import annotations


def __getattr__(name: str) -> str:
    """`airlock.__version__`, from registry/version.py (the one place it is read), on first use."""
    if name == "__version__":
        from registry.version import version

        return version()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
