"""`airlock virtual serve` and `airlock virtual nginx`: the virtual registry gateway."""

from __future__ import annotations

import argparse
from typing import Any


def add_parsers(sub: Any) -> None:
    p = sub.add_parser(
        "virtual",
        help="virtual repositories over real registries (a gateway, and its nginx config)",
        description="One OCI entry point per audience: members resolved in order, pushes to"
        " the deploy target, read-only views for customers.",
    )
    action = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    s = action.add_parser("serve", help="serve the gateway (until interrupted)")
    s.add_argument("--config", required=True, metavar="FILE", help="virtual.yaml")
    s.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    s.add_argument("--port", type=int, default=8780, help="port (default 8780)")
    s.add_argument(
        "--pipeline",
        metavar="FILE",
        help="pipeline.yaml: a view with `require_stage: STAGE` then serves only digests with"
        " STAGE's VSA signed by its public_key",
    )
    s.set_defaults(func=cmd_serve)

    n = action.add_parser("nginx", help="print an nginx config: one entry point per repository")
    n.add_argument("--config", required=True, metavar="FILE", help="virtual.yaml")
    n.add_argument("--gateway", default="127.0.0.1:8780", help="where the gateway listens")
    n.add_argument("--domain", help="a hostname each: REPOSITORY.DOMAIN")
    n.add_argument("--port-base", type=int, metavar="PORT", help="a port each, from PORT up")
    n.add_argument("--listen", default="", metavar="ADDRESS", help="address to listen on")
    n.add_argument("--tls-cert", metavar="FILE", help="certificate (PEM) to serve HTTPS")
    n.add_argument("--tls-key", metavar="FILE", help="its private key (PEM)")
    n.set_defaults(func=cmd_nginx)


def cmd_serve(args: argparse.Namespace) -> int:
    import logging

    import uvicorn

    from virtual.config import load
    from virtual.gateway import create_app

    config = load(args.config)
    if args.pipeline:
        from flows.config import load as load_pipeline

        config.trust_pipeline(load_pipeline(args.pipeline))
    logging.basicConfig(level=logging.INFO, format="%(levelname)s:     %(name)s: %(message)s")
    uvicorn.run(
        create_app(config), host=args.host, port=args.port, log_level="info", access_log=False
    )
    return 0


def cmd_nginx(args: argparse.Namespace) -> int:
    from registry.errors import BadInputError
    from virtual.config import load
    from virtual.nginx import Tls, render

    if bool(args.tls_cert) != bool(args.tls_key):
        raise BadInputError("--tls-cert and --tls-key go together")
    tls = Tls(args.tls_cert, args.tls_key) if args.tls_cert else None
    print(
        render(
            load(args.config),
            args.gateway,
            domain=args.domain,
            port_base=args.port_base,
            listen_address=args.listen,
            tls=tls,
        ),
        end="",
    )
    return 0
