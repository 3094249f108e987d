"""A fault-injecting HTTP/1.1 reverse proxy for tests, in front of a real registry.

The proxy listens on a free 127.0.0.1 port and runs its own asyncio loop in a background thread,
so sync fixtures can start and stop it. Each client connection gets its own keep-alive upstream
connection; heads and bodies are streamed through piece by piece (never a whole blob in memory)
and forwarded unchanged, except `Location` headers naming the upstream, which are pointed back at
the proxy. Faults are rules (method + path regex + count) that change what one request sees.
Every request is recorded (method, target, status) so tests can count them.
"""

from __future__ import annotations

import asyncio
import http
import json
import re
import socket
import struct
import threading
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

PIECE = 64 * 1024
_ERROR_CODES = {429: "TOOMANYREQUESTS", 500: "UNKNOWN", 502: "UNAVAILABLE", 503: "UNAVAILABLE"}

Headers = list[tuple[str, str]]
BAD_REQUEST = b"HTTP/1.1 400 Bad Request\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"


class NotHTTP(ConnectionError):
    """The peer does not speak HTTP/1.1 (the registry answers such bytes with 400 and closes)."""


@dataclass
class Fault:
    """What to do to matching requests. Body offsets count response body bytes on the wire."""

    method: str | None = None  # None: any method
    path: str = ""  # regex, searched in the request target (path and query)
    times: int | None = 1  # apply to the first N matching requests; None: to every one
    status: int | None = None  # answer this status (request body read and discarded), no forward
    retry_after: str | None = None  # with status: send this Retry-After
    delay: float = 0.0  # seconds to wait before forwarding (latency)
    stall: float = 0.0  # seconds to pause after the response headers, before the body
    trickle: float = 0.0  # seconds between body bytes: the body drips one byte at a time
    reset_after: int | None = None  # send K body bytes, then reset the connection (RST)
    truncate_after: int | None = None  # send K body bytes, then close the connection (FIN)
    declare_truncated: bool = False  # with truncate_after: Content-Length says K (looks complete)
    corrupt_at: int | None = None  # flip every bit of the body byte at this offset
    drop: bool = False  # close the connection without answering
    strip_query: bool = False  # forward without the query (a mount becomes a plain upload: 202)
    hits: int = field(default=0, init=False)

    def matches(self, method: str, target: str) -> bool:
        return (
            (self.method is None or self.method == method)
            and re.search(self.path, target) is not None
            and (self.times is None or self.hits < self.times)
        )


@dataclass
class Seen:
    method: str
    target: str
    status: int | None = None  # None: no status line was sent (dropped, or still in flight)
    fault: Fault | None = None
    at: float = field(default_factory=time.monotonic)  # when the request head arrived


