"""Every secret this process holds, so that no message can show one: `scrub(text)`.

Credentials register their password and identity token when they are made (registry/auth.py),
and the token client each bearer token it receives. AirlockError scrubs its message when it is
made and the CLI scrubs every line it prints, so a registry that repeats a request's
Authorization header in its error text cannot make airlock print or log it. A secret is replaced
in every form it travels in: as is, URL-encoded, JSON-escaped, and as the base64 of a Basic
header.
"""

from __future__ import annotations

import base64
import json
import threading
from urllib.parse import quote, quote_plus

MASK = "***"
# Shorter secrets are not masked: one could be any word, path or digest of a message ("pw",
# "user", "1"), and masking it would garble them all — while guessing it takes no time anyway.
MIN_LENGTH = 6
MAX_TOKENS = 256  # bearer tokens remembered, newest kept: a long-running server gets many

_lock = threading.Lock()
_lasting: set[str] = set()  # passwords, identity tokens, Basic headers: for the process's life
_tokens: dict[str, None] = {}  # bearer tokens, oldest first
_longest_first: tuple[str, ...] = ()  # what scrub() replaces, rebuilt on every change


def _forms(secret: str) -> set[str]:
    """How `secret` may appear in text: as is, URL-encoded (path/query and form), JSON-escaped
    (ASCII or not), and base64 (padding dropped, so a cut-off copy matches too)."""
    encoded = base64.b64encode(secret.encode()).decode().rstrip("=")
    forms = {
        secret,
        quote(secret),
        quote(secret, safe=""),
        quote_plus(secret, safe=""),
        json.dumps(secret)[1:-1],
        json.dumps(secret, ensure_ascii=False)[1:-1],
        encoded,
    }
    return {f for f in forms if f}


def register(secret: str | None, *, token: bool = False) -> None:
    """Remember a secret (no-op for None or one under MIN_LENGTH); `token` for short-lived
    bearer tokens."""
    global _longest_first
    if not secret or len(secret) < MIN_LENGTH:
        return
    with _lock:
        if token:
            _tokens[secret] = None
            while len(_tokens) > MAX_TOKENS:
                del _tokens[next(iter(_tokens))]
        else:
            _lasting.add(secret)
        forms = set().union(*map(_forms, (*_lasting, *_tokens)))
        _longest_first = tuple(sorted(forms, key=len, reverse=True))


def register_basic(username: str, password: str) -> None:
    """The user:password pair as a Basic Authorization header carries it (its base64)."""
    register(f"{username}:{password}")


def scrub(text: str) -> str:
    """`text` with every form of every registered secret replaced by ***."""
    for form in _longest_first:  # longest first: a form that contains another goes whole
        if form in text:
            text = text.replace(form, MASK)
    return text
