"""pipeline.yaml: the registries and the ordered stages an image is promoted through.

    registries:
      local: {url: localhost:5000}
    stages:
      - {name: dev, registry: local, repository: dev/{name}}
      - name: qa
        registry: local
        repository: qa/{name}
        gates:
          - {kind: tests, policy: {min_tests: 1}}
          - {kind: scan, policy: {fail_on: HIGH}}
      - name: prod
        registry: local
        repository: prod/{name}
        immutable: true
        gates:
          - {kind: approval, policy: {required: 1}, timeout: 1h}

`{name}` in a repository stands for the image's name, so one pipeline serves many images; the
first stage is where CI pushes. Each stage's tag rule (default `{tag}`: keep the tag) may use
{tag}, {stage} and {short} (12 hex of the digest). Validation errors name the file, the path inside
it and what is allowed (exit 2).

Which file is the policy is never a run's choice: `load()` reads `$AIRLOCK_PIPELINE`, else
./pipeline.yaml — set by whoever starts the process (`airlock promote --pipeline`, `airlock serve
--pipeline`, the worker's environment), never by a flow run's parameters. Each promotion record
names the file's sha256 and the stage's section it was judged under.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ModelWrapValidatorHandler,
    PrivateAttr,
    SerializeAsAny,
    ValidationError,
    field_serializer,
    field_validator,
    model_validator,
)

from flows.windows import Window
from gates import keys
from gates.approval import ApprovalPolicy
from gates.base import GateKind, Policy, ReportPolicy
from gates.common import Duration
from gates.keys import PrivateKey, PublicKey
from gates.yamlfile import read_mapping_and_bytes
from registry import settings
from registry.auth import Credentials
from registry.errors import BadInputError
from registry.reference import InvalidReference, Reference, parse, validate_tag
from registry.settings import BlockReader

if TYPE_CHECKING:
    from gates.kinds import Gate

DEFAULT_PIPELINE = "pipeline.yaml"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class RegistrySettings(settings.RegistrySettings):
    """A registry of pipeline.yaml: the one model (registry/settings.py), whose `{block: NAME}`
    credentials are read from Prefect (flows/blocks.py)."""

    async def resolve_credentials(
        self, read_block: BlockReader | None = None
    ) -> Credentials | None:
        return await super().resolve_credentials(read_block or _read_block)


async def _read_block(name: str, registry: str) -> Credentials:
    from flows.blocks import read_credentials  # Prefect, only when a block is named

    return await read_credentials(name, registry)


class GateConfig(_Strict):
    """One gate of a stage: `{kind: scan, policy: {fail_on: HIGH}, timeout: 1h}`.

    Tagged by `kind`: the registered kind (gates/kinds.py) says which policy model `policy` is,
    and it is validated once, here, at load — `policy` is that typed object from then on.
    """

    kind: GateKind
    policy: SerializeAsAny[Policy] = Field(default_factory=Policy)
    timeout: Duration = dt.timedelta(hours=1)  # approval: how long to wait before refusing
    _given: dict[str, Any] = PrivateAttr(default_factory=dict)  # the policy as the file said it

    @field_validator("timeout")
    @classmethod
    def _positive(cls, value: dt.timedelta) -> dt.timedelta:
        if value <= dt.timedelta(0):
            raise ValueError("timeout must be positive, e.g. 30m or 24h")
        return value

    @field_validator("policy", mode="before")
    @classmethod
    def _mapping(cls, value: Any) -> Any:
        """A mapping stands in as the base Policy until the kind is known (`_typed`)."""
        if isinstance(value, Policy):
            return value
        if not isinstance(value, Mapping):
            raise ValueError("Input should be a valid dictionary")
        return Policy()

    @model_validator(mode="wrap")
    @classmethod
    def _typed(cls, data: Any, handler: ModelWrapValidatorHandler[GateConfig]) -> GateConfig:
        """The kind, the timeout and the keys first (as pydantic reports them), then the policy
        by its kind's model: a policy error names the kind (`scan policy.fail_on: …`)."""
        config = handler(data)
        if not isinstance(data, Mapping):
            return config  # already a GateConfig: typed when it was made
        given = data.get("policy", {})
        from gates.kinds import gate  # every gate module: only when a stage has gates

        model = gate(config.kind).policy
        typed = given if isinstance(given, model) else None  # made in code, of the right kind
        if isinstance(given, Policy):
            given = given.model_dump(mode="json", exclude_unset=True)
        typed = typed or _policy(config.kind, model, given)
        # validated again with the typed policy: under __init__ the handler fills `self`, so a
        # copy would be lost
        config = handler({**data, "policy": typed})
        config._given = dict(given)
        return config

    @field_serializer("policy")
    def _as_given(self, policy: Policy) -> dict[str, Any]:
        """Records and cache keys show the policy as the file wrote it (`{min: 90m}`)."""
        return self._given

    @property
    def gate(self) -> Gate[Any, Any]:
        """The registered kind: what it reads, how it is judged, whether it waits for people."""
        from gates.kinds import gate

        return gate(self.kind)


