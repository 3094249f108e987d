"""RegistryClient: the OCI distribution API over one pooled httpx.AsyncClient per registry.

Every manifest read is checked against the digest asked for and the registry's
Docker-Content-Digest; every blob is hashed while it streams and the last chunk is held back until
the hash matches, so a corrupt blob never completes an upload. Idempotent requests are retried on
connection errors, 429 and 5xx with exponential backoff, full jitter and Retry-After, bounded in
attempts and total time (registry/retry.py). Registry errors become one-line messages that say
what to do.

Importing this module changes nothing process-wide: entry points call registry.http.tune_http().
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import json
import ssl
from collections import Counter, OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

import httpx  # without its command line: see registry/__init__.py

from registry import mediatypes as mt
from registry import secrets
from registry.auth import Challenge, Credentials, DockerConfig, RegistryAuth
from registry.errors import (
    RETRY_STATUSES,
    AirlockError,
    AuthError,
    BadInputError,
    BlobInterrupted,
    DigestMismatch,
    InvalidReference,
    NotFound,
    RegistryError,
    UnsupportedContent,
)
from registry.http import lazy_default_context
from registry.manifest import (
    MAX_MANIFEST_SIZE,
    MAX_REFERRERS,
    Descriptor,
    Manifest,
    digest_of,
    index_entries,
    parse_manifest,
    verify_digest,
)
from registry.reference import api_host, is_loopback, validate_digest
from registry.retry import RetryPolicy, no_such_host, retry_after, retrying, root_cause, transient
from registry.version import version

MAX_PAGES = 100  # of a paginated listing
PING_BODY_LIMIT = 64 * 1024  # of /v2/'s answer, read to tell a registry from a web site
MONOLITHIC_LIMIT = 512 * 1024 * 1024  # above this, upload in PATCH chunks of this size
MANIFEST_CACHE_BYTES = 8 * 1024 * 1024  # manifests kept by digest per client (oldest go first)


@dataclass(frozen=True, slots=True)
class MountResult:
    mounted: bool
    location: str | None = None  # an open upload session when the registry declined the mount


def _what(verb: str, registry: str, repo: str, ref: str) -> str:
    """How a request names its object in messages: GET host/repo:tag or GET host/repo@digest."""
    return f"{verb} {registry}/{repo}{'@' if ':' in ref else ':'}{ref}"


class _NoAnswer(RegistryError):
    """One request got no response: httpx raised `error` (refused, reset, timed out, DNS, TLS).
    Temporary when `transient`; never leaves this module (_transport_error words it for users)."""

    def __init__(self, error: httpx.TransportError, *, retry: bool = True):
        super().__init__(type(error).__name__, temporary=retry and transient(error))
        self.error = error


class _Busy(RegistryError):
    """One request was answered with a status in RETRY_STATUSES; `response` is still open."""

    def __init__(self, response: httpx.Response):
        super().__init__(
            f"answered {response.status_code}",
            status=response.status_code,
            retry_after=retry_after(response.headers.get("retry-after")),
        )
        self.response = response


class _CutOff(BlobInterrupted):
    """A manifest's body stopped arriving midway: httpx raised `error`."""

    def __init__(self, error: httpx.TransportError):
        super().__init__(type(error).__name__)
        self.error = error


async def _release(e: RegistryError) -> None:
    """Before a retry: close the busy answer, so its connection is not held while we wait."""
    if isinstance(e, _Busy):
        await e.response.aclose()


async def _ping_body(response: httpx.Response) -> bytes:
    """The start of the ping's body, enough to tell JSON from a web page; never all of a huge
    one."""
    body = b""
    try:
        async for chunk in response.aiter_bytes():
            body += chunk
            if len(body) >= PING_BODY_LIMIT:
                break
    finally:
        await response.aclose()
    return body[:PING_BODY_LIMIT]


def _looks_like_registry(response: httpx.Response, body: bytes) -> bool:
    """distribution's API version header; else what a registry behind a proxy that drops it
    still answers: a Basic or Bearer challenge with a 401, or JSON (`{}`) with a 200."""
    if response.headers.get("docker-distribution-api-version", "").startswith("registry/2."):
        return True
    if response.status_code == 401:
        return Challenge.parse(response.headers.get("www-authenticate", "")) is not None
    try:
        json.loads(body)
    except ValueError:  # UnicodeDecodeError included
        return False
    return True


