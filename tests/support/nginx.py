"""Real nginx (Debian's) on loopback in front of the gateway, serving `airlock virtual nginx`'s
configuration (one port per repository, in name order)."""

from __future__ import annotations

import os
import socket
import subprocess
from pathlib import Path

from airlock.supervisor import Supervisor
from tests.support.cli import AIRLOCK


def free_ports(n: int) -> int:
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


def start_nginx(config: Path, gateway: str, base: Path, sup: Supervisor) -> int:
    """nginx with the configuration airlock generates for `config` in front of `gateway`
    (host:port), its files under `base`; returns the first repository's port."""
    os.chmod(base, 0o777)  # noqa: S103 - nginx's workers (nobody) write their temp files here
    port = free_ports(4)
    command = [AIRLOCK, "virtual", "nginx", "--config", str(config), "--gateway", gateway]
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
    nginx = ["nginx", "-p", str(base), "-c", str(base / "nginx.conf"), "-g", "daemon off;"]
    process = sup.start("nginx", nginx, log=base / "nginx.out")
    process.log = base / "error.log"  # what it says when it does not start
    # the gateway answers an unauthenticated ping with 401: nginx is up when that comes back
    process.wait_ready(f"http://127.0.0.1:{port}/v2/", status=401)
    return port
