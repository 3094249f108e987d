"""virtual.yaml: virtual repositories over real registries, and who may use them.

    registries:
      local: {url: "127.0.0.1:5000"}
      hub-cache: {url: "127.0.0.1:5001"}        # distribution with proxy.remoteurl: a remote
    users:
      alice: {password_env: ALICE_PASSWORD}       # the gateway's own users (Basic auth)
    ci: {token_env: CI_PULL_TOKEN}               # or Authorization: Bearer TOKEN
    repositories:
      docker:                                    # what developers and CI use
        members:                                 # resolved in this order
          - {registry: local, prefix: dev}       # docker/app -> dev/app
          - {registry: local, prefix: prod}
          - {registry: hub-cache, prefix: library}
        deploy: {registry: local, prefix: dev}   # where pushes land (none: read-only)
        read: [alice]
        write: [alice]
      customers:                                 # only what was promoted
        members: [{registry: local, prefix: prod}]
        read: [anonymous]
        require_stage:                           # and of that, what passed prod: a VSA signed
          stage: prod                            # by prod's key (or `require_stage: prod`:
          public_key: keys/prod.pub              # by records only, which anyone who can push
                                                 # to prod could write)

An image `NAME` in virtual repository `V` is `/v2/V/NAME/...` at the gateway and `PREFIX/NAME` in
each member. `anonymous` in `read` lets anyone pull. `registries:` is pipeline.yaml's model
(registry/settings.py): members are reached with the credentials of the docker config, or
`credentials: {env: {username: VAR, password: VAR}}`; a Prefect block is refused (no Prefect here).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    model_validator,
)

from gates.keys import PublicKey, public_key_from
from gates.yamlfile import read_mapping
from registry.errors import BadInputError
from registry.reference import REPOSITORY_PATTERN, is_path_component
from registry.settings import RegistrySettings

if TYPE_CHECKING:
    from flows.config import Pipeline

ANONYMOUS = "anonymous"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _no_block(settings: RegistrySettings) -> RegistrySettings:
    if settings.credentials is not None and settings.credentials.block is not None:
        raise ValueError(
            f"credentials.block {settings.credentials.block!r}: virtual.yaml reads no Prefect"
            " blocks; use credentials: {env: {username: VAR, password: VAR}}"
        )
    return settings


class Member(_Strict):
    registry: str
    prefix: str = Field(pattern=REPOSITORY_PATTERN)

    def repository(self, name: str) -> str:
        return f"{self.prefix}/{name}"


class User(_Strict):
    """A gateway user: Basic auth with the password in `password_env`, and/or `Authorization:
    Bearer TOKEN` (scripts, CI) with the token in `token_env`. The file never holds either."""

    password_env: str | None = None
    token_env: str | None = None

    @model_validator(mode="after")
    def _some_secret(self) -> User:
        if not self.password_env and not self.token_env:
            raise ValueError("a user needs password_env and/or token_env")
        return self


STAGE_NAME = r"^[a-z0-9][a-z0-9_-]{0,62}$"


class StageRequirement(_Strict):
    """Serve only digests holding a PASSED VSA of `stage` signed by `public_key` (PEM or an
    OpenSSH line, or a file relative to virtual.yaml)."""

    stage: str = Field(pattern=STAGE_NAME)
    public_key: str = Field(min_length=1)


class VirtualRepository(_Strict):
    members: list[Member] = Field(min_length=1)
    deploy: Member | None = None
    read: list[str] = Field(default_factory=list)
    write: list[str] = Field(default_factory=list)
    # a view of what airlock promoted into this stage only (virtual/stageview.py): a digest
    # without that stage's promotion record — and, with a key, its VSA — is not served
    require_stage: Annotated[str, Field(pattern=STAGE_NAME)] | StageRequirement | None = None

    @property
    def stage(self) -> str | None:
        """The stage this view requires, if any."""
        if isinstance(self.require_stage, StageRequirement):
            return self.require_stage.stage
        return self.require_stage

    def may_read(self, user: str | None) -> bool:
        return ANONYMOUS in self.read or (user is not None and user in self.read + self.write)

    def may_write(self, user: str | None) -> bool:
        return self.deploy is not None and (
            ANONYMOUS in self.write or (user is not None and user in self.write)
        )


class VirtualConfig(_Strict):
    registries: dict[str, Annotated[RegistrySettings, AfterValidator(_no_block)]]
    users: dict[str, User] = Field(default_factory=dict)
    repositories: dict[str, VirtualRepository] = Field(min_length=1)
    # per stage-view repository: the keys its stage's VSAs must be signed by (read at load,
    # from require_stage.public_key or from pipeline.yaml: `airlock virtual serve --pipeline`)
    _stage_keys: dict[str, list[PublicKey]] = PrivateAttr(default_factory=dict)

    def stage_keys(self, repository: str) -> list[PublicKey]:
        return self._stage_keys.get(repository, [])

    def trust_pipeline(self, pipeline: Pipeline) -> None:
        """Views naming a stage by name alone take that stage's public_key from pipeline.yaml."""
        for name, repo in self.repositories.items():
            if isinstance(repo.require_stage, str) and name not in self._stage_keys:
                try:
                    stage = pipeline.stage(repo.require_stage)
                except BadInputError:
                    raise BadInputError(
                        f"{name}: require_stage {repo.require_stage!r} is no stage of the"
                        " pipeline given"
                    ) from None
                keys = pipeline.public_keys(stage)
                if not keys:
                    # served with --pipeline to trust keys: a view quietly left to its unsigned
                    # records would look enforced and be forgeable by anyone who can push there
                    raise BadInputError(
                        f"{name}: require_stage {stage.name!r} has no public_key in the"
                        " pipeline given: give that stage one, or serve without --pipeline"
                    )
                self._stage_keys[name] = keys

    @model_validator(mode="after")
    def _references(self) -> VirtualConfig:
        for name, repo in self.repositories.items():
            if not is_path_component(name):
                raise ValueError(f"repository name {name!r}: lowercase letters, digits, . _ -")
            for member in [*repo.members, *([repo.deploy] if repo.deploy else [])]:
                if member.registry not in self.registries:
                    known = ", ".join(self.registries)
                    raise ValueError(f"{name}: unknown registry {member.registry!r} ({known})")
            for user in repo.read + repo.write:
                if user != ANONYMOUS and user not in self.users:
                    raise ValueError(f"{name}: unknown user {user!r} (define it under users)")
        return self

    def password(self, user: str) -> str | None:
        found = self.users.get(user)
        if found is None or found.password_env is None:
            return None
        return os.environ.get(found.password_env) or None

    def token_user(self, token: str) -> str | None:
        """The user whose token this is (compared in constant time), or None."""
        import hmac

        for name, user in self.users.items():
            expected = os.environ.get(user.token_env) if user.token_env else None
            if expected and hmac.compare_digest(token.encode(), expected.encode()):
                return name
        return None


def load(path: str | Path) -> VirtualConfig:
    """Read and validate virtual.yaml; BadInputError (one line, exit 2) on any problem."""
    path = Path(path)
    doc: Any = read_mapping(path, "virtual")
    try:
        config = VirtualConfig.model_validate(doc)
    except ValidationError as e:
        err = e.errors()[0]
        where = ".".join(str(p) for p in err["loc"]) or "(top)"
        raise BadInputError(f"{path}: {where}: {err['msg']}") from None
    for name, repo in config.repositories.items():
        if isinstance(repo.require_stage, StageRequirement):
            where = f"{path}: {name}: require_stage.public_key"
            key = public_key_from(repo.require_stage.public_key, path.parent, where)
            config._stage_keys[name] = [key]
    return config
