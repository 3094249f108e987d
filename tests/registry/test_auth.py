"""Authentication against real registries: htpasswd (Basic) and token auth (Bearer)."""

from __future__ import annotations

import base64
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from registry.auth import Credentials
from registry.client import RegistryClient
from registry.copy import copy_image
from registry.errors import AuthError
from registry.manifest import Descriptor
from registry.reference import parse
from tests.support import images as im
from tests.support.registries import FAST_RETRY, Reg
from tests.support.tokenserver import TokenServer

pytestmark = pytest.mark.anyio


def target(reg: Reg, path: str):
    return parse(f"{reg.host}/{path}", default_tag=None)


# ---------------------------------------------------------------------------- htpasswd / Basic


async def test_basic_auth_with_explicit_credentials(htpasswd_registry: Reg) -> None:
    img = im.image("basic")
    htpasswd_registry.pusher.push("dev/app", img, "1.0")
    async with htpasswd_registry.client(credentials=Credentials("alice", "wonderland")) as c:
        result = await copy_image(
            c,
            parse(f"{htpasswd_registry.host}/dev/app:1.0"),
            c,
            target(htpasswd_registry, "prod/app"),
        )
    assert result.blobs_mounted == len(img.blobs)
    assert htpasswd_registry.pusher.digest("prod/app", "1.0") == img.digest


async def test_basic_auth_from_docker_config(htpasswd_registry: Reg, docker_config: Path) -> None:
    img = im.image("dockercfg")
    htpasswd_registry.pusher.push("dev/app", img, "1.0")
    auth = base64.b64encode(b"alice:wonderland").decode()
    (docker_config / "config.json").write_text(
        json.dumps({"auths": {f"http://{htpasswd_registry.host}": {"auth": auth}}})
    )
    async with htpasswd_registry.client() as c:
        await copy_image(
            c,
            parse(f"{htpasswd_registry.host}/dev/app:1.0"),
            c,
            target(htpasswd_registry, "prod/app"),
        )
    assert htpasswd_registry.pusher.digest("prod/app", "1.0") == img.digest


@pytest.mark.parametrize("creds", [None, Credentials("alice", "wrong-password")])
async def test_basic_auth_refused_is_one_clear_line_and_writes_nothing(
    htpasswd_registry: Reg, creds: Credentials | None
) -> None:
    htpasswd_registry.pusher.push("dev/app", im.image("refused"), "1.0")
    async with htpasswd_registry.client(credentials=creds) as c:
        with pytest.raises(AuthError) as e:
            await copy_image(
                c,
                parse(f"{htpasswd_registry.host}/dev/app:1.0"),
                c,
                target(htpasswd_registry, "prod/app"),
            )
    message = str(e.value)
    assert e.value.exit_code == 3
    assert "\n" not in message
    if creds is None:
        assert "authentication required" in message and "--src-creds" in message
    else:
        assert "credentials for" in message and "are wrong" in message
    assert "wrong-password" not in message
    assert htpasswd_registry.pusher.tags("prod/app") == []


# ---------------------------------------------------------------------------- token / Bearer


async def test_promoter_mounts_with_one_token_holding_exactly_the_scopes_needed(
    token_registry: Reg, token_server: TokenServer
) -> None:
    img = im.multi_platform("token")
    token_registry.pusher.push("dev/app", img, "1.0")
    async with token_registry.client(credentials=Credentials("promoter", "promoter-pw")) as c:
        result = await copy_image(
            c, parse(f"{token_registry.host}/dev/app:1.0"), c, target(token_registry, "prod/app")
        )
    assert result.blobs_streamed == 0 and result.blobs_mounted > 0
    assert token_registry.pusher.digest("prod/app", "1.0") == img.digest
    asked = [set(r["scopes"]) for r in token_server.requests]
    assert all(r["user"] == "promoter" for r in token_server.requests)
    assert len(asked) <= 3, asked
    # a mount needs pull on the source and pull,push on the target, in one token
    assert {"repository:dev/app:pull", "repository:prod/app:pull,push"} in asked
    # least privilege: never push (or anything else) on the source
    assert not any(
        s.startswith("repository:dev/app:") and s != "repository:dev/app:pull"
        for scopes in asked
        for s in scopes
    )


