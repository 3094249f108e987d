"""The virtual registry gateway: the OCI distribution API over virtual repositories (config.py).

Reads resolve across the members in order — a manifest by tag from the first member that has the
tag, anything by digest from the first that has the digest — and stream from that member
unchanged (bytes, media type, digest). Pushes (uploads, mounts, manifests) go to the deploy
target; a virtual repository without one is read-only (405 DENIED). tags/list merges the members;
/v2/_catalog lists only the virtual repositories the caller may read. Errors are OCI error JSON.

A member that fails (not a 404) while a *tag* is resolved fails the request (502): answering from
a later member could serve different content under the same tag. By digest, content is the
content wherever it comes from, so a failing member is passed over.

A view with `require_stage: S` serves only what airlock promoted into S (virtual/stageview.py) —
with a key, only what holds S's signed VSA: anything else is answered as absent. A blob HEAD from
someone who may push is a push session asking "must I upload this?": it is answered from the
deploy target alone — a blob that only another member holds is mounted into the deploy target
first (same registry), or reported missing — or the client would skip an upload the deploy
target needs.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hmac
import logging
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
from starlette.applications import Starlette
from starlette.background import BackgroundTask
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from registry.errors import AirlockError
from registry.http import tune_http
from registry.manifest import MAX_MANIFEST_SIZE
from registry.reference import is_digest, is_repository, is_tag
from virtual.config import Member, VirtualConfig, VirtualRepository
from virtual.stageview import StageView

log = logging.getLogger("airlock.virtual")

_SESSION = re.compile(r"^[A-Za-z0-9_-]{0,128}$")  # distribution's are UUIDs
_PASS_HEADERS = ("content-type", "content-length", "docker-content-digest", "etag", "range")
MAX_VIEWS = 1024  # stage views kept (one per member repository asked for); the oldest go first
_ROUTE = re.compile(
    r"^(?P<name>.+?)/(?:(?P<uploads>blobs/uploads)/(?P<session>[^/]*)"
    r"|(?P<kind>manifests|blobs|referrers)/(?P<ref>[^/]+)|(?P<tags>tags/list))$"
)


class OciError(Exception):
    def __init__(self, status: int, code: str, message: str, headers: dict | None = None):
        super().__init__(message)
        self.status, self.code, self.headers = status, code, headers or {}

    def response(self) -> Response:
        body = {"errors": [{"code": self.code, "message": str(self), "detail": {}}]}
        return JSONResponse(body, self.status, headers=self.headers)


@dataclass(frozen=True)
class Target:
    """What a request names: a virtual repository, the image name in it, and the rest."""

    virtual: str
    repo: VirtualRepository
    name: str
    kind: str  # manifests | blobs | referrers | uploads | tags
    ref: str


class Gateway:
    def __init__(self, config: VirtualConfig):
        self.config = config
        self.clients = {
            alias: r.client(r.env_credentials()) for alias, r in config.registries.items()
        }
        self.views: dict[tuple[str, str, str, str], StageView] = {}

    def view(self, member: Member, target: Target, stage: str) -> StageView:
        # per virtual repository too: two views of one member may trust different keys
        repo = member.repository(target.name)
        key = (target.virtual, member.registry, repo, stage)
        if key not in self.views:
            if len(self.views) >= MAX_VIEWS:
                self.views.pop(next(iter(self.views)))
            keys = self.config.stage_keys(target.virtual)
            self.views[key] = StageView(self.clients[member.registry], repo, stage, keys)
        return self.views[key]

    async def aclose(self) -> None:
        for client in self.clients.values():
            await client.aclose()

    # ---------------------------------------------------------------- who, what

    def user(self, request: Request) -> str | None:
        """The authenticated user, None for anonymous; a wrong password is 401 right away."""
        header = request.headers.get("authorization", "")
        if not header:
            return None
        scheme, _, value = header.partition(" ")
        if scheme.lower() == "bearer":
            user = self.config.token_user(value.strip())
            if user is None:
                raise _unauthorized("unknown token")
            return user
        try:
            user, _, password = base64.b64decode(value, validate=True).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            raise _unauthorized("malformed Basic credentials") from None
        if scheme.lower() == "basic" and not user and not password:
            return None  # what clients without credentials send after a Basic challenge
        expected = self.config.password(user) if scheme.lower() == "basic" else None
        if not expected or not hmac.compare_digest(password.encode(), expected.encode()):
            raise _unauthorized("wrong user name or password")
        return user

    def target(self, request: Request, user: str | None) -> Target:
        raw = request.scope.get("raw_path", b"").decode("latin-1")
        if "%2f" in raw.lower() or "%2e" in raw.lower():
            raise OciError(400, "NAME_INVALID", "encoded '/' or '.' in the path")
        m = _ROUTE.match(request.path_params["path"])
        if not m:
            raise OciError(404, "NOT_FOUND", "not an OCI distribution API path")
        full = m["name"]
        if not is_repository(full) or "/" not in full:
            raise OciError(400, "NAME_INVALID", f"invalid repository name {full!r}")
        virtual, name = full.split("/", 1)
        repo = self.config.repositories.get(virtual)
        if repo is None or not (repo.may_read(user) or repo.may_write(user)):
            # the same answer whether or not the name exists: names are not given away
            if user is None:
                raise _unauthorized("authentication required")
            raise OciError(404, "NAME_UNKNOWN", f"no virtual repository {virtual!r}")
        kind = m["kind"] or ("uploads" if m["uploads"] else "tags")
        ref = m["ref"] or m["session"] or ""
        if kind in ("manifests",) and not (is_tag(ref) or is_digest(ref)):
            raise OciError(400, "MANIFEST_INVALID", f"invalid tag or digest {ref!r}")
        if kind == "blobs" and not is_digest(ref):
            raise OciError(400, "DIGEST_INVALID", f"invalid digest {ref!r}")
        if kind == "uploads" and not _SESSION.match(ref):
            raise OciError(404, "BLOB_UPLOAD_UNKNOWN", f"no upload session {ref!r}")
        return Target(virtual, repo, name, kind, ref)

    def allow(self, target: Target, user: str | None, write: bool) -> None:
        if write:
            if target.repo.deploy is None:
                raise OciError(
                    405, "DENIED", f"virtual repository {target.virtual} is read-only (no deploy)"
                )
            if not target.repo.may_write(user):
                raise (
                    _unauthorized("push needs a user with write access")
                    if user is None
                    else (OciError(403, "DENIED", f"{user} may not push to {target.virtual}"))
                )
        elif not target.repo.may_read(user):
            raise (
                _unauthorized("pull needs a user")
                if user is None
                else OciError(403, "DENIED", f"{user} may not pull from {target.virtual}")
            )

    # ---------------------------------------------------------------- reads

    async def read(self, request: Request, target: Target, user: str | None) -> Response:
        if target.kind == "tags":
            return await self.tags(target)
        if target.kind == "referrers":  # members are read by their fallback tags instead
            raise OciError(404, "NOT_FOUND", "the referrers API is not offered; use the tag schema")
        if target.kind == "blobs" and request.method == "HEAD" and target.repo.may_write(user):
            return await self.push_head(request, target)
        by_digest = target.kind == "blobs" or is_digest(target.ref)
        # clients send one Accept header per media type: pass them all (distribution answers
        # an index the client did not list as "unknown", a different answer than direct)
        accept = ", ".join(request.headers.getlist("accept"))
        # bytes are relayed raw: a compressed answer would reach the client without its
        # Content-Encoding, and never hash to its digest
        headers = {"Accept-Encoding": "identity", **({"Accept": accept} if accept else {})}
        path_kind = "manifests" if target.kind == "manifests" else "blobs"
        for member in target.repo.members:
            client = self.clients[member.registry]
            try:
                ref = await self._admitted(member, target)
                if ref is None:
                    continue  # not here (or not promoted here): the next member may have it
                path = f"/v2/{member.repository(target.name)}/{path_kind}/{ref}"
                response = await client.forward(
                    request.method, path, headers=headers, follow_redirects=True
                )
            except AirlockError:
                if by_digest:
                    continue
                raise OciError(
                    502, "UNAVAILABLE", f"member {member.prefix} cannot be reached"
                ) from None
            if response.status_code == 200:
                return _streamed(request, response)
            await response.aclose()
            if response.status_code != 404 and not by_digest:
                raise OciError(
                    502, "UNAVAILABLE", f"member {member.prefix} answered {response.status_code}"
                )
        code = "BLOB_UNKNOWN" if target.kind == "blobs" else "MANIFEST_UNKNOWN"
        raise OciError(404, code, f"{target.virtual}/{target.name}:{target.ref} is not here")

    async def _admitted(self, member: Member, target: Target) -> str | None:
        """What to ask `member` for: the reference as given, or — in a stage view — the digest
        the stage admits (a tag is pinned to the digest checked), None if there is none."""
        stage = target.repo.stage
        if stage is None:
            return target.ref
        view = self.view(member, target, stage)
        if target.kind == "blobs":
            return target.ref if await view.blob(target.ref) else None
        client = self.clients[member.registry]
        found = await client.head_manifest(member.repository(target.name), target.ref)
        if found is None:
            return None
        tag = None if is_digest(target.ref) else target.ref
        if not await view.manifest(found.digest, tag):
            log.info(
                "%s/%s:%s is %s, which was never promoted to %s: not served",
                target.virtual,
                target.name,
                target.ref,
                found.digest,
                stage,
            )
            return None
        return found.digest

    async def push_head(self, request: Request, target: Target) -> Response:
        """`HEAD blobs/<digest>` from a pusher: answered by the deploy target alone."""
        deploy = target.repo.deploy
        assert deploy is not None  # may_write() is False without one
        client = self.clients[deploy.registry]
        repo = deploy.repository(target.name)
        path = f"/v2/{repo}/blobs/{target.ref}"
        headers = {"Accept-Encoding": "identity"}
        response = await client.forward("HEAD", path, headers=headers, follow_redirects=True)
        if response.status_code == 200:
            return _streamed(request, response)
        await response.aclose()
        if response.status_code == 404 and target.repo.stage is None:
            # Another member on the deploy target's registry may hold it: mount it into the
            # deploy target (a registry-side link, no bytes move), so nothing is uploaded again.
            for member in target.repo.members:
                if member == deploy or member.registry != deploy.registry:
                    continue
                mounted = await client.mount_blob(repo, target.ref, member.repository(target.name))
                if mounted.mounted:
                    again = await client.forward("HEAD", path, headers=headers)
                    if again.status_code == 200:
                        return _streamed(request, again)
                    await again.aclose()
                elif mounted.location:
                    await client.cancel_upload(mounted.location)
        raise OciError(
            404, "BLOB_UNKNOWN", f"{target.virtual}/{target.name}@{target.ref}: upload it"
        )

    async def tags(self, target: Target) -> Response:
        found: list[str] = []
        any_repo = False
        for member in target.repo.members:
            client = self.clients[member.registry]
            repo = member.repository(target.name)
            tags = await client.list_tags(repo)
            any_repo = any_repo or bool(tags)
            found += [t for t in tags if t not in found]
        if not any_repo:
            raise OciError(404, "NAME_UNKNOWN", f"{target.virtual}/{target.name} is not here")
        return JSONResponse({"name": f"{target.virtual}/{target.name}", "tags": sorted(found)})

    async def catalog(self, user: str | None) -> Response:
        names: list[str] = []
        listings: dict[str, list[str]] = {}  # one catalog read per member registry
        for virtual, repo in sorted(self.config.repositories.items()):
            if not repo.may_read(user):
                continue
            for member in repo.members:
                if member.registry not in listings:
                    listings[member.registry] = await self.clients[member.registry].catalog()
                listing = listings[member.registry]
                prefix = member.prefix + "/"
                names += [f"{virtual}/{r[len(prefix) :]}" for r in listing if r.startswith(prefix)]
        return JSONResponse({"repositories": sorted(set(names))})

    # ---------------------------------------------------------------- writes

    async def write(self, request: Request, target: Target, user: str | None) -> Response:
        deploy = target.repo.deploy
        assert deploy is not None  # allow() refused read-only repositories
        client = self.clients[deploy.registry]
        repo = deploy.repository(target.name)
        headers = {
            k: request.headers[k]
            for k in ("content-type", "content-length")
            if k in request.headers
        }
        query = request.url.query
        if target.kind == "manifests" and request.method == "PUT":
            body = await _capped(request, MAX_MANIFEST_SIZE)
            path = f"/v2/{repo}/manifests/{target.ref}"
            response = await client.forward("PUT", path, headers=headers, content=body)
        elif target.kind == "uploads":
            path = f"/v2/{repo}/blobs/uploads/{target.ref}"
            if query:
                path += "?" + self._mount_query(query, deploy, user)
            content: Any = None
            if request.method in ("PATCH", "PUT"):
                content = request.stream()
            elif request.method == "POST":
                content = await _capped(request, MAX_MANIFEST_SIZE)  # a monolithic POST is rare
            response = await client.forward(request.method, path, headers=headers, content=content)
        else:
            raise OciError(405, "UNSUPPORTED", f"{request.method} {target.kind} is not supported")
        return await _relayed(response, repo, f"{target.virtual}/{target.name}")

    def _mount_query(self, query: str, deploy: Member, user: str | None) -> str:
        """A mount names a repository as the client sees it (virtual/name): translate it to that
        repository's deploy target — only if the caller may read it there — or drop it (a plain
        upload follows). A mount is a read of the source: never one the caller has no right to."""
        from urllib.parse import parse_qsl, urlencode

        params = parse_qsl(query, keep_blank_values=True)
        out = []
        for key, value in params:
            if key == "from":
                virtual, _, name = value.partition("/")
                source = self.config.repositories.get(virtual)
                if (
                    source is None
                    or source.deploy is None
                    or source.deploy not in source.members  # what it reads is not its deploy
                    or not source.may_read(user)
                    or source.deploy.registry != deploy.registry
                    or not is_repository(name)
                ):
                    return urlencode([(k, v) for k, v in params if k not in ("from", "mount")])
                value = source.deploy.repository(name)
            out.append((key, value))
        return urlencode(out)


def _unauthorized(message: str) -> OciError:
    return OciError(
        401, "UNAUTHORIZED", message, {"WWW-Authenticate": 'Basic realm="airlock virtual"'}
    )


async def _capped(request: Request, limit: int) -> bytes:
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise OciError(413, "SIZE_INVALID", f"body over the {limit}-byte limit")
        chunks.append(chunk)
    return b"".join(chunks)


def _streamed(request: Request, response: httpx.Response) -> Response:
    headers = {k: v for k, v in response.headers.items() if k.lower() in _PASS_HEADERS}
    if request.method == "HEAD":
        task = BackgroundTask(response.aclose)
        return Response(status_code=200, headers=headers, background=task)
    return StreamingResponse(
        response.aiter_raw(1024 * 1024),
        status_code=200,
        headers=headers,
        background=BackgroundTask(response.aclose),
    )


async def _relayed(response: httpx.Response, member_repo: str, virtual_repo: str) -> Response:
    """A member's answer to a write, with its Location pointed back at the gateway's names."""
    try:
        body = await response.aread()
    finally:
        await response.aclose()
    headers = {
        k: v
        for k, v in response.headers.items()
        if k.lower() in ("docker-content-digest", "docker-upload-uuid", "range", "content-type")
    }
    location = response.headers.get("location")
    if location:
        path = httpx.URL(location)
        target = path.raw_path.decode()
        prefix = f"/v2/{member_repo}/"
        if target.startswith(prefix):
            target = f"/v2/{virtual_repo}/" + target[len(prefix) :]
        headers["Location"] = target
    return Response(body, status_code=response.status_code, headers=headers)


def create_app(config: VirtualConfig) -> Starlette:
    tune_http()
    gateway = Gateway(config)

    async def base(request: Request) -> Response:
        # Always challenge an unauthenticated ping, as a Basic-auth registry does: clients
        # (skopeo, docker) send their credentials only after a challenge here. Clients without
        # credentials carry on anonymously, and read what anonymous users may.
        try:
            user = gateway.user(request)
        except OciError as e:
            return e.response()
        if user is None:
            return _unauthorized("authentication required").response()
        return JSONResponse({}, headers={"Docker-Distribution-API-Version": "registry/2.0"})

    async def healthz(request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def api(request: Request) -> Response:
        try:
            user = gateway.user(request)
            if request.path_params["path"] == "_catalog":
                return await gateway.catalog(user)
            target = gateway.target(request, user)
            # an upload session is the deploy target's, even to ask how far it got
            write = request.method not in ("GET", "HEAD") or target.kind == "uploads"
            gateway.allow(target, user, write)
            if write:
                return await gateway.write(request, target, user)
            return await gateway.read(request, target, user)
        except OciError as e:
            return e.response()
        except (AirlockError, httpx.HTTPError) as e:
            # the detail (member hosts, paths) is for the operator's log, not for any caller
            log.warning("%s %s: a member failed: %s", request.method, request.url.path, e)
            return OciError(502, "UNAVAILABLE", "a member registry failed; retry").response()

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        yield
        await gateway.aclose()

    methods = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"]
    return Starlette(
        routes=[
            Route("/healthz", healthz, methods=["GET"]),
            Route("/v2/", base, methods=["GET", "HEAD"]),
            Route("/v2/{path:path}", api, methods=methods),
        ],
        lifespan=lifespan,
    )
