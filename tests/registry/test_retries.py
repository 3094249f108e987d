"""Retries and failure handling of registry.client / registry.copy against a real registry behind
a fault-injecting proxy. Images are seeded directly (not through the proxy); results are read
back directly with the independent Pusher."""

from __future__ import annotations

import time

import pytest

from registry.copy import CopyResult, TransferLimits, copy_image
from registry.errors import EXIT_REGISTRY, BadInputError, DigestMismatch, RegistryError
from registry.reference import parse
from tests.support.faultproxy import Fault
from tests.support.images import Image, image, multi_platform
from tests.support.registries import FAST_RETRY, ProxiedReg, Reg

pytestmark = pytest.mark.anyio

ATTEMPTS = FAST_RETRY.attempts
MANIFEST_TAG = r"^/v2/dev/app/manifests/1\.0$"


def _blob_path(digest: str) -> str:
    return f"^/v2/dev/app/blobs/{digest}$"


def _upload_put(digest: str) -> str:
    """Matches the final PUT of an upload of `digest` (the digest sits in the query)."""
    return r"^/v2/prod/app/blobs/uploads/.*digest=sha256(:|%3A)" + digest.split(":", 1)[1]


def _assert_one_line_registry_error(e: BaseException) -> None:
    assert isinstance(e, RegistryError), repr(e)
    assert e.exit_code == EXIT_REGISTRY
    assert "\n" not in str(e)
    assert "retry" in str(e).lower(), f"the message should say what to do: {e}"


def _seed(reg: Reg, img: Image) -> None:
    reg.pusher.push("dev/app", img, "1.0")


async def _copy(
    src: Reg, dst: Reg, limits: TransferLimits | None = None, **client_kw: object
) -> CopyResult:
    async with src.client(**client_kw) as a, dst.client(**client_kw) as b:
        return await copy_image(
            a,
            parse(f"{src.host}/dev/app:1.0"),
            b,
            parse(f"{dst.host}/prod/app", default_tag=None),
            limits=limits,
        )


def _assert_no_tag(reg: Reg) -> None:
    assert reg.pusher.digest("prod/app", "1.0") is None
    assert reg.pusher.tags("prod/app") == []


# ------------------------------------------------------------------ the proxy itself


async def test_proxy_passes_a_copy_through_unchanged(
    proxied_registry: ProxiedReg, registry2: Reg
) -> None:
    """Sanity: without faults both sides work through the proxy, uploads included (Location)."""
    img = multi_platform("passthrough", layer_size=200_000)
    registry2.pusher.push("dev/app", img, "1.0")
    result = await _copy(registry2, proxied_registry)
    assert proxied_registry.pusher.digest("prod/app", "1.0") == img.digest
    assert result.blobs_streamed == 5
    assert proxied_registry.faults.count("PUT", r"^/v2/prod/app/blobs/uploads/") == 5
    assert all(s.status is not None and s.status < 500 for s in proxied_registry.faults.seen)


# ------------------------------------------------------------------ statuses and Retry-After


async def test_manifest_get_503_once_then_success(proxied_registry: ProxiedReg) -> None:
    img = image("503-once")
    _seed(proxied_registry, img)
    proxied_registry.faults.add(Fault("GET", MANIFEST_TAG, status=503))
    async with proxied_registry.client() as client:
        manifest = await client.get_manifest("dev/app", "1.0")
    assert manifest.digest == img.digest
    assert [s.status for s in proxied_registry.faults.requests("GET", MANIFEST_TAG)] == [503, 200]


async def test_429_retry_after_is_honoured(proxied_registry: ProxiedReg) -> None:
    img = image("429")
    _seed(proxied_registry, img)
    proxied_registry.faults.add(Fault("GET", MANIFEST_TAG, status=429, retry_after="1"))
    started = time.monotonic()
    async with proxied_registry.client() as client:  # FAST_RETRY backs off at most 0.05 s
        manifest = await client.get_manifest("dev/app", "1.0")
    assert manifest.digest == img.digest
    assert time.monotonic() - started >= 0.9
    first, second = proxied_registry.faults.requests("GET", MANIFEST_TAG)
    assert (first.status, second.status) == (429, 200)
    assert second.at - first.at >= 0.9, "the retry did not wait for Retry-After: 1"


async def test_retry_after_beyond_the_budget_fails_at_once(proxied_registry: ProxiedReg) -> None:
    _seed(proxied_registry, image("429-long"))
    proxied_registry.faults.add(Fault("GET", MANIFEST_TAG, status=429, retry_after="3600"))
    async with proxied_registry.client() as client:
        with pytest.raises(RegistryError) as caught:
            await client.get_manifest("dev/app", "1.0")
    _assert_one_line_registry_error(caught.value)
    assert "rate limited" in str(caught.value)
    assert proxied_registry.faults.count("GET", MANIFEST_TAG) == 1