async def test_credentials_without_push_are_denied_and_nothing_is_written(
    token_registry: Reg,
) -> None:
    token_registry.pusher.push("dev/app", im.image("denied"), "1.0")
    async with token_registry.client(credentials=Credentials("dev", "dev-pw")) as c:
        with pytest.raises(AuthError) as e:
            await copy_image(
                c,
                parse(f"{token_registry.host}/dev/app:1.0"),
                c,
                target(token_registry, "prod/app"),
            )
    assert e.value.exit_code == 3 and "\n" not in str(e.value)
    assert "may not pull prod/app" in str(e.value)  # the first thing refused: HEAD of the target
    assert "dev-pw" not in str(e.value)
    assert token_registry.pusher.tags("prod/app") == []


async def test_wrong_password_at_the_token_server(token_registry: Reg) -> None:
    token_registry.pusher.push("dev/app", im.image("badpw"), "1.0")
    async with token_registry.client(credentials=Credentials("promoter", "nope")) as c:
        with pytest.raises(AuthError, match="credentials were refused"):
            await c.get_manifest("dev/app", "1.0")


async def test_mount_declined_for_lack_of_source_pull_falls_back_to_streaming(
    token_registry: Reg, token_server: TokenServer
) -> None:
    """Two identities on one registry: the target's cannot read the source, so the registry
    refuses the mount (401, the token lacks pull on the source); the copy stops asking and
    streams. (A mount answered 202 is covered in test_copy.)"""
    img = im.image("declined")
    token_registry.pusher.push("other/app", img, "1.0")
    src = token_registry.client(credentials=Credentials("reader", "reader-pw"))
    dst = token_registry.client(credentials=Credentials("dev", "dev-pw"))
    async with src, dst:
        result = await copy_image(
            src,
            parse(f"{token_registry.host}/other/app:1.0"),
            dst,
            target(token_registry, "dev/app"),
        )
    assert result.blobs_mounted == 0
    assert result.blobs_streamed == len(img.blobs)
    assert token_registry.pusher.digest("dev/app", "1.0") == img.digest


async def test_expired_token_is_refreshed(token_registry: Reg, token_server: TokenServer) -> None:
    img = im.image("expiry")
    token_registry.pusher.push("dev/app", img, "1.0")
    now = [1000.0]
    async with token_registry.client(credentials=Credentials("reader", "reader-pw")) as c:
        c.auth.clock = lambda: now[0]  # the token server is real; only our clock is moved
        await c.get_manifest("dev/app", "1.0")
        await c.get_manifest("dev/app", "1.0")
        assert len(token_server.requests) == 1  # cached while valid
        now[0] += token_server.ttl  # past expiry (minus the refresh margin)
        await c.get_manifest("dev/app", "1.0")
    assert len(token_server.requests) == 2


async def test_anonymous_pull_when_the_token_server_allows_it(
    token_registry: Reg, token_server: TokenServer
) -> None:
    img = im.image("anon")
    token_registry.pusher.push("public/app", img, "1.0")
    token_server.anonymous = {"public/*": ["pull"]}
    async with token_registry.client() as c:
        manifest = await c.get_manifest("public/app", "1.0")
        with pytest.raises(AuthError):
            await c.get_manifest("dev/app", "1.0")
    assert manifest.digest == img.digest
    assert token_server.requests[0]["user"] is None


# ---------------------------------------------------------------------------- redirects