def _one_line(text: str, limit: int = 200) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _errors_of(response: httpx.Response) -> list[tuple[str, str]]:
    """The registry's error codes and messages; a message is scrubbed before it is cut short,
    so no part of a secret it repeats survives the cut."""
    try:
        doc = json.loads(response.content)
        return [
            (str(e.get("code", "")), _one_line(secrets.scrub(str(e.get("message", "")))))
            for e in doc.get("errors", [])
            if isinstance(e, dict)
        ]
    except (ValueError, AttributeError, TypeError, httpx.ResponseNotRead):
        return []


_ADVICE = {
    "UNAUTHORIZED": "authentication required: give credentials (--src-creds-file/"
    "--dest-creds-file FILE, --creds-file for attach and gate, or AIRLOCK_SRC_CREDS/"
    "AIRLOCK_DEST_CREDS/AIRLOCK_CREDS) or run `docker login {host}`",
    "DENIED": "access denied: these credentials lack permission on {repo}; ask for the right"
    " (pull to read, push to write)",
    "NAME_UNKNOWN": "repository {repo} does not exist on {host}: check the name",
    "MANIFEST_UNKNOWN": "manifest unknown: check the tag or digest exists in {repo}",
    "BLOB_UNKNOWN": "blob unknown in {repo}: the registry lost a blob a manifest points to;"
    " re-push the image",
    "MANIFEST_BLOB_UNKNOWN": "the registry says a blob of this manifest is missing in {repo};"
    " retry the copy",
    "TOOMANYREQUESTS": "rate limited by {host}: wait and retry, or authenticate for a higher limit",
    "DIGEST_INVALID": "the registry rejected the content as not matching its digest; retry",
    "SIZE_INVALID": "the registry rejected the content size; retry",
    "MANIFEST_INVALID": "the registry rejected the manifest as invalid",
    "UNSUPPORTED": "the registry does not support this operation",
    "BLOB_UPLOAD_INVALID": "the registry rejected the upload; retry",
    "BLOB_UPLOAD_UNKNOWN": "the upload session expired; retry",
}


@functools.cache
def system_tls() -> ssl.SSLContext:
    """The machine's trust store (honours SSL_CERT_FILE/SSL_CERT_DIR), as docker and skopeo use.

    Built once per process (httpx's certifi default costs ~95 ms per client); verifying
    hostnames and certificates, as create_default_context() does.
    """
    return lazy_default_context()


def allowed_schemes(host: str, insecure: bool) -> list[str]:
    """Plain HTTP only for loopback (by name or address) or insecure hosts, HTTPS otherwise.

    Loopback registries are tried over plain HTTP first, as they nearly always are (an HTTPS one
    answers that with 400 and is tried over HTTPS next); no credentials are sent before the scheme
    is settled. Loopback is decided from the name as written, never by resolving it, so a DNS
    answer cannot downgrade a registry to plain HTTP.
    """
    if is_loopback(host):
        return ["http", "https"]
    return ["https", "http"] if insecure else ["https"]


