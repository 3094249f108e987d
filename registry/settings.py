"""A registry as configuration files name it: the `registries:` entries of pipeline.yaml and
virtual.yaml, one model for both.

    registries:
      local: {url: localhost:5000}
      remote:
        url: registry.example.com
        ca_bundle: /etc/ssl/internal-ca.pem
        credentials: {env: {username: REMOTE_USER, password: REMOTE_PASSWORD}}
      ci: {url: ci.example.com, credentials: {block: ci-registry}}   # pipeline.yaml only

Without `credentials`, the docker config's (~/.docker/config.json, credential helpers) are used.
A file names where a secret is (environment variables, a Prefect block), never the secret.
`{block: NAME}` is a Prefect block (flows/blocks.py): registry/ knows no Prefect, so whoever
loads the file passes a reader for it to `resolve_credentials` (flows/config.py does).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from pydantic import BaseModel, ConfigDict, field_validator, model_validator

from registry.auth import Credentials
from registry.client import RegistryClient
from registry.errors import BadInputError
from registry.reference import InvalidReference, parse

# reads the credentials block named NAME for the registry URL: (NAME, URL) -> Credentials
BlockReader = Callable[[str, str], Awaitable[Credentials]]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class EnvCredentials(_Strict):
    """Names of environment variables holding the username and password (never the values)."""

    username: str
    password: str


class CredentialSource(_Strict):
    env: EnvCredentials | None = None
    block: str | None = None  # name of a RegistryCredentials Prefect block

    @model_validator(mode="after")
    def _one(self) -> CredentialSource:
        if (self.env is None) == (self.block is None):
            raise ValueError("give exactly one of env or block")
        return self


class RegistrySettings(_Strict):
    url: str  # host[:port], as in image references
    insecure: bool = False
    ca_bundle: str | None = None
    credentials: CredentialSource | None = None  # None: ~/.docker/config.json

    @field_validator("url")
    @classmethod
    def _host(cls, value: str) -> str:
        value = value.removeprefix("https://").removeprefix("http://").rstrip("/")
        try:
            parse(f"{value}/probe")
        except InvalidReference:
            raise ValueError(f"{value!r} is not a registry host[:port]") from None
        return value

    def env_credentials(self) -> Credentials | None:
        """The credentials read now from the environment variables named, or None (the docker
        config's). A Prefect block is not read here: see resolve_credentials."""
        source = self.credentials
        if source is None:
            return None
        if source.env is None:
            raise BadInputError(
                f"registry {self.url}: credentials from the Prefect block {source.block!r}"
                " cannot be read here; use credentials: {env: {username: VAR, password: VAR}}"
            )
        env = source.env
        return Credentials.from_env(env.username, env.password, f"registry {self.url}")

    async def resolve_credentials(
        self, read_block: BlockReader | None = None
    ) -> Credentials | None:
        """The credentials to use, read now (environment, or a block through `read_block`);
        never logged."""
        source = self.credentials
        if source is not None and source.block is not None and read_block is not None:
            return await read_block(source.block, self.url)
        return self.env_credentials()

    def client(self, credentials: Credentials | None) -> RegistryClient:
        """A client for this registry with `credentials` as resolved (None: the docker
        config's); the caller closes it."""
        return RegistryClient(
            self.url, credentials=credentials, insecure=self.insecure, ca_bundle=self.ca_bundle
        )
