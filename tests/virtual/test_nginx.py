"""`airlock virtual nginx`, served by real nginx (Debian's, started here on loopback) in front of
the gateway: a push through the developers' entry point lands in dev-local, a prod image pulls
through the customers' entry point, a dev-only digest does not."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from airlock.supervisor import Supervisor
from tests.support import images as im
from tests.support.certs import cert as _cert
from tests.support.gateway import PASSWORD, Gw
from tests.support.nginx import start_nginx
from tests.support.skopeo import layout_digest as _layout_digest
from tests.support.skopeo import push_through, skopeo


@pytest.fixture(scope="module")
def nginx(gw: Gw, tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    with Supervisor() as sup:
        yield start_nginx(gw.config, gw.host, tmp_path_factory.mktemp("nginx"), sup)


def test_a_push_through_nginx_lands_in_dev_local(gw: Gw, nginx: int, tmp_path: Path) -> None:
    img = im.image("through-nginx")
    gw.pusher.push("prod/seed", img, "nginx")
    layout = tmp_path / "layout"
    push_through(
        f"{gw.local.host}/prod/seed:nginx",
        f"127.0.0.1:{nginx + 1}/web:3.0",  # docker's entry point: no prefix to type
        layout,
        f"alice:{PASSWORD}",
    )
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
    servers = len(load(gw.config).repositories)  # one server per virtual repository
    assert servers == 5
    assert text.count("listen 443 ssl;") == servers
    assert (
        "server_name docker.example.com;" in text and "server_name customers.example.com;" in text
    )
    assert text.count("ssl_certificate /etc/c.pem;") == servers
    assert text.count("ssl_certificate_key /etc/k.pem;") == servers
    assert "rewrite ^/v2/(.+)$ /v2/customers/$1 break;" in text
    assert "proxy_redirect /v2/customers/ /v2/;" in text
    assert "client_max_body_size 0;" in text and "proxy_request_buffering off;" in text