class RegistryClient:
    """One registry host. Use as an async context manager (or call aclose)."""

    def __init__(
        self,
        registry: str,
        *,
        credentials: Credentials | None = None,
        docker_config: DockerConfig | None = None,
        insecure: bool = False,
        ca_bundle: str | None = None,
        retry: RetryPolicy | None = None,
        max_connections: int = 16,
        timeout: float = 60.0,
        chunk_size: int = MONOLITHIC_LIMIT,
    ):
        self.registry = registry
        self.host = api_host(registry)
        self.max_connections = max_connections
        self.referrers_api: bool | None = None  # learnt on first use; the fallback tag if not
        self.insecure = insecure
        self.retry = retry or RetryPolicy()
        self.chunk_size = chunk_size  # blobs above this are uploaded in PATCH chunks of this size
        self.requests: Counter[str] = Counter()  # method → count, for plans, benches and tests
        # Manifests read, by (repository, digest): a digest's bytes never change, and a hop reads
        # the same ones several times (its gates, then its copy). Tags are always read afresh.
        self._manifests: OrderedDict[tuple[str, str], tuple[bytes, str | None]] = OrderedDict()
        self._manifest_bytes = 0
        config = docker_config or DockerConfig()
        self.auth = RegistryAuth(
            credentials=(lambda: credentials)
            if credentials
            else (lambda: config.credentials(registry)),
            send_token_request=self._send_token_request,
        )
        verify: bool | ssl.SSLContext = system_tls()
        if insecure:
            verify = False
        elif ca_bundle:
            try:
                verify = ssl.create_default_context(cafile=ca_bundle)
            except (OSError, ssl.SSLError):
                raise BadInputError(
                    f"CA bundle {ca_bundle} cannot be read as PEM certificates; check the file"
                ) from None
        self._http = httpx.AsyncClient(
            verify=verify,
            timeout=httpx.Timeout(timeout, connect=10.0, pool=None),
            limits=httpx.Limits(
                max_connections=max_connections, max_keepalive_connections=max_connections
            ),
            headers={"User-Agent": f"airlock/{version()}"},
            event_hooks={"request": [self._count]},
        )
        self._base: str | None = None
        self._base_lock = asyncio.Lock()

    def __repr__(self) -> str:
        return f"RegistryClient({self.registry!r})"

    async def __aenter__(self) -> RegistryClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    async def _count(self, request: httpx.Request) -> None:
        self.requests[request.method] += 1

    async def _send_token_request(self, request: httpx.Request) -> httpx.Response:
        response = await self._http.send(request, auth=None)
        await response.aread()
        return response

    # ------------------------------------------------------------------ base URL and retries

    async def base_url(self) -> str:
        """Find the scheme: HTTPS first; plain HTTP only for loopback or insecure registries."""
        if self._base:
            return self._base
        async with self._base_lock:
            if self._base:
                return self._base
            schemes = allowed_schemes(self.host, self.insecure)
            for i, scheme in enumerate(schemes):
                another = i + 1 < len(schemes)
                url = f"{scheme}://{self.host}"
                try:
                    response, body = await self._ping(url, retry_transport=not another)
                except _NoAnswer as failure:
                    e = failure.error
                    if another and not isinstance(root_cause(e), ssl.SSLCertVerificationError):
                        continue
                    raise _connect_error(self.host, e) from None
                status = response.status_code
                if status == 400 and another:
                    continue  # plain HTTP sent to a TLS port
                if status >= 500:
                    raise self.error(response, f"ping {url}/v2/", "")
                if status not in (200, 401) or not _looks_like_registry(response, body):
                    kind = response.headers.get("content-type", "").split(";", 1)[0].strip()
                    raise RegistryError(
                        f"{url}/v2/ answered {status}{f' with {kind}' if kind else ''}, not the"
                        f" registry API: {self.host} does not look like an OCI registry; check"
                        " the host and port",
                        status=status,
                    )
                if status == 401:
                    self.auth.learn(response)
                self._base = url
                return url
            raise AssertionError("unreachable: the last scheme returns or raises")

    async def _ping(self, url: str, *, retry_transport: bool) -> tuple[httpx.Response, bytes]:
        """GET {url}/v2/ without credentials, and the start of its body; busy answers are retried
        within the policy, transport failures only with `retry_transport` (never for a scheme
        that is only being tried). A final transport failure is raised as _NoAnswer, whose httpx
        error base_url turns into scheme-aware advice."""

        def send() -> Awaitable[httpx.Response]:
            request = self._http.build_request("GET", f"{url}/v2/")
            return self._http.send(request, auth=None, stream=True)

        response = await self._answered(send, stream=True, retry_transport=retry_transport)
        try:
            return response, await _ping_body(response)
        except httpx.TransportError as e:
            raise _NoAnswer(e, retry=False) from None

    async def _with_retries(
        self,
        method: str,
        url: str,
        *,
        what: str,
        headers: dict[str, str] | None = None,
        content: bytes | None = None,
        stream: bool = False,
        follow_redirects: bool = False,
    ) -> httpx.Response:
        """Send an idempotent request, retrying transport errors, 429 and 5xx within the policy;
        a transport error that is final is raised as a one-line RegistryError."""

        def send() -> Awaitable[httpx.Response]:
            request = self._http.build_request(method, url, headers=headers, content=content)
            return self._http.send(
                request, auth=self.auth, stream=stream, follow_redirects=follow_redirects
            )

        try:
            return await self._answered(send, stream=stream)
        except _NoAnswer as e:
            raise _transport_error(what, e.error, e.attempts) from None

    async def _answered(
        self,
        send: Callable[[], Awaitable[httpx.Response]],
        *,
        stream: bool,
        retry_transport: bool = True,
    ) -> httpx.Response:
        """`send()` retried (registry/retry.py) until it is answered with a status that is not
        in RETRY_STATUSES, or the policy is spent: then the last answer is returned all the
        same (its body read, if streamed), for the caller's error to name its status. Raises
        _NoAnswer if the last attempt got no answer."""

        async def attempt() -> httpx.Response:
            try:
                response = await send()
            except httpx.TransportError as e:
                raise _NoAnswer(e, retry=retry_transport) from None
            if response.status_code in RETRY_STATUSES:
                raise _Busy(response)
            return response

        try:
            return await retrying(self.retry, attempt, on=(_NoAnswer, _Busy), on_retry=_release)
        except _Busy as e:
            if stream:
                await e.response.aread()
            return e.response

    def error(self, response: httpx.Response, what: str, repo: str) -> AirlockError:
        """A one-line error for an unexpected response, with the advice that fits its code."""
        status = response.status_code
        errors = _errors_of(response)
        code = (
            errors[0][0]
            if errors
            else {401: "UNAUTHORIZED", 403: "DENIED", 429: "TOOMANYREQUESTS"}.get(status, "")
        )
        advice = _ADVICE.get(code, "").format(host=self.host, repo=repo)
        if code == "UNAUTHORIZED" and self.auth.has_credentials():
            # Credentials were sent and still refused: they are wrong, or lack the right.
            action = "pull" if response.request.method in ("GET", "HEAD") else "push"
            advice = (
                f"denied: the credentials for {self.host} are wrong or may not {action} {repo};"
                f" check them, or ask for {action} rights"
            )
        if not advice:
            if status >= 500:
                advice = f"the registry failed ({status}); retry later"
            elif status == 404:
                advice = f"not found in {repo}"
            else:
                detail = f" ({errors[0][1]})" if errors and errors[0][1] else ""
                advice = f"unexpected answer {status}{detail}"
        message = f"{what}: {advice}"
        if code in ("UNAUTHORIZED", "DENIED") or status in (401, 403):
            return AuthError(message, status=status, code=code)
        read = response.request.method in ("GET", "HEAD")
        if code in ("NAME_UNKNOWN", "MANIFEST_UNKNOWN") or (status == 404 and not code and read):
            return NotFound(message)
        return RegistryError(message, status=status, code=code or None)

    async def _url(self, path: str) -> str:
        return f"{await self.base_url()}{path}"

    async def _resolve(self, location: str, extra: dict[str, str] | None = None) -> str:
        """Resolve an upload Location and merge params into its query (keeping _state)."""
        url = httpx.URL(await self.base_url()).join(location)
        if extra:
            query = url.query.decode()
            url = url.copy_with(
                query=(((query + "&") if query else "") + urlencode(extra)).encode()
            )
        return str(url)

    # ------------------------------------------------------------------ forwarding

    async def forward(
        self,
        method: str,
        path: str,
        *,
        headers: dict[str, str],
        content: bytes | AsyncIterator[bytes] | None = None,
        follow_redirects: bool = False,
    ) -> httpx.Response:
        """Send a request as a gateway passes one on: authenticated for this registry, the
        response streamed (the caller closes it). A request that can be sent again (no body, or
        bytes) is retried like any other; a streamed body cannot be, and is sent once."""
        url = await self._url(path)
        what = f"{method} {self.registry}{path.split('?', 1)[0]}"
        if content is None or isinstance(content, bytes):
            return await self._with_retries(
                method,
                url,
                what=what,
                headers=headers,
                content=content,
                stream=True,
                follow_redirects=follow_redirects,
            )
        request = self._http.build_request(method, url, headers=headers, content=content)
        try:
            return await self._http.send(request, auth=self.auth, stream=True)
        except httpx.TransportError as e:
            raise _transport_error(what, e, 1) from None

    # ------------------------------------------------------------------ listings

    async def list_tags(self, repo: str) -> list[str]:
        """Every tag of `repo` (sorted; [] for a repository that does not exist)."""
        return sorted(await self._paged(f"/v2/{repo}/tags/list", "tags", repo))

    async def catalog(self) -> list[str]:
        """Every repository the credentials may list (sorted)."""
        return sorted(await self._paged("/v2/_catalog?n=1000", "repositories", "_catalog"))

    async def _paged(self, path: str, key: str, repo: str) -> list[str]:
        """A listing followed across `Link: <…>; rel="next"` pages (at most 1000 of them)."""
        url, out = await self._url(path), []
        what = f"GET {self.registry}/{repo} {key}"
        for _ in range(1000):
            response = await self._with_retries("GET", url, what=what)
            if response.status_code == 404 and key == "tags":
                return []
            if response.status_code != 200:
                raise self.error(response, what, repo)
            try:
                items = response.json().get(key) or []
            except (ValueError, AttributeError):
                raise RegistryError(f"{what}: the registry answered something not JSON") from None
            out.extend(i for i in items if isinstance(i, str))
            following = response.links.get("next", {}).get("url")
            if not following:
                return out
            url = str(httpx.URL(url).join(following))
        raise RegistryError(f"{what}: more than 1000 pages; the registry keeps paginating")

    # ------------------------------------------------------------------ manifests

    async def head_manifest(self, repo: str, ref: str) -> Descriptor | None:
        """The descriptor of repo:ref, or None if it does not exist."""
        what = _what("HEAD", self.registry, repo, ref)
        response = await self._with_retries(
            "HEAD",
            await self._url(f"/v2/{repo}/manifests/{ref}"),
            what=what,
            headers={"Accept": mt.ACCEPT},
        )
        if response.status_code == 404:
            return None
        if response.status_code != 200:
            raise self.error(response, what, repo)
        digest = response.headers.get("docker-content-digest")
        media_type = response.headers.get("content-type", "").split(";", 1)[0].strip()
        size = response.headers.get("content-length")
        if not digest or not size or not size.isdigit() or media_type not in mt.MANIFESTS:
            # Some registries omit the digest on HEAD: read the manifest instead.
            manifest = await self.get_manifest(repo, ref)
            return manifest.descriptor
        return Descriptor(media_type, digest, int(size))

    async def get_manifest(self, repo: str, ref: str) -> Manifest:
        """Fetch and parse repo:ref, verified against the digest asked for and the registry's."""
        raw, content_type, digest = await self.get_manifest_bytes(repo, ref)
        return parse_manifest(raw, content_type, digest, _what("GET", self.registry, repo, ref))

    async def get_manifest_bytes(self, repo: str, ref: str) -> tuple[bytes, str | None, str]:
        """The verified bytes of repo:ref, with their Content-Type and digest, unparsed.

        A body cut off or garbled in transit is fetched again, within the retry policy.
        """
        if (repo, ref) in self._manifests:
            raw, content_type = self._manifests[(repo, ref)]
            return raw, content_type, ref
        what = _what("GET", self.registry, repo, ref)

        async def attempt() -> tuple[bytes, str | None, str]:
            raw, headers = await self._read_manifest(repo, ref, what)
            return raw, headers.get("content-type"), self._verified_digest(raw, headers, ref, what)

        try:
            raw, content_type, digest = await retrying(
                self.retry, attempt, on=(_CutOff, DigestMismatch)
            )
        except _CutOff as e:
            raise _transport_error(what, e.error, e.attempts) from None
        self._keep(repo, digest, raw, content_type)
        return raw, content_type, digest

    def _keep(self, repo: str, digest: str, raw: bytes, content_type: str | None) -> None:
        """Remember verified bytes under their digest, within MANIFEST_CACHE_BYTES."""
        if (repo, digest) in self._manifests or len(raw) > MANIFEST_CACHE_BYTES // 4:
            return
        self._manifests[(repo, digest)] = (raw, content_type)
        self._manifest_bytes += len(raw)
        while self._manifest_bytes > MANIFEST_CACHE_BYTES:
            old, _ = self._manifests.popitem(last=False)[1]
            self._manifest_bytes -= len(old)

    async def _read_manifest(self, repo: str, ref: str, what: str) -> tuple[bytes, httpx.Headers]:
        try:
            return await self._read_manifest_body(repo, ref, what)
        except httpx.TransportError as e:  # the request itself had its retries: this is the body
            raise _CutOff(e) from None

    async def _read_manifest_body(
        self, repo: str, ref: str, what: str
    ) -> tuple[bytes, httpx.Headers]:
        path = f"/v2/{repo}/manifests/{ref}"
        async with self._get_stream(path, what, repo, headers={"Accept": mt.ACCEPT}) as response:
            length = response.headers.get("content-length")
            if length and length.isdigit() and int(length) > MAX_MANIFEST_SIZE:
                raise UnsupportedContent(
                    f"{what}: manifest is {length} bytes, over the {MAX_MANIFEST_SIZE} byte limit"
                )
            raw = bytearray()
            async for chunk in response.aiter_raw():
                raw += chunk
                if len(raw) > MAX_MANIFEST_SIZE:
                    raise UnsupportedContent(
                        f"{what}: manifest is over the {MAX_MANIFEST_SIZE} byte limit"
                    )
            return bytes(raw), response.headers

    def _verified_digest(self, raw: bytes, headers: httpx.Headers, ref: str, what: str) -> str:
        header_digest = headers.get("docker-content-digest")
        if header_digest:
            try:
                validate_digest(header_digest)
            except InvalidReference:
                raise RegistryError(
                    f"{what}: the registry sent a malformed Docker-Content-Digest header"
                ) from None
        # By digest: the digest asked for. By tag: the registry's header if any, else our own.
        digest = ref if ":" in ref else header_digest or digest_of(raw)
        verify_digest(raw, digest, what)
        return digest

    async def put_manifest(self, repo: str, ref: str, manifest: Manifest) -> httpx.Headers:
        """PUT the manifest's exact bytes under ref (a tag or its digest); return the headers."""
        what = _what("PUT", self.registry, repo, ref)
        response = await self._with_retries(
            "PUT",
            await self._url(f"/v2/{repo}/manifests/{ref}"),
            what=what,
            headers={"Content-Type": manifest.media_type},
            content=manifest.raw,
        )
        if response.status_code not in (200, 201):
            raise self.error(response, what, repo)
        got = response.headers.get("docker-content-digest")
        if got and got != manifest.digest:
            raise DigestMismatch(
                f"{what}: registry stored the manifest as {got}, expected {manifest.digest}"
            )
        return response.headers

    async def get_referrers(
        self, repo: str, digest: str
    ) -> tuple[list[Descriptor], list[str]] | None:
        """Referrers of digest through the OCI referrers API, all pages, with the problems found
        in the listing; None where the registry has no such API (404, 400, 405 or no index)."""
        if self.referrers_api is False:
            return None
        what = f"GET {self.registry}/{repo} referrers of {digest}"
        url = await self._url(f"/v2/{repo}/referrers/{digest}")
        found: list[Descriptor] = []
        problems: list[str] = []
        for page in range(MAX_PAGES):
            response = await self._with_retries(
                "GET", url, what=what, headers={"Accept": mt.OCI_INDEX}
            )
            content_type = response.headers.get("content-type", "").split(";", 1)[0].strip()
            if page == 0 and (
                response.status_code in (400, 404, 405)
                or (response.status_code == 200 and content_type != mt.OCI_INDEX)
            ):
                # distribution 2.8 and others without the API answer a plain 404; once the API
                # has answered, a 404 means only that this repository is unknown.
                self.referrers_api = self.referrers_api or False
                return None
            if response.status_code != 200:
                raise self.error(response, what, repo)
            try:
                doc = response.json()
            except ValueError:
                raise RegistryError(
                    f"{what}: the referrers API answered with invalid JSON"
                ) from None
            descriptors, bad = index_entries(doc, what)
            found += descriptors
            problems += bad
            if len(found) + len(problems) > MAX_REFERRERS:  # each page may be under it
                raise UnsupportedContent(
                    f"{what}: lists more than {MAX_REFERRERS} referrers, over the limit of"
                    f" {MAX_REFERRERS} per digest; delete old ones (reports, signatures)"
                )
            self.referrers_api = True
            following = response.links.get("next", {}).get("url")
            if not following:
                return found, problems
            url = str(response.url.join(following))
        raise RegistryError(f"{what}: more than {MAX_PAGES} pages of referrers; giving up")

    # ------------------------------------------------------------------ blobs

    async def blob_size(self, repo: str, digest: str) -> int | None:
        """Size of the blob if repo has it, else None."""
        what = f"HEAD blob {self.registry}/{repo}@{digest}"
        response = await self._with_retries(
            "HEAD",
            await self._url(f"/v2/{repo}/blobs/{digest}"),
            what=what,
            follow_redirects=True,
        )
        if response.status_code == 404:
            return None
        if response.status_code != 200:
            raise self.error(response, what, repo)
        length = response.headers.get("content-length", "")
        return int(length) if length.isdigit() else 0

    async def mount_blob(self, repo: str, digest: str, from_repo: str) -> MountResult:
        """Cross-repository mount. 201: done. 202: the registry opened an upload session instead."""
        what = f"mount {digest} from {from_repo} into {self.registry}/{repo}"
        query = urlencode({"mount": digest, "from": from_repo})
        response = await self._with_retries(
            "POST",
            await self._url(f"/v2/{repo}/blobs/uploads/?{query}"),
            what=what,
            content=b"",
        )
        if response.status_code == 201:
            return MountResult(True)
        if response.status_code == 202 and response.headers.get("location"):
            return MountResult(False, response.headers["location"])
        if response.status_code in (401, 403):
            # Credentials that may push here but not read the source: stream instead.
            return MountResult(False)
        raise self.error(response, what, repo)

    async def start_upload(self, repo: str) -> str:
        what = f"start upload to {self.registry}/{repo}"
        response = await self._with_retries(
            "POST", await self._url(f"/v2/{repo}/blobs/uploads/"), what=what, content=b""
        )
        if response.status_code != 202 or not response.headers.get("location"):
            raise self.error(response, what, repo)
        return response.headers["location"]

    async def cancel_upload(self, location: str) -> None:
        """Best effort: a session left open expires on its own, so errors are ignored."""
        try:
            response = await self._http.send(
                self._http.build_request("DELETE", await self._resolve(location)), auth=self.auth
            )
            await response.aclose()
        except (httpx.HTTPError, AirlockError):
            pass

    @asynccontextmanager
    async def open_blob(self, repo: str, desc: Descriptor) -> AsyncIterator[AsyncIterator[bytes]]:
        """Stream a blob, checking size and digest as it goes; the last chunk waits for the hash."""
        what = f"GET blob {self.registry}/{repo}@{desc.digest}"
        path = f"/v2/{repo}/blobs/{desc.digest}"
        async with self._get_stream(path, what, repo, follow_redirects=True) as response:
            length = response.headers.get("content-length")
            if length and length.isdigit() and int(length) != desc.size:
                raise DigestMismatch(
                    f"{what}: registry offers {length} bytes, the manifest says {desc.size};"
                    " the source image is inconsistent"
                )
            yield _verified(response, desc, what)

    async def read_blob(self, repo: str, desc: Descriptor) -> bytes:
        """A small blob (a report, a record, a config) read whole and verified. A body cut off
        midway is read again, as any failed GET would be: a gate must not refuse, nor a hop
        fail, because one connection dropped."""

        async def attempt() -> bytes:
            data = bytearray()
            async with self.open_blob(repo, desc) as chunks:
                async for chunk in chunks:
                    data += chunk
            return bytes(data)

        return await retrying(self.retry, attempt, on=BlobInterrupted)

    @asynccontextmanager
    async def _get_stream(
        self, path: str, what: str, repo: str, **kw: Any
    ) -> AsyncIterator[httpx.Response]:
        """GET with retries, body not yet read; anything but 200 becomes a one-line error."""
        response = await self._with_retries(
            "GET", await self._url(path), what=what, stream=True, **kw
        )
        try:
            if response.status_code != 200:
                await response.aread()
                raise self.error(response, what, repo)
            yield response
        finally:
            await response.aclose()

    async def upload_blob(
        self,
        repo: str,
        desc: Descriptor,
        chunks: AsyncIterator[bytes],
        location: str | None = None,
    ) -> None:
        """Upload a streamed blob: one PUT with Content-Length, or PATCH chunks above chunk_size."""
        what = f"upload {desc.digest} to {self.registry}/{repo}"
        location = location or await self.start_upload(repo)
        try:
            if desc.size > self.chunk_size:
                location = await self._patch_chunks(
                    repo, location, desc, chunks, self.chunk_size, what
                )
                body: AsyncIterator[bytes] | bytes = b""
                headers = {"Content-Length": "0"}
            else:
                body = chunks
                headers = {
                    "Content-Length": str(desc.size),
                    "Content-Type": "application/octet-stream",
                }
            url = await self._resolve(location, {"digest": desc.digest})
            request = self._http.build_request("PUT", url, headers=headers, content=body)
            response = await self._http.send(request, auth=self.auth)
        except httpx.TransportError as e:
            await self.cancel_upload(location)
            raise _transport_error(what, e, 1) from None
        except BaseException:
            await self.cancel_upload(location)
            raise
        if response.status_code != 201:
            await self.cancel_upload(location)
            raise self.error(response, what, repo)
        got = response.headers.get("docker-content-digest")
        if got and got != desc.digest:
            raise DigestMismatch(f"{what}: registry stored the blob as {got}")

    async def _patch_chunks(
        self,
        repo: str,
        location: str,
        desc: Descriptor,
        chunks: AsyncIterator[bytes],
        chunk_size: int,
        what: str,
    ) -> str:
        source = _Rechunker(chunks)
        offset = 0
        while offset < desc.size:
            n = min(chunk_size, desc.size - offset)
            headers = {
                "Content-Type": "application/octet-stream",
                "Content-Length": str(n),
                "Content-Range": f"{offset}-{offset + n - 1}",
            }
            request = self._http.build_request(
                "PATCH", await self._resolve(location), headers=headers, content=source.take(n)
            )
            response = await self._http.send(request, auth=self.auth)
            if response.status_code != 202 or not response.headers.get("location"):
                raise self.error(response, what, repo)
            location = response.headers["location"]
            offset += n
        return location


