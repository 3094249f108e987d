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
    s.set_defaults(func=cmd_serve)


def cmd_serve(args: argparse.Namespace) -> int:
    import logging

    import uvicorn

    from virtual.config import load
    from virtual.gateway import create_app

    config = load(args.config)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s:     %(name)s: %(message)s")
    uvicorn.run(
        create_app(config), host=args.host, port=args.port, log_level="info", access_log=False
    )
    return 0