async def test_persistent_503_fails_after_exactly_attempts(proxied_registry: ProxiedReg) -> None:
    _seed(proxied_registry, image("503-always"))
    proxied_registry.faults.add(Fault("GET", MANIFEST_TAG, status=503, times=None))
    async with proxied_registry.client() as client:
        with pytest.raises(RegistryError) as caught:
            await client.get_manifest("dev/app", "1.0")
    _assert_one_line_registry_error(caught.value)
    assert caught.value.status == 503
    assert "503" in str(caught.value)
    assert proxied_registry.faults.count("GET", MANIFEST_TAG) == ATTEMPTS


async def test_manifest_put_503_once_is_retried(
    proxied_registry: ProxiedReg, registry2: Reg
) -> None:
    img = image("put-503")
    registry2.pusher.push("dev/app", img, "1.0")
    put_tag = r"^/v2/prod/app/manifests/1\.0$"
    proxied_registry.faults.add(Fault("PUT", put_tag, status=503))
    await _copy(registry2, proxied_registry)
    assert proxied_registry.pusher.digest("prod/app", "1.0") == img.digest
    assert [s.status for s in proxied_registry.faults.requests("PUT", put_tag)] == [503, 201]


# ------------------------------------------------------------------ broken connections


async def test_dropped_connection_is_retried(proxied_registry: ProxiedReg) -> None:
    img = image("drop")
    _seed(proxied_registry, img)
    proxied_registry.faults.add(Fault("GET", MANIFEST_TAG, drop=True))
    async with proxied_registry.client() as client:
        manifest = await client.get_manifest("dev/app", "1.0")
    assert manifest.digest == img.digest
    assert [s.status for s in proxied_registry.faults.requests("GET", MANIFEST_TAG)] == [None, 200]


async def test_latency_beyond_the_timeout_is_retried(proxied_registry: ProxiedReg) -> None:
    img = image("latency")
    _seed(proxied_registry, img)
    proxied_registry.faults.add(Fault("GET", MANIFEST_TAG, delay=30))
    async with proxied_registry.client(timeout=0.5) as client:
        manifest = await client.get_manifest("dev/app", "1.0")
    assert manifest.digest == img.digest
    assert proxied_registry.faults.count("GET", MANIFEST_TAG) == 2


async def test_reset_mid_blob_is_retried_and_the_copy_completes(
    proxied_registry: ProxiedReg, registry2: Reg
) -> None:
    img = multi_platform("reset", layer_size=256 * 1024)
    _seed(proxied_registry, img)
    base = img.children[0].blobs[1]  # the layer both platforms share
    proxied_registry.faults.add(Fault("GET", _blob_path(base.digest), reset_after=100_000))
    result = await _copy(proxied_registry, registry2)
    assert registry2.pusher.digest("prod/app", "1.0") == img.digest
    assert registry2.pusher.blob("prod/app", base.digest) == base.data
    assert result.blobs_streamed == 5
    gets = proxied_registry.faults.requests("GET", _blob_path(base.digest))
    assert len(gets) == 2 and gets[0].fault is not None and gets[1].fault is None


async def test_reset_every_time_fails_and_leaves_no_tag(
    proxied_registry: ProxiedReg, registry2: Reg
) -> None:
    img = image("reset-always", layer_size=64 * 1024)
    _seed(proxied_registry, img)
    layer = img.blobs[1]
    proxied_registry.faults.add(
        Fault("GET", _blob_path(layer.digest), reset_after=1000, times=None)
    )
    with pytest.raises(RegistryError) as caught:
        await _copy(proxied_registry, registry2)
    _assert_one_line_registry_error(caught.value)
    assert layer.digest in str(caught.value)
    assert proxied_registry.faults.count("GET", _blob_path(layer.digest)) == ATTEMPTS
    _assert_no_tag(registry2)


async def test_stall_after_headers_is_retried(proxied_registry: ProxiedReg, registry2: Reg) -> None:
    img = image("stall")
    _seed(proxied_registry, img)
    layer = img.blobs[1]
    proxied_registry.faults.add(Fault("GET", _blob_path(layer.digest), stall=30))
    await _copy(proxied_registry, registry2, timeout=0.5)
    assert registry2.pusher.digest("prod/app", "1.0") == img.digest
    assert proxied_registry.faults.count("GET", _blob_path(layer.digest)) == 2


# ------------------------------------------------------------------ corrupt and short bodies


