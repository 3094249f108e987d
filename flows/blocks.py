"""Prefect blocks airlock defines: registry credentials managed in the Prefect UI."""

from __future__ import annotations

from prefect.blocks.core import Block
from pydantic import Field, SecretStr

from registry.auth import Credentials
from registry.errors import BadInputError


class RegistryCredentials(Block):
    """A username and password (or token) for one registry; the secret is stored encrypted by
    Prefect and never shown in the UI, in logs or in `repr`."""

    _block_type_name = "Registry Credentials"
    _block_type_slug = "airlock-registry-credentials"
    _description = "Username and password (or token) airlock uses for one container registry."

    username: str = Field(description="Registry user (or `<token>` for identity tokens).")
    password: SecretStr = Field(description="Password or token; stored as a secret.")


async def read_credentials(name: str, registry: str) -> Credentials:
    """The credentials in the RegistryCredentials block `name`, for `registry` (what a
    `credentials: {block: NAME}` of pipeline.yaml names; registry/settings.py: BlockReader)."""
    try:
        block = await RegistryCredentials.aload(name)
    except ValueError:
        raise BadInputError(
            f"registry {registry}: no Registry Credentials block named {name!r};"
            " create it in the Prefect UI (Blocks) first"
        ) from None
    secret = block.password.get_secret_value()
    if block.username == "<token>":  # docker's marker for an identity (refresh) token
        return Credentials(None, None, secret)
    return Credentials(block.username, secret)
