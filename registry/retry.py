"""The one retry path of registry/: a RetryPolicy and `retrying`, which repeats an operation while
the RegistryError it raises says it is temporary (registry/errors.py), within the policy's
attempts and total time, waiting with exponential backoff, full jitter and Retry-After.

Whether a failure is temporary is decided where it happens, by status and exception type, never
by message text: `transient` tells a connection worth trying again from a name that does not
resolve or a TLS handshake refused.
"""

from __future__ import annotations

import asyncio
import email.utils
import random
import socket
import ssl
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

from registry.errors import RegistryError

T = TypeVar("T")

# getaddrinfo's "no such name" answers; EAI_AGAIN (a resolver that did not answer) is transient.
_NO_SUCH_HOST = frozenset(
    getattr(socket, name) for name in ("EAI_NONAME", "EAI_NODATA") if hasattr(socket, name)
)


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    attempts: int = 5
    base_delay: float = 0.25
    max_delay: float = 8.0
    total: float = 120.0  # seconds one operation may spend retrying, Retry-After included

    def backoff(self, attempt: int) -> float:
        """Full jitter: uniform in [0, min(max, base * 2^attempt)]."""
        return random.uniform(0, min(self.max_delay, self.base_delay * 2**attempt))  # noqa: S311


async def retrying(
    policy: RetryPolicy,
    attempt: Callable[[], Awaitable[T]],
    *,
    on: type[RegistryError] | tuple[type[RegistryError], ...] = RegistryError,
    on_retry: Callable[[RegistryError], Awaitable[None]] | None = None,
) -> T:
    """`attempt()` until it returns, or raises an error (of the kinds `on`; others pass through)
    that is not temporary, or the policy is spent: `policy.attempts` tries, or a wait (backoff,
    or the error's Retry-After if longer) that would end past `policy.total` seconds from the
    start. The last error is raised with `attempts` set to the number of tries; `on_retry` is
    awaited with each error that will be retried, before the wait (to release what it holds)."""
    deadline = time.monotonic() + policy.total
    tries = 0
    while True:
        tries += 1
        try:
            return await attempt()
        except on as e:
            delay = max(e.retry_after or 0.0, policy.backoff(tries))
            if not e.temporary or tries >= policy.attempts or time.monotonic() + delay > deadline:
                e.attempts = tries
                raise
            if on_retry is not None:
                await on_retry(e)
            await asyncio.sleep(delay)


def retry_after(value: str | None) -> float | None:
    """Seconds a Retry-After header value asks for (delta-seconds or an HTTP date), or None."""
    if not value:
        return None
    try:
        return max(float(value), 0.0)
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(when.timestamp() - time.time(), 0.0)


def root_cause(e: BaseException) -> BaseException:
    """What failed beneath httpx's and httpcore's exceptions, which are raised while handling
    what they map (as __cause__, or only as __context__): a socket.gaierror, an ssl.SSLError, an
    OSError, anyio's stream errors…"""
    while type(e).__module__.partition(".")[0] in ("httpx", "httpcore"):
        below = e.__cause__ or e.__context__
        if below is None:
            break
        e = below
    return e


def no_such_host(e: BaseException) -> bool:
    """The registry's name does not resolve (not: the resolver did not answer)."""
    cause = root_cause(e)
    return isinstance(cause, socket.gaierror) and cause.errno in _NO_SUCH_HOST


def tls_refused(e: BaseException) -> bool:
    """The TLS handshake failed: an untrusted certificate, or no TLS on the other end."""
    return isinstance(root_cause(e), ssl.SSLError)


def transient(e: BaseException) -> bool:
    """Whether a request that failed in transport (refused, reset, timed out) may succeed if
    sent again: not when the name does not resolve or TLS refused."""
    return not (no_such_host(e) or tls_refused(e))