async def test_corrupt_blob_fails_with_digest_mismatch_and_no_tag(
    proxied_registry: ProxiedReg, registry2: Reg
) -> None:
    img = multi_platform("corrupt")
    _seed(proxied_registry, img)
    layer = img.children[1].blobs[2]  # the arm64 platform's own layer
    proxied_registry.faults.add(Fault("GET", _blob_path(layer.digest), corrupt_at=1234, times=None))
    with pytest.raises(DigestMismatch) as caught:
        await _copy(proxied_registry, registry2)
    assert caught.value.exit_code == EXIT_REGISTRY
    assert "\n" not in str(caught.value) and layer.digest in str(caught.value)
    assert proxied_registry.faults.count("GET", _blob_path(layer.digest)) == ATTEMPTS
    _assert_no_tag(registry2)
    assert registry2.pusher.blob("prod/app", layer.digest) is None, "a corrupt blob was stored"


@pytest.mark.parametrize("which", ["root-by-tag", "child-by-digest"])
@pytest.mark.parametrize("declared", [False, True], ids=["eof", "short-content-length"])
async def test_truncated_manifest_fails_cleanly(
    proxied_registry: ProxiedReg, registry2: Reg, which: str, declared: bool
) -> None:
    img = multi_platform("truncated")
    _seed(proxied_registry, img)
    path = (
        MANIFEST_TAG
        if which == "root-by-tag"
        else f"^/v2/dev/app/manifests/{img.children[0].digest}$"
    )
    proxied_registry.faults.add(
        Fault("GET", path, truncate_after=40, declare_truncated=declared, times=None)
    )
    with pytest.raises(RegistryError) as caught:
        await _copy(proxied_registry, registry2)
    _assert_one_line_registry_error(caught.value)
    if declared:  # a complete-looking short body can only be caught by its digest
        assert isinstance(caught.value, DigestMismatch)
    _assert_no_tag(registry2)


async def test_one_truncated_manifest_read_is_retried(
    proxied_registry: ProxiedReg, registry2: Reg
) -> None:
    """A GET is idempotent: a connection lost mid-manifest deserves a retry like one lost
    mid-blob (copy.py retries those) or before the headers (client.py retries those)."""
    img = image("truncated-once")
    _seed(proxied_registry, img)
    proxied_registry.faults.add(Fault("GET", MANIFEST_TAG, truncate_after=40))
    await _copy(proxied_registry, registry2)
    assert registry2.pusher.digest("prod/app", "1.0") == img.digest
    assert proxied_registry.faults.count("GET", MANIFEST_TAG) == 2


# ------------------------------------------------------------------ the target refusing uploads


async def test_target_rejecting_blob_puts_leaves_no_tag(
    proxied_registry: ProxiedReg, registry2: Reg
) -> None:
    img = multi_platform("reject")
    registry2.pusher.push("dev/app", img, "1.0")
    proxied_registry.faults.add(
        Fault("PUT", r"^/v2/prod/app/blobs/uploads/", status=500, times=None)
    )
    with pytest.raises(RegistryError) as caught:
        await _copy(registry2, proxied_registry)
    _assert_one_line_registry_error(caught.value)
    assert caught.value.status == 500
    _assert_no_tag(proxied_registry)
    assert proxied_registry.faults.count("PUT", "/manifests/") == 0
    per_blob = [
        proxied_registry.faults.count("PUT", _upload_put(d))
        for d in {b.digest for c in img.children for b in c.blobs}
    ]
    assert max(per_blob) == ATTEMPTS and all(n <= ATTEMPTS for n in per_blob), per_blob


async def test_target_rejecting_one_blob_put_is_retried(
    proxied_registry: ProxiedReg, registry2: Reg
) -> None:
    img = image("reject-once")
    registry2.pusher.push("dev/app", img, "1.0")
    layer = img.blobs[1]
    proxied_registry.faults.add(Fault("PUT", _upload_put(layer.digest), status=502))
    await _copy(registry2, proxied_registry)
    assert proxied_registry.pusher.digest("prod/app", "1.0") == img.digest
    assert proxied_registry.pusher.blob("prod/app", layer.digest) == layer.data
    assert [
        s.status for s in proxied_registry.faults.requests("PUT", _upload_put(layer.digest))
    ] == [502, 201]


# ------------------------------------------------------------------ the registry process dies


