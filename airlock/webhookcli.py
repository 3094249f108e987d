"""`airlock webhooks serve`: the webhook receiver (webhooks/app.py) on uvicorn.

Secrets come from the environment or files, never from arguments (argv is visible to every user
of the machine): AIRLOCK_WEBHOOK_TOKEN (or --token-file) is the bearer token the registry sends,
AIRLOCK_CI_SECRET (or --ci-secret-file) the HMAC key CI signs with. An endpoint without its secret
stays closed (401); with neither, the receiver refuses to start.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

from registry.errors import BadInputError


def add_parsers(sub: Any) -> None:
    p = sub.add_parser(
        "webhooks",
        help="receive registry and CI webhooks and turn them into Prefect events",
        description="Registry notifications (POST /registry) and signed CI calls (POST /ci)"
        " become `airlock.image.pushed` events on the Prefect server at PREFECT_API_URL.",
    )
    action = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    s = action.add_parser("serve", help="serve the receiver (until interrupted)")
    s.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    s.add_argument("--port", type=int, default=8787, help="port (default 8787)")
    s.add_argument("--pipeline", metavar="FILE", help="pipeline.yaml (its first stage is watched)")
    s.add_argument("--token-file", metavar="FILE", help="file holding the registry's bearer token")
    s.add_argument("--ci-secret-file", metavar="FILE", help="file holding the CI HMAC secret")
    s.set_defaults(func=cmd_serve)


def _secret(env: str, path: str | None) -> str | None:
    if path:
        try:
            value = Path(path).read_text().strip()
        except OSError as e:
            raise BadInputError(f"cannot read {path}: {e.strerror}") from None
        if not value:
            raise BadInputError(f"{path} is empty")
        return value
    return os.environ.get(env) or None


def cmd_serve(args: argparse.Namespace) -> int:
    import logging

    import uvicorn

    from flows.config import load
    from webhooks.app import Settings, create_app, prefect_settings

    token = _secret("AIRLOCK_WEBHOOK_TOKEN", args.token_file)
    ci_secret = _secret("AIRLOCK_CI_SECRET", args.ci_secret_file)
    if not token and not ci_secret:
        raise BadInputError(
            "no secret configured: set AIRLOCK_WEBHOOK_TOKEN (registry) and/or AIRLOCK_CI_SECRET"
            " (CI), or pass --token-file/--ci-secret-file"
        )
    url, headers = prefect_settings()
    settings = Settings(load(args.pipeline), token, ci_secret, url, headers)
    # one line per request handled or refused (webhooks/app.py), next to uvicorn's own
    logging.basicConfig(level=logging.INFO, format="%(levelname)s:     %(name)s: %(message)s")
    uvicorn.run(
        create_app(settings), host=args.host, port=args.port, log_level="info", access_log=False
    )
    return 0
