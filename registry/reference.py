"""Image references: parse and normalise per the docker reference grammar.

    [registry[:port]/]repository[:tag][@digest]

A first path component counts as a registry when it contains '.' or ':' or is 'localhost',
exactly as docker decides; otherwise the registry is docker.io and one-component names get
'library/'. Digests must be sha256 (64 hex) or sha512 (128 hex), lowercase, as OCI registers them.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, replace

from registry.errors import InvalidReference

DOCKER_HUB = "docker.io"
DOCKER_HUB_API = "registry-1.docker.io"
MAX_NAME_LENGTH = 255

_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_PATH_RE = re.compile(rf"{_COMPONENT}(?:/{_COMPONENT})*")
_TAG_RE = re.compile(r"[\w][\w.-]{0,127}", re.ASCII)
_IMAGE_ID_RE = re.compile(r"[a-f0-9]{64}")
_DOMAIN_COMPONENT = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_HOST_RE = re.compile(
    rf"(?:{_DOMAIN_COMPONENT}(?:\.{_DOMAIN_COMPONENT})*|\[[0-9a-fA-F:.]+\])(?::[0-9]{{1,5}})?"
)
_DIGEST_HEX_LENGTH = {"sha256": 64, "sha512": 128}
_DIGEST_RE = re.compile(r"([a-z0-9]+(?:[+._-][a-z0-9]+)*):([0-9a-f]+)")


def validate_digest(digest: str) -> str:
    """Return `digest` if it is a well-formed sha256/sha512 digest, else raise InvalidReference."""
    m = _DIGEST_RE.fullmatch(digest)
    if not m:
        raise InvalidReference(
            f"invalid digest {digest!r}: expected sha256:<64 lowercase hex characters>"
        )
    algorithm, hex_ = m.groups()
    want = _DIGEST_HEX_LENGTH.get(algorithm)
    if want is None:
        raise InvalidReference(
            f"unsupported digest algorithm {algorithm!r} in {digest!r}: use sha256 or sha512"
        )
    if len(hex_) != want:
        raise InvalidReference(
            f"invalid digest {digest!r}: {algorithm} needs {want} hex characters, got {len(hex_)}"
        )
    return digest


def is_digest(text: object) -> bool:
    """Whether `text` is a digest airlock accepts (sha256/sha512, lowercase hex, exact length)."""
    if not isinstance(text, str):
        return False
    m = _DIGEST_RE.fullmatch(text)
    return bool(m) and _DIGEST_HEX_LENGTH.get(m.group(1)) == len(m.group(2))


def is_tag(text: object) -> bool:
    return isinstance(text, str) and bool(_TAG_RE.fullmatch(text))


def is_path_component(text: object) -> bool:
    """One component of a repository path (`dev`, `my-app`)."""
    return isinstance(text, str) and bool(re.fullmatch(_COMPONENT, text))


def is_repository(text: object) -> bool:
    """A repository path without registry (`dev/app`), within the length limit."""
    return isinstance(text, str) and len(text) <= MAX_NAME_LENGTH and bool(_PATH_RE.fullmatch(text))


REPOSITORY_PATTERN = rf"^{_PATH_RE.pattern}$"  # for pydantic Field(pattern=...)


def validate_tag(tag: str) -> str:
    if not _TAG_RE.fullmatch(tag):
        raise InvalidReference(
            f"invalid tag {tag!r}: use up to 128 of letters, digits, '_', '.', '-',"
            " not starting with '.' or '-'"
        )
    return tag


def api_host(registry: str) -> str:
    """Where a registry's distribution API lives: docker.io's is registry-1.docker.io."""
    return DOCKER_HUB_API if registry in (DOCKER_HUB, "index.docker.io") else registry


def redact(text: str) -> str:
    """Hide a `user:password@` part, so an error message never repeats a pasted secret."""
    return re.sub(r"(^|//)[^/@\s]*@", r"\1***@", text, count=1)


def is_loopback(registry: str) -> bool:
    """True for localhost, 127.0.0.0/8 and ::1, with or without a port."""
    host = hostname(registry)
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def hostname(registry: str) -> str:
    """The host part of 'host[:port]' or '[v6]:port', without brackets or port."""
    if registry.startswith("["):
        return registry[1:].split("]", 1)[0]
    if registry.count(":") > 1:  # a bare IPv6 address: no port to strip
        return registry
    return registry.rsplit(":", 1)[0] if ":" in registry else registry


@dataclass(frozen=True, slots=True)
class Reference:
    registry: str
    repository: str
    tag: str | None = None
    digest: str | None = None

    @property
    def api_host(self) -> str:
        return api_host(self.registry)

    @property
    def name(self) -> str:
        return f"{self.registry}/{self.repository}"

    @property
    def reference(self) -> str:
        """What to put after /manifests/: the digest when known (exact), else the tag."""
        ref = self.digest or self.tag
        if ref is None:
            raise InvalidReference(f"{self.name} has neither a tag nor a digest")
        return ref

    def with_digest(self, digest: str | None) -> Reference:
        return replace(self, digest=validate_digest(digest) if digest else None)

    def with_tag(self, tag: str | None) -> Reference:
        return replace(self, tag=validate_tag(tag) if tag else None)

    def __str__(self) -> str:
        s = self.name
        if self.tag:
            s += f":{self.tag}"
        if self.digest:
            s += f"@{self.digest}"
        return s


def parse(text: str, *, default_tag: str | None = "latest") -> Reference:
    """Parse an image reference; `default_tag` applies when neither tag nor digest is given."""
    original = redact(text) if isinstance(text, str) else text
    if not isinstance(text, str) or not text.strip():
        raise InvalidReference(
            "empty image reference: expected [registry/]repository[:tag][@digest]"
        )
    text = text.strip()
    if text.startswith("docker://"):  # skopeo's transport prefix: accept it, users paste it
        text = text[len("docker://") :]
    elif "://" in text:
        raise InvalidReference(
            f"invalid reference {original!r}: drop the URL scheme, e.g. localhost:5000/app:1.0"
        )

    digest = None
    if "@" in text:
        text, digest = text.rsplit("@", 1)
        validate_digest(digest)

    registry, path = _split_registry(text, original)

    tag = None
    # A ':' after the last '/' separates the tag (a ':' before it belongs to a port).
    if ":" in path.rsplit("/", 1)[-1]:
        path, tag = path.rsplit(":", 1)
        if not tag:
            raise InvalidReference(f"invalid reference {original!r}: empty tag after ':'")
        validate_tag(tag)

    if not path:
        raise InvalidReference(f"invalid reference {original!r}: missing repository name")
    if path != path.lower() and _PATH_RE.fullmatch(path.lower()):
        raise InvalidReference(
            f"invalid reference {original!r}: repository names must be lowercase"
        )
    if not _PATH_RE.fullmatch(path):
        raise InvalidReference(
            f"invalid repository name {path!r} in {original!r}: use lowercase letters, digits and"
            " separators ('.', '_', '__', '-') between them, components joined by '/'"
        )
    if _IMAGE_ID_RE.fullmatch(path):
        raise InvalidReference(
            f"invalid reference {original!r}: a 64-character hex name looks like an image ID,"
            " not a repository; use repository@sha256:<hex> to name a digest"
        )
    if registry == DOCKER_HUB and "/" not in path:
        path = f"library/{path}"
    if len(registry) + 1 + len(path) > MAX_NAME_LENGTH:
        raise InvalidReference(
            f"invalid reference {original!r}: name longer than {MAX_NAME_LENGTH} characters"
        )
    if tag is None and digest is None:
        tag = default_tag
    return Reference(registry=registry, repository=path, tag=tag, digest=digest)


def _split_registry(text: str, original: str) -> tuple[str, str]:
    first, sep, rest = text.partition("/")
    if sep and ("." in first or ":" in first or first == "localhost" or first.startswith("[")):
        if not _HOST_RE.fullmatch(first):
            raise InvalidReference(
                f"invalid registry host {first!r} in {original!r}: expected host[:port]"
            )
        if first.startswith("["):
            try:
                ipaddress.IPv6Address(hostname(first))
            except ValueError:
                raise InvalidReference(f"invalid IPv6 address {first!r} in {original!r}") from None
        if ":" in first and not first.endswith("]"):
            port = int(first.rsplit(":", 1)[1])
            if not 0 < port < 65536:
                raise InvalidReference(f"invalid port in {first!r}: use 1-65535")
        registry = first.lower()
        if registry == "index.docker.io":
            registry = DOCKER_HUB
        return registry, rest
    return DOCKER_HUB, text