async def test_target_registry_killed_and_restarted_mid_copy(
    proxied_registry: ProxiedReg, registry2: Reg
) -> None:
    """The target's process is stopped while a blob upload is in flight (held in the proxy) and
    started again on the same port and storage: the copy retries through it and completes,
    digest-exact. Its upload sessions died with the process; blobs are uploaded again whole."""
    import asyncio

    from registry.client import RetryPolicy

    img = multi_platform("restart", layer_size=256 * 1024)
    registry2.pusher.push("dev/app", img, "1.0")
    held = proxied_registry.faults.add(
        Fault("PUT", r"^/v2/prod/app/blobs/uploads/", delay=0.5, times=1)
    )
    patient = RetryPolicy(attempts=8, base_delay=0.1, max_delay=0.5, total=30.0)
    copying = asyncio.ensure_future(_copy(registry2, proxied_registry, retry=patient))

    while not held.hits:  # the first upload PUT has reached the proxy and is being held
        assert not copying.done(), copying
        await asyncio.sleep(0.01)
    first_pid = proxied_registry.server.proc.pid
    await asyncio.to_thread(proxied_registry.server.restart)
    assert proxied_registry.server.proc.pid != first_pid

    result = await copying
    assert result.digest == img.digest
    assert proxied_registry.pusher.digest("prod/app", "1.0") == img.digest
    # the held PUT met the stopped process: it was not answered with success; a retry was
    puts = proxied_registry.faults.requests("PUT", r"^/v2/prod/app/blobs/uploads/")
    assert puts[0].status != 201, [(p.target[:40], p.status) for p in puts]
    for child in img.children:
        for blob in child.blobs:
            assert proxied_registry.pusher.blob("prod/app", blob.digest) == blob.data


# ------------------------------------------------------------------ deadlines: slow sources
# A source that drips one byte at a time defeats every per-read timeout and would hold the copy
# (and a promotion's repository lock) for ever. The deadlines here are tiny and the drips slow
# (minutes of dripping against deadlines of a fraction of a second): nothing depends on timing.

DRIP = 0.01  # seconds per byte: a 64 KiB layer takes 11 minutes; a manifest at 10x, a minute


async def test_a_blob_dripping_in_hits_its_deadline_and_no_tag_moves(
    proxied_registry: ProxiedReg, registry2: Reg
) -> None:
    img = image("drip-blob", layers=1, layer_size=64 * 1024)
    _seed(proxied_registry, img)
    config, layer = img.blobs
    registry2.pusher.push_blob("prod/app", config)  # the layer is the only blob with a deadline
    proxied_registry.faults.add(Fault("GET", _blob_path(layer.digest), trickle=DRIP, times=None))
    limits = TransferLimits(min_rate=1024 * 1024, blob_allowance=0.2)
    with pytest.raises(RegistryError) as caught:
        await _copy(proxied_registry, registry2, limits)
    _assert_one_line_registry_error(caught.value)
    message = str(caught.value)
    assert f"blob {layer.digest}" in message and "1024 KiB/s" in message, message
    assert "AIRLOCK_MIN_RATE_KIB" in message
    _assert_no_tag(registry2)


async def test_a_manifest_dripping_in_hits_the_copy_deadline(
    proxied_registry: ProxiedReg, registry2: Reg
) -> None:
    _seed(proxied_registry, image("drip-manifest"))
    proxied_registry.faults.add(Fault("GET", MANIFEST_TAG, trickle=10 * DRIP, times=None))
    with pytest.raises(RegistryError) as caught:
        await _copy(proxied_registry, registry2, TransferLimits(copy_allowance=0.3))
    _assert_one_line_registry_error(caught.value)
    message = str(caught.value)
    assert (
        message.startswith(f"copy {proxied_registry.host}/dev/app:1.0 to ") and "0.3 s" in message
    )
    assert "tag was not moved" in message
    _assert_no_tag(registry2)


async def test_the_copy_deadline_covers_the_blobs_too(
    proxied_registry: ProxiedReg, registry2: Reg
) -> None:
    """Every blob within its own deadline, the whole copy over its own: the copy's wins."""
    img = image("drip-copy", layer_size=64 * 1024)
    _seed(proxied_registry, img)
    layer = img.blobs[1]
    proxied_registry.faults.add(Fault("GET", _blob_path(layer.digest), trickle=DRIP, times=None))
    limits = TransferLimits(min_rate=1024 * 1024, blob_allowance=3600, copy_allowance=0.5)
    with pytest.raises(RegistryError) as caught:
        await _copy(proxied_registry, registry2, limits)
    _assert_one_line_registry_error(caught.value)
    assert str(caught.value).startswith("copy ") and "1024 KiB/s" in str(caught.value)
    _assert_no_tag(registry2)


def test_the_minimum_rate_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AIRLOCK_MIN_RATE_KIB", raising=False)
    assert TransferLimits.from_env() == TransferLimits()
    monkeypatch.setenv("AIRLOCK_MIN_RATE_KIB", "16")
    assert TransferLimits.from_env().min_rate == 16 * 1024
    for bad in ("0", "-1", "fast", "nan", "inf"):
        monkeypatch.setenv("AIRLOCK_MIN_RATE_KIB", bad)
        with pytest.raises(BadInputError, match="AIRLOCK_MIN_RATE_KIB"):
            TransferLimits.from_env()
