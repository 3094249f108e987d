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
from tests.e2e.conftest import stop
from tests.support import images as im
from tests.virtual.conftest import PASSWORD, Gw
from tests.virtual.test_gateway import _layout_digest, skopeo


def _two_free_ports() -> int:
    """A port P with P + 1 free too (the config gives customers P and docker P + 1)."""
    for _ in range(50):
        with socket.socket() as a:
            a.bind(("127.0.0.1", 0))
            port = a.getsockname()[1]
            with socket.socket() as b:
                try:
                    b.bind(("127.0.0.1", port + 1))
                except OSError:
                    continue
        return port
    raise AssertionError("no two consecutive free ports")


@pytest.fixture(scope="module")
def nginx(gw: Gw, tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    base = tmp_path_factory.mktemp("nginx")
    os.chmod(base, 0o777)  # noqa: S103 - nginx's workers (nobody) write their temp files here
    port = _two_free_ports()
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
        wait_http_status(f"http://127.0.0.1:{port}/v2/", 401, proc, base / "error.log")
        yield port
    finally:
        stop(proc)


def wait_http_status(url: str, status: int, proc: subprocess.Popen, log: Path) -> None:
    import time

    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        assert proc.poll() is None, log.read_text() if log.exists() else "nginx exited"
        try:
            if httpx.get(url, timeout=2).status_code == status:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise AssertionError(f"{url} never answered {status}")


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


def test_tls_stanzas_and_hostnames(gw: Gw) -> None:
    from virtual.config import load
    from virtual.nginx import Tls, render

    text = render(
        load(gw.config), "10.0.0.5:8780", domain="example.com", tls=Tls("/etc/c.pem", "/etc/k.pem")
    )
    assert text.count("listen 443 ssl;") == 2
    assert (
        "server_name docker.example.com;" in text and "server_name customers.example.com;" in text
    )
    assert text.count("ssl_certificate /etc/c.pem;") == 2
    assert text.count("ssl_certificate_key /etc/k.pem;") == 2
    assert "rewrite ^/v2/(.+)$ /v2/customers/$1 break;" in text
    assert "proxy_redirect /v2/customers/ /v2/;" in text
    assert "client_max_body_size 0;" in text and "proxy_request_buffering off;" in text
