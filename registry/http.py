"""Process-wide HTTP tuning, applied explicitly: entry points call tune_http() at start-up.

Importing registry/ changes nothing process-wide; a library user who never calls tune_http() gets
httpcore's defaults, and copies still work, only with more CPU per byte.
"""

from __future__ import annotations

import ssl
from typing import Any

import httpcore

READ_CHUNK = 1024 * 1024


def tune_http() -> None:
    """Let httpcore read up to READ_CHUNK per recv() instead of 64 KiB: with 1 MiB reads a
    streamed copy costs ~20 % less CPU and wall time (bench/README.md). It is a class attribute,
    so this applies to the whole process, and only bounds how much one recv() may return.
    Idempotent; it never lowers a larger value set elsewhere."""
    if getattr(httpcore.AsyncHTTP11Connection, "READ_NUM_BYTES", 0) < READ_CHUNK:
        httpcore.AsyncHTTP11Connection.READ_NUM_BYTES = READ_CHUNK


class LazyTrust(ssl.SSLContext):
    """ssl.create_default_context(), with its CA store loaded at the first TLS handshake: loading
    it costs ~50 ms here, which a server spoken to over plain HTTP (loopback) never needs."""

    _cafile: str | None = None
    _loaded = False

    def _trust(self) -> None:
        if not self._loaded:
            if self._cafile:
                self.load_verify_locations(cafile=self._cafile)
            else:
                self.load_default_certs(ssl.Purpose.SERVER_AUTH)
            self._loaded = True

    def wrap_bio(self, *args: Any, **kwargs: Any) -> ssl.SSLObject:  # asyncio and anyio
        self._trust()
        return super().wrap_bio(*args, **kwargs)

    def wrap_socket(self, *args: Any, **kwargs: Any) -> ssl.SSLSocket:
        self._trust()
        return super().wrap_socket(*args, **kwargs)


def lazy_default_context(
    purpose: ssl.Purpose = ssl.Purpose.SERVER_AUTH, *, cafile: str | None = None
) -> ssl.SSLContext:
    """What ssl.create_default_context(cafile=…) gives a client (hostnames and certificates
    verified), the CA file — or the machine's store — read at the first handshake."""
    if purpose is not ssl.Purpose.SERVER_AUTH:
        raise ValueError("only client contexts (Purpose.SERVER_AUTH) are lazy")
    context = LazyTrust(ssl.PROTOCOL_TLS_CLIENT)
    context._cafile = cafile
    return context
