"""The webhook receiver: registry notifications and CI calls in, Prefect events out.

    POST /registry   distribution notification envelopes, `Authorization: Bearer TOKEN`
                     (the header the registry's notification endpoint is configured to send)
    POST /ci         {"image": "REGISTRY/REPOSITORY:TAG", "timestamp": UNIX_SECONDS, "id": "…"},
                     HMAC-SHA256 of the body: `X-Airlock-Signature-256: sha256=HEX` (GitHub's
                     `X-Hub-Signature-256` too); the timestamp at most 5 minutes old
    GET  /healthz

Statuses: 202 events sent (or nothing to send, duplicates included), 400 malformed body (nested
deeper than 64, or a CI timestamp missing, stale or ahead), 401 bad credentials, 413 body too
large, 415 wrong content type, 503 Prefect (or the record of sent events) unreachable, 502 Prefect
refused the events. Only the last two are 5xx, so a registry retries exactly when retrying can
help. Each refusal is one log line; no secret, token or signature is ever logged or echoed.

An event id is sent once: the receiver keeps the ids it has sent (webhooks/seen.py, for 7 days)
and skips them, and records an id only once Prefect has accepted its event, so a delivery that
failed is sent again when retried.

Events go to Prefect's `POST /api/events` (OSS has no webhook endpoint of its own); the
deployment `promote-on-push` (prefect.yaml) is triggered by them.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import itertools
import json
import logging
import re
import sqlite3
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from flows.config import Pipeline
from registry.errors import BadInputError
from webhooks.events import Push, ci_push, ci_timestamp, registry_pushes
from webhooks.seen import Seen

log = logging.getLogger("airlock.webhooks")

ENVELOPE = "application/vnd.docker.distribution.events.v1+json"
MAX_BODY = 1024 * 1024  # distribution sends at most `threshold` events per envelope (default 10)
SIGNATURE_HEADERS = ("x-airlock-signature-256", "x-hub-signature-256")
MAX_DEPTH = 64  # nesting of arrays and objects; an envelope needs 4 (json.loads recurses)
CI_MAX_AGE = 300.0  # seconds a signed CI call stays valid
CI_SKEW = 60.0  # seconds a CI call may be dated ahead of this clock


class _Refused(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class Settings:
    pipeline: Pipeline
    registry_token: str | None  # None: /registry is closed (401), never open
    ci_secret: str | None  # None: /ci is closed (401)
    prefect_api_url: str
    prefect_headers: dict[str, str]  # Prefect's own API auth (key or basic auth string)
    max_body: int = MAX_BODY
    state: Path | None = None  # the record of sent event ids; None: in memory (tests only)
    ci_max_age: float = CI_MAX_AGE
    ci_skew: float = CI_SKEW
    max_depth: int = MAX_DEPTH

    def __repr__(self) -> str:  # the secrets stay out of tracebacks and logs
        return (
            f"Settings(prefect_api_url={self.prefect_api_url!r}, max_body={self.max_body},"
            f" state={self.state!r})"
        )


def prefect_settings() -> tuple[str, dict[str, str]]:
    """Where Prefect's API is, and how to authenticate to it, from Prefect's own settings."""
    import base64

    from prefect.settings import PREFECT_API_AUTH_STRING, PREFECT_API_KEY, PREFECT_API_URL

    url = PREFECT_API_URL.value()
    if not url:
        raise BadInputError(
            "PREFECT_API_URL is not set: the receiver sends events to a running Prefect server"
        )
    headers: dict[str, str] = {}
    if key := PREFECT_API_KEY.value():
        headers["Authorization"] = f"Bearer {key.get_secret_value()}"
    elif auth := PREFECT_API_AUTH_STRING.value():
        encoded = base64.b64encode(auth.get_secret_value().encode()).decode()
        headers["Authorization"] = f"Basic {encoded}"
    return url.rstrip("/"), headers


async def _body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise _Refused(413, f"body of {declared} bytes is over the {limit}-byte limit")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise _Refused(413, f"body is over the {limit}-byte limit")
        chunks.append(chunk)
    return b"".join(chunks)


def _content_type(request: Request, *allowed: str) -> None:
    given = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if given not in allowed:
        raise _Refused(415, f"content type {given or 'none'!r}; expected {' or '.join(allowed)}")


_JSON_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)  # escapes included
_NOT_BRACKETS = bytes(sorted(set(range(256)) - set(b"[]{}")))
_STEP = {ord("["): 1, ord("{"): 1, ord("]"): -1, ord("}"): -1}


def _too_deep(body: bytes, max_depth: int) -> bool:
    """Whether arrays and objects nest deeper than `max_depth` in `body` (brackets in strings
    not counted): a scan of the bytes before parsing, as json.loads recurses (100,000 `[` is a
    RecursionError). Stops at the first bracket too deep; C-speed throughout (~0.1 s a MiB)."""
    brackets = _JSON_STRING.sub(b"", body).translate(None, _NOT_BRACKETS)
    depths = itertools.accumulate(map(_STEP.__getitem__, brackets))
    return any(map(max_depth.__lt__, depths))


def _json(body: bytes, max_depth: int) -> Any:
    if _too_deep(body, max_depth):
        raise _Refused(400, f"body is nested deeper than {max_depth} arrays or objects")
    try:
        return json.loads(body)
    except (ValueError, UnicodeDecodeError) as e:
        raise _Refused(400, f"body is not JSON ({e})") from None


class Receiver:
    def __init__(self, settings: Settings, transport: httpx.AsyncBaseTransport | None = None):
        self.settings = settings
        self.http = httpx.AsyncClient(
            base_url=settings.prefect_api_url,
            headers=settings.prefect_headers,
            timeout=httpx.Timeout(10.0),
            transport=transport,
        )
        self.seen = Seen(settings.state or ":memory:")

    async def send(self, pushes: list[Push]) -> list[Push]:
        """Sends the events of `pushes` not sent before, and returns their pushes. An id is
        recorded as sent only once Prefect has accepted it: a failed delivery, retried, is sent."""
        if not pushes:
            return []
        unique = list({p.event_id: p for p in pushes}.values())
        try:
            already = await asyncio.to_thread(self.seen.seen, [p.event_id for p in unique])
        except sqlite3.Error as e:  # fail closed: the sender retries on 503
            raise _Refused(503, f"the record of sent events is unavailable ({e}); retry") from None
        if duplicates := [p for p in unique if p.event_id in already]:
            refs = ", ".join(str(p.reference) for p in duplicates)
            log.info("%s push %s: duplicate, skipped", duplicates[0].source, refs)
        fresh = [p for p in unique if p.event_id not in already]
        await self.emit(fresh)
        try:
            await asyncio.to_thread(self.seen.record, [p.event_id for p in fresh])
        except sqlite3.Error as e:  # sent all the same; Prefect's own dedupe covers 30 minutes
            log.error("events sent but not recorded as sent (%s)", e)
        return fresh

    async def emit(self, pushes: list[Push]) -> None:
        if not pushes:
            return
        try:
            response = await self.http.post("/events", json=[p.event() for p in pushes])
        except httpx.TransportError as e:
            raise _Refused(503, f"Prefect is unreachable ({type(e).__name__}); retry") from None
        if response.status_code >= 300:
            raise _Refused(502, f"Prefect refused the events: HTTP {response.status_code}")

    async def registry(self, request: Request) -> Response:
        token = self.settings.registry_token
        given = request.headers.get("authorization", "")
        expected = f"Bearer {token}" if token else None
        if expected is None or not hmac.compare_digest(given.encode(), expected.encode()):
            raise _Refused(401, "missing or wrong bearer token")
        _content_type(request, ENVELOPE)
        body = await _body(request, self.settings.max_body)
        envelope = _json(body, self.settings.max_depth)
        try:
            pushes, _, notes = registry_pushes(envelope, self.settings.pipeline)
        except BadInputError as e:
            raise _Refused(400, str(e)) from None
        for note in notes:
            log.info("registry push skipped: %s", note)
        sent = await self.send(pushes)
        for push in sent:
            log.info("registry push %s: event sent", push.reference)
        skipped = len(envelope["events"]) - len(sent)
        return JSONResponse({"images": [str(p.reference) for p in sent], "skipped": skipped}, 202)

    async def ci(self, request: Request) -> Response:
        secret = self.settings.ci_secret
        _content_type(request, "application/json")
        body = await _body(request, self.settings.max_body)
        signature = _header(request, SIGNATURE_HEADERS)
        if not secret:
            raise _Refused(401, "no CI secret is configured (AIRLOCK_CI_SECRET)")
        expected = "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
        if not hmac.compare_digest(signature.encode(), expected.encode()):
            raise _Refused(401, "missing or wrong signature")
        # The event id comes from what the signature covers (never from an unsigned header):
        # a captured call sent again, whatever its headers, is the same event, not sent twice;
        # and the signed timestamp bounds when it may be sent at all. A stale or future one is
        # 400 like any refused body: the signature is right (401 would send an operator after
        # the secret), and the same bytes can never succeed later (so no 5xx, no retry).
        settings = self.settings
        try:
            fields = _json(body, settings.max_depth)
            push = ci_push(fields, settings.pipeline, _sha256(body))
            ci_timestamp(fields, time.time(), settings.ci_max_age, settings.ci_skew)
        except BadInputError as e:
            raise _Refused(400, str(e)) from None
        if not await self.send([push]):
            return JSONResponse({"images": [], "skipped": 1}, 202)
        log.info("ci push %s: event sent", push.reference)
        return JSONResponse({"images": [str(push.reference)], "skipped": 0}, 202)


def _header(request: Request, names: tuple[str, ...]) -> str:
    return next((request.headers[h] for h in names if h in request.headers), "")


def _sha256(body: bytes) -> str:
    return hashlib.sha256(body).hexdigest()


def create_app(settings: Settings, transport: httpx.AsyncBaseTransport | None = None) -> Starlette:
    receiver = Receiver(settings, transport)

    def endpoint(handler: Any) -> Any:
        async def run(request: Request) -> Response:
            try:
                return await handler(request)
            except _Refused as e:
                log.warning("%s %s: %d %s", request.method, request.url.path, e.status, e)
                headers = {"Retry-After": "5"} if e.status == 503 else None
                return JSONResponse({"error": str(e)}, e.status, headers=headers)

        return run

    async def healthz(request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        yield
        await receiver.http.aclose()
        receiver.seen.close()

    return Starlette(
        routes=[
            Route("/registry", endpoint(receiver.registry), methods=["POST"]),
            Route("/ci", endpoint(receiver.ci), methods=["POST"]),
            Route("/healthz", healthz, methods=["GET"]),
        ],
        lifespan=lifespan,
    )
