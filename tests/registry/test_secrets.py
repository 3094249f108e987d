"""No credential airlock holds appears in a message it makes: registry/secrets.py.

The attack: a registry (tests/support/hostile.py) that answers with error messages repeating the
Authorization header it was sent, the password in it, and that password URL-encoded. airlock
shows a registry's own message text in its errors, so each of these must be scrubbed.
"""

from __future__ import annotations

import base64
import json
from urllib.parse import quote

import httpx
import pytest

from registry import secrets
from registry.auth import Credentials
from registry.client import RegistryClient
from registry.errors import BadInputError, RegistryError
from tests.support.hostile import ECHO_TOKEN, echoing_registry, secret_forms
from tests.support.registries import FAST_RETRY

pytestmark = pytest.mark.anyio

USER = "mallory-victim"
PASSWORD = "p@ss w/rd+S3cr3t%é"  # every character class that URL-encodes differently


def _assert_clean(text: str, *forms: str) -> None:
    for form in forms:
        assert form not in text, f"{form!r} appears in {text!r}"


def test_scrub_replaces_every_form_of_a_registered_secret() -> None:
    creds = Credentials(USER, PASSWORD)
    basic = base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
    text = (
        f"pw={PASSWORD} enc={quote(PASSWORD, safe='')} hdr=Basic {basic}"
        f" cut={basic.rstrip('=')} json={json.dumps(PASSWORD)[1:-1]}"
    )
    scrubbed = secrets.scrub(text)
    _assert_clean(scrubbed, *secret_forms(USER, PASSWORD, token="unused"))
    _assert_clean(scrubbed, json.dumps(PASSWORD)[1:-1], "S3cr3t")
    assert scrubbed.startswith("pw=*** enc=*** hdr=Basic ***")
    assert secrets.scrub(f"user {creds.username}") == f"user {USER}"  # usernames are not secret


def test_identity_and_bearer_tokens_are_scrubbed() -> None:
    Credentials(None, None, "identity-token-0a1b2c3d")
    secrets.register("bearer-token-4e5f6a7b", token=True)
    scrubbed = secrets.scrub("refresh identity-token-0a1b2c3d then Bearer bearer-token-4e5f6a7b")
    assert scrubbed == "refresh *** then Bearer ***"


def test_an_error_scrubs_its_message_when_made() -> None:
    Credentials(USER, "made-into-an-error-1234")
    error = BadInputError("the registry said: made-into-an-error-1234")
    assert "made-into-an-error-1234" not in str(error) and error.args[0].endswith("***")


def test_a_registry_message_is_scrubbed_before_it_is_cut_to_one_line() -> None:
    """A secret that straddles the 200-character cut must not leave its first half behind."""
    client = RegistryClient("127.0.0.1:9", credentials=Credentials(USER, "straddling-secret-99"))
    request = httpx.Request("GET", "http://127.0.0.1:9/v2/app/manifests/1.0")
    message = "x" * 190 + " straddling-secret-99"
    response = httpx.Response(
        400, json={"errors": [{"code": "UNKNOWN", "message": message}]}, request=request
    )
    text = str(client.error(response, "GET 127.0.0.1:9/app:1.0", "app"))
    assert "strad" not in text  # not even the part before the cut


@pytest.mark.parametrize("scheme", ["basic", "bearer"])
async def test_a_registry_that_echoes_credentials_cannot_make_airlock_show_them(
    scheme: str,
) -> None:
    with echoing_registry(scheme) as host:  # type: ignore[arg-type]
        creds = Credentials(USER, PASSWORD)
        async with RegistryClient(host, credentials=creds, retry=FAST_RETRY) as client:
            with pytest.raises(RegistryError) as info:
                await client.get_manifest("app", "1.0")
    message = str(info.value)
    assert "unexpected answer 400" in message and "***" in message, message
    _assert_clean(message, *secret_forms(USER, PASSWORD, ECHO_TOKEN))


def test_a_secret_too_short_to_be_one_does_not_garble_messages() -> None:
    """Masking "1" or "pw" would mangle every digest, port and word; such a password protects
    nothing anyway (registry/secrets.py MIN_LENGTH)."""
    Credentials("u", "1")
    Credentials("alice", "pw")
    text = "GET 127.0.0.1:5000/app:1.0: unsupported manifest media type"
    assert secrets.scrub(text) == text
    assert secrets.scrub("Basic YWxpY2U6cHc=") == "Basic ***="  # the pair is long enough