def _policy(kind: str, model: type[Policy], given: dict[str, Any]) -> Policy:
    try:
        return model.model_validate(given)
    except ValidationError as e:
        err = e.errors()[0]
        key = ".".join(str(p) for p in err["loc"])
        raise ValueError(f"{kind} policy{'.' + key if key else ''}: {_message(err)}") from None


class EnvKey(_Strict):
    env: str  # the name of an environment variable holding the PEM (never the key itself here)


class BlockKey(_Strict):
    block: str  # the name of a Prefect Secret block holding the PEM


class Stage(_Strict):
    name: str = Field(pattern=r"^[a-z0-9][a-z0-9_-]{0,62}$")
    registry: str
    repository: str  # may contain {name}
    tag: str = "{tag}"
    immutable: bool = False  # never move a tag that points at another digest
    gates: list[GateConfig] = Field(default_factory=list)
    # where customers pull this stage's images: a virtual repository in front of it
    # (`airlock virtual serve`), e.g. "shop.example.com/{name}"; shown in records and summaries
    publish: str | None = None
    # The promoter's private key: each promotion into this stage writes a VSA signed with it
    # (a file relative to pipeline.yaml, {env: VAR} or {block: NAME}; docs/signing.md).
    signing_key: str | EnvKey | BlockKey | None = None
    # What everyone else trusts for this stage (a file relative to pipeline.yaml, or the PEM or
    # OpenSSH line itself): the next hop and `airlock verify` accept a digest as having passed
    # this stage only through a VSA signed by it.
    public_key: str | None = None
    # when promotions may land (flows/windows.py); outside them a hop waits, or refuses
    windows: list[Window] = Field(default_factory=list)
    on_window: Literal["wait", "refuse"] = "wait"

    @field_validator("publish")
    @classmethod
    def _publish(cls, value: str | None) -> str | None:
        if value is None:
            return None
        try:
            parse(value.replace("{name}", "name"), default_tag=None)
        except InvalidReference as e:
            raise ValueError(f"publish: {e}") from None
        if "@" in value or value.rsplit("/", 1)[-1].count(":"):
            raise ValueError("publish names a repository (REGISTRY/PATH/{name}), without tag")
        return value

    @property
    def asks_approval(self) -> bool:
        """Whether a person must approve promotions into this stage."""
        return any(g.gate.waits_for_people for g in self.gates)

    def published(self, name: str, tag: str | None) -> str | None:
        """Where customers pull the image promoted here, or None."""
        if self.publish is None:
            return None
        return self.publish.replace("{name}", name) + (f":{tag}" if tag else "")

    @field_validator("repository")
    @classmethod
    def _repository(cls, value: str) -> str:
        probe = value.replace("{name}", "app")
        try:
            ref = parse(f"localhost/{probe}", default_tag=None)
        except InvalidReference as e:
            raise ValueError(str(e).replace("localhost/", "")) from None
        if ref.tag or ref.digest:
            raise ValueError("a repository has no tag or digest (the tag rule is `tag:`)")
        return value

    @field_validator("tag")
    @classmethod
    def _tag(cls, value: str) -> str:
        try:
            validate_tag(value.format(tag="t", stage="s", short="0" * 12))
        except (InvalidReference, KeyError, IndexError, ValueError):
            raise ValueError(
                f"{value!r} is not a tag rule: a valid tag, optionally with {{tag}}, {{stage}}"
                " and {short}"
            ) from None
        return value

    def repository_for(self, name: str) -> str:
        return self.repository.replace("{name}", name)

    def name_in(self, repository: str) -> str | None:
        """The image name if `repository` is one of this stage's, else None."""
        pattern = "^" + re.escape(self.repository).replace(r"\{name\}", "(?P<name>.+)") + "$"
        m = re.match(pattern, repository)
        if m is None:
            return None
        return m.groupdict().get("name") or ""

    def tag_for(self, tag: str | None, digest: str) -> str:
        return self.tag.format(tag=tag or "latest", stage=self.name, short=digest[7:19])


