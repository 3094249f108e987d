"""`airlock webhooks serve`: the webhook receiver (webhooks/app.py) on uvicorn.

Secrets come from the environment or files, never from arguments (argv is visible to every user
of the machine): AIRLOCK_WEBHOOK_TOKEN (or --token-file) is the bearer token the registry sends,
AIRLOCK_CI_SECRET (or --ci-secret-file) the HMAC key CI signs with. An endpoint without its secret
stays closed (401); with neither, the receiver refuses to start.

The ids of the events sent are kept in --state (AIRLOCK_WEBHOOK_STATE), an SQLite file, by default
$XDG_STATE_HOME/airlock/webhooks.sqlite (~/.local/state/airlock/webhooks.sqlite): a redelivery or a
replay is not sent again, even after a restart (webhooks/seen.py).
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
    s.add_argument(
        "--state",
        metavar="FILE",
        help="SQLite file of the event ids sent (default $AIRLOCK_WEBHOOK_STATE, else"
        " $XDG_STATE_HOME/airlock/webhooks.sqlite, else ~/.local/state/airlock/webhooks.sqlite)",
    )
    s.add_argument(
        "--ci-max-age",
        type=_seconds,
        default=300,
        metavar="SECONDS",
        help="how old a CI call's signed timestamp may be (default 300)",
    )
    s.set_defaults(func=cmd_serve)


def _seconds(text: str) -> int:
    if not text.isdigit() or not 1 <= int(text) <= 86400:
        raise argparse.ArgumentTypeError(f"expected 1-86400 seconds, got {text!r}")
    return int(text)


def state_path(given: str | None) -> Path:
    """--state, else AIRLOCK_WEBHOOK_STATE, else the XDG state folder."""
    if chosen := given or os.environ.get("AIRLOCK_WEBHOOK_STATE"):
        return Path(chosen).expanduser()
    base = os.environ.get("XDG_STATE_HOME") or Path.home() / ".local" / "state"
    return Path(base) / "airlock" / "webhooks.sqlite"


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
    settings = Settings(
        load(args.pipeline),
        token,
        ci_secret,
        url,
        headers,
        state=state_path(args.state),
        ci_max_age=args.ci_max_age,
    )
    app = create_app(settings)  # opens the state file: a bad path is refused before serving
    # one line per request handled or refused (webhooks/app.py), next to uvicorn's own
    logging.basicConfig(level=logging.INFO, format="%(levelname)s:     %(name)s: %(message)s")
    logging.getLogger("airlock.webhooks").info("sent event ids kept in %s", settings.state)
    uvicorn.run(app, host=args.host, port=args.port, log_level="info", access_log=False)
    return 0
