"""One exception family for everything registry/ raises.

Every message is one line that says what failed and what to do about it. The `exit_code` follows
the CLI contract in docs/cli.md: 1 refused, 2 bad input, 3 registry or network failure.
"""

from __future__ import annotations

from registry.secrets import scrub

EXIT_REFUSED = 1
EXIT_BAD_INPUT = 2
EXIT_REGISTRY = 3

# Answers that say "not now" rather than "no": sending the same request again may succeed.
RETRY_STATUSES = frozenset({408, 429, 500, 502, 503, 504})


class AirlockError(Exception):
    """Base of every error airlock reports to a user. Its message never holds a secret airlock
    knows (registry/secrets.py), whatever text it was made from."""

    exit_code = EXIT_REGISTRY

    def __init__(self, message: str = ""):
        super().__init__(scrub(str(message)))


class BadInputError(AirlockError):
    """Something the user gave us is wrong: a reference, a flag, a credential string."""

    exit_code = EXIT_BAD_INPUT


class InvalidReference(BadInputError):
    """A malformed image reference or digest."""


class UnsupportedContent(BadInputError):
    """The source holds something airlock will not copy: unknown media type, oversized manifest."""


class NotFound(BadInputError):
    """The reference names nothing: unknown repository, tag or digest."""


class RefusedError(AirlockError):
    """airlock refused on purpose, e.g. --no-clobber would move a tag."""

    exit_code = EXIT_REFUSED


class RegistryError(AirlockError):
    """The registry or the network failed, after retries where retrying made sense."""

    _temporary: bool | None = None  # a subclass's answer for `temporary`; None: from the status

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        code: str | None = None,
        temporary: bool | None = None,
        retry_after: float | None = None,
    ):
        super().__init__(message)
        self.status = status
        self.code = code
        if temporary is not None:
            self._temporary = temporary
        self.retry_after = retry_after  # seconds the registry asked us to wait (Retry-After)
        self.attempts = 1  # how many times it was tried before it was raised (registry/retry.py)

    @property
    def temporary(self) -> bool:
        """Whether doing the same again may succeed, as go-containerregistry's
        transport.Error.Temporary(): a status in RETRY_STATUSES, an upload session that expired,
        a connection that failed or a body cut off or garbled in transit. registry/retry.py
        retries exactly these."""
        if self._temporary is not None:
            return self._temporary
        return self.status in RETRY_STATUSES or self.code == "BLOB_UPLOAD_UNKNOWN"


class AuthError(RegistryError):
    """401/403: missing, wrong or insufficient credentials."""


class BlobInterrupted(RegistryError):
    """A body (a blob's, a manifest's) stopped arriving midway (reset, closed): reading it again
    may work."""

    _temporary = True


class DigestMismatch(RegistryError):
    """Bytes received do not hash to the digest they were asked for: they may have been garbled
    in transit, so reading them again may work."""

    _temporary = True
