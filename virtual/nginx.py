"""`airlock virtual nginx`: an nginx reverse-proxy config, one entry point per virtual repository.

Each virtual repository gets a server of its own — a hostname (`--domain`: docker.example.com,
customers.example.com) or a port (`--port-base`: 9000, 9001, … in name order) — so clients name
images without the virtual prefix (`docker.example.com/app:1.0`), and nginx adds it on the way
to the gateway (`/v2/docker/app/...`) and takes it off upload `Location`s on the way back. The
output is an `http`-level snippet, for /etc/nginx/conf.d/.

The settings large pushes need: no body size limit, no request or response buffering (layers
stream through), HTTP/1.1 with keep-alive to the gateway, long read and send timeouts.
"""

from __future__ import annotations

from dataclasses import dataclass

from registry.errors import BadInputError
from virtual.config import VirtualConfig

UPSTREAM = "airlock_gateway"


@dataclass(frozen=True)
class Tls:
    certificate: str
    key: str


def render(
    config: VirtualConfig,
    gateway: str,
    *,
    domain: str | None = None,
    port_base: int | None = None,
    listen_address: str = "",
    tls: Tls | None = None,
) -> str:
    if (domain is None) == (port_base is None):
        raise BadInputError("give exactly one of --domain (a hostname each) or --port-base")
    if port_base is not None and not 1 <= port_base <= 65535 - len(config.repositories):
        raise BadInputError(f"--port-base {port_base}: ports must stay within 1-65535")
    lines = [
        "# written by `airlock virtual nginx`: one server per virtual repository",
        f"upstream {UPSTREAM} {{",
        f"    server {gateway};",
        "    keepalive 32;",
        "}",
    ]
    for i, name in enumerate(sorted(config.repositories)):
        address = f"{listen_address}:" if listen_address else ""
        if port_base is not None:
            port, server_name = port_base + i, "_"
        else:
            port, server_name = (443 if tls else 80), f"{name}.{domain}"
        lines += ["", "server {", f"    listen {address}{port}{' ssl' if tls else ''};"]
        lines.append(f"    server_name {server_name};")
        if tls:
            lines += [
                f"    ssl_certificate {tls.certificate};",
                f"    ssl_certificate_key {tls.key};",
                "    ssl_protocols TLSv1.2 TLSv1.3;",
            ]
        lines += [
            "    client_max_body_size 0;         # layers of any size",
            "    chunked_transfer_encoding on;",
            "    proxy_request_buffering off;    # pushes stream through",
            "    proxy_buffering off;            # pulls stream through",
            "    proxy_http_version 1.1;",
            '    proxy_set_header Connection "";',
            "    proxy_set_header Host $http_host;",
            "    proxy_set_header X-Forwarded-Proto $scheme;",
            "    proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;",
            "    proxy_read_timeout 900s;",
            "    proxy_send_timeout 900s;",
            "",
            "    location = /v2/ {",
            f"        proxy_pass http://{UPSTREAM};",
            "    }",
            "    location = /v2/_catalog {",
            "        default_type application/json;",
            '        return 404 \'{"errors":[{"code":"UNSUPPORTED","message":"no catalog'
            " here\"}]}';",
            "    }",
            "    location /v2/ {",
            f"        rewrite ^/v2/(.+)$ /v2/{name}/$1 break;",
            f"        proxy_pass http://{UPSTREAM};",
            f"        proxy_redirect /v2/{name}/ /v2/;",
            "    }",
            "}",
        ]
    return "\n".join(lines) + "\n"
