"""Process-wide HTTP tuning, applied explicitly: entry points call tune_http() at start-up.

Importing registry/ changes nothing process-wide; a library user who never calls tune_http() gets
httpcore's defaults, and copies still work, only with more CPU per byte.
"""

from __future__ import annotations

import httpcore

READ_CHUNK = 1024 * 1024


def tune_http() -> None:
    """Let httpcore read up to READ_CHUNK per recv() instead of 64 KiB: with 1 MiB reads a
    streamed copy costs ~20 % less CPU and wall time (bench/README.md). It is a class attribute,
    so this applies to the whole process, and only bounds how much one recv() may return.
    Idempotent; it never lowers a larger value set elsewhere."""
    if getattr(httpcore.AsyncHTTP11Connection, "READ_NUM_BYTES", 0) < READ_CHUNK:
        httpcore.AsyncHTTP11Connection.READ_NUM_BYTES = READ_CHUNK