class PolicyRef(_Strict):
    """The policy a promotion was judged under: the file, its sha256, the stage's section."""

    file: str
    sha256: str
    stage: dict[str, Any]


class Pipeline(_Strict):
    registries: dict[str, RegistrySettings]
    stages: list[Stage] = Field(min_length=2)
    _file: str = PrivateAttr(default="")
    _sha256: str = PrivateAttr(default="")

    @model_validator(mode="after")
    def _consistent(self) -> Pipeline:
        names = [s.name for s in self.stages]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"stage names must be unique: {', '.join(duplicates)} repeated")
        for stage in self.stages:
            if stage.registry not in self.registries:
                known = ", ".join(sorted(self.registries)) or "none"
                raise ValueError(
                    f"stage {stage.name}: unknown registry {stage.registry!r} (defined: {known})"
                )
        if self.stages[0].gates:
            raise ValueError(
                f"stage {self.stages[0].name}: the first stage cannot have gates"
                " (images arrive there by push)"
            )
        if self.stages[0].windows:
            raise ValueError(
                f"stage {self.stages[0].name}: the first stage cannot have windows"
                " (images arrive there by push)"
            )
        return self

    def stage(self, name: str) -> Stage:
        for stage in self.stages:
            if stage.name == name:
                return stage
        raise BadInputError(
            f"unknown stage {name!r}; stages: {', '.join(s.name for s in self.stages)}"
        )

    def previous(self, stage: Stage) -> Stage:
        index = self.stages.index(stage)
        if index == 0:
            raise BadInputError(f"{stage.name} is the first stage: images arrive there by push")
        return self.stages[index - 1]

    def locate(self, ref: Reference) -> tuple[Stage, str]:
        """The stage whose repository holds `ref`, and the image name."""
        for stage in self.stages:
            settings = self.registries[stage.registry]
            if settings.url != ref.registry:
                continue
            name = stage.name_in(ref.repository)
            if name is not None:
                return stage, name
        known = ", ".join(f"{self.registries[s.registry].url}/{s.repository}" for s in self.stages)
        raise BadInputError(f"{ref.name} is not in any stage of the pipeline ({known})")

    def reference(self, stage: Stage, name: str) -> Reference:
        return Reference(self.registries[stage.registry].url, stage.repository_for(name))

    def policy(self, stage: Stage) -> PolicyRef:
        return PolicyRef(file=self._file, sha256=self._sha256, stage=stage.model_dump(mode="json"))

    @property
    def folder(self) -> Path:
        """Where key paths are relative to: the pipeline file's folder."""
        return Path(self._file).parent if self._file else Path.cwd()

    def public_keys(self, stage: Stage) -> list[PublicKey]:
        """The keys a VSA of `stage` must be signed by (none: the stage signs nothing)."""
        if stage.public_key is None:
            return []
        where = f"stage {stage.name} public_key"
        return [keys.public_key_from(stage.public_key, self.folder, where)]

    def signers(self, stage: Stage) -> list[PublicKey]:
        """Every key the stage's gates name — in `signed_by`, or an approver's — read, so a bad
        one is said at load."""
        if not stage.gates:
            return []
        from gates.kinds import signers

        found = [
            key
            for g in stage.gates
            if isinstance(g.policy, ReportPolicy)
            for key in signers(g.policy, self.folder, g.kind)
        ]
        for g in stage.gates:
            if isinstance(g.policy, ApprovalPolicy):
                found += g.policy.public_keys(self.folder).values()
        return found

    async def signing_key(self, stage: Stage) -> PrivateKey | None:
        """The stage's private key, read now (file, environment or Prefect Secret block); checked
        against its public_key, so a promoter never writes VSAs nobody will accept."""
        source = stage.signing_key
        if source is None:
            return None
        where = f"stage {stage.name} signing_key"
        if isinstance(source, EnvKey):
            value = os.environ.get(source.env)
            if not value:
                raise BadInputError(f"{where}: environment variable {source.env} is not set")
            key = keys.load_private_key(value, f"{where} (${source.env})")
        elif isinstance(source, BlockKey):
            key = keys.load_private_key(await _secret(source.block, where), f"{where} (block)")
        else:
            key = keys.read_private_key(self.folder / source)
        trusted = self.public_keys(stage)
        if trusted and key.public not in trusted:
            raise BadInputError(
                f"{where} ({key.short_id}) is not the key of its public_key"
                f" ({trusted[0].short_id}): VSAs signed with it would be refused"
            )
        return key