class FaultProxy:
    def __init__(self, upstream: str):
        self.upstream = upstream  # host:port of the real registry
        self.host = ""  # 127.0.0.1:PORT of the proxy, set by start()
        self.faults: list[Fault] = []
        self.seen: list[Seen] = []
        self._lock = threading.Lock()
        self._ready = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None

    # ------------------------------------------------------------------ test-side API

    def add(self, fault: Fault) -> Fault:
        with self._lock:
            self.faults.append(fault)
        return fault

    def clear(self) -> None:
        with self._lock:
            self.faults.clear()
            self.seen.clear()

    def requests(self, method: str | None = None, path: str = "") -> list[Seen]:
        with self._lock:
            return [
                s
                for s in self.seen
                if (method is None or s.method == method) and re.search(path, s.target)
            ]

    def count(self, method: str | None = None, path: str = "") -> int:
        return len(self.requests(method, path))

    def start(self) -> FaultProxy:
        self._thread = threading.Thread(
            target=self._run, name=f"faultproxy-{self.upstream}", daemon=True
        )
        self._thread.start()
        self._ready.wait(timeout=10)
        if self._error or not self.host:
            raise RuntimeError(f"fault proxy did not start: {self._error!r}")
        return self

    def stop(self) -> None:
        if self._loop and self._stop and self._thread and self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._stop.set)
            self._thread.join(timeout=10)

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ------------------------------------------------------------------ the loop thread

    def _run(self) -> None:
        try:
            asyncio.run(self._main())
        except BaseException as e:  # reported by start() if it happens before readiness
            self._error = e
            self._ready.set()

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        tasks: set[asyncio.Task[None]] = set()

        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            task = asyncio.current_task()
            assert task is not None
            tasks.add(task)
            try:
                await self._serve(reader, writer)
            except asyncio.CancelledError:
                pass  # stop(): end quietly (asyncio logs a cancelled connection handler)
            finally:
                tasks.discard(task)

        server = await asyncio.start_server(handle, "127.0.0.1", 0)
        self.host = f"127.0.0.1:{server.sockets[0].getsockname()[1]}"
        self._ready.set()
        async with server:
            await self._stop.wait()
            server.close()
            for task in list(tasks):
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    def _match(self, seen: Seen) -> Fault | None:
        with self._lock:
            self.seen.append(seen)
            for fault in self.faults:
                if fault.matches(seen.method, seen.target):
                    fault.hits += 1
                    seen.fault = fault
                    return fault
        return None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.transport.set_write_buffer_limits(high=0)  # drain() means "handed to the kernel"
        upstream: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None
        try:
            while (raw := await _read_head(reader)) is not None:
                request_line, headers = _parse_head(raw)
                method, target, _ = request_line.split(" ", 2)
                seen = Seen(method, target)
                fault = self._match(seen)
                if fault and fault.drop:
                    return
                if fault and fault.delay:
                    await asyncio.sleep(fault.delay)
                if fault and fault.status:
                    async for _piece in _body(reader, headers, until_close=False):
                        pass
                    writer.write(_error_response(fault.status, fault.retry_after))
                    await writer.drain()
                    seen.status = fault.status
                    continue
                if upstream is None:
                    upstream = await asyncio.open_connection(*self.upstream.rsplit(":", 1))
                up_reader, up_writer = upstream
                if fault and fault.strip_query:
                    raw = raw.replace(target.encode(), target.split("?", 1)[0].encode(), 1)
                up_writer.write(raw)
                async for piece in _body(reader, headers, until_close=False):
                    up_writer.write(piece)
                    await up_writer.drain()
                await up_writer.drain()
                keep_alive = await self._respond(method, seen, fault, up_reader, writer)
                if not keep_alive or _wants_close(headers):
                    return
        except NotHTTP:
            writer.write(BAD_REQUEST)
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            return
        finally:
            for w in (writer, upstream[1] if upstream else None):
                if w and not w.is_closing():
                    w.close()

    async def _respond(
        self,
        method: str,
        seen: Seen,
        fault: Fault | None,
        up_reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
    ) -> bool:
        """Forward one response; False when both connections must be closed afterwards."""
        raw = await _read_head(up_reader)
        if raw is None:
            raise ConnectionError("upstream closed before answering")
        status_line, headers = _parse_head(raw)
        status = int(status_line.split(" ", 2)[1])
        seen.status = status
        headers = [
            (k, v.replace(f"//{self.upstream}/", f"//{self.host}/"))
            if k.lower() == "location"
            else (k, v)
            for k, v in headers
        ]
        has_body = method != "HEAD" and status >= 200 and status not in (204, 304)
        framed = any(k.lower() in ("content-length", "transfer-encoding") for k, _ in headers)
        cut = None
        if fault and has_body:
            cut = fault.truncate_after if fault.reset_after is None else fault.reset_after
        if fault and fault.declare_truncated and cut is not None:
            headers = [
                (k, str(cut)) if k.lower() == "content-length" else (k, v) for k, v in headers
            ]
        writer.write(_head(status_line, headers))
        await writer.drain()
        if fault and fault.stall:
            await asyncio.sleep(fault.stall)
        if not has_body:
            return not _wants_close(headers)
        offset = 0
        async for piece in _body(up_reader, headers, until_close=not framed):
            i = fault.corrupt_at - offset if fault and fault.corrupt_at is not None else -1
            if 0 <= i < len(piece):
                piece = piece[:i] + bytes([piece[i] ^ 0xFF]) + piece[i + 1 :]
            if cut is not None and offset + len(piece) >= cut:
                writer.write(piece[: cut - offset])
                await writer.drain()
                if fault and fault.reset_after is not None:
                    _reset(writer)
                return False
            if fault and fault.trickle:
                await _drip(writer, piece, fault.trickle)
            else:
                writer.write(piece)
                await writer.drain()
            offset += len(piece)
        return framed and not _wants_close(headers)


