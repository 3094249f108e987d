"""RegistryClient: transport choice, TLS, and defences against a misbehaving registry.

The misbehaviour cases (oversized or unknown manifests, lying Docker-Content-Digest headers) use a
scripted HTTP server, because the real distribution registry refuses to store such content; that
is the one place these tests stand in for a registry, and it is said here on purpose.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
import select
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from airlock.localregistry import start_registry
from registry import client as client_module
from registry.client import RegistryClient, allowed_schemes
from registry.errors import DigestMismatch, NotFound, RegistryError, UnsupportedContent
from registry.http import tune_http
from registry.manifest import MAX_INDEX_CHILDREN, MAX_MANIFEST_SIZE, MAX_REFERRERS, Descriptor
from registry.referrers import list_referrers, merge_fallback
from tests.support import images as im
from tests.support.certs import cert as _cert
from tests.support.faultproxy import Fault
from tests.support.registries import FAST_RETRY, ProxiedReg

pytestmark = pytest.mark.anyio


@pytest.mark.parametrize(
    ("host", "insecure", "schemes"),
    [
        ("localhost:5000", False, ["http", "https"]),
        ("127.0.0.1:5000", False, ["http", "https"]),
        ("127.5.6.7", False, ["http", "https"]),
        ("[::1]:5000", False, ["http", "https"]),
        ("registry.example.com", False, ["https"]),
        ("10.0.0.5:5000", False, ["https"]),
        ("localhost.example.com:5000", False, ["https"]),
        ("registry.example.com", True, ["https", "http"]),
    ],
)
def test_plain_http_only_for_loopback_or_insecure(
    host: str, insecure: bool, schemes: list[str]
) -> None:
    assert allowed_schemes(host, insecure) == schemes


# ---------------------------------------------------------------------------- TLS


@pytest.fixture
def tls_registry(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca = _cert("airlock test CA", ca_key, ca_key, "airlock test CA", ca=True)
    cert = _cert("127.0.0.1", key, ca_key, "airlock test CA", ca=False)
    pem = serialization.Encoding.PEM
    (tmp_path / "ca.pem").write_bytes(ca.public_bytes(pem))
    (tmp_path / "cert.pem").write_bytes(cert.public_bytes(pem))
    (tmp_path / "key.pem").write_bytes(
        key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    server = start_registry(
        tmp_path / "tls", tls=(tmp_path / "cert.pem", tmp_path / "key.pem", tmp_path / "ca.pem")
    )
    yield server.host, tmp_path / "ca.pem"
    server.stop()


async def test_https_registry_with_a_ca_bundle(tls_registry: tuple[str, Path]) -> None:
    host, ca = tls_registry
    async with RegistryClient(host, ca_bundle=str(ca), retry=FAST_RETRY) as client:
        assert await client.base_url() == f"https://{host}"
        assert await client.head_manifest("app", "1.0") is None


async def test_untrusted_certificate_is_refused_not_downgraded(
    tls_registry: tuple[str, Path],
) -> None:
    host, _ = tls_registry
    async with RegistryClient(host, retry=FAST_RETRY) as client:
        with pytest.raises(RegistryError, match=r"not trusted.*--ca-bundle"):
            await client.base_url()


async def test_insecure_skips_verification(tls_registry: tuple[str, Path]) -> None:
    host, _ = tls_registry
    async with RegistryClient(host, insecure=True, retry=FAST_RETRY) as client:
        assert await client.base_url() == f"https://{host}"


async def test_a_lazy_context_verifies_with_its_ca_file_at_the_first_handshake(
    tls_registry: tuple[str, Path],
) -> None:
    """The context whose CA file is read at the first handshake (what Prefect's API clients get
    from flows/landing.lazy_prefect_tls) trusts that CA, and nothing else: built without it,
    the same server is refused."""
    import ssl

    from registry.http import lazy_default_context

    host, ca = tls_registry
    trusted = lazy_default_context(cafile=str(ca))
    assert trusted.cert_store_stats()["x509_ca"] == 0  # nothing read yet
    async with httpx.AsyncClient(verify=trusted) as client:
        assert (await client.get(f"https://{host}/v2/")).status_code == 200
    assert trusted.cert_store_stats()["x509_ca"] == 1
    assert trusted.verify_mode == ssl.CERT_REQUIRED and trusted.check_hostname
    async with httpx.AsyncClient(verify=lazy_default_context()) as client:
        with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
            await client.get(f"https://{host}/v2/")


async def test_prefect_api_clients_get_the_lazy_context_with_prefect_s_cert_file(
    tls_registry: tuple[str, Path],
) -> None:
    """After lazy_prefect_tls, a Prefect API client still verifies with
    PREFECT_API_SSL_CERT_FILE (the TLS registry stands in for an HTTPS API: any answer over a
    verified connection will do)."""
    from prefect.client.orchestration import PrefectClient
    from prefect.settings import (
        PREFECT_API_SSL_CERT_FILE,
        PREFECT_CLIENT_MAX_RETRIES,
        temporary_settings,
    )

    from flows.landing import lazy_prefect_tls
    from registry.http import LazyTrust

    lazy_prefect_tls()
    host, ca = tls_registry
    with temporary_settings({PREFECT_API_SSL_CERT_FILE: str(ca)}):
        async with PrefectClient(f"https://{host}/v2") as client:
            assert (await client._client.get("/")).status_code == 200
    with temporary_settings({PREFECT_CLIENT_MAX_RETRIES: 0}):  # refused at once, not retried
        async with PrefectClient(f"https://{host}/v2") as client:  # certifi lacks our CA
            with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
                await client._client.get("/")
    import prefect.client.orchestration as orchestration

    assert isinstance(orchestration.ssl.create_default_context(cafile=str(ca)), LazyTrust)


# ------------------------------------------------------------------------ a misbehaving registry


class Scripted(BaseHTTPRequestHandler):
    routes: dict[tuple[str, str], tuple[int, dict[str, str], bytes]]

    def log_message(self, *args: object) -> None:
        pass

    def _answer(self, method: str) -> None:
        status, headers, body = self.routes.get((method, self.path), (404, {}, b""))
        if self.path == "/v2/" and (method, self.path) not in self.routes:
            status, headers, body = 200, {"Docker-Distribution-API-Version": "registry/2.0"}, b"{}"
        self.send_response(status)
        for k, v in headers.items():
            self.send_header(k, v)
        self.send_header("Content-Length", headers.get("Content-Length", str(len(body))))
        self.end_headers()
        if method == "GET":
            self.wfile.write(body)

    def do_GET(self) -> None:
        self._answer("GET")

    def do_HEAD(self) -> None:
        self._answer("HEAD")


class _QuietServer(ThreadingHTTPServer):
    def handle_error(self, request: object, client_address: object) -> None:
        pass  # a client hanging up early (oversized manifest) is the point of some tests


@pytest.fixture
def scripted() -> Iterator[tuple[str, dict]]:
    routes: dict = {}
    handler = type("H", (Scripted,), {"routes": routes})
    server = _QuietServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"127.0.0.1:{server.server_address[1]}", routes
    server.shutdown()
    server.server_close()


def _serve_manifest(
    routes: dict,
    ref: str,
    body: bytes,
    media_type: str,
    digest: str | None = None,
    length: str | None = None,
) -> None:
    headers = {
        "Content-Type": media_type,
        "Docker-Content-Digest": digest or "sha256:" + hashlib.sha256(body).hexdigest(),
    }
    if length:
        headers["Content-Length"] = length
    routes[("GET", f"/v2/app/manifests/{ref}")] = (200, headers, body)


async def test_unknown_manifest_media_type_is_refused(scripted: tuple[str, dict]) -> None:
    host, routes = scripted
    body = json.dumps(
        {"schemaVersion": 2, "mediaType": "application/vnd.example.thing+json", "config": {}}
    ).encode()
    _serve_manifest(routes, "1.0", body, "application/vnd.example.thing+json")
    async with RegistryClient(host, retry=FAST_RETRY) as client:
        with pytest.raises(UnsupportedContent, match="unsupported manifest media type") as e:
            await client.get_manifest("app", "1.0")
    assert e.value.exit_code == 2


async def test_schema1_is_refused_with_advice(scripted: tuple[str, dict]) -> None:
    host, routes = scripted
    _serve_manifest(
        routes,
        "old",
        json.dumps({"schemaVersion": 1, "name": "app"}).encode(),
        "application/vnd.docker.distribution.manifest.v1+prettyjws",
    )
    async with RegistryClient(host, retry=FAST_RETRY) as client:
        with pytest.raises(UnsupportedContent, match="schema 1"):
            await client.get_manifest("app", "old")


async def test_oversized_manifest_is_refused_before_reading_it_all(
    scripted: tuple[str, dict],
) -> None:
    host, routes = scripted
    body = b'{"schemaVersion": 2, "pad": "' + b"x" * MAX_MANIFEST_SIZE + b'"}'
    _serve_manifest(routes, "big", body, im.OCI_MANIFEST)
    async with RegistryClient(host, retry=FAST_RETRY) as client:
        with pytest.raises(UnsupportedContent, match="byte limit"):
            await client.get_manifest("app", "big")


async def test_docker_content_digest_that_lies_is_caught(scripted: tuple[str, dict]) -> None:
    host, routes = scripted
    img = im.image("liar")
    _serve_manifest(routes, "1.0", img.raw, im.OCI_MANIFEST, digest="sha256:" + "1" * 64)
    async with RegistryClient(host, retry=FAST_RETRY) as client:
        with pytest.raises(DigestMismatch):
            await client.get_manifest("app", "1.0")


async def test_manifest_by_digest_must_hash_to_that_digest(scripted: tuple[str, dict]) -> None:
    host, routes = scripted
    img, other = im.image("asked"), im.image("served")
    _serve_manifest(routes, img.digest, other.raw, im.OCI_MANIFEST, digest=img.digest)
    async with RegistryClient(host, retry=FAST_RETRY) as client:
        with pytest.raises(DigestMismatch, match=f"expected {img.digest}"):
            await client.get_manifest("app", img.digest)


async def test_head_without_digest_header_falls_back_to_get(scripted: tuple[str, dict]) -> None:
    host, routes = scripted
    img = im.image("nohead")
    _serve_manifest(routes, "1.0", img.raw, im.OCI_MANIFEST)
    routes[("HEAD", "/v2/app/manifests/1.0")] = (200, {"Content-Type": im.OCI_MANIFEST}, img.raw)
    async with RegistryClient(host, retry=FAST_RETRY) as client:
        desc = await client.head_manifest("app", "1.0")
    assert desc is not None and desc.digest == img.digest and desc.size == len(img.raw)


async def test_referrers_api_pages_are_followed_and_its_absence_is_none(
    scripted: tuple[str, dict],
) -> None:
    """distribution 2.8 has no referrers API (see test_copy for the fallback tag); a registry
    that has one answers with an OCI index, possibly in pages linked by `Link: rel=next`."""
    host, routes = scripted
    img = im.image("subject")
    report = im.artifact(img, "application/vnd.airlock.test-report.pytest+json", b"{}", "x/y")
    sbom = im.artifact(img, "application/spdx+json", b"{}", "x/y")
    path = f"/v2/app/referrers/{img.digest}"
    page1 = im.fallback_index([report], ["application/vnd.airlock.test-report.pytest+json"])
    page2 = json.loads(im.fallback_index([sbom], ["application/spdx+json"]).raw)
    page2["manifests"].append({"mediaType": im.OCI_MANIFEST, "digest": "sha256:bad", "size": 1})
    index = {"Content-Type": im.OCI_INDEX}
    routes[("GET", path)] = (200, {**index, "Link": f'<{path}?last=1>; rel="next"'}, page1.raw)
    routes[("GET", f"{path}?last=1")] = (200, index, json.dumps(page2).encode())
    routes[("GET", f"/v2/broken/referrers/{img.digest}")] = (503, {}, b"")
    async with RegistryClient(host, retry=FAST_RETRY) as client:
        listing = await client.get_referrers("app", img.digest)
        missing = await client.get_referrers("other", img.digest)
        with pytest.raises(RegistryError, match="retry later"):
            await client.get_referrers("broken", img.digest)  # a failure is not "no API"
    assert listing is not None
    found, problems = listing
    assert [d.digest for d in found] == [report.digest, sbom.digest]
    assert found[0].artifact_type == "application/vnd.airlock.test-report.pytest+json"
    assert len(problems) == 1 and "sha256:bad" in problems[0]
    assert missing is None


# ------------------------------------------------------------------------ is it a registry at all


HTML = {"Content-Type": "text/html; charset=utf-8"}
JSON = {"Content-Type": "application/json; charset=utf-8"}
API = {"Docker-Distribution-API-Version": "registry/2.0"}


@pytest.mark.parametrize(
    ("status", "headers", "body"),
    [
        (200, HTML, b"<!doctype html><h1>Our shop</h1>"),
        (200, {"Content-Type": "text/plain"}, b"OK"),
        (200, {}, b""),
        (401, HTML, b"<h1>Please log in</h1>"),  # a login page: no Basic or Bearer challenge
        (401, {"WWW-Authenticate": 'Negotiate realm="corp"'}, b""),
    ],
)
async def test_a_web_server_that_is_not_a_registry_is_named_as_such(
    scripted: tuple[str, dict], status: int, headers: dict[str, str], body: bytes
) -> None:
    host, routes = scripted
    routes[("GET", "/v2/")] = (status, headers, body)
    async with RegistryClient(host, retry=FAST_RETRY) as client:
        with pytest.raises(RegistryError, match="does not look like an OCI registry") as info:
            await client.base_url()
    assert info.value.exit_code == 3 and host in str(info.value) and "\n" not in str(info.value)


@pytest.mark.parametrize(
    ("status", "headers", "body"),
    [
        (200, {**API, **JSON}, b"{}"),  # distribution
        (200, API, b""),  # the header alone
        (200, JSON, b"{}"),  # behind a proxy that drops the header
        (200, {}, b"{}"),  # JSON without a content type
        (401, {"WWW-Authenticate": 'Bearer realm="https://auth.example/token"'}, b""),
        (401, {"WWW-Authenticate": 'Basic realm="Registry"', **HTML}, b"<h1>401</h1>"),
        (401, API, b""),
    ],
)
async def test_registries_answer_the_ping_in_several_ways(
    scripted: tuple[str, dict], status: int, headers: dict[str, str], body: bytes
) -> None:
    host, routes = scripted
    routes[("GET", "/v2/")] = (status, headers, body)
    async with RegistryClient(host, retry=FAST_RETRY) as client:
        assert await client.base_url() == f"http://{host}"


# ------------------------------------------------------------------------ caps on fan-out


def _listing(count: int) -> bytes:
    entries = [
        {"mediaType": im.OCI_MANIFEST, "digest": f"sha256:{i:064x}", "size": 10}
        for i in range(count)
    ]
    return json.dumps(
        {"schemaVersion": 2, "mediaType": im.OCI_INDEX, "manifests": entries}
    ).encode()


async def test_an_index_over_the_children_cap_is_refused(scripted: tuple[str, dict]) -> None:
    host, routes = scripted
    body = _listing(MAX_INDEX_CHILDREN + 1)
    _serve_manifest(routes, "wide", body, im.OCI_INDEX)
    _serve_manifest(routes, "ok", _listing(MAX_INDEX_CHILDREN), im.OCI_INDEX)
    async with RegistryClient(host, retry=FAST_RETRY) as client:
        assert len((await client.get_manifest("app", "ok")).children()) == MAX_INDEX_CHILDREN
        with pytest.raises(UnsupportedContent, match=f"limit of {MAX_INDEX_CHILDREN}") as info:
            await client.get_manifest("app", "wide")
    assert info.value.exit_code == 2


async def test_referrers_over_the_cap_are_refused_across_pages(
    scripted: tuple[str, dict],
) -> None:
    """Each page is under the cap; together they are over it."""
    host, routes = scripted
    subject = "sha256:" + "ab" * 32
    path = f"/v2/app/referrers/{subject}"
    half = MAX_REFERRERS // 2 + 1
    index = {"Content-Type": im.OCI_INDEX}
    routes[("GET", path)] = (200, {**index, "Link": f'<{path}?n=2>; rel="next"'}, _listing(half))
    routes[("GET", f"{path}?n=2")] = (200, index, _listing(half))
    routes[("GET", f"/v2/one/referrers/{subject}")] = (200, index, _listing(MAX_REFERRERS + 1))
    async with RegistryClient(host, retry=FAST_RETRY) as client:
        for repo in ("app", "one"):
            with pytest.raises(UnsupportedContent, match=f"limit of {MAX_REFERRERS}") as info:
                await client.get_referrers(repo, subject)
            assert info.value.exit_code == 2


async def test_a_fallback_tag_index_over_the_referrers_cap_is_refused(
    scripted: tuple[str, dict],
) -> None:
    """Registries without the referrers API (404 here) list referrers under the fallback tag:
    the same cap applies to reading it, and to adding to it."""
    host, routes = scripted
    subject = "sha256:" + "cd" * 32
    tag = "sha256-" + "cd" * 32
    _serve_manifest(routes, tag, _listing(MAX_REFERRERS + 1), im.OCI_INDEX)
    full = _listing(MAX_REFERRERS)
    routes[("GET", f"/v2/full/manifests/{tag}")] = (
        200,
        {"Content-Type": im.OCI_INDEX, "Docker-Content-Digest": im.sha256(full)},
        full,
    )
    one_more = Descriptor(im.OCI_MANIFEST, "sha256:" + "ef" * 32, 10)
    async with RegistryClient(host, retry=FAST_RETRY) as client:
        with pytest.raises(UnsupportedContent, match=f"limit of {MAX_REFERRERS}"):
            await list_referrers(client, "app", subject)
        assert len((await list_referrers(client, "full", subject)).descriptors) == MAX_REFERRERS
        with pytest.raises(UnsupportedContent, match=f"limit of {MAX_REFERRERS}"):
            await merge_fallback(client, "full", subject, [one_more])


# ------------------------------------------------------------------------ reads, once and afresh


def _manifest_gets(proxied: ProxiedReg, ref: str) -> int:
    return proxied.faults.count("GET", f"/manifests/{re.escape(ref)}$")


async def test_a_digest_is_read_once_per_client_and_a_tag_every_time(
    proxied_registry: ProxiedReg,
) -> None:
    """A digest's bytes never change, so a client keeps what it read by digest (a hop's gates
    and its copy read the same referrers); a tag can move at any time, so it is never kept —
    an insider who moves it between two reads is seen by the second."""
    first, second = im.image("cache-first"), im.image("cache-second")
    proxied_registry.pusher.push("dev/app", first, "1.0")
    async with proxied_registry.client() as client:
        assert (await client.get_manifest("dev/app", "1.0")).digest == first.digest
        assert (await client.get_manifest("dev/app", first.digest)).raw == first.raw
        assert (await client.get_manifest("dev/app", first.digest)).raw == first.raw
        proxied_registry.pusher.push("dev/app", second, "1.0")  # the tag moves
        assert (await client.get_manifest("dev/app", "1.0")).digest == second.digest
        # read by another repository: its own read (a digest in one is not one in the other)
        with pytest.raises(NotFound):
            await client.get_manifest("dev/other", first.digest)
    assert _manifest_gets(proxied_registry, "1.0") == 2
    assert _manifest_gets(proxied_registry, first.digest) == 1  # dev/other's, not dev/app's


async def test_a_corrupt_manifest_is_not_kept(proxied_registry: ProxiedReg) -> None:
    img = im.image("cache-corrupt")
    proxied_registry.pusher.push("dev/app", img)
    proxied_registry.faults.add(Fault("GET", f"/manifests/{img.digest}$", corrupt_at=5, times=None))
    async with proxied_registry.client() as client:
        with pytest.raises(DigestMismatch):
            await client.get_manifest("dev/app", img.digest)
        proxied_registry.faults.clear()
        assert (await client.get_manifest("dev/app", img.digest)).raw == img.raw


async def test_kept_manifests_are_bounded_oldest_out(
    proxied_registry: ProxiedReg, monkeypatch: pytest.MonkeyPatch
) -> None:
    images = [im.image(f"cache-bound-{i}") for i in range(5)]
    for img in images:
        proxied_registry.pusher.push("dev/app", img)
    monkeypatch.setattr(client_module, "MANIFEST_CACHE_BYTES", 4 * max(len(i.raw) for i in images))
    async with proxied_registry.client() as client:
        for img in [*images, images[0], images[4]]:
            await client.get_manifest("dev/app", img.digest)
    # room for four: the first was dropped when the fifth came, and read again; the fifth stayed
    assert [_manifest_gets(proxied_registry, i.digest) for i in images] == [2, 1, 1, 1, 1]


async def test_a_pooled_connection_the_server_closed_is_seen_closed() -> None:
    """tune_http() makes httpcore's check of idle pooled connections cheap (registry/http.py);
    the check must still see a server's close, or the next request would go down a dead
    connection ("Server disconnected without sending a response")."""
    from httpcore._backends.anyio import AnyIOStream

    tune_http()
    assert getattr(AnyIOStream.get_extra_info, "airlock_tuned", False)
    release = asyncio.Event()
    accepted = 0

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal accepted
        accepted += 1
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        await writer.drain()
        await release.wait()  # keep-alive, until the test lets the server close it
        writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}/"
    try:
        async with httpx.AsyncClient() as http:
            stream = (await http.get(url)).extensions["network_stream"]
            assert stream.get_extra_info("is_readable") is False  # open and idle: reusable
            release.set()
            sock = stream.get_extra_info("socket")
            readable, _, _ = await asyncio.to_thread(select.select, [sock], [], [], 10)
            assert readable, "the server's close never reached the client"
            assert stream.get_extra_info("is_readable") is True
            assert (await http.get(url)).text == "ok"
        assert accepted == 2  # the second request went down a new connection
    finally:
        server.close()
