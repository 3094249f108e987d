"""The webhook receiver's answers, request by request: in process (httpx's ASGI transport), with
its events going to the real Prefect server of this folder through a transport that counts them —
so "no run started" is checked where it is decided: no event left the receiver."""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import sqlite3
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from flows.config import load
from tests.support.prefect import PrefectServer
from webhooks.app import ENVELOPE, Settings, create_app
from webhooks.events import NAMESPACE

pytestmark = pytest.mark.anyio

TOKEN = "tok-3f9a"
SECRET = "ci-secret-77c1"
HOST = "registry.example:5000"
DIGEST = "sha256:" + "ab" * 32


class Counting(httpx.AsyncBaseTransport):
    """Forwards to the real server and keeps each request sent."""

    def __init__(self) -> None:
        self.inner = httpx.AsyncHTTPTransport()
        self.sent: list[httpx.Request] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.sent.append(request)
        return await self.inner.handle_async_request(request)

    async def aclose(self) -> None:
        await self.inner.aclose()

    def events(self) -> list[dict[str, Any]]:
        return [e for r in self.sent for e in json.loads(r.content)]


def _pipeline(tmp_path: Path) -> Path:
    path = tmp_path / "pipeline.yaml"
    doc = {
        "registries": {"r": {"url": HOST}},
        "stages": [
            {"name": "dev", "registry": "r", "repository": "dev/{name}"},
            {"name": "prod", "registry": "r", "repository": "prod/{name}"},
        ],
    }
    path.write_text(yaml.safe_dump(doc))
    return path


class Receiver:
    def __init__(self, client: httpx.AsyncClient, counting: Counting) -> None:
        self.client, self.counting = client, counting

    async def registry(
        self, body: Any, *, token: str | None = TOKEN, content_type: str = ENVELOPE
    ) -> httpx.Response:
        headers = {"Content-Type": content_type}
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        content = body if isinstance(body, bytes) else json.dumps(body).encode()
        return await self.client.post("/registry", content=content, headers=headers)

    async def ci(
        self, body: Any, *, secret: str | None = SECRET, content_type: str = "application/json"
    ) -> httpx.Response:
        content = body if isinstance(body, bytes) else json.dumps(body).encode()
        headers = {"Content-Type": content_type}
        if secret is not None:
            mac = hmac.new(secret.encode(), content, hashlib.sha256).hexdigest()
            headers["X-Airlock-Signature-256"] = f"sha256={mac}"
        return await self.client.post("/ci", content=content, headers=headers)


async def _receiver(settings: Settings, counting: Counting) -> AsyncIterator[Receiver]:
    """One receiver process's life: started (its lifespan), serving, stopped. A second one on
    the same settings is the receiver restarted."""
    app = create_app(settings, transport=counting)
    transport = httpx.ASGITransport(app=app)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=transport, base_url="http://receiver") as client,
    ):
        yield Receiver(client, counting)
    await counting.aclose()


def _settings(tmp_path: Path, api: str, **kw: Any) -> Settings:
    """The receiver's settings, its durable state in this test's own folder."""
    kw.setdefault("state", tmp_path / "state" / "webhooks.sqlite")
    return Settings(load(_pipeline(tmp_path)), TOKEN, SECRET, api, {}, **kw)


@pytest.fixture
async def receiver(tmp_path: Path, prefect_server: PrefectServer) -> AsyncIterator[Receiver]:
    async for r in _receiver(_settings(tmp_path, prefect_server.api), Counting()):
        yield r


def ci_body(image: str = f"{HOST}/dev/app:1.0", *, age: float = 0, **fields: Any) -> dict:
    """A CI call's body, dated `age` seconds ago (negative: in the future) unless `timestamp`
    is given (None: left out)."""
    body = {"image": image, "timestamp": int(time.time() - age), **fields}
    return {k: v for k, v in body.items() if v is not None}


def nested(depth: int, opener: bytes = b"[", closer: bytes = b"]", inner: bytes = b"1") -> bytes:
    return opener * depth + inner + closer * depth


def push(
    *,
    id: str = "evt-1",
    repo: str = "dev/app",
    tag: str | None = "1.0",
    media_type: str = "application/vnd.oci.image.manifest.v1+json",
    action: str = "push",
    digest: str = DIGEST,
    actor: str | None = None,
) -> dict[str, Any]:
    target: dict[str, Any] = {"mediaType": media_type, "repository": repo, "digest": digest}
    if tag is not None:
        target["tag"] = tag
    event: dict[str, Any] = {"id": id, "action": action, "target": target}
    if actor:
        event["actor"] = {"name": actor}
    return event