class _Rechunker:
    """Cut one byte stream into consecutive sub-streams of given lengths, without buffering."""

    def __init__(self, chunks: AsyncIterator[bytes]):
        self._it = aiter(chunks)
        self._pending = b""

    async def take(self, n: int) -> AsyncIterator[bytes]:
        while n > 0:
            if not self._pending:
                self._pending = await anext(self._it)
            piece, self._pending = self._pending[:n], self._pending[n:]
            n -= len(piece)
            yield piece


async def _verified(response: httpx.Response, desc: Descriptor, what: str) -> AsyncIterator[bytes]:
    algorithm, expected_hex = desc.digest.split(":", 1)
    hasher = hashlib.new(algorithm)
    seen = 0
    held: bytes | None = None
    try:
        # As the socket gives it (after tune_http, up to 1 MiB per recv()): httpx's re-chunking
        # to a fixed size copies every byte through a BytesIO (~15 % of a copy's CPU).
        async for chunk in response.aiter_raw():
            if held is not None:
                yield held
            seen += len(chunk)
            if seen > desc.size:
                raise DigestMismatch(
                    f"{what}: blob is longer than its descriptor's {desc.size} bytes"
                )
            hasher.update(chunk)
            held = chunk
    except httpx.TransportError as e:
        raise BlobInterrupted(str(_transport_error(what, e, 1))) from None
    if seen != desc.size:
        raise DigestMismatch(f"{what}: blob ended after {seen} of {desc.size} bytes")
    if hasher.hexdigest() != expected_hex:
        raise DigestMismatch(
            f"{what}: blob content hashes to {algorithm}:{hasher.hexdigest()}, expected"
            f" {desc.digest}; the source registry holds corrupt data"
        )
    if held is not None:
        yield held


