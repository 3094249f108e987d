"""Servers that misbehave on purpose, on free 127.0.0.1 ports, each in a background thread.

- `echoing_registry`: challenges like a registry (Basic, or Bearer with its own token endpoint),
  then answers every API request with a 400 whose error message repeats everything secret it was
  sent: the Authorization headers, the base64 inside them, the password decoded from them, and
  that password URL-encoded.
- `html_site`: a web site, not a registry: every path answers 200 with an HTML page.
"""

from __future__ import annotations

import base64
import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Literal
from urllib.parse import quote, quote_plus

ECHO_TOKEN = "echo-bearer-token-9f8e7d6c5b4a"


def secret_forms(username: str, password: str, token: str = ECHO_TOKEN) -> list[str]:
    """Every form of the credentials an echoing registry repeats (none may reach a message)."""
    basic = base64.b64encode(f"{username}:{password}".encode()).decode()
    return [
        password,
        quote(password, safe=""),
        quote_plus(password, safe=""),
        basic,
        basic.rstrip("="),
        token,
    ]


class _Quiet(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: object, client_address: object) -> None:
        pass  # a client hanging up early is not the test's business


@contextmanager
def _serve(handler: type[BaseHTTPRequestHandler]) -> Iterator[str]:
    server = _Quiet(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


class _Echo(BaseHTTPRequestHandler):
    scheme: str = "basic"
    seen: list[str]  # every Authorization header received, token requests included

    def log_message(self, *args: object) -> None:
        pass

    def _send(self, status: int, headers: dict[str, str], body: bytes, with_body: bool) -> None:
        self.send_response(status)
        for k, v in headers.items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if with_body:
            self.wfile.write(body)

    def _echo(self) -> str:
        parts = []
        for header in reversed(self.seen[-2:]):  # the newest first: messages get cut
            kind, _, value = header.partition(" ")
            parts.append(f"you sent {header!r}, that is {value}")
            if kind.lower() == "basic":
                password = base64.b64decode(value).decode().partition(":")[2]
                parts.append(f"password {password} or {quote(password, safe='')}")
                parts.append(f"or {quote_plus(password, safe='')}")
        return "; ".join(parts) or "no credentials"

    def _answer(self, with_body: bool) -> None:
        auth = self.headers.get("Authorization")
        if auth:
            self.seen.append(auth)
        api = {"Docker-Distribution-API-Version": "registry/2.0"}
        if self.path.startswith("/token"):
            body = json.dumps({"token": ECHO_TOKEN, "expires_in": 300}).encode()
            self._send(200, {"Content-Type": "application/json"}, body, with_body)
        elif not auth:
            host = self.headers.get("Host")
            challenge = (
                'Basic realm="echo"'
                if self.scheme == "basic"
                else f'Bearer realm="http://{host}/token",service="echo"'
            )
            self._send(401, {**api, "WWW-Authenticate": challenge}, b"{}", with_body)
        elif self.path == "/v2/":
            self._send(200, {**api, "Content-Type": "application/json"}, b"{}", with_body)
        elif self.command == "HEAD":
            self._send(404, api, b"", with_body)
        else:
            error = {"errors": [{"code": "UNKNOWN", "message": self._echo()}]}
            body = json.dumps(error).encode()
            self._send(400, {**api, "Content-Type": "application/json"}, body, with_body)

    def do_GET(self) -> None:
        self._answer(True)

    def do_HEAD(self) -> None:
        self._answer(False)

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self._answer(True)


@contextmanager
def echoing_registry(scheme: Literal["basic", "bearer"] = "basic") -> Iterator[str]:
    """A registry that repeats the credentials it receives in its error messages."""
    handler = type("Echo", (_Echo,), {"scheme": scheme, "seen": []})
    with _serve(handler) as host:
        yield host


class _Html(BaseHTTPRequestHandler):
    def log_message(self, *args: object) -> None:
        pass

    def _answer(self, with_body: bool) -> None:
        body = b"<!doctype html><html><body><h1>Welcome to our shop</h1></body></html>"
        self.send_response(200)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if with_body:
            self.wfile.write(body)

    def do_GET(self) -> None:
        self._answer(True)

    def do_HEAD(self) -> None:
        self._answer(False)


@contextmanager
def html_site() -> Iterator[str]:
    """A web server that answers every path with 200 and an HTML page."""
    with _serve(_Html) as host:
        yield host