async def test_health(receiver: Receiver) -> None:
    r = await receiver.client.get("/healthz")
    assert r.status_code == 200 and r.json() == {"status": "ok"}


async def test_a_tagged_push_to_the_first_stage_becomes_one_event_in_prefect(
    receiver: Receiver, prefect_server: PrefectServer
) -> None:
    event_id = f"evt-{uuid.uuid4()}"
    r = await receiver.registry({"events": [push(id=event_id, actor="ci-bot")]})
    assert r.status_code == 202, r.text
    assert r.json() == {"images": [f"{HOST}/dev/app:1.0@{DIGEST}"], "skipped": 0}
    [event] = receiver.counting.events()
    assert event["id"] == str(uuid.uuid5(NAMESPACE, f"registry:{event_id}"))
    assert event["event"] == "airlock.image.pushed"
    assert event["resource"]["airlock.reference"] == f"{HOST}/dev/app:1.0@{DIGEST}"
    assert event["resource"]["airlock.requester"] == "ci-bot"

    # the same delivery again: recorded as sent, so not sent again
    again = await receiver.registry({"events": [push(id=event_id, actor="ci-bot")]})
    assert (again.status_code, again.json()) == (202, {"images": [], "skipped": 1})
    assert len(receiver.counting.sent) == 1

    # and the server has it (events are stored in batches: poll for it)
    import time

    deadline = time.monotonic() + 30
    body = {"filter": {"id": {"id": [event["id"]]}}}
    while time.monotonic() < deadline:
        found = httpx.post(f"{prefect_server.api}/events/filter", json=body).json()["events"]
        if found:
            assert found[0]["resource"]["airlock.digest"] == DIGEST
            return
        time.sleep(0.2)
    raise AssertionError("the event never reached the Prefect server")


@pytest.mark.parametrize(
    ("event", "note"),
    [
        (push(tag=None), "no tag"),
        (push(repo="prod/app"), "not in the pipeline's first stage"),
        (push(repo="other/app"), "not in the pipeline's first stage"),
        (push(tag="sha256-" + "ab" * 32), "not a release"),
        (push(tag="sha256-" + "ab" * 32 + ".sig"), "not a release"),
        (push(tag="airlock.history"), "not a release"),
        (push(repo="dev/releases/shop"), "a release (airlock release create)"),
        (push(media_type="application/octet-stream"), None),  # a blob: routine, no word
        (push(action="pull"), None),
    ],
    ids=[
        "by-digest",
        "second-stage",
        "unknown-repository",
        "fallback-tag",
        "cosign-tag",
        "history",
        "release-index",
        "blob",
        "pull",
    ],
)
async def test_what_is_not_an_image_push_is_skipped_not_refused(
    receiver: Receiver, caplog: pytest.LogCaptureFixture, event: dict[str, Any], note: str | None
) -> None:
    with caplog.at_level(logging.INFO, logger="airlock.webhooks"):
        r = await receiver.registry({"events": [event]})
    assert r.status_code == 202, r.text
    assert r.json() == {"images": [], "skipped": 1}
    assert receiver.counting.sent == []
    lines = [rec.getMessage() for rec in caplog.records if rec.name == "airlock.webhooks"]
    if note is None:
        assert lines == []
    else:
        assert len(lines) == 1 and "skipped" in lines[0] and note in lines[0], lines


