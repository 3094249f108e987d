"""RegistryClient: transport choice, TLS, and defences against a misbehaving registry.

The misbehaviour cases (oversized or unknown manifests, lying Docker-Content-Digest headers) use a
scripted HTTP server, because the real distribution registry refuses to store such content; that
is the one place these tests stand in for a registry, and it is said here on purpose.
"""

from __future__ import annotations

import datetime
import hashlib
import ipaddress
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from airlock.localregistry import start_registry
from registry.client import RegistryClient, allowed_schemes
from registry.errors import DigestMismatch, RegistryError, UnsupportedContent
from registry.manifest import MAX_MANIFEST_SIZE
from tests.conftest import FAST_RETRY
from tests.support import images as im

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


def _cert(
    subject: str,
    key: ec.EllipticCurvePrivateKey,
    issuer_key: ec.EllipticCurvePrivateKey,
    issuer: str,
    ca: bool,
) -> x509.Certificate:
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
        .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer)]))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=7))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if not ca:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
    return builder.sign(issuer_key, hashes.SHA256())


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


# ------------------------------------------------------------------------ a misbehaving registry


class Scripted(BaseHTTPRequestHandler):
    routes: dict[tuple[str, str], tuple[int, dict[str, str], bytes]]

    def log_message(self, *args: object) -> None:
        pass

    def _answer(self, method: str) -> None:
        status, headers, body = self.routes.get((method, self.path), (404, {}, b""))
        if self.path == "/v2/":
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