# ---------------------------------------------------------------------- HTTP/1.1 framing


async def _read_head(reader: asyncio.StreamReader) -> bytes | None:
    """The request or status line and headers, up to the blank line; None at a clean EOF."""
    first = await reader.read(1)
    if not first:
        return None
    if not first.isalpha():  # e.g. a TLS ClientHello from a client probing for HTTPS
        raise NotHTTP(first)
    return first + await reader.readuntil(b"\r\n\r\n")


def _parse_head(raw: bytes) -> tuple[str, Headers]:
    first, *lines = raw.decode("latin-1").split("\r\n")
    pairs = [line.partition(":") for line in lines if line]
    return first, [(name, value.strip()) for name, _, value in pairs]


def _head(first: str, headers: Headers) -> bytes:
    lines = "".join(f"{k}: {v}\r\n" for k, v in headers)
    return f"{first}\r\n{lines}\r\n".encode("latin-1")


def _header(headers: Headers, name: str) -> str | None:
    return next((v for k, v in headers if k.lower() == name), None)


def _wants_close(headers: Headers) -> bool:
    return "close" in (_header(headers, "connection") or "").lower()


async def _body(
    reader: asyncio.StreamReader, headers: Headers, *, until_close: bool
) -> AsyncIterator[bytes]:
    """The body's wire bytes in pieces (chunked framing included, passed through as is)."""
    if "chunked" in (_header(headers, "transfer-encoding") or "").lower():
        while True:
            line = await reader.readuntil(b"\r\n")
            yield line
            size = int(line.split(b";", 1)[0].strip(), 16)
            if size == 0:
                while (trailer := await reader.readuntil(b"\r\n")) != b"\r\n":
                    yield trailer
                yield trailer
                return
            async for piece in _exactly(reader, size + 2):
                yield piece
    elif (length := _header(headers, "content-length")) is not None:
        async for piece in _exactly(reader, int(length)):
            yield piece
    elif until_close:
        while piece := await reader.read(PIECE):
            yield piece


async def _exactly(reader: asyncio.StreamReader, n: int) -> AsyncIterator[bytes]:
    while n > 0:
        piece = await reader.read(min(n, PIECE))
        if not piece:
            raise ConnectionError("peer closed mid-body")
        n -= len(piece)
        yield piece


def _error_response(status: int, retry_after: str | None) -> bytes:
    code = _ERROR_CODES.get(status, "UNKNOWN")
    body = json.dumps({"errors": [{"code": code, "message": "injected by faultproxy"}]}).encode()
    headers = [("Content-Type", "application/json"), ("Content-Length", str(len(body)))]
    if retry_after is not None:
        headers.append(("Retry-After", retry_after))
    return _head(f"HTTP/1.1 {status} {http.HTTPStatus(status).phrase}", headers) + body


async def _drip(writer: asyncio.StreamWriter, piece: bytes, pause: float) -> None:
    """A slow source: one byte, then a pause, for as long as the peer keeps listening."""
    for i in range(len(piece)):
        writer.write(piece[i : i + 1])
        await writer.drain()
        await asyncio.sleep(pause)


def _reset(writer: asyncio.StreamWriter) -> None:
    """Abort with SO_LINGER 0: the peer gets a TCP RST instead of an orderly FIN."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()
