"""`airlock virtual nginx`, served by real nginx (Debian's, started here on loopback) in front of
the gateway: a push through the developers' entry point lands in dev-local, a prod image pulls
through the customers' entry point, a dev-only digest does not."""

from __future__ import annotations

import json
import os
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.airlock.test_cli import AIRLOCK
from tests.e2e.conftest import stop, wait_http
from tests.support import images as im
from tests.virtual.conftest import PASSWORD, Gw
from tests.virtual.test_gateway import _layout_digest, skopeo


def _free_ports(n: int) -> int:
    """A port P with P + 1 … P + n - 1 free too (one per repository, in name order: customers P,
    docker P + 1, secret P + 2, shop P + 3)."""
    for _ in range(50):
        with socket.socket() as a:
            a.bind(("127.0.0.1", 0))
            port = a.getsockname()[1]
            try:
                for k in range(1, n):
                    with socket.socket() as b:
                        b.bind(("127.0.0.1", port + k))
            except OSError:
                continue
        return port
    raise AssertionError(f"no {n} consecutive free ports")


@pytest.fixture(scope="module")
def nginx(gw: Gw, tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    base = tmp_path_factory.mktemp("nginx")
    os.chmod(base, 0o777)  # noqa: S103 - nginx's workers (nobody) write their temp files here
    port = _free_ports(4)
    command = [AIRLOCK, "virtual", "nginx", "--config", str(gw.config), "--gateway", gw.host]
    generated = subprocess.run(
        [*command, "--port-base", str(port), "--listen", "127.0.0.1"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    (base / "airlock.conf").write_text(generated)
    temp = " ".join(
        f"{kind}_temp_path {base / kind};"
        for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    (base / "nginx.conf").write_text(
        "\n".join(
            [
                "worker_processes 1;",
                f"pid {base / 'nginx.pid'};",
                f"error_log {base / 'error.log'};",
                "events {}",
                "http {",
                "  access_log off;",
                f"  {temp}",
                f"  include {base / 'airlock.conf'};",
                "}",
            ]
        )
    )
    log = base / "nginx.out"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            ["nginx", "-p", str(base), "-c", str(base / "nginx.conf"), "-g", "daemon off;"],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        # the gateway answers an unauthenticated ping with 401: nginx is up when that comes back
        wait_http(f"http://127.0.0.1:{port}/v2/", proc, base / "error.log", status=401)
        yield port
    finally:
        stop(proc)


def test_a_push_through_nginx_lands_in_dev_local(gw: Gw, nginx: int, tmp_path: Path) -> None:
    img = im.image("through-nginx")
    gw.pusher.push("prod/seed", img, "nginx")
    layout = tmp_path / "layout"
    pulled = skopeo(
        "--preserve-digests", f"docker://{gw.local.host}/prod/seed:nginx", f"oci:{layout}"
    )
    assert pulled.returncode == 0, pulled.stderr
    pushed = skopeo(
        "--preserve-digests",
        "--dest-creds",
        f"alice:{PASSWORD}",
        f"oci:{layout}",
        f"docker://127.0.0.1:{nginx + 1}/web:3.0",  # docker's entry point: no prefix to type
    )
    assert pushed.returncode == 0, pushed.stderr
    assert gw.pusher.digest("dev/web", "3.0") == _layout_digest(layout)


def test_the_customers_entry_point_serves_prod_and_not_dev(
    gw: Gw, nginx: int, tmp_path: Path
) -> None:
    released = im.multi_platform("nginx-released")
    gw.pusher.push("prod/shop", released, "1.0")
    out = tmp_path / "pulled"
    pulled = skopeo(
        "--all", "--preserve-digests", f"docker://127.0.0.1:{nginx}/shop:1.0", f"oci:{out}"
    )
    assert pulled.returncode == 0, pulled.stderr
    assert _layout_digest(out) == released.digest

    only_dev = im.image("nginx-only-dev")
    gw.pusher.push("dev/shop", only_dev, "dev")
    for ref in ("dev", only_dev.digest):
        r = httpx.get(
            f"http://127.0.0.1:{nginx}/v2/shop/manifests/{ref}", headers={"Accept": im.ACCEPT}
        )
        assert r.status_code == 404, r.text
        assert json.loads(r.text)["errors"][0]["code"] == "MANIFEST_UNKNOWN"


def test_tls_stanzas_and_hostnames(gw: Gw, tmp_path: Path) -> None:
    """The HTTPS variant: nginx itself accepts it (`nginx -t`, with a certificate made here),
    and each repository gets its hostname, certificate and prefix."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    from tests.registry.test_client import _cert
    from virtual.config import load
    from virtual.nginx import Tls, render

    key = ec.generate_private_key(ec.SECP256R1())
    cert = _cert("example.com", key, key, "example.com", ca=False)
    pem = serialization.Encoding.PEM
    (tmp_path / "c.pem").write_bytes(cert.public_bytes(pem))
    (tmp_path / "k.pem").write_bytes(
        key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    text = render(
        load(gw.config),
        "10.0.0.5:8780",
        domain="example.com",
        tls=Tls(str(tmp_path / "c.pem"), str(tmp_path / "k.pem")),
    )
    (tmp_path / "airlock.conf").write_text(text)
    (tmp_path / "nginx.conf").write_text(
        f"pid {tmp_path / 'nginx.pid'};\nerror_log {tmp_path / 'error.log'};\nevents {{}}\n"
        f"http {{ include {tmp_path / 'airlock.conf'}; }}\n"
    )
    checked = subprocess.run(
        ["nginx", "-t", "-p", str(tmp_path), "-c", str(tmp_path / "nginx.conf")],
        capture_output=True,
        text=True,
    )
    assert checked.returncode == 0, checked.stderr
    text = text.replace(str(tmp_path / "c.pem"), "/etc/c.pem").replace(
        str(tmp_path / "k.pem"), "/etc/k.pem"
    )
    assert text.count("listen 443 ssl;") == 4
    assert (
        "server_name docker.example.com;" in text and "server_name customers.example.com;" in text
    )
    assert text.count("ssl_certificate /etc/c.pem;") == 4
    assert text.count("ssl_certificate_key /etc/k.pem;") == 4
    assert "rewrite ^/v2/(.+)$ /v2/customers/$1 break;" in text
    assert "proxy_redirect /v2/customers/ /v2/;" in text
    assert "client_max_body_size 0;" in text and "proxy_request_buffering off;" in text