@pytest.mark.parametrize(
    ("call", "status", "needle"),
    [
        ({"token": None}, 401, "bearer token"),
        ({"token": "wrong"}, 401, "bearer token"),
        ({"content_type": "application/json"}, 415, "content type"),
        ({"content_type": "text/plain"}, 415, "content type"),
        ({"body": b"{not json"}, 400, "not JSON"),
        ({"body": b"\xff\xfe"}, 400, "not JSON"),
        ({"body": {"event": []}}, 400, "not a notification envelope"),
        ({"body": []}, 400, "not a notification envelope"),
        ({"body": {"events": ["x"]}}, 400, "events[0] is not an object"),
        ({"body": {"events": [push(id="")]}}, 400, "without an id"),
        ({"body": {"events": [push(digest="sha256:short")]}}, 400, "not a sha256 digest"),
        ({"body": {"events": [push(tag="Bad Tag!")]}}, 400, "events[0]"),
        ({"body": {"events": [push(), "x"]}}, 400, "events[1]"),
        ({"body": b"{" + b" " * (1024 * 1024) + b"}"}, 413, "limit"),
        ({"body": nested(100_000)}, 400, "nested deeper than 64"),
        ({"body": nested(100_000, b'{"a":', b"}")}, 400, "nested deeper than 64"),
        ({"body": {"events": [push()], "x": json.loads(nested(64))}}, 400, "nested deeper"),
    ],
    ids=lambda v: str(v)[:40] if not isinstance(v, int) else str(v),
)
async def test_bad_registry_calls_get_a_clear_status_one_log_line_and_no_event(
    receiver: Receiver, caplog: pytest.LogCaptureFixture, call: dict, status: int, needle: str
) -> None:
    body = call.pop("body", {"events": [push()]})
    with caplog.at_level(logging.INFO, logger="airlock.webhooks"):
        r = await receiver.registry(body, **call)
    assert r.status_code == status, r.text
    assert needle in r.json()["error"]
    assert receiver.counting.sent == []
    lines = [rec.getMessage() for rec in caplog.records if rec.name == "airlock.webhooks"]
    assert len(lines) == 1 and str(status) in lines[0] and needle in lines[0], lines
    assert TOKEN not in caplog.text and TOKEN not in r.text


@pytest.mark.parametrize(
    ("call", "status", "needle"),
    [
        ({"secret": None}, 401, "signature"),
        ({"secret": "forged"}, 401, "signature"),
        ({"content_type": ENVELOPE}, 415, "content type"),
        ({"body": b"[1,"}, 400, "not JSON"),
        ({"body": {"img": "x"}}, 400, "expected a JSON object"),
        ({"body": {"image": "UPPER/case"}}, 400, "invalid"),
        ({"body": {"image": f"{HOST}/dev/app@{DIGEST}"}}, 400, "by its tag"),
        ({"body": {"image": f"{HOST}/prod/app:1.0"}}, 400, "not in the pipeline's first stage"),
        ({"body": {"image": "elsewhere:5000/dev/app:1.0"}}, 400, "first stage"),
        ({"body": {"image": f"{HOST}/dev/releases/shop:1.0"}}, 400, "is a release"),
        ({"body": {"image": f"{HOST}/dev/app:1.0", "requester": ""}}, 400, "requester"),
        # "ci": the arguments of ci_body, called when the test runs (its timestamps are "now")
        ({"ci": {"timestamp": None}}, 400, 'add "timestamp"'),
        ({"ci": {"timestamp": "2025-01-01T00:00:00Z"}}, 400, "whole number of seconds"),
        ({"ci": {"timestamp": True}}, 400, "whole number of seconds"),
        ({"ci": {"timestamp": 1767225600.5}}, 400, "whole number of seconds"),
        ({"ci": {"age": 301}}, 400, "older than 300 s"),
        ({"ci": {"age": 7 * 86400}}, 400, "older than 300 s"),
        ({"ci": {"age": -120}}, 400, "in the future"),
        ({"body": nested(100_000)}, 400, "nested deeper than 64"),
        ({"body": nested(100_000, b'{"a":', b"}")}, 400, "nested deeper than 64"),
    ],
    ids=lambda v: str(v)[:40] if not isinstance(v, int) else str(v),
)
async def test_bad_ci_calls_get_a_clear_status_one_log_line_and_no_event(
    receiver: Receiver, caplog: pytest.LogCaptureFixture, call: dict, status: int, needle: str
) -> None:
    body = ci_body(**call.pop("ci", {}))
    body = call.pop("body", body)
    with caplog.at_level(logging.INFO, logger="airlock.webhooks"):
        r = await receiver.ci(body, **call)
    assert r.status_code == status, r.text
    assert needle in r.json()["error"], r.json()
    assert receiver.counting.sent == []
    lines = [rec.getMessage() for rec in caplog.records if rec.name == "airlock.webhooks"]
    assert len(lines) == 1 and str(status) in lines[0], lines
    assert SECRET not in caplog.text and SECRET not in r.text


