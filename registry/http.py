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
    And make httpcore's check of idle pooled connections cheap (_socket_once). Idempotent; it
    never lowers a larger value set elsewhere."""
    if getattr(httpcore.AsyncHTTP11Connection, "READ_NUM_BYTES", 0) < READ_CHUNK:
        httpcore.AsyncHTTP11Connection.READ_NUM_BYTES = READ_CHUNK
    _socket_once()


def _socket_once() -> None:
    """Each time a request enters or leaves a pool, httpcore asks every idle connection of it
    whether its socket is readable (closed by the server), and its anyio stream finds the socket
    by building anyio's whole map of socket attributes, getpeername() included. With a pool of
    16 connections that was ~20 % of a batch promotion's CPU (bench/README.md). A stream's
    socket never changes: look it up once per stream. The readability check itself is
    httpcore's, unchanged. Skipped if httpcore's anyio stream is not shaped as expected."""
    try:
        from httpcore._backends.anyio import AnyIOStream
        from httpcore._utils import is_socket_readable
    except ImportError:
        return
    original = AnyIOStream.get_extra_info
    if getattr(original, "airlock_tuned", False) or "__slots__" in vars(AnyIOStream):
        return  # tuned already, or its streams have nowhere to keep the socket

    def get_extra_info(self: AnyIOStream, info: str) -> Any:
        if info != "is_readable":
            return original(self, info)
        sock = self.__dict__.get("_airlock_socket")
        if sock is None:
            sock = self.__dict__["_airlock_socket"] = original(self, "socket")
        return is_socket_readable(sock)

    get_extra_info.airlock_tuned = True  # type: ignore[attr-defined]
    AnyIOStream.get_extra_info = get_extra_info  # type: ignore[method-assign]


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
