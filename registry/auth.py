"""Registry authentication: credentials, docker config, Basic and Bearer challenges.

`RegistryAuth` is an httpx.Auth: each request is sent with what the last challenge from its host
asked for (pre-emptively, so a copy does not pay a 401 round trip per request); a 401 answers a
new challenge once. Bearer tokens are cached per scope set until they expire, and any cached token
whose scopes cover a request is reused. Scopes come from the request itself: GET/HEAD need
`pull`, anything else `pull,push`, and a cross-repository mount also `pull` on its `from`
repository — so one token covers a mount, and a copy asks for no more than it needs.

Authorization never follows a redirect to another host (httpx strips it), and a 401 from another
host after a redirect is returned as it is, never answered with this registry's credentials.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import re
import shutil
import subprocess
import time
from collections.abc import AsyncGenerator, Awaitable, Callable, Generator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import httpx

from registry import secrets
from registry.errors import AuthError, BadInputError, RegistryError
from registry.reference import DOCKER_HUB, DOCKER_HUB_API
from registry.retry import transient

DOCKER_HUB_CONFIG_KEY = "https://index.docker.io/v1/"
TOKEN_EXPIRY_MARGIN = 10.0  # seconds: refresh a little early rather than get a 401 mid-copy
DEFAULT_TOKEN_LIFETIME = 60.0  # the distribution token spec's default for a missing expires_in


@dataclass(frozen=True, slots=True)
class Credentials:
    """A username and secret (password, or an identity token). The secret never appears in repr."""

    username: str | None = None
    password: str | None = field(default=None, repr=False)
    identity_token: str | None = field(default=None, repr=False)

    @classmethod
    def parse(cls, text: str, flag: str = "--creds") -> Credentials:
        """Parse 'USER:PASS' as given on the command line."""
        user, sep, password = text.partition(":")
        if not sep or not user or not password:
            raise BadInputError(f"{flag} expects USER:PASSWORD (both non-empty)")
        return cls(username=user, password=password)

    @classmethod
    def from_env(cls, user_var: str, password_var: str, where: str) -> Credentials:
        """Read from the environment variables a config file names (never the values)."""
        user, password = os.environ.get(user_var), os.environ.get(password_var)
        if not user or not password:
            raise BadInputError(
                f"{where}: set the environment variables {user_var} and {password_var}"
            )
        return cls(username=user, password=password)

    def __post_init__(self) -> None:
        secrets.register(self.password)
        secrets.register(self.identity_token)
        if self.username and self.password:
            secrets.register_basic(self.username, self.password)

    def __repr__(self) -> str:
        secret = "***" if (self.password or self.identity_token) else None
        return f"Credentials(username={self.username!r}, secret={secret})"


# ----------------------------------------------------------------------------- docker config


def docker_config_dir() -> Path:
    return Path(os.environ.get("DOCKER_CONFIG") or Path.home() / ".docker")


def _config_key(key: str) -> str:
    """Normalise an `auths` key: 'https://host:5000/v1/' → 'host:5000'."""
    if "://" in key:
        key = urlsplit(key).netloc or key
    return key.split("/", 1)[0].lower()


def _host_keys(registry: str) -> tuple[str, ...]:
    if registry in (DOCKER_HUB, DOCKER_HUB_API, "index.docker.io"):
        return ("index.docker.io", DOCKER_HUB, DOCKER_HUB_API)
    return (registry.lower(),)


class DockerConfig:
    """Credentials from ~/.docker/config.json (or $DOCKER_CONFIG): credHelpers, credsStore, auths.

    Read lazily, only when a registry actually asks for credentials.
    """

    def __init__(self, directory: Path | None = None):
        self.directory = directory or docker_config_dir()
        self._doc: dict | None = None

    @property
    def path(self) -> Path:
        return self.directory / "config.json"

    def _load(self) -> dict:
        if self._doc is None:
            try:
                text = self.path.read_text()
            except FileNotFoundError:
                self._doc = {}
                return self._doc
            except OSError as e:
                raise BadInputError(f"cannot read {self.path}: {e.strerror}") from None
            try:
                doc = json.loads(text)
            except ValueError:
                raise BadInputError(
                    f"{self.path} is not valid JSON: fix it, or point DOCKER_CONFIG elsewhere"
                ) from None
            self._doc = doc if isinstance(doc, dict) else {}
        return self._doc

    def credentials(self, registry: str) -> Credentials | None:
        doc = self._load()
        keys = _host_keys(registry)
        helpers = doc.get("credHelpers") if isinstance(doc.get("credHelpers"), dict) else {}
        helper = next((helpers[k] for k in helpers if _config_key(k) in keys), None)
        helper = helper or doc.get("credsStore")
        if isinstance(helper, str) and helper:
            creds = _run_helper(helper, registry, self.path)
            if creds:
                return creds
        auths = doc.get("auths") if isinstance(doc.get("auths"), dict) else {}
        for key, entry in auths.items():
            if _config_key(key) in keys and isinstance(entry, dict):
                creds = _creds_from_auth_entry(entry, self.path)
                if creds:
                    return creds
        return None


def _creds_from_auth_entry(entry: Mapping, path: Path) -> Credentials | None:
    fields = ("auth", "identitytoken", "username", "password")
    if any(not isinstance(entry.get(k) or "", str) for k in fields):
        raise BadInputError(f"{path}: {', '.join(fields)} entries must be strings")
    token = entry.get("identitytoken") or None
    if entry.get("auth"):
        try:
            user, sep, password = base64.b64decode(entry["auth"]).decode().partition(":")
        except (ValueError, UnicodeDecodeError):
            raise BadInputError(f"{path}: an 'auth' entry is not base64 of USER:PASSWORD") from None
        if not sep:
            raise BadInputError(f"{path}: an 'auth' entry is not base64 of USER:PASSWORD")
        return Credentials(user, password, token)
    if entry.get("username") or token:
        return Credentials(entry.get("username"), entry.get("password"), token)
    return None


def _run_helper(name: str, registry: str, config_path: Path) -> Credentials | None:
    program = f"docker-credential-{name}"
    if shutil.which(program) is None:
        raise BadInputError(
            f"credential helper {program} (named in {config_path}) is not"
            " on PATH: install it or remove it from the config"
        )
    server = DOCKER_HUB_CONFIG_KEY if registry in _host_keys(DOCKER_HUB) else registry
    try:
        proc = subprocess.run(
            [program, "get"], input=server, capture_output=True, text=True, timeout=30, check=False
        )
    except subprocess.TimeoutExpired:
        raise AuthError(f"credential helper {program} did not answer within 30 s") from None
    if proc.returncode != 0:
        # "credentials not found" is the helper protocol's normal miss, not an error.
        return None
    try:
        doc = json.loads(proc.stdout)
        user, secret = doc["Username"], doc["Secret"]
    except (ValueError, KeyError, TypeError):
        raise AuthError(
            f"credential helper {program} returned something other than JSON credentials"
        ) from None
    if user == "<token>":  # the helper protocol's marker for an identity token
        return Credentials(None, None, secret)
    return Credentials(user, secret)


# ----------------------------------------------------------------------------- challenges


_PARAM_RE = re.compile(r'(\w+)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^\s,]+))')
_UNESCAPE_RE = re.compile(r"\\(.)")  # RFC 9110 quoted-pair


@dataclass(frozen=True, slots=True)
class Challenge:
    scheme: str  # "basic" or "bearer"
    params: dict[str, str]

    @property
    def realm(self) -> str | None:
        return self.params.get("realm")

    @classmethod
    def parse(cls, header: str) -> Challenge | None:
        scheme, _, rest = header.strip().partition(" ")
        scheme = scheme.lower()
        if scheme not in ("basic", "bearer"):
            return None
        params = {}
        for m in _PARAM_RE.finditer(rest):
            quoted = m.group(2)
            value = _UNESCAPE_RE.sub(r"\1", quoted) if quoted is not None else m.group(3)
            params[m.group(1).lower()] = value
        return cls(scheme, params)


Scopes = dict[str, frozenset[str]]  # repository → actions
CATALOG = "registry:catalog"  # the one non-repository scope (no repository name has a colon)


def _scope_strings(scopes: Scopes) -> list[str]:
    return [
        f"{CATALOG if repo == CATALOG else 'repository:' + repo}:{','.join(sorted(actions))}"
        for repo, actions in sorted(scopes.items())
    ]


def _parse_scope_strings(text: str) -> Scopes:
    out: dict[str, set[str]] = {}
    for item in text.split():
        kind, _, rest = item.partition(":")
        name, _, actions = rest.rpartition(":")
        if kind == "repository" and name:
            out.setdefault(name, set()).update(a for a in actions.split(",") if a)
        elif f"{kind}:{name}" == CATALOG:
            out.setdefault(CATALOG, set()).update(a for a in actions.split(",") if a)
    return {k: frozenset(v) for k, v in out.items()}


def _covers(have: Scopes, need: Scopes) -> bool:
    return all(actions <= have.get(repo, frozenset()) for repo, actions in need.items())


def _merge(*scopes: Scopes) -> Scopes:
    out: dict[str, frozenset[str]] = {}
    for s in scopes:
        for repo, actions in s.items():
            out[repo] = out.get(repo, frozenset()) | actions
    return out


_PATH_RE = re.compile(
    r"^/v2/(?P<name>.+)/(?:manifests/[^/]+|blobs/uploads/.*|blobs/[^/]+|tags/list|referrers/[^/]+)$"
)


def scopes_for(request: httpx.Request) -> Scopes:
    """The repository scopes a request needs, derived from its method and path."""
    if request.url.path == "/v2/_catalog":
        return {CATALOG: frozenset({"*"})}
    m = _PATH_RE.match(request.url.path)
    if not m:
        return {}
    name = m.group("name")
    pull = frozenset({"pull"})
    if request.method in ("GET", "HEAD"):
        scopes: Scopes = {name: pull}
    elif request.method == "DELETE":  # distribution asks for `delete`, even to cancel an upload
        scopes = {name: frozenset({"delete"})}
    else:
        scopes = {name: frozenset({"pull", "push"})}
    mount_from = parse_qs(request.url.query.decode()).get("from")
    if mount_from:
        scopes = _merge(scopes, {mount_from[0]: pull})
    return scopes


@dataclass
class _Token:
    value: str = field(repr=False)
    scopes: Scopes
    expires: float


TokenSender = Callable[[httpx.Request], Awaitable[httpx.Response]]


class RegistryAuth(httpx.Auth):
    """Answers Basic and Bearer challenges for one registry host; see the module docstring."""

    def __init__(
        self,
        credentials: Callable[[], Credentials | None],
        send_token_request: TokenSender,
        clock: Callable[[], float] = time.monotonic,
    ):
        self._credentials_source = credentials
        self._credentials: Credentials | None = None
        self._credentials_loaded = False
        self._send = send_token_request
        self.clock = clock
        self._challenges: dict[str, Challenge] = {}
        self._tokens: dict[str, list[_Token]] = {}
        self._hints: Scopes = {}
        self._lock = asyncio.Lock()

    def __repr__(self) -> str:
        return f"RegistryAuth(hosts={sorted(self._challenges)})"

    def want(self, repository: str, *actions: str) -> None:
        """Ask for these actions whenever `repository` is touched: one token, not one per verb."""
        self._hints = _merge(self._hints, {repository: frozenset(actions)})

    def learn(self, response: httpx.Response) -> None:
        """Remember the challenge of a 401 (the ping's), so later requests authenticate at once."""
        challenge = Challenge.parse(response.headers.get("www-authenticate", ""))
        if challenge is not None:
            self._challenges[response.request.url.netloc.decode()] = challenge

    def has_credentials(self) -> bool:
        """Whether credentials were found and used (never loads them just to answer)."""
        return self._credentials_loaded and self._credentials is not None

    def credentials(self) -> Credentials | None:
        if not self._credentials_loaded:
            self._credentials = self._credentials_source()
            self._credentials_loaded = True
        return self._credentials

    def sync_auth_flow(
        self, request: httpx.Request
    ) -> Generator[httpx.Request, httpx.Response, None]:
        raise NotImplementedError("RegistryAuth is async-only; use httpx.AsyncClient")

    async def async_auth_flow(
        self, request: httpx.Request
    ) -> AsyncGenerator[httpx.Request, httpx.Response]:
        host = request.url.netloc.decode()
        need = self._scopes_needed(request)
        known = self._challenges.get(host)
        if known is not None:
            await self._authorize(request, known, need, refresh=False)

        response = yield request

        if response.status_code != 401 or response.request.url.netloc.decode() != host:
            return
        challenge = Challenge.parse(response.headers.get("www-authenticate", ""))
        if challenge is None:
            return
        self._challenges[host] = challenge
        if challenge.scheme == "basic" and known is not None and known.scheme == "basic":
            return  # what we have was sent and refused: retrying cannot help
        if challenge.scheme == "bearer":
            need = _merge(need, _parse_scope_strings(challenge.params.get("scope", "")))
        if not await self._authorize(request, challenge, need, refresh=known is not None):
            return
        if not isinstance(request.stream, httpx.ByteStream):
            return  # a streamed body cannot be sent twice; the caller retries the operation
        yield request

    def _scopes_needed(self, request: httpx.Request) -> Scopes:
        need = scopes_for(request)
        return _merge(need, {r: a for r, a in self._hints.items() if r in need})

    async def _authorize(
        self, request: httpx.Request, challenge: Challenge, need: Scopes, refresh: bool
    ) -> bool:
        """Set Authorization on `request` as `challenge` asks; False if there is nothing to send."""
        if challenge.scheme == "basic":
            creds = self.credentials()
            if not creds or not creds.username or creds.password is None:
                return False
            request.headers["Authorization"] = _basic(creds.username, creds.password)
            return True
        token = await self._token(challenge, need, refresh)
        request.headers["Authorization"] = f"Bearer {token}"
        return True

    async def _token(self, challenge: Challenge, need: Scopes, refresh: bool) -> str:
        realm = challenge.realm
        if not realm:
            raise AuthError("registry sent a Bearer challenge without a realm; it is misconfigured")
        async with self._lock:
            now = self.clock()
            cached = [t for t in self._tokens.get(realm, []) if t.expires > now]
            if not refresh:
                for t in cached:
                    if _covers(t.scopes, need):
                        return t.value
            # Ask for everything the still-valid tokens had too, so one token keeps serving all.
            scopes = _merge(need, *(t.scopes for t in cached)) if not refresh else need
            token = await self._fetch_token(realm, challenge.params.get("service"), scopes)
            self._tokens[realm] = [*cached, token] if not refresh else [token]
            return token.value

    async def _fetch_token(self, realm: str, service: str | None, scopes: Scopes) -> _Token:
        creds = self.credentials()
        params: list[tuple[str, str]] = []
        if service:
            params.append(("service", service))
        params += [("scope", s) for s in _scope_strings(scopes)]
        if creds and creds.identity_token:
            data = dict(
                params,
                grant_type="refresh_token",
                refresh_token=creds.identity_token,
                client_id="airlock",
            )
            data["scope"] = " ".join(_scope_strings(scopes))
            request = httpx.Request("POST", realm, data=data)
        else:
            request = httpx.Request("GET", realm, params=params)
            if creds and creds.username and creds.password is not None:
                request.headers["Authorization"] = _basic(creds.username, creds.password)
        try:
            response = await self._send(request)
        except httpx.HTTPError as e:
            raise RegistryError(
                f"cannot reach the token server {_origin(realm)}: {type(e).__name__}",
                temporary=transient(e),
            ) from None
        if response.status_code in (401, 403):
            who = "the given credentials were refused" if creds else "anonymous access was refused"
            raise AuthError(
                f"token server {_origin(realm)} answered {response.status_code}: {who};"
                " check the username/password (a --*creds-file, AIRLOCK_*_CREDS or docker"
                " login)",
                status=response.status_code,
            )
        if response.status_code != 200:
            raise AuthError(
                f"token server {_origin(realm)} answered {response.status_code}; retry later",
                status=response.status_code,
            )
        try:
            doc = response.json()
            value = doc.get("token") or doc.get("access_token")
            lifetime = float(doc.get("expires_in") or DEFAULT_TOKEN_LIFETIME)
        except (ValueError, AttributeError, TypeError):
            value = None
        if not isinstance(value, str) or not value:
            raise AuthError(f"token server {_origin(realm)} answered without a token")
        secrets.register(value, token=True)
        expires = self.clock() + max(lifetime - TOKEN_EXPIRY_MARGIN, 0.0)
        return _Token(value, scopes, expires)


def _basic(username: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{username}:{password}".encode()).decode()


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"