class _Recorder(BaseHTTPRequestHandler):
    """Plays both a registry that redirects blob GETs and the storage host it redirects to."""

    seen: list[tuple[str, str | None]]
    storage: str
    blob: bytes

    def log_message(self, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        self.seen.append((self.path, self.headers.get("authorization")))
        if self.path == "/v2/":
            if self.headers.get("authorization") is None:
                self.send_response(401)
                self.send_header("WWW-Authenticate", 'Basic realm="r"')
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
        elif self.path.startswith("/v2/"):
            self.send_response(307)
            self.send_header("Location", f"{self.storage}/blob-data")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        self.send_response(200)
        self.send_header("Content-Length", str(len(self.blob)))
        self.end_headers()
        self.wfile.write(self.blob)


@pytest.fixture
def redirecting_registry() -> Iterator[tuple[str, list[tuple[str, str | None]]]]:
    seen: list[tuple[str, str | None]] = []
    blob = b"layer bytes behind a redirect"
    servers = []
    for _ in range(2):
        handler = type("H", (_Recorder,), {"seen": seen, "blob": blob, "storage": ""})
        servers.append(ThreadingHTTPServer(("127.0.0.1", 0), handler))
    registry, storage = servers
    registry.RequestHandlerClass.storage = f"http://localhost:{storage.server_address[1]}"
    for s in servers:
        threading.Thread(target=s.serve_forever, daemon=True).start()
    yield f"127.0.0.1:{registry.server_address[1]}", seen
    for s in servers:
        s.shutdown()
        s.server_close()


async def test_authorization_is_not_sent_to_another_host_on_redirect(
    redirecting_registry: tuple[str, list[tuple[str, str | None]]],
) -> None:
    host, seen = redirecting_registry
    blob = b"layer bytes behind a redirect"
    desc = Descriptor("application/octet-stream", im.sha256(blob), len(blob))
    async with (
        RegistryClient(host, credentials=Credentials("alice", "s3cret"), retry=FAST_RETRY) as c,
        c.open_blob("app", desc) as chunks,
    ):
        data = b"".join([chunk async for chunk in chunks])
    assert data == blob
    by_path = dict(seen)
    assert by_path[f"/v2/app/blobs/{desc.digest}"] is not None  # the registry got credentials
    assert by_path["/blob-data"] is None  # the storage host (localhost ≠ 127.0.0.1) did not


async def test_identity_token_from_docker_config_uses_the_refresh_token_grant(
    token_registry: Reg, token_server: TokenServer, docker_config: Path
) -> None:
    img = im.image("identity")
    token_registry.pusher.push("dev/app", img, "1.0")
    # the test token server accepts "<user>:<password>" as a refresh token
    (docker_config / "config.json").write_text(
        json.dumps({"auths": {token_registry.host: {"identitytoken": "reader:reader-pw"}}})
    )
    async with token_registry.client() as c:
        manifest = await c.get_manifest("dev/app", "1.0")
    assert manifest.digest == img.digest
    assert [r["user"] for r in token_server.requests] == ["reader"]


# ---------------------------------------------------------------------------- listings


async def test_catalog_and_tags_with_token_auth(
    token_registry: Reg, token_server: TokenServer
) -> None:
    """drift-watch and rescan list repositories and tags: the catalog needs its own scope."""
    img = im.image("listing")
    for repo, tag in (("dev/app", "1.0"), ("dev/app", "2.0"), ("prod/app", "1.0")):
        token_registry.pusher.push(repo, img, tag)
    async with token_registry.client(credentials=Credentials("admin", "admin-pw")) as c:
        assert await c.catalog() == ["dev/app", "prod/app"]
        assert await c.list_tags("dev/app") == ["1.0", "2.0"]
        assert await c.list_tags("no/such") == []
    asked = [s for r in token_server.requests for s in r["scopes"]]
    assert "registry:catalog:*" in asked
    # a user without the catalog grant is told so, in one line
    async with token_registry.client(credentials=Credentials("reader", "reader-pw")) as c:
        with pytest.raises(AuthError) as caught:
            await c.catalog()
    assert "_catalog" in str(caught.value) and "\n" not in str(caught.value)


async def test_catalog_follows_link_pages(registry: Reg) -> None:
    img = im.image("pages")
    for n in range(5):
        registry.pusher.push(f"team/app{n}", img, "1.0")
    async with registry.client() as c:
        # distribution pages the catalog when asked for fewer than it has (Link: rel="next")
        await c.base_url()
        before = c.requests["GET"]
        listed = await c._paged("/v2/_catalog?n=2", "repositories", "_catalog")
        pages = c.requests["GET"] - before
    assert sorted(listed) == [f"team/app{n}" for n in range(5)]
    assert pages == 3  # 2 + 2 + 1
