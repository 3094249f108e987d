"""A small Docker token server (distribution's token auth spec) for tests.

ES256 JWTs signed with a key whose self-signed certificate the registry trusts
(`auth.token.rootcertbundle`); the JWT header carries `kid` = the libtrust key id of that key,
which is how distribution 2.8 finds the verifying key. Users hold per-repository actions
(fnmatch patterns). Every token request is recorded, so tests can check which scopes were asked.
"""

from __future__ import annotations

import base64
import datetime
import fnmatch
import hashlib
import json
import threading
import time
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import jwt
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

ISSUER = "airlock-test-issuer"
SERVICE = "airlock-test-registry"


def libtrust_key_id(public_key: ec.EllipticCurvePublicKey) -> str:
    der = public_key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    b32 = base64.b32encode(hashlib.sha256(der).digest()[:30]).decode()
    return ":".join(b32[i : i + 4] for i in range(0, len(b32), 4))


@dataclass
class User:
    password: str
    grants: dict[str, list[str]]  # repository pattern → actions


@dataclass
class TokenServer:
    directory: Path
    users: dict[str, User]
    ttl: int = 300
    anonymous: dict[str, list[str]] = field(default_factory=dict)
    requests: list[dict] = field(default_factory=list)  # {"user", "scopes"} per token request

    def __post_init__(self) -> None:
        self.key = ec.generate_private_key(ec.SECP256R1())
        self.kid = libtrust_key_id(self.key.public_key())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "airlock test token signer")])
        now = datetime.datetime.now(datetime.UTC)
        cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(self.key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=30))
            .sign(self.key, hashes.SHA256())
        )
        self.directory.mkdir(parents=True, exist_ok=True)
        self.cert_path = self.directory / "token-signer.pem"
        self.cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_GET(self) -> None:
                query = parse_qs(urlsplit(self.path).query)
                server._issue(self, query.get("scope", []))

            def do_POST(self) -> None:  # OAuth2 refresh-token grant
                length = int(self.headers.get("content-length") or 0)
                form = parse_qs(self.rfile.read(length).decode())
                server._issue(self, " ".join(form.get("scope", [])).split(), form)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    @property
    def realm(self) -> str:
        return f"http://127.0.0.1:{self.port}/token"

    def registry_auth_config(self) -> dict:
        return {
            "token": {
                "realm": self.realm,
                "service": SERVICE,
                "issuer": ISSUER,
                "rootcertbundle": str(self.cert_path),
            }
        }

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def _authenticate(
        self, handler: BaseHTTPRequestHandler, form: dict | None
    ) -> str | bool | None:
        if form is not None:  # refresh token grant: the refresh token is "<user>:<password>"
            token = (form.get("refresh_token") or [""])[0]
            user, _, password = token.partition(":")
            found = self.users.get(user)
            return user if found and found.password == password else False
        header = handler.headers.get("authorization", "")
        if not header.startswith("Basic "):
            return None
        user, _, password = base64.b64decode(header[6:]).decode().partition(":")
        found = self.users.get(user)
        return user if found and found.password == password else False

    def _issue(
        self, handler: BaseHTTPRequestHandler, scopes: list[str], form: dict | None = None
    ) -> None:
        user = self._authenticate(handler, form)
        if user is False:
            handler.send_response(401)
            handler.send_header("Content-Type", "application/json")
            handler.end_headers()
            handler.wfile.write(b'{"details":"invalid username or password"}')
            return
        self.requests.append({"user": user, "scopes": list(scopes)})
        grants = self.users[user].grants if user else self.anonymous
        access = []
        for scope in scopes:
            kind, _, rest = scope.partition(":")
            name, _, actions = rest.rpartition(":")
            if f"{kind}:{name}" == "registry:catalog":  # granted by a "registry:catalog" key
                if "registry:catalog" in grants:
                    access.append({"type": "registry", "name": "catalog", "actions": ["*"]})
                continue
            if kind != "repository":
                continue
            allowed = set()
            for pattern, granted in grants.items():
                if fnmatch.fnmatchcase(name, pattern):
                    allowed |= set(granted)
            wanted = [a for a in actions.split(",") if a in allowed]
            if wanted:
                access.append({"type": "repository", "name": name, "actions": wanted})
        now = int(time.time())
        claims = {
            "iss": ISSUER,
            "sub": user or "",
            "aud": SERVICE,
            "exp": now + self.ttl,
            "nbf": now - 10,
            "iat": now,
            "jti": uuid.uuid4().hex,
            "access": access,
        }
        token = jwt.encode(claims, self.key, algorithm="ES256", headers={"kid": self.kid})
        body = json.dumps(
            {
                "token": token,
                "expires_in": self.ttl,
                "issued_at": datetime.datetime.now(datetime.UTC).isoformat(),
            }
        ).encode()
        handler.send_response(200)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        handler.wfile.write(body)
