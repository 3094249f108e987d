"""Prefect blocks airlock defines: registry credentials managed in the Prefect UI."""

from __future__ import annotations

from prefect.blocks.core import Block
from pydantic import Field, SecretStr


class RegistryCredentials(Block):
    """A username and password (or token) for one registry; the secret is stored encrypted by
    Prefect and never shown in the UI, in logs or in `repr`."""

    _block_type_name = "Registry Credentials"
    _block_type_slug = "airlock-registry-credentials"
    _description = "Username and password (or token) airlock uses for one container registry."

    username: str = Field(description="Registry user (or `<token>` for identity tokens).")
    password: SecretStr = Field(description="Password or token; stored as a secret.")