async def test_a_signed_ci_call_becomes_an_event(receiver: Receiver) -> None:
    r = await receiver.ci(ci_body(f"{HOST}/dev/app:2.0", requester="jenkins"))
    assert r.status_code == 202, r.text
    [event] = receiver.counting.events()
    assert event["resource"]["airlock.reference"] == f"{HOST}/dev/app:2.0"
    assert event["resource"]["airlock.source"] == "ci"
    assert event["resource"]["airlock.requester"] == "jenkins"


async def test_prefect_unreachable_is_503_with_retry_after(tmp_path: Path) -> None:
    from airlock.localregistry import free_port

    dead = f"http://127.0.0.1:{free_port()}/api"  # nothing listens there
    async for receiver in _receiver(_settings(tmp_path, dead), Counting()):
        r = await receiver.registry({"events": [push()]})
        assert r.status_code == 503, r.text
        assert r.headers["retry-after"] == "5"
        assert "unreachable" in r.json()["error"]
        skipped = await receiver.registry({"events": [push(repo="other/x")]})
        assert skipped.status_code == 202  # nothing to send: Prefect is not needed


async def test_an_endpoint_without_its_secret_is_closed(tmp_path: Path) -> None:
    settings = Settings(
        load(_pipeline(tmp_path)), None, None, "http://127.0.0.1:9/api", {}, state=None
    )
    async for receiver in _receiver(settings, Counting()):
        assert (await receiver.registry({"events": [push()]}, token="")).status_code == 401
        assert (await receiver.ci({"image": f"{HOST}/dev/app:1.0"}, secret="")).status_code == 401
        assert receiver.counting.sent == []


def test_settings_never_show_their_secrets(tmp_path: Path) -> None:
    settings = Settings(
        load(_pipeline(tmp_path)), TOKEN, SECRET, "http://x/api", {"Authorization": "Bearer pk"}
    )
    assert TOKEN not in repr(settings) and SECRET not in repr(settings)
    assert "pk" not in repr(settings)


async def test_a_replayed_ci_call_is_the_same_event_whatever_its_headers(
    receiver: Receiver, caplog: pytest.LogCaptureFixture
) -> None:
    """The event id comes from the signed body: resending a captured call with another delivery
    header is the same event, not sent again; a new build id (signed) is a new event."""
    body = json.dumps(ci_body(f"{HOST}/dev/app:3.0", id="build-41")).encode()
    mac = hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
    answers = []
    with caplog.at_level(logging.INFO, logger="airlock.webhooks"):
        for delivery in ("first", "replayed-with-a-new-header"):
            r = await receiver.client.post(
                "/ci",
                content=body,
                headers={
                    "Content-Type": "application/json",
                    "X-Hub-Signature-256": f"sha256={mac}",
                    "X-GitHub-Delivery": delivery,
                },
            )
            answers.append((r.status_code, r.json()))
    assert answers == [
        (202, {"images": [f"{HOST}/dev/app:3.0"], "skipped": 0}),
        (202, {"images": [], "skipped": 1}),
    ]
    [first] = receiver.counting.events()
    assert _lines(caplog, "duplicate") == [f"ci push {HOST}/dev/app:3.0: duplicate, skipped"]
    r = await receiver.ci(ci_body(f"{HOST}/dev/app:3.0", id="build-42"))
    assert r.status_code == 202
    assert receiver.counting.events()[-1]["id"] != first["id"]


def _lines(caplog: pytest.LogCaptureFixture, needle: str) -> list[str]:
    return [
        rec.getMessage()
        for rec in caplog.records
        if rec.name == "airlock.webhooks" and needle in rec.getMessage()
    ]


async def test_a_signed_ci_call_replayed_to_a_restarted_receiver_sends_nothing(
    tmp_path: Path, prefect_server: PrefectServer, caplog: pytest.LogCaptureFixture
) -> None:
    """Prefect forgets event ids after ~30 minutes (and on a restart); the receiver's own record
    does not: a captured call replayed to the receiver after its restart never leaves it."""
    settings = _settings(tmp_path, prefect_server.api)
    body = json.dumps(ci_body(f"{HOST}/dev/app:4.0", requester="jenkins")).encode()
    async for receiver in _receiver(settings, Counting()):
        assert (await receiver.ci(body)).status_code == 202
        assert len(receiver.counting.events()) == 1
    async for restarted in _receiver(settings, Counting()):
        with caplog.at_level(logging.INFO, logger="airlock.webhooks"):
            r = await restarted.ci(body)
        assert (r.status_code, r.json()) == (202, {"images": [], "skipped": 1})
        assert restarted.counting.sent == []
        assert len(_lines(caplog, "duplicate, skipped")) == 1


