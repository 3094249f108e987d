"""Least privilege with token auth, through the promote flow: each stage has its own credentials
(two registry aliases in pipeline.yaml for one registry), airlock asks the token server only for
the scopes each step needs, and a stage's credentials cannot write another stage."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from flows.promote import promote
from flows.records import records_for
from registry.client import RegistryClient
from registry.errors import AuthError
from tests.support import images as im
from tests.support.registries import Reg
from tests.support.tokenserver import TokenServer

pytestmark = [pytest.mark.anyio, pytest.mark.usefixtures("prefect_api")]


def _pipeline(tmp_path: Path, reg: Reg) -> str:
    """dev (read with dev's credentials) → prod (written with `prod_user`'s)."""
    doc = {
        "registries": {
            "dev-side": {
                "url": reg.host,
                "credentials": {"env": {"username": "DEV_USER", "password": "DEV_PW"}},
            },
            "prod-side": {
                "url": reg.host,
                "credentials": {"env": {"username": "PROD_USER", "password": "PROD_PW"}},
            },
        },
        "stages": [
            {"name": "dev", "registry": "dev-side", "repository": "dev/{name}"},
            {"name": "prod", "registry": "prod-side", "repository": "prod/{name}"},
        ],
    }
    path = tmp_path / "pipeline.yaml"
    path.write_text(yaml.safe_dump(doc))
    return str(path)


@pytest.fixture
def stage_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DEV_USER", "dev")
    monkeypatch.setenv("DEV_PW", "dev-pw")


async def test_each_side_asks_only_for_what_it_needs(
    token_registry: Reg,
    token_server: TokenServer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    stage_credentials: None,
) -> None:
    monkeypatch.setenv("PROD_USER", "promoter")
    monkeypatch.setenv("PROD_PW", "promoter-pw")
    img = im.image("least-privilege")
    token_registry.pusher.push("dev/app", img, "1.0")

    monkeypatch.setenv("AIRLOCK_PIPELINE", _pipeline(tmp_path, token_registry))
    done = await promote(image=f"{token_registry.host}/dev/app:1.0", to_stage="prod")

    assert done["digest"] == img.digest
    assert token_registry.pusher.digest("prod/app", "1.0") == img.digest
    asked = {(r["user"], s) for r in token_server.requests for s in r["scopes"]}
    # dev's credentials read dev, and nothing else
    assert {s for user, s in asked if user == "dev"} <= {"repository:dev/app:pull"}
    # the promoter writes prod and reads dev only to mount from it: never push on dev
    promoter = {s for user, s in asked if user == "promoter"}
    assert "repository:prod/app:pull,push" in promoter
    assert promoter <= {
        "repository:prod/app:pull,push",
        "repository:prod/app:pull",
        "repository:dev/app:pull",
    }, promoter
    assert {user for user, _ in asked} == {"dev", "promoter"}


async def test_promoting_to_prod_with_devs_credentials_is_denied_and_changes_nothing(
    token_registry: Reg,
    token_server: TokenServer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    stage_credentials: None,
) -> None:
    monkeypatch.setenv("PROD_USER", "dev")  # dev's credentials where prod's belong
    monkeypatch.setenv("PROD_PW", "dev-pw")
    img = im.image("denied-flow")
    token_registry.pusher.push("dev/app", img, "1.0")

    monkeypatch.setenv("AIRLOCK_PIPELINE", _pipeline(tmp_path, token_registry))
    with pytest.raises(AuthError) as caught:
        await promote(image=f"{token_registry.host}/dev/app:1.0", to_stage="prod")

    message = str(caught.value)
    assert "denied" in message and "prod/app" in message, message
    assert "\n" not in message and "dev-pw" not in message
    assert token_registry.pusher.tags("prod/app") == []  # (the pusher reads through a backdoor)
    assert token_registry.backdoor is not None
    async with RegistryClient(token_registry.backdoor.host) as reader:
        assert await records_for(reader, "prod/app", img.digest) == []
