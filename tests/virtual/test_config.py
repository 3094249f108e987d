"""virtual.yaml: pipeline.yaml's registry model (registry/settings.py) without Prefect, and the one
reference grammar (registry/reference.py) for names and digests in requests.

No registry here: nothing below reaches a member.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from registry.auth import Credentials
from registry.errors import BadInputError
from virtual.config import VirtualConfig, load
from virtual.gateway import create_app

HOST = "127.0.0.1:5000"


def doc(**registry: Any) -> dict[str, Any]:
    return {
        "registries": {"local": {"url": HOST, **registry}},
        "users": {"alice": {"password_env": "ALICE_PW"}},
        "repositories": {
            "docker": {"members": [{"registry": "local", "prefix": "dev"}], "read": ["alice"]}
        },
    }


def write(tmp_path: Path, content: dict[str, Any]) -> Path:
    path = tmp_path / "virtual.yaml"
    path.write_text(yaml.safe_dump(content, sort_keys=False))
    return path


def test_registries_are_the_pipelines_model(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    credentials = {"env": {"username": "V_USER", "password": "V_PW"}}
    config = load(write(tmp_path, doc(url=f"http://{HOST}/", credentials=credentials)))
    local = config.registries["local"]
    assert local.url == HOST  # normalised as in pipeline.yaml
    monkeypatch.setenv("V_USER", "u")
    monkeypatch.setenv("V_PW", "p")
    assert local.env_credentials() == Credentials("u", "p")


def test_a_prefect_block_is_refused_at_load(tmp_path: Path) -> None:
    path = write(tmp_path, doc(credentials={"block": "ci-registry"}))
    with pytest.raises(BadInputError) as info:
        load(path)
    message = str(info.value)
    assert "\n" not in message
    for needle in (str(path), "registries.local", "block", "ci-registry", "env"):
        assert needle in message, message


@pytest.mark.parametrize(
    ("registry", "needle"),
    [
        ({"url": "not a host"}, "registries.local.url"),
        ({"credentials": {}}, "env or block"),
        ({"credentials": {"vault": {}}}, "vault"),
        ({"insecur": True}, "insecur"),
    ],
)
def test_bad_registries(tmp_path: Path, registry: dict[str, Any], needle: str) -> None:
    with pytest.raises(BadInputError, match=needle):
        load(write(tmp_path, doc(**registry)))


@pytest.mark.parametrize(
    ("path", "status", "code"),
    [
        ("docker/app/blobs/notadigest", 400, "DIGEST_INVALID"),
        ("docker/app/blobs/md5:" + "a" * 32, 400, "DIGEST_INVALID"),  # unsupported algorithm
        ("docker/app/blobs/sha256:" + "A" * 64, 400, "DIGEST_INVALID"),  # uppercase hex
        ("docker/app/blobs/sha256:" + "a" * 63, 400, "DIGEST_INVALID"),  # short
        ("docker/app/manifests/sha256:" + "a" * 63, 400, "MANIFEST_INVALID"),
        ("docker/app/manifests/bad%20tag", 400, "MANIFEST_INVALID"),
        ("docker/App/manifests/1.0", 400, "NAME_INVALID"),
        ("docker/" + "a" * 250 + "/manifests/1.0", 400, "NAME_INVALID"),  # over 255
    ],
)
@pytest.mark.anyio
async def test_requests_are_judged_by_the_one_grammar(
    monkeypatch: pytest.MonkeyPatch, path: str, status: int, code: str
) -> None:
    monkeypatch.setenv("ALICE_PW", "pw")
    app = create_app(VirtualConfig.model_validate(doc()))
    transport = httpx.ASGITransport(app=app)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=transport, base_url="http://gateway") as client,
    ):
        r = await client.get(f"/v2/{path}", auth=("alice", "pw"))
    assert (r.status_code, r.json()["errors"][0]["code"]) == (status, code)