async def test_a_registry_redelivery_to_a_restarted_receiver_sends_nothing(
    tmp_path: Path, prefect_server: PrefectServer, caplog: pytest.LogCaptureFixture
) -> None:
    settings = _settings(tmp_path, prefect_server.api)
    old, new = f"evt-{uuid.uuid4()}", f"evt-{uuid.uuid4()}"
    async for receiver in _receiver(settings, Counting()):
        assert (await receiver.registry({"events": [push(id=old)]})).status_code == 202
        [sent] = receiver.counting.events()
    async for restarted in _receiver(settings, Counting()):
        with caplog.at_level(logging.INFO, logger="airlock.webhooks"):
            r = await restarted.registry({"events": [push(id=old)]})
        assert (r.status_code, r.json()) == (202, {"images": [], "skipped": 1})
        assert restarted.counting.sent == []
        assert len(_lines(caplog, "duplicate, skipped")) == 1
        # a delivery mixing the old event and a new one sends the new one only
        r = await restarted.registry({"events": [push(id=old), push(id=new, tag="1.1")]})
        assert r.status_code == 202 and r.json()["skipped"] == 1, r.text
        [event] = restarted.counting.events()
        assert event["id"] == str(uuid.uuid5(NAMESPACE, f"registry:{new}")) != sent["id"]


async def test_a_failed_emit_is_not_recorded_so_the_retry_is_sent(
    tmp_path: Path, prefect_server: PrefectServer
) -> None:
    from airlock.localregistry import free_port

    dead = f"http://127.0.0.1:{free_port()}/api"  # nothing listens there
    state = tmp_path / "webhooks.sqlite"
    delivery = {"events": [push(id=f"evt-{uuid.uuid4()}")]}
    body = json.dumps(ci_body(f"{HOST}/dev/app:5.0")).encode()
    async for down in _receiver(_settings(tmp_path, dead, state=state), Counting()):
        assert (await down.registry(delivery)).status_code == 503
        assert (await down.ci(body)).status_code == 503
        assert len(down.counting.sent) == 2  # both were tried
    async for up in _receiver(_settings(tmp_path, prefect_server.api, state=state), Counting()):
        assert (await up.registry(delivery)).status_code == 202
        assert (await up.ci(body)).status_code == 202
        assert len(up.counting.events()) == 2  # the retries were sent


async def test_nesting_up_to_the_cap_and_brackets_inside_strings_are_accepted(
    receiver: Receiver,
) -> None:
    deep = json.loads(nested(63, b'{"a":', b"}"))  # 63 here + the envelope itself = 64
    r = await receiver.registry({"events": [push(id=f"evt-{uuid.uuid4()}")], "x": deep})
    assert r.status_code == 202, r.text
    # in a string (escaped quotes and backslashes too), brackets are text, not nesting
    requester = '\\"[{' * 50  # 200 characters, 100 brackets
    r = await receiver.ci(ci_body(f"{HOST}/dev/app:6.0", requester=requester))
    assert r.status_code == 202, r.text


def test_the_record_of_sent_events_expires_is_capped_and_shared_between_processes(
    tmp_path: Path,
) -> None:
    from webhooks.seen import Seen

    now = [1_000_000.0]
    path = tmp_path / "a" / "b" / "webhooks.sqlite"  # parent folders are made
    one = Seen(path, keep=100, cap=3, clock=lambda: now[0])
    other = Seen(path, keep=100, cap=3, clock=lambda: now[0])  # another receiver process
    try:
        one.record(["e1"])
        assert other.seen(["e1", "e2"]) == {"e1"}
        now[0] += 101  # past the expiry: a redelivery this late is sent again
        assert one.seen(["e1"]) == set()
        other.record(["e2", "e3", "e4", "e5"])  # beyond the cap: the oldest go
        assert one.seen(["e1", "e2", "e3", "e4", "e5"]) == {"e3", "e4", "e5"}
    finally:
        one.close()
        other.close()
    with sqlite3.connect(path) as db:  # read independently of the store
        assert db.execute("pragma journal_mode").fetchone() == ("wal",)
        assert db.execute("select count(*) from seen").fetchone() == (3,)
    db.close()