def _transport_error(what: str, e: BaseException, attempts: int) -> RegistryError:
    """A request failed in transport for good: one line, temporary unless DNS or TLS said no."""
    temporary = transient(e)
    if no_such_host(e):
        return RegistryError(
            f"{what}: cannot resolve the registry host; check the name", temporary=temporary
        )
    kind = type(e).__name__
    tries = f" after {attempts} attempts" if attempts > 1 else ""
    if isinstance(e, httpx.ConnectError):
        message = f"{what}: cannot connect{tries} ({kind}); is the registry running?"
    elif isinstance(e, httpx.TimeoutException):
        message = f"{what}: timed out{tries} ({kind}); retry, or check the network"
    else:
        message = f"{what}: connection failed{tries} ({kind}); retry"
    return RegistryError(message, temporary=temporary)


# OpenSSL's reasons for a handshake answered by something that does not speak TLS
_NOT_TLS = frozenset({"WRONG_VERSION_NUMBER", "RECORD_LAYER_FAILURE"})


def _connect_error(host: str, e: BaseException) -> RegistryError:
    """The ping failed for good: say why in terms of the scheme, with what to do."""
    cause = root_cause(e)
    temporary = transient(e)
    if no_such_host(e):
        message = f"cannot resolve registry host {host}: check the name"
    elif isinstance(cause, ssl.SSLCertVerificationError):
        message = (
            f"TLS certificate of {host} is not trusted: pass --ca-bundle FILE, or --insecure"
            f" {host} for a test registry"
        )
    elif isinstance(cause, ssl.SSLError) and cause.reason in _NOT_TLS:
        message = (
            f"{host} does not speak HTTPS: plain HTTP is allowed only for loopback registries or"
            f" with --insecure {host}"
        )
    elif isinstance(e, httpx.TimeoutException):
        message = f"{host} did not answer in time: check the host, port and network"
    else:
        message = f"cannot connect to {host}: is the registry running and the port right?"
    return RegistryError(message, temporary=temporary)