def pipeline_path(path: str | Path | None = None) -> Path:
    """The pipeline file: `path`, else $AIRLOCK_PIPELINE, else ./pipeline.yaml."""
    return Path(path or os.environ.get("AIRLOCK_PIPELINE") or DEFAULT_PIPELINE)


def load(path: str | Path | None = None) -> Pipeline:
    """Read and validate pipeline.yaml; BadInputError (one line, exit 2) on any problem."""
    path = pipeline_path(path)
    doc, raw = read_mapping_and_bytes(path, "pipeline")
    try:
        pipeline = Pipeline.model_validate(doc)
    except ValidationError as e:
        raise BadInputError(f"{path}: {validation_problem(e, doc)}") from None
    pipeline._file = str(path.resolve())
    pipeline._sha256 = hashlib.sha256(raw).hexdigest()
    for stage in pipeline.stages:  # a key that cannot be read is a bad file, said at load
        try:
            pipeline.public_keys(stage)
        except BadInputError as e:
            raise BadInputError(f"{path}: {e}") from None
        try:
            pipeline.signers(stage)
        except BadInputError as e:
            raise BadInputError(f"{path}: stage {stage.name} {e}") from None
    return pipeline


async def _secret(name: str, where: str) -> str:
    """The value of a Prefect Secret block (Prefect is imported only when one is named)."""
    from prefect.blocks.system import Secret

    try:
        block = await Secret.aload(name)
    except ValueError:
        raise BadInputError(f"{where}: no Secret block named {name!r}") from None
    return str(block.get())


def validation_problem(e: ValidationError, doc: Any, top: str = "pipeline") -> str:
    """`stages[2: prod].gates[0].policy: unknown key (not allowed here)`: the first problem a
    file of airlock's has (pipeline.yaml, release.yaml), where it is, and how many more."""
    err = e.errors()[0]
    more = f" (and {len(e.errors()) - 1} more)" if len(e.errors()) > 1 else ""
    return f"{_path(err['loc'], doc, top)}: {_message(err)}{more}"


def _path(loc: tuple[Any, ...], doc: Any, top: str) -> str:
    """`stages[2: prod].gates[0].policy` — where in the file a problem is, with stage names."""
    out, node = "", doc
    for part in loc:
        if isinstance(part, int):
            item = node[part] if isinstance(node, list) and part < len(node) else None
            name = item.get("name") if isinstance(item, dict) else None
            out += f"[{part}]" if name is None else f"[{part}: {name}]"
        elif not str(part).startswith(("function", "model")):  # pydantic validator frames
            out += f".{part}" if out else str(part)
        try:
            node = node[part]
        except (KeyError, IndexError, TypeError):
            node = None
    return out or top


def _message(err: dict[str, Any]) -> str:
    if err["type"] == "extra_forbidden":
        return "unknown key (not allowed here)"
    if err["type"] == "literal_error":
        return f"{err['msg'].replace('Input should be', 'must be')}"
    return str(err["msg"]).removeprefix("Value error, ")
